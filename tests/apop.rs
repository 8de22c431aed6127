//! APOP (RFC 1939 §7) over real sockets: the greeting's timestamp (B30), the shared delay, limit
//! and [AUTH] replies, Python's `poplib.apop()` and curl. Needs `--features apop`.
#![cfg(feature = "apop")]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Client, demo_server, demo_server_with, test_config};
use popstate::apop::digest;

/// The `<...>` at the end of a greeting.
fn timestamp_of(greeting: &str) -> &str {
    let start = greeting.rfind(" <").expect("a timestamp in the greeting") + 1;
    assert!(greeting.ends_with('>'), "{greeting}");
    &greeting[start..]
}

#[test]
fn b30_the_greeting_carries_a_new_timestamp_each_time() {
    let server = demo_server();
    let first = server.connect().greeting;
    let second = server.connect().greeting;
    assert!(first.starts_with("+OK popstate ready; log in with USER and PASS (RFC 1939) <"));
    assert!(first.len() + 2 <= 512, "B05");
    let stamp = timestamp_of(&first);
    assert!(stamp.contains('@') && !stamp[1..stamp.len() - 1].contains(['<', '>', ' ']));
    assert_ne!(
        stamp,
        timestamp_of(&second),
        "B30: it differs on every greeting"
    );
}

#[test]
fn b30_apop_logs_in_with_the_right_digest() {
    let server = demo_server();
    let mut c = server.connect();
    let d = digest(timestamp_of(&c.greeting), "wonderland");
    assert_eq!(
        c.cmd(&format!("APOP alice {d}")),
        "+OK alice's maildrop has 6 messages (29816 octets)"
    );
    assert_eq!(c.cmd("STAT"), "+OK 6 29816");
    // Upper-case hex is the same digest.
    let mut c = server.connect();
    let d = digest(timestamp_of(&c.greeting), "builder").to_uppercase();
    assert!(
        c.cmd(&format!("APOP bob {d}"))
            .starts_with("+OK bob's maildrop")
    );
}

#[test]
fn b30_a_digest_for_another_greeting_is_refused() {
    let server = demo_server();
    let old = server.connect();
    let replayed = digest(timestamp_of(&old.greeting), "wonderland");
    let mut c = server.connect();
    assert_eq!(
        c.cmd(&format!("APOP alice {replayed}")),
        "-ERR [AUTH] wrong user name or password; start again with USER"
    );
}

#[test]
fn r02_wrong_digests_share_the_delay_and_the_limit_with_pass() {
    let mut config = test_config();
    config.login.failure_delay = Duration::from_millis(200);
    let server = demo_server_with(config);
    let mut c = server.connect();
    let stamp = timestamp_of(&c.greeting).to_string();
    let started = Instant::now();
    let wrong = c.cmd(&format!("APOP alice {}", digest(&stamp, "wrong")));
    assert_eq!(
        wrong,
        "-ERR [AUTH] wrong user name or password; start again with USER"
    );
    assert!(started.elapsed() >= Duration::from_millis(200));
    // An unknown user: the same reply.
    let unknown = c.cmd(&format!("APOP mallory {}", digest(&stamp, "x")));
    assert_eq!(unknown, wrong);
    c.cmd("USER alice");
    assert_eq!(
        c.cmd("PASS wrong"),
        "-ERR [AUTH] wrong user name or password, 3 times: closing the connection"
    );
    assert!(c.is_closed());
}

#[test]
fn b08_malformed_apop_gets_a_plain_error_and_costs_no_try() {
    let server = demo_server();
    let mut c = server.connect();
    for bad in [
        "APOP",
        "APOP alice",
        "APOP alice 0123",
        &format!("APOP alice {}", "g".repeat(32)),
    ] {
        let reply = c.cmd(bad);
        assert!(
            reply.starts_with("-ERR ") && !reply.contains("[AUTH]"),
            "{bad}: {reply}"
        );
    }
    // Four malformed lines, yet the limit of 3 failures is not reached.
    c.login("alice", "wonderland");
}

