//! SASL AUTH (RFC 5034) with the PLAIN mechanism (RFC 4616): the `sasl` feature.
//!
//! ```text
//! C: AUTH PLAIN                      C: AUTH PLAIN AGFsaWNlAHdvbmRlcmxhbmQ=
//! S: +                               S: +OK alice's maildrop has ...
//! C: AGFsaWNlAHdvbmRlcmxhbmQ=
//! S: +OK alice's maildrop has ...
//! ```
//!
//! PLAIN carries the same secret as USER and PASS, in base64 instead of in clear: it adds no
//! protection of its own, only a way in that SASL-speaking clients use. That is why RFC 5034 §4
//! asks for it over TLS, and why `--require-tls` refuses it until TLS is active. A right or wrong
//! password ends in `fn log_in` in authorization.rs, with the same delay and failure count as
//! PASS.
//!
//! The base64 comes from the `base64` crate: its standard engine is strict about the alphabet
//! and the padding (RFC 4648 §4), as RFC 5034 §4 wants a server to be, which is easy to get
//! wrong by hand.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::authorization::{Authorization, Outcome};
use crate::command::Command;
use crate::protocol::Reply;

/// The mechanisms AUTH accepts: PLAIN, the one RFC 5034 §4 requires.
pub const MECHANISMS: &[&str] = &["PLAIN"];

/// RFC 4616 §2: a server accepts each of the three fields up to 255 octets.
const MAX_PLAIN_FIELD: usize = 255;

// ANCHOR: auth
/// ```text
/// AUTH
///   +OK then the mechanisms, one per line, then "."   (RFC 5034 §3's list, asked the old way)
/// AUTH PLAIN [initial-response]
///   +      (empty challenge: send the response on the next line)
///   +OK    logged in; maildrop locked (now in TRANSACTION)
///   -ERR [AUTH]   wrong name or password, or a user acting for another
///   -ERR   unknown mechanism, TLS required first, malformed response, cancelled
/// ```
/// RFC 5034 §4. Every failure leaves the session as if AUTH had not been sent (a wrong password
/// also counts as one, as it would for PASS).
pub fn auth(state: &mut Authorization, cmd: &Command) -> Outcome {
    if cmd.args.is_empty() {
        // Bare AUTH: the discovery Outlook and Thunderbird still send before CAPA existed.
        let offered = if state.clear_text_allowed() {
            MECHANISMS.iter().map(|m| m.to_string()).collect()
        } else {
            Vec::new()
        };
        return Outcome::Stay(Reply::Lines("SASL mechanisms follow".into(), offered));
    }
    if let Err(e) = cmd.expect_args(1, 2, "AUTH mechanism [initial-response]") {
        return Outcome::Stay(Reply::Err(e));
    }
    let mechanism = cmd.args[0].to_ascii_uppercase();
    if !MECHANISMS.contains(&mechanism.as_str()) {
        return Outcome::Stay(Reply::Err(format!(
            "unknown SASL mechanism {mechanism}: popstate offers {}",
            MECHANISMS.join(" ")
        )));
    }
    if !state.clear_text_allowed() {
        return Outcome::Stay(Reply::Err(
            "AUTH PLAIN sends the password as it is: use STLS first (RFC 2595 section 2.3)".into(),
        ));
    }
    match cmd.args.get(1) {
        // RFC 5034 §4: "=" is an initial response that is empty.
        Some(initial) if initial == "=" => plain(state, ""),
        Some(initial) => plain(state, initial),
        // No initial response: an empty challenge asks for it (RFC 4616 §2).
        None => Outcome::Stay(Reply::Challenge(String::new())),
    }
}
// ANCHOR_END: auth

/// The client's line after a challenge (session.rs reads it): `*` to cancel, or the response
/// in base64. PLAIN is the only mechanism, so a response is always a PLAIN message.
pub fn response(state: &mut Authorization, line: Result<String, String>) -> Outcome {
    match line {
        Err(why) => Outcome::Stay(Reply::Err(why)),
        Ok(line) if line == "*" => Outcome::Stay(Reply::Err(
            "AUTH cancelled, as the client asked with \"*\" (RFC 5034 section 4)".into(),
        )),
        Ok(line) => plain(state, &line),
    }
}

