//! The book's transcripts are highlighted by `book/pop3.js` (a highlight.js language plus a walk
//! through RFC 1939's states) and styled by `book/pop3.css`. No browser runs here; this test
//! checks what a browser would need and what would silently leave the transcripts plain:
//!
//! - `book/book.toml` loads both files (`additional-js`, `additional-css`), and they exist;
//! - `pop3.js` registers the `pop3` language and highlights the ```pop3 blocks with it;
//! - every transcript included in a chapter sits alone in a ```pop3 fence, and every ```pop3
//!   fence holds one transcript include and nothing else;
//! - every line of every fixture starts with a tag the grammar in `pop3.js` knows, so a new
//!   kind of line (a third connection, say) fails here until the grammar learns it;
//! - `pop3.css` styles each class `pop3.js` produces, for the light and the dark themes.
//!
//! Standard library only.

use std::fs;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The files in `dir` whose names end with `ext`, sorted.
fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .flatten()
        .map(|entry| entry.path())
        .filter(|p| p.to_string_lossy().ends_with(ext))
        .collect();
    found.sort();
    found
}

/// The `key = [...]` value in the `[output.html]` table of book.toml, as its quoted strings.
fn output_html_list(toml: &str, key: &str) -> Vec<String> {
    let mut in_table = false;
    for line in toml.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            in_table = t == "[output.html]";
        } else if let Some(list) = t
            .strip_prefix(key)
            .filter(|_| in_table)
            .and_then(|rest| rest.trim_start().strip_prefix('='))
        {
            // The quoted strings are every other piece between the `"`s.
            return list
                .split('"')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect();
        }
    }
    Vec::new()
}

#[test]
fn book_toml_loads_the_highlighter() {
    let book = repo().join("book");
    let toml = read(&book.join("book.toml"));
    for (key, file) in [("additional-js", "pop3.js"), ("additional-css", "pop3.css")] {
        let listed = output_html_list(&toml, key);
        assert!(
            listed.iter().any(|f| f == file),
            "book/book.toml: [output.html] {key} should list \"{file}\", has {listed:?}"
        );
        assert!(
            book.join(file).is_file(),
            "book/{file} is listed in book.toml but missing"
        );
    }
    let js = read(&book.join("pop3.js"));
    for needed in [
        "hljs.registerLanguage('pop3', pop3)",
        "querySelectorAll('code.language-pop3')",
        "hljs.highlightBlock(block)",
        "markStates(block)",
    ] {
        assert!(js.contains(needed), "book/pop3.js no longer has `{needed}`");
    }
}

/// One fenced block of a chapter: its 1-based opening line, info string and body lines.
struct Fence {
    line: usize,
    info: String,
    body: Vec<String>,
}

fn fences(markdown: &str) -> Vec<Fence> {
    let mut found = Vec::new();
    let mut open: Option<Fence> = None;
    for (i, line) in markdown.lines().enumerate() {
        let t = line.trim_start();
        match open.take() {
            Some(fence) if t.starts_with("```") => found.push(fence),
            Some(mut fence) => {
                fence.body.push(line.to_string());
                open = Some(fence);
            }
            None if t.starts_with("```") => {
                open = Some(Fence {
                    line: i + 1,
                    info: t.trim_start_matches('`').trim().to_string(),
                    body: Vec::new(),
                });
            }
            None => {}
        }
    }
    found.extend(open);
    found
}

#[test]
fn every_transcript_is_in_a_pop3_fence_and_nothing_else_is() {
    let mut problems = Vec::new();
    let mut transcripts = 0;
    for chapter in files(&repo().join("book").join("src"), ".md") {
        let name = chapter
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        let name = name.unwrap_or_default();
        for fence in fences(&read(&chapter)) {
            let includes_transcript = fence
                .body
                .iter()
                .any(|l| l.contains("{{#include") && l.contains("tests/transcripts/"));
            let is_pop3 = fence.info == "pop3";
            transcripts += usize::from(includes_transcript);
            if includes_transcript && !is_pop3 {
                problems.push(format!(
                    "{name} line {}: a transcript in a ```{} fence; use ```pop3",
                    fence.line, fence.info
                ));
            }
            let only_one_include = fence.body.len() == 1 && includes_transcript;
            if is_pop3 && !only_one_include {
                problems.push(format!(
                    "{name} line {}: a ```pop3 fence holds one {{{{#include ../../tests/transcripts/NAME.txt}}}} and nothing else",
                    fence.line
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} problem(s):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
    assert!(transcripts > 0, "no chapter includes a transcript");
}

/// The line tags of tests/transcripts/*.txt, and the regex in book/pop3.js that highlights each.
const TAGS: [(&str, &str); 6] = [
    ("C:", "/^C2?:/"),
    ("C2:", "/^C2?:/"),
    ("S:", "/^S2?:/"),
    ("S2:", "/^S2?:/"),
    ("#", "/^#/"),
    ("--", "/^--/"),
];

#[test]
fn the_grammar_knows_every_kind_of_transcript_line() {
    let js = read(&repo().join("book").join("pop3.js"));
    for (tag, regex) in TAGS {
        assert!(
            js.contains(regex),
            "book/pop3.js has no mode beginning {regex}, for `{tag}` lines"
        );
    }
    let mut problems = Vec::new();
    let fixtures = files(&repo().join("tests").join("transcripts"), ".txt");
    assert!(!fixtures.is_empty(), "no fixtures in tests/transcripts/");
    for fixture in fixtures {
        for (i, line) in read(&fixture).lines().enumerate() {
            // `C:`-style tags are followed by a space or end the line (`S:` is an empty server
            // line); `#` and `--` may be followed by anything.
            let known = line.trim().is_empty()
                || TAGS.iter().any(|(tag, _)| {
                    line.strip_prefix(tag).is_some_and(|rest| {
                        !tag.ends_with(':') || rest.is_empty() || rest.starts_with(' ')
                    })
                });
            if !known {
                problems.push(format!("{} line {}: {line}", fixture.display(), i + 1));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "lines book/pop3.js does not highlight (teach its grammar the new tag):\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn the_css_styles_every_class_the_script_makes_in_light_and_dark_themes() {
    let css = read(&repo().join("book").join("pop3.css"));
    for class in [
        ".hljs-client",
        ".hljs-reconnect",
        ".pop3-status > .hljs-ok",
        ".pop3-status > .hljs-err",
        ".pop3-state::after",
    ] {
        assert!(css.contains(class), "book/pop3.css does not style {class}");
    }
    // The status colours are the only per-theme rules: each of mdBook's themes needs both.
    for theme in [".light", ".rust", ".coal", ".navy", ".ayu"] {
        for status in ["hljs-ok", "hljs-err"] {
            let rule = format!("{theme} code.language-pop3 .pop3-status > .{status}");
            assert!(css.contains(&rule), "book/pop3.css has no `{rule}`");
        }
    }
}
