//! Property tests for the wire layer: thousands of random messages and command lines through
//! `src/protocol.rs` and `src/command.rs`, checked against small models of what RFC 1939 §3,
//! §5, §7, §11 and RFC 2449 §4 require.
//!
//! Standard library only, so they run on every `cargo test`: inputs come from a fixed-seed
//! xorshift generator biased toward the octets that matter here (`.`, CR, LF, spaces, digits),
//! and a failure prints the seed and the input. The cargo-fuzz targets in `fuzz/` check the same
//! invariants on inputs that libFuzzer searches for (see `fuzz/README.md`).

mod model;

use std::io::{BufReader, Cursor};

use popstate::protocol::{self, Line, MAX_COMMAND_LINE, Reply};

use model::{check_number, check_parse, client_view, model_lines, normalised_lines, top_model};

/// How many random inputs each test tries; the whole file stays well under two seconds in a
/// debug build.
const CASES: u64 = 3000;

/// xorshift64 (Marsaglia, 2003): enough randomness for test inputs, and the same sequence on
/// every machine for a given seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // The state must never be zero; mixing in a constant also spreads out small seeds.
        Rng((seed ^ 0x9e37_79b9_7f4a_7c15).max(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn size(&mut self, max_inclusive: usize) -> usize {
        (self.next() % (max_inclusive as u64 + 1)) as usize
    }

    fn byte(&mut self) -> u8 {
        self.next().to_le_bytes()[0]
    }
}

/// A stored message: mostly short, sometimes up to 4 KB, made mostly of the octets that make
/// line ends and stuffing interesting.
fn random_message(rng: &mut Rng) -> Vec<u8> {
    if rng.below(4) == 0 {
        return random_mail_lines(rng);
    }
    let len = match rng.below(16) {
        0 => rng.size(4096),
        1..=3 => rng.size(256),
        _ => rng.size(24),
    };
    (0..len)
        .map(|_| match rng.below(10) {
            0 | 1 => b'.',
            2 | 3 => b'\r',
            4 | 5 => b'\n',
            6 | 7 => b'a',
            8 => b' ',
            _ => rng.byte(),
        })
        .collect()
}

/// Lines as mail has them, 0 to 200 octets (the fast conversion copies 64 at a time, so lines
/// shorter, as long as and longer than 64 and 128 matter), ending in LF or CRLF, some starting
/// with a dot, some holding a lone CR; the last one may have no line end.
fn random_mail_lines(rng: &mut Rng) -> Vec<u8> {
    let mut message = Vec::new();
    for _ in 0..rng.size(60) {
        let len = match rng.below(4) {
            0 => rng.size(8),
            1 => 60 + rng.size(8),
            2 => 120 + rng.size(80),
            _ => rng.size(100),
        };
        for i in 0..len {
            message.push(match rng.below(40) {
                0 => b'.',
                1 => b'\r',
                _ if i == 0 && rng.below(3) == 0 => b'.',
                _ => b'a' + rng.below(26) as u8,
            });
        }
        match rng.below(4) {
            0 => message.extend_from_slice(b"\r\n"),
            _ => message.push(b'\n'),
        }
    }
    if rng.below(3) == 0 {
        let cut = rng.size(message.len());
        message.truncate(cut);
    }
    message
}

/// What a client may type: pieces of commands, numbers, spaces, line ends, NUL, non-ASCII
/// octets and runs long enough to cross the 255-octet limit.
fn random_wire(rng: &mut Rng) -> Vec<u8> {
    const KEYWORDS: [&str; 16] = [
        "STAT", "stat", "Retr", "TOP", "UIDL", "LIST", "DELE", "PASS", "USER", "QUIT", "NOOP",
        "CAPA", "X", "AB", "ABCDE", "T0P",
    ];
    const SPECIALS: [&str; 8] = [
        "18446744073709551615",
        "18446744073709551616",
        "00000000000000000000000000001",
        "\u{e9}t\u{e9}",
        "\u{85}",
        "\u{2028}",
        "\u{1f600}",
        "-1",
    ];
    let mut wire = Vec::new();
    for _ in 0..=rng.below(6) {
        if rng.below(8) != 0 {
            wire.extend_from_slice(KEYWORDS[rng.size(KEYWORDS.len() - 1)].as_bytes());
        }
        for _ in 0..rng.below(6) {
            if rng.below(4) != 0 {
                wire.push(b' ');
            }
            match rng.below(24) {
                0..=5 => wire.extend((0..=rng.size(22)).map(|_| b'0' + (rng.below(10) as u8))),
                6..=8 => wire.extend((0..=rng.size(8)).map(|_| b'a' + (rng.below(26) as u8))),
                9..=11 => wire.extend(std::iter::repeat_n(b' ', 1 + rng.size(2))),
                12 => wire.push([b'\r', b'\n', b'\0', b'\t', 0x7f][rng.size(4)]),
                13 => wire.push(0x80 | rng.byte()),
                14 | 15 => {
                    wire.extend_from_slice(SPECIALS[rng.size(SPECIALS.len() - 1)].as_bytes())
                }
                16 => wire.extend(std::iter::repeat_n(rng.byte(), 240 + rng.size(20))),
                17 => wire.extend(std::iter::repeat_n(b'X', rng.size(300))),
                18 | 19 => wire.push(b'!' + (rng.below(94) as u8)),
                _ => wire.push(b'1'),
            }
        }
        // Mostly proper line ends; an empty end glues two lines into one.
        let ends: [&[u8]; 8] = [
            b"\r\n", b"\r\n", b"\r\n", b"\n", b"\n", b"\r\r\n", b"", b"\r",
        ];
        wire.extend_from_slice(ends[rng.size(7)]);
    }
    wire
}

// ---- the models live in tests/model/mod.rs, shared with the fuzz targets -------------------

fn retr(message: &[u8]) -> (Vec<u8>, u64) {
    let mut wire = Vec::new();
    let octets = protocol::write_message(&mut &message[..], &mut wire, None).expect("Vec write");
    (wire, octets)
}

/// Runs `check` on `CASES` random messages, naming the seed and the message if it fails.
fn for_random_messages(seed: u64, mut check: impl FnMut(&mut Rng, &[u8])) {
    let mut rng = Rng::new(seed);
    for case in 0..CASES {
        let message = random_message(&mut rng);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            check(&mut rng, &message);
        }));
        if let Err(panic) = result {
            eprintln!("seed {seed}, case {case}, message {message:?}");
            std::panic::resume_unwind(panic);
        }
    }
}

