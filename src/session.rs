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
//!
//! The session reads and writes a [`Transport`]: the client's TCP socket (server.rs), or, with
//! the `tls` feature, the same socket inside TLS (tls.rs). The states cannot tell them apart.

use std::io::{self, BufReader, Read, Write};
use std::time::SystemTime;

use log::{debug, trace};

use std::sync::Arc;

use crate::authorization::{self, Authorization, LoginPolicy};
use crate::board::{Board, Seat};
use crate::classroom::{Classroom, Trace};
use crate::command::{self, Command};
use crate::expire::Expire;
use crate::login_delay::LoginDelay;
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
    /// What a wrong password costs, and whether logins need TLS (see authorization.rs).
    pub login: LoginPolicy,
    /// The least time between two logins by one user, shared by all sessions (login_delay.rs).
    pub login_delay: &'a LoginDelay,
    /// How long retrieved messages stay (`--expire`, expire.rs).
    pub expire: Expire,
    /// Print the dialogue for a classroom (`--trace`, see classroom.rs).
    pub classroom: &'a Trace,
    /// The teacher's board, with `--board` (see board.rs).
    pub board: Option<&'a Arc<Board>>,
    /// The server's certificate for STLS (RFC 2595), if it has one (`--tls-cert`, tls.rs).
    #[cfg(feature = "tls")]
    pub stls: Option<&'a crate::tls::Certificate>,
}

impl Context<'_> {
    /// The server has a certificate, so STLS can be offered (RFC 2595 §4).
    #[cfg(feature = "tls")]
    fn has_certificate(&self) -> bool {
        self.stls.is_some()
    }

    /// Built without TLS there is no certificate.
    #[cfg(not(feature = "tls"))]
    fn has_certificate(&self) -> bool {
        false
    }
}

// ANCHOR: transport
/// What the session needs from its connection: octets in, octets out, and the autologout timer
/// (RFC 1939 §3). server.rs gives it the TCP socket; tls.rs wraps that in TLS.
pub trait Transport: Read + Write {
    /// The session is about to wait for a new command: the idle time starts again. Only the
    /// session knows where a command line ends (under TLS the socket sees only ciphertext).
    fn new_wait(&mut self);

    /// Whether TLS protects this connection.
    fn is_tls(&self) -> bool {
        false
    }
}
// ANCHOR_END: transport

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
/// Runs a whole session on a connection: a TCP socket, a socket inside TLS, or in a test, any
/// [`Transport`] at all.
pub fn run<'a>(transport: impl Transport + 'a, ctx: &Context, id: u64) -> Summary {
    let mut conn = Connection::new(Box::new(transport), id, ctx);
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
        && let Err(e) = conn.flush()
    {
        summary.end = End::Failed(e);
    }
    summary.octets_sent = conn.sent();
    if let Some(view) = &conn.view {
        view.ended(&summary.end.describe());
    }
    if let Some(seat) = &conn.seat {
        seat.ended(&summary.end.describe());
    }
    summary
}
// ANCHOR_END: run

