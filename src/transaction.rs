//! The TRANSACTION state (RFC 1939 §5, §7): the client reads and marks its mail.
//!
//! Commands: `STAT`, `LIST [msg]`, `RETR msg`, `DELE msg`, `NOOP`, `RSET`, `TOP msg n`,
//! `UIDL [msg]`, `QUIT`, `CAPA` (RFC 2449).
//!
//! Message numbers are fixed when the maildrop is opened and stay fixed for the session: DELE
//! only *marks* a message, so message 3 is message 3 until the end. Nothing is removed here.
//! The state ends with QUIT, which moves on to UPDATE, or with a dropped connection or the idle
//! timer, which end the session without UPDATE: every mark is forgotten.

use std::fmt::{Display, Write};

use crate::capa::{Offer, capa, not_offered};
use crate::command::{Command, parse_number};
use crate::maildrop::Maildrop;
use crate::protocol::{self, Reply};

/// Commands that belong to AUTHORIZATION, to tell a client that sends one here where it is.
const AUTHORIZATION_COMMANDS: &[&str] = &["USER", "PASS", "AUTH", "APOP"];

/// What one TRANSACTION command leads to.
pub enum Outcome {
    /// Reply and stay in TRANSACTION.
    Stay(Reply),
    /// QUIT: go on to UPDATE, which gives the reply.
    Quit,
}

/// The TRANSACTION state of one session.
pub struct Transaction {
    user: String,
    maildrop: Box<dyn Maildrop>,
    /// `deleted[i]` is true when message `i + 1` is marked as deleted.
    deleted: Vec<bool>,
    /// Messages sent whole by RETR, for the session's log line.
    pub retrieved: u64,
    /// `fetched[i]` is true once RETR has sent message `i + 1`: UPDATE may expire it
    /// (RFC 2449 §6.7, expire.rs).
    fetched: Vec<bool>,
    /// What CAPA lists here: what was announced before login (RFC 2449 §5).
    offer: Offer,
}

impl Transaction {
    pub fn new(user: String, maildrop: Box<dyn Maildrop>, offer: Offer) -> Self {
        let deleted = vec![false; maildrop.messages().len()];
        Transaction {
            user,
            maildrop,
            fetched: deleted.clone(),
            deleted,
            retrieved: 0,
            offer: offer.after_login(),
        }
    }

    // ANCHOR: dispatch
    /// Answers one command.
    pub fn handle(&mut self, line: &Result<Command, String>) -> Outcome {
        let cmd = match line {
            Ok(cmd) => cmd,
            Err(why) => return Outcome::Stay(Reply::Err(why.clone())),
        };
        let reply = match cmd.keyword.as_str() {
            "STAT" => self.stat(cmd),
            "LIST" => self.list(cmd),
            "RETR" => self.retr(cmd),
            "DELE" => self.dele(cmd),
            "NOOP" => noop(cmd),
            "RSET" => self.rset(cmd),
            "TOP" => self.top(cmd),
            "UIDL" => self.uidl(cmd),
            "CAPA" => Ok(capa(cmd, &self.offer)),
            "QUIT" => match quit(cmd) {
                Ok(()) => return Outcome::Quit,
                Err(e) => Err(e),
            },
            other => Err(self.not_here(other)),
        };
        Outcome::Stay(reply.unwrap_or_else(Reply::Err))
    }
    // ANCHOR_END: dispatch

    /// Messages marked as deleted so far (for the teacher's board).
    pub fn marked(&self) -> usize {
        self.deleted.iter().filter(|&&d| d).count()
    }

    /// The user's maildrop, the marks, and which messages RETR sent, for UPDATE.
    pub fn into_update(self) -> (Box<dyn Maildrop>, Vec<bool>, Vec<bool>) {
        (self.maildrop, self.deleted, self.fetched)
    }

    // ANCHOR: stat
    /// ```text
    /// STAT
    ///   +OK nn mm    (messages not marked as deleted, and their size in octets)
    /// ```
    /// RFC 1939 §5. Nothing follows `mm`: some clients parse the line strictly.
    fn stat(&self, cmd: &Command) -> Result<Reply, String> {
        cmd.expect_args(0, 0, "STAT")?;
        let (count, octets) = self
            .live()
            .fold((0u64, 0u64), |(n, o), (_, size)| (n + 1, o + size));
        Ok(Reply::Ok(format!("{count} {octets}")))
    }
    // ANCHOR_END: stat

