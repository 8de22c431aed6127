//! The teacher's board (`popstate --board`): every live session on one screen, for a projector.
//!
//! ```text
//! popstate board   telnet 192.0.2.2 1110   30 sessions   10:42:07
//! AUTHORIZATION 3 --PASS--> TRANSACTION 26 --QUIT--> UPDATE 1   closed 4
//! user       state  last          del idle user       state  last          del idle
//! student01  TRANS  RETR 2          1   4s student16  AUTH   USER student16  0   1s
//! ...
//! ```
//!
//! Each session thread owns a [`Seat`] and writes what it does into it: who it is, its state
//! (RFC 1939 §3), its last command, how many messages it has marked. A drawing thread reads the
//! seats twice a second and redraws the screen in place with plain ANSI escapes. Nothing here
//! decides anything: a session behaves the same with or without the board.
//!
//! When standard output is not a terminal (a pipe, a log file), there is nothing to redraw:
//! each change becomes one line instead. `--trace-user NAME` shows that student's dialogue in a
//! pane under the rows.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, IsTerminal, Write};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// How often the screen is redrawn (the idle times tick in seconds).
const REDRAW: Duration = Duration::from_millis(500);
/// How long a closed session stays on the board, so a QUIT is seen to lead somewhere.
const LINGER: Duration = Duration::from_secs(5);
/// Narrower than this, a row cannot show a name, a state and a command.
const MIN_CELL: usize = 38;
/// The size assumed when the terminal's cannot be read.
const DEFAULT_SIZE: (usize, usize) = (80, 24);
/// Lines of the chosen student's dialogue kept for the pane.
const PANE_LINES: usize = 50;

/// What the board knows about one session.
#[derive(Debug, Clone)]
struct Row {
    /// The name from `USER`, before and after login.
    user: Option<String>,
    state: &'static str,
    last: String,
    marked: usize,
    since: Instant,
    /// When the session ended, and how.
    ended: Option<(Instant, String)>,
}

/// Every seat, by session id.
pub struct Board {
    rows: Mutex<BTreeMap<u64, Row>>,
    /// `--trace-user`'s dialogue, newest last.
    pane: Mutex<VecDeque<String>>,
    /// What the header says: where to connect.
    connect: String,
    /// The last line, for the teacher: where the passwords are (empty: no line).
    note: String,
    /// Redraw a terminal, or write a line per change.
    terminal: bool,
}

impl Board {
    /// A board that tells students `connect` (say `telnet 192.0.2.2 1110`), with `note` on its
    /// last line (the start banner is drawn over, so what a teacher needs from it goes here).
    /// It redraws standard output when that is a terminal; call [`Board::start`] to begin.
    pub fn new(connect: String, note: String) -> Arc<Board> {
        Arc::new(Board {
            rows: Mutex::default(),
            pane: Mutex::default(),
            connect,
            note,
            terminal: io::stdout().is_terminal(),
        })
    }

    /// Starts the drawing thread (on a terminal; otherwise seats print their own lines).
    pub fn start(self: &Arc<Board>) -> io::Result<()> {
        if !self.terminal {
            return Ok(());
        }
        let board = Arc::clone(self);
        thread::Builder::new()
            .name("board".into())
            .spawn(move || {
                // The banner above is cleared once; after that the board only draws over
                // itself.
                let _ = io::stdout().lock().write_all(b"\x1b[2J");
                loop {
                    board.draw();
                    thread::sleep(REDRAW);
                }
            })
            .map(|_| ())
    }

    /// True when the board owns the terminal (nothing else should print there).
    pub fn is_terminal(&self) -> bool {
        self.terminal
    }

    /// A seat for session `id`, taken when it starts.
    pub fn seat(self: &Arc<Board>, id: u64) -> Seat {
        let row = Row {
            user: None,
            state: "AUTHORIZATION",
            last: String::new(),
            marked: 0,
            since: Instant::now(),
            ended: None,
        };
        self.rows().insert(id, row);
        let seat = Seat {
            board: Arc::clone(self),
            id,
        };
        seat.changed();
        seat
    }

