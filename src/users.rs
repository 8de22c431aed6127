//! Users and passwords: the one authentication mechanism (USER/PASS, RFC 1939 §7) needs a list.
//!
//! The users file has one `name:password` per line; the password is everything after the first
//! `:`, spaces included. Blank lines and lines starting with `#` are ignored.
//!
//! ```text
//! # demo users
//! alice:wonderland
//! bob:correct horse battery staple
//! ```
//!
//! A user name becomes a folder name below the maildrop root, so only names that are one safe
//! path component are accepted, here and in USER.
//!
//! A password that looks like a crypt hash (`$6$...`, `$argon2id$...`: a `$`, a name, a `$`) is
//! not taken as a plain password: with the `hashed-passwords` feature SHA-crypt hashes are checked
//! as hashes (hashed.rs), and any other, or any hash without the feature, is an error when the
//! file is read, so that a hash never becomes the password by mistake.

use std::collections::HashMap;
use std::hint::black_box;

/// The accounts popstate serves.
#[derive(Debug, Default, Clone)]
pub struct Users {
    secrets: HashMap<String, Secret>,
    /// A hash that nobody's password matches, as costly as the users' own hashes: what unknown
    /// users and plain passwords are also checked against when the file holds hashes.
    dummy: Option<Secret>,
}

/// What the users file holds for one user.
#[derive(Debug, Clone)]
enum Secret {
    /// The password itself, as written: what USER/PASS compares and what APOP needs.
    Plain(String),
    /// A SHA-crypt hash (hashed.rs).
    #[cfg(feature = "hashed-passwords")]
    Hashed(String),
}

impl Secret {
    /// Reads the password part of a line: a plain password, or a hash.
    fn parse(password: &str) -> Result<Secret, String> {
        match crypt_scheme(password) {
            None => Ok(Secret::Plain(password.to_string())),
            #[cfg(feature = "hashed-passwords")]
            Some("5" | "6") => {
                crate::hashed::check_format(password)?;
                Ok(Secret::Hashed(password.to_string()))
            }
            Some(scheme) => Err(unsupported_hash(scheme)),
        }
    }

    fn matches(&self, password: &str) -> bool {
        match self {
            Secret::Plain(expected) => constant_time_eq(expected.as_bytes(), password.as_bytes()),
            #[cfg(feature = "hashed-passwords")]
            Secret::Hashed(hash) => crate::hashed::verify(password, hash),
        }
    }
}

/// `Some("6")` for `$6$...`: the scheme of a password written as a crypt hash.
fn crypt_scheme(password: &str) -> Option<&str> {
    let (scheme, _) = password.strip_prefix('$')?.split_once('$')?;
    let named = !scheme.is_empty()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    named.then_some(scheme)
}

fn unsupported_hash(scheme: &str) -> String {
    let build = if cfg!(feature = "hashed-passwords") {
        "popstate checks SHA-crypt hashes ($6$, $5$) only"
    } else {
        "this popstate was built without the hashed-passwords feature"
    };
    format!(
        "the password is a ${scheme}$ hash, and {build}: write a $6$ hash (popstate --hash-password NAME), or the plain password"
    )
}

impl Users {
    /// Parses the users file. The error names the line that is wrong.
    pub fn parse(text: &str) -> Result<Users, String> {
        let mut secrets = HashMap::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((name, password)) = line.split_once(':') else {
                return Err(format!("line {}: expected name:password", number + 1));
            };
            check_name(name).map_err(|e| format!("line {}: {e}", number + 1))?;
            let secret =
                Secret::parse(password).map_err(|e| format!("line {}: {e}", number + 1))?;
            if secrets.insert(name.to_string(), secret).is_some() {
                return Err(format!("line {}: user {name} is listed twice", number + 1));
            }
        }
        let dummy = dummy_hash(&secrets);
        Ok(Users { secrets, dummy })
    }

    // ANCHOR: check_password
    /// True if `name` exists and `password` is its password.
    ///
    /// An unknown name is compared against a dummy password, so it costs the same time as a
    /// wrong password and cannot be told apart from one by timing (RFC 1939 §13). Where the
    /// file holds hashes, every check also costs one hash (the dummy's), so that neither an
    /// unknown user nor a plain password answers faster.
    pub fn check_password(&self, name: &str, password: &str) -> bool {
        const NOBODY: &str = "\0no user has this password\0";
        let known = self.secrets.get(name);
        // black_box: the results are unused, and the checks must not be optimised away.
        match (known, &self.dummy) {
            (Some(Secret::Plain(_)) | None, Some(dummy)) => black_box(dummy.matches(password)),
            (None, None) => black_box(constant_time_eq(NOBODY.as_bytes(), password.as_bytes())),
            _ => false,
        };
        known.is_some_and(|secret| secret.matches(password))
    }
    // ANCHOR_END: check_password

    /// Whether anyone's password is stored in plain text: only those users can use APOP.
    pub fn has_plain_password(&self) -> bool {
        self.secrets.values().any(|s| matches!(s, Secret::Plain(_)))
    }

    /// The plain-text password of `name`, for APOP's digest (RFC 1939 §7); `None` for an unknown
    /// user and for one whose password is stored hashed.
    pub fn plain_password(&self, name: &str) -> Option<&str> {
        match self.secrets.get(name)? {
            Secret::Plain(password) => Some(password),
            #[cfg(feature = "hashed-passwords")]
            Secret::Hashed(_) => None,
        }
    }

    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }
}

