//! How fast popstate turns a stored message into what RETR sends, in memory: no disk, no socket.
//!
//! ```text
//! cargo run --release --example convert                 # a generated 32 MB message
//! cargo run --release --example convert -- FILE [ROUNDS]
//! ```
//!
//! It times the three functions of `src/protocol.rs` that see every octet of a message:
//! `write_message_plain` (the rule as RFC 1939 states it, one line at a time, the reference),
//! `write_message` (what the server sends with) and `message_size` (what STAT and LIST count),
//! each reading through a 256 KiB buffer as the server does and writing into `io::sink()`. It
//! checks first that the plain and the fast version give the same bytes and that all three
//! agree on the size, then prints the best of ROUNDS (default 9) in MB/s: the best, because on a
//! shared machine every disturbance makes a run slower, never faster.
//!
//! The generated message has the shape of the benchmark's (bench/mkmaildrop.py): LF line ends,
//! lines of 4 to 13 words, about 48 octets on average, some starting with a dot, some empty.

use std::io::{self, BufReader};
use std::time::Instant;

use popstate::protocol::{message_size, write_message, write_message_plain};

fn main() {
    let mut args = std::env::args().skip(1);
    let (name, message) = match args.next() {
        Some(path) => match std::fs::read(&path) {
            Ok(bytes) => (path, bytes),
            Err(e) => {
                eprintln!("convert: cannot read {path}: {e}");
                std::process::exit(2);
            }
        },
        None => ("a generated message".to_string(), generated(32_000_000)),
    };
    let rounds: usize = match args.next().map(|r| r.parse()) {
        None => 9,
        Some(Ok(r)) if r > 0 => r,
        Some(_) => {
            eprintln!("convert: ROUNDS must be a whole number above 0");
            std::process::exit(2);
        }
    };

    let mut plain = Vec::new();
    let mut fast = Vec::new();
    let sizes = (|| -> io::Result<[u64; 3]> {
        Ok([
            write_message_plain(&mut reader(&message), &mut plain, None)?,
            write_message(&mut reader(&message), &mut fast, None)?,
            message_size(&mut reader(&message))?,
        ])
    })()
    .unwrap_or_else(|e| {
        eprintln!("convert: {e}");
        std::process::exit(2);
    });
    if plain != fast || sizes[0] != sizes[1] || sizes[0] != sizes[2] {
        eprintln!("convert: the three functions disagree on {name}: sizes {sizes:?}");
        std::process::exit(1);
    }
    println!(
        "{name}: {} octets stored, {} on the wire; best of {rounds} rounds:",
        message.len(),
        sizes[0]
    );

    let mb = message.len() as f64 / 1e6;
    let time = |run: &dyn Fn() -> io::Result<u64>| {
        (0..rounds)
            .map(|_| {
                let started = Instant::now();
                let _ = std::hint::black_box(run());
                started.elapsed().as_secs_f64()
            })
            .fold(f64::MAX, f64::min)
    };
    let runs: [(&str, &dyn Fn() -> io::Result<u64>); 3] = [
        ("write_message_plain", &|| {
            write_message_plain(&mut reader(&message), &mut io::sink(), None)
        }),
        ("write_message", &|| {
            write_message(&mut reader(&message), &mut io::sink(), None)
        }),
        ("message_size", &|| message_size(&mut reader(&message))),
    ];
    for (what, run) in runs {
        println!("  {what:<20} {:>7.0} MB/s", mb / time(run));
    }
}

/// The message behind a 256 KiB buffer, as `MaildirMaildrop::open` reads files.
fn reader(message: &[u8]) -> BufReader<&[u8]> {
    BufReader::with_capacity(256 * 1024, message)
}

/// About `len` octets of mail-like lines, the same every time (a fixed-seed xorshift).
fn generated(len: usize) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "alpha",
        "mailbox",
        "message",
        "server",
        "client",
        "session",
        "octet",
        "the",
        "of",
        "loopback",
        "thread",
        "socket",
        "buffer",
        "header",
        "retrieve",
        "deterministic",
    ];
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut message = b"From: a@example.org\nSubject: generated\n\n".to_vec();
    let mut line = 0;
    while message.len() < len {
        line += 1;
        if line % 53 == 7 {
            message.push(b'\n');
            continue;
        }
        if line % 37 == 5 {
            message.push(b'.');
        }
        let start = message.len();
        for word in 0..4 + next(10) {
            if word > 0 {
                message.push(b' ');
            }
            message.extend_from_slice(WORDS[next(16) as usize].as_bytes());
        }
        message.truncate(start + (message.len() - start).min(78));
        message.push(b'\n');
    }
    message
}
