//! mbox storage: one file per user, `<dir>/<user>`, as `/var/mail` keeps mail on Debian.
//!
//! - **Format.** A message starts at a `From ` line (the *From_ line*, written by the delivery
//!   agent) at the start of the file or after a blank line, and ends before the blank line that
//!   precedes the next From_ line (or the end of the file). The From_ line and that separating
//!   blank line are mbox's framing, not part of the message POP3 sends.
//! - **Dialect: mboxrd.** A body line that would look like a From_ line is stored with one more
//!   `>` in front (`From ` → `>From `, `>From ` → `>>From `, ...), and one `>` is taken off again on
//!   the wire. mboxrd is the one dialect where quoting can always be undone exactly. The older
//!   mboxo (Python's `mailbox`, Postfix's `local`) quotes only `From `; both dialects agree on
//!   the `>From ` lines mboxo writes, and differ only for a message whose own text had a line
//!   starting `>From `, which an mboxo file cannot tell apart from a quoted one anyway.
//! - **Damage is refused, never repaired.** A file that does not start with `From `, or whose
//!   last octet is NUL (the tail a crash leaves when a file grew but its data never reached the
//!   disk), gets `[SYS/PERM]` with the reason and is not changed. An empty or missing file is an
//!   empty maildrop.
//! - **Locks**, taken in the order Debian's delivery agents take them: the dot-lock
//!   `<dir>/<user>.lock` (created with `O_EXCL`; Debian Policy §11.6 makes it the lock every
//!   program must honour), then `flock` on the mbox itself (`File::try_lock`). Held for the
//!   whole session and released on drop, the dot-lock last. See [`DotLock`] for waiting, stale
//!   locks and why there is no `fcntl` lock.
//! - **UPDATE** writes the kept messages, then whatever was appended past the listed part,
//!   into a new file in `<dir>` and renames it over the mbox: a crash at any moment leaves the
//!   old file or the new one. It needs write permission on `<dir>` (Debian's `/var/mail` is
//!   `root:mail 2775`: run popstate as root or in group `mail`); see [`MboxMaildrop::rewrite`].
//! - **Unique-ids** come from an `X-UIDL` header when a message has a valid one, else from a
//!   hash of its From_ line, its header fields and its body's length (see [`uids`]).

use std::collections::HashMap;
use std::fs::{self, File, TryLockError};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use log::warn;

use crate::maildrop::{Maildrop, MessageInfo, OpenError, Store};
use crate::protocol::message_size;

/// A dot-lock older than this that nobody refreshed is left over from a crash and is removed.
/// liblockfile (`dotlockfile`, mutt) uses the same five minutes; a holder that keeps its lock
/// longer must refresh it, as popstate does every [`TOUCH_EVERY`].
pub const STALE_LOCK: Duration = Duration::from_secs(300);

/// How often popstate refreshes the modification time of the dot-locks it holds.
pub const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// How long a login waits for a lock held by another program before answering `[IN-USE]`. A
/// delivery holds the lock for well under a second; another POP3 or IMAP session holds it for
/// minutes, and the client is better told so.
pub const LOCK_WAIT: Duration = Duration::from_secs(5);

/// The maildrops in one folder, one mbox file per user.
pub struct MboxStore {
    dir: PathBuf,
    held: Arc<Held>,
    toucher: OnceLock<()>,
}

/// The dot-locks this process holds, by user: a second session of the same user is refused at
/// once, and the toucher thread keeps each lock fresh.
#[derive(Default)]
struct Held {
    locks: Mutex<HashMap<String, (PathBuf, FileId)>>,
}

/// Device and inode: which file a path named when we looked.
type FileId = (u64, u64);

impl MboxStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        MboxStore {
            dir: dir.into(),
            held: Arc::default(),
            toucher: OnceLock::new(),
        }
    }

    /// Starts, once, the thread that refreshes held dot-locks; it ends with the store.
    fn start_toucher(&self) {
        self.toucher.get_or_init(|| {
            let held = Arc::downgrade(&self.held);
            let started = thread::Builder::new()
                .name("mbox-lock-toucher".into())
                .spawn(move || touch_forever(&held));
            if let Err(e) = started {
                warn!("cannot start the thread that refreshes mbox dot-locks: {e}");
            }
        });
    }
}

fn touch_forever(held: &Weak<Held>) {
    loop {
        thread::sleep(TOUCH_EVERY);
        let Some(held) = held.upgrade() else { return };
        let locks: Vec<(PathBuf, FileId)> = held
            .locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        for (path, id) in locks {
            // Only a lock that is still ours: a file put there by someone else is theirs.
            if let Ok(file) = File::options().write(true).open(&path)
                && file.metadata().ok().and_then(|m| file_id(&m)) == Some(id)
                && let Err(e) = file.set_modified(SystemTime::now())
            {
                warn!("cannot refresh {}: {e}", path.display());
            }
        }
    }
}

