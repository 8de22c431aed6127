//! One POP3 connection from the client's side (RFC 1939 §3): send a command line, read a status
//! line, and for multi-line replies read up to the line holding only `.`.
//!
//! The client sends one command at a time and waits for the whole reply (no pipelining), so the
//! end of a multi-line reply is simply received data that ends in `CRLF . CRLF`: inside a
//! correctly stuffed body a lone `.` line cannot occur. That makes reading a 100 MB message cost
//! the client almost nothing per byte; [`check_body`] does the full check when asked.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// How long any one read or write may wait before the session counts as timed out.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Status lines longer than this are a protocol error (RFC 2449 §4 allows 512 octets).
const MAX_STATUS_LINE: usize = 4096;

/// Why a session failed, by kind, so that a run can count its errors.
#[derive(Debug)]
pub enum Failure {
    Connect(io::Error),
    Timeout,
    /// The server closed the connection in the middle of a reply.
    Eof,
    Io(io::Error),
    /// A `-ERR` reply where `+OK` was expected.
    Negative(String),
    /// A reply that breaks RFC 1939 (or disagrees with the sizes the server announced).
    Protocol(String),
}

impl Failure {
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::Connect(_) => "connect",
            Failure::Timeout => "timeout",
            Failure::Eof => "eof",
            Failure::Io(_) => "io",
            Failure::Negative(_) => "err_reply",
            Failure::Protocol(_) => "protocol",
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Failure::Connect(e) => write!(f, "connect: {e}"),
            Failure::Timeout => write!(f, "timed out"),
            Failure::Eof => write!(f, "connection closed mid-reply"),
            Failure::Io(e) => write!(f, "i/o: {e}"),
            Failure::Negative(line) => write!(f, "-ERR reply: {line}"),
            Failure::Protocol(why) => write!(f, "protocol: {why}"),
        }
    }
}

fn io_failure(e: io::Error) -> Failure {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Failure::Timeout,
        io::ErrorKind::UnexpectedEof => Failure::Eof,
        _ => Failure::Io(e),
    }
}

/// A multi-line reply's body as received: stuffed, CRLF, ending in `.` CRLF. The buffer is kept
/// between replies and only grows, so a client retrieving the same messages again reads each
/// one straight into memory it already has.
#[derive(Default)]
pub struct Body {
    data: Vec<u8>,
    len: usize,
    /// The fixed buffer for [`Pop3::skim`].
    pub scratch: Vec<u8>,
}

impl Body {
    pub fn wire(&self) -> &[u8] {
        &self.data[..self.len]
    }

    fn is_complete(&self) -> bool {
        let got = self.wire();
        got.ends_with(b"\r\n.\r\n") || got == b".\r\n"
    }

    /// Room for the next read: at least 64 KiB free, zeroed once when the buffer grows.
    fn spare(&mut self) -> &mut [u8] {
        if self.data.len() - self.len < 64 * 1024 {
            let bigger = (self.data.len() * 2).max(256 * 1024);
            self.data.resize(bigger, 0);
        }
        &mut self.data[self.len..]
    }
}

