//! Listening, and one OS thread per client (RFC 1939 §3: "the server host starts the POP3
//! service by listening on TCP port 110").
//!
//! The accept loop takes a connection, checks the session limits, and starts a named thread
//! that runs `session::run` on it. With the `tls` feature a second listener may serve implicit
//! TLS (RFC 8314, port 995): its threads do the TLS handshake first. Threads share only
//! read-only things (the users, the store, the settings), the session counts and the last
//! logins (for LOGIN-DELAY), so a session can fail or panic without touching any other.
//!
//! The listeners are bound by main.rs, or passed by systemd (systemd.rs). In `--inetd` mode
//! there is no listener: [`Server::serve_inetd`] runs one session on the connection that inetd
//! handed over (inetd.rs), on this thread, and returns.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use log::{info, warn};

use crate::authorization::LoginPolicy;
use crate::board::Board;
use crate::classroom::Trace;
use crate::expire::Expire;
use crate::inetd::Client;
use crate::limits;
use crate::login_delay::LoginDelay;
use crate::maildrop::Store;
use crate::session::{self, Context, Summary, Transport};
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
    /// The least time between two logins by one user (`--login-delay`, RFC 2449 §6.5); `None`:
    /// no delay, and none announced.
    pub login_delay: Option<Duration>,
    /// How long retrieved messages stay (`--expire`, RFC 2449 §6.7).
    pub expire: Expire,
    /// Print sessions' dialogues on standard output (`--trace`, `--trace-user`, classroom.rs).
    pub classroom: Trace,
    /// The teacher's board (`--board`, board.rs), shared by every session.
    pub board: Option<Arc<Board>>,
    /// The certificate for STLS and implicit TLS (`--tls-cert`, `--tls-key`; tls.rs).
    #[cfg(feature = "tls")]
    pub tls: Option<crate::tls::Certificate>,
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
            login_delay: None,
            expire: Expire::Never,
            classroom: Trace::Off,
            board: None,
            #[cfg(feature = "tls")]
            tls: None,
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
    /// When each user last logged in, for LOGIN-DELAY (RFC 2449 §8.1.1).
    login_delay: LoginDelay,
    next_id: AtomicU64,
}

impl Shared {
    /// What a session needs from the server.
    fn context(&self) -> Context<'_> {
        Context {
            users: &self.users,
            store: self.store.as_ref(),
            login: self.config.login,
            login_delay: &self.login_delay,
            expire: self.config.expire,
            classroom: &self.config.classroom,
            board: self.config.board.as_ref(),
            #[cfg(feature = "tls")]
            stls: self.config.tls.as_ref(),
        }
    }
}

#[derive(Default)]
struct Sessions {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// What a client finds on a listening socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// POP3 from the first octet (RFC 1939), with STLS if the server has a certificate.
    Plain,
    /// A TLS handshake first, then the greeting (RFC 8314 §3.2, port 995).
    #[cfg(feature = "tls")]
    ImplicitTls,
}

/// A bound POP3 server.
pub struct Server {
    listeners: Vec<(TcpListener, Security)>,
    shared: Arc<Shared>,
}

impl Server {
    /// A server on one plain listener.
    pub fn new(listener: TcpListener, users: Users, store: Box<dyn Store>, config: Config) -> Self {
        Server::with_listeners(vec![(listener, Security::Plain)], users, store, config)
    }

    /// A server on several listeners (say, port 110 and port 995). An implicit-TLS listener
    /// needs `config.tls`.
    pub fn with_listeners(
        listeners: Vec<(TcpListener, Security)>,
        users: Users,
        store: Box<dyn Store>,
        config: Config,
    ) -> Self {
        Server {
            listeners,
            shared: Arc::new(Shared {
                users,
                store,
                login_delay: LoginDelay::new(config.login_delay),
                config,
                sessions: Mutex::default(),
                next_id: AtomicU64::new(1),
            }),
        }
    }

