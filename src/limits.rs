//! Every deliberate limit, named once, with its reason (after popa3d's `params.h`).
//!
//! The ones an operator may want to change are flags (see `popstate --help`); the defaults live
//! here. docs/design.md lists them all with the RFC clauses they honour.

use std::time::Duration;

/// Sessions at once. Each session is one OS thread, so this bounds threads, memory and open
/// files. One more connection gets `-ERR [SYS/TEMP]` and is closed at once (RFC 3206 §4).
pub const MAX_SESSIONS: usize = 1000;

/// Sessions at once from one client IP address: enough for a whole classroom behind one NAT
/// address, while one misbehaving host cannot take every slot.
pub const MAX_SESSIONS_PER_IP: usize = 500;

/// Wrong passwords in one session before it is closed: a client that knows the password needs
/// one try, a person typing may need a few, a guesser must reconnect (and wait again).
pub const MAX_AUTH_FAILURES: u32 = 3;

/// Wait after a wrong password before answering, so that guessing is slow (RFC 1939 §13).
pub const AUTH_FAILURE_DELAY: Duration = Duration::from_secs(1);

/// The longest SASL response line, CRLF included (with the `sasl` feature). RFC 5034 §4 sets no
/// limit of its own; this one fits an AUTH PLAIN message of three 255-octet fields, the most that
/// RFC 4616 §2 asks a server to accept, in base64 (4 octets for every 3), and refuses more.
pub const MAX_SASL_RESPONSE: usize = 1026;

/// Autologout (RFC 1939 §3): a session without a command for this long is closed without a reply
/// and without UPDATE. The RFC sets 10 minutes as the least a server may use.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// A write that makes no progress for this long means the client stopped reading: the session
/// ends (without UPDATE) and its lock is released. It bounds one write call: a call that runs
/// out of time after the kernel took in part of it returns that part, which counts as progress,
/// and the kernel finds room for a little more by compacting the stalled client's full receive
/// queue. So a client that stops reading is ended after about three times this (measured on
/// loopback, 1 MiB writes); one that keeps reading, however slowly, is never cut off, and holds
/// its session and its lock for as long as it does.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// Each session thread's stack. Sessions recurse nowhere and keep big buffers on the heap; the
/// stack is reserved address space, and only the pages a thread touches cost memory.
pub const SESSION_STACK: usize = 256 * 1024;

/// The session limit that the open-file limit can carry. A logged-in session holds its socket,
/// and with mbox also the mbox it keeps open under `flock` (a Maildir's lock holds no file; see
/// `src/maildir/lock.rs`); a few more are needed for a moment while it lists or sends a message.
/// A limit the operator asked for that cannot be met is an error; the default is lowered with
/// a warning, so that clients over the limit get a clean `-ERR [SYS/TEMP]` instead of hanging
/// in the accept queue.
pub fn session_limit(asked: Option<usize>, mbox: bool) -> Result<usize, String> {
    let per_session: u64 = if mbox { 2 } else { 1 };
    const RESERVE: u64 = 64;
    let wanted = asked.unwrap_or(MAX_SESSIONS);
    let Some(files) = open_file_limit() else {
        return Ok(wanted);
    };
    let fits = usize::try_from(files.saturating_sub(RESERVE) / per_session).unwrap_or(usize::MAX);
    if wanted <= fits {
        return Ok(wanted);
    }
    let needed = (wanted as u64)
        .saturating_mul(per_session)
        .saturating_add(RESERVE);
    let advice = format!("raise the open-file limit (ulimit -n {needed}) or lower --max-sessions");
    if asked.is_some() {
        return Err(format!(
            "--max-sessions {wanted} needs about {needed} open files, but the limit is {files}: {advice}"
        ));
    }
    if fits == 0 {
        return Err(format!(
            "the open-file limit ({files}) is too low to serve anyone: {advice}"
        ));
    }
    log::warn!("the open-file limit ({files}) allows {fits} sessions, not {wanted}: {advice}");
    Ok(fits)
}

/// The soft limit on open files, from /proc (Linux); `None` where that cannot be read.
pub fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}
