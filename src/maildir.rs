//! Maildir storage: `<root>/<user>/{new,cur,tmp}`, one file per message.
//!
//! - A message's unique-id (UIDL, RFC 1939 §7) is its Maildir unique name: the file name up to
//!   the `:` that starts its flags. Delivery agents make that name unique and never reuse it, and
//!   it survives a mail reader moving the file from `new/` to `cur/` or changing its flags.
//! - Messages are numbered by delivery time (the seconds that start a Maildir name, else the
//!   file's modification time), then by name, so the numbering is stable between sessions.
//! - The exclusive lock (RFC 1939 §4) is `popstate.lock` in the user's folder, which names the
//!   process and session holding it (see [`lock`]). It is changed only under a short `flock`,
//!   so two popstate processes exclude each other, yet a session keeps no descriptor open for
//!   it: a logged-in session costs one open file, its socket. A line left by a crashed server
//!   names a process that no longer runs, and the next login takes the lock over.
//! - Nothing here writes to a message. The only change is `remove`, an `unlink`, which is atomic:
//!   a message is either whole or gone, whenever the server is stopped.

use std::collections::HashMap;
use std::fs::{self, DirEntry, File};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use log::warn;

use crate::maildrop::{Maildrop, MessageInfo, OpenError, Store};
use crate::protocol::message_size;

mod lock;

pub use lock::LOCK_FILE;
use lock::MaildropLock;

/// The maildrops below one root folder, one Maildir per user.
pub struct MaildirStore {
    root: PathBuf,
    sizes: Arc<SizeCache>,
    listings: Arc<Listings>,
}

impl MaildirStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        MaildirStore {
            root: root.into(),
            sizes: Arc::default(),
            listings: Arc::default(),
        }
    }
}

/// A maildrop as one login listed it: messages in order, and the files behind them.
struct Listing {
    messages: Vec<MessageInfo>,
    files: Vec<FileRef>,
}

// ANCHOR: listings
/// The last listing of each maildrop, reused while its `new/` and `cur/` folders are unchanged.
///
/// Listing a maildrop means looking at every file (a `stat` each); for 100,000 messages that is
/// most of a login. But every delivery, removal or rename in a folder changes the folder's own
/// modification and change times, so while both folders carry the times they had at the last
/// listing, the same files are there under the same names, and the listing can be reused
/// without looking at a single file (Dovecot decides the same way).
///
/// Two things could still fool it, and both are handled:
/// - File system times are coarse (a few milliseconds), so a folder changed twice within one
///   tick looks unchanged. A listing is only kept when both folders were last changed more than
///   [`SETTLED`] before it was made.
/// - A message rewritten in place (which Maildir forbids, but a person can do) changes the file,
///   not the folder. LIST may then show the size it had; RETR checks the file against what it
///   was when counted and refuses to send octets that LIST did not promise (see `open`), and
///   that refusal drops the listing, so the next login counts again.
#[derive(Default)]
struct Listings {
    known: Mutex<HashMap<PathBuf, (FolderTimes, Arc<Listing>)>>,
}

/// The identity and times of `new/` and `cur/`, as `stat` gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct FolderTimes {
    new: FolderTime,
    cur: FolderTime,
}

/// One folder's device and inode (the same folder, not a new one in its place) and its last
/// modification and change times, to the nanosecond.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct FolderTime {
    dev: u64,
    ino: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

/// How long a folder must have been left alone before a listing of it is kept.
const SETTLED: Duration = Duration::from_secs(2);

impl Listings {
    fn get(&self, dir: &Path, times: &FolderTimes) -> Option<Arc<Listing>> {
        // Nothing panics while holding this lock; a poisoned map is still a correct map.
        let known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        match known.get(dir) {
            Some((kept, listing)) if kept == times => Some(Arc::clone(listing)),
            _ => None,
        }
    }

    fn keep(&self, dir: &Path, times: FolderTimes, listing: &Arc<Listing>) {
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        if known.len() >= MAX_LISTINGS {
            known.clear();
        }
        known.insert(dir.to_path_buf(), (times, Arc::clone(listing)));
    }

    fn forget(&self, dir: &Path) {
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        known.remove(dir);
    }
}

