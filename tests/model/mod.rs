//! The models and checks that the property tests (`tests/properties.rs`) and the fuzz targets
//! (`fuzz/fuzz_targets/`) share: what the wire layer should do, written as simply as possible,
//! so that the fast code in `src/protocol.rs` and `src/command.rs` can be compared with it.
//! Std only; included by the fuzz crate with `#[path]`.
#![allow(dead_code)]

use popstate::command;
use popstate::protocol::{Line, MAX_COMMAND_LINE};

/// What `read_line` returns for a whole wire: the text before each LF without one CR just
/// before it, or `TooLong` above 253 octets (255 with CRLF, RFC 2449 §4). Octets after the last
/// LF are a dropped connection.
pub fn model_lines(wire: &[u8]) -> Vec<Line> {
    let mut pieces: Vec<&[u8]> = wire.split(|&b| b == b'\n').collect();
    pieces.pop();
    pieces
        .into_iter()
        .map(|raw| {
            let text = raw.strip_suffix(b"\r").unwrap_or(raw);
            if text.len() > MAX_COMMAND_LINE - 2 {
                Line::TooLong
            } else {
                Line::Command(text.to_vec())
            }
        })
        .collect()
}

/// The stored message's lines as RETR sends them before stuffing, each ending in CRLF: LF and
/// CRLF become CRLF, a CR not followed by LF is content, except a CR at the very end of the file,
/// which starts a line end; a last line without a line end gets CRLF.
pub fn normalised_lines(message: &[u8]) -> Vec<Vec<u8>> {
    let mut pieces: Vec<&[u8]> = message.split(|&b| b == b'\n').collect();
    if pieces.last().is_some_and(|last| last.is_empty()) {
        pieces.pop();
    }
    pieces
        .into_iter()
        .map(|piece| [piece.strip_suffix(b"\r").unwrap_or(piece), b"\r\n"].concat())
        .collect()
}

/// TOP n (RFC 1939 §7): the header, the first blank line and `n` lines after it; everything if
/// there is no blank line.
pub fn top_model(lines: &[Vec<u8>], n: u64) -> Vec<Vec<u8>> {
    let keep = match lines.iter().position(|line| line == b"\r\n") {
        Some(blank) => blank + 1 + n as usize,
        None => lines.len(),
    };
    lines[..keep.min(lines.len())].to_vec()
}

/// Reads a multi-line body (terminator removed) as a client does: checks that every line ends
/// in CRLF and that none is a lone `.` (an early terminator), un-stuffs, and counts the dots
/// removed.
pub fn client_view(wire: &[u8]) -> (Vec<Vec<u8>>, u64) {
    let mut lines = Vec::new();
    let mut stuffing = 0;
    for line in wire.split_inclusive(|&b| b == b'\n') {
        assert!(line.ends_with(b"\r\n"), "line without CRLF: {line:?}");
        assert_ne!(line, b".\r\n", "early terminator");
        lines.push(match line.strip_prefix(b".") {
            Some(unstuffed) => {
                stuffing += 1;
                unstuffed.to_vec()
            }
            None => line.to_vec(),
        });
    }
    (lines, stuffing)
}

/// RFC 1939 §3: a first reply line is at most 512 octets with its CRLF, and an error text goes
/// after `-ERR `; it must hold no line end of its own, or it would break the framing.
pub fn assert_fits_one_reply_line(text: &str) {
    assert!(
        "-ERR ".len() + text.len() + 2 <= 512,
        "{} octets: {text:?}",
        text.len()
    );
    assert!(!text.contains(['\r', '\n']), "line end in {text:?}");
}

pub fn check_number(arg: &str) {
    let digits = !arg.is_empty() && arg.bytes().all(|b| b.is_ascii_digit());
    let significant = arg.trim_start_matches('0');
    match command::parse_number(arg, "message number") {
        Ok(n) => {
            assert!(digits, "{arg:?} accepted as {n}");
            let expected = if significant.is_empty() {
                "0"
            } else {
                significant
            };
            assert_eq!(n.to_string(), expected);
        }
        Err(text) => {
            assert_fits_one_reply_line(&text);
            let too_big = significant.len() > 20
                || (significant.len() == 20 && significant > "18446744073709551615");
            assert!(!digits || too_big, "{arg:?} refused: {text}");
        }
    }
}

pub fn check_parse(line: &[u8]) {
    let cmd = match command::parse(line) {
        Ok(cmd) => cmd,
        Err(text) => return assert_fits_one_reply_line(&text),
    };
    let keyword = cmd.keyword.as_bytes();
    assert!((3..=4).contains(&keyword.len()), "{:?}", cmd.keyword);
    assert!(
        keyword.iter().all(u8::is_ascii_uppercase),
        "{:?}",
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
            assert_fits_one_reply_line(&text);
        }
    }
}