// ANCHOR: states
/// Greeting, AUTHORIZATION, TRANSACTION, UPDATE, in that order. Each `return` before UPDATE
/// leaves the maildrop as it was: dropping the `Transaction` drops its marks and its lock.
fn states(conn: &mut Connection, ctx: &Context, summary: &mut Summary) -> io::Result<End> {
    let mut authorization = Authorization::new(ctx.users, ctx.store, ctx.login_delay, ctx.login);
    authorization.announce_expire(ctx.expire);
    // On an implicit-TLS port (RFC 8314 §3.2) the handshake came first: logins are safe now.
    if conn.is_tls() {
        authorization.tls_started();
    }
    if ctx.has_certificate() {
        authorization.offer_stls();
    }
    conn.send(Reply::Ok(authorization.greeting()))?;

    debug!("session {}: AUTHORIZATION", conn.id);
    let (user, maildrop) = loop {
        let Some(line) = conn.next_command()? else {
            return Ok(End::Closed);
        };
        // AUTH may go on with challenges before it has an outcome (sasl.rs, RFC 5034 §4).
        let outcome = authorization.handle(&line);
        let Some(outcome) = sasl_exchange(conn, &mut authorization, outcome)? else {
            return Ok(End::Closed);
        };
        match outcome {
            authorization::Outcome::Stay(reply) => conn.send(reply)?,
            // ANCHOR: stls_arm
            // RFC 2595 §4: the handshake starts right after `+OK` CRLF; the state stays
            // AUTHORIZATION, and a handshake that fails ends the session.
            #[cfg(feature = "tls")]
            authorization::Outcome::StartTls(reply) => {
                conn.send(reply)?;
                if let Some(certificate) = ctx.stls {
                    conn.start_tls(certificate)?;
                    authorization.tls_started();
                }
            }
            // ANCHOR_END: stls_arm
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
                if let Some(seat) = &conn.seat {
                    seat.logged_in(&user);
                }
                break (user, maildrop);
            }
        }
    };

    debug!("session {}: TRANSACTION as {user}", conn.id);
    conn.enter("TRANSACTION", &format!(" as {user}"));
    summary.user = Some(user.clone());
    let mut transaction = Transaction::new(user, maildrop, authorization.offer());
    loop {
        let Some(line) = conn.next_command()? else {
            return Ok(End::Closed);
        };
        let outcome = transaction.handle(&line);
        summary.retrieved = transaction.retrieved;
        if let Some(seat) = &conn.seat {
            seat.marked(transaction.marked());
        }
        match outcome {
            transaction::Outcome::Stay(reply) => conn.send(reply)?,
            transaction::Outcome::Quit => break,
        }
    }

    debug!("session {}: UPDATE", conn.id);
    conn.enter("UPDATE", ": removing the messages marked as deleted");
    let (maildrop, deleted, retrieved) = transaction.into_update();
    let expired = ctx
        .expire
        .expired(maildrop.messages(), &retrieved, SystemTime::now());
    let done = update(maildrop, &deleted, &expired);
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
fn sasl_exchange(
    conn: &mut Connection,
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

/// Without the `sasl` feature no command answers with a challenge: the outcome is final.
#[cfg(not(feature = "sasl"))]
fn sasl_exchange(
    _conn: &mut Connection,
    _authorization: &mut Authorization,
    outcome: authorization::Outcome,
) -> io::Result<Option<authorization::Outcome>> {
    Ok(Some(outcome))
}

/// The connection: the transport with its input buffer, the replies waiting to go out, and the
/// wire log.
struct Connection<'a> {
    /// Replies are written to the transport too, through `input.get_mut()`: under TLS one object
    /// does both, so it cannot be split into a reader and a writer.
    input: BufReader<Box<dyn Transport + 'a>>,
    output: Output,
    id: u64,
    /// The classroom view, when the server runs with `--trace`.
    view: Option<Classroom>,
    /// This session's row on the teacher's board, with `--board`.
    seat: Option<Seat>,
}

/// Buffer sizes. Every session keeps its buffers for its whole life, so they are small: a
/// command line is at most 255 octets, and most replies are one short line. Large replies do
/// not pass through them: a message is converted in its own buffer (protocol.rs,
/// `fn write_reply`) that exists only while it is sent, and goes to the socket directly.
/// The input buffer holds one longest command line (RFC 2449 §4); a longer SASL response is
/// read through it in pieces, and pipelined commands beyond it wait in the socket.
const INPUT_BUFFER: usize = MAX_COMMAND_LINE + 1;
/// Replies collect until this much is waiting; the buffer only grows as far as the replies
/// need (an idle session that answered short lines holds a few hundred octets, not this).
const OUTPUT_LIMIT: usize = 4 * 1024;

impl<'a> Connection<'a> {
    fn new(transport: Box<dyn Transport + 'a>, id: u64, ctx: &Context) -> Self {
        Connection {
            input: BufReader::with_capacity(INPUT_BUFFER, transport),
            output: Output {
                waiting: Vec::new(),
                sent: 0,
            },
            id,
            view: Classroom::new(id, ctx.classroom, ctx.board),
            seat: ctx.board.map(|board| board.seat(id)),
        }
    }