// ---- RETR and TOP: write_message, write_reply, message_size ------------------------------

#[test]
fn b06_b07_random_messages_have_crlf_lines_and_no_early_terminator() {
    for_random_messages(1, |_, message| {
        let (wire, _) = retr(message);
        client_view(&wire);
    });
}

#[test]
fn b07_b19_random_messages_unstuff_to_crlf_normalised_input() {
    for_random_messages(2, |_, message| {
        let (wire, _) = retr(message);
        assert_eq!(client_view(&wire).0, normalised_lines(message));
    });
}

#[test]
fn b19_octets_are_bytes_sent_less_stuffing_and_equal_message_size() {
    for_random_messages(3, |_, message| {
        let (wire, octets) = retr(message);
        let (lines, stuffing) = client_view(&wire);
        assert_eq!(octets, wire.len() as u64 - stuffing);
        assert_eq!(octets, lines.iter().map(|l| l.len() as u64).sum::<u64>());
        let size = protocol::message_size(&mut &message[..]).expect("slice read");
        assert_eq!(octets, size, "STAT and LIST must report what RETR sends");
    });
}

#[test]
fn b06_b19_output_and_size_do_not_depend_on_buffer_boundaries() {
    for_random_messages(4, |rng, message| {
        let (expected, expected_octets) = retr(message);
        let capacity = 1 + rng.size(16);
        let mut input = BufReader::with_capacity(capacity, message);
        let mut wire = Vec::new();
        let octets = protocol::write_message(&mut input, &mut wire, None).expect("Vec write");
        assert_eq!(wire, expected, "buffer of {capacity}");
        assert_eq!(octets, expected_octets, "buffer of {capacity}");
        let mut input = BufReader::with_capacity(capacity, message);
        let size = protocol::message_size(&mut input).expect("slice read");
        assert_eq!(size, expected_octets, "buffer of {capacity}");
    });
}