    /// The address of the first listener.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self.listeners.first() {
            Some((listener, _)) => listener.local_addr(),
            None => Err(io::Error::new(io::ErrorKind::NotFound, "no listener")),
        }
    }

    /// Every listener's address and kind.
    pub fn local_addrs(&self) -> io::Result<Vec<(SocketAddr, Security)>> {
        self.listeners
            .iter()
            .map(|(listener, security)| Ok((listener.local_addr()?, *security)))
            .collect()
    }

    /// Serves every listener for ever: the first on this thread, each other one on a thread of
    /// its own.
    pub fn serve(self) {
        let mut listeners = self.listeners.into_iter();
        let Some((first, security)) = listeners.next() else {
            return;
        };
        for (listener, security) in listeners {
            let shared = Arc::clone(&self.shared);
            let spawned = thread::Builder::new()
                .name("accept".into())
                .spawn(move || accept_loop(&listener, security, &shared));
            if let Err(e) = spawned {
                warn!("cannot start a thread for a second listener: {e}");
            }
        }
        accept_loop(&first, security, &self.shared);
    }

    // ANCHOR: serve_inetd
    /// `--inetd`: one session with the client that inetd, or systemd with `Accept=yes`, passed
    /// as standard input (inetd.rs), then return. The session limits do not apply: there is one
    /// session in this process, and inetd or systemd limit the processes.
    pub fn serve_inetd(self, client: Client) {
        let shared = &self.shared;
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let peer = client.peer();
        info!("session {id} from {peer}: started (inetd)");
        let ctx = shared.context();
        let idle = shared.config.idle_timeout;
        let write_timeout = Some(shared.config.write_timeout);
        let summary = match client {
            Client::Tcp(stream) => {
                if let Err(e) = set_up(&stream, &shared.config) {
                    warn!("session {id} from {peer}: cannot set up the connection: {e}");
                    return;
                }
                session::run(IdleTimer::new(&stream, idle), &ctx, id)
            }
            Client::Unix(stream) => {
                if let Err(e) = stream.set_write_timeout(write_timeout) {
                    warn!("session {id} from {peer}: cannot set up the connection: {e}");
                    return;
                }
                session::run(IdleTimer::new(&stream, idle), &ctx, id)
            }
            Client::Pipes(pipes) => session::run(pipes.with_idle_timer(idle), &ctx, id),
        };
        log_end(id, &peer, &summary);
    }
    // ANCHOR_END: serve_inetd
}

/// Replies are written whole (see session.rs), so Nagle's algorithm could only delay them; a
/// client that stops reading must not hold the session for ever.
fn set_up(stream: &TcpStream, config: &Config) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(config.write_timeout))
}

/// The session's last log line.
fn log_end(id: u64, peer: &str, summary: &Summary) {
    info!(
        "session {id} from {peer}: ended ({}); user {}, {} retrieved, {} deleted, {} octets sent",
        summary.end.describe(),
        summary.user.as_deref().unwrap_or("-"),
        summary.retrieved,
        summary.deleted,
        summary.octets_sent
    );
}

