//! The book's transcripts are tests (STYLE.md point 12): every `tests/transcripts/*.txt` is
//! replayed, line for line, against a fresh demo server. The replayer is the one behind
//! `cargo run --example replay`, so a reader can run the same check against any server.

mod common;
#[path = "../examples/replay/transcript.rs"]
mod transcript;

use std::fs;
use std::path::{Path, PathBuf};

/// The transcripts the book includes by name: losing or renaming one breaks the book.
const BOOK_TRANSCRIPTS: &[&str] = &[
    "first-session.txt",
    "authorization.txt",
    "transaction.txt",
    "update.txt",
    "dropped-connection.txt",
    "byte-stuffing.txt",
    "line-ends.txt",
    "capa.txt",
    "in-use.txt",
    "wrong-state-and-errors.txt",
];

fn transcripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/transcripts")
}

fn read(name: &str) -> String {
    fs::read_to_string(transcripts_dir().join(name)).expect("the transcript is readable text")
}

/// Replays `text` against a demo server of its own: some transcripts delete messages.
fn replay_on_fresh_demo(text: &str) -> Result<(), transcript::Difference> {
    let server = common::demo_server();
    transcript::replay(&for_this_build(text), &server.addr.to_string())
}

/// The fixtures show the default build. A build with the `sasl` feature also lists `SASL PLAIN`
/// in CAPA, just before IMPLEMENTATION (capa.rs); APOP's greeting timestamp is left out of the
/// comparison by the replayer itself.
fn for_this_build(text: &str) -> String {
    if !cfg!(feature = "sasl") {
        return text.to_string();
    }
    text.lines()
        .flat_map(|line| match line.strip_prefix("S: IMPLEMENTATION ") {
            Some(_) => vec!["S: SASL PLAIN", line],
            None => vec![line],
        })
        .map(|line| format!("{line}\n"))
        .collect()
}

#[test]
fn every_transcript_replays_against_a_fresh_demo_server() {
    let mut paths: Vec<PathBuf> = fs::read_dir(transcripts_dir())
        .expect("tests/transcripts is a folder")
        .map(|entry| entry.expect("a readable folder entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "txt"))
        .collect();
    paths.sort();
    assert!(paths.len() >= BOOK_TRANSCRIPTS.len(), "{paths:?}");
    // Replay them all before failing, so that one run shows every difference.
    let failures: Vec<String> = paths
        .iter()
        .filter_map(|path| {
            let text = fs::read_to_string(path).expect("the transcript is readable text");
            let difference = replay_on_fresh_demo(&text).err()?;
            Some(format!("{}, {difference}", path.display()))
        })
        .collect();
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

#[test]
fn the_transcripts_the_book_includes_are_all_there() {
    for name in BOOK_TRANSCRIPTS {
        let path = transcripts_dir().join(name);
        assert!(path.is_file(), "{} is missing", path.display());
    }
}

#[test]
fn a_changed_server_line_is_reported_with_its_line_number() {
    let altered = read("first-session.txt").replacen("S: +OK 6 29816", "S: +OK 6 29817", 1);
    let line = 1 + altered
        .lines()
        .position(|l| l == "S: +OK 6 29817")
        .expect("first-session.txt shows STAT's reply");
    let difference = replay_on_fresh_demo(&altered).expect_err("the altered line differs");
    assert_eq!(difference.line, line);
    assert_eq!(difference.expected, "S: +OK 6 29817");
    assert_eq!(difference.got, "S: +OK 6 29816");
}

#[test]
fn a_server_line_left_out_of_the_transcript_is_reported() {
    // Without LIST's terminator, the "." is still unread when RETR 1 is about to be sent.
    let altered = read("first-session.txt").replacen("S: 6 236\nS: .\n", "S: 6 236\n", 1);
    let line = 1 + altered
        .lines()
        .position(|l| l == "C: RETR 1")
        .expect("first-session.txt retrieves message 1");
    let difference = replay_on_fresh_demo(&altered).expect_err("a line is missing");
    assert_eq!(difference.line, line);
    assert_eq!(difference.got, "S: .");
}

#[test]
fn a_reply_after_the_last_line_is_reported() {
    let text = read("first-session.txt");
    let quit = text
        .lines()
        .position(|l| l == "C: QUIT")
        .expect("first-session.txt ends with QUIT");
    let cut: String = text
        .lines()
        .take(quit + 1)
        .map(|l| format!("{l}\n"))
        .collect();
    let difference = replay_on_fresh_demo(&cut).expect_err("QUIT's reply is not in the text");
    assert_eq!(difference.line, quit + 1);
    assert!(
        difference.got.starts_with("S: +OK popstate signing off"),
        "{difference}"
    );
}

#[test]
fn a_line_of_no_known_form_is_reported_before_connecting() {
    // Port 9 (discard) is never contacted: the transcript is checked first.
    let difference = transcript::replay("# fine\nX: what is this\n", "127.0.0.1:9")
        .expect_err("X: is not a tag");
    assert_eq!(difference.line, 2);
    assert_eq!(difference.got, "X: what is this");
}