/// Past this many maildrops the kept listings start again, so memory stays bounded.
const MAX_LISTINGS: usize = 100_000;

/// The times of `dir/new` and `dir/cur`, and whether both were last changed long enough ago
/// (see [`SETTLED`]) for a listing made now to be kept. `None` without ctime (not Unix).
#[cfg(unix)]
fn folder_times(dir: &Path) -> io::Result<Option<(FolderTimes, bool)>> {
    use std::os::unix::fs::MetadataExt;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let settled_before = now.saturating_sub(SETTLED).as_nanos() as i128;
    let nanos = |secs: i64, nsec: i64| i128::from(secs) * 1_000_000_000 + i128::from(nsec);
    let mut times = FolderTimes::default();
    let mut settled = true;
    for (slot, sub) in [(&mut times.new, "new"), (&mut times.cur, "cur")] {
        let meta = fs::metadata(dir.join(sub))?;
        *slot = FolderTime {
            dev: meta.dev(),
            ino: meta.ino(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        };
        settled &= nanos(meta.mtime(), meta.mtime_nsec()) < settled_before
            && nanos(meta.ctime(), meta.ctime_nsec()) < settled_before;
    }
    Ok(Some((times, settled)))
}

#[cfg(not(unix))]
fn folder_times(_: &Path) -> io::Result<Option<(FolderTimes, bool)>> {
    Ok(None)
}
// ANCHOR_END: listings

// ANCHOR: open_maildrop
impl Store for MaildirStore {
    fn open_maildrop(&self, user: &str) -> Result<Box<dyn Maildrop>, OpenError> {
        // `user` has already been checked to be one safe path component (users.rs).
        let dir = self.root.join(user);
        // A user who has never received mail has no Maildir yet. Make the empty one a delivery
        // agent would make, so the login shows an empty maildrop instead of an error.
        for sub in ["new", "cur", "tmp"] {
            let path = dir.join(sub);
            if !path.is_dir() {
                fs::create_dir_all(&path).map_err(|e| {
                    // The path is for the operator's log; the client learns only what failed.
                    warn!("cannot create {}: {e}", path.display());
                    OpenError::Permanent(format!("cannot create the maildrop's folders: {e}"))
                })?;
            }
        }
        let lock = MaildropLock::acquire(&dir)?;
        // Listing happens under the lock; if it fails, `lock` is dropped on the way out, which
        // releases it before the client sees the -ERR (RFC 1939 §4).
        let listing = self.list(&dir).map_err(|e| {
            warn!("cannot list {}: {e}", dir.display());
            let why = format!("cannot read the maildrop: {e}");
            // RFC 3206 §4: SYS/PERM tells the client not to retry, so it is only for what an
            // administrator must fix; running out of files or an I/O hiccup may pass.
            match e.kind() {
                io::ErrorKind::NotFound
                | io::ErrorKind::PermissionDenied
                | io::ErrorKind::NotADirectory
                | io::ErrorKind::InvalidData => OpenError::Permanent(why),
                _ => OpenError::Temporary(why),
            }
        })?;
        Ok(Box::new(MaildirMaildrop {
            dir,
            listing,
            listings: Arc::clone(&self.listings),
            sizes: Arc::clone(&self.sizes),
            _lock: lock,
        }))
    }
}
// ANCHOR_END: open_maildrop

impl MaildirStore {
    /// The maildrop's listing: the one kept from an earlier login if the folders are unchanged,
    /// else a new scan (kept for next time if the folders have settled).
    fn list(&self, dir: &Path) -> io::Result<Arc<Listing>> {
        let times = folder_times(dir)?;
        if let Some((times, _)) = &times
            && let Some(listing) = self.listings.get(dir, times)
        {
            return Ok(listing);
        }
        let (messages, files) = scan(dir, &self.sizes)?;
        let listing = Arc::new(Listing { messages, files });
        if let Some((times, true)) = times {
            self.listings.keep(dir, times, &listing);
        }
        Ok(listing)
    }
}

/// Where one message's file was when it was listed: `dir/sub/name`.
/// (Kept small: every session holds one per message; 88 octets, and usually nothing more.)
struct FileRef {
    /// In `new/`, else in `cur/`.
    in_new: bool,
    /// The file name, when it is not the message's unique-id followed by `flags` (see
    /// [`FileRef::name`]); else empty, which allocates nothing. Nearly every name is its
    /// unique-id and a few flags, and a session keeps one per message: storing only the flags
    /// saves a copy of the unique-id (about 50 octets) per message. A mail reader may rename
    /// the file (flags) or move it to `cur/` later.
    name: Box<str>,
    /// When `name` is empty: the Maildir info part after the unique-id, `NO_INFO` for none
    /// (a file in `new/`), else `HAS_INFO` and one bit per flag letter in `:2,FLAGS`.
    flags: u32,
    /// The file as it was when its size was counted, to notice a file changed since.
    stamp: Option<FileStamp>,
    /// When the file was created: kept by a rename, new for a new file even if the file system
    /// reuses the inode number.
    born: Option<SystemTime>,
    /// The size was read from the file's name (`,W=`), not counted: RETR counts before it sends.
    size_from_name: bool,
}

struct MaildirMaildrop {
    dir: PathBuf,
    /// What POP3 sees, and the files behind it; possibly shared with earlier sessions.
    listing: Arc<Listing>,
    /// To drop the kept listing when a file turns out to have changed in place.
    listings: Arc<Listings>,
    /// Sizes counted so far, to check a size that came from a file name only once.
    sizes: Arc<SizeCache>,
    /// Held for the life of the session; dropping it releases the lock.
    _lock: MaildropLock,
}

/// `FileRef::flags` for a name that is its unique-id alone.
const NO_INFO: u32 = 0;
/// `FileRef::flags` bit for a name that is its unique-id, `:2,` and the flag letters.
const HAS_INFO: u32 = 1 << 31;

impl FileRef {
    /// Where `name`, listed under the unique-id `uid`, keeps it: as `flags` alone (and an
    /// empty name) when `uid` and the flags give back exactly `name`. Anything else (a hashed
    /// unique-id, flags out of order or in lowercase, an experimental `:1,` info part) keeps
    /// the whole name, so the file is always looked for under the name it had.
    fn compact(name: String, uid: &str) -> (Box<str>, u32) {
        match name.strip_prefix(uid).and_then(info_flags) {
            Some(flags) => ("".into(), flags),
            None => (name.into_boxed_str(), NO_INFO),
        }
    }

    /// The file name, given the unique-id it was listed under (`Listing::messages`).
    fn name<'a>(&'a self, uid: &'a str) -> (&'a str, String) {
        if self.name.is_empty() {
            (uid, info_part(self.flags))
        } else {
            (&self.name, String::new())
        }
    }

    /// `dir/new/name` or `dir/cur/name`, in one allocation: `dir.join(sub).join(name)` makes
    /// two paths and grows each, five allocations for every RETR.
    fn path(&self, dir: &Path, uid: &str) -> PathBuf {
        let sub = if self.in_new { "new" } else { "cur" };
        let (name, info) = self.name(uid);
        let mut path =
            PathBuf::with_capacity(dir.as_os_str().len() + sub.len() + name.len() + info.len() + 2);
        path.push(dir);
        path.push(sub);
        path.push(name);
        path.as_mut_os_string().push(info);
        path
    }
}

