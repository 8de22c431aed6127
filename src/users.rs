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

use std::collections::HashMap;

/// The accounts popstate serves.
#[derive(Debug, Default, Clone)]
pub struct Users {
    passwords: HashMap<String, String>,
}

impl Users {
    /// Parses the users file. The error names the line that is wrong.
    pub fn parse(text: &str) -> Result<Users, String> {
        let mut passwords = HashMap::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((name, password)) = line.split_once(':') else {
                return Err(format!("line {}: expected name:password", number + 1));
            };
            check_name(name).map_err(|e| format!("line {}: {e}", number + 1))?;
            if passwords
                .insert(name.to_string(), password.to_string())
                .is_some()
            {
                return Err(format!("line {}: user {name} is listed twice", number + 1));
            }
        }
        Ok(Users { passwords })
    }

    // ANCHOR: check_password
    /// True if `name` exists and `password` is its password.
    ///
    /// An unknown name is compared against a dummy password, so it costs the same time as a
    /// wrong password and cannot be told apart from one by timing (RFC 1939 §13).
    pub fn check_password(&self, name: &str, password: &str) -> bool {
        const NOBODY: &str = "\0no user has this password\0";
        match self.passwords.get(name) {
            Some(expected) => constant_time_eq(expected.as_bytes(), password.as_bytes()),
            None => {
                // black_box: the result is unused, and the comparison must not be optimised away.
                std::hint::black_box(constant_time_eq(NOBODY.as_bytes(), password.as_bytes()));
                false
            }
        }
    }
    // ANCHOR_END: check_password

    pub fn len(&self) -> usize {
        self.passwords.len()
    }

    pub fn is_empty(&self) -> bool {
        self.passwords.is_empty()
    }
}

/// Compares without stopping at the first difference, so the time taken does not tell an
/// attacker how much of a guess was right. (The length of the stored password is not hidden.)
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
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
