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

// The models and checks shared with tests/properties.rs.
#[path = "../../tests/model/mod.rs"]
mod model;
use model::{check_parse, model_lines};
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
