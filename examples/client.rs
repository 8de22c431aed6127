//! A small POP3 client (RFC 1939) with nothing but the standard library: the other side of the
//! conversation that `src/` answers. It logs in, lists the maildrop, fetches every message and
//! prints one line for each, and can show one message whole or delete them all.
//!
//! ```text
//! cargo run                     # in one terminal: the demo server
//! cargo run --example client -- [--addr 127.0.0.1:1110] [--user alice --pass wonderland]
//!                               [--show N] [--delete]
//! ```
//!
//! The client's half of the wire format (RFC 1939 §3): a reply starts with `+OK` or `-ERR`; a
//! multi-line reply ends at a line holding only `.`, and a line of it that starts with `.` had one
//! more `.` put in front by the server, which the client takes off again.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use argh::FromArgs;

/// How long to wait to connect and for each reply before giving up on the server.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Fetch mail from a POP3 server and print one line per message.
#[derive(FromArgs)]
struct Args {
    /// the server's address and port (default 127.0.0.1:1110)
    #[argh(option, default = "String::from(\"127.0.0.1:1110\")")]
    addr: String,
    /// user name (default alice, from the demo)
    #[argh(option, default = "String::from(\"alice\")")]
    user: String,
    /// password (default wonderland, from the demo)
    #[argh(option, default = "String::from(\"wonderland\")")]
    pass: String,
    /// print message N whole, after the summary
    #[argh(option)]
    show: Option<u64>,
    /// delete every message retrieved (the server removes them at QUIT)
    #[argh(switch)]
    delete: bool,
}

