//! Transcripts: a POP3 conversation written down line by line, and a replayer that runs one
//! against a live server and reports the first line where the server answers differently.
//!
//! ```text
//! # a comment               ignored, like blank lines
//! C: USER alice             the client sends "USER alice" and CRLF
//! S: +OK ...                the server's next line is exactly this, without its CRLF
//! C2: ... / S2: ...         the same on a second connection, opened at its first use
//! -- any words              the client drops the first connection without QUIT; the next
//!                           line is the new connection's greeting
//! ```
//!
//! Server lines are compared as they are on the wire: a multi-line reply keeps its stuffing dots
//! and ends with `S: .`; an empty line may be written `S:`. The one exception is an APOP
//! timestamp at the end of a `+OK` line (the greeting): it differs on every connection (RFC 1939
//! §7), so it is left out of the comparison on both sides. A `[LOGIN-DELAY]` reply's "try again
//! in N seconds" (popstate's own words) may show up to ten seconds fewer than the transcript,
//! never more: it counts down from the last login, and the transcript shows its first second.
//! Shared by `examples/replay.rs` (any server, from the command line) and `tests/transcripts.rs`
//! (the book's fixtures).

use std::fmt;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// How long to wait to connect, and for each line: a server that answers less than the
/// transcript shows makes the replay fail after this, instead of hang.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The tags of the two connections' lines, as the transcript writes them.
const CLIENT_TAGS: [&str; 2] = ["C", "C2"];
const SERVER_TAGS: [&str; 2] = ["S", "S2"];

/// Where a replay went differently from the transcript.
#[derive(Debug)]
pub struct Difference {
    /// The line of the transcript file, counting from 1.
    pub line: usize,
    /// What the transcript says should happen, usually the line itself (`S: +OK 6 29816`).
    pub expected: String,
    /// What happened instead, written the same way when it is a server line.
    pub got: String,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "line {}\n  expected: {}\n  got:      {}",
            self.line, self.expected, self.got
        )
    }
}

/// One thing a transcript line asks for; `conn` is 0 for `C:`/`S:` and 1 for `C2:`/`S2:`.
enum Step {
    Send { conn: usize, text: String },
    Expect { conn: usize, text: String },
    Drop,
}

// ANCHOR: replay
/// Runs `transcript` against the server at `addr` (such as `127.0.0.1:1110`). `Ok` means every
/// server line was as written and nothing more came.
pub fn replay(transcript: &str, addr: &str) -> Result<(), Difference> {
    // Read the whole file first, so that a typo is reported before anything is sent.
    let steps = parse(transcript)?;
    let mut conns: [Option<Connection>; 2] = [None, None];
    for (line, step) in steps {
        match step {
            Step::Send { conn, text } => {
                let c = open(&mut conns[conn], conn, addr, line)?;
                // Anything still unread now is a line the transcript does not show.
                c.nothing_pending(line)?;
                c.send(&text, line)?;
            }
            Step::Expect { conn, text } => {
                let c = open(&mut conns[conn], conn, addr, line)?;
                let heard = c.read_line();
                if !matches!(&heard, Heard::Line(got) if same_line(got, text.as_bytes())) {
                    return Err(Difference {
                        line,
                        expected: shown(SERVER_TAGS[conn], &text),
                        got: heard.describe(SERVER_TAGS[conn]),
                    });
                }
            }
            Step::Drop => {
                if let Some(c) = conns[0].take() {
                    c.close(line)?;
                }
            }
        }
    }
    for c in conns.into_iter().flatten() {
        let line = c.last_line;
        c.close(line)?;
    }
    Ok(())
}
// ANCHOR_END: replay

/// How far a LOGIN-DELAY countdown may have run down from the number the transcript shows.
const COUNTDOWN_SLACK: u64 = 10;