/// The flags that stand for `info`, the part of a file name after its unique-id, if they give
/// it back exactly: empty, or `:2,` and distinct upper-case flag letters in ASCII order.
fn info_flags(info: &str) -> Option<u32> {
    let flags = match info.strip_prefix(":2,") {
        _ if info.is_empty() => Some(NO_INFO),
        Some(letters) => letters.bytes().try_fold(HAS_INFO, |bits, b| {
            b.is_ascii_uppercase().then(|| bits | (1 << (b - b'A')))
        }),
        None => None,
    }?;
    (info_part(flags) == info).then_some(flags)
}

/// The info part that `flags` stands for: empty, or `:2,` and the flag letters in ASCII order
/// (the order the Maildir specification asks for).
fn info_part(flags: u32) -> String {
    if flags & HAS_INFO == 0 {
        return String::new();
    }
    let letters = (b'A'..=b'Z').filter(|b| flags & (1 << (b - b'A')) != 0);
    ":2,".chars().chain(letters.map(char::from)).collect()
}

impl MaildirMaildrop {
    /// Message `index`'s file and unique-id (which `FileRef::path` needs).
    fn file(&self, index: usize) -> Result<(&FileRef, &str), String> {
        let listing = &*self.listing;
        match (listing.files.get(index), listing.messages.get(index)) {
            (Some(file), Some(message)) => Ok((file, &message.uid)),
            _ => Err(format!("message index {index} is outside the maildrop")),
        }
    }