    /// A line of `--trace-user`'s dialogue, for the pane.
    pub fn trace_line(&self, line: String) {
        let mut pane = self.pane.lock().unwrap_or_else(PoisonError::into_inner);
        if pane.len() == PANE_LINES {
            pane.pop_front();
        }
        pane.push_back(line);
    }

    // Nothing panics while holding these locks; a poisoned one still holds whole rows.
    fn rows(&self) -> MutexGuard<'_, BTreeMap<u64, Row>> {
        self.rows.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn draw(&self) {
        let now = Instant::now();
        let rows: Vec<(u64, Row)> = {
            let mut rows = self.rows();
            rows.retain(|_, row| row.ended.as_ref().is_none_or(|(at, _)| now - *at < LINGER));
            rows.iter().map(|(id, row)| (*id, row.clone())).collect()
        };
        let pane: Vec<String> = {
            let pane = self.pane.lock().unwrap_or_else(PoisonError::into_inner);
            pane.iter().cloned().collect()
        };
        let (width, height) = terminal_size().unwrap_or(DEFAULT_SIZE);
        let lines = render(
            &self.connect,
            &self.note,
            &rows,
            &pane,
            (width, height),
            now,
        );
        // Home, each line then "erase to end of line", and "erase below" at the end: the
        // screen changes in place, without the flicker of clearing it first. The last line
        // gets no line end, so a full screen never scrolls.
        let mut screen = String::from("\x1b[H");
        screen.push_str(&lines.join("\x1b[K\r\n"));
        screen.push_str("\x1b[K\x1b[J");
        let mut out = io::stdout().lock();
        let _ = out.write_all(screen.as_bytes());
        let _ = out.flush();
    }
}

impl std::fmt::Debug for Board {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Board")
            .field("connect", &self.connect)
            .field("terminal", &self.terminal)
            .finish_non_exhaustive()
    }
}

/// One session's place on the board; dropping it marks the session closed.
pub struct Seat {
    board: Arc<Board>,
    id: u64,
}

impl Seat {
    /// A command line the session read (already masked: see session.rs).
    pub fn command(&self, line: &str) {
        self.update(|row| {
            if let Some(name) = user_named(line) {
                row.user = Some(name.to_string());
            }
            row.last = line.to_string();
            row.since = Instant::now();
        });
    }

    /// The session entered `state`.
    pub fn enter(&self, state: &'static str) {
        self.update(|row| row.state = state);
    }

    /// Logged in as `user` (the name USER gave, now checked).
    pub fn logged_in(&self, user: &str) {
        self.update(|row| row.user = Some(user.to_string()));
    }

    /// Messages marked as deleted now.
    pub fn marked(&self, marked: usize) {
        let mut rows = self.board.rows();
        if let Some(row) = rows.get_mut(&self.id)
            && row.marked != marked
        {
            row.marked = marked;
            drop(rows);
            self.changed();
        }
    }

    /// How the session ended, shown while the row lingers.
    pub fn ended(&self, how: &str) {
        self.update(|row| row.ended = Some((Instant::now(), how.to_string())));
    }

    fn update(&self, change: impl FnOnce(&mut Row)) {
        if let Some(row) = self.board.rows().get_mut(&self.id) {
            change(row);
        }
        self.changed();
    }

    /// Without a terminal to redraw, each change is a line (the line log).
    fn changed(&self) {
        if self.board.terminal {
            return;
        }
        let Some(row) = self.board.rows().get(&self.id).cloned() else {
            return;
        };
        let user = row.user.as_deref().unwrap_or("-");
        let line = match &row.ended {
            Some((_, how)) => format!("board: session {} {user} closed: {how}", self.id),
            None => format!(
                "board: session {} {user} {} last={:?} marked={}",
                self.id, row.state, row.last, row.marked
            ),
        };
        let _ = writeln!(io::stdout().lock(), "{line}");
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        let mut rows = self.board.rows();
        if let Some(row) = rows.get_mut(&self.id)
            && row.ended.is_none()
        {
            row.ended = Some((Instant::now(), "connection closed".into()));
        }
    }
}

/// The name in a `USER name` line, if this is one.
pub fn user_named(line: &str) -> Option<&str> {
    let (keyword, name) = line.split_once(' ')?;
    keyword.eq_ignore_ascii_case("USER").then_some(name)
}

