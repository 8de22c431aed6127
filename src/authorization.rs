//! The AUTHORIZATION state (RFC 1939 §4, §7): the client says who it is.
//!
//! Commands: `USER name`, `PASS password`, `QUIT`, `CAPA` (RFC 2449). Built with the `sasl` or
//! `apop` feature, also `AUTH` (sasl.rs) and `APOP` (apop.rs), which end in the same `fn log_in`;
//! with the `tls` feature, `STLS` (RFC 2595 §4), after which the client is still here, inside TLS.
//!
//! The state ends with a PASS that is right *and* gets the maildrop's exclusive lock (on to
//! TRANSACTION), with QUIT (the connection closes and nothing changes), or with a dropped
//! connection or the idle timer. A wrong password, or a maildrop that another session holds,
//! leaves the client here to try again.

use std::thread;
use std::time::Duration;

use crate::capa::{Offer, capa, not_offered};
use crate::command::Command;
use crate::expire::Expire;
use crate::login_delay::LoginDelay;
use crate::maildrop::{Maildrop, OpenError, Store};
use crate::protocol::{self, Reply};
use crate::session::GREETING;
use crate::users::{Users, check_name};

/// Commands that belong to TRANSACTION, to tell a client that sends one here to log in first.
const TRANSACTION_COMMANDS: &[&str] = &[
    "STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "TOP", "UIDL",
];

/// What one AUTHORIZATION command leads to.
pub enum Outcome {
    /// Reply and stay in AUTHORIZATION.
    Stay(Reply),
    /// Reply `+OK` and go on to TRANSACTION with this user's locked maildrop.
    LoggedIn {
        reply: Reply,
        user: String,
        maildrop: Box<dyn Maildrop>,
    },
    /// Reply and close the connection: QUIT, or too many wrong passwords. Either way, nothing
    /// in any maildrop changes (RFC 1939 §6: UPDATE only follows TRANSACTION).
    Quit(Reply),
    /// Reply `+OK` to STLS, then run the TLS handshake and stay in AUTHORIZATION (tls.rs).
    #[cfg(feature = "tls")]
    StartTls(Reply),
}

/// How wrong passwords are treated (defaults and reasons in limits.rs).
#[derive(Debug, Clone, Copy)]
pub struct LoginPolicy {
    /// Wait before answering a wrong PASS, to make guessing slow.
    pub failure_delay: Duration,
    /// Wrong passwords before the session is closed.
    pub max_failures: u32,
    /// Refuse logins that send a password in clear until TLS is active (RFC 2595 §2.3).
    pub require_tls: bool,
}

/// The AUTHORIZATION state of one session.
pub struct Authorization<'a> {
    users: &'a Users,
    store: &'a dyn Store,
    /// When each user last logged in, shared by every session (login_delay.rs).
    login_delay: &'a LoginDelay,
    policy: LoginPolicy,
    /// What CAPA says about retention (expire.rs); UPDATE enforces it.
    expire: Expire,
    /// Wrong passwords so far in this session.
    failures: u32,
    /// The name from a USER just accepted; PASS must come next (RFC 1939 §7).
    user: Option<String>,
    /// Whether TLS protects the connection (STLS, RFC 2595; or implicit TLS, RFC 8314).
    tls_active: bool,
    /// The server has a certificate, so STLS may be offered while TLS is not active.
    stls_available: bool,
    /// The `<...>` in this session's greeting, when APOP can be used (apop.rs, RFC 1939 §7).
    #[cfg(feature = "apop")]
    timestamp: Option<String>,
}

impl<'a> Authorization<'a> {
    pub fn new(
        users: &'a Users,
        store: &'a dyn Store,
        login_delay: &'a LoginDelay,
        policy: LoginPolicy,
    ) -> Self {
        Authorization {
            users,
            store,
            login_delay,
            policy,
            expire: Expire::Never,
            failures: 0,
            user: None,
            tls_active: false,
            stls_available: false,
            #[cfg(feature = "apop")]
            timestamp: crate::apop::timestamp(users),
        }
    }

    /// The server has a certificate: STLS is offered until TLS is active.
    pub fn offer_stls(&mut self) {
        self.stls_available = true;
    }

    /// The server keeps retrieved messages only so long (`--expire`, RFC 2449 §6.7).
    pub fn announce_expire(&mut self, expire: Expire) {
        self.expire = expire;
    }

    /// The TLS handshake is done (STLS or implicit TLS). The state is still AUTHORIZATION
    /// (RFC 2595 §4, RFC 8314 §3.2); CAPA changes, so clients ask again, and logins that send
    /// a password may go ahead.
    pub fn tls_started(&mut self) {
        self.tls_active = true;
    }

