//! One POP3 session, from greeting to goodbye (RFC 1939 §3): the code a client's thread runs.
//!
//! ```text
//! greeting ──> AUTHORIZATION ──PASS ok──> TRANSACTION ──QUIT──> UPDATE ──> close
//!                   │ QUIT, 3 wrong passwords,  │ drop, timeout (nothing removed)
//!                   │ drop, timeout             │
//!                   └──────────> close <────────┘
//! ```
//!
//! The three states run one after another as straight-line code: a loop for AUTHORIZATION, a
//! loop for TRANSACTION, then UPDATE. A state never comes back, so there is no state variable to
//! get wrong. Handlers in the state files decide what to answer; only this file reads and writes.

use std::io::{self, BufReader, Read, Write};

use log::{debug, trace};

use crate::authorization::{self, Authorization, LoginPolicy};
use crate::classroom::Classroom;
use crate::command::{self, Command};
use crate::maildrop::Store;
use crate::protocol::{self, Line, MAX_COMMAND_LINE, Reply};
use crate::transaction::{self, Transaction};
use crate::update::update;
use crate::users::Users;

/// The greeting (RFC 1939 §4). It holds no `<...>`: clients take one as an invitation to APOP,
/// so only a server built with APOP, and able to use it, adds one (`fn greeting`, apop.rs).
pub const GREETING: &str = "popstate ready; log in with USER and PASS (RFC 1939)";

/// What a session needs from the server it runs in.
pub struct Context<'a> {
    pub users: &'a Users,
    pub store: &'a dyn Store,
    /// What a wrong password costs (see authorization.rs).
    pub login: LoginPolicy,
    /// Print the dialogue for a classroom (`--trace`, see classroom.rs).
    pub classroom: bool,
}

/// How a session ended, for its log line.
#[derive(Debug)]
pub enum End {
    /// QUIT (in either state).
    Quit,
    /// Closed by the server after too many wrong passwords.
    LoginFailures,
    /// The client closed the connection without QUIT.
    Closed,
    /// No command for the idle time, or a client that stopped reading our reply (RFC 1939 §3
    /// autologout: no reply, no UPDATE).
    TimedOut,
    /// Any other I/O failure on the connection.
    Failed(io::Error),
}

impl End {
    /// For the log: how it ended, and whether the maildrop changed.
    pub fn describe(&self) -> String {
        match self {
            End::Quit => "QUIT".to_string(),
            End::LoginFailures => "too many wrong passwords".to_string(),
            End::Closed => "closed by the client without QUIT; nothing removed".to_string(),
            End::TimedOut => "timed out; nothing removed".to_string(),
            End::Failed(e) => format!("connection error: {e}; nothing removed"),
        }
    }
}

/// What a session did, for its log line.
#[derive(Debug)]
pub struct Summary {
    pub user: Option<String>,
    pub retrieved: u64,
    pub deleted: u64,
    pub octets_sent: u64,
    pub end: End,
}

// ANCHOR: run
/// Runs a whole session on a connection. Generic over `Read + Write` so that tests can drive it
/// with byte buffers as well as sockets.
pub fn run<R: Read, W: Write>(input: R, output: W, ctx: &Context, id: u64) -> Summary {
    let mut conn = Connection::new(input, output, id, ctx.classroom);
    let mut summary = Summary {
        user: None,
        retrieved: 0,
        deleted: 0,
        octets_sent: 0,
        end: End::Closed,
    };
    summary.end = match states(&mut conn, ctx, &mut summary) {
        Ok(end) => end,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            End::TimedOut
        }
        Err(e) => End::Failed(e),
    };
    // The last reply may still sit in the buffer (say, the client sent more after QUIT). After a
    // timeout or a failed write there is no point: the flush would only wait again.
    if !matches!(summary.end, End::Failed(_) | End::TimedOut)
        && let Err(e) = conn.output.flush()
    {
        summary.end = End::Failed(e);
    }
    summary.octets_sent = conn.sent();
    if let Some(view) = &conn.view {
        view.ended(&summary.end.describe());
    }
    summary
}
// ANCHOR_END: run