// ANCHOR: plain
/// Decodes and checks a PLAIN message: `authzid NUL authcid NUL passwd` in base64 (RFC 4616
/// §2). The authorization identity (who to act as) must be empty or the user's own name:
/// popstate lets nobody read another user's maildrop.
fn plain(state: &mut Authorization, base64: &str) -> Outcome {
    let message = match STANDARD.decode(base64) {
        Ok(message) => message,
        Err(e) => {
            return Outcome::Stay(Reply::Err(format!(
                "the SASL response is not base64 (RFC 4648 section 4): {e}"
            )));
        }
    };
    let Ok(message) = String::from_utf8(message) else {
        return Outcome::Stay(Reply::Err(
            "an AUTH PLAIN message is UTF-8 text (RFC 4616 section 2)".into(),
        ));
    };
    let fields: Vec<&str> = message.split('\0').collect();
    let [authzid, authcid, password] = fields[..] else {
        return Outcome::Stay(Reply::Err(format!(
            "an AUTH PLAIN message is three fields with NUL between them, not {}: \
             [authorization identity] NUL user NUL password (RFC 4616 section 2)",
            fields.len()
        )));
    };
    if authcid.is_empty() || password.is_empty() {
        return Outcome::Stay(Reply::Err(
            "an AUTH PLAIN message needs a user name and a password (RFC 4616 section 2)".into(),
        ));
    }
    if fields.iter().any(|f| f.len() > MAX_PLAIN_FIELD) {
        return Outcome::Stay(Reply::Err(format!(
            "each field of an AUTH PLAIN message may hold at most {MAX_PLAIN_FIELD} octets"
        )));
    }
    if !authzid.is_empty() && authzid != authcid {
        return Outcome::Stay(Reply::Err(
            "[AUTH] a user may only log in as themselves: leave the authorization identity empty"
                .into(),
        ));
    }
    let verified = state.users().check_password(authcid, password);
    state.log_in(authcid.to_string(), verified)
}
// ANCHOR_END: plain

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authorization::LoginPolicy;
    use crate::login_delay::LoginDelay;
    use crate::maildrop::{Maildrop, OpenError, Store};
    use crate::users::Users;
    use std::time::Duration;

    /// A store whose maildrops are always busy: enough to see that a login got that far.
    struct Busy;
    impl Store for Busy {
        fn open_maildrop(&self, _user: &str) -> Result<Box<dyn Maildrop>, OpenError> {
            Err(OpenError::InUse)
        }
    }

    fn policy(require_tls: bool) -> LoginPolicy {
        LoginPolicy {
            failure_delay: Duration::ZERO,
            max_failures: 3,
            require_tls,
        }
    }

    fn reply_text(outcome: Outcome) -> String {
        match outcome {
            Outcome::Stay(reply) | Outcome::Quit(reply) => reply.status_line(),
            Outcome::LoggedIn { reply, .. } => reply.status_line(),
            #[cfg(feature = "tls")]
            Outcome::StartTls(reply) => reply.status_line(),
        }
    }

    fn auth_line(state: &mut Authorization, line: &str) -> String {
        reply_text(state.handle(&crate::command::parse(line.as_bytes())))
    }

    #[test]
    fn a09_plain_waits_for_tls_when_required() {
        let users = Users::parse("alice:wonderland").expect("valid");
        let off = LoginDelay::default();
        let mut state = Authorization::new(&users, &Busy, &off, policy(true));
        let refused = auth_line(&mut state, "AUTH PLAIN AGFsaWNlAHdvbmRlcmxhbmQ=");
        assert_eq!(
            refused,
            "-ERR AUTH PLAIN sends the password as it is: use STLS first (RFC 2595 section 2.3)"
        );
        assert!(!auth_line(&mut state, "CAPA").contains("SASL"));
        state.tls_started();
        let accepted = auth_line(&mut state, "AUTH PLAIN AGFsaWNlAHdvbmRlcmxhbmQ=");
        assert!(accepted.starts_with("-ERR [IN-USE]"), "{accepted}");
    }

    #[test]
    fn a09_bare_auth_lists_nothing_before_tls_when_required() {
        let users = Users::parse("alice:wonderland").expect("valid");
        let off = LoginDelay::default();
        let mut state = Authorization::new(&users, &Busy, &off, policy(true));
        let Outcome::Stay(Reply::Lines(_, lines)) = state.handle(&crate::command::parse(b"AUTH"))
        else {
            panic!("bare AUTH answers with a list");
        };
        assert!(lines.is_empty(), "{lines:?}");
    }
}
