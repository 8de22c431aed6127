//! Replays a transcript (`tests/transcripts/*.txt`, the ones the book shows) against a running
//! POP3 server, and shows the first line where the server answers differently.
//!
//! ```text
//! cargo run                                                   # in one terminal: the demo
//! cargo run --example replay -- tests/transcripts/first-session.txt [--addr 127.0.0.1:1110]
//! ```
//!
//! Exit status: 0 when every server line is as written, 1 at the first difference, 2 when the
//! arguments or the file are wrong. The transcripts expect the demo maildrop as `cargo run`
//! creates it, and some of them delete messages: restart the server between replays.
//! The format and the checks are in `replay/transcript.rs`; `tests/transcripts.rs` runs the same
//! code against a fresh demo server for every transcript.

// A crate root looks for modules beside itself, so the shared file is named with its path.
#[path = "replay/transcript.rs"]
mod transcript;

use std::path::PathBuf;
use std::process::ExitCode;

use argh::FromArgs;

/// Replay a POP3 transcript against a server and show where its replies differ.
#[derive(FromArgs)]
struct Args {
    /// the transcript file, such as tests/transcripts/first-session.txt
    #[argh(positional)]
    transcript: PathBuf,
    /// the server's address and port (default 127.0.0.1:1110)
    #[argh(option, default = "String::from(\"127.0.0.1:1110\")")]
    addr: String,
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let rest: Vec<&str> = argv.iter().skip(1).map(String::as_str).collect();
    let args = match Args::from_args(&["replay"], &rest) {
        Ok(args) => args,
        // `--help` comes here too, with a success status: only bad arguments exit with 2.
        Err(exit) => {
            return match exit.status {
                Ok(()) => {
                    println!("{}", exit.output);
                    ExitCode::SUCCESS
                }
                Err(()) => {
                    eprintln!("replay: {} (see replay --help)", exit.output.trim_end());
                    ExitCode::from(2)
                }
            };
        }
    };
    let path = args.transcript.display();
    let text = match std::fs::read_to_string(&args.transcript) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("replay: cannot read {path}: {e}");
            return ExitCode::from(2);
        }
    };
    match transcript::replay(&text, &args.addr) {
        Ok(()) => {
            println!("{path}: the server at {} answered as written", args.addr);
            ExitCode::SUCCESS
        }
        Err(difference) => {
            eprintln!("{path}, {difference}");
            ExitCode::from(1)
        }
    }
}