// ANCHOR: dot_lock
/// The dot-lock `<dir>/<user>.lock`, held while it exists.
///
/// Created with `O_EXCL` (`create_new`), which is atomic on local file systems: of two programs
/// creating it at once, exactly one succeeds. It holds popstate's process id, as liblockfile
/// writes it. A lock that is already there is waited for (up to [`LOCK_WAIT`]), unless it is
/// stale: unchanged for [`STALE_LOCK`], or naming a process that no longer runs (Linux's /proc
/// tells; a lock from a crashed popstate is then taken over at once).
///
/// Why no `fcntl` lock: Debian's procmail and Postfix take one as well as the dot-lock, but on
/// Linux `fcntl` and `flock` locks do not see each other, and std offers only `flock`. Every
/// delivery agent Debian ships takes the dot-lock first (Policy §11.6), so the dot-lock alone
/// keeps them out; the `flock` keeps out programs that use only that (mutt can, Dovecot can).
/// A program that honours nothing but `fcntl` is not excluded: that is the price of staying
/// with std (an `fcntl` lock needs `unsafe` FFI or the libc crate).
struct DotLock {
    path: PathBuf,
    id: FileId,
    user: String,
    held: Arc<Held>,
}

enum LockError {
    Busy,
    Failed(io::Error),
}

impl DotLock {
    fn acquire(dir: &Path, user: &str, held: &Arc<Held>) -> Result<DotLock, LockError> {
        let path = dir.join(format!("{user}.lock"));
        let deadline = Instant::now() + LOCK_WAIT;
        loop {
            match File::options().write(true).create_new(true).open(&path) {
                Ok(mut file) => {
                    let meta = file
                        .write_all(format!("{}\n", std::process::id()).as_bytes())
                        .and_then(|()| file.metadata());
                    let id = match meta {
                        Ok(meta) => file_id(&meta).unwrap_or_default(),
                        Err(e) => {
                            let _ = fs::remove_file(&path);
                            return Err(LockError::Failed(e));
                        }
                    };
                    held.locks
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(user.to_string(), (path.clone(), id));
                    return Ok(DotLock {
                        path,
                        id,
                        user: user.to_string(),
                        held: Arc::clone(held),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if is_stale(&path) {
                        warn!("removing the stale lock {}", path.display());
                        match fs::remove_file(&path) {
                            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                                return Err(LockError::Failed(e));
                            }
                            _ => continue,
                        }
                    }
                    if Instant::now() >= deadline {
                        return Err(LockError::Busy);
                    }
                    thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(LockError::Failed(e)),
            }
        }
    }
}

/// Stale: not refreshed for [`STALE_LOCK`], or holding the id of a process that has ended.
fn is_stale(path: &Path) -> bool {
    let Ok(meta) = fs::metadata(path) else {
        return false;
    };
    let age = meta
        .modified()
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .unwrap_or_default();
    if age > STALE_LOCK {
        return true;
    }
    let proc_fs = Path::new("/proc/self").exists();
    let pid = fs::read_to_string(path)
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok());
    match pid {
        Some(pid) if proc_fs && pid > 1 => !Path::new("/proc").join(pid.to_string()).exists(),
        _ => false,
    }
}

impl Drop for DotLock {
    fn drop(&mut self) {
        self.held
            .locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.user);
        // Remove it only while it is still the file we made: if it was taken over as stale,
        // the file there now is someone else's lock.
        let ours = fs::metadata(&self.path)
            .ok()
            .and_then(|m| file_id(&m))
            .is_some_and(|id| id == self.id);
        if ours && let Err(e) = fs::remove_file(&self.path) {
            warn!("cannot remove the lock {}: {e}", self.path.display());
        }
    }
}
// ANCHOR_END: dot_lock

// ANCHOR: open_maildrop
impl Store for MboxStore {
    fn open_maildrop(&self, user: &str) -> Result<Box<dyn Maildrop>, OpenError> {
        // `user` is one safe path component (users.rs); `alice.lock` would be alice's lock.
        if user.ends_with(".lock") {
            return Err(OpenError::Permanent(format!(
                "{user} cannot have an mbox: the name ends in .lock, which names a lock file"
            )));
        }
        let already_here = self
            .held
            .locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(user);
        if already_here {
            return Err(OpenError::InUse);
        }
        let dot_lock = match DotLock::acquire(&self.dir, user, &self.held) {
            Ok(lock) => lock,
            Err(LockError::Busy) => return Err(OpenError::InUse),
            Err(LockError::Failed(e)) => {
                warn!("cannot create {user}.lock in {}: {e}", self.dir.display());
                let why = format!("cannot create the mbox's lock file: {e}");
                return Err(match e.kind() {
                    io::ErrorKind::PermissionDenied | io::ErrorKind::NotFound => {
                        OpenError::Permanent(why)
                    }
                    _ => OpenError::Temporary(why),
                });
            }
        };
        self.start_toucher();
        let path = self.dir.join(user);
        let file = match File::open(&path) {
            Ok(file) => Some(file),
            // No mail yet: an empty maildrop. Nothing is created; a delivery will.
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                warn!("cannot open {}: {e}", path.display());
                return Err(OpenError::Permanent(format!("cannot open the mbox: {e}")));
            }
        };
        if let Some(file) = &file {
            lock_file(file)?;
        }
        // Errors from here on drop `file` and `dot_lock`, releasing both before the -ERR.
        let listing = match &file {
            Some(file) => list(file).map_err(|e| match e {
                ListError::Damaged(why) => {
                    warn!("{} is damaged: {why}", path.display());
                    OpenError::Permanent(format!(
                        "the mbox is damaged and was left as it is: {why}"
                    ))
                }
                ListError::Io(e) => {
                    warn!("cannot read {}: {e}", path.display());
                    OpenError::Temporary(format!("cannot read the mbox: {e}"))
                }
            })?,
            None => Listing::default(),
        };
        Ok(Box::new(MboxMaildrop {
            dir: self.dir.clone(),
            user: user.to_string(),
            path,
            listing,
            file,
            _dot_lock: dot_lock,
        }))
    }
}