/// Whether a server line is the one the transcript shows, APOP timestamps aside, and a
/// LOGIN-DELAY countdown allowed to have run down since the moment the transcript shows.
fn same_line(got: &[u8], expected: &[u8]) -> bool {
    let (got, expected) = (without_timestamp(got), without_timestamp(expected));
    match (countdown(got), countdown(expected)) {
        // The server rounds up, so a reply within the first second of the delay says the whole
        // delay; the transcript shows that, and a busy machine may be a second or more later.
        // More than a few seconds less would be a wrong count, not a slow machine.
        (Some((got_text, left)), Some((expected_text, shown))) => {
            got_text == expected_text
                && 0 < left
                && left <= shown
                && left >= shown.saturating_sub(COUNTDOWN_SLACK)
        }
        _ => got == expected,
    }
}

/// `-ERR [LOGIN-DELAY] ... try again in 60 seconds` as the text before the number and the
/// number; other lines give `None`.
fn countdown(line: &[u8]) -> Option<(&[u8], u64)> {
    let text = std::str::from_utf8(line).ok()?;
    let before = text
        .strip_prefix("-ERR [LOGIN-DELAY] ")?
        .strip_suffix(" seconds")?;
    let (before, number) = before.rsplit_once(' ')?;
    if !before.ends_with(" try again in") {
        return None;
    }
    // Digits only, as the server writes a number: no sign, no leading zero.
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) || number.starts_with('0') {
        return None;
    }
    let text_len = "-ERR [LOGIN-DELAY] ".len() + before.len();
    Some((&line[..text_len], number.parse().ok()?))
}

/// `+OK text <1234.5@host>` without ` <1234.5@host>`: other lines as they are.
fn without_timestamp(line: &[u8]) -> &[u8] {
    if line.starts_with(b"+OK")
        && line.ends_with(b">")
        && let Some(start) = line.windows(2).rposition(|w| w == b" <")
        && line[start..].contains(&b'@')
    {
        return &line[..start];
    }
    line
}

/// Reads a transcript into steps, each with its line number.
fn parse(transcript: &str) -> Result<Vec<(usize, Step)>, Difference> {
    let mut steps = Vec::new();
    for (index, line) in transcript.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let step = if line.starts_with("--") {
            Step::Drop
        } else {
            tagged(line).ok_or_else(|| Difference {
                line: index + 1,
                expected: "a line starting with C:, S:, C2:, S2:, -- or #".into(),
                got: line.into(),
            })?
        };
        steps.push((index + 1, step));
    }
    Ok(steps)
}

/// `C: text`, `S2: text`, ...: a tag, a colon, one space, the text. With no text the space may
/// be left out, so that a blank line of a message needs no trailing space in the file.
fn tagged(line: &str) -> Option<Step> {
    let (tag, rest) = line.split_once(':')?;
    let text = match rest.strip_prefix(' ') {
        Some(text) => text.to_string(),
        None if rest.is_empty() => String::new(),
        None => return None,
    };
    if let Some(conn) = CLIENT_TAGS.iter().position(|&t| t == tag) {
        Some(Step::Send { conn, text })
    } else {
        let conn = SERVER_TAGS.iter().position(|&t| t == tag)?;
        Some(Step::Expect { conn, text })
    }
}

/// A line as the transcript writes it: `S: text`, or `S:` when the text is empty.
fn shown(tag: &str, text: &str) -> String {
    if text.is_empty() {
        format!("{tag}:")
    } else {
        format!("{tag}: {text}")
    }
}

/// The connection in `slot`, opened now if this is its first use: its greeting is then the
/// next thing to read, as the transcript's next `S:` line expects.
fn open<'a>(
    slot: &'a mut Option<Connection>,
    conn: usize,
    addr: &str,
    line: usize,
) -> Result<&'a mut Connection, Difference> {
    if slot.is_none() {
        let stream = connect(addr).map_err(|e| Difference {
            line,
            expected: format!("a connection to {addr}"),
            got: e,
        })?;
        *slot = Some(Connection {
            reader: BufReader::new(stream),
            tag: SERVER_TAGS[conn],
            last_command: String::new(),
            last_line: line,
        });
    }
    let c = slot.as_mut().expect("the slot was filled just above");
    c.last_line = line;
    Ok(c)
}