/// The terminal's width and height. std cannot ask the terminal (that is an `ioctl`), but
/// `stty size` can, given the terminal as its input.
fn terminal_size() -> Option<(usize, usize)> {
    let tty = std::fs::File::open("/dev/tty").ok()?;
    let out = std::process::Command::new("stty")
        .arg("size")
        .stdin(tty)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let mut numbers = text.split_whitespace().map(str::parse::<usize>);
    let (Some(Ok(height)), Some(Ok(width))) = (numbers.next(), numbers.next()) else {
        return None;
    };
    (width > 0 && height > 0).then_some((width, height))
}

// ANCHOR: render
/// The board as lines of at most `width` characters, at most `height` of them: a header, the
/// state diagram with counts, then the rows in as many columns as it takes, then the pane and
/// the note.
fn render(
    connect: &str,
    note: &str,
    rows: &[(u64, Row)],
    pane: &[String],
    (width, height): (usize, usize),
    now: Instant,
) -> Vec<String> {
    let live: Vec<&(u64, Row)> = rows.iter().filter(|(_, r)| r.ended.is_none()).collect();
    let count = |state: &str| live.iter().filter(|(_, r)| r.state == state).count();
    let clock = clock_time();
    let mut lines = vec![
        format!(
            "popstate board   {connect}   {} sessions   {clock}",
            live.len()
        ),
        format!(
            "AUTHORIZATION {} --PASS--> TRANSACTION {} --QUIT--> UPDATE {}   closed {}",
            count("AUTHORIZATION"),
            count("TRANSACTION"),
            count("UPDATE"),
            rows.len() - live.len()
        ),
    ];
    // Sorted by name, so a teacher finds a student where the alphabet says.
    let mut sorted: Vec<&(u64, Row)> = rows.iter().collect();
    sorted.sort_by(|(a, ra), (b, rb)| (&ra.user, a).cmp(&(&rb.user, b)));

    let pane_height = if pane.is_empty() { 0 } else { 5 };
    let note_height = usize::from(!note.is_empty());
    let room = height
        .saturating_sub(lines.len() + 1 + pane_height + note_height)
        .max(1);
    // Short of room, the sessions that have just closed give up their rows first.
    if sorted.len() > room * (width / MIN_CELL).max(1) {
        sorted.retain(|(_, row)| row.ended.is_none());
    }
    let columns = sorted
        .len()
        .div_ceil(room)
        .clamp(1, (width / MIN_CELL).max(1));
    let cell = (width / columns).saturating_sub(1).max(1);
    let heading = format!(
        "{:<10} {:<6} {:<w$} del idle",
        "user",
        "state",
        "last",
        w = cell.saturating_sub(27)
    );
    lines.push(vec![fit(&heading, cell); columns].join(" "));
    // When not every row fits, the last line says how many are left out.
    let fits = sorted.len() <= room * columns;
    let shown = if fits {
        sorted.len()
    } else {
        (room - 1) * columns
    };
    let used = shown.div_ceil(columns).min(room);
    for r in 0..used {
        let cells: Vec<String> = (0..columns)
            .filter_map(|c| sorted.get(c * used + r).filter(|_| c * used + r < shown))
            .map(|(id, row)| fit(&cell_text(*id, row, cell, now), cell))
            .collect();
        lines.push(cells.join(" "));
    }
    if !fits {
        lines.push(format!(
            "... and {} more sessions: make the terminal larger",
            sorted.len() - shown
        ));
    }
    if pane_height > 0 {
        lines.push("-- dialogue (--trace-user) --".into());
        let start = pane.len().saturating_sub(pane_height - 1);
        lines.extend(pane[start..].iter().cloned());
    }
    if !note.is_empty() {
        lines.push(note.to_string());
    }
    lines.truncate(height);
    lines.into_iter().map(|l| fit(&l, width)).collect()
}
// ANCHOR_END: render

