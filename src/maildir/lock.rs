//! The exclusive lock on a Maildir (RFC 1939 §4), held without an open file per session.
//!
//! The lock file `popstate.lock` in the user's folder *names* its holder: one line with the
//! process id, the process's start time, the boot it runs in and a session number. A file
//! that is empty or blank means free. Reading and changing that line is done under a short
//! `flock` on the file (`File::try_lock`), taken for the few system calls of a login or a
//! logout and then dropped with the descriptor, so two popstate processes never both see the
//! maildrop free, and a logged-in session holds no descriptor for its lock: one file per
//! session, its socket.
//!
//! A holder that has ended leaves its line behind (a crash runs no destructor), so a line only
//! counts while its process still runs: the same pid with the same start time (field 22 of
//! `/proc/PID/stat`, so a reused pid is told apart) in the same boot
//! (`/proc/sys/kernel/random/boot_id`). Otherwise the line is stale and the next login takes
//! the lock over at once, as the kernel dropped the old `flock` at once.
//!
//! The file only tells processes apart. Sessions of this process are told apart by [`HELD`],
//! the lock files this process holds now, keyed by device and inode so that two spellings of
//! one path are one lock. An entry whose file has been deleted holds nothing any more: a new
//! file may get its inode number (see [`take`]).

use std::collections::BTreeMap;
use std::fs::{self, File, TryLockError};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread;
use std::time::Duration;

use log::warn;

use crate::maildrop::OpenError;

/// The name of the lock file in each user's Maildir. Maildir readers ignore files outside
/// `new/`, `cur/` and `tmp/`.
pub const LOCK_FILE: &str = "popstate.lock";

/// How long a login or logout waits for the short `flock` before giving up. popstate holds it
/// for a few system calls; a program that holds it longer (a popstate before this lock, which
/// kept the `flock` for a whole session) holds the maildrop.
const FLOCK_WAIT: Duration = Duration::from_secs(1);

// ANCHOR: held
/// The lock files this process holds, by device and inode. Process-wide on purpose: the lock
/// file names a process, not a store, so two stores in one process over the same folders
/// must see each other's sessions.
static HELD: Mutex<BTreeMap<(u64, u64), Held>> = Mutex::new(BTreeMap::new());

/// Who holds an entry of [`HELD`]: the session, and the path it locked by.
struct Held {
    session: u64,
    /// Shared with the session's [`MaildropLock`]: an idle session costs no second copy.
    path: Arc<Path>,
}

/// Numbers this process's sessions, so a logout blanks only the line it wrote.
static SESSIONS: AtomicU64 = AtomicU64::new(1);
// ANCHOR_END: held

/// A held maildrop lock; dropping it (a panic's unwinding included) releases it.
pub struct MaildropLock {
    path: Arc<Path>,
    id: (u64, u64),
    session: u64,
    line: String,
}

/// Who holds a lock: a process in a boot, and the session of it.
#[derive(Debug, PartialEq, Eq)]
struct Holder {
    pid: u32,
    /// Clock ticks after boot when the process started; 0 when unknown.
    start: u64,
    boot: String,
    session: u64,
}

impl Holder {
    fn line(&self) -> String {
        format!(
            "{} {} {} {}\n",
            self.pid, self.start, self.boot, self.session
        )
    }

    fn parse(text: &str) -> Option<Holder> {
        let mut fields = text.split_whitespace();
        let holder = Holder {
            pid: fields.next()?.parse().ok()?,
            start: fields.next()?.parse().ok()?,
            boot: fields.next()?.to_string(),
            session: fields.next()?.parse().ok()?,
        };
        fields.next().is_none().then_some(holder)
    }
}

/// This process: its pid, start time and boot, read once.
fn this_process() -> &'static (u32, u64, String) {
    static ME: OnceLock<(u32, u64, String)> = OnceLock::new();
    ME.get_or_init(|| {
        let pid = std::process::id();
        let boot = fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|b| b.trim().to_string())
            .unwrap_or_default();
        let boot = if boot.is_empty() || boot.contains(char::is_whitespace) {
            "-".to_string()
        } else {
            boot
        };
        (pid, start_time(pid).unwrap_or(0), boot)
    })
}

/// Field 22 of `/proc/PID/stat`, the process's start in clock ticks after boot. The second
/// field, the command name, is in parentheses and may hold spaces and parentheses itself, so
/// the fields are counted after the last `)`.
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after_name) = stat.rsplit_once(')')?;
    after_name.split_whitespace().nth(22 - 3)?.parse().ok()
}

