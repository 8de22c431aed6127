//! Hashed passwords in the users file: the `hashed-passwords` feature.
//!
//! ```text
//! alice:wonderland
//! bob:$6$rounds=5000$kNf0W1mB8dQz2x9Y$...86 characters...
//! ```
//!
//! A password that starts with `$6$` (or `$5$`) is a SHA-512-crypt (SHA-256-crypt) hash, the
//! format `openssl passwd -6`, `mkpasswd -m sha-512` and `popstate --hash-password` write and
//! `/etc/shadow` uses. A stolen users file then gives away no password directly; each guess costs
//! the attacker (and each login costs the server) 5000 rounds of SHA-512. The `sha-crypt` crate
//! (RustCrypto) does the hashing; this file only checks the format and keeps the timing even.

use std::io::Read;

use sha_crypt::{Algorithm, Params, PasswordHasher, PasswordVerifier, ShaCrypt};

/// The characters of crypt's base64, for salts and hashes.
fn crypt_base64(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/')
}

// ANCHOR: check_format
/// Checks that `hash` is a SHA-crypt string the crate can verify, and says what is wrong if not:
/// `$6$` or `$5$`, an optional `rounds=N$`, a salt of up to 16 characters, then the hash.
pub fn check_format(hash: &str) -> Result<(), String> {
    let fields: Vec<&str> = hash.split('$').collect();
    let (id, rest) = match fields.as_slice() {
        ["", id, rest @ ..] => (*id, rest),
        _ => return Err("a hashed password starts with $6$ or $5$".into()),
    };
    let length = match id {
        "6" => 86,
        "5" => 43,
        _ => return Err(format!("${id}$ is not SHA-crypt: use $6$ (SHA-512-crypt)")),
    };
    let (salt, digest) = match rest {
        [rounds, salt, digest] => {
            let n = rounds
                .strip_prefix("rounds=")
                .and_then(|n| n.parse::<u32>().ok())
                .ok_or_else(|| format!("${id}${rounds}$: expected rounds=N"))?;
            Params::new(n).map_err(|_| {
                format!(
                    "rounds={n}: SHA-crypt allows {} to {}",
                    Params::ROUNDS_MIN,
                    Params::ROUNDS_MAX
                )
            })?;
            (*salt, *digest)
        }
        [salt, digest] => (*salt, *digest),
        _ => return Err(format!("${id}$ hash: expected [rounds=N$]salt$hash")),
    };
    if salt.len() > 16 || !crypt_base64(salt) {
        return Err("the salt of a SHA-crypt hash is up to 16 characters of [./0-9A-Za-z]".into());
    }
    if digest.len() != length || !crypt_base64(digest) {
        return Err(format!(
            "the hash part of ${id}$ is {length} characters of [./0-9A-Za-z]; this one is cut or changed"
        ));
    }
    Ok(())
}
// ANCHOR_END: check_format

// ANCHOR: verify
/// True if `password` hashes to `hash` (checked by [`check_format`] when the file was read).
/// The crate compares the digests in constant time.
pub fn verify(password: &str, hash: &str) -> bool {
    ShaCrypt::default()
        .verify_password(password.as_bytes(), hash)
        .is_ok()
}
// ANCHOR_END: verify

/// A hash of no one's password that costs as much to check as the dearest of `hashes` (the most
/// rounds, SHA-512 before SHA-256), for unknown users to be checked against: a wrong name must
/// take as long as a wrong password (RFC 1939 §13). `None` when there are no hashes.
pub fn dummy_like<'a>(hashes: impl Iterator<Item = &'a str>) -> Option<String> {
    let cost = |hash: &str| {
        let rounds = hash
            .split('$')
            .nth(2)
            .and_then(|f| f.strip_prefix("rounds="))
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(Params::RECOMMENDED_ROUNDS);
        (rounds, hash.starts_with("$6$"))
    };
    let (rounds, sha512) = hashes.map(cost).max()?;
    let algorithm = if sha512 {
        Algorithm::Sha512Crypt
    } else {
        Algorithm::Sha256Crypt
    };
    let params = Params::new(rounds).ok()?;
    ShaCrypt::new(algorithm, params)
        .hash_password_with_salt(b"\0no user has this password\0", b"popstate-dummy")
        .ok()
        .map(|h| h.as_str().to_string())
}