/// Replays the book's APOP transcript, with this connection's timestamp and digests in place of
/// the ones the book shows.
#[test]
fn b30_the_book_transcript_replays() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/transcripts/apop/apop.txt");
    let text = std::fs::read_to_string(path).expect("the transcript is there");
    let server = demo_server();
    let mut c = Client::connect(server.addr);
    let mut shown = None;
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        if let Some(expected) = line.strip_prefix("S: ") {
            let got = match shown {
                None => {
                    shown = Some(timestamp_of(expected).to_string());
                    c.greeting
                        .replace(timestamp_of(&c.greeting), timestamp_of(expected))
                }
                Some(_) => c.line(),
            };
            assert_eq!(got, expected);
        } else if let Some(command) = line.strip_prefix("C: ") {
            let shown = shown.as_deref().expect("the greeting comes first");
            let real = timestamp_of(&c.greeting).to_string();
            let mut command = command.to_string();
            for secret in ["wonderland", "wrong"] {
                command = command.replace(&digest(shown, secret), &digest(&real, secret));
            }
            c.send(&command);
        } else {
            panic!("not a transcript line: {line}");
        }
    }
    assert!(c.is_closed());
}

#[test]
#[cfg(feature = "hashed-passwords")]
fn b30_no_timestamp_when_no_password_is_plain() {
    // `openssl passwd -6 -salt saltsalt wonderland`
    let users = "alice:$6$saltsalt$pqxtaP8VN9msji06dnBCbUbaSGTOXyo9jZDqZxik1rPexoqRIW4UKuiD0ZHZchCSd7S4/HoRU8bcFbnz2ihUr.\n";
    let server = common::server_with_users(users, test_config());
    let mut c = server.connect();
    assert!(!c.greeting.contains('<'), "{}", c.greeting);
    common::assert_err(
        &c.cmd("APOP alice c4c9334bac560ecc979e58001b3e22fb"),
        "APOP needs a <timestamp> in the greeting, and this one has none",
    );
    c.login("alice", "wonderland");
}

#[test]
#[cfg(feature = "hashed-passwords")]
fn b30_a_user_with_a_hashed_password_cannot_use_apop() {
    let users = "bob:builder\nalice:$6$saltsalt$pqxtaP8VN9msji06dnBCbUbaSGTOXyo9jZDqZxik1rPexoqRIW4UKuiD0ZHZchCSd7S4/HoRU8bcFbnz2ihUr.\n";
    let server = common::server_with_users(users, test_config());
    let mut c = server.connect();
    let stamp = timestamp_of(&c.greeting).to_string();
    common::assert_err(
        &c.cmd(&format!("APOP alice {}", digest(&stamp, "wonderland"))),
        "[AUTH] wrong user name or password",
    );
    assert!(
        c.cmd(&format!("APOP bob {}", digest(&stamp, "builder")))
            .starts_with("+OK")
    );
}

// ---------------------------------------------------------------------------------------------
// Real clients, each bounded by its own timeout.
// ---------------------------------------------------------------------------------------------

const POPLIB_APOP: &str = r#"
import poplib, sys
p = poplib.POP3("127.0.0.1", int(sys.argv[1]), timeout=20)
try:
    p.apop("alice", "wrong")
except poplib.error_proto as e:
    print("refused:", e.args[0].decode())
print(p.apop("alice", "wonderland").decode())
print(p.stat())
p.quit()
"#;

#[test]
fn b30_poplib_apop_logs_in() {
    let server = demo_server();
    let port = server.addr.port().to_string();
    let out = common::run_tool("python3", &["-I", "-c", POPLIB_APOP, &port]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        [
            "refused: -ERR [AUTH] wrong user name or password; start again with USER",
            "+OK alice's maildrop has 6 messages (29816 octets)",
            "(6, 29816)",
        ]
    );
}

#[test]
fn b30_curl_lists_with_apop() {
    let server = demo_server();
    let out = common::curl_list_as_alice(server.addr, "AUTH=+APOP");
    let listing = String::from_utf8_lossy(&out.stdout);
    assert_eq!(listing.lines().count(), 6, "{listing}");
    let verbose = String::from_utf8_lossy(&out.stderr);
    assert!(
        verbose.contains("> APOP alice "),
        "curl used APOP: {verbose}"
    );
}