/// `flock` on the mbox, waiting up to [`LOCK_WAIT`] for a program that holds it briefly.
fn lock_file(file: &File) -> Result<(), OpenError> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(()),
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(100));
            }
            Err(TryLockError::WouldBlock) => return Err(OpenError::InUse),
            Err(TryLockError::Error(e)) => {
                return Err(OpenError::Temporary(format!("cannot lock the mbox: {e}")));
            }
        }
    }
}
// ANCHOR_END: open_maildrop

/// Where one message lies in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    /// Its From_ line.
    start: u64,
    /// The message itself: after the From_ line, up to the separating blank line.
    content: u64,
    end: u64,
    /// Where the next message's From_ line starts (or the listed end of the file).
    next: u64,
}

/// The mbox as one login saw it.
#[derive(Default)]
struct Listing {
    messages: Vec<MessageInfo>,
    spans: Vec<Span>,
    /// The file's length at login: everything past it was appended during the session.
    listed_end: u64,
    /// A hash of the first `listed_end` octets, to prove at UPDATE that they are unchanged.
    listed_hash: u64,
    /// The file as it was listed, to notice a change before sending a message.
    stamp: Option<Stamp>,
}

/// Device, inode, length, modification and change time.
type Stamp = (u64, u64, u64, i64, i64, i64, i64);

enum ListError {
    Damaged(String),
    Io(io::Error),
}

impl From<io::Error> for ListError {
    fn from(e: io::Error) -> Self {
        ListError::Io(e)
    }
}

// ANCHOR: list
/// Reads the mbox once to find its messages, a second time (per message) to count the octets
/// RETR will send, through the same [`Unstuff`] reader that RETR uses.
fn list(file: &File) -> Result<Listing, ListError> {
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(ListError::Damaged("it is not a file".into()));
    }
    let len = meta.len();
    if len == 0 {
        return Ok(Listing {
            stamp: stamp(&meta),
            ..Listing::default()
        });
    }
    let mut head = [0u8; 5];
    let got = read_at(file, 0, &mut head)?;
    if &head[..got] != b"From " {
        return Err(ListError::Damaged(
            "it does not start with a \"From \" line, so it is not an mbox".into(),
        ));
    }
    let mut last = [0u8; 1];
    read_at(file, len - 1, &mut last)?;
    if last[0] == 0 {
        return Err(ListError::Damaged(
            "it ends in NUL octets, what a crash leaves behind".into(),
        ));
    }
    let mut reader = file;
    reader.seek(SeekFrom::Start(0))?;
    let found = scan(BufReader::with_capacity(64 * 1024, reader.take(len)))?;
    let mut messages = Vec::with_capacity(found.messages.len());
    let mut sizes = Vec::with_capacity(found.messages.len());
    for message in &found.messages {
        let size = message_size(&mut open_span(file, &message.span)?)?;
        sizes.push(size);
    }
    let uids = uids(&found.messages);
    // A From_ line without a readable date: the file's last change is the latest it can be.
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    for ((size, uid), message) in sizes.into_iter().zip(uids).zip(&found.messages) {
        messages.push(MessageInfo {
            size,
            uid,
            delivered: message.delivered.unwrap_or(modified),
        });
    }
    Ok(Listing {
        messages,
        spans: found.messages.iter().map(|m| m.span).collect(),
        listed_end: len,
        listed_hash: found.hash,
        stamp: stamp(&meta),
    })
}
// ANCHOR_END: list