// ANCHOR: alive
/// Whether the process that wrote `holder` may still run. Without `/proc` (start time 0) there
/// is no telling, and a lock is never taken from a holder that might be alive.
fn alive(holder: &Holder) -> bool {
    let (_, my_start, my_boot) = this_process();
    if *my_start == 0 || holder.start == 0 {
        return true;
    }
    if holder.boot != *my_boot {
        return false; // the machine restarted since: every process of that boot has ended
    }
    start_time(holder.pid) == Some(holder.start)
}
// ANCHOR_END: alive

// ANCHOR: acquire
impl MaildropLock {
    /// Locks the Maildir `dir` for one session: `InUse` when a session of this or another
    /// popstate process holds it, `Temporary` when the lock file cannot be made or written.
    pub fn acquire(dir: &Path) -> Result<MaildropLock, OpenError> {
        let path: Arc<Path> = dir.join(LOCK_FILE).into();
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| temporary(&path, "open", e))?;
        // The `flock` first, then one `fstat`: the length it gives is the line's length, which
        // no other popstate can change while we hold the `flock`.
        flock(&file)?;
        let (id, len) = file_id(&file).map_err(|e| temporary(&path, "read", e))?;
        let session = SESSIONS.fetch_add(1, Ordering::Relaxed);
        // First among this process's sessions; the file then decides among processes.
        if !take(id, session, &path) {
            return Err(OpenError::InUse);
        }
        let (pid, start, boot) = this_process();
        let me = Holder {
            pid: *pid,
            start: *start,
            boot: boot.clone(),
            session,
        };
        // Not through `Drop` on failure: `release` would wait for the `flock` that `file`
        // still holds, and there is no line of ours to blank anyway.
        let line = padded(me.line(), len);
        if let Err(e) = claim(&file, len, &me, &line, &path) {
            let_go(id, session);
            return Err(e);
        }
        // Closing the file drops the `flock`; the line holds the lock from now on.
        Ok(MaildropLock {
            path,
            id,
            session,
            line,
        })
    }
}

/// Under the `flock`: decides whether the line in the file (`len` octets) leaves the maildrop
/// free, and if so writes `line`, the one of `me`, in its place.
fn claim(file: &File, len: u64, me: &Holder, line: &str, path: &Path) -> Result<(), OpenError> {
    // A new lock file is empty: nothing to read.
    if len > 0 {
        let text = read_line(file, len).map_err(|e| temporary(path, "read", e))?;
        match Holder::parse(&text) {
            // Blank: released. Unreadable: a write cut short by a crash.
            None => {}
            // Ours but not in the table: a logout of ours that could not blank the file.
            Some(old) if (old.pid, old.start, &old.boot) == (me.pid, me.start, &me.boot) => {}
            Some(old) if alive(&old) => return Err(OpenError::InUse),
            Some(old) => warn!(
                "taking over {}: its holder, process {}, has ended",
                path.display(),
                old.pid
            ),
        }
        // `line` covers the old text (see `padded`), except in a file too long to be a line.
        if len > line.len() as u64 {
            file.set_len(0).map_err(|e| temporary(path, "write", e))?;
        }
    }
    // At offset 0 whatever was read: no `lseek` first.
    file.write_all_at(line.as_bytes(), 0)
        .map_err(|e| temporary(path, "write", e))
}
// ANCHOR_END: acquire

/// A lock file that cannot be used: the operator's log gets the path, the client the reason.
fn temporary(path: &Path, what: &str, e: io::Error) -> OpenError {
    warn!("cannot {what} {}: {e}", path.display());
    OpenError::Temporary(format!("cannot {what} the maildrop's lock file: {e}"))
}

// ANCHOR: release
impl Drop for MaildropLock {
    /// Blanks the lock file if it still holds this session's line. Runs however the session
    /// ends, a panic included; only a crash of the whole process skips it, and then the line
    /// names a process that has ended.
    fn drop(&mut self) {
        if let Err(why) = self.release() {
            warn!("cannot release the lock {}: {why}", self.path.display());
        }
        // Only after the file: a session of ours that finds the table free finds the file free.
        let_go(self.id, self.session);
    }
}

