//! Maildir storage: `<root>/<user>/{new,cur,tmp}`, one file per message.
//!
//! - A message's unique-id (UIDL, RFC 1939 §7) is its Maildir unique name: the file name up to
//!   the `:` that starts its flags. Delivery agents make that name unique and never reuse it, and
//!   it survives a mail reader moving the file from `new/` to `cur/` or changing its flags.
//! - Messages are numbered by delivery time (the seconds that start a Maildir name, else the
//!   file's modification time), then by name, so the numbering is stable between sessions.
//! - The exclusive lock (RFC 1939 §4) is `popstate.lock` in the user's folder, held with
//!   `File::try_lock`. That is an `flock(2)` lock on Unix: it excludes a second open of the file
//!   in this process as well as in another popstate process, and the kernel drops it when the
//!   file is closed, so a session ending in any way (even a crash) cannot leave it stuck.
//! - Nothing here writes to a message. The only change is `remove`, an `unlink`, which is atomic:
//!   a message is either whole or gone, whenever the server is stopped.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, TryLockError};
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::UNIX_EPOCH;

use crate::maildrop::{Maildrop, MessageInfo, OpenError, Store};
use crate::protocol::message_size;

/// The name of the lock file in each user's Maildir. Maildir readers ignore files outside
/// `new/`, `cur/` and `tmp/`.
pub const LOCK_FILE: &str = "popstate.lock";

/// The maildrops below one root folder, one Maildir per user.
pub struct MaildirStore {
    root: PathBuf,
    /// Message sizes already counted, per user folder (see [`SizeCache`]).
    sizes: Mutex<HashMap<PathBuf, SizeCache>>,
}

impl MaildirStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        MaildirStore {
            root: root.into(),
            sizes: Mutex::default(),
        }
    }
}

// ANCHOR: size_cache
/// Sizes of messages counted at earlier logins, so that a login does not read every message
/// again (RFC 1939 §5 wants exact sizes, and counting them means reading every octet).
///
/// A size is reused only while the file is provably the same: the same device, inode and length,
/// and the same *change time* (ctime). The kernel sets ctime on every write, rename or chmod,
/// and no program can set it back, so a rewritten file never matches an old entry. The cache
/// lives in memory only: a restarted server counts again, and nothing is written to the maildrop.
#[derive(Default)]
struct SizeCache {
    /// File path → (identity when counted, size).
    known: HashMap<PathBuf, (FileStamp, u64)>,
    /// What this scan looked at; replaces `known` afterwards, so removed files drop out.
    seen: HashMap<PathBuf, (FileStamp, u64)>,
}

type FileStamp = (u64, u64, u64, i64, i64);

impl SizeCache {
    /// The size of the message at `path`, from the cache or by counting it. `None`: the file
    /// vanished before it could be read.
    fn size(&mut self, path: &Path, meta: &fs::Metadata) -> io::Result<Option<u64>> {
        let stamp = stamp(meta);
        let size = match self.known.get(path) {
            Some(&(known, size)) if stamp == Some(known) => size,
            _ => {
                let file = match File::open(path) {
                    Ok(file) => file,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(e),
                };
                message_size(&mut BufReader::with_capacity(64 * 1024, file))?
            }
        };
        if let Some(stamp) = stamp {
            self.seen.insert(path.to_path_buf(), (stamp, size));
        }
        Ok(Some(size))
    }

    /// Keeps what this scan saw, forgets the rest.
    fn finish(&mut self) {
        self.known = std::mem::take(&mut self.seen);
    }
}

/// Device, inode, length and change time: what identifies one version of a file.
#[cfg(unix)]
fn stamp(meta: &fs::Metadata) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    Some((
        meta.dev(),
        meta.ino(),
        meta.len(),
        meta.ctime(),
        meta.ctime_nsec(),
    ))
}

/// Without ctime there is no safe way to tell, so nothing is reused.
#[cfg(not(unix))]
fn stamp(_: &fs::Metadata) -> Option<FileStamp> {
    None
}
// ANCHOR_END: size_cache

// ANCHOR: open_maildrop
impl Store for MaildirStore {
    fn open_maildrop(&self, user: &str) -> Result<Box<dyn Maildrop>, OpenError> {
        // `user` has already been checked to be one safe path component (users.rs).
        let dir = self.root.join(user);
        // A user who has never received mail has no Maildir yet. Make the empty one a delivery
        // agent would make, so the login shows an empty maildrop instead of an error.
        for sub in ["new", "cur", "tmp"] {
            fs::create_dir_all(dir.join(sub)).map_err(|e| {
                OpenError::Permanent(format!("cannot create {}: {e}", dir.join(sub).display()))
            })?;
        }
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))
            .map_err(|e| OpenError::Permanent(format!("cannot open the lock file: {e}")))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(OpenError::InUse),
            Err(TryLockError::Error(e)) => {
                return Err(OpenError::Temporary(format!(
                    "cannot lock the maildrop: {e}"
                )));
            }
        }
        // Listing happens under the lock; if it fails, `lock` is dropped on the way out, which
        // releases it before the client sees the -ERR (RFC 1939 §4).
        // This user's cache is taken out for the scan, so other logins are not held up; only one
        // session at a time can be here for one user, because of the lock.
        let mut sizes = self.take_sizes(&dir);
        let scanned = scan(&dir, &mut sizes);
        sizes.finish();
        self.sizes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(dir.clone(), sizes);
        let (messages, files) =
            scanned.map_err(|e| OpenError::Permanent(format!("cannot read the maildrop: {e}")))?;
        Ok(Box::new(MaildirMaildrop {
            dir,
            messages,
            files,
            _lock: lock,
        }))
    }
}
// ANCHOR_END: open_maildrop