    /// Where a file went that is no longer where it was at login: a mail reader may have moved
    /// it to `cur/` or changed its flags. A rename keeps the unique name before `:`, the inode and
    /// the creation time; all must match, so another file that shares the name is never taken
    /// for it, even on an inode number freed and reused (UPDATE must remove exactly the marked
    /// messages). Without a creation time to compare, a moved file is not looked for.
    fn find_moved(&self, file: &FileRef, uid: &str) -> Option<PathBuf> {
        let unique = unique_name(file.name(uid).0);
        let FileStamp { dev, ino, .. } = file.stamp?;
        let born = file.born?;
        ["cur", "new"].iter().find_map(|sub| {
            fs::read_dir(self.dir.join(sub))
                .ok()?
                .flatten()
                .find_map(|e| {
                    let name = e.file_name();
                    if unique_name(name.to_str()?) != unique {
                        return None;
                    }
                    let meta = e.metadata().ok()?;
                    let now = stamp(&meta)?;
                    let same = now.dev == dev && now.ino == ino && meta.created().ok()? == born;
                    same.then(|| e.path())
                })
        })
    }
}

// ANCHOR: maildir_maildrop
impl Maildrop for MaildirMaildrop {
    fn messages(&self) -> &[MessageInfo] {
        &self.listing.messages
    }

    fn open(&self, index: usize) -> Result<Box<dyn BufRead + Send>, String> {
        let (file_ref, uid) = self.file(index)?;
        // Open first and ask questions later: the common case costs one path lookup.
        let file = match File::open(file_ref.path(&self.dir, uid)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let moved = self
                    .find_moved(file_ref, uid)
                    .ok_or("another program removed it from the maildrop")?;
                File::open(moved)
            }
            opened => opened,
        }
        .map_err(|e| format!("it cannot be opened: {e}"))?;
        let meta = file
            .metadata()
            .map_err(|e| format!("it cannot be read: {e}"))?;
        let len = meta.len();
        let buffer = usize::try_from(len)
            .unwrap_or(usize::MAX)
            .clamp(4096, 256 * 1024);
        let promised = self.listing.messages[index].size;
        let now_stamp = stamp(&meta);
        let changed = now_stamp.is_none() || now_stamp != file_ref.stamp;
        // A size taken from the file's name is the name's promise, not a count: it is checked
        // once, and the count kept, before any octet of it is sent.
        let unchecked = file_ref.size_from_name && !self.sizes.confirms(now_stamp, promised);
        if changed || unchecked {
            // Renamed (a mail reader set a flag), changed, or never counted. Count it now:
            // sending octets that LIST did not promise would put the client out of step
            // (RFC 1939 §5).
            let now = message_size(&mut BufReader::with_capacity(buffer, (&file).take(len)))
                .map_err(|e| format!("it cannot be read: {e}"))?;
            if let Some(now_stamp) = now_stamp {
                self.sizes.keep(now_stamp, now);
            }
            if now != promised {
                self.listings.forget(&self.dir);
                return Err(format!(
                    "another program changed it ({promised} octets when listed, {now} now)"
                ));
            }
            (&file)
                .seek(SeekFrom::Start(0))
                .map_err(|e| format!("it cannot be read: {e}"))?;
        }
        // Reading stops at the length `fstat` gave, without one more read to find the end.
        Ok(Box::new(BufReader::with_capacity(buffer, file.take(len))))
    }

    fn remove(&mut self, marked: &[usize]) -> Vec<(usize, String)> {
        // One `unlink` each: every message is whole or gone, whatever happens between them.
        marked
            .iter()
            .filter_map(|&index| self.remove_one(index).err().map(|why| (index, why)))
            .collect()
    }
}

