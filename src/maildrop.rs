//! The maildrop as the POP3 states see it (RFC 1939 §4–§6), whatever stores it.
//!
//! The state files use only this interface: a [`Store`] opens and locks one user's maildrop; a
//! [`Maildrop`] lists its messages as they were at login, opens one for reading, and removes the
//! marked ones (only UPDATE calls `remove`). Dropping a `Maildrop` releases its lock. There are
//! two implementations: `maildir.rs` (a file per message) and `mbox.rs` (one file per user).

use std::io::BufRead;

/// What POP3 needs to know about one message at login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageInfo {
    /// Octets RETR will send (RFC 1939 §5: CRLF line ends, no stuffing).
    pub size: u64,
    /// The unique-id (RFC 1939 §7): 1–70 octets in 0x21–0x7E, the same in every session.
    pub uid: String,
    /// When it was delivered, in seconds since 1970 (UTC), for EXPIRE (expire.rs, RFC 2449
    /// §6.7): a Maildir file name's time, an mbox From_ line's date, or else the file's
    /// modification time.
    pub delivered: u64,
}

// ANCHOR: store
/// Where maildrops live.
pub trait Store: Send + Sync {
    /// Takes the exclusive lock on `user`'s maildrop and lists its messages (RFC 1939 §4: the
    /// lock comes first, so the listing cannot change under a second session).
    fn open_maildrop(&self, user: &str) -> Result<Box<dyn Maildrop>, OpenError>;
}

/// One user's locked maildrop. Messages are numbered 1..=n by their place in [`messages`].
///
/// [`messages`]: Maildrop::messages
pub trait Maildrop: Send {
    /// The messages as they were when the maildrop was opened. The list never changes during a
    /// session: mail that arrives later waits for the next session (RFC 1939 §4).
    fn messages(&self) -> &[MessageInfo];

    /// Opens message `index` (0-based) for reading, as it was stored.
    fn open(&self, index: usize) -> Result<Box<dyn BufRead + Send>, String>;

    /// Removes the messages at `marked` (0-based, ascending) for good, and returns the ones
    /// that could not be removed, each with the reason. Only the UPDATE state calls this, once:
    /// all marks come together, so a store that keeps every message in one file (mbox) can
    /// rewrite it once, and a crash leaves the old maildrop or the new one.
    fn remove(&mut self, marked: &[usize]) -> Vec<(usize, String)>;
}
// ANCHOR_END: store

/// Why a maildrop could not be opened, each with the RFC 2449 / RFC 3206 response code it gets.
#[derive(Debug, PartialEq, Eq)]
pub enum OpenError {
    /// `[IN-USE]`: another session holds the lock.
    InUse,
    /// `[SYS/TEMP]`: worth trying again later.
    Temporary(String),
    /// `[SYS/PERM]`: needs an administrator.
    Permanent(String),
}
