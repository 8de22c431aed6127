//! The book and the code must agree (STYLE.md points 10–12).
//!
//! mdBook renders an empty block and exits 0 when an `{{#include file:anchor}}` names an anchor
//! that is not there, so a renamed function would leave a hole in the book that nobody sees.
//! This test reads every chapter under `book/src` and fails, naming the chapter and the line,
//! when:
//!
//! - an include names a file that does not exist, an anchor with no `// ANCHOR: name` and
//!   `// ANCHOR_END: name` pair in that file, or a line range (code is included by anchor only);
//! - any `.rs` file under `src/` or `examples/` has an anchor twice, a start without an end, or
//!   an end without a start (checked whether the book includes it or not);
//! - `SUMMARY.md` lists a chapter file that does not exist, or a chapter file is not listed;
//! - a ` ```rust ` fence holds anything but includes (no copied code), or is not `rust,ignore`;
//! - a client/server exchange is typed into a chapter instead of included from
//!   `tests/transcripts/`;
//! - a `src/…`, `tests/…`, `examples/…` or `docs/…` path, or a `fn name`, written in backticks
//!   in the prose, names nothing in the code (a `fn` must be defined in some file under `src/`);
//! - an image or local link points at a missing file.
//!
//! Standard library only, so it runs wherever `cargo test` runs, without mdBook installed.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Component, Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn book_src() -> PathBuf {
    repo().join("book").join("src")
}