// ANCHOR: states
/// Greeting, AUTHORIZATION, TRANSACTION, UPDATE, in that order. Each `return` before UPDATE
/// leaves the maildrop as it was: dropping the `Transaction` drops its marks and its lock.
fn states<R: Read, W: Write>(
    conn: &mut Connection<R, W>,
    ctx: &Context,
    summary: &mut Summary,
) -> io::Result<End> {
    let mut authorization = Authorization::new(ctx.users, ctx.store, ctx.login);
    conn.send(Reply::Ok(authorization.greeting()))?;

    debug!("session {}: AUTHORIZATION", conn.id);
    let (user, maildrop) = loop {
        let Some(line) = conn.next_command()? else {
            return Ok(End::Closed);
        };
        let outcome = authorization.handle(&line);
        #[cfg(feature = "sasl")]
        let Some(outcome) = sasl_exchange(conn, &mut authorization, outcome)? else {
            return Ok(End::Closed);
        };
        match outcome {
            authorization::Outcome::Stay(reply) => conn.send(reply)?,
            authorization::Outcome::Quit(reply) => {
                let end = if reply.is_ok() {
                    End::Quit
                } else {
                    End::LoginFailures
                };
                conn.send(reply)?;
                return Ok(end);
            }
            authorization::Outcome::LoggedIn {
                reply,
                user,
                maildrop,
            } => {
                conn.send(reply)?;
                break (user, maildrop);
            }
        }
    };

    debug!("session {}: TRANSACTION as {user}", conn.id);
    conn.enter("TRANSACTION", &format!(" as {user}"));
    summary.user = Some(user.clone());
    let mut transaction = Transaction::new(user, maildrop);
    loop {
        let Some(line) = conn.next_command()? else {
            return Ok(End::Closed);
        };
        let outcome = transaction.handle(&line);
        summary.retrieved = transaction.retrieved;
        match outcome {
            transaction::Outcome::Stay(reply) => conn.send(reply)?,
            transaction::Outcome::Quit => break,
        }
    }

    debug!("session {}: UPDATE", conn.id);
    conn.enter("UPDATE", ": removing the messages marked as deleted");
    let (maildrop, deleted) = transaction.into_update();
    let done = update(maildrop, &deleted);
    summary.deleted = done.removed;
    conn.send(done.reply)?;
    Ok(End::Quit)
}
// ANCHOR_END: states

// ANCHOR: sasl_exchange
/// RFC 5034 §4: after `AUTH`, the server may answer with a challenge (`+ ...`) instead of a
/// status, and the client's next line is its response, not a command. This goes back and forth
/// until the exchange has an outcome like any other command's. `None`: the client has gone.
#[cfg(feature = "sasl")]
fn sasl_exchange<R: Read, W: Write>(
    conn: &mut Connection<R, W>,
    authorization: &mut Authorization,
    mut outcome: authorization::Outcome,
) -> io::Result<Option<authorization::Outcome>> {
    while let authorization::Outcome::Stay(challenge @ Reply::Challenge(_)) = outcome {
        conn.send(challenge)?;
        let Some(response) = conn.next_sasl_response()? else {
            return Ok(None);
        };
        outcome = crate::sasl::response(authorization, response);
    }
    Ok(Some(outcome))
}
// ANCHOR_END: sasl_exchange

/// The connection: buffered input and output, and the wire log.
struct Connection<R: Read, W: Write> {
    input: BufReader<R>,
    output: Output<W>,
    id: u64,
    /// The classroom view, when the server runs with `--trace`.
    view: Option<Classroom>,
}

/// Buffer sizes. Every session keeps its buffers for its whole life, so they are small: a
/// command line is at most 255 octets, and most replies are one short line. Large replies do
/// not pass through them: a message is converted in its own buffer (protocol.rs,
/// `fn write_reply`) that exists only while it is sent, and goes to the socket directly.
const INPUT_BUFFER: usize = 512;
/// Replies collect until this much is waiting; the buffer only grows as far as the replies
/// need (an idle session that answered short lines holds a few hundred octets, not this).
const OUTPUT_LIMIT: usize = 4 * 1024;

impl<R: Read, W: Write> Connection<R, W> {
    fn new(input: R, output: W, id: u64, classroom: bool) -> Self {
        Connection {
            input: BufReader::with_capacity(INPUT_BUFFER, input),
            output: Output {
                inner: output,
                waiting: Vec::new(),
                sent: 0,
            },
            id,
            view: classroom.then(|| Classroom::new(id)),
        }
    }

    fn enter(&mut self, state: &'static str, detail: &str) {
        if let Some(view) = &mut self.view {
            view.enter(state, detail);
        }
    }

    // ANCHOR: next_command
    /// The next command line, parsed: a command, or the reason why the line is not one (too
    /// long, not text, no keyword). The state answers the reason with `-ERR`, so a bad line
    /// counts as a failed command there (a USER waiting for its PASS is forgotten, for one).
    /// `None`: the client has gone.
    fn next_command(&mut self) -> io::Result<Option<Result<Command, String>>> {
        let bytes = match protocol::read_line(&mut self.input)? {
            None => return Ok(None),
            Some(Line::TooLong) => {
                return Ok(Some(Err(format!(
                    "command line too long: at most {MAX_COMMAND_LINE} octets including CRLF (RFC 2449 section 4)"
                ))));
            }
            Some(Line::Command(bytes)) => bytes,
        };
        let shown = masked(&bytes);
        trace!("session {} C: {shown}", self.id);
        if let Some(view) = &self.view {
            view.client(&shown);
        }
        Ok(Some(command::parse(&bytes)))
    }
    // ANCHOR_END: next_command

