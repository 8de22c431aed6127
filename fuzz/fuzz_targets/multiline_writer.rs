//! Fuzz target: any stored message through RETR's and TOP's writer (`src/protocol.rs`
//! `write_message`, `write_reply` with `Reply::Message`, `message_size`), read back as a client
//! would.
//!
//! The first input byte picks the reader's buffer size (low four bits: 1..=16) and TOP's line
//! count (high four bits: 0..=15); the rest is the stored message. Invariants:
//!
//! - Every line sent ends in CRLF and none is a lone `.` before the terminator (RFC 1939 §3).
//! - Un-stuffed, the lines are the stored message with line ends made CRLF: LF and CRLF become
//!   CRLF, a CR not followed by LF is content, except a CR at the very end of the file, which
//!   starts a line end; a last line without a line end gets CRLF.
//! - The octet count returned is what was sent less the stuffing dots, and equals `message_size`
//!   (what STAT and LIST report, RFC 1939 §5, §11).
//! - The bytes sent do not depend on the buffer size.
//! - TOP's output is a prefix of RETR's: the header, the blank line and `n` body lines.
#![no_main]

use std::io::{BufReader, Cursor};

use libfuzzer_sys::fuzz_target;

// The models and checks shared with tests/properties.rs.
#[path = "../../tests/model/mod.rs"]
mod model;
use model::{client_view, normalised_lines, top_model};
use popstate::protocol::{self, Reply};

fuzz_target!(|data: &[u8]| {
    let Some((&first, message)) = data.split_first() else {
        return;
    };
    let capacity = usize::from(first & 0x0f) + 1;
    let top = u64::from(first >> 4);
    let small = || BufReader::with_capacity(capacity, message);

    let mut wire = Vec::new();
    let octets = protocol::write_message(&mut small(), &mut wire, None).expect("Vec write");
    let mut whole = Vec::new();
    let whole_octets =
        protocol::write_message(&mut &message[..], &mut whole, None).expect("Vec write");
    assert_eq!(wire, whole, "output depends on a buffer of {capacity}");
    assert_eq!(octets, whole_octets);

    let (lines, stuffing) = client_view(&wire);
    let expected = normalised_lines(message);
    assert_eq!(lines, expected, "{message:?}");
    assert_eq!(octets, wire.len() as u64 - stuffing);
    assert_eq!(
        octets,
        protocol::message_size(&mut &message[..]).expect("slice")
    );
    assert_eq!(octets, protocol::message_size(&mut small()).expect("slice"));

    let reply = Reply::Message {
        status: format!("{octets} octets"),
        body: Box::new(BufReader::with_capacity(
            capacity,
            Cursor::new(message.to_vec()),
        )),
        top: None,
    };
    let mut sent = Vec::new();
    assert_eq!(
        protocol::write_reply(&mut sent, reply).expect("Vec write"),
        octets
    );
    assert_eq!(
        sent,
        [
            format!("+OK {octets} octets\r\n").as_bytes(),
            &wire,
            b".\r\n"
        ]
        .concat()
    );

    let mut top_wire = Vec::new();
    let top_octets = protocol::write_message(&mut small(), &mut top_wire, Some(top)).expect("Vec");
    assert!(
        wire.starts_with(&top_wire),
        "TOP {top} is not a prefix of RETR"
    );
    let (top_lines, top_stuffing) = client_view(&top_wire);
    assert_eq!(
        top_lines,
        top_model(&expected, top),
        "TOP {top} of {message:?}"
    );
    assert_eq!(top_octets, top_wire.len() as u64 - top_stuffing);
    let reply = Reply::Message {
        status: String::new(),
        body: Box::new(Cursor::new(message.to_vec())),
        top: Some(top),
    };
    let mut sent = Vec::new();
    assert_eq!(
        protocol::write_reply(&mut sent, reply).expect("Vec write"),
        top_octets
    );
    assert_eq!(sent, [b"+OK\r\n", &top_wire[..], b".\r\n"].concat());
});