    // ANCHOR: list
    /// ```text
    /// LIST          +OK n messages (m octets), then one "msg size" per line, then "."
    /// LIST msg      +OK msg size
    ///               -ERR  no such message, or marked as deleted
    /// ```
    /// RFC 1939 §5: each line is a *scan listing*; messages marked as deleted are left out.
    fn list(&self, cmd: &Command) -> Result<Reply, String> {
        cmd.expect_args(0, 1, "LIST [msg]")?;
        if let Some(arg) = cmd.args.first() {
            let index = self.message(arg)?;
            let size = self.maildrop.messages()[index].size;
            return Ok(Reply::Ok(format!("{} {size}", index + 1)));
        }
        let mut lines = Vec::with_capacity(self.deleted.len());
        let mut octets = 0;
        for (index, size) in self.live() {
            lines.push(listing_line(index, size, 20));
            octets += size;
        }
        Ok(Reply::Lines(
            format!("{} ({octets} octets)", protocol::messages(lines.len())),
            lines,
        ))
    }
    // ANCHOR_END: list

    // ANCHOR: retr
    /// ```text
    /// RETR msg
    ///   +OK size octets, then the message, byte-stuffed, then "."
    ///   -ERR  no such message, or marked as deleted
    ///   -ERR [SYS/TEMP]  the message changed or vanished on disk since login
    /// ```
    /// RFC 1939 §5. The handler only opens the message; the session loop streams it.
    fn retr(&mut self, cmd: &Command) -> Result<Reply, String> {
        cmd.expect_args(1, 1, "RETR msg")?;
        let index = self.message(&cmd.args[0])?;
        let body = self.open(index)?;
        self.retrieved += 1;
        self.fetched[index] = true;
        Ok(Reply::Message {
            status: format!("{} octets", self.maildrop.messages()[index].size),
            body,
            top: None,
        })
    }
    // ANCHOR_END: retr

    // ANCHOR: top
    /// ```text
    /// TOP msg n
    ///   +OK, then the header, the blank line and the first n lines of the body, then "."
    ///   -ERR  no such message, or marked as deleted
    ///   -ERR [SYS/TEMP]  the message changed or vanished on disk since it was listed
    /// ```
    /// RFC 1939 §7. `TOP msg 0` is the header alone; an `n` past the end gives the whole message.
    fn top(&self, cmd: &Command) -> Result<Reply, String> {
        cmd.expect_args(2, 2, "TOP msg n")?;
        let index = self.message(&cmd.args[0])?;
        let lines = parse_number(&cmd.args[1], "line count")?;
        let body = self.open(index)?;
        Ok(Reply::Message {
            status: format!(
                "header and {lines} body {} of message {} follow",
                if lines == 1 { "line" } else { "lines" },
                index + 1
            ),
            body,
            top: Some(lines),
        })
    }
    // ANCHOR_END: top

    // ANCHOR: dele
    /// ```text
    /// DELE msg
    ///   +OK message msg marked as deleted
    ///   -ERR  no such message, or already marked
    /// ```
    /// RFC 1939 §5: the message is only marked; UPDATE removes it after QUIT.
    fn dele(&mut self, cmd: &Command) -> Result<Reply, String> {
        cmd.expect_args(1, 1, "DELE msg")?;
        let index = self.message(&cmd.args[0])?;
        self.deleted[index] = true;
        Ok(Reply::Ok(format!(
            "message {} marked as deleted; it is removed when you QUIT (RSET undoes this)",
            index + 1
        )))
    }
    // ANCHOR_END: dele

    // ANCHOR: rset
    /// ```text
    /// RSET
    ///   +OK   every mark is removed
    /// ```
    /// RFC 1939 §5.
    fn rset(&mut self, cmd: &Command) -> Result<Reply, String> {
        cmd.expect_args(0, 0, "RSET")?;
        self.deleted.fill(false);
        let octets: u64 = self.maildrop.messages().iter().map(|m| m.size).sum();
        Ok(Reply::Ok(format!(
            "maildrop has {} ({octets} octets)",
            protocol::messages(self.deleted.len())
        )))
    }
    // ANCHOR_END: rset

