//! APOP (RFC 1939 §7): a login that proves the password without sending it; the `apop`
//! feature.
//!
//! ```text
//! S: +OK popstate ready; log in with USER and PASS (RFC 1939) <4242.1.1700000000@mail.example>
//! C: APOP alice 5a3b6f0f61d7d58d3f4a7c3b2f16a0c4
//! S: +OK alice's maildrop has ...
//! ```
//!
//! The greeting ends in a timestamp that is new for every connection; the client sends the MD5
//! digest of that timestamp followed by the password, and the server computes the same digest
//! from its own copy of the password. An eavesdropper sees only a digest that will not be asked
//! for again. It is obsolete all the same: MD5 is broken, a recorded digest can be attacked
//! offline, and the server must keep every password in plain text (book: apop.md). TLS protects
//! the whole session instead.

use std::hint::black_box;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use md5::{Digest, Md5};

use crate::authorization::{Authorization, Outcome};
use crate::command::Command;
use crate::protocol::Reply;
use crate::users::{Users, constant_time_eq};

// ANCHOR: timestamp
/// The `<pid.count.clock@host>` for one greeting, or `None` when no user could log in with APOP
/// (no plain-text password in the users file), since a `<...>` makes clients try APOP
/// (curl/curl #3278). RFC 1939 §7: it must differ on every greeting; the process id, a count of
/// greetings and the clock together never repeat.
pub fn timestamp(users: &Users) -> Option<String> {
    static GREETINGS: AtomicU64 = AtomicU64::new(0);
    if !users.has_plain_password() {
        return None;
    }
    let count = GREETINGS.fetch_add(1, Ordering::Relaxed);
    let clock = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |t| t.as_secs());
    Some(format!(
        "<{}.{count}.{clock}@{}>",
        std::process::id(),
        host_name()
    ))
}
// ANCHOR_END: timestamp

/// The machine's name for the timestamp (RFC 822 msg-id syntax: letters, digits, `.`, `-`).
fn host_name() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let name = name.trim();
        let usable = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
        if usable { name } else { "localhost" }.to_string()
    })
}

// ANCHOR: apop
/// ```text
/// APOP name digest
///   +OK   logged in; maildrop locked (now in TRANSACTION)
///   -ERR [AUTH]   wrong name or digest (or a user with a hashed password, who cannot use APOP)
///   -ERR  no timestamp in this session's greeting, or a digest that is not 32 hex digits
/// ```
/// RFC 1939 §7: digest = MD5(timestamp, password) in lower-case hex. A wrong digest costs the same
/// delay and counts the same as a wrong PASS (`fn log_in`).
pub fn apop(state: &mut Authorization, cmd: &Command) -> Outcome {
    if let Err(e) = cmd.expect_args(2, 2, "APOP name digest") {
        return Outcome::Stay(Reply::Err(e));
    }
    let (name, given) = (&cmd.args[0], cmd.args[1].to_ascii_lowercase());
    if given.len() != 32 || !given.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Outcome::Stay(Reply::Err(
            "an APOP digest is 32 hexadecimal digits: the MD5 of the greeting's <...> and the password"
                .into(),
        ));
    }
    let Some(timestamp) = state.timestamp().map(str::to_string) else {
        return Outcome::Stay(Reply::Err(
            "APOP needs a <timestamp> in the greeting, and this one has none: no account here has \
             a password APOP can use; log in with USER and PASS"
                .into(),
        ));
    };
    let verified = match state.users().plain_password(name) {
        Some(secret) => constant_time_eq(digest(&timestamp, secret).as_bytes(), given.as_bytes()),
        None => {
            // Unknown users, and users whose password is stored hashed, cost the same digest.
            black_box(constant_time_eq(
                digest(&timestamp, "\0nobody\0").as_bytes(),
                given.as_bytes(),
            ));
            false
        }
    };
    state.log_in(name.clone(), verified)
}
// ANCHOR_END: apop

/// MD5 of the timestamp followed by the secret, as 32 lower-case hex digits (RFC 1939 §7).
pub fn digest(timestamp: &str, secret: &str) -> String {
    let mut md5 = Md5::new();
    md5.update(timestamp.as_bytes());
    md5.update(secret.as_bytes());
    md5.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b30_digest_matches_rfc_1939_example() {
        // RFC 1939 §7's example: the shared secret "tanstaaf".
        assert_eq!(
            digest("<1896.697170952@dbc.mtview.ca.us>", "tanstaaf"),
            "c4c9334bac560ecc979e58001b3e22fb"
        );
    }

    #[test]
    fn b30_timestamps_differ_and_need_a_plain_password() {
        let users = Users::parse("alice:wonderland").expect("valid");
        let a = timestamp(&users).expect("a plain password allows APOP");
        let b = timestamp(&users).expect("a plain password allows APOP");
        assert_ne!(a, b);
        assert!(
            a.starts_with('<') && a.ends_with('>') && a.contains('@'),
            "{a}"
        );
        assert_eq!(timestamp(&Users::default()), None);
    }
}
