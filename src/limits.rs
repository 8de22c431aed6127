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
/// ends (without UPDATE) and its lock is released.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// Each session thread's stack. Sessions recurse nowhere and keep big buffers on the heap; the
/// stack is reserved address space, and only the pages a thread touches cost memory.
pub const SESSION_STACK: usize = 256 * 1024;
