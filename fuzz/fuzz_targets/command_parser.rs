//! Fuzz target: whatever octets a client sends, through the command-line reader and the parser
//! (`src/protocol.rs` `read_line`, `src/command.rs` `parse` and `parse_number`).
//!
//! The first input byte picks the reader's buffer size (1..=64), so line ends and the 255-octet
//! limit fall on every possible buffer boundary; the rest is the wire. Invariants:
//!
//! - `read_line` never panics, never returns a command longer than 253 octets (255 with CRLF,
//!   RFC 2449 §4) and never one holding an LF; it returns exactly the lines of a simple model
//!   (split at LF, drop one CR before it, too long above 253), whatever the buffer size.
//! - `parse` never panics; a keyword it accepts is 3 or 4 ASCII upper-case letters, the line's
//!   first word; `rest` is what follows it and one space; `args` are the non-empty words of `rest`.
//! - `parse_number` accepts exactly the digit strings that fit in a u64, with their value.
//! - Every error text fits in a first reply line (RFC 1939 §3: 512 octets with `-ERR ` and CRLF)
//!   and holds no CR or LF, so it cannot break the reply framing.
#![no_main]

use std::io::BufReader;

use libfuzzer_sys::fuzz_target;
use popstate::command;
use popstate::protocol::{self, Line, MAX_COMMAND_LINE};

fuzz_target!(|data: &[u8]| {
    let Some((&first, wire)) = data.split_first() else {
        return;
    };
    let capacity = usize::from(first % 64) + 1;
    let mut input = BufReader::with_capacity(capacity, wire);
    let mut lines = Vec::new();
    while let Some(line) = protocol::read_line(&mut input).expect("reading a slice cannot fail") {
        if let Line::Command(bytes) = &line {
            assert!(
                bytes.len() <= MAX_COMMAND_LINE - 2,
                "{} octets",
                bytes.len()
            );
            assert!(!bytes.contains(&b'\n'), "LF inside a command: {bytes:?}");
            check_parse(bytes);
        }
        lines.push(line);
    }
    assert_eq!(lines, model_lines(wire), "capacity {capacity}");
});

/// What `read_line` should return, line by line, for the whole wire: the text before each LF
/// without one CR just before it, or `TooLong` if that is more than 253 octets. Octets after the
/// last LF are a dropped connection, not a command.
fn model_lines(wire: &[u8]) -> Vec<Line> {
    let mut lines = Vec::new();
    let mut rest = wire;
    while let Some(i) = rest.iter().position(|&b| b == b'\n') {
        let raw = &rest[..i];
        let text = raw.strip_suffix(b"\r").unwrap_or(raw);
        lines.push(if text.len() > MAX_COMMAND_LINE - 2 {
            Line::TooLong
        } else {
            Line::Command(text.to_vec())
        });
        rest = &rest[i + 1..];
    }
    lines
}

fn check_parse(line: &[u8]) {
    let cmd = match command::parse(line) {
        Ok(cmd) => cmd,
        Err(text) => return check_error_text(&text),
    };
    let keyword = cmd.keyword.as_bytes();
    assert!(
        (3..=4).contains(&keyword.len()),
        "keyword {:?}",
        cmd.keyword
    );
    assert!(
        keyword.iter().all(u8::is_ascii_uppercase),
        "keyword {:?}",
        cmd.keyword
    );
    assert!(
        line[..keyword.len()].eq_ignore_ascii_case(keyword),
        "{line:?}"
    );
    let rest: &[u8] = match line.get(keyword.len()) {
        None => b"",
        Some(b' ') => &line[keyword.len() + 1..],
        Some(other) => panic!("keyword {:?} followed by {other:#04x}", cmd.keyword),
    };
    assert_eq!(cmd.rest.as_bytes(), rest);
    assert!(!cmd.rest.chars().any(char::is_control), "{:?}", cmd.rest);
    let words: Vec<&str> = cmd.rest.split(' ').filter(|w| !w.is_empty()).collect();
    assert_eq!(cmd.args, words);
    for arg in &cmd.args {
        check_number(arg);
    }
    check_number(&cmd.rest);
    for (min, max) in [(0, 0), (1, 1), (1, 2)] {
        if let Err(text) = cmd.expect_args(min, max, "TOP msg n") {
            check_error_text(&text);
        }
    }
}

fn check_number(arg: &str) {
    let digits = !arg.is_empty() && arg.bytes().all(|b| b.is_ascii_digit());
    match command::parse_number(arg, "message number") {
        Ok(n) => {
            assert!(digits, "{arg:?} accepted as {n}");
            let significant = arg.trim_start_matches('0');
            let expected = if significant.is_empty() {
                "0"
            } else {
                significant
            };
            assert_eq!(n.to_string(), expected);
        }
        Err(text) => {
            check_error_text(&text);
            if digits {
                // Only a number that does not fit in a u64 may be refused.
                let significant = arg.trim_start_matches('0');
                assert!(
                    significant.len() > 20
                        || (significant.len() == 20 && significant > "18446744073709551615"),
                    "{arg:?} refused: {text}"
                );
            }
        }
    }
}

/// RFC 1939 §3: the first line of a reply is at most 512 octets with its CRLF; the text goes
/// after `-ERR `, so it must also hold no line end of its own.
fn check_error_text(text: &str) {
    assert!(
        "-ERR ".len() + text.len() + 2 <= 512,
        "{} octets: {text:?}",
        text.len()
    );
    assert!(!text.contains(['\r', '\n']), "line end in {text:?}");
}
