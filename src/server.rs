//! Listening, and one OS thread per client (RFC 1939 §3: "the server host starts the POP3
//! service by listening on TCP port 110").
//!
//! The accept loop takes a connection, checks the session limits, and starts a named thread
//! that runs `session::run` on it. Threads share only read-only things (the users, the store,
//! the settings) and the session counts, so a session can fail or panic without touching any
//! other.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use log::{info, warn};

use crate::authorization::LoginPolicy;
use crate::limits;
use crate::maildrop::Store;
use crate::session::{self, Context};
use crate::users::Users;

/// Settings an operator may change (each one is a command-line flag in main.rs; the defaults
/// and their reasons are in limits.rs).
#[derive(Debug, Clone)]
pub struct Config {
    /// Autologout: a session with no command for this long is closed (RFC 1939 §3: at least
    /// 10 minutes if there is one at all; tests set it shorter).
    pub idle_timeout: Duration,
    /// A write that makes no progress for this long ends the session.
    pub write_timeout: Duration,
    /// Sessions at once; a connection over the limit gets `-ERR [SYS/TEMP]` and is closed.
    /// Each session is a thread, so this bounds the threads as well.
    pub max_sessions: usize,
    /// Sessions at once from one IP address.
    pub max_sessions_per_ip: usize,
    /// What a wrong password costs.
    pub login: LoginPolicy,
    /// Print every session's dialogue on standard output (`--trace`, classroom.rs).
    pub classroom: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            idle_timeout: limits::IDLE_TIMEOUT,
            write_timeout: limits::WRITE_TIMEOUT,
            max_sessions: limits::MAX_SESSIONS,
            max_sessions_per_ip: limits::MAX_SESSIONS_PER_IP,
            login: LoginPolicy {
                failure_delay: limits::AUTH_FAILURE_DELAY,
                max_failures: limits::MAX_AUTH_FAILURES,
                require_tls: false,
            },
            classroom: false,
        }
    }
}

/// What every session thread shares.
struct Shared {
    users: Users,
    store: Box<dyn Store>,
    config: Config,
    /// Sessions running now: in all, and per client address.
    sessions: Mutex<Sessions>,
    next_id: AtomicU64,
}

#[derive(Default)]
struct Sessions {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// A bound POP3 server.
pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
}