/// Connects with [`TIMEOUT`] for the connection and for every read and write.
fn connect(addr: &str) -> Result<TcpStream, String> {
    let addrs = addr
        .to_socket_addrs()
        .map_err(|e| format!("{addr} is not an address: {e}"))?;
    let mut last_error = format!("{addr} names no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, TIMEOUT) {
            Ok(stream) => {
                stream
                    .set_read_timeout(Some(TIMEOUT))
                    .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
                    .map_err(|e| format!("cannot set timeouts: {e}"))?;
                return Ok(stream);
            }
            Err(e) => last_error = format!("cannot connect to {a}: {e}"),
        }
    }
    Err(last_error)
}

/// What one read from the server brought.
enum Heard {
    /// A line ended by CRLF, given without the CRLF.
    Line(Vec<u8>),
    /// The server closed the connection.
    Closed,
    /// Anything else: a line without CRLF, silence, a read error. Says what, for the report.
    Trouble(String),
}

impl Heard {
    /// For a report's `got:`: a line as the transcript would write it, or what went wrong.
    fn describe(&self, tag: &str) -> String {
        match self {
            Heard::Line(bytes) => shown(tag, &printable(bytes)),
            Heard::Closed => "the server closed the connection".into(),
            Heard::Trouble(what) => what.clone(),
        }
    }
}

/// Server bytes for a report, with invisible characters (a stray CR, say) escaped.
fn printable(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    if text.chars().any(char::is_control) {
        format!("{text:?}")
    } else {
        text.into_owned()
    }
}

/// One open connection to the server.
struct Connection {
    reader: BufReader<TcpStream>,
    /// `S` or `S2`, to write this connection's server lines in reports.
    tag: &'static str,
    /// The last command sent, to know whether the server should close the connection itself.
    last_command: String,
    /// The transcript line that last used this connection, for reports at the very end.
    last_line: usize,
}

impl Connection {
    fn send(&mut self, text: &str, line: usize) -> Result<(), Difference> {
        let mut stream = self.reader.get_ref();
        stream
            .write_all(format!("{text}\r\n").as_bytes())
            .map_err(|e| Difference {
                line,
                expected: format!("to send {text:?}"),
                got: format!("a write error: {e}"),
            })?;
        self.last_command = text.to_string();
        Ok(())
    }