#[test]
fn b06_b20_write_reply_frames_the_message_with_status_and_terminator() {
    for_random_messages(5, |rng, message| {
        let (wire, octets) = retr(message);
        let capacity = 1 + rng.size(16);
        let reply = Reply::Message {
            status: format!("{octets} octets"),
            body: Box::new(BufReader::with_capacity(
                capacity,
                Cursor::new(message.to_vec()),
            )),
            top: None,
        };
        let mut sent = Vec::new();
        let carried = protocol::write_reply(&mut sent, reply).expect("Vec write");
        assert_eq!(carried, octets);
        let status = format!("+OK {octets} octets\r\n");
        assert_eq!(sent, [status.as_bytes(), &wire, b".\r\n"].concat());
    });
}

#[test]
fn b25_top_is_a_prefix_of_retr_with_header_blank_line_and_n_lines() {
    for_random_messages(6, |rng, message| {
        let (full, _) = retr(message);
        let n = rng.below(6);
        let capacity = 1 + rng.size(16);
        let mut input = BufReader::with_capacity(capacity, message);
        let mut wire = Vec::new();
        let octets = protocol::write_message(&mut input, &mut wire, Some(n)).expect("Vec write");
        assert!(full.starts_with(&wire), "TOP {n} is not a prefix of RETR");
        let (lines, stuffing) = client_view(&wire);
        assert_eq!(lines, top_model(&normalised_lines(message), n), "TOP {n}");
        assert_eq!(octets, wire.len() as u64 - stuffing);

        let reply = Reply::Message {
            status: String::new(),
            body: Box::new(Cursor::new(message.to_vec())),
            top: Some(n),
        };
        let mut sent = Vec::new();
        assert_eq!(
            protocol::write_reply(&mut sent, reply).expect("write"),
            octets
        );
        assert_eq!(sent, [b"+OK\r\n", &wire[..], b".\r\n"].concat());
    });
}

#[test]
fn b07_listing_lines_are_stuffed_and_read_back_whole() {
    let mut rng = Rng::new(10);
    for _ in 0..CASES {
        let lines: Vec<String> = (0..rng.size(6))
            .map(|_| {
                (0..rng.size(12))
                    .map(|_| ['.', '.', 'a', ' ', '1'][rng.size(4)])
                    .collect()
            })
            .collect();
        let mut sent = Vec::new();
        let reply = Reply::Lines("listing follows".into(), lines.clone());
        assert_eq!(
            protocol::write_reply(&mut sent, reply).expect("Vec write"),
            0
        );
        let body = sent
            .strip_prefix(b"+OK listing follows\r\n".as_slice())
            .and_then(|rest| rest.strip_suffix(b".\r\n".as_slice()))
            .expect("status line and terminator");
        let expected: Vec<Vec<u8>> = lines
            .iter()
            .map(|l| [l.as_bytes(), b"\r\n"].concat())
            .collect();
        assert_eq!(client_view(body).0, expected, "{lines:?}");
    }
}

// ---- command lines: read_line, parse, parse_number ----------------------------------------