impl MaildirMaildrop {
    fn remove_one(&self, index: usize) -> Result<(), String> {
        let (file_ref, uid) = self.file(index)?;
        let path = file_ref.path(&self.dir, uid);
        let path = match fs::remove_file(&path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                warn!("cannot remove {}: {e}", path.display());
                return Err(e.to_string());
            }
            // Moved since login, or already gone (another program removed it: what was asked).
            Err(_) => match self.find_moved(file_ref, uid) {
                Some(moved) => moved,
                None => return Ok(()),
            },
        };
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                warn!("cannot remove {}: {e}", path.display());
                Err(e.to_string())
            }
            _ => Ok(()),
        }
    }
}
// ANCHOR_END: maildir_maildrop

/// One message file as `scan` finds it.
struct Found {
    delivered: u64,
    sub: &'static str,
    name: String,
    stamp: Option<FileStamp>,
    born: Option<SystemTime>,
    /// Known from the cache, or counted; `None` until then, and for a file that vanished.
    size: Option<u64>,
    /// The size was counted in this scan (the cache did not know it).
    counted: bool,
    /// The size came from the file's name.
    from_name: bool,
}

// ANCHOR: scan
/// Lists `new/` and `cur/` as they are now, in delivery order, with sizes and unique-ids.
///
/// Looking at a file costs one `stat`, made relative to its folder (no path walk). A size comes
/// from the cache for a file counted before, else from the file's name when a delivery agent
/// wrote it there (see [`size_in_name`]); only the other files are read.
fn scan(dir: &Path, sizes: &SizeCache) -> io::Result<(Vec<MessageInfo>, Vec<FileRef>)> {
    let mut found = Vec::new();
    for sub in ["new", "cur"] {
        for entry in fs::read_dir(dir.join(sub))? {
            if let Some(file) = look_at(entry?, sub)? {
                found.push(file);
            }
        }
    }
    sizes.recall(&mut found);
    for file in found.iter_mut().filter(|f| f.size.is_none()) {
        let len = file.stamp.map(|s| s.len);
        file.size = len.and_then(|len| size_in_name(&file.name, len));
        file.from_name = file.size.is_some();
    }
    count_sizes(dir, &mut found)?;
    sizes.remember(&found);
    found.retain(|f| f.size.is_some());
    found.sort_unstable_by(|a, b| (a.delivered, &a.name).cmp(&(b.delivered, &b.name)));

    // Not `collect()`: that would reuse `found`'s allocation, sized for the larger `Found`s
    // and their spare capacity, for as long as the listing is kept.
    let mut messages = Vec::with_capacity(found.len());
    let mut files = Vec::with_capacity(found.len());
    for f in found {
        let unique = unique_name(&f.name);
        let (uid, name, flags) = match info_flags(&f.name[unique.len()..]) {
            // The usual name: a valid unique-id and standard flags. The name's own allocation
            // becomes the unique-id and the file keeps only the flags: no second copy, and no
            // name allocated at login only to be freed (a small freed chunk stays in the session
            // thread's malloc cache for as long as the session idles).
            Some(flags) if valid_uid(unique) => {
                let len = unique.len();
                let mut uid = f.name;
                uid.truncate(len);
                (uid, Box::default(), flags)
            }
            _ => {
                let uid = uid_for(unique);
                let (name, flags) = FileRef::compact(f.name, &uid);
                (uid, name, flags)
            }
        };
        messages.push(MessageInfo {
            size: f.size.unwrap_or(0),
            uid,
            delivered: f.delivered,
        });
        files.push(FileRef {
            in_new: f.sub == "new",
            name,
            flags,
            stamp: f.stamp,
            born: f.born,
            size_from_name: f.from_name,
        });
    }
    // The same unique name twice (in new/ and cur/, or with two sets of flags) should not
    // happen, but two messages must never share a unique-id: the later one is named by its
    // folder and file name instead, and so keeps its whole name.
    for i in later_duplicates(&messages) {
        let file = &mut files[i];
        let (head, info) = file.name(&messages[i].uid);
        let name = format!("{head}{info}");
        let sub = if file.in_new { "new" } else { "cur" };
        messages[i].uid = hashed_uid(&format!("{sub}/{name}"));
        file.name = name.into_boxed_str();
        file.flags = NO_INFO;
    }
    Ok((messages, files))
}
// ANCHOR_END: scan