impl MaildirStore {
    fn take_sizes(&self, dir: &Path) -> SizeCache {
        // Nothing panics while holding this lock; a poisoned cache is still a correct cache.
        self.sizes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(dir)
            .unwrap_or_default()
    }
}

/// Where one message's file was at login.
struct FileRef {
    /// The path at login; a mail reader may move the file to `cur/` or rename it later.
    path: PathBuf,
    /// The file name up to `:`, to find the file again after such a rename.
    unique: String,
    /// The file's length at login, to notice a file that another program changed.
    stored_len: u64,
}

struct MaildirMaildrop {
    dir: PathBuf,
    /// What POP3 sees, in message-number order.
    messages: Vec<MessageInfo>,
    /// `files[i]` is the file behind `messages[i]`.
    files: Vec<FileRef>,
    /// Held for the life of the session; closing it releases the lock.
    _lock: File,
}

impl MaildirMaildrop {
    fn file(&self, index: usize) -> Result<&FileRef, String> {
        self.files
            .get(index)
            .ok_or_else(|| format!("message index {index} is outside the maildrop"))
    }

    /// The file's current path: where it was at login, or where a mail reader moved it since.
    fn locate(&self, file: &FileRef) -> Option<PathBuf> {
        if file.path.exists() {
            return Some(file.path.clone());
        }
        ["cur", "new"].iter().find_map(|sub| {
            fs::read_dir(self.dir.join(sub))
                .ok()?
                .flatten()
                .find_map(|e| {
                    let name = e.file_name();
                    (unique_name(name.to_str()?) == file.unique).then(|| e.path())
                })
        })
    }
}

// ANCHOR: maildir_maildrop
impl Maildrop for MaildirMaildrop {
    fn messages(&self) -> &[MessageInfo] {
        &self.messages
    }

    fn open(&self, index: usize) -> Result<Box<dyn BufRead + Send>, String> {
        let file_ref = self.file(index)?;
        let path = self
            .locate(file_ref)
            .ok_or("another program removed it from the maildrop")?;
        let file = File::open(&path).map_err(|e| format!("it cannot be opened: {e}"))?;
        let len = file
            .metadata()
            .map_err(|e| format!("it cannot be read: {e}"))?
            .len();
        if len != file_ref.stored_len {
            // Sending it anyway would send another number of octets than LIST promised.
            return Err(format!(
                "another program changed it since login ({} octets then, {len} now)",
                file_ref.stored_len
            ));
        }
        Ok(Box::new(BufReader::with_capacity(64 * 1024, file)))
    }

    fn remove(&mut self, index: usize) -> Result<(), String> {
        let file_ref = self.file(index)?;
        match self.locate(file_ref) {
            // Already gone: another program removed it, which is what was asked.
            None => Ok(()),
            Some(path) => match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    Err(format!("cannot remove {}: {e}", path.display()))
                }
                _ => Ok(()),
            },
        }
    }
}
// ANCHOR_END: maildir_maildrop

// ANCHOR: scan
/// Lists `new/` and `cur/` as they are now, in delivery order, with sizes and unique-ids.
fn scan(dir: &Path, sizes: &mut SizeCache) -> io::Result<(Vec<MessageInfo>, Vec<FileRef>)> {
    let mut found = Vec::new();
    for sub in ["new", "cur"] {
        for entry in fs::read_dir(dir.join(sub))? {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                // Maildir names are ASCII; a name that is not even UTF-8 is not a message.
                continue;
            };
            // Dot files are not messages (Maildir convention).
            if name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            let meta = match fs::metadata(&path) {
                Ok(meta) => meta,
                // Moved or removed between listing and looking: not part of this snapshot.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if !meta.is_file() {
                continue;
            }
            let delivered = delivery_time(&name).unwrap_or_else(|| {
                meta.modified()
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_secs())
            });
            let Some(size) = sizes.size(&path, &meta)? else {
                continue;
            };
            found.push((delivered, name, path, size, meta.len()));
        }
    }
    found.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));

    let mut messages = Vec::with_capacity(found.len());
    let mut files = Vec::with_capacity(found.len());
    let mut seen = HashSet::new();
    for (_, name, path, size, stored_len) in found {
        let unique = unique_name(&name).to_string();
        let mut uid = uid_for(&unique);
        if !seen.insert(uid.clone()) {
            // The same unique name in new/ and cur/ should not happen, but two messages must
            // never share a unique-id: name this one by its path instead.
            uid = hashed_uid(&path.to_string_lossy());
            seen.insert(uid.clone());
        }
        messages.push(MessageInfo { size, uid });
        files.push(FileRef {
            path,
            unique,
            stored_len,
        });
    }
    Ok((messages, files))
}
// ANCHOR_END: scan

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
    let valid =
        (1..=70).contains(&unique.len()) && unique.bytes().all(|b| (0x21..=0x7e).contains(&b));
    if valid {
        unique.to_string()
    } else {
        hashed_uid(unique)
    }
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
    fn delivery_time_comes_from_the_name() {
        assert_eq!(delivery_time("1700000000.M1P2.host"), Some(1_700_000_000));
        assert_eq!(delivery_time("message"), None);
    }
}