fn main() -> ExitCode {
    let args: Args = argh::from_env();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("client: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The whole session. Any error returns at once and drops the connection without QUIT, so the
/// server removes nothing (RFC 1939 §6): a failed run never loses mail.
fn run(args: &Args) -> Result<(), String> {
    let mut pop = Pop3::connect(&args.addr)?;
    println!("{}: {}", args.addr, pop.status("the greeting")?);
    pop.command(&format!("USER {}", args.user))?;
    println!("{}", pop.command(&format!("PASS {}", args.pass))?);

    let stat = pop.command("STAT")?;
    println!("STAT: {stat} (messages, octets)");

    pop.command("LIST")?;
    let mut listing = Vec::new();
    for line in String::from_utf8_lossy(&pop.multi_line()?).lines() {
        // A scan listing is "msg size" (RFC 1939 §5); anything after them may be ignored.
        let mut words = line.split(' ').map(str::parse::<u64>);
        match (words.next(), words.next()) {
            (Some(Ok(number)), Some(Ok(size))) => listing.push((number, size)),
            _ => return Err(format!("LIST: {line:?} is not a scan listing")),
        }
    }
    if let Some(n) = args.show
        && !listing.iter().any(|&(number, _)| number == n)
    {
        return Err(format!("--show {n}: LIST has no message {n}"));
    }

    let mut shown = None;
    for &(number, size) in &listing {
        pop.command(&format!("RETR {number}"))?;
        let message = pop.multi_line()?;
        println!("{number:>4} {size:>7} octets  {}", subject(&message));
        // The size in LIST is what RETR sends, line ends counted as CRLF and stuffing not
        // counted (RFC 1939 §5, §11): un-stuffed, the two must agree.
        if message.len() as u64 != size {
            eprintln!(
                "client: message {number}: LIST said {size} octets, RETR sent {}",
                message.len()
            );
        }
        if args.show == Some(number) {
            shown = Some(message);
        }
        if args.delete {
            pop.command(&format!("DELE {number}"))?;
        }
    }

    // QUIT is what makes the marks count: only now does the server remove what was deleted.
    println!("QUIT: {}", pop.command("QUIT")?);
    if let (Some(n), Some(message)) = (args.show, shown) {
        println!("\n--- message {n} ---");
        io::stdout()
            .write_all(&message)
            .map_err(|e| format!("cannot print message {n}: {e}"))?;
    }
    Ok(())
}

/// The `Subject` header of a message, unfolded (RFC 5322 §2.2.3), or "(no subject)".
fn subject(message: &[u8]) -> String {
    let text = String::from_utf8_lossy(message);
    let mut subject: Option<String> = None;
    let mut in_subject = false;
    for line in text.lines() {
        if line.is_empty() {
            // The header ends at the first empty line.
            break;
        }
        if line.starts_with([' ', '\t']) {
            // A folded header goes on in a line that starts with white space.
            if in_subject && let Some(s) = subject.as_mut() {
                s.push_str(line);
            }
            continue;
        }
        in_subject = false;
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("Subject")
            && subject.is_none()
        {
            subject = Some(value.trim().to_string());
            in_subject = true;
        }
    }
    subject.unwrap_or_else(|| "(no subject)".into())
}

/// A connection to a POP3 server.
struct Pop3 {
    reader: BufReader<TcpStream>,
}

impl Pop3 {
    fn connect(addr: &str) -> Result<Pop3, String> {
        let trouble = |e: io::Error| {
            format!("cannot connect to {addr}: {e} (is the server running? try `cargo run`)")
        };
        let addrs = addr
            .to_socket_addrs()
            .map_err(|e| format!("{addr} is not an address: {e}"))?;
        let mut last = format!("{addr} names no address");
        for a in addrs {
            match TcpStream::connect_timeout(&a, TIMEOUT) {
                Ok(stream) => {
                    stream
                        .set_read_timeout(Some(TIMEOUT))
                        .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
                        .map_err(trouble)?;
                    return Ok(Pop3 {
                        reader: BufReader::new(stream),
                    });
                }
                Err(e) => last = trouble(e),
            }
        }
        Err(last)
    }

    /// Sends one command line and returns the text after `+OK`, or the `-ERR` as an error.
    fn command(&mut self, line: &str) -> Result<String, String> {
        // Never repeat a password in an error message.
        let what = match line.get(..5) {
            Some(start) if start.eq_ignore_ascii_case("PASS ") => "PASS ****",
            _ => line,
        };
        let mut stream = self.reader.get_ref();
        stream
            .write_all(format!("{line}\r\n").as_bytes())
            .map_err(|e| format!("{what}: cannot send: {e}"))?;
        self.status(what)
    }

    /// Reads a status line: `+OK text` gives `text`; `-ERR text` becomes the error.
    fn status(&mut self, what: &str) -> Result<String, String> {
        let raw = self
            .line()
            .map_err(|e| format!("{what}: no reply from the server: {e}"))?;
        let line = String::from_utf8_lossy(&raw);
        let line = line.trim_end_matches(['\r', '\n']);
        if let Some(text) = line.strip_prefix("+OK") {
            Ok(text.trim_start().to_string())
        } else if line.starts_with("-ERR") {
            Err(format!("{what}: the server said {line}"))
        } else {
            Err(format!("{what}: {line:?} is not a POP3 reply"))
        }
    }

    /// Reads the rest of a multi-line reply and returns its content as the server holds it: up
    /// to the line with a lone `.`, each line with its line end, stuffing dots taken off.
    fn multi_line(&mut self) -> Result<Vec<u8>, String> {
        let mut content = Vec::new();
        loop {
            let line = self
                .line()
                .map_err(|e| format!("in a multi-line reply: {e}"))?;
            // Servers end lines with CRLF; bare LF is accepted too, to be lenient.
            if line == b".\r\n" || line == b".\n" {
                return Ok(content);
            }
            // A line that starts with "." was stuffed: the first dot is not part of it. That is
            // also why a content line holding only "." can never end the reply early.
            content.extend_from_slice(line.strip_prefix(b".").unwrap_or(&line));
        }
    }

    /// One line with its line end.
    fn line(&mut self) -> io::Result<Vec<u8>> {
        let mut line = Vec::new();
        if self.reader.read_until(b'\n', &mut line)? == 0 || !line.ends_with(b"\n") {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        Ok(line)
    }
}