    // ANCHOR: dispatch
    /// Answers one command line: a command, or the reason the line is not one.
    pub fn handle(&mut self, line: &Result<Command, String>) -> Outcome {
        // PASS is only valid right after USER: any other line, even one that is not a command
        // at all, forgets the name.
        let pending_user = self.user.take();
        let cmd = match line {
            Ok(cmd) => cmd,
            Err(why) => return Outcome::Stay(Reply::Err(why.clone())),
        };
        match cmd.keyword.as_str() {
            "USER" => Outcome::Stay(self.user(cmd)),
            "PASS" => self.pass(cmd, pending_user),
            "QUIT" => quit(cmd),
            "CAPA" => Outcome::Stay(capa(cmd, &self.offer())),
            #[cfg(feature = "tls")]
            "STLS" => self.stls(cmd),
            #[cfg(feature = "sasl")]
            "AUTH" => crate::sasl::auth(self, cmd),
            #[cfg(feature = "apop")]
            "APOP" => crate::apop::apop(self, cmd),
            other => Outcome::Stay(not_here(other)),
        }
    }
    // ANCHOR_END: dispatch

    // ANCHOR: user
    /// ```text
    /// USER name
    ///   +OK   (always, for a well-formed name: see below)
    ///   -ERR  the name cannot be a user name at all
    /// ```
    /// RFC 1939 §7, §13. The reply is the same whether or not the user exists; only PASS tells
    /// right from wrong, so a stranger cannot probe for valid names one USER at a time.
    fn user(&mut self, cmd: &Command) -> Reply {
        if let Err(e) = cmd.expect_args(1, 1, "USER name") {
            return Reply::Err(e);
        }
        if let Some(refusal) = self.needs_tls() {
            return refusal;
        }
        let name = &cmd.args[0];
        if let Err(e) = check_name(name) {
            return Reply::Err(e);
        }
        self.user = Some(name.clone());
        Reply::Ok(format!("now send PASS with the password for {name}"))
    }
    // ANCHOR_END: user

    // ANCHOR: pass
    /// ```text
    /// PASS password
    ///   +OK   logged in; maildrop locked (now in TRANSACTION)
    ///   -ERR [AUTH]      wrong name or password
    ///   -ERR [IN-USE]    right password, but another session has the maildrop
    ///   -ERR [LOGIN-DELAY]  right password, but too soon after this user's last login
    ///   -ERR [SYS/TEMP]  / [SYS/PERM]   the maildrop could not be opened
    /// ```
    /// RFC 1939 §7: the password is the rest of the line, spaces included. RFC 1939 §4: the
    /// maildrop is locked before `+OK`, and a failure leaves no lock behind.
    fn pass(&mut self, cmd: &Command, pending_user: Option<String>) -> Outcome {
        if let Some(refusal) = self.needs_tls() {
            return Outcome::Stay(refusal);
        }
        let Some(name) = pending_user else {
            return Outcome::Stay(Reply::Err(
                "PASS must come right after USER: send USER name first".into(),
            ));
        };
        let verified = self.users.check_password(&name, &cmd.rest);
        self.log_in(name, verified)
    }

    /// The end of every login, whichever command proved the credentials (PASS here, AUTH in
    /// sasl.rs, APOP in apop.rs), so that all of them cost the same and count the same.
    pub(crate) fn log_in(&mut self, name: String, verified: bool) -> Outcome {
        if !verified {
            // One reply for "no such user" and "wrong password" (RFC 3206 §5 [AUTH]), after the
            // same wait, so neither the text nor the time tells them apart.
            thread::sleep(self.policy.failure_delay);
            self.failures += 1;
            if self.failures >= self.policy.max_failures {
                return Outcome::Quit(Reply::Err(format!(
                    "[AUTH] wrong user name or password, {} times: closing the connection",
                    self.failures
                )));
            }
            return Outcome::Stay(Reply::Err(
                "[AUTH] wrong user name or password; start again with USER".into(),
            ));
        }
        // ANCHOR: login_delay
        // RFC 2449 §8.1.1: the code goes on PASS (or AUTH, APOP), not on USER, which would tell
        // a stranger that the name exists; and only once the password is right, so that nobody
        // else learns when this user last logged in.
        if let Some(left) = self.login_delay.wait(&name) {
            let delay = self.login_delay.seconds().unwrap_or_default();
            return Outcome::Stay(Reply::Err(format!(
                "[LOGIN-DELAY] {name} may log in once every {delay} seconds: try again in {} seconds",
                left.as_secs() + u64::from(left.subsec_nanos() > 0)
            )));
        }
        // ANCHOR_END: login_delay
        match self.store.open_maildrop(&name) {
            Ok(maildrop) => {
                self.login_delay.record(&name);
                let messages = maildrop.messages();
                let octets: u64 = messages.iter().map(|m| m.size).sum();
                let reply = Reply::Ok(format!(
                    "{name}'s maildrop has {} ({octets} octets)",
                    protocol::messages(messages.len())
                ));
                Outcome::LoggedIn {
                    reply,
                    user: name,
                    maildrop,
                }
            }
            Err(OpenError::InUse) => Outcome::Stay(Reply::Err(format!(
                "[IN-USE] {name}'s maildrop is in use by another session; try again when it has ended"
            ))),
            Err(OpenError::Temporary(why)) => {
                Outcome::Stay(Reply::Err(format!("[SYS/TEMP] {why}; try again later")))
            }
            Err(OpenError::Permanent(why)) => Outcome::Stay(Reply::Err(format!(
                "[SYS/PERM] {why}; ask the administrator"
            ))),
        }
    }
    // ANCHOR_END: pass