/// The messages whose unique-id an earlier message (in listing order) already has. Sorting
/// positions by unique-id puts equal ids side by side; this needs one small array where a hash
/// set would need a table, and an idle session keeps what its thread freed at login (malloc's
/// per-thread cache), so login leaves as little behind as it can.
fn later_duplicates(messages: &[MessageInfo]) -> Vec<usize> {
    let mut by_uid: Vec<usize> = (0..messages.len()).collect();
    by_uid.sort_unstable_by(|&a, &b| messages[a].uid.cmp(&messages[b].uid).then(a.cmp(&b)));
    by_uid
        .windows(2)
        .filter(|pair| messages[pair[0]].uid == messages[pair[1]].uid)
        .map(|pair| pair[1])
        .collect()
}

// ANCHOR: size_in_name
/// The wire size a delivery agent wrote into a Maildir name: `,W=` (Dovecot's "virtual size",
/// the message with CRLF line ends), trusted only if a `,S=` beside it still gives the file's
/// length. For example `1700000000.M1P2.host,S=2013,W=2061:2,S`.
///
/// A name is only a promise (a file without a final line end gets two octets more from
/// popstate than Dovecot counts), so RETR counts such a message before sending it; on a
/// mismatch the count is kept and the next login lists the true size.
fn size_in_name(name: &str, len: u64) -> Option<u64> {
    let mut physical = None;
    let mut wire = None;
    for field in unique_name(name).split(',').skip(1) {
        if let Some(n) = field.strip_prefix("S=") {
            physical = Some(n.parse::<u64>().ok()?);
        } else if let Some(n) = field.strip_prefix("W=") {
            wire = Some(n.parse::<u64>().ok()?);
        }
    }
    match physical {
        Some(physical) if physical != len => None,
        _ => wire,
    }
}
// ANCHOR_END: size_in_name

/// Counts the sizes still unknown, reading each file whole. With many files (the first login
/// after a start, on a big maildrop) the work is shared among a few threads: the reads are
/// independent, and the session waits for all of them anyway.
fn count_sizes(dir: &Path, found: &mut [Found]) -> io::Result<()> {
    const PER_THREAD: usize = 256;
    let mut todo: Vec<&mut Found> = found.iter_mut().filter(|f| f.size.is_none()).collect();
    // Asking for the cores costs a dozen system calls and some heap (std reads the cgroup
    // files), and an idle session keeps what its thread's allocator cached: ask only when
    // there is enough to share.
    if todo.len() <= PER_THREAD {
        return todo.iter_mut().try_for_each(|file| count_one(dir, file));
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(COUNTING_THREADS)
        .min(todo.len().div_ceil(PER_THREAD))
        .max(1);
    let chunk = todo.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = todo
            .chunks_mut(chunk)
            .map(|files| scope.spawn(move || files.iter_mut().try_for_each(|f| count_one(dir, f))))
            .collect();
        workers.into_iter().try_for_each(|worker| {
            worker
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("a size-counting thread panicked")))
        })
    })
}

/// Threads at most for counting one maildrop's sizes.
const COUNTING_THREADS: usize = 4;

fn count_one(dir: &Path, file: &mut Found) -> io::Result<()> {
    file.counted = true;
    file.size = match File::open(dir.join(file.sub).join(&file.name)) {
        Ok(opened) => Some(message_size(&mut BufReader::with_capacity(
            16 * 1024,
            opened,
        ))?),
        // Moved or removed since it was listed: not part of this snapshot.
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    Ok(())
}

/// What a folder entry is: a message, or `None` for anything else (dot files, folders, names
/// that are not UTF-8, a file removed while we looked).
fn look_at(entry: DirEntry, sub: &'static str) -> io::Result<Option<Found>> {
    let Ok(name) = entry.file_name().into_string() else {
        return Ok(None);
    };
    if name.starts_with('.') {
        return Ok(None);
    }
    // `DirEntry::metadata` does not follow a symbolic link; a linked message is looked up
    // through its link.
    let meta = match entry.metadata().and_then(|m| {
        if m.is_symlink() {
            fs::metadata(entry.path())
        } else {
            Ok(m)
        }
    }) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if !meta.is_file() {
        return Ok(None);
    }
    let delivered = delivery_time(&name).unwrap_or_else(|| {
        meta.modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs())
    });
    Ok(Some(Found {
        delivered,
        sub,
        name,
        stamp: stamp(&meta),
        born: meta.created().ok(),
        size: None,
        counted: false,
        from_name: false,
    }))
}