/// The date of a From_ line, `From sender Tue Nov 25 09:00:01 2025` (asctime's format, which
/// delivery agents write, sometimes with a time zone before or after the year), in seconds since
/// 1970. The time zone is not applied: EXPIRE counts days, and a few hours do not matter there.
fn from_line_date(line: &[u8]) -> Option<u64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let line = std::str::from_utf8(line).ok()?;
    let words: Vec<&str> = line.split_ascii_whitespace().skip(2).collect();
    let at = words.iter().position(|w| MONTHS.contains(w))?;
    let month = MONTHS.iter().position(|m| *m == words[at])? as u64 + 1;
    let day: u64 = words.get(at + 1)?.parse().ok()?;
    let mut clock = words.get(at + 2)?.split(':').map(|n| n.parse::<u64>());
    let (hour, minute) = (clock.next()?.ok()?, clock.next()?.ok()?);
    let second = clock.next().and_then(Result::ok).unwrap_or(0);
    let year: u64 = words[at + 3..]
        .iter()
        .take(2)
        .find_map(|w| (w.len() == 4).then(|| w.parse().ok()).flatten())?;
    if !(1970..=9999).contains(&year) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    // Days since 1970-01-01 in the proleptic Gregorian calendar (the "days from civil"
    // algorithm: count from 1 March, so that the leap day ends the year).
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era_days = 365 * y + y / 4 - y / 100 + y / 400 + (153 * m + 2) / 5 + day - 1;
    let days = era_days.checked_sub(719_468)?;
    Some(days * 86_400 + hour * 3600 + minute * 60 + second.min(60))
}