    fn read_line(&mut self) -> Heard {
        let mut bytes = Vec::new();
        // On an error read_until keeps what it read so far, to show in the report.
        match self.reader.read_until(b'\n', &mut bytes) {
            Ok(0) => Heard::Closed,
            Ok(_) => match bytes.strip_suffix(b"\r\n") {
                Some(line) => Heard::Line(line.to_vec()),
                None if bytes.ends_with(b"\n") => Heard::Trouble(format!(
                    "{:?}, ended by LF alone (POP3 lines end with CRLF)",
                    String::from_utf8_lossy(&bytes)
                )),
                None => Heard::Trouble(format!(
                    "{:?}, then the connection closed before CRLF",
                    String::from_utf8_lossy(&bytes)
                )),
            },
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                let after = if bytes.is_empty() {
                    String::new()
                } else {
                    format!(" after {:?}", String::from_utf8_lossy(&bytes))
                };
                Heard::Trouble(format!("nothing{after} for {} s", TIMEOUT.as_secs()))
            }
            Err(e) => Heard::Trouble(format!("a read error: {e}")),
        }
    }

    /// Fails if the server has sent something that has not been read yet. It only sees what has
    /// arrived already, but a server writes a reply in one go, so extra lines come with it.
    fn nothing_pending(&mut self, line: usize) -> Result<(), Difference> {
        let pending = self.has_unread().map_err(|e| Difference {
            line,
            expected: "to check for more lines from the server".into(),
            got: format!("an error: {e}"),
        })?;
        if !pending {
            return Ok(());
        }
        Err(Difference {
            line,
            expected: "no more lines from the server before this command".into(),
            got: self.read_line().describe(self.tag),
        })
    }

    fn has_unread(&self) -> io::Result<bool> {
        if !self.reader.buffer().is_empty() {
            return Ok(true);
        }
        // Peek without waiting: non-blocking just for this look.
        let stream = self.reader.get_ref();
        stream.set_nonblocking(true)?;
        let peeked = stream.peek(&mut [0u8; 1]);
        stream.set_nonblocking(false)?;
        match peeked {
            // Ok(0) is a closed connection, not a line: the next read reports it.
            Ok(n) => Ok(n > 0),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Ends the connection and checks that the server ends it too, sending nothing more. After
    /// QUIT the server closes it by itself (RFC 1939 §6). Otherwise the client hangs up without
    /// a word, as a dropped connection does; waiting for the server's close then also means
    /// that its session is over and its lock released before the transcript goes on.
    fn close(mut self, line: usize) -> Result<(), Difference> {
        let after_quit = self.last_command.trim().eq_ignore_ascii_case("QUIT");
        let expected = if after_quit {
            "the server to close the connection after QUIT"
        } else {
            // Shutting down our sending half is what the server sees when a client vanishes:
            // the end of its input. An error means the connection is gone already, which is fine.
            let _ = self.reader.get_ref().shutdown(Shutdown::Write);
            "the server to send nothing more and close the connection"
        };
        match self.read_line() {
            Heard::Closed => Ok(()),
            heard => Err(Difference {
                line,
                expected: expected.into(),
                got: heard.describe(self.tag),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::same_line;

    const SHOWN: &[u8] =
        b"-ERR [LOGIN-DELAY] alice may log in once every 60 seconds: try again in 60 seconds";

    #[test]
    fn a_login_delay_countdown_may_run_down_but_not_up_and_the_text_must_match() {
        assert!(same_line(SHOWN, SHOWN));
        for shorter in [58, 50] {
            let line = format!(
                "-ERR [LOGIN-DELAY] alice may log in once every 60 seconds: try again in {shorter} \
                 seconds"
            );
            assert!(same_line(line.as_bytes(), SHOWN), "{line}");
        }
        for wrong in [
            &b"-ERR [LOGIN-DELAY] alice may log in once every 60 seconds: try again in 61 seconds"
                [..],
            b"-ERR [LOGIN-DELAY] alice may log in once every 60 seconds: try again in 0 seconds",
            // A count of the time since the login, say, instead of the time left.
            b"-ERR [LOGIN-DELAY] alice may log in once every 60 seconds: try again in 1 seconds",
            b"-ERR [LOGIN-DELAY] alice may log in once every 60 seconds: try again in 49 seconds",
            b"-ERR [LOGIN-DELAY] alice may log in once every 60 seconds: try again in 058 seconds",
            b"-ERR [LOGIN-DELAY] alice may log in once every 60 seconds: try again in +58 seconds",
            b"-ERR [LOGIN-DELAY] alice may log in once every 60 seconds: try again in x seconds",
            b"-ERR [LOGIN-DELAY] bob may log in once every 60 seconds: try again in 59 seconds",
            b"-ERR [LOGIN-DELAY] alice may log in once every 90 seconds: try again in 59 seconds",
        ] {
            assert!(
                !same_line(wrong, SHOWN),
                "{}",
                String::from_utf8_lossy(wrong)
            );
        }
        // Other lines are compared as they are.
        assert!(!same_line(b"+OK 6 29816", b"+OK 6 29815"));
    }
}
