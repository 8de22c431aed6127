//! `--inetd`: serve one session on standard input and output, then exit, as popa3d does.
//!
//! inetd (`/etc/inetd.conf`, `nowait`) and systemd (a socket unit with `Accept=yes`) accept the
//! connection themselves, start one `popstate --inetd` per client, and hand it the connected
//! socket as standard input and output. popstate then reads and writes that socket and nothing
//! else: standard output *is* the client, so logs go to standard error (env_logger's default;
//! inetd sends them nowhere, systemd to the journal), and main.rs refuses the flags that would
//! print to standard output (`--trace`, `--board`, `--classroom`).
//!
//! Standard input may be:
//! - a TCP socket (inetd, systemd): the peer's address comes from `getpeername`, and the idle and
//!   write timeouts work as for a listener's clients (server.rs, `IdleTimer`);
//! - a Unix socket (a test, or a socket unit with `ListenStream=/run/...`): the same timeouts;
//! - a pipe or a terminal (`popstate --inetd ...` typed at by hand, or fed by a script): the
//!   idle timer still works, because a thread reads standard input and the session waits for it
//!   with a deadline ([`Pipes`]); replies go to standard output with no write timeout, since a
//!   pipe cannot have one: a reader that stops reading holds the session until it goes away.
//!
//! The descriptor is *duplicated* (`try_clone_to_owned`), never taken from the standard
//! library: fd 0 stays owned by `std::io::stdin()` and is closed once, at exit.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use crate::session::Transport;

/// The client on standard input.
pub enum Client {
    Tcp(TcpStream),
    Unix(UnixStream),
    Pipes(Pipes),
}

// ANCHOR: stdin_client
impl Client {
    /// Finds out what standard input is, and takes a copy of it to serve.
    pub fn from_stdin() -> io::Result<Client> {
        let fd: OwnedFd = io::stdin().as_fd().try_clone_to_owned()?;
        let file = File::from(fd);
        if !file.metadata()?.file_type().is_socket() {
            let out = File::from(io::stdout().as_fd().try_clone_to_owned()?);
            return Ok(Client::Pipes(Pipes::new(file, out)?));
        }
        // `local_addr` works on any TCP socket and fails on every other kind (std checks the
        // address family), so it tells TCP from Unix sockets.
        let tcp = TcpStream::from(OwnedFd::from(file));
        if tcp.local_addr().is_err() {
            return Ok(Client::Unix(UnixStream::from(OwnedFd::from(tcp))));
        }
        match tcp.peer_addr() {
            Ok(_) => Ok(Client::Tcp(tcp)),
            // inetd's `wait` mode passes the listening socket itself, not a connection.
            Err(e) => Err(io::Error::new(
                e.kind(),
                format!(
                    "standard input is a TCP socket with no client ({e}): inetd.conf must say \
                     `nowait`, and a systemd socket unit `Accept=yes`"
                ),
            )),
        }
    }

    /// Who is connected, for the log.
    pub fn peer(&self) -> String {
        match self {
            Client::Tcp(stream) => stream
                .peer_addr()
                .map_or_else(|_| "an unknown TCP peer".into(), |a| a.to_string()),
            Client::Unix(stream) => match stream
                .peer_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
            {
                Some(path) => format!("Unix socket {path}"),
                None => "a Unix socket".into(),
            },
            Client::Pipes(_) => "standard input".into(),
        }
    }
}
// ANCHOR_END: stdin_client

/// Standard input and output when they are not a socket: a pipe, a file or a terminal.
pub struct Pipes {
    /// What the reading thread has read: a piece of input, an empty piece at end of input, or
    /// the error that stopped it.
    incoming: Receiver<io::Result<Vec<u8>>>,
    /// The rest of the last piece, not yet given to the session.
    pending: Vec<u8>,
    ended: bool,
    out: File,
    idle: Duration,
    deadline: Instant,
}

/// Input is read this much at a time; the channel holds one piece, so at most two are in memory.
const PIECE: usize = 4096;

