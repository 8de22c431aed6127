//! CAPA: what this server can do (RFC 2449 §5), valid in AUTHORIZATION and TRANSACTION.
//!
//! ```text
//! C: CAPA
//! S: +OK capability list follows
//! S: TOP
//! S: ...
//! S: .
//! ```
//!
//! The list is the same in both states, which satisfies RFC 2449 §5's rule that what is announced
//! before login is announced after it too, with the exceptions the TLS and SASL RFCs make (see
//! [`Offer`]): `STLS` is listed only while it can be used (RFC 2595 §4: before login, without
//! TLS), and `USER` and `SASL PLAIN` are left out while `--require-tls` refuses clear-text
//! passwords (RFC 2595 §2.3, RFC 5034 §4). `LOGIN-DELAY` (login_delay.rs) and `EXPIRE`
//! (expire.rs) carry the server's settings, the same for every user, so they are the same in both
//! states and need no `USER` token (RFC 2449 §6.5, §6.7). Each tag is a promise the code keeps.

use crate::command::Command;
use crate::expire::Expire;
use crate::protocol::Reply;

/// What the session can do right now, for the lines of CAPA that change.
#[derive(Debug, Clone, Copy)]
pub struct Offer {
    /// STLS can be used now (RFC 2595 §4).
    pub stls: bool,
    /// USER/PASS may be used now (RFC 2449 §6.2; RFC 2595 §2.3).
    pub clear_text_logins: bool,
    /// `SASL PLAIN` (RFC 5034 §3): AUTH PLAIN can be used now. Not before TLS where
    /// `--require-tls` asks for it (RFC 5034 §4); listed after login too (RFC 5034 §3).
    pub sasl: bool,
    /// `LOGIN-DELAY n` (§6.5), with `--login-delay`.
    pub login_delay: Option<u64>,
    /// `EXPIRE NEVER` or `EXPIRE n` (§6.7).
    pub expire: Expire,
}

impl Offer {
    /// After login: STLS is over (RFC 2595 §4), USER was how the client got here, and SASL
    /// stays listed whichever way the client logged in (RFC 5034 §3). The server's settings
    /// stay as they were announced before login (§5).
    pub fn after_login(self) -> Offer {
        Offer {
            stls: false,
            clear_text_logins: true,
            sasl: cfg!(feature = "sasl"),
            ..self
        }
    }
}

// ANCHOR: capabilities
/// One line per capability, in RFC 2449 §6's words.
pub const CAPABILITIES: &[&str] = &[
    // TOP msg n works (§6.1, RFC 1939 §7).
    "TOP",
    // USER/PASS is the login method (§6.2); left out while it is refused (see `Offer`).
    "USER",
    // Unique-ids are stable across sessions (§6.8, RFC 1939 §7).
    "UIDL",
    // `-ERR [CODE]` texts are response codes (§6.4, §8): IN-USE, SYS/TEMP, SYS/PERM.
    "RESP-CODES",
    // Only credential failures carry [AUTH] (RFC 3206 §6).
    "AUTH-RESP-CODE",
    // Commands may be sent without waiting for replies (§6.6).
    "PIPELINING",
];
// ANCHOR_END: capabilities

/// Commands other POP3 servers offer that popstate does not (docs/design.md says why). They get
/// their own `-ERR`, in both states, so nobody thinks they were mistyped.
pub fn not_offered(keyword: &str) -> Option<String> {
    let (what, rfc) = match keyword {
        #[cfg(not(feature = "apop"))]
        "APOP" => ("APOP", "RFC 1939 section 7"),
        #[cfg(not(feature = "sasl"))]
        "AUTH" => ("SASL AUTH", "RFC 5034"),
        #[cfg(not(feature = "tls"))]
        "STLS" => ("STLS (TLS)", "RFC 2595"),
        #[cfg(feature = "tls")]
        "STLS" => {
            return Some(
                "STLS is only valid before login (RFC 2595 section 4): QUIT and connect again to start TLS first".into(),
            );
        }
        "UTF8" | "LANG" => ("UTF8 and LANG", "RFC 6856"),
        _ => return None,
    };
    Some(format!(
        "{what} ({rfc}) is not offered by popstate: log in with USER and PASS (CAPA lists what is)"
    ))
}

// ANCHOR: capa
/// ```text
/// CAPA
///   +OK capability list follows, then one capability per line, then "."
///   -ERR  CAPA takes no arguments
/// ```
/// RFC 2449 §5.
pub fn capa(cmd: &Command, offer: &Offer) -> Reply {
    if !cmd.args.is_empty() {
        return Reply::Err("CAPA takes no arguments: send just CAPA".into());
    }
    let mut lines: Vec<String> = CAPABILITIES
        .iter()
        .filter(|c| offer.clear_text_logins || **c != "USER")
        .map(|c| c.to_string())
        .collect();
    // How long retrieved messages stay (§6.7): NEVER unless `--expire` says otherwise.
    lines.push(offer.expire.capability());
    if let Some(seconds) = offer.login_delay {
        // §6.5: the least time between two logins, enforced in authorization.rs `fn log_in`.
        lines.push(format!("LOGIN-DELAY {seconds}"));
    }
    if offer.stls {
        // RFC 2595 §4.
        lines.push("STLS".to_string());
    }
    if offer.sasl {
        // RFC 5034 §3: the mechanisms AUTH accepts (sasl.rs).
        lines.push("SASL PLAIN".into());
    }
    // §6.9: a free-form name and version, for people; clients must not act on it.
    lines.push(format!(
        "IMPLEMENTATION popstate-{}",
        env!("CARGO_PKG_VERSION")
    ));
    Reply::Lines("capability list follows".into(), lines)
}
// ANCHOR_END: capa
