//! The classroom view (`popstate --trace`): every session's dialogue printed on the server's
//! terminal, large enough to follow on a projector.
//!
//! ```text
//! [1 AUTHORIZATION] C: USER alice
//! [1 AUTHORIZATION] S: +OK now send PASS with the password for alice
//! [1 AUTHORIZATION] C: PASS ****
//! [1 AUTHORIZATION] S: +OK alice's maildrop has 6 messages (29816 octets)
//! [1] ==> TRANSACTION as alice
//! [1 TRANSACTION] C: RETR 4
//! [1 TRANSACTION] S: +OK 27765 octets
//! [1 TRANSACTION] S: From: popstate <teacher@example.org>
//! [1 TRANSACTION] S: To: alice@example.org
//! [1 TRANSACTION] S: Subject: A long message
//! [1 TRANSACTION] S: Date: Tue, 25 Nov 2025 09:00:04 +0000
//! [1 TRANSACTION] S: Message-ID: <demo4@popstate.example>
//! [1 TRANSACTION] S:
//! [1 TRANSACTION] S: ... 400 more lines (not shown) ...
//! [1 TRANSACTION] S: .
//! ```
//!
//! Unlike the `trace` log level, it shows multi-line bodies (summarised) and the current state.
//! It writes to standard output a whole line at a time, so sessions never tear each other's
//! lines apart, and ignores a closed standard output rather than stopping the session.
//!
//! Thirty dialogues at once are too many to follow: `--trace-user student07` shows only the
//! sessions that name that user, from their `USER` line on.

use std::io::{self, Write};
use std::sync::Arc;

use crate::board::{Board, user_named};

/// Body lines shown before the rest of a multi-line reply is summarised.
const SHOWN_LINES: usize = 6;
/// Longer lines are cut here, so one huge header line cannot flood the screen.
const SHOWN_WIDTH: usize = 100;

/// Which sessions the classroom view shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Trace {
    #[default]
    Off,
    /// Every session (`--trace`).
    All,
    /// Only sessions that send `USER name` for this name (`--trace-user name`).
    User(String),
}

/// The classroom view of one session.
pub struct Classroom {
    id: u64,
    state: &'static str,
    /// For `--trace-user`: the name to wait for; `None` once the session is shown.
    waiting_for: Option<String>,
    /// With `--board` on a terminal, the board's pane shows the lines instead.
    pane: Option<Arc<Board>>,
}

impl Classroom {
    /// The view for session `id`, or `None` when `trace` is off. `board` is the board that
    /// owns the terminal, if one does.
    pub fn new(id: u64, trace: &Trace, board: Option<&Arc<Board>>) -> Option<Self> {
        let waiting_for = match trace {
            Trace::Off => return None,
            Trace::All => None,
            Trace::User(name) => Some(name.clone()),
        };
        let view = Classroom {
            id,
            state: "AUTHORIZATION",
            waiting_for,
            pane: board.filter(|b| b.is_terminal()).cloned(),
        };
        if view.shown() {
            view.say(format!(
                "[{id}] ==> connected: greeting, then AUTHORIZATION"
            ));
        }
        Some(view)
    }

    /// One whole line at a time, so sessions never tear each other's lines apart; a closed
    /// standard output is ignored (`println!` would panic the session).
    fn say(&self, line: String) {
        match &self.pane {
            Some(board) => board.trace_line(line),
            None => {
                let _ = writeln!(io::stdout().lock(), "{line}");
            }
        }
    }

    fn shown(&self) -> bool {
        self.waiting_for.is_none()
    }

    /// A state change, on a line of its own so it stands out.
    pub fn enter(&mut self, state: &'static str, detail: &str) {
        self.state = state;
        if self.shown() {
            self.say(format!("[{}] ==> {state}{detail}", self.id));
        }
    }

    pub fn client(&mut self, line: &str) {
        if let Some(name) = &self.waiting_for {
            if user_named(line) != Some(name.as_str()) {
                return;
            }
            self.say(format!(
                "[{}] ==> {name} is here: showing this session",
                self.id
            ));
            self.waiting_for = None;
        }
        self.say(format!("[{} {}] C: {line}", self.id, self.state));
    }

    pub fn ended(&self, how: &str) {
        if self.shown() {
            self.say(format!("[{}] ==> session over: {how}", self.id));
        }
    }

    /// Wraps the writer a reply goes to, to see it on its way out.
    pub fn watch<'a, W: Write>(&'a self, out: &'a mut W) -> Watched<'a, W> {
        Watched {
            out,
            view: self,
            line: Vec::new(),
            lines: 0,
        }
    }

    fn note(&self, text: &str) {
        if self.shown() {
            self.say(format!("[{} {}] S: {text}", self.id, self.state));
        }
    }

    fn server(&self, line: &[u8]) {
        if !self.shown() {
            return;
        }
        let text = String::from_utf8_lossy(&line[..line.len().min(SHOWN_WIDTH)]);
        let cut = if line.len() > SHOWN_WIDTH { "..." } else { "" };
        self.say(format!("[{} {}] S: {text}{cut}", self.id, self.state));
    }
}

/// A writer that passes everything through and prints a summary of the lines it saw.
pub struct Watched<'a, W: Write> {
    out: &'a mut W,
    view: &'a Classroom,
    /// The current line, up to [`SHOWN_WIDTH`] octets.
    line: Vec<u8>,
    /// Lines seen so far in this reply.
    lines: usize,
}

impl<W: Write> Watched<'_, W> {
    fn see(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                let line = self.line.strip_suffix(b"\r").unwrap_or(&self.line);
                // The status line and the first body lines are shown, then a count of the rest,
                // then the terminator (a lone "." is never a body line: those are stuffed).
                if line == b"." {
                    let hidden = self.lines.saturating_sub(SHOWN_LINES + 1);
                    if hidden > 0 {
                        self.view
                            .note(&format!("... {hidden} more lines (not shown) ..."));
                    }
                    self.view.server(line);
                } else if self.lines <= SHOWN_LINES {
                    self.view.server(line);
                }
                self.lines += 1;
                self.line.clear();
            } else if self.line.len() <= SHOWN_WIDTH {
                self.line.push(b);
            }
        }
    }
}

impl<W: Write> Write for Watched<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.see(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