    fn is_tls(&self) -> bool {
        self.input.get_ref().is_tls()
    }

    fn enter(&mut self, state: &'static str, detail: &str) {
        if let Some(view) = &mut self.view {
            view.enter(state, detail);
        }
        if let Some(seat) = &self.seat {
            seat.enter(state);
        }
    }

    // ANCHOR: next_command
    /// The next command line, parsed: a command, or the reason why the line is not one (too
    /// long, not text, no keyword). The state answers the reason with `-ERR`, so a bad line
    /// counts as a failed command there (a USER waiting for its PASS is forgotten, for one).
    /// `None`: the client has gone.
    fn next_command(&mut self) -> io::Result<Option<Result<Command, String>>> {
        self.input.get_mut().new_wait();
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
        if let Some(view) = &mut self.view {
            view.client(&shown);
        }
        if let Some(seat) = &self.seat {
            seat.command(&shown);
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
        if let Some(view) = &mut self.view {
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
        let mut out = Sending {
            output: &mut self.output,
            to: self.input.get_mut(),
        };
        match &self.view {
            Some(view) => protocol::write_reply(&mut view.watch(&mut out), reply)?,
            None => protocol::write_reply(&mut out, reply)?,
        };
        if !self.input.buffer().contains(&b'\n') {
            self.flush()?;
        }
        Ok(())
    }
    // ANCHOR_END: send

    /// Sends every reply still waiting.
    fn flush(&mut self) -> io::Result<()> {
        Sending {
            output: &mut self.output,
            to: self.input.get_mut(),
        }
        .flush()
    }

    fn sent(&self) -> u64 {
        self.output.sent
    }
}

/// STLS, with the `tls` feature (RFC 2595 §4).
#[cfg(feature = "tls")]
impl Connection<'_> {
    // ANCHOR: start_tls
    /// Sends the `+OK` to STLS, forgets whatever the client sent after STLS, and goes on inside
    /// TLS once the handshake is done; an error here ends the session.
    fn start_tls(&mut self, certificate: &crate::tls::Certificate) -> io::Result<()> {
        self.flush()?;
        // RFC 2595 says TLS begins right after the CRLF of `+OK`. Octets already here came in
        // clear text, where anyone on the path could have added them: they are dropped unread,
        // never run as commands inside TLS (the STARTTLS injection of CVE-2011-0411).
        let injected = self.input.buffer().len();
        if injected > 0 {
            log::warn!(
                "session {}: discarded {injected} octets sent after STLS before the TLS handshake",
                self.id
            );
        }
        std::io::BufRead::consume(&mut self.input, injected);
        crate::tls::start(self.input.get_mut(), certificate)?;
        self.enter("AUTHORIZATION", " inside TLS");
        Ok(())
    }
    // ANCHOR_END: start_tls
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
struct Output {
    waiting: Vec<u8>,
    sent: u64,
}

/// The output buffer and the transport it empties into, borrowed together while a reply is
/// written.
struct Sending<'s, 'a> {
    output: &'s mut Output,
    to: &'s mut Box<dyn Transport + 'a>,
}

impl Sending<'_, '_> {
    fn send_waiting(&mut self) -> io::Result<()> {
        if !self.output.waiting.is_empty() {
            self.to.write_all(&self.output.waiting)?;
            self.output.sent += self.output.waiting.len() as u64;
            self.output.waiting.clear();
        }
        Ok(())
    }
}

impl Write for Sending<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.output.waiting.len() + buf.len() > OUTPUT_LIMIT {
            self.send_waiting()?;
        }
        if buf.len() >= OUTPUT_LIMIT {
            // A large piece (a message being sent) goes straight through.
            self.to.write_all(buf)?;
            self.output.sent += buf.len() as u64;
        } else {
            self.output.waiting.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_waiting()?;
        self.to.flush()
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
