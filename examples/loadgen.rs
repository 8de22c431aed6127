//! loadgen: popstate's load generator and limit probe. Standard library only, loopback only.
//!
//! It is also a second reading example: a concurrent POP3 *client* (RFC 1939), one OS thread per
//! connection like the server, built on `std::net` and nothing else.
//!
//! ```text
//! cargo run --release --example loadgen -- MODE --flag value ...
//!
//! probe    --listen ADDR --maildir-root DIR         the limit probe: a minimal POP3 server that
//!                                                   answers from memory, one thread per client
//! sessions --addr ADDR --clients C --seconds D      C clients, each its own user (u0001, u0002,
//!          [--users-prefix u --password P]          ...), repeat USER PASS STAT LIST UIDL, RETR
//!          [--retrs N]                              of every message (or the first N), QUIT
//!                                                   for D seconds
//! retr     --addr ADDR --user big [--seconds D]     RETR one message again and again: MB/s
//! latency  --addr ADDR [--user u0001 --count N]     NOOP round trips: p50, p99 in µs
//! idle     --addr ADDR --sessions N --hold S        hold N logged-in sessions; the server's
//!          --server-pid PID                         memory (PSS) from /proc, per session
//! login    --addr ADDR --user m100000 [--cold K]    greeting → +OK after PASS → STAT, timed;
//!          [--repeat R]                             cold after dropping the page cache
//! ```
//!
//! Every mode prints one JSON line on standard output (and a readable line on standard error).
//! Every loop is bounded by a count and by a time, and an address outside 127.0.0.0/8 or ::1 is
//! refused. bench/run.sh runs all of it against popstate, the probe and Dovecot;
//! docs/performance.md explains what the numbers mean.
//!
//! The modules, in reading order: [`client`] (one POP3 connection as a client sees it),
//! [`modes`] (the measurements), [`probe`] (the limit probe server), [`report`] (JSON, medians
//! and what /proc says).

// A crate root looks for its modules beside itself, so the paths are spelled out.
#[path = "loadgen/client.rs"]
mod client;
#[path = "loadgen/modes.rs"]
mod modes;
#[path = "loadgen/probe.rs"]
mod probe;
#[path = "loadgen/report.rs"]
mod report;

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::str::FromStr;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match Args::parse(&argv) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("loadgen: {e}\n(see the header of examples/loadgen.rs for the modes)");
            return ExitCode::from(2);
        }
    };
    let result = match args.mode.as_str() {
        "probe" => probe::serve(&args),
        "sessions" => modes::sessions(&args),
        "retr" => modes::retr(&args),
        "latency" => modes::latency(&args),
        "idle" => modes::idle(&args),
        "login" => modes::login(&args),
        other => Err(format!("unknown mode {other:?}")),
    };
    match result {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loadgen {}: {e}", args.mode);
            ExitCode::FAILURE
        }
    }
}

/// The command line: a mode, then `--name value` pairs.
pub struct Args {
    pub mode: String,
    flags: HashMap<String, String>,
}

impl Args {
    fn parse(argv: &[String]) -> Result<Args, String> {
        let (mode, rest) = argv.split_first().ok_or("no mode given")?;
        let mut flags = HashMap::new();
        let mut it = rest.iter();
        while let Some(name) = it.next() {
            let name = name
                .strip_prefix("--")
                .ok_or_else(|| format!("expected --flag, found {name:?}"))?;
            let value = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
            flags.insert(name.to_string(), value.clone());
        }
        Ok(Args {
            mode: mode.clone(),
            flags,
        })
    }

    /// A text flag, or its default; `None` as the default makes the flag required.
    pub fn text(&self, name: &str, default: Option<&str>) -> Result<String, String> {
        match (self.flags.get(name), default) {
            (Some(v), _) => Ok(v.clone()),
            (None, Some(d)) => Ok(d.to_string()),
            (None, None) => Err(format!("--{name} is required")),
        }
    }

    /// A number flag, or its default, refused above `max` (every loop here is bounded).
    pub fn number<T>(&self, name: &str, default: T, max: T) -> Result<T, String>
    where
        T: FromStr + PartialOrd + std::fmt::Display + Copy,
    {
        let value = match self.flags.get(name) {
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{name}: {v:?} is not a number"))?,
            None => default,
        };
        if value > max {
            return Err(format!("--{name} {value} is above the limit of {max}"));
        }
        Ok(value)
    }

    /// An address flag; only loopback addresses are accepted.
    pub fn addr(&self, name: &str) -> Result<SocketAddr, String> {
        let text = self.text(name, None)?;
        let addr = text
            .to_socket_addrs()
            .map_err(|e| format!("--{name} {text}: {e}"))?
            .next()
            .ok_or_else(|| format!("--{name} {text}: no address"))?;
        if !addr.ip().is_loopback() {
            return Err(format!(
                "--{name} {addr}: only loopback addresses (127.0.0.0/8, ::1) are allowed"
            ));
        }
        Ok(addr)
    }
}