/// Reads up to `buf.len()` octets at `offset` without moving anyone's file position for good.
fn read_at(file: &File, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    let mut reader = file;
    reader.seek(SeekFrom::Start(offset))?;
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

/// A message's content as RETR sends it, before CRLF and dot-stuffing: the span's octets with
/// mboxrd quoting undone.
fn open_span(file: &File, span: &Span) -> io::Result<Unstuff<BufReader<io::Take<File>>>> {
    let mut file = file.try_clone()?;
    file.seek(SeekFrom::Start(span.content))?;
    let len = span.end - span.content;
    let buffer = usize::try_from(len)
        .unwrap_or(usize::MAX)
        .clamp(512, 64 * 1024);
    Ok(Unstuff::new(BufReader::with_capacity(
        buffer,
        file.take(len),
    )))
}

/// What `scan` learns about one message.
struct Found {
    span: Span,
    /// FNV-1a of the From_ line and the header fields that name the message (see [`uids`]).
    identity: u64,
    /// Where the body starts (after the header's blank line), once seen.
    body_start: Option<u64>,
    x_uidl: Option<String>,
    /// The date on the From_ line, in seconds since 1970, if it has one (see [`from_line_date`]).
    delivered: Option<u64>,
}

struct Scanned {
    messages: Vec<Found>,
    hash: u64,
}

/// Header fields that mail readers rewrite to record flags; they must not change an id.
const FLAG_FIELDS: &[&str] = &[
    "status",
    "x-status",
    "x-keywords",
    "x-uid",
    "x-imap",
    "x-imapbase",
    "content-length",
    "lines",
];

/// Longest piece of a line looked at at once, so that one enormous line costs no more memory.
const PIECE: u64 = 64 * 1024;

// ANCHOR: scan
/// One pass over the file, a line (or a [`PIECE`] of a long one) at a time: where each message
/// starts and ends, what identifies it, and a hash of every octet.
fn scan<R: BufRead>(mut input: R) -> io::Result<Scanned> {
    let mut messages: Vec<Found> = Vec::new();
    let mut hash = Fnv::new();
    let mut piece = Vec::new();
    let mut pos = 0u64;
    let mut at_line_start = true;
    // The previous line was blank ("\n" or "\r\n"), and where it started.
    let mut blank_before: Option<u64> = Some(0);
    let mut line_blank: Option<u64> = None;
    // Inside the current message: still in its From_ line / header, and whether the current
    // header field is one that is left out of the identity.
    let mut in_from_line = false;
    let mut in_header = false;
    let mut skipping_field = false;
    let mut ident = Fnv::new();
    loop {
        piece.clear();
        (&mut input).take(PIECE).read_until(b'\n', &mut piece)?;
        if piece.is_empty() {
            break;
        }
        hash.write(&piece);
        let starts_line = at_line_start;
        let ends_line = piece.last() == Some(&b'\n');
        if starts_line {
            line_blank = (piece == b"\n" || piece == b"\r\n").then_some(pos);
            let separator = (pos == 0 || blank_before.is_some()) && piece.starts_with(b"From ");
            if separator {
                if let Some(last) = messages.last_mut() {
                    last.span.end = blank_before.unwrap_or(pos).max(last.span.content);
                    last.span.next = pos;
                    last.identity = ident.finish();
                }
                messages.push(Found {
                    span: Span {
                        start: pos,
                        content: pos,
                        end: pos,
                        next: pos,
                    },
                    identity: 0,
                    body_start: None,
                    x_uidl: None,
                    delivered: from_line_date(&piece),
                });
                ident = Fnv::new();
                in_from_line = true;
                in_header = true;
                skipping_field = false;
            } else if in_header && !in_from_line {
                if line_blank.is_some() {
                    in_header = false;
                } else if !piece.starts_with(b" ") && !piece.starts_with(b"\t") {
                    let name = field_name(&piece);
                    skipping_field = FLAG_FIELDS.iter().any(|f| f.eq_ignore_ascii_case(name));
                    if name.eq_ignore_ascii_case("x-uidl")
                        && let Some(last) = messages.last_mut()
                    {
                        last.x_uidl = x_uidl(&piece);
                    }
                }
            }
        }
        if in_header && !skipping_field && line_blank.is_none() {
            ident.write(&piece);
        }
        pos += piece.len() as u64;
        if let Some(last) = messages.last_mut() {
            if in_from_line && ends_line {
                in_from_line = false;
                last.span.content = pos;
            } else if !in_header && starts_line && last.body_start.is_none() {
                // The blank line that ends the header: the body starts after it.
                last.body_start = Some(pos);
            }
        }
        if ends_line {
            blank_before = line_blank;
        }
        at_line_start = ends_line;
    }
    if let Some(last) = messages.last_mut() {
        if in_from_line {
            last.span.content = pos;
        }
        // The blank line after the last message is framing too, when it is there.
        let blank_at_end = at_line_start.then_some(blank_before).flatten();
        last.span.end = blank_at_end.unwrap_or(pos).max(last.span.content);
        last.span.next = pos;
        last.identity = ident.finish();
    }
    Ok(Scanned {
        messages,
        hash: hash.finish(),
    })
}
// ANCHOR_END: scan

/// The name of a header field line (`Subject: x` → `Subject`), or empty.
fn field_name(line: &[u8]) -> &str {
    let name = line.split(|&b| b == b':').next().unwrap_or_default();
    std::str::from_utf8(name).unwrap_or_default().trim_end()
}

/// The value of an `X-UIDL:` line when it is a valid unique-id (RFC 1939 §7: 1 to 70 octets in
/// 0x21..=0x7E).
fn x_uidl(line: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(line).ok()?;
    let (_, value) = text.split_once(':')?;
    let value = value.trim();
    let valid =
        (1..=70).contains(&value.len()) && value.bytes().all(|b| (0x21..=0x7e).contains(&b));
    valid.then(|| value.to_string())
}

// ANCHOR: uids
/// Unique-ids (RFC 1939 §7), stable across sessions, restarts and Rust versions:
///
/// - a valid `X-UIDL` header (left by an earlier POP3 server) is used as it is;
/// - otherwise `m` and 16 hex digits of FNV-1a 64 over the From_ line (sender and delivery
///   time), the header fields except the ones mail readers rewrite to keep flags ([`FLAG_FIELDS`]:
///   `Status`, `X-Status`, ...), and the body's length. Deleting other messages changes none
///   of these.
///
/// Two messages with the same id (a message delivered twice in the same second) are told apart
/// in file order: the second gets `-2`, the third `-3`. If the first is deleted, the second
/// takes over the plain id; that is harmless, since the two are the same message.
fn uids(found: &[Found]) -> Vec<String> {
    let mut seen: HashMap<String, u32> = HashMap::new();
    found
        .iter()
        .map(|f| {
            let base = f.x_uidl.clone().unwrap_or_else(|| {
                let body_len = f.body_start.map_or(0, |b| f.span.end.saturating_sub(b));
                let mut h = Fnv(f.identity);
                h.write(body_len.to_string().as_bytes());
                format!("m{:016x}", h.finish())
            });
            let count = seen.entry(base.clone()).or_insert(0);
            *count += 1;
            if *count == 1 {
                return base;
            }
            let suffix = format!("-{count}");
            let keep = base.len().min(70 - suffix.len());
            format!("{}{suffix}", &base[..keep])
        })
        .collect()
}

/// FNV-1a, 64 bits, written out so that ids never depend on std's hasher (which may change
/// between Rust versions). Not for security: only a stable name for a message.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}
// ANCHOR_END: uids

// ANCHOR: unstuff
/// Undoes mboxrd quoting: a line that starts with one or more `>` followed by `From ` loses one
/// `>`. Everything else passes through as stored.
///
/// Reads a line (or a 64 KiB piece of a long one) at a time. Both LIST's count and RETR's
/// octets come through this reader, so they cannot disagree.
pub struct Unstuff<R> {
    inner: R,
    piece: Vec<u8>,
    at: usize,
    at_line_start: bool,
}

impl<R: BufRead> Unstuff<R> {
    pub fn new(inner: R) -> Self {
        Unstuff {
            inner,
            piece: Vec::new(),
            at: 0,
            at_line_start: true,
        }
    }
}

/// `>From `, `>>From `, ...: a quoted From_ line. `None` while `piece` holds only `>`s.
fn quoted_from(piece: &[u8]) -> Option<bool> {
    let rest = piece.iter().position(|&b| b != b'>');
    match rest {
        None => None,
        Some(0) => Some(false),
        Some(n) if piece.len() - n < 5 && b"From "[..piece.len() - n] == piece[n..] => None,
        Some(n) => Some(piece[n..].starts_with(b"From ")),
    }
}

impl<R: BufRead> BufRead for Unstuff<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.at >= self.piece.len() {
            self.piece.clear();
            self.at = 0;
            loop {
                let before = self.piece.len();
                (&mut self.inner)
                    .take(PIECE)
                    .read_until(b'\n', &mut self.piece)?;
                let more = self.piece.len() > before && self.piece.last() != Some(&b'\n');
                // At the start of a line, read on until it is clear whether it is quoted.
                if !(self.at_line_start && more && quoted_from(&self.piece).is_none()) {
                    break;
                }
            }
            if self.at_line_start && quoted_from(&self.piece) == Some(true) {
                self.at = 1;
            }
            if !self.piece.is_empty() {
                self.at_line_start = self.piece.last() == Some(&b'\n');
            }
        }
        Ok(&self.piece[self.at..])
    }

    fn consume(&mut self, amount: usize) {
        self.at = (self.at + amount).min(self.piece.len());
    }
}