// ANCHOR: size_cache
/// Sizes of messages counted before, so that a login does not read every message again
/// (RFC 1939 §5 wants exact sizes, and counting them means reading every octet).
///
/// A size is reused only while the file is provably the same: the same device and inode, the
/// same length and the same *change time* (ctime). The kernel sets ctime on every write, rename
/// or chmod, and no program can set it back, so a rewritten file never matches an old entry.
/// Keyed by inode, one count serves every hard link to a message. The cache lives in memory
/// only: a restarted server counts again, and nothing is written to the maildrop.
#[derive(Default)]
struct SizeCache {
    known: Mutex<HashMap<FileStamp, u64>>,
}

/// Device, inode, length and change time: what identifies one version of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    /// Seconds and nanoseconds.
    ctime: (i64, i64),
}

/// Past this many entries the cache starts again, so files removed long ago cannot make it grow
/// for ever (about 60 MB at most).
const MAX_CACHED: usize = 1_000_000;

impl SizeCache {
    /// Fills in the sizes the cache knows.
    fn recall(&self, found: &mut [Found]) {
        // Nothing panics while holding this lock; a poisoned cache is still a correct cache.
        let known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        for file in found.iter_mut() {
            file.size = file.stamp.and_then(|stamp| known.get(&stamp).copied());
        }
    }

    /// True when `size` is what was counted for this version of a file.
    fn confirms(&self, stamp: Option<FileStamp>, size: u64) -> bool {
        let known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        stamp.is_some_and(|stamp| known.get(&stamp) == Some(&size))
    }

    /// Keeps one size counted outside a scan (by RETR).
    fn keep(&self, stamp: FileStamp, size: u64) {
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        if known.len() >= MAX_CACHED {
            known.clear();
        }
        known.insert(stamp, size);
    }

    /// Keeps the sizes just counted.
    fn remember(&self, found: &[Found]) {
        let counted: Vec<&Found> = found.iter().filter(|f| f.counted).collect();
        if counted.is_empty() {
            return;
        }
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        if known.len() + counted.len() > MAX_CACHED {
            known.clear();
        }
        for file in counted {
            if let (Some(stamp), Some(size)) = (file.stamp, file.size) {
                known.insert(stamp, size);
            }
        }
    }
}

#[cfg(unix)]
fn stamp(meta: &fs::Metadata) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    Some(FileStamp {
        dev: meta.dev(),
        ino: meta.ino(),
        len: meta.len(),
        ctime: (meta.ctime(), meta.ctime_nsec()),
    })
}

/// Without ctime there is no safe way to tell, so nothing is reused.
#[cfg(not(unix))]
fn stamp(_: &fs::Metadata) -> Option<FileStamp> {
    None
}
// ANCHOR_END: size_cache

/// The Maildir unique name: the file name without the `:2,FLAGS` info part.
fn unique_name(file_name: &str) -> &str {
    file_name.split(':').next().unwrap_or(file_name)
}

/// The seconds that start a standard Maildir name (`1700000000.M12P34.host`).
fn delivery_time(name: &str) -> Option<u64> {
    name.split('.').next()?.parse().ok()
}

// ANCHOR: uid
/// RFC 1939 §7: a unique-id is 1 to 70 characters in 0x21 to 0x7E. Most Maildir unique names
/// already are; a name that is not (too long, spaces, non-ASCII) gets a hash of itself instead,
/// which is just as stable.
fn uid_for(unique: &str) -> String {
    if valid_uid(unique) {
        unique.to_string()
    } else {
        hashed_uid(unique)
    }
}

