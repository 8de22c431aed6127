//! systemd socket activation (`sd_listen_fds(3)`): a socket unit with `Accept=no` binds the
//! port, starts popstate on the first connection, and passes the listening socket as file
//! descriptor 3, saying so in `LISTEN_FDS` (how many, from 3 on) and `LISTEN_PID` (for which
//! process). popstate then serves it exactly as a socket it bound itself (server.rs).
//!
//! This needs no systemd library: the protocol is two environment variables and a descriptor
//! number. A socket unit with `Accept=yes` instead starts one process per connection and wants
//! `--inetd` (inetd.rs). dist/ holds the unit files, docs/design.md explains them.

use std::net::TcpListener;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// The first passed descriptor (`SD_LISTEN_FDS_START`): 0, 1 and 2 are standard input, output
/// and error.
const FIRST_FD: RawFd = 3;

/// No unit passes more than a handful of sockets; more is a mistake in the environment.
const MAX_FDS: RawFd = 64;

// ANCHOR: listeners
/// The listening sockets systemd passed to this process, or none when it passed nothing (no
/// `LISTEN_PID`, or one that names another process, such as a parent that did not clear it).
///
/// Call it once: it takes ownership of the descriptors, and a second call would own them twice.
pub fn listeners() -> Result<Vec<TcpListener>, String> {
    let Ok(pid) = std::env::var("LISTEN_PID") else {
        return Ok(Vec::new());
    };
    if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
        return Ok(Vec::new());
    }
    let count: RawFd = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.trim().parse().ok())
        .filter(|n| (1..=MAX_FDS).contains(n))
        .ok_or(
            "LISTEN_PID is this process, but LISTEN_FDS is not a number of sockets from 1 to 64",
        )?;
    let mut listeners = Vec::new();
    for fd in FIRST_FD..FIRST_FD + count {
        // Owning a descriptor that is not open would be undefined behaviour: look first.
        if !is_open(fd) {
            return Err(format!(
                "LISTEN_FDS={count}, but file descriptor {fd} is not open"
            ));
        }
        // SAFETY: fd is open (checked just above), and nothing else in this process owns it:
        // systemd opened it for us before exec, the standard library opens only 0, 1 and 2 on
        // its own, and this function runs once, before any other file is opened.
        let listener = TcpListener::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let address = listener.local_addr().map_err(|e| {
            format!("file descriptor {fd} from systemd is not a TCP socket ({e}): the socket unit needs ListenStream=ADDRESS:PORT")
        })?;
        if is_connection(&listener) {
            return Err(format!(
                "file descriptor {fd} from systemd is a connection, not a listening socket: a socket unit with Accept=yes must start popstate --inetd (dist/popstate@.service)"
            ));
        }
        // systemd passes blocking sockets unless the unit says NonBlocking=yes; the accept loop
        // needs a blocking one.
        listener
            .set_nonblocking(false)
            .map_err(|e| format!("socket {address} from systemd: {e}"))?;
        listeners.push(listener);
    }
    Ok(listeners)
}
// ANCHOR_END: listeners

/// Whether `fd` is an open descriptor. Linux lists them in /proc; elsewhere, trust systemd.
fn is_open(fd: RawFd) -> bool {
    if cfg!(target_os = "linux") {
        std::fs::symlink_metadata(format!("/proc/self/fd/{fd}")).is_ok()
    } else {
        true
    }
}

/// A connected socket has a peer; a listening one has none.
fn is_connection(listener: &TcpListener) -> bool {
    use std::os::fd::AsFd;
    listener
        .as_fd()
        .try_clone_to_owned()
        .map(std::net::TcpStream::from)
        .and_then(|stream| stream.peer_addr())
        .is_ok()
}