impl MaildropLock {
    /// Blanks the lock file if it still holds this session's line.
    fn release(&self) -> Result<(), String> {
        let file = File::options()
            .read(true)
            .write(true)
            .open(&self.path)
            .map_err(|e| e.to_string())?;
        flock(&file).map_err(|_| "its flock is held by another program".to_string())?;
        // Only this session ever writes its line (the pid, start and boot name this process,
        // the number this session), so a file that starts with it is this session's lock,
        // whatever follows and whichever inode it is: reading as many octets as the line has
        // decides, with no `fstat` for the length.
        let text = read_line(&file, self.line.len() as u64).map_err(|e| e.to_string())?;
        if text != self.line {
            return Err(format!("it names another holder now: {}", text.trim()));
        }
        // Spaces over the line, not `ftruncate`: cutting the file frees its page of the page
        // cache and the next login's write takes a new one, which cost a short session (20
        // messages) more than 1 % of its CPU (docs/performance.md, round 2).
        let blank = format!("{}\n", " ".repeat(self.line.len().saturating_sub(1)));
        file.write_all_at(blank.as_bytes(), 0)
            .map_err(|e| e.to_string())
    }
}

/// `line` with spaces before its LF up to `len` octets, so that writing it covers all the text
/// a file of `len` octets has: the file is never cut shorter (see `release`).
fn padded(line: String, len: u64) -> String {
    match usize::try_from(len) {
        Ok(len) if len > line.len() && len <= MAX_LINE as usize => {
            format!("{}{}\n", line.trim_end(), " ".repeat(len - line.len()))
        }
        _ => line,
    }
}
// ANCHOR_END: release

/// The table of held lock files; nothing panics while holding it, so a poisoned one is whole.
fn held() -> MutexGuard<'static, BTreeMap<(u64, u64), Held>> {
    HELD.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Enters the lock file `id` at `path` in [`HELD`] for `session`; false when a session of this
/// process holds it. A session keeps no descriptor of its lock file, so the file can be
/// deleted under it (the user's folder removed) and its inode number given to a new file: an
/// entry whose path no longer leads to `id` is such a leftover, and the new file is free.
fn take(id: (u64, u64), session: u64, path: &Arc<Path>) -> bool {
    let mut held = held();
    if let Some(other) = held.get(&id)
        && fs::metadata(&other.path).is_ok_and(|m| (m.dev(), m.ino()) == id)
    {
        return false;
    }
    let path = Arc::clone(path);
    held.insert(id, Held { session, path });
    true
}

/// Removes `session`'s entry for `id` from [`HELD`], and nothing that took its place.
fn let_go(id: (u64, u64), session: u64) {
    let mut held = held();
    if held.get(&id).is_some_and(|h| h.session == session) {
        held.remove(&id);
    }
}

/// Takes the short `flock`, retrying for up to [`FLOCK_WAIT`]: another popstate holds it for
/// a few system calls only.
fn flock(file: &File) -> Result<(), OpenError> {
    let mut waited = Duration::ZERO;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(()),
            Err(TryLockError::WouldBlock) if waited < FLOCK_WAIT => {
                thread::sleep(Duration::from_millis(2));
                waited += Duration::from_millis(2);
            }
            Err(TryLockError::WouldBlock) => return Err(OpenError::InUse),
            Err(TryLockError::Error(e)) => {
                return Err(OpenError::Temporary(format!(
                    "cannot lock the maildrop: {e}"
                )));
            }
        }
    }
}

/// The first `len` octets of the lock file, at most [`MAX_LINE`]: one `read` when the file
/// has them, and none more to find the end (`read_to_string` alone would make one). A holder
/// line is far shorter than `MAX_LINE`; a longer file is no holder's line, and its first
/// octets show that.
fn read_line(file: &File, len: u64) -> io::Result<String> {
    let len = len.min(MAX_LINE);
    let mut text = String::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(len).read_to_string(&mut text)?;
    Ok(text)
}

/// The most of a lock file that is read.
const MAX_LINE: u64 = 256;