    // ANCHOR: uidl
    /// ```text
    /// UIDL          +OK, then one "msg unique-id" per line, then "."
    /// UIDL msg      +OK msg unique-id
    ///               -ERR  no such message, or marked as deleted
    /// ```
    /// RFC 1939 §7: a *unique-id listing*; the id stays the same in every session.
    fn uidl(&self, cmd: &Command) -> Result<Reply, String> {
        cmd.expect_args(0, 1, "UIDL [msg]")?;
        let messages = self.maildrop.messages();
        if let Some(arg) = cmd.args.first() {
            let index = self.message(arg)?;
            return Ok(Reply::Ok(format!("{} {}", index + 1, messages[index].uid)));
        }
        let mut lines = Vec::with_capacity(messages.len());
        for (index, _) in self.live() {
            let uid = &messages[index].uid;
            lines.push(listing_line(index, uid, uid.len()));
        }
        Ok(Reply::Lines("unique-id listing follows".into(), lines))
    }
    // ANCHOR_END: uidl

    // ANCHOR: message
    /// Turns a message-number argument into an index, or explains why it names no message.
    /// RFC 1939 §5: numbers run from 1 to the count at login, and a message marked as deleted
    /// may not be referred to again (until RSET).
    fn message(&self, arg: &str) -> Result<usize, String> {
        let count = self.deleted.len();
        let number = parse_number(arg, "message number")?;
        if number == 0 {
            return Err("no such message: message numbers start at 1".into());
        }
        let index = usize::try_from(number - 1).unwrap_or(usize::MAX);
        if index >= count {
            return Err(match count {
                0 => format!("no such message: {number}; the maildrop is empty"),
                1 => format!("no such message: {number}; there is 1 message"),
                _ => {
                    format!("no such message: {number}; there are {count} messages (1 to {count})")
                }
            });
        }
        if self.deleted[index] {
            return Err(format!(
                "no such message: {number} was deleted in this session (RSET undoes that)"
            ));
        }
        Ok(index)
    }
    // ANCHOR_END: message

    /// Opens a message, turning a storage failure into a `[SYS/TEMP]` reply text.
    fn open(&self, index: usize) -> Result<Box<dyn std::io::BufRead + Send>, String> {
        self.maildrop
            .open(index)
            .map_err(|why| format!("[SYS/TEMP] message {} cannot be sent: {why}", index + 1))
    }

    /// `(index, size)` of every message not marked as deleted, in order.
    fn live(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.maildrop
            .messages()
            .iter()
            .enumerate()
            .filter(|(index, _)| !self.deleted[*index])
            .map(|(index, m)| (index, m.size))
    }

    /// The reply to a keyword that TRANSACTION does not accept.
    fn not_here(&self, keyword: &str) -> String {
        if let Some(why) = not_offered(keyword) {
            why
        } else if AUTHORIZATION_COMMANDS.contains(&keyword) {
            format!(
                "{keyword} is an AUTHORIZATION command; you are logged in as {} already (QUIT and connect again to change user)",
                self.user
            )
        } else {
            format!(
                "unknown command {keyword}; the commands here are STAT, LIST, RETR, DELE, NOOP, RSET, TOP, UIDL, CAPA and QUIT"
            )
        }
    }
}

/// One line of a scan or unique-id listing, `msg value` (RFC 1939 §5, §7), for the message at
/// `index`; `value_len` is about how long `value` is written out. Built in one allocation:
/// `format!` starts from an empty `String` and grows it two or three times, for each line of
/// every LIST and UIDL.
fn listing_line(index: usize, value: impl Display, value_len: usize) -> String {
    let mut line = String::with_capacity(21 + value_len);
    // Writing into a `String` cannot fail.
    let _ = write!(line, "{} {value}", index + 1);
    line
}

/// ```text
/// QUIT
///   +OK popstate signing off: removed n messages, m left     (from UPDATE)
///   -ERR [SYS/TEMP] removed k of n marked messages; ...      (from UPDATE)
/// ```
/// RFC 1939 §6: QUIT here ends TRANSACTION and enters UPDATE (update.rs), which removes the
/// marked messages and gives the reply.
fn quit(cmd: &Command) -> Result<(), String> {
    cmd.expect_args(0, 0, "QUIT")
}

/// ```text
/// NOOP
///   +OK
/// ```
/// RFC 1939 §5: does nothing but answer (and so resets the idle timer).
fn noop(cmd: &Command) -> Result<Reply, String> {
    cmd.expect_args(0, 0, "NOOP")?;
    Ok(Reply::Ok(String::new()))
}