/// One session in one cell: name, state, last command, marked, idle.
fn cell_text(id: u64, row: &Row, cell: usize, now: Instant) -> String {
    let name = row.user.clone().unwrap_or_else(|| format!("(#{id})"));
    let state = match (&row.ended, row.state) {
        (Some(_), _) => "closed",
        (None, "AUTHORIZATION") => "AUTH",
        (None, "TRANSACTION") => "TRANS",
        (None, other) => other,
    };
    let last = match &row.ended {
        Some((_, how)) => how.as_str(),
        None => row.last.as_str(),
    };
    let last_width = cell.saturating_sub(27);
    format!(
        "{:<10} {:<6} {:<last_width$} {:>3} {:>4}",
        fit(&name, 10),
        state,
        fit(last, last_width),
        row.marked,
        idle(now.saturating_duration_since(row.since))
    )
}

/// `42s`, `12m`, `3h`: four characters at most.
fn idle(time: Duration) -> String {
    let s = time.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        _ => format!("{}h", (s / 3600).min(999)),
    }
}

/// `text` cut to `width` characters, so no line ever wraps on the projector.
fn fit(text: &str, width: usize) -> String {
    text.chars().take(width).collect()
}

/// The time of day (UTC), so a teacher sees the board is alive.
fn clock_time() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!(
        "{:02}:{:02}:{:02} UTC",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60
    )
}

/// The board's last line (`Board::new`'s `note`): where a classroom's passwords are, since the board draws over the
/// start banner that listed them.
pub fn note(demo_root: Option<&std::path::Path>, students: usize) -> String {
    match demo_root {
        Some(root) if students > 0 => format!(
            "passwords: {}   stop: Ctrl-C",
            root.join("accounts.txt").display()
        ),
        _ => "stop: Ctrl-C".to_string(),
    }
}

/// What students type to connect, for the board's header.
pub fn connect_line(hosts: &[std::net::IpAddr], port: u16) -> String {
    match hosts.first() {
        Some(host) => format!("telnet {host} {port}"),
        None => format!("telnet ADDRESS {port} (see ip addr)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize, now: Instant) -> Vec<(u64, Row)> {
        (1..=n as u64)
            .map(|id| {
                let row = Row {
                    user: Some(format!("student{id:02}")),
                    state: ["AUTHORIZATION", "TRANSACTION", "UPDATE"][id as usize % 3],
                    last: "RETR 12345678901234567890 a long line".into(),
                    marked: id as usize,
                    since: now,
                    ended: None,
                };
                (id, row)
            })
            .collect()
    }

    #[test]
    fn never_wider_or_taller_than_the_terminal() {
        let now = Instant::now();
        let pane = ["[3 TRANSACTION] C: RETR 1 ".repeat(10)];
        for (width, height) in [(80, 24), (40, 10), (20, 5), (200, 60), (1, 1)] {
            for n in [0, 1, 30, 200] {
                for pane in [&[][..], &pane[..]] {
                    let lines = render(
                        "telnet 192.0.2.2 1110",
                        "passwords: /tmp/popstate-demo-1110/accounts.txt   stop: Ctrl-C",
                        &rows(n, now),
                        pane,
                        (width, height),
                        now,
                    );
                    assert!(lines.len() <= height, "{width}x{height}, {n}: {lines:#?}");
                    for line in &lines {
                        assert!(
                            line.chars().count() <= width,
                            "{width}x{height}, {n}: {line:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn thirty_rows_fit_in_80_by_24_and_more_are_counted() {
        let now = Instant::now();
        let lines = render("t", "passwords: /tmp/x", &rows(30, now), &[], (80, 24), now);
        let shown = (1..=30)
            .filter(|n| lines.iter().any(|l| l.contains(&format!("student{n:02} "))))
            .count();
        assert_eq!(shown, 30, "{lines:#?}");
        assert!(lines[1].contains("AUTHORIZATION 10 --PASS--> TRANSACTION 10 --QUIT--> UPDATE 10"));

        let lines = render("t", "", &rows(60, now), &[], (80, 24), now);
        let last = lines.last().expect("lines");
        let shown = (1..=60)
            .filter(|n| lines.iter().any(|l| l.contains(&format!("student{n:02} "))))
            .count();
        assert_eq!(
            last,
            &format!(
                "... and {} more sessions: make the terminal larger",
                60 - shown
            )
        );
    }
}