/// Every file below `dir` whose name ends with `ext`, sorted.
fn files_with_ext(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else if path.to_string_lossy().ends_with(ext) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// `path` relative to the repository, for messages.
fn shown(path: &Path) -> String {
    path.strip_prefix(repo())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// `a/b/../c` → `a/c`, without touching the file system (so a missing file can still be named).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", shown(path)))
}

/// Fails the test with every problem found, one per line.
fn report(what: &str, problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "{what}: {} problem(s)\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

// ---------------------------------------------------------------------------------------------
// Reading the markdown

/// One `{{#include ...}}` (or `{{#rustdoc_include ...}}`) found in a chapter.
#[derive(Debug, PartialEq, Eq)]
struct Include {
    /// 1-based line in the chapter.
    line: usize,
    /// The whole directive, as written, for messages.
    text: String,
    /// The path as written, relative to the chapter's folder.
    path: String,
    /// What follows the first `:`, if anything: an anchor name or a line range.
    selector: Option<String>,
}

/// Finds every include directive in `markdown`. A directive escaped with a backslash is text,
/// as mdBook treats it.
fn includes(markdown: &str) -> Vec<Include> {
    let mut found = Vec::new();
    for (n, line) in markdown.lines().enumerate() {
        let mut rest = line;
        let mut offset = 0;
        while let Some(start) = rest.find("{{#") {
            let escaped = line[..offset + start].ends_with('\\');
            let after = &rest[start + 3..];
            let Some(end) = after.find("}}") else {
                break;
            };
            let body = after[..end].trim();
            let advance = start + 3 + end + 2;
            if !escaped {
                for keyword in ["include", "rustdoc_include"] {
                    if let Some(arg) = body
                        .strip_prefix(keyword)
                        .filter(|a| a.starts_with(char::is_whitespace))
                    {
                        let arg = arg.trim();
                        let (path, selector) = match arg.split_once(':') {
                            Some((p, s)) => (p.to_string(), Some(s.trim().to_string())),
                            None => (arg.to_string(), None),
                        };
                        found.push(Include {
                            line: n + 1,
                            text: format!("{{{{#{body}}}}}"),
                            path,
                            selector,
                        });
                    }
                }
            }
            offset += advance;
            rest = &rest[advance..];
        }
    }
    found
}

/// A fenced code block: its info string (`rust,ignore`, `text`, ...) and its lines.
struct Fence {
    /// 1-based line of the opening fence.
    line: usize,
    info: String,
    body: Vec<String>,
}

/// Splits `markdown` into fenced blocks and the prose lines outside them `(line, text)`.
fn fences(markdown: &str) -> (Vec<Fence>, Vec<(usize, String)>) {
    let mut blocks = Vec::new();
    let mut prose = Vec::new();
    let mut open: Option<(String, Fence)> = None;
    for (n, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        let marker: String = trimmed
            .chars()
            .take_while(|&c| c == '`' || c == '~')
            .collect();
        let is_fence =
            marker.len() >= 3 && marker.chars().all(|c| c == marker.as_bytes()[0] as char);
        match open.take() {
            Some((opener, fence)) => {
                if is_fence
                    && marker.starts_with(&opener)
                    && trimmed[marker.len()..].trim().is_empty()
                {
                    blocks.push(fence);
                } else {
                    let mut fence = fence;
                    fence.body.push(line.to_string());
                    open = Some((opener, fence));
                }
            }
            None if is_fence => {
                let fence = Fence {
                    line: n + 1,
                    info: trimmed[marker.len()..].trim().to_string(),
                    body: Vec::new(),
                };
                open = Some((marker, fence));
            }
            None => prose.push((n + 1, line.to_string())),
        }
    }
    if let Some((_, fence)) = open {
        // An unclosed fence swallows the rest of the chapter; report it as a fence anyway.
        blocks.push(fence);
    }
    (blocks, prose)
}

/// The text inside single backticks on a prose line.
fn code_spans(line: &str) -> Vec<String> {
    let mut spans = Vec::new();
    let mut parts = line.split('`');
    parts.next();
    while let (Some(inside), Some(_)) = (parts.next(), parts.next()) {
        spans.push(inside.to_string());
    }
    // An odd last piece is an unclosed backtick: not a span.
    spans
}

/// Local targets of markdown links and images `](target)` on a line.
fn link_targets(line: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find("](") {
        let after = &rest[i + 2..];
        let Some(end) = after.find(')') else {
            break;
        };
        targets.push(after[..end].trim().to_string());
        rest = &after[end..];
    }
    targets
}

// ---------------------------------------------------------------------------------------------
// Reading the sources

/// The anchors of one source file: name → (start lines, end lines), 1-based.
fn anchors(source: &str) -> BTreeMap<String, (Vec<usize>, Vec<usize>)> {
    let mut map: BTreeMap<String, (Vec<usize>, Vec<usize>)> = BTreeMap::new();
    for (n, line) in source.lines().enumerate() {
        let t = line.trim();
        if let Some(name) = t.strip_prefix("// ANCHOR_END:") {
            map.entry(name.trim().to_string())
                .or_default()
                .1
                .push(n + 1);
        } else if let Some(name) = t.strip_prefix("// ANCHOR:") {
            map.entry(name.trim().to_string())
                .or_default()
                .0
                .push(n + 1);
        }
    }
    map
}

/// What is wrong with the anchors of one file, if anything.
fn anchor_problems(file: &str, source: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, (starts, ends)) in anchors(source) {
        if name.is_empty() {
            problems.push(format!("{file}: an ANCHOR line without a name"));
            continue;
        }
        if starts.len() > 1 {
            problems.push(format!(
                "{file}: anchor `{name}` starts twice (lines {starts:?}); anchors must be unique in a file"
            ));
        }
        if ends.len() > 1 {
            problems.push(format!(
                "{file}: anchor `{name}` ends twice (lines {ends:?})"
            ));
        }
        match (starts.first(), ends.first()) {
            (Some(_), None) => problems.push(format!(
                "{file}: `// ANCHOR: {name}` has no `// ANCHOR_END: {name}`"
            )),
            (None, Some(_)) => problems.push(format!(
                "{file}: `// ANCHOR_END: {name}` has no `// ANCHOR: {name}`"
            )),
            (Some(s), Some(e)) if e < s => problems.push(format!(
                "{file}: anchor `{name}` ends (line {e}) before it starts (line {s})"
            )),
            (Some(s), Some(e)) if e - s < 2 => {
                problems.push(format!("{file}: anchor `{name}` is empty"));
            }
            _ => {}
        }
    }
    problems
}

/// A selector such as `10`, `10:20`, `:20` or `10:` is a line range, not an anchor.
fn is_line_range(selector: &str) -> bool {
    !selector.is_empty() && selector.chars().all(|c| c.is_ascii_digit() || c == ':')
}

/// True if `source` defines a function called `name` (`fn name(` or `fn name<`).
fn defines_fn(source: &str, name: &str) -> bool {
    let needle = format!("fn {name}");
    source.match_indices(&needle).any(|(i, _)| {
        let before_ok = i == 0
            || !source[..i]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_');
        let after = source[i + needle.len()..].chars().next();
        before_ok && matches!(after, Some('(' | '<'))
    })
}

/// Every chapter with its text.
fn chapters() -> Vec<(PathBuf, String)> {
    let src = book_src();
    assert!(
        src.join("SUMMARY.md").is_file(),
        "book/src/SUMMARY.md is missing: the book has no table of contents"
    );
    files_with_ext(&src, ".md")
        .into_iter()
        .map(|p| {
            let text = read(&p);
            (p, text)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The checks

#[test]
fn every_include_resolves_to_a_file_and_an_anchor() {
    let mut problems = Vec::new();
    for (chapter, text) in chapters() {
        let dir = chapter.parent().expect("a chapter is in a folder");
        for inc in includes(&text) {
            let at = format!("{} line {}: {}", shown(&chapter), inc.line, inc.text);
            if inc.text.starts_with("{{#rustdoc_include") {
                problems.push(format!(
                    "{at}: use {{{{#include}}}}; rustdoc_include pulls in hidden code the reader cannot see"
                ));
            }
            let target = normalize(&dir.join(&inc.path));
            let Ok(source) = fs::read_to_string(&target) else {
                problems.push(format!("{at}: file {} does not exist", shown(&target)));
                continue;
            };
            match inc.selector.as_deref() {
                None => {
                    if target.extension().is_some_and(|e| e == "rs") {
                        problems.push(format!(
                            "{at}: a whole source file; include one function by its anchor"
                        ));
                    }
                }
                Some(sel) if is_line_range(sel) => problems.push(format!(
                    "{at}: line numbers go stale; put `// ANCHOR: name` in {} and include by name",
                    shown(&target)
                )),
                Some(anchor) => {
                    let map = anchors(&source);
                    match map.get(anchor) {
                        Some((starts, ends)) if !starts.is_empty() && !ends.is_empty() => {}
                        _ => problems.push(format!(
                            "{at}: {} has no `// ANCHOR: {anchor}` … `// ANCHOR_END: {anchor}` pair \
                             (mdBook would render an empty block); anchors there: {}",
                            shown(&target),
                            map.keys().cloned().collect::<Vec<_>>().join(", ")
                        )),
                    }
                }
            }
        }
    }
    report("book includes", problems);
}

#[test]
fn anchors_are_paired_and_unique_in_every_source_file() {
    let mut problems = Vec::new();
    for dir in ["src", "examples"] {
        for file in files_with_ext(&repo().join(dir), ".rs") {
            problems.extend(anchor_problems(&shown(&file), &read(&file)));
        }
    }
    report("source anchors", problems);
}

#[test]
fn summary_lists_every_chapter_and_only_existing_ones() {
    let src = book_src();
    let summary = read(&src.join("SUMMARY.md"));
    let mut problems = Vec::new();
    let mut listed = Vec::new();
    for (n, line) in summary.lines().enumerate() {
        for target in link_targets(line) {
            if target.is_empty() {
                problems.push(format!(
                    "book/src/SUMMARY.md line {}: a draft chapter with no file",
                    n + 1
                ));
                continue;
            }
            let path = normalize(&src.join(&target));
            if !path.is_file() {
                problems.push(format!(
                    "book/src/SUMMARY.md line {}: chapter {target} does not exist ({} is missing)",
                    n + 1,
                    shown(&path)
                ));
            }
            listed.push(path);
        }
    }
    for (chapter, _) in chapters() {
        let name = chapter.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name != "SUMMARY.md" && !listed.contains(&chapter) {
            problems.push(format!(
                "{} is not listed in SUMMARY.md, so mdBook never builds it",
                shown(&chapter)
            ));
        }
    }
    report("SUMMARY.md", problems);
}

#[test]
fn code_fences_hold_only_includes() {
    let mut problems = Vec::new();
    for (chapter, text) in chapters() {
        let (blocks, _) = fences(&text);
        for fence in blocks {
            let at = format!(
                "{} line {} (```{})",
                shown(&chapter),
                fence.line,
                fence.info
            );
            let lang = fence.info.split(',').next().unwrap_or("").trim();
            let body_includes: Vec<Include> = includes(&fence.body.join("\n"));
            if lang == "rust" {
                if fence.info.replace(' ', "") != "rust,ignore" {
                    problems.push(format!(
                        "{at}: a code listing is ```rust,ignore (module files do not compile as doctests)"
                    ));
                }
                for (i, line) in fence.body.iter().enumerate() {
                    let t = line.trim();
                    let only_include = t.starts_with("{{#include") && t.ends_with("}}");
                    if !t.is_empty() && !only_include {
                        problems.push(format!(
                            "{at}, line {}: `{t}` is code typed into the book; include it by anchor instead",
                            fence.line + 1 + i
                        ));
                    }
                }
                if body_includes.is_empty() {
                    problems.push(format!("{at}: an empty code listing"));
                }
                for inc in &body_includes {
                    if !inc.path.ends_with(".rs") {
                        problems.push(format!(
                            "{at}: {} is not Rust source; use a ```text fence",
                            inc.text
                        ));
                    }
                }
            }
            for inc in &body_includes {
                // ```pop3 is highlighted by book/pop3.js (see tests/highlight.rs).
                if inc.path.contains("tests/transcripts/") && lang != "pop3" {
                    problems.push(format!(
                        "{at}: transcript {} belongs in a ```pop3 fence",
                        inc.text
                    ));
                }
                if inc.path.ends_with(".rs") && lang != "rust" {
                    problems.push(format!(
                        "{at}: source {} belongs in a ```rust,ignore fence",
                        inc.text
                    ));
                }
            }
        }
    }
    report("code fences", problems);
}

#[test]
fn exchanges_are_included_from_transcripts_not_typed() {
    let mut problems = Vec::new();
    for (chapter, text) in chapters() {
        let (blocks, _) = fences(&text);
        for fence in blocks {
            for (i, line) in fence.body.iter().enumerate() {
                let t = line.trim_start();
                let looks_like_wire = ["C: ", "S: ", "C2: ", "S2: ", "+OK", "-ERR"]
                    .iter()
                    .any(|p| t.starts_with(p));
                if looks_like_wire {
                    problems.push(format!(
                        "{} line {}: `{t}` is an exchange typed into the book; include a file from tests/transcripts/ instead",
                        shown(&chapter),
                        fence.line + 1 + i
                    ));
                }
            }
        }
        // Transcripts in the book are test fixtures: each one included must be a real file.
        for inc in includes(&text) {
            if inc.path.contains("transcripts/") && !inc.path.ends_with(".txt") {
                problems.push(format!(
                    "{} line {}: {}: transcripts are .txt files",
                    shown(&chapter),
                    inc.line,
                    inc.text
                ));
            }
        }
    }
    report("typed exchanges", problems);
}

#[test]
fn files_and_functions_named_in_the_prose_exist() {
    let sources: Vec<(PathBuf, String)> = files_with_ext(&repo().join("src"), ".rs")
        .into_iter()
        .map(|p| {
            let text = read(&p);
            (p, text)
        })
        .collect();
    let mut problems = Vec::new();
    for (chapter, text) in chapters() {
        let dir = chapter.parent().expect("a chapter is in a folder");
        let (_, prose) = fences(&text);
        for (n, line) in prose {
            let at = format!("{} line {n}", shown(&chapter));
            for span in code_spans(&line) {
                for word in span.split(|c: char| c.is_whitespace() || c == ',') {
                    let word = word.trim_end_matches([':', '.', ';']);
                    let is_path = ["src/", "tests/", "examples/", "docs/", "book/"]
                        .iter()
                        .any(|p| word.starts_with(p))
                        && word.rsplit('/').next().is_some_and(|f| f.contains('.'));
                    if is_path && !repo().join(word).exists() {
                        problems.push(format!("{at}: `{span}` names {word}, which does not exist"));
                    }
                }
                let mut words = span.split_whitespace();
                while let Some(w) = words.next() {
                    if w != "fn" {
                        continue;
                    }
                    let Some(name) = words.next() else { break };
                    let name: String = name
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() && !sources.iter().any(|(_, s)| defines_fn(s, &name)) {
                        problems.push(format!("{at}: `{span}`: no file in src/ defines fn {name}"));
                    }
                }
            }
            for target in link_targets(&line) {
                let local = !target.contains("://")
                    && !target.starts_with('#')
                    && !target.starts_with("mailto:");
                if !local || target.is_empty() {
                    continue;
                }
                let file = target.split('#').next().unwrap_or("");
                if !file.is_empty() && !normalize(&dir.join(file)).exists() {
                    problems.push(format!(
                        "{at}: link or image {target} points at a missing file"
                    ));
                }
            }
        }
    }
    report("names in the prose", problems);
}

// ---------------------------------------------------------------------------------------------
// The checker itself, on small inputs, so a bug here cannot turn every check green.

#[test]
fn checker_finds_includes_and_their_anchors() {
    let md =
        "a\n```rust,ignore\n{{#include ../../src/x.rs:retr}}\n```\n\\{{#include not/this.rs}}\n";
    let found = includes(md);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].path, "../../src/x.rs");
    assert_eq!(found[0].selector.as_deref(), Some("retr"));
    assert_eq!(found[0].line, 3);
    assert!(is_line_range("10:20") && is_line_range("5") && !is_line_range("retr"));
}

#[test]
fn checker_finds_anchor_mistakes() {
    let good = "// ANCHOR: a\nfn a() {}\n// ANCHOR_END: a\n";
    assert!(anchor_problems("g.rs", good).is_empty());
    let twice = format!("{good}{good}");
    assert!(anchor_problems("t.rs", &twice)[0].contains("twice"));
    let unpaired = "// ANCHOR: b\nfn b() {}\n";
    assert!(anchor_problems("u.rs", unpaired)[0].contains("no `// ANCHOR_END: b`"));
}

#[test]
fn checker_tells_fences_from_prose() {
    let md = "intro `src/a.rs`\n```rust,ignore\nlet x = 1;\n```\nafter\n";
    let (blocks, prose) = fences(md);
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].info, "rust,ignore");
    assert_eq!(blocks[0].body, ["let x = 1;"]);
    assert_eq!(prose.len(), 2);
    assert_eq!(code_spans(&prose[0].1), ["src/a.rs"]);
    assert!(defines_fn("    fn retr(&mut self)", "retr"));
    assert!(!defines_fn("fn retrieve()", "retr"));
}
