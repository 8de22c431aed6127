//! Listening, and one OS thread per client (RFC 1939 §3: "the server host starts the POP3
//! service by listening on TCP port 110").
//!
//! The accept loop takes a connection, checks the session limit, and starts a named thread that
//! runs `session::run` on it. Threads share only read-only things (the users, the store, the
//! settings) and one counter, so a session can fail or panic without touching any other.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use log::{info, warn};

use crate::maildrop::Store;
use crate::session::{self, Context};
use crate::users::Users;

/// Settings an operator may change (each one is a command-line flag in main.rs).
#[derive(Debug, Clone)]
pub struct Config {
    /// Autologout: a session with no command for this long is closed (RFC 1939 §3: at least
    /// 10 minutes if there is one at all; tests set it shorter).
    pub idle_timeout: Duration,
    /// Sessions at once; a connection over the limit gets `-ERR [SYS/TEMP]` and is closed.
    /// Each session is a thread, so this bounds the threads as well.
    pub max_sessions: usize,
    /// Wait after a wrong password before answering, so guessing is slow.
    pub failure_delay: Duration,
    /// Print every session's dialogue on standard output (`--trace`, classroom.rs).
    pub classroom: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            idle_timeout: Duration::from_secs(600),
            max_sessions: 1000,
            failure_delay: Duration::from_secs(1),
            classroom: false,
        }
    }
}

/// A session thread's stack. Sessions recurse nowhere and keep big buffers on the heap, so a
/// small stack is plenty; it is reserved address space, and only touched pages cost memory.
const SESSION_STACK: usize = 256 * 1024;

/// What every session thread shares.
struct Shared {
    users: Users,
    store: Box<dyn Store>,
    config: Config,
    active: AtomicUsize,
    next_id: AtomicU64,
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
                active: AtomicUsize::new(0),
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
            let Some(slot) = Slot::take(&self.shared) else {
                refuse(stream, self.shared.config.max_sessions);
                continue;
            };
            let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
            let spawned = thread::Builder::new()
                .name(format!("session-{id}"))
                .stack_size(SESSION_STACK)
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
    let shared = &slot.shared;
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "unknown peer".to_string(), |a| a.to_string());
    // Replies are written whole (see session.rs), so Nagle's algorithm could only delay them.
    // The idle timer is a read timeout; the same time bounds a write to a client that stopped
    // reading.
    let timeout = Some(shared.config.idle_timeout);
    if let Err(e) = stream
        .set_nodelay(true)
        .and_then(|()| stream.set_read_timeout(timeout))
        .and_then(|()| stream.set_write_timeout(timeout))
    {
        warn!("session {id} from {peer}: cannot set up the connection: {e}");
        return;
    }
    info!("session {id} from {peer}: started");
    let ctx = Context {
        users: &shared.users,
        store: shared.store.as_ref(),
        failure_delay: shared.config.failure_delay,
        classroom: shared.config.classroom,
    };
    let summary = session::run(&stream, &stream, &ctx, id);
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

/// Tells a client over the session limit to come back later, without starting a thread.
fn refuse(mut stream: TcpStream, limit: usize) {
    // A fresh connection's send buffer is empty, so this write does not block; the timeout is
    // there in case it ever would.
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = stream.write_all(
        format!("-ERR [SYS/TEMP] too many sessions (limit {limit}); try again later\r\n")
            .as_bytes(),
    );
    warn!("refused a connection: {limit} sessions already running");
}

/// A place in the session limit, given back when the thread ends in any way, a panic included.
struct Slot {
    shared: Arc<Shared>,
}

impl Slot {
    fn take(shared: &Arc<Shared>) -> Option<Slot> {
        let limit = shared.config.max_sessions;
        shared
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot {
                shared: Arc::clone(shared),
            })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.shared.active.fetch_sub(1, Ordering::AcqRel);
    }
}