impl Server {
    pub fn new(listener: TcpListener, users: Users, store: Box<dyn Store>, config: Config) -> Self {
        Server {
            listener,
            shared: Arc::new(Shared {
                users,
                store,
                config,
                sessions: Mutex::default(),
                next_id: AtomicU64::new(1),
            }),
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    // ANCHOR: serve
    /// Accepts connections for ever, one thread each.
    pub fn serve(self) {
        for stream in self.listener.incoming() {
            let stream = match stream {
                Ok(stream) => stream,
                Err(e) => {
                    // Usually out of file descriptors: wait for sessions to end rather than spin.
                    warn!("accept failed: {e}");
                    thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            let slot = match Slot::take(&self.shared, &stream) {
                Ok(slot) => slot,
                Err(why) => {
                    refuse(stream, &why);
                    continue;
                }
            };
            let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
            let spawned = thread::Builder::new()
                .name(format!("session-{id}"))
                .stack_size(limits::SESSION_STACK)
                .spawn(move || serve_client(stream, slot, id));
            if let Err(e) = spawned {
                // The closure, with its stream and slot, has been dropped: the client sees the
                // connection close and the slot is free again.
                warn!("cannot start a thread for session {id}: {e}");
            }
        }
    }
    // ANCHOR_END: serve
}

// ANCHOR: serve_client
/// The body of a session thread.
fn serve_client(stream: TcpStream, slot: Slot, id: u64) {
    // Locals are dropped in reverse order, on return and on a panic alike: the slot goes back
    // before the socket closes, so a client that reconnects the moment it sees the close finds
    // its place free.
    let stream = stream;
    let slot = slot;
    let shared = &slot.shared;
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "unknown peer".to_string(), |a| a.to_string());
    // Replies are written whole (see session.rs), so Nagle's algorithm could only delay them.
    if let Err(e) = stream
        .set_nodelay(true)
        .and_then(|()| stream.set_write_timeout(Some(shared.config.write_timeout)))
    {
        warn!("session {id} from {peer}: cannot set up the connection: {e}");
        return;
    }
    info!("session {id} from {peer}: started");
    let ctx = Context {
        users: &shared.users,
        store: shared.store.as_ref(),
        login: shared.config.login,
        classroom: shared.config.classroom,
    };
    let input = IdleTimer::new(&stream, shared.config.idle_timeout);
    let summary = session::run(input, &stream, &ctx, id);
    info!(
        "session {id} from {peer}: ended ({}); user {}, {} retrieved, {} deleted, {} octets sent",
        summary.end.describe(),
        summary.user.as_deref().unwrap_or("-"),
        summary.retrieved,
        summary.deleted,
        summary.octets_sent
    );
}
// ANCHOR_END: serve_client

// ANCHOR: idle_timer
/// The autologout timer (RFC 1939 §3) as a reader: a read fails with `TimedOut` when the client
/// has kept the server waiting for the idle time.
///
/// The wait starts when the session asks for input after a complete command line, so the time
/// the server spends answering (a long RETR on a slow link) is never counted against the client.
/// In the middle of a line the wait is not restarted: a plain socket timeout would restart with
/// every byte, and a client sending one byte a minute could hold a session for ever.
struct IdleTimer<'a> {
    stream: &'a TcpStream,
    idle: Duration,
    deadline: Instant,
    /// The last read ended a command line (or nothing was read yet): a new wait begins.
    line_ended: bool,
    /// The read timeout set on the socket now, if any.
    timeout: Option<Duration>,
}

impl<'a> IdleTimer<'a> {
    fn new(stream: &'a TcpStream, idle: Duration) -> Self {
        IdleTimer {
            stream,
            idle,
            deadline: Instant::now() + idle,
            line_ended: true,
            timeout: None,
        }
    }
}

impl Read for IdleTimer<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let now = Instant::now();
        if self.line_ended {
            self.deadline = now + self.idle;
        }
        let left = self.deadline.saturating_duration_since(now);
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "idle timer expired",
            ));
        }
        // Setting the socket timeout is a system call: skip it when it is already right, which
        // it is for every read that starts a new wait.
        if self.timeout != Some(left) {
            self.stream.set_read_timeout(Some(left))?;
            self.timeout = Some(left);
        }
        let n = (&*self.stream).read(buf)?;
        self.line_ended = buf[..n].contains(&b'\n');
        Ok(n)
    }
}
// ANCHOR_END: idle_timer

/// Tells a client over a session limit to come back later, without starting a thread.
fn refuse(mut stream: TcpStream, why: &str) {
    // A fresh connection's send buffer is empty, so this write does not block; the timeout is
    // there in case it ever would.
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = stream.write_all(format!("-ERR [SYS/TEMP] {why}; try again later\r\n").as_bytes());
    warn!("refused a connection: {why}");
}

// ANCHOR: slot
/// A place in the session limits, given back when the thread ends in any way, a panic included
/// (the slot is dropped while the thread unwinds).
struct Slot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Slot {
    /// Takes a place for a connection, or says which limit is reached.
    fn take(shared: &Arc<Shared>, stream: &TcpStream) -> Result<Slot, String> {
        let ip = stream
            .peer_addr()
            .map_err(|e| format!("cannot tell who is connecting: {e}"))?
            .ip();
        let config = &shared.config;
        // Nothing panics while holding this lock; if something ever did, the counts would
        // still be right, so a poisoned lock is used as it is.
        let mut sessions = shared
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if sessions.total >= config.max_sessions {
            return Err(format!("too many sessions (limit {})", config.max_sessions));
        }
        let from_ip = sessions.per_ip.entry(ip).or_insert(0);
        if *from_ip >= config.max_sessions_per_ip {
            return Err(format!(
                "too many sessions from {ip} (limit {})",
                config.max_sessions_per_ip
            ));
        }
        *from_ip += 1;
        sessions.total += 1;
        Ok(Slot {
            shared: Arc::clone(shared),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut sessions = self
            .shared
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        sessions.total -= 1;
        if let Some(n) = sessions.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                sessions.per_ip.remove(&self.ip);
            }
        }
    }
}
// ANCHOR_END: slot