impl<R: BufRead> Read for Unstuff<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}
// ANCHOR_END: unstuff

// ANCHOR: append_message
/// Appends one message to an mbox as a delivery agent does: a From_ line, the message with
/// mboxrd quoting (a line of `>`s then `From ` gets one more `>`), a line end if the message
/// lacks a last one, and the blank line that separates it from the next. For the demo and the
/// tests; popstate itself never delivers.
pub fn append_message<W: Write>(out: &mut W, from_line: &str, message: &[u8]) -> io::Result<()> {
    out.write_all(from_line.as_bytes())?;
    out.write_all(b"\n")?;
    for line in message.split_inclusive(|&b| b == b'\n') {
        let stripped = line.iter().position(|&b| b != b'>').unwrap_or(line.len());
        if line[stripped..].starts_with(b"From ") {
            out.write_all(b">")?;
        }
        out.write_all(line)?;
    }
    if !message.is_empty() && !message.ends_with(b"\n") {
        out.write_all(b"\n")?;
    }
    out.write_all(b"\n")
}
// ANCHOR_END: append_message

/// Every message in an mbox held in memory: its From_ line (without the line end) and its
/// content as POP3 serves it before CRLF conversion (framing removed, quoting undone). For
/// tests and tools that look at an mbox from outside a session.
pub fn read_all(bytes: &[u8]) -> io::Result<Vec<(String, Vec<u8>)>> {
    let found = scan(bytes)?;
    found
        .messages
        .iter()
        .map(|f| {
            let span = f.span;
            let from = &bytes[span.start as usize..span.content as usize];
            let from = String::from_utf8_lossy(from).trim_end().to_string();
            let mut content = Vec::new();
            Unstuff::new(&bytes[span.content as usize..span.end as usize])
                .read_to_end(&mut content)?;
            Ok((from, content))
        })
        .collect()
}

/// One user's locked mbox.
struct MboxMaildrop {
    dir: PathBuf,
    user: String,
    path: PathBuf,
    listing: Listing,
    /// The mbox as opened at login, `flock`ed; `None` when there was no file. Declared before
    /// the dot-lock, so it is closed (its `flock` released) first.
    file: Option<File>,
    _dot_lock: DotLock,
}

// ANCHOR: mbox_maildrop
impl Maildrop for MboxMaildrop {
    fn messages(&self) -> &[MessageInfo] {
        &self.listing.messages
    }

    fn open(&self, index: usize) -> Result<Box<dyn BufRead + Send>, String> {
        let (Some(file), Some(span)) = (&self.file, self.listing.spans.get(index)) else {
            return Err(format!("message index {index} is outside the maildrop"));
        };
        let changed = file.metadata().ok().and_then(|m| stamp(&m)) != self.listing.stamp;
        if changed || self.listing.stamp.is_none() {
            // Another program wrote to the file (an append is fine). Count the message again:
            // sending octets LIST did not promise would put the client out of step (§5).
            let promised = self.listing.messages[index].size;
            let now = open_span(file, span)
                .and_then(|mut r| message_size(&mut r))
                .map_err(|e| format!("it cannot be read: {e}"))?;
            if now != promised {
                return Err(format!(
                    "another program changed the mbox ({promised} octets when listed, {now} now)"
                ));
            }
        }
        let reader = open_span(file, span).map_err(|e| format!("it cannot be read: {e}"))?;
        Ok(Box::new(reader))
    }

    fn remove(&mut self, marked: &[usize]) -> Vec<(usize, String)> {
        if marked.is_empty() {
            return Vec::new();
        }
        match self.rewrite(marked) {
            Ok(()) => Vec::new(),
            Err(why) => {
                warn!("cannot rewrite {}: {why}", self.path.display());
                marked.iter().map(|&i| (i, why.clone())).collect()
            }
        }
    }
}
// ANCHOR_END: mbox_maildrop

