//! Hashed passwords in the users file (`--features hashed-passwords`): SHA-512-crypt as
//! `openssl passwd -6` and `popstate --hash-password` write it, over real sockets; and the timing
//! of unknown users against wrong passwords (RFC 1939 §13).
#![cfg(feature = "hashed-passwords")]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{server_with_users, test_config};
use popstate::users::Users;

/// `openssl passwd -6 -salt saltsalt wonderland` (OpenSSL 3.0.19).
const ALICE_HASH: &str = "$6$saltsalt$pqxtaP8VN9msji06dnBCbUbaSGTOXyo9jZDqZxik1rPexoqRIW4UKuiD0ZHZchCSd7S4/HoRU8bcFbnz2ihUr.";

#[test]
fn b12_pass_checks_a_sha512_crypt_hash() {
    let users = format!("alice:{ALICE_HASH}\nbob:builder\n");
    let server = server_with_users(&users, test_config());
    let mut c = server.connect();
    c.cmd("USER alice");
    assert_eq!(
        c.cmd("PASS wonderlan"),
        "-ERR [AUTH] wrong user name or password; start again with USER"
    );
    c.cmd("USER alice");
    assert_eq!(
        c.cmd("PASS wonderland"),
        "+OK alice's maildrop has 0 messages (0 octets)"
    );
    // A plain password beside hashes still works.
    server.connect().login("bob", "builder");
}

#[test]
#[cfg(feature = "sasl")]
fn a09_auth_plain_checks_a_hash_too() {
    let server = server_with_users(&format!("alice:{ALICE_HASH}\n"), test_config());
    let mut c = server.connect();
    common::assert_err(
        &c.cmd("AUTH PLAIN AGFsaWNlAHdyb25n"),
        "[AUTH] wrong user name or password",
    );
    assert!(
        c.cmd("AUTH PLAIN AGFsaWNlAHdvbmRlcmxhbmQ=")
            .starts_with("+OK")
    );
}

#[test]
fn hash_password_prints_a_line_the_server_accepts() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_popstate"))
        .args(["--hash-password", "carol"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start popstate");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"two words\n")
        .expect("write the password");
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8(out.stdout).expect("text");
    assert!(line.starts_with("carol:$6$rounds=5000$"), "{line}");
    assert_eq!(
        line.trim_end().len(),
        "carol:$6$rounds=5000$".len() + 16 + 1 + 86
    );
    let server = server_with_users(&line, test_config());
    server.connect().login("carol", "two words");
}

#[test]
fn bad_hashes_are_refused_when_the_file_is_read() {
    for (line, error) in [
        (
            "a:$6$salt$short\n",
            "line 1: the hash part of $6$ is 86 characters",
        ),
        (
            "a:$6$rounds=1$s$x\n",
            "line 1: rounds=1: SHA-crypt allows 1000 to 999999999",
        ),
        (
            "a:$2b$10$abc\n",
            "line 1: the password is a $2b$ hash, and popstate checks SHA-crypt hashes ($6$, $5$) only",
        ),
    ] {
        let err = Users::parse(line).expect_err(line);
        assert!(err.starts_with(error), "{line}: {err}");
    }
}

/// How long one check takes.
fn time(f: impl FnOnce() -> bool) -> Duration {
    let started = Instant::now();
    assert!(!f(), "every password tried here is wrong");
    started.elapsed()
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

#[test]
fn b28_unknown_users_take_as_long_as_wrong_passwords() {
    let users = Users::parse(&format!("alice:{ALICE_HASH}\nbob:builder\n")).expect("valid");
    // Interleaved, so that a busy machine slows all three alike.
    let (mut wrong, mut unknown, mut plain) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..15 {
        wrong.push(time(|| users.check_password("alice", "guess")));
        unknown.push(time(|| users.check_password("mallory", "guess")));
        plain.push(time(|| users.check_password("bob", "guess")));
    }
    let wrong = median(wrong);
    for (what, t) in [
        ("unknown user", median(unknown)),
        ("plain password", median(plain)),
    ] {
        let ratio = t.as_secs_f64() / wrong.as_secs_f64();
        assert!(
            (0.5..=2.0).contains(&ratio),
            "{what}: {t:?} against {wrong:?} for a wrong hashed password (ratio {ratio:.2})"
        );
    }
}