    /// The client's answer to a SASL challenge: a line of base64 or `*` (RFC 5034 §4), which may
    /// be longer than a command line. It holds credentials, so the logs show only its length.
    #[cfg(feature = "sasl")]
    fn next_sasl_response(&mut self) -> io::Result<Option<Result<String, String>>> {
        let limit = crate::limits::MAX_SASL_RESPONSE;
        let bytes = match protocol::read_limited(&mut self.input, limit)? {
            None => return Ok(None),
            Some(Line::TooLong) => {
                return Ok(Some(Err(format!(
                    "SASL response too long: at most {limit} octets including CRLF"
                ))));
            }
            Some(Line::Command(bytes)) => bytes,
        };
        let shown = format!("(SASL response, {} octets)", bytes.len());
        trace!("session {} C: {shown}", self.id);
        if let Some(view) = &self.view {
            view.client(&shown);
        }
        Ok(Some(String::from_utf8(bytes).map_err(|_| {
            "a SASL response is base64 text (this one holds non-ASCII octets)".to_string()
        })))
    }

    // ANCHOR: send
    /// Writes one reply. Replies collect in the output buffer while whole pipelined commands are
    /// already waiting (RFC 2449 §6.6), and go out in one write before the session could wait
    /// for input: a pipelining client gets large packets, an interactive one each reply at once,
    /// and a client that sent half of its next line still gets the reply to the previous one.
    fn send(&mut self, reply: Reply) -> io::Result<()> {
        trace!("session {} S: {}", self.id, reply.status_line());
        match &self.view {
            Some(view) => protocol::write_reply(&mut view.watch(&mut self.output), reply)?,
            None => protocol::write_reply(&mut self.output, reply)?,
        };
        if !self.input.buffer().contains(&b'\n') {
            self.output.flush()?;
        }
        Ok(())
    }
    // ANCHOR_END: send

    fn sent(&self) -> u64 {
        self.output.sent
    }
}

/// A command line for the log and the classroom view: the PASS and AUTH credentials hidden
/// (AUTH's initial response is a password in base64, RFC 4616), and anything
/// that is not printable ASCII written as an escape, so a client cannot send terminal control
/// sequences or a line end that fakes a log line.
fn masked(line: &[u8]) -> String {
    match line.get(..4) {
        Some(keyword) if keyword.eq_ignore_ascii_case(b"PASS") => {
            format!("{} ****", keyword.escape_ascii())
        }
        Some(keyword) if keyword.eq_ignore_ascii_case(b"AUTH") => {
            // Keep the mechanism, hide the initial response.
            let mut words = line.splitn(3, |&b| b == b' ');
            let command = words.next().unwrap_or_default().escape_ascii();
            match (words.next(), words.next()) {
                (Some(mechanism), Some(_)) => {
                    format!("{command} {} ****", mechanism.escape_ascii())
                }
                (Some(mechanism), None) => format!("{command} {}", mechanism.escape_ascii()),
                (None, _) => command.to_string(),
            }
        }
        _ => line.escape_ascii().to_string(),
    }
}

/// The reply side of the connection: a buffer that starts empty and grows only as far as the
/// replies need (up to [`OUTPUT_LIMIT`]), and a count of the octets that reached the client.
/// (`std::io::BufWriter` would reserve its whole capacity for every session up front.)
struct Output<W> {
    inner: W,
    waiting: Vec<u8>,
    sent: u64,
}

impl<W: Write> Output<W> {
    fn send_waiting(&mut self) -> io::Result<()> {
        if !self.waiting.is_empty() {
            self.inner.write_all(&self.waiting)?;
            self.sent += self.waiting.len() as u64;
            self.waiting.clear();
        }
        Ok(())
    }
}

impl<W: Write> Write for Output<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.waiting.len() + buf.len() > OUTPUT_LIMIT {
            self.send_waiting()?;
        }
        if buf.len() >= OUTPUT_LIMIT {
            // A large piece (a message being sent) goes straight through.
            self.inner.write_all(buf)?;
            self.sent += buf.len() as u64;
        } else {
            self.waiting.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_waiting()?;
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_is_masked_in_logs() {
        assert_eq!(masked(b"pass secret words"), "pass ****");
        assert_eq!(masked(b"USER alice"), "USER alice");
        assert_eq!(
            masked(b"NOOP\x1b[31m\rX \xc3\xa9"),
            "NOOP\\x1b[31m\\rX \\xc3\\xa9"
        );
        assert_eq!(masked(b"AUTH PLAIN AGFsaWNlAHc="), "AUTH PLAIN ****");
        assert_eq!(masked(b"auth plain"), "auth plain");
        assert_eq!(masked(b"AUTH"), "AUTH");
    }
}