impl MboxMaildrop {
    // ANCHOR: rewrite
    /// UPDATE for an mbox: all the marked messages go at once, or none do.
    ///
    /// The kept messages and everything appended during the session are written to
    /// `<dir>/.<user>:popstate-new` (no user name holds a `:`), flushed to disk, given the
    /// mbox's mode and owner, and renamed over the mbox. A rename is atomic, so a crash at
    /// any moment leaves the old mbox or the new one, whole. This needs write permission on
    /// `<dir>` (not only on the mbox), and, for an mbox owned by someone else, root (to give
    /// the new file its owner); a mailbox folder with the sticky bit also needs root.
    ///
    /// While the listed part is copied it is hashed again; if it is not what the login read
    /// (a program that ignores the locks wrote to it), nothing is replaced.
    fn rewrite(&self, marked: &[usize]) -> Result<(), String> {
        let file = self.file.as_ref().ok_or("the mbox is gone")?;
        let held = file.metadata().map_err(|e| e.to_string())?;
        let at_path = fs::metadata(&self.path).map_err(|e| format!("the mbox is gone: {e}"))?;
        if file_id(&held) != file_id(&at_path) {
            return Err("another program replaced the mbox during the session".into());
        }
        if held.len() < self.listing.listed_end {
            return Err(format!(
                "another program shortened the mbox during the session ({} octets at login, {} now)",
                self.listing.listed_end,
                held.len()
            ));
        }
        let temp = self.dir.join(format!(".{}:popstate-new", self.user));
        match fs::remove_file(&temp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(format!("cannot remove an old {}: {e}", temp.display()));
            }
            _ => {}
        }
        let out = File::options()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| format!("cannot create a new mbox beside the old one: {e}"))?;
        let written = self
            .write_kept(file, &out, marked)
            .and_then(|()| keep_owner_and_mode(&out, &held))
            .and_then(|()| out.sync_all().map_err(|e| format!("cannot flush it: {e}")));
        if let Err(why) = written {
            let _ = fs::remove_file(&temp);
            return Err(why);
        }
        fs::rename(&temp, &self.path).map_err(|e| {
            let _ = fs::remove_file(&temp);
            format!("cannot put the new mbox in place: {e}")
        })?;
        // The rename itself reaches the disk when the folder is flushed.
        if let Err(e) = File::open(&self.dir).and_then(|d| d.sync_all()) {
            warn!("cannot flush {}: {e}", self.dir.display());
        }
        Ok(())
    }

    /// Copies every listed message but the marked ones, then the rest of the file, to `out`.
    fn write_kept(&self, file: &File, out: &File, marked: &[usize]) -> Result<(), String> {
        let fail = |e: io::Error| format!("cannot copy the mbox: {e}");
        let mut input = file.try_clone().map_err(fail)?;
        input.seek(SeekFrom::Start(0)).map_err(fail)?;
        let mut input = BufReader::with_capacity(256 * 1024, input);
        let mut output = BufWriter::with_capacity(256 * 1024, out);
        let mut hash = Fnv::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut gone = vec![false; self.listing.spans.len()];
        for &index in marked {
            if let Some(slot) = gone.get_mut(index) {
                *slot = true;
            }
        }
        for (span, gone) in self.listing.spans.iter().zip(gone) {
            let keep = !gone;
            let mut part = (&mut input).take(span.next - span.start);
            loop {
                let n = part.read(&mut buf).map_err(fail)?;
                if n == 0 {
                    break;
                }
                hash.write(&buf[..n]);
                if keep {
                    output.write_all(&buf[..n]).map_err(fail)?;
                }
            }
        }
        if hash.finish() != self.listing.listed_hash {
            return Err("another program changed the mbox during the session".into());
        }
        // Mail delivered since login, octet for octet.
        io::copy(&mut input, &mut output).map_err(fail)?;
        output.flush().map_err(fail)
    }
    // ANCHOR_END: rewrite
}

#[cfg(unix)]
fn keep_owner_and_mode(out: &File, old: &fs::Metadata) -> Result<(), String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let new = out.metadata().map_err(|e| e.to_string())?;
    if (new.uid(), new.gid()) != (old.uid(), old.gid()) {
        std::os::unix::fs::fchown(out, Some(old.uid()), Some(old.gid())).map_err(|e| {
            format!(
                "cannot give the new mbox the old one's owner ({}:{}): {e}",
                old.uid(),
                old.gid()
            )
        })?;
    }
    out.set_permissions(fs::Permissions::from_mode(old.mode() & 0o7777))
        .map_err(|e| format!("cannot give the new mbox the old one's mode: {e}"))
}

#[cfg(not(unix))]
fn keep_owner_and_mode(out: &File, old: &fs::Metadata) -> Result<(), String> {
    out.set_permissions(old.permissions())
        .map_err(|e| format!("cannot give the new mbox the old one's mode: {e}"))
}