fn valid_uid(unique: &str) -> bool {
    (1..=70).contains(&unique.len()) && unique.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// `h` and 32 hex digits: two 64-bit FNV-1a hashes with different starting points. Not for
/// security; only to turn any name into a stable, well-formed id.
fn hashed_uid(text: &str) -> String {
    let fnv = |seed: u64| {
        text.bytes().fold(seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    };
    format!(
        "h{:016x}{:016x}",
        fnv(0xcbf2_9ce4_8422_2325),
        fnv(0x6c62_272e_07bb_0142)
    )
}
// ANCHOR_END: uid

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b26_unique_name_drops_the_flags() {
        assert_eq!(
            unique_name("1700000000.M1P2.host:2,S"),
            "1700000000.M1P2.host"
        );
        assert_eq!(unique_name("plain"), "plain");
    }

    #[test]
    fn b26_uids_are_1_to_70_printable_octets() {
        assert_eq!(
            uid_for("1700000000.M1P2.host,S=120"),
            "1700000000.M1P2.host,S=120"
        );
        for odd in ["", "with space", &"x".repeat(71), "caf\u{e9}"] {
            let uid = uid_for(odd);
            assert!((1..=70).contains(&uid.len()), "{uid}");
            assert!(uid.bytes().all(|b| (0x21..=0x7e).contains(&b)), "{uid}");
            assert_eq!(uid, uid_for(odd), "stable");
        }
        assert_ne!(uid_for("a b"), uid_for("a c"));
    }

    #[test]
    fn b26_of_equal_unique_ids_all_but_the_first_are_renamed() {
        let info = |uid: &str| MessageInfo {
            size: 1,
            uid: uid.into(),
            delivered: 0,
        };
        let messages = ["b", "a", "b", "c", "a", "b"].map(info);
        let mut later = later_duplicates(&messages);
        later.sort();
        assert_eq!(later, [2, 4, 5]);
        assert!(later_duplicates(&[info("x"), info("y")]).is_empty());
        assert!(later_duplicates(&[]).is_empty());
    }

    #[test]
    fn b26_a_compacted_file_name_gives_back_the_name() {
        let uid = "1700000000.M1P2.host,S=12";
        for name in [
            uid,
            "1700000000.M1P2.host,S=12:2,",
            "1700000000.M1P2.host,S=12:2,S",
            "1700000000.M1P2.host,S=12:2,FRS",
            "1700000000.M1P2.host,S=12:2,SR",
            "1700000000.M1P2.host,S=12:2,SS",
            "1700000000.M1P2.host,S=12:2,Sa",
            "1700000000.M1P2.host,S=12:1,x",
            "1700000000.M1P2.host,S=12x",
            "h0123456789abcdef0123456789abcdef",
        ] {
            let (kept, flags) = FileRef::compact(name.to_string(), uid);
            let file = FileRef {
                in_new: false,
                name: kept,
                flags,
                stamp: None,
                born: None,
                size_from_name: false,
            };
            let (head, info) = file.name(uid);
            assert_eq!(format!("{head}{info}"), name);
            let path = file.path(Path::new("/m/u"), uid);
            assert_eq!(path, Path::new("/m/u/cur").join(name));
        }
        let (kept, _) = FileRef::compact(format!("{uid}:2,RS"), uid);
        assert!(kept.is_empty(), "the usual name keeps nothing on the heap");
    }

    #[test]
    fn sizes_in_names_are_read_only_when_the_length_agrees() {
        let name = "1700000000.M1P2.host,S=2013,W=2061:2,S";
        assert_eq!(size_in_name(name, 2013), Some(2061));
        assert_eq!(
            size_in_name(name, 2014),
            None,
            "S= no longer the file's length"
        );
        assert_eq!(size_in_name("1700000000.M1P2.host,W=10", 7), Some(10));
        assert_eq!(size_in_name("1700000000.M1P2.host,S=7", 7), None, "no W=");
        assert_eq!(size_in_name("1700000000.M1P2.host,W=x", 7), None);
        assert_eq!(
            size_in_name("1700000000.M1P2.host:2,W=10", 7),
            None,
            "flags, not name"
        );
    }

    #[test]
    fn delivery_time_comes_from_the_name() {
        assert_eq!(delivery_time("1700000000.M1P2.host"), Some(1_700_000_000));
        assert_eq!(delivery_time("message"), None);
    }
}