    /// The tags of CAPA that depend on this session (RFC 2595 §4: STLS only while it can be
    /// used; §2.3 and RFC 5034 §4: no login method that sends a password while it would cross
    /// the wire unprotected and `--require-tls` wants TLS first).
    pub fn offer(&self) -> Offer {
        Offer {
            stls: self.stls_available && !self.tls_active,
            clear_text_logins: self.clear_text_allowed(),
            sasl: cfg!(feature = "sasl") && self.clear_text_allowed(),
            login_delay: self.login_delay.seconds(),
            expire: self.expire,
        }
    }

    // ANCHOR: needs_tls
    /// With `--require-tls`, the refusal for a clear-text login before TLS (RFC 2595 §2.3). No
    /// `[AUTH]` code: the credentials were not even looked at.
    fn needs_tls(&self) -> Option<Reply> {
        (!self.clear_text_allowed()).then(|| {
            Reply::Err(
                "this server takes passwords only over TLS: send STLS first, or connect to its TLS port"
                    .into(),
            )
        })
    }
    // ANCHOR_END: needs_tls

    // ANCHOR: stls
    /// ```text
    /// STLS
    ///   +OK   (then the TLS handshake, right after the CRLF; the state stays AUTHORIZATION)
    ///   -ERR  TLS is active already, the server has no certificate, or arguments were given
    /// ```
    /// RFC 2595 §4. The handshake itself is the session loop's business (session.rs,
    /// `fn start_tls`), and a name from USER is forgotten, like after any other command.
    #[cfg(feature = "tls")]
    fn stls(&self, cmd: &Command) -> Outcome {
        if let Err(e) = cmd.expect_args(0, 0, "STLS") {
            return Outcome::Stay(Reply::Err(e));
        }
        if self.tls_active {
            return Outcome::Stay(Reply::Err(
                "TLS is already active on this connection (RFC 2595 section 4)".into(),
            ));
        }
        if !self.stls_available {
            return Outcome::Stay(Reply::Err(
                "STLS is not available: this server has no certificate (--tls-cert); log in with USER and PASS".into(),
            ));
        }
        Outcome::StartTls(Reply::Ok("begin TLS negotiation".into()))
    }
    // ANCHOR_END: stls

    /// Whether a password may cross this connection now (RFC 2595 §2.3, `--require-tls`).
    pub(crate) fn clear_text_allowed(&self) -> bool {
        self.tls_active || !self.policy.require_tls
    }

    /// The accounts, for the checks that AUTH and APOP make in their own files.
    pub fn users(&self) -> &Users {
        self.users
    }

    /// The greeting (RFC 1939 §4), ending in this session's timestamp when it offers APOP.
    pub fn greeting(&self) -> String {
        match self.timestamp() {
            Some(timestamp) => format!("{GREETING} {timestamp}"),
            None => GREETING.to_string(),
        }
    }

    /// The greeting's `<...>` timestamp, if this session offers APOP.
    #[cfg(feature = "apop")]
    pub fn timestamp(&self) -> Option<&str> {
        self.timestamp.as_deref()
    }

    /// Without the `apop` feature there is no APOP, so no greeting carries a timestamp.
    #[cfg(not(feature = "apop"))]
    pub fn timestamp(&self) -> Option<&str> {
        None
    }
}

/// ```text
/// QUIT
///   +OK  (the connection closes; nothing in any maildrop changes)
/// ```
/// RFC 1939 §4, §6: QUIT before login does not enter UPDATE.
fn quit(cmd: &Command) -> Outcome {
    match cmd.expect_args(0, 0, "QUIT") {
        Ok(()) => Outcome::Quit(Reply::Ok("popstate signing off (not logged in)".into())),
        Err(e) => Outcome::Stay(Reply::Err(e)),
    }
}

// ANCHOR: not_here
/// The reply to a keyword that AUTHORIZATION does not accept: say where it belongs (RFC 1939 §3
/// requires only `-ERR`; the text is for the person at the keyboard).
fn not_here(keyword: &str) -> Reply {
    if let Some(why) = not_offered(keyword) {
        Reply::Err(why)
    } else if TRANSACTION_COMMANDS.contains(&keyword) {
        Reply::Err(format!(
            "{keyword} is a TRANSACTION command; log in first with USER and PASS"
        ))
    } else {
        Reply::Err(format!(
            "unknown command {keyword}; before login the commands are USER, PASS, CAPA and QUIT"
        ))
    }
}
// ANCHOR_END: not_here