/// A logged-in or not-yet-logged-in POP3 connection.
pub struct Pop3 {
    stream: TcpStream,
    /// Received octets not yet used: `buf[start..end]`.
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Pop3 {
    /// Connects and reads the greeting.
    pub fn connect(addr: SocketAddr) -> Result<Pop3, Failure> {
        let stream =
            TcpStream::connect_timeout(&addr, Duration::from_secs(10)).map_err(Failure::Connect)?;
        // Each command is one small write followed by a wait for the reply: with Nagle's
        // algorithm on, a command could wait for the ACK of the previous one.
        stream.set_nodelay(true).map_err(Failure::Io)?;
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .map_err(Failure::Io)?;
        stream
            .set_write_timeout(Some(IO_TIMEOUT))
            .map_err(Failure::Io)?;
        let mut conn = Pop3 {
            stream,
            buf: vec![0; 8 * 1024],
            start: 0,
            end: 0,
        };
        conn.status()?;
        Ok(conn)
    }

    /// Connects, then USER and PASS: a session in the TRANSACTION state.
    pub fn login(addr: SocketAddr, user: &str, password: &str) -> Result<Pop3, Failure> {
        let mut conn = Pop3::connect(addr)?;
        conn.command(&format!("USER {user}"))?;
        conn.command(&format!("PASS {password}"))?;
        Ok(conn)
    }

    /// Sends one command line and returns the text after `+OK`.
    pub fn command(&mut self, line: &str) -> Result<String, Failure> {
        self.send(line)?;
        self.status()
    }

    /// Sends a command whose `+OK` reply goes on with lines up to `.`; the body lands in `body`.
    pub fn multiline(&mut self, line: &str, body: &mut Body) -> Result<String, Failure> {
        self.send(line)?;
        let status = self.status()?;
        // Whatever already arrived after the status line is the start of the body.
        body.len = 0;
        let early = self.end - self.start;
        body.spare()[..early].copy_from_slice(&self.buf[self.start..self.end]);
        body.len = early;
        self.start = 0;
        self.end = 0;
        while !body.is_complete() {
            let n = self.stream.read(body.spare()).map_err(io_failure)?;
            if n == 0 {
                return Err(Failure::Eof);
            }
            body.len += n;
        }
        Ok(status)
    }

    /// Like [`Pop3::multiline`], but the body is not kept: it passes through one fixed buffer,
    /// and only its length and last five octets are looked at. For retrievals whose content was
    /// checked once already: a client that keeps 100 MB in memory measures its own page faults
    /// and cache misses as much as the server (pop3load reads the same way).
    pub fn skim(&mut self, line: &str, scratch: &mut Vec<u8>) -> Result<(String, usize), Failure> {
        const SCRATCH: usize = 256 * 1024;
        self.send(line)?;
        let status = self.status()?;
        if scratch.len() < SCRATCH {
            scratch.resize(SCRATCH, 0);
        }
        // The status line's CRLF comes before the body: a body that is just "." CRLF ends too.
        let mut tail = [0, 0, 0, b'\r', b'\n'];
        let push = |bytes: &[u8], tail: &mut [u8; 5]| {
            let n = bytes.len();
            if n >= 5 {
                tail.copy_from_slice(&bytes[n - 5..]);
            } else {
                tail.copy_within(n.., 0);
                tail[5 - n..].copy_from_slice(bytes);
            }
        };
        let mut wire = self.end - self.start;
        push(&self.buf[self.start..self.end], &mut tail);
        self.start = 0;
        self.end = 0;
        while &tail != b"\r\n.\r\n" {
            let n = self.stream.read(scratch).map_err(io_failure)?;
            if n == 0 {
                return Err(Failure::Eof);
            }
            wire += n;
            push(&scratch[..n], &mut tail);
        }
        Ok((status, wire))
    }

    /// After QUIT: waits for the server to close, so that its lock is surely released before the
    /// same user logs in again.
    pub fn expect_close(mut self) -> Result<(), Failure> {
        let mut scratch = [0u8; 512];
        match self.stream.read(&mut scratch) {
            Ok(0) => Ok(()),
            Ok(_) => Err(Failure::Protocol(
                "data after the reply to QUIT".to_string(),
            )),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(()),
            Err(e) => Err(io_failure(e)),
        }
    }

    /// Sends a command without waiting for its reply (for the idle mode's QUIT at the end).
    pub fn send(&mut self, line: &str) -> Result<(), Failure> {
        let mut wire = Vec::with_capacity(line.len() + 2);
        wire.extend_from_slice(line.as_bytes());
        wire.extend_from_slice(b"\r\n");
        self.stream.write_all(&wire).map_err(io_failure)
    }

    /// Reads one status line: `Ok(text after "+OK")`, or `Failure::Negative` for `-ERR`.
    fn status(&mut self) -> Result<String, Failure> {
        loop {
            let got = &self.buf[self.start..self.end];
            if let Some(i) = got.iter().position(|&b| b == b'\n') {
                let line = String::from_utf8_lossy(&got[..i]);
                let line = line.strip_suffix('\r').unwrap_or(&line).to_string();
                self.start += i + 1;
                if let Some(rest) = line.strip_prefix("+OK") {
                    return Ok(rest.trim_start().to_string());
                }
                if line.starts_with("-ERR") {
                    return Err(Failure::Negative(line));
                }
                return Err(Failure::Protocol(format!("not a status line: {line:?}")));
            }
            if self.end - self.start >= MAX_STATUS_LINE {
                return Err(Failure::Protocol("status line too long".to_string()));
            }
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let n = self
                .stream
                .read(&mut self.buf[self.end..])
                .map_err(io_failure)?;
            if n == 0 {
                return Err(Failure::Eof);
            }
            self.end += n;
        }
    }
}

/// Checks a multi-line body as RFC 1939 §3 wants it on the wire: every line ends in CRLF (no
/// bare LF), every line that starts with `.` is stuffed, and it ends with `.` CRLF. Returns the
/// octets the client keeps after un-stuffing, which must equal the size LIST announced (§11).
pub fn check_body(wire: &[u8]) -> Result<u64, String> {
    let content = if wire == b".\r\n" {
        &[][..]
    } else {
        wire.strip_suffix(b"\r\n.\r\n")
            .map(|c| &wire[..c.len() + 2])
            .ok_or("no terminating line")?
    };
    let mut octets = 0u64;
    let mut rest = content;
    while !rest.is_empty() {
        let nl = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("last line has no line end")?;
        let line = &rest[..=nl];
        if nl == 0 || line[nl - 1] != b'\r' {
            return Err(format!(
                "bare LF at octet {}",
                content.len() - rest.len() + nl
            ));
        }
        let stuffed = line[0] == b'.';
        if stuffed && line.get(1) != Some(&b'.') {
            return Err("a line starts with an unstuffed '.'".to_string());
        }
        octets += line.len() as u64 - u64::from(stuffed);
        rest = &rest[nl + 1..];
    }
    Ok(octets)
}

/// The numbers in a listing body (`LIST` or `UIDL`): one `(number, rest)` per line.
pub fn listing(wire: &[u8]) -> Result<Vec<(u64, String)>, String> {
    let text = String::from_utf8_lossy(wire);
    let mut lines = Vec::new();
    for line in text.split("\r\n") {
        if line == "." {
            break;
        }
        let (n, rest) = line
            .split_once(' ')
            .ok_or_else(|| format!("bad listing line {line:?}"))?;
        let n = n
            .parse()
            .map_err(|_| format!("bad message number in {line:?}"))?;
        lines.push((n, rest.to_string()));
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_body_unstuffs_and_counts() {
        assert_eq!(check_body(b".\r\n"), Ok(0));
        assert_eq!(check_body(b"a\r\n..b\r\n.\r\n"), Ok(3 + 4));
        assert!(check_body(b"a\n.\r\n").is_err());
        assert!(check_body(b".b\r\n.\r\n").is_err());
    }
}