// ANCHOR: serve
/// Accepts connections for ever, one thread each.
fn accept_loop(listener: &TcpListener, security: Security, shared: &Arc<Shared>) {
    loop {
        // `accept` gives the client's address with the connection; asking the socket for it
        // later (`peer_addr`) would be one more system call.
        let (stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(e) => {
                // Usually out of file descriptors: wait for sessions to end rather than spin.
                warn!("accept failed: {e}");
                thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let slot = match Slot::take(shared, peer.ip()) {
            Ok(slot) => slot,
            Err(why) => {
                refuse(stream, &why);
                continue;
            }
        };
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let spawned = thread::Builder::new()
            .name(format!("session-{id}"))
            .stack_size(limits::SESSION_STACK)
            .spawn(move || serve_client(stream, peer, slot, id, security));
        if let Err(e) = spawned {
            // The closure, with its stream and slot, has been dropped: the client sees the
            // connection close and the slot is free again.
            warn!("cannot start a thread for session {id}: {e}");
        }
    }
}
// ANCHOR_END: serve

// ANCHOR: serve_client
/// The body of a session thread.
fn serve_client(stream: TcpStream, peer: SocketAddr, slot: Slot, id: u64, security: Security) {
    // Locals are dropped in reverse order, on return and on a panic alike: the slot goes back
    // before the socket closes, so a client that reconnects the moment it sees the close finds
    // its place free.
    let stream = stream;
    let slot = slot;
    let shared = &slot.shared;
    if let Err(e) = set_up(&stream, &shared.config) {
        warn!("session {id} from {peer}: cannot set up the connection: {e}");
        return;
    }
    info!("session {id} from {peer}: started");
    let ctx = shared.context();
    let socket = IdleTimer::new(&stream, shared.config.idle_timeout);
    let summary = match security {
        Security::Plain => session::run(socket, &ctx, id),
        #[cfg(feature = "tls")]
        Security::ImplicitTls => {
            let handshake = match &shared.config.tls {
                Some(certificate) => crate::tls::accept(Box::new(socket), certificate),
                None => Err(io::Error::other("no certificate for implicit TLS")),
            };
            match handshake {
                Ok(tls) => session::run(tls, &ctx, id),
                Err(e) => {
                    info!("session {id} from {peer}: ended before the greeting: {e}");
                    return;
                }
            }
        }
    };
    log_end(id, &peer.to_string(), &summary);
}
// ANCHOR_END: serve_client

// ANCHOR: idle_timer
/// The client's socket with the autologout timer (RFC 1939 §3): a read fails with `TimedOut`
/// when the client has kept the server waiting for the idle time.
///
/// The wait starts when the session asks for a new command (`fn new_wait`), so the time the
/// server spends answering (a long RETR on a slow link) is never counted against the client. The
/// deadline is fixed until then: a plain socket timeout would start again with every byte, and a
/// client sending one byte a minute could hold a session for ever. Under TLS the same timer sits
/// below the encryption, and bounds the handshake too. The socket is a TCP one, or, in
/// `--inetd` mode, possibly a Unix one (inetd.rs).
struct IdleTimer<'a, S> {
    stream: &'a S,
    idle: Duration,
    deadline: Instant,
    /// A new wait was asked for: the next read starts it.
    fresh: bool,
    /// The read timeout set on the socket now, if any.
    timeout: Option<Duration>,
}

impl<'a, S> IdleTimer<'a, S> {
    fn new(stream: &'a S, idle: Duration) -> Self {
        IdleTimer {
            stream,
            idle,
            deadline: Instant::now() + idle,
            fresh: true,
            timeout: None,
        }
    }
}

impl<S: Socket> Transport for IdleTimer<'_, S>
where
    for<'s> &'s S: Read + Write,
{
    fn new_wait(&mut self) {
        self.fresh = true;
    }
}

impl<S: Socket> Read for IdleTimer<'_, S>
where
    for<'s> &'s S: Read,
{
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let now = Instant::now();
        if self.fresh {
            self.deadline = now + self.idle;
            self.fresh = false;
        }
        let left = self.deadline.saturating_duration_since(now);
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "idle timer expired",
            ));
        }
        // Setting the socket timeout is a system call: skip it when it is already right, which
        // it is for every read that starts a new wait (the whole idle time is left then, to the
        // nanosecond: the deadline was set from the same `now`).
        if self.timeout != Some(left) {
            self.stream.set_read_timeout(Some(left))?;
            self.timeout = Some(left);
        }
        (&*self.stream).read(buf)
    }
}

/// Replies go straight to the socket, whose write timeout (`Config::write_timeout`) ends a
/// session whose client stopped reading.
impl<S> Write for IdleTimer<'_, S>
where
    for<'s> &'s S: Write,
{
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self.stream).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        (&*self.stream).flush()
    }
}

/// A socket whose reads can time out: what [`IdleTimer`] needs.
trait Socket {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
}

impl Socket for TcpStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, timeout)
    }
}

impl Socket for UnixStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        UnixStream::set_read_timeout(self, timeout)
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
    /// Takes a place for a connection from `ip`, or says which limit is reached.
    fn take(shared: &Arc<Shared>, ip: IpAddr) -> Result<Slot, String> {
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