/// Reads every line of `wire` through a buffer of `capacity` octets, checking X01's limit.
fn read_all(wire: &[u8], capacity: usize) -> Vec<Line> {
    let mut input = BufReader::with_capacity(capacity, wire);
    let mut lines = Vec::new();
    while let Some(line) = protocol::read_line(&mut input).expect("slice read") {
        if let Line::Command(bytes) = &line {
            assert!(
                bytes.len() <= MAX_COMMAND_LINE - 2,
                "{} octets",
                bytes.len()
            );
            assert!(!bytes.contains(&b'\n'), "LF inside {bytes:?}");
        }
        lines.push(line);
    }
    lines
}

#[test]
fn x01_random_command_lines_read_as_the_model_whatever_the_buffer() {
    let mut rng = Rng::new(7);
    for case in 0..CASES {
        let wire = random_wire(&mut rng);
        let capacity = 1 + rng.size(16);
        let lines = read_all(&wire, capacity);
        assert_eq!(
            lines,
            model_lines(&wire),
            "case {case}, buffer of {capacity}, wire {wire:?}"
        );
    }
}

#[test]
fn x01_lines_around_255_octets_with_every_line_end_and_buffer() {
    for len in 250..=258 {
        for end in [&b"\r\n"[..], b"\n", b"\r\r\n"] {
            let wire = [b"A".repeat(len), end.to_vec(), b"NOOP\r\n".to_vec()].concat();
            for capacity in 1..=17 {
                let lines = read_all(&wire, capacity);
                assert_eq!(
                    lines,
                    model_lines(&wire),
                    "{len} + {end:?}, buffer {capacity}"
                );
                let after = lines.last().expect("NOOP follows");
                assert_eq!(*after, Line::Command(b"NOOP".to_vec()), "back in step");
            }
        }
    }
}

#[test]
fn b02_b08_parsed_keywords_are_three_or_four_upper_case_letters() {
    let mut rng = Rng::new(8);
    for case in 0..CASES {
        let wire = random_wire(&mut rng);
        for line in model_lines(&wire) {
            if let Line::Command(bytes) = line {
                let result = std::panic::catch_unwind(|| check_parse(&bytes));
                if let Err(panic) = result {
                    eprintln!("case {case}, line {bytes:?}");
                    std::panic::resume_unwind(panic);
                }
            }
        }
    }
}

#[test]
fn b15_message_numbers_are_the_digit_strings_that_fit_a_u64() {
    let mut rng = Rng::new(9);
    for _ in 0..CASES {
        let arg: String = (0..rng.size(24))
            .map(|_| match rng.below(8) {
                0..=4 => char::from(b'0' + rng.below(10) as u8),
                5 => '0',
                6 => ['-', '+', ' ', 'x', '\u{661}'][rng.size(4)],
                _ => '9',
            })
            .collect();
        check_number(&arg);
    }
    for arg in [
        "18446744073709551615",
        "018446744073709551615",
        "18446744073709551616",
    ] {
        check_number(arg);
    }
}

// ---- the fast path against its plain twin (STYLE.md point 17) ----------------------------

/// `write_message` (the fast version RETR and TOP use) and `write_message_plain` (the rule, line
/// by line, that the book shows first) give the same bytes and the same count for every random
/// message, every `TOP` count and every input buffer size: the plain one is the specification.
#[test]
fn b06_b07_b19_b25_plain_and_fast_agree() {
    for_random_messages(17, |rng, message| {
        let top = match rng.below(3) {
            0 => None,
            _ => Some(rng.below(6)),
        };
        // Small buffers cut lines and CRLFs everywhere; large ones take the fast path through
        // many whole lines, up to the whole message at once.
        let capacity = match rng.below(3) {
            0 => 1 + rng.size(40),
            1 => 41 + rng.size(400),
            _ => message.len().max(1),
        };
        let mut plain = Vec::new();
        let plain_octets = protocol::write_message_plain(
            &mut BufReader::with_capacity(capacity, message),
            &mut plain,
            top,
        )
        .expect("Vec write");
        let mut fast = Vec::new();
        let fast_octets = protocol::write_message(
            &mut BufReader::with_capacity(capacity, message),
            &mut fast,
            top,
        )
        .expect("Vec write");
        assert_eq!(fast, plain, "top {top:?}, buffer {capacity}");
        assert_eq!(fast_octets, plain_octets, "top {top:?}, buffer {capacity}");
        if top.is_none() {
            let size = protocol::message_size(&mut &message[..]).expect("size");
            assert_eq!(
                size, plain_octets,
                "message_size counts what the plain rule sends"
            );
        }
    });
}