/// The file's identity (device and inode) and its length, from one `fstat`.
fn file_id(file: &File) -> io::Result<((u64, u64), u64)> {
    let meta = file.metadata()?;
    Ok(((meta.dev(), meta.ino()), meta.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_line_reads_back_and_anything_else_is_no_holder() {
        let me = Holder {
            pid: 42,
            start: 7,
            boot: "b0-ot".to_string(),
            session: 3,
        };
        assert_eq!(me.line(), "42 7 b0-ot 3\n");
        assert_eq!(Holder::parse(&me.line()), Some(me));
        for cut in [
            "",
            "42",
            "42 7 b0-ot",
            "42 7 b0-ot 3 extra",
            "x 7 b 3",
            "42 7 b -3",
        ] {
            assert_eq!(Holder::parse(cut), None, "{cut:?}");
        }
    }

    #[test]
    fn this_process_is_alive_and_a_reused_pid_or_another_boot_is_not() {
        let (pid, start, boot) = this_process();
        assert!(*start > 0, "/proc gives the start time");
        let holder = |start, boot: &str| Holder {
            pid: *pid,
            start,
            boot: boot.to_string(),
            session: 1,
        };
        assert!(alive(&holder(*start, boot)));
        assert!(!alive(&holder(start + 1, boot)), "same pid, later start");
        assert!(!alive(&holder(*start, "another-boot")));
    }

    #[test]
    fn an_entry_left_by_a_deleted_lock_file_does_not_hold_a_new_file_with_its_inode() {
        let dir = std::env::temp_dir().join(format!("popstate-reuse-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("mkdir");
        fs::write(dir.join(LOCK_FILE), "").expect("write");
        let (id, _) = file_id(&File::open(dir.join(LOCK_FILE)).expect("open")).expect("fstat");
        // As if a session had locked another folder's file with this inode, and the folder
        // had been removed since.
        let gone = Held {
            session: u64::MAX,
            path: dir.join("removed-folder").join(LOCK_FILE).into(),
        };
        held().insert(id, gone);
        let lock = MaildropLock::acquire(&dir).expect("the old entry holds nothing");
        assert!(matches!(MaildropLock::acquire(&dir), Err(OpenError::InUse)));
        // The old session's end leaves the new session's entry alone.
        let_go(id, u64::MAX);
        assert!(matches!(MaildropLock::acquire(&dir), Err(OpenError::InUse)));
        drop(lock);
        MaildropLock::acquire(&dir).expect("free after the new session");
        fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn a_maildrop_held_by_another_process_is_refused_at_once_and_left_as_it_was() {
        let dir = std::env::temp_dir().join(format!("popstate-lock-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("mkdir");
        let (_, _, boot) = this_process();
        // The process that started this test runs as long as the test does.
        let parent = std::os::unix::process::parent_id();
        let start = start_time(parent).expect("/proc gives the start time");
        let line = format!("{parent} {start} {boot} 9\n");
        fs::write(dir.join(LOCK_FILE), &line).expect("write");

        let began = std::time::Instant::now();
        assert!(matches!(MaildropLock::acquire(&dir), Err(OpenError::InUse)));
        // A refusal must not wait for its own `flock` (it once waited FLOCK_WAIT for it).
        assert!(began.elapsed() < FLOCK_WAIT / 2, "{:?}", began.elapsed());
        assert_eq!(fs::read_to_string(dir.join(LOCK_FILE)).expect("read"), line);

        // The refusal left no entry in this process's table: once free, the maildrop locks.
        fs::write(dir.join(LOCK_FILE), "").expect("empty");
        let lock = MaildropLock::acquire(&dir).expect("free now");
        let held = fs::read_to_string(dir.join(LOCK_FILE)).expect("read");
        assert_eq!(held, lock.line);
        assert!(matches!(MaildropLock::acquire(&dir), Err(OpenError::InUse)));
        let len = lock.line.len();
        drop(lock);
        let blank = fs::read_to_string(dir.join(LOCK_FILE)).expect("read");
        assert_eq!(blank.len(), len, "released in place: {blank:?}");
        assert!(blank.trim().is_empty(), "{blank:?}");

        // A shorter line covers all of a longer one, so the file still says who holds it.
        let gone = "a-boot-of-long-ago".repeat(4);
        let long = format!("{} {} {gone} 99999999999\n", std::process::id(), 1);
        fs::write(dir.join(LOCK_FILE), &long).expect("write");
        let lock = MaildropLock::acquire(&dir).expect("its holder has ended");
        let held = fs::read_to_string(dir.join(LOCK_FILE)).expect("read");
        assert_eq!(held.len(), long.len(), "{held:?}");
        assert_eq!(held, lock.line);
        assert_eq!(
            Holder::parse(&held).map(|h| h.pid),
            Some(std::process::id())
        );
        drop(lock);
        fs::write(dir.join(LOCK_FILE), "").expect("empty");

        // A release blanks only its own line: here someone else wrote theirs meanwhile.
        let lock = MaildropLock::acquire(&dir).expect("free again");
        fs::write(dir.join(LOCK_FILE), &line).expect("write");
        drop(lock);
        assert_eq!(fs::read_to_string(dir.join(LOCK_FILE)).expect("read"), line);
        fs::remove_dir_all(&dir).expect("clean up");
    }
}