#[cfg(unix)]
fn file_id(meta: &fs::Metadata) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt;
    Some((meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
fn file_id(_: &fs::Metadata) -> Option<FileId> {
    None
}

#[cfg(unix)]
fn stamp(meta: &fs::Metadata) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    Some((
        meta.dev(),
        meta.ino(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec(),
    ))
}

/// Without change times a message is counted again before every RETR.
#[cfg(not(unix))]
fn stamp(_: &fs::Metadata) -> Option<Stamp> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x11_from_line_dates() {
        assert_eq!(
            from_line_date(b"From a@b Thu Jan  1 00:00:00 1970\n"),
            Some(0)
        );
        // `date -u -d '2025-11-25 09:00:01' +%s`
        assert_eq!(
            from_line_date(b"From teacher@example.org Tue Nov 25 09:00:01 2025\n"),
            Some(1_764_061_201)
        );
        assert_eq!(
            from_line_date(b"From MAILER-DAEMON Sat Feb 29 12:30:00 +0100 2020"),
            Some(1_582_979_400)
        );
        assert_eq!(from_line_date(b"From a Mon\n"), None);
        assert_eq!(from_line_date(b"From a Mon Foo 1 00:00:00 2020\n"), None);
        assert_eq!(from_line_date(b"From a Mon Jan 1 25:00:00 2020\n"), None);
    }

    fn scan_bytes(bytes: &[u8]) -> Vec<Span> {
        scan(bytes)
            .expect("in memory")
            .messages
            .iter()
            .map(|f| f.span)
            .collect()
    }

    fn contents(bytes: &[u8]) -> Vec<Vec<u8>> {
        scan_bytes(bytes)
            .iter()
            .map(|s| {
                let mut out = Vec::new();
                Unstuff::new(&bytes[s.content as usize..s.end as usize])
                    .read_to_end(&mut out)
                    .expect("in memory");
                out
            })
            .collect()
    }

    #[test]
    fn from_lines_start_messages_only_at_the_start_or_after_a_blank_line() {
        let mbox = b"From a Mon\nSubject: 1\n\nline\nFrom here, not a new message\n\nFrom b Tue\n\nbody\n\n";
        assert_eq!(
            contents(mbox),
            [
                b"Subject: 1\n\nline\nFrom here, not a new message\n".to_vec(),
                b"\nbody\n".to_vec()
            ]
        );
    }

    #[test]
    fn the_separator_and_the_last_blank_line_are_framing() {
        assert_eq!(contents(b"From a\n\n"), [b"".to_vec()]);
        assert_eq!(contents(b"From a\nx\n"), [b"x\n".to_vec()]);
        assert_eq!(contents(b"From a\r\nx\r\n\r\n"), [b"x\r\n".to_vec()]);
        assert_eq!(contents(b"From a"), [b"".to_vec()]);
        assert_eq!(contents(b"From a\nx"), [b"x".to_vec()]);
    }

    #[test]
    fn mboxrd_quoting_is_undone_by_one_level() {
        let mbox = b"From a\n\n>From x\n>>From y\n> From z\n>Fro\n>>>\n";
        assert_eq!(
            contents(mbox),
            [b"\nFrom x\n>From y\n> From z\n>Fro\n>>>\n".to_vec()]
        );
    }

    #[test]
    fn append_then_read_gives_the_message_back() {
        for message in [
            &b"Subject: x\n\nFrom me\n>From you\n>>From them\nend"[..],
            b"",
            b"\n\n\n",
            b"Subject: crlf\r\n\r\nFrom x\r\n",
        ] {
            let mut mbox = Vec::new();
            append_message(&mut mbox, "From a@b Mon Jan  1 00:00:00 2024", message).expect("vec");
            append_message(&mut mbox, "From a@b Mon Jan  1 00:00:01 2024", b"two\n").expect("vec");
            let got = contents(&mbox);
            let mut expected = message.to_vec();
            if !expected.is_empty() && !expected.ends_with(b"\n") {
                expected.push(b'\n');
            }
            assert_eq!(got, [expected, b"two\n".to_vec()], "{message:?}");
        }
    }

    #[test]
    fn b26_uids_skip_flag_fields_and_number_duplicates() {
        let one = b"From a Mon\nSubject: s\nStatus: RO\n\nbody\n\n";
        let two = b"From a Mon\nSubject: s\nStatus: O\nX-Status: A\n\nbody\n\n";
        let ids = |bytes: &[u8]| uids(&scan(bytes).expect("mem").messages);
        assert_eq!(ids(one), ids(two), "flags do not change the id");
        let both = [&one[..], &two[..]].concat();
        let listed = ids(&both);
        assert_eq!(listed[1], format!("{}-2", listed[0]));
        assert!(listed[0].starts_with('m') && listed[0].len() == 17);
        let x = b"From a\nX-UIDL: abc123\n\nx\n\nFrom b\nX-UIDL: has space\n\ny\n\n";
        let listed = ids(x);
        assert_eq!(listed[0], "abc123");
        assert!(listed[1].starts_with('m'), "an invalid X-UIDL is not used");
    }

    #[test]
    fn b26_the_id_hash_is_fixed() {
        // FNV-1a 64 of the empty input and of "a": the published test values. A change here
        // would change every unique-id of every mbox.
        assert_eq!(Fnv::new().finish(), 0xcbf2_9ce4_8422_2325);
        let mut h = Fnv::new();
        h.write(b"a");
        assert_eq!(h.finish(), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn a_long_run_of_quote_marks_is_decided_past_one_piece() {
        let mut line = vec![b'>'; PIECE as usize + 10];
        line.extend_from_slice(b"From x\n");
        let mut out = Vec::new();
        Unstuff::new(&line[..]).read_to_end(&mut out).expect("mem");
        assert_eq!(out.len(), line.len() - 1);
    }
}