// ANCHOR: hash_password
/// A new SHA-512-crypt hash of `password` with 5000 rounds and a random 16-character salt, as
/// `openssl passwd -6` makes one.
pub fn hash(password: &str) -> Result<String, String> {
    // 12 random octets are the 16 characters of salt that SHA-crypt keeps.
    let mut salt = [0u8; 12];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut salt))
        .map_err(|e| format!("cannot read a random salt from /dev/urandom: {e}"))?;
    ShaCrypt::default()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map(|h| h.as_str().to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}
// ANCHOR_END: hash_password

/// `--hash-password NAME`: the line to paste into the users file.
pub fn print_users_line(name: &str) -> Result<(), String> {
    crate::users::check_name(name).map_err(|e| format!("--hash-password {name}: {e}"))?;
    let password = read_password()?;
    println!("{name}:{}", hash(&password)?);
    Ok(())
}

/// The password from a terminal, typed twice and not shown (`stty -echo`: no crate needed), or
/// one line from a pipe (`echo "$PASSWORD" | popstate --hash-password alice`).
fn read_password() -> Result<String, String> {
    use std::io::IsTerminal;
    let read_line = || -> Result<String, String> {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the password: {e}"))?;
        let line = line.strip_suffix('\n').unwrap_or(&line);
        Ok(line.strip_suffix('\r').unwrap_or(line).to_string())
    };
    let password = if std::io::stdin().is_terminal() {
        let stty = |setting: &str| {
            std::process::Command::new("stty")
                .arg(setting)
                .stdin(std::process::Stdio::inherit())
                .status()
                .map_err(|e| format!("cannot run stty {setting} to hide the password: {e}"))
        };
        stty("-echo")?;
        eprint!("Password: ");
        let first = read_line();
        eprint!("\nThe same again: ");
        let second = read_line();
        eprintln!();
        stty("echo")?;
        let (first, second) = (first?, second?);
        if first != second {
            return Err("the two passwords differ; nothing printed".into());
        }
        first
    } else {
        read_line()?
    };
    if password.is_empty() {
        return Err("the password is empty; nothing printed".into());
    }
    Ok(password)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `openssl passwd -6 -salt saltsalt wonderland`, made with OpenSSL 3.0.19.
    const OPENSSL: &str = "$6$saltsalt$pqxtaP8VN9msji06dnBCbUbaSGTOXyo9jZDqZxik1rPexoqRIW4UKuiD0ZHZchCSd7S4/HoRU8bcFbnz2ihUr.";

    #[test]
    fn verifies_what_openssl_writes() {
        check_format(OPENSSL).expect("a valid hash");
        assert!(verify("wonderland", OPENSSL));
        assert!(!verify("wonderlane", OPENSSL));
    }

    #[test]
    fn hashes_verify_and_differ() {
        let a = hash("correct horse").expect("hash");
        let b = hash("correct horse").expect("hash");
        assert_ne!(a, b, "a random salt each time");
        check_format(&a).expect("its own hashes are valid");
        assert!(verify("correct horse", &a));
        assert!(!verify("correct horsf", &a));
    }

    #[test]
    fn bad_hashes_are_named() {
        for bad in [
            "$6$",
            "$6$salt",
            "$6$salt$short",
            "$1$salt$abc",
            "$6$rounds=10$salt$abc",
            "$6$rounds=x$salt$abc",
            &OPENSSL[..OPENSSL.len() - 1],
        ] {
            assert!(check_format(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dummy_costs_the_most_rounds() {
        let dummy = dummy_like([OPENSSL, "$6$rounds=9000$s$x"].into_iter()).expect("a dummy");
        assert!(dummy.starts_with("$6$rounds=9000$"), "{dummy}");
        assert!(!verify("", &dummy));
        assert_eq!(dummy_like(std::iter::empty()), None);
    }
}