/// The dummy for [`Users::check_password`]: one as costly as the dearest hash in the file.
#[cfg(feature = "hashed-passwords")]
fn dummy_hash(secrets: &HashMap<String, Secret>) -> Option<Secret> {
    let hashes = secrets.values().filter_map(|s| match s {
        Secret::Hashed(hash) => Some(hash.as_str()),
        Secret::Plain(_) => None,
    });
    crate::hashed::dummy_like(hashes).map(Secret::Hashed)
}

/// Without hashed passwords every check is a plain comparison, and needs no dummy hash.
#[cfg(not(feature = "hashed-passwords"))]
fn dummy_hash(_secrets: &HashMap<String, Secret>) -> Option<Secret> {
    None
}

/// Compares without stopping at the first difference, so the time taken does not tell an
/// attacker how much of a guess was right. (The length of the stored password is not hidden.)
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff);
    }
    diff == 0
}

// ANCHOR: check_name
/// A user name must be usable as one folder name below the maildrop root and nothing more:
/// not empty, not `.` or `..`, no `/`, `\`, `:` or control characters (NUL included).
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a user name must not be empty".into());
    }
    if name == "." || name == ".." {
        return Err(format!("\"{name}\" is not allowed as a user name"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !c.is_ascii_graphic() || matches!(c, '/' | '\\' | ':'))
    {
        return Err(format!(
            "user names are printable ASCII without '/', '\\' or ':' (found {}): they name a folder in the maildrop root",
            c.escape_unicode()
        ));
    }
    if name.len() > 64 {
        return Err("a user name may be at most 64 octets long".into());
    }
    Ok(())
}
// ANCHOR_END: check_name

/// The users file holds passwords in clear: say so when others may read it.
pub fn warn_if_readable_by_others(path: &std::path::Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode();
            if mode & 0o077 != 0 {
                log::warn!(
                    "users file {} can be read by others (mode {:o}); chmod 600 it",
                    path.display(),
                    mode & 0o777
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_passwords_and_comments() {
        let users = Users::parse("# c\n\nalice:wonder land\r\nbob:a:b\n").expect("valid");
        assert_eq!(users.len(), 2);
        assert!(users.check_password("alice", "wonder land"));
        assert!(users.check_password("bob", "a:b"));
        assert!(!users.check_password("alice", "wonder"));
        assert!(!users.check_password("carol", ""));
    }

    #[test]
    fn bad_lines_name_their_number() {
        assert_eq!(
            Users::parse("a:b\nnocolon\n").expect_err("bad").as_str(),
            "line 2: expected name:password"
        );
        assert!(
            Users::parse("../x:y")
                .expect_err("bad")
                .starts_with("line 1")
        );
        assert!(Users::parse("a:b\na:c").expect_err("dup").contains("twice"));
    }

    #[test]
    fn hashes_are_never_taken_as_plain_passwords() {
        let err = Users::parse("a:b\nc:$argon2id$v=19$m=65536,t=2,p=1$c2FsdA$aGFzaA\n")
            .expect_err("argon2 is not supported");
        assert!(
            err.starts_with("line 2: the password is a $argon2id$ hash"),
            "{err}"
        );
        // A `$` that does not start a scheme name is part of a plain password.
        let users = Users::parse("a:$ 5 $\nb:$$x\n").expect("plain");
        assert!(users.check_password("a", "$ 5 $"));
        assert!(users.check_password("b", "$$x"));
        assert!(users.has_plain_password());
    }

    #[test]
    fn names_that_leave_the_root_are_refused() {
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "../etc",
            "a\0b",
            "a\nb",
            "a\\b",
            "a:b",
            "a b",
            "caf\u{e9}",
            "\u{202e}x",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        for good in ["alice", "bob.smith", "x-1", "..hidden"] {
            assert!(check_name(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }
}