// ---- mbox: framing and mboxrd quoting, through the real store ------------------------------

/// A message made of the lines that matter to mbox: From_ lookalikes, quoted ones, blank lines
/// (which make the next `From ` a separator if left unquoted), dots and odd line ends.
fn random_mbox_message(rng: &mut Rng) -> Vec<u8> {
    const PIECES: [&[u8]; 14] = [
        b"From ",
        b">From ",
        b">>From ",
        b">",
        b"From",
        b"\n",
        b"\r\n",
        b"\n\n",
        b"\r",
        b".",
        b"a",
        b" ",
        b"Subject: x",
        b"\0",
    ];
    let mut message = Vec::new();
    for _ in 0..rng.size(24) {
        message.extend_from_slice(PIECES[rng.size(PIECES.len() - 1)]);
    }
    message
}

#[test]
fn b19_b20_b25_mbox_messages_read_back_as_written_modulo_crlf() {
    use popstate::maildrop::Store;
    use popstate::mbox::{MboxStore, append_message};

    let dir = std::env::temp_dir().join(format!("popstate-prop-mbox-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let store = MboxStore::new(&dir);
    let mut rng = Rng::new(11);
    for round in 0..15 {
        // 200 messages in one file: each one's framing meets its neighbours'.
        let messages: Vec<Vec<u8>> = (0..200).map(|_| random_mbox_message(&mut rng)).collect();
        let mut mbox = Vec::new();
        for (n, message) in messages.iter().enumerate() {
            let from = format!("From sender{n}@example.org Mon Jan  1 00:00:00 2024");
            append_message(&mut mbox, &from, message).expect("Vec write");
        }
        std::fs::write(dir.join("user"), &mbox).expect("write mbox");
        let maildrop = store
            .open_maildrop("user")
            .unwrap_or_else(|_| panic!("round {round}"));
        assert_eq!(maildrop.messages().len(), messages.len(), "round {round}");
        for (i, message) in messages.iter().enumerate() {
            let context = format!("round {round}, message {i}: {message:?}");
            let mut wire = Vec::new();
            let mut body = maildrop.open(i).expect("open");
            let octets = protocol::write_message(&mut body, &mut wire, None).expect("write");
            let (lines, stuffing) = client_view(&wire);
            assert_eq!(lines, normalised_lines(message), "{context}");
            assert_eq!(octets, wire.len() as u64 - stuffing, "{context}");
            assert_eq!(
                octets,
                maildrop.messages()[i].size,
                "LIST = RETR: {context}"
            );
            let n = rng.below(4);
            let mut top = Vec::new();
            let mut body = maildrop.open(i).expect("open");
            protocol::write_message(&mut body, &mut top, Some(n)).expect("write");
            assert_eq!(
                client_view(&top).0,
                top_model(&normalised_lines(message), n),
                "TOP {n}: {context}"
            );
        }
        let uids: std::collections::HashSet<&str> =
            maildrop.messages().iter().map(|m| m.uid.as_str()).collect();
        assert_eq!(
            uids.len(),
            messages.len(),
            "round {round}: unique-ids are unique"
        );
        drop(maildrop);
        assert_eq!(
            std::fs::read(dir.join("user")).expect("read"),
            mbox,
            "reading never changes the file"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