impl Pipes {
    fn new(mut input: File, out: File) -> io::Result<Pipes> {
        let (sender, incoming) = mpsc::sync_channel(1);
        // A read from a pipe or a terminal cannot time out, so it happens on a thread of its
        // own, and the session waits for the channel with a deadline instead. The thread ends at
        // end of input, or when the session has ended and the channel is gone; at exit the
        // process ends it anyway.
        thread::Builder::new().name("stdin".into()).spawn(move || {
            loop {
                let mut piece = vec![0; PIECE];
                let got = match input.read(&mut piece) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => Err(e),
                    Ok(n) => {
                        piece.truncate(n);
                        Ok(piece)
                    }
                };
                let last = !matches!(&got, Ok(p) if !p.is_empty());
                if sender.send(got).is_err() || last {
                    return;
                }
            }
        })?;
        Ok(Pipes {
            incoming,
            pending: Vec::new(),
            ended: false,
            out,
            idle: Duration::MAX,
            deadline: Instant::now(),
        })
    }

    /// The same autologout as a socket's (RFC 1939 §3): a wait for a command longer than
    /// `idle` ends the session.
    pub fn with_idle_timer(mut self, idle: Duration) -> Pipes {
        self.idle = idle;
        self.deadline = Instant::now() + idle;
        self
    }
}

impl Transport for Pipes {
    fn new_wait(&mut self) {
        self.deadline = Instant::now() + self.idle;
    }
}

impl Read for Pipes {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pending.is_empty() && !self.ended {
            let left = self.deadline.saturating_duration_since(Instant::now());
            match self.incoming.recv_timeout(left) {
                Ok(Ok(piece)) if piece.is_empty() => self.ended = true,
                Ok(Ok(piece)) => self.pending = piece,
                Ok(Err(e)) => {
                    self.ended = true;
                    return Err(e);
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "idle timer expired",
                    ));
                }
                Err(RecvTimeoutError::Disconnected) => self.ended = true,
            }
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending[..n]);
        self.pending.drain(..n);
        Ok(n)
    }
}

impl Write for Pipes {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Whether standard error is the client too. Classic inetd connects the socket to descriptors
/// 0, 1 *and* 2, so a log line written to standard error would reach the client in the middle
/// of the dialogue; main.rs then logs to syslog instead ([`Syslog`]).
pub fn stderr_is_the_client() -> bool {
    use std::os::unix::fs::MetadataExt;
    let identity = |fd: io::Result<OwnedFd>| {
        let meta = File::from(fd.ok()?).metadata().ok()?;
        Some((meta.dev(), meta.ino()))
    };
    let input = identity(io::stdin().as_fd().try_clone_to_owned());
    input.is_some() && input == identity(io::stderr().as_fd().try_clone_to_owned())
}

/// Log lines sent to the local syslog daemon (`/dev/log`, one datagram per line, as the
/// `logger` command sends them), for `--inetd` under an inetd that gives standard error to the
/// client. Each line must already carry its `<priority>` (main.rs formats them). Where there is
/// no syslog daemon, the lines are dropped: there is nowhere else that is not the client.
pub struct Syslog {
    socket: Option<std::os::unix::net::UnixDatagram>,
    line: Vec<u8>,
}

impl Syslog {
    pub fn new() -> Syslog {
        let socket = std::os::unix::net::UnixDatagram::unbound()
            .and_then(|s| s.connect("/dev/log").map(|()| s))
            .ok();
        Syslog {
            socket,
            line: Vec::new(),
        }
    }

    /// The syslog priority of a log level, for the `mail` facility (RFC 5424 §6.2.1).
    pub fn priority(level: log::Level) -> u8 {
        const MAIL: u8 = 2 * 8;
        MAIL + match level {
            log::Level::Error => 3,
            log::Level::Warn => 4,
            log::Level::Info => 6,
            log::Level::Debug | log::Level::Trace => 7,
        }
    }
}

impl Default for Syslog {
    fn default() -> Self {
        Syslog::new()
    }
}

impl Write for Syslog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.line.extend_from_slice(buf);
        while let Some(end) = self.line.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.line.drain(..=end).collect();
            if let Some(socket) = &self.socket {
                // A full or absent syslog daemon must not stop the session.
                let _ = socket.send(&line[..end]);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
