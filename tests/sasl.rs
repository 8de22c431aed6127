//! SASL AUTH PLAIN (RFC 5034, RFC 4616) over real sockets: exact bytes, every malformed form,
//! the shared failure limit, and two real clients (Python's poplib, curl).
//! Needs `--features sasl`; RFC requirement IDs (A01...) as in docs/conformance.md.
#![cfg(feature = "sasl")]

mod common;
#[path = "../examples/replay/transcript.rs"]
mod transcript;

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::{Client, assert_err, demo_server, demo_server_with, test_config};

/// `\0alice\0wonderland` in base64: alice's right credentials.
const ALICE: &str = "AGFsaWNlAHdvbmRlcmxhbmQ=";

fn b64(text: &str) -> String {
    STANDARD.encode(text)
}

/// After a failed AUTH, the session is still in AUTHORIZATION and in step (A07).
fn still_in_step(c: &mut Client) {
    assert_err(&c.cmd("STAT"), "is a TRANSACTION command");
    c.login("alice", "wonderland");
    assert_eq!(c.cmd("STAT"), "+OK 6 29816");
}

#[test]
fn a01_capa_lists_sasl_plain_before_and_after_login() {
    let server = demo_server();
    let mut c = server.connect();
    assert!(c.lines("CAPA").contains(&"SASL PLAIN".to_string()));
    assert!(c.cmd(&format!("AUTH PLAIN {ALICE}")).starts_with("+OK"));
    assert!(c.lines("CAPA").contains(&"SASL PLAIN".to_string()));
}

#[test]
fn a11_bare_auth_lists_the_mechanisms() {
    let server = demo_server();
    let mut c = server.connect();
    c.send("AUTH");
    assert_eq!(
        c.multiline_raw(),
        b"+OK SASL mechanisms follow\r\nPLAIN\r\n.\r\n"
    );
}

#[test]
fn a03_plain_with_an_empty_challenge_then_the_response() {
    let server = demo_server();
    let mut c = server.connect();
    c.send("AUTH PLAIN");
    let mut challenge = [0u8; 4];
    c.reader.read_exact(&mut challenge).expect("challenge");
    assert_eq!(
        &challenge, b"+ \r\n",
        "an empty challenge is exactly \"+ \""
    );
    assert_eq!(
        c.cmd(ALICE),
        "+OK alice's maildrop has 6 messages (29816 octets)"
    );
    assert_eq!(c.cmd("STAT"), "+OK 6 29816");
}

#[test]
fn a05_plain_with_an_initial_response_and_either_case() {
    let server = demo_server();
    let mut c = server.connect();
    assert_eq!(
        c.cmd(&format!("auth plain {ALICE}")),
        "+OK alice's maildrop has 6 messages (29816 octets)"
    );
    // A02: no second AUTH once logged in.
    assert_err(
        &c.cmd(&format!("AUTH PLAIN {ALICE}")),
        "AUTH is an AUTHORIZATION command; you are logged in as alice",
    );
}

#[test]
fn a04_star_cancels_and_the_session_stays_in_step() {
    let server = demo_server();
    let mut c = server.connect();
    assert_eq!(c.cmd("AUTH PLAIN"), "+ ");
    assert_eq!(
        c.cmd("*"),
        "-ERR AUTH cancelled, as the client asked with \"*\" (RFC 5034 section 4)"
    );
    still_in_step(&mut c);
}

#[test]
fn a04_undecodable_base64_is_refused_in_both_places() {
    let server = demo_server();
    let mut c = server.connect();
    // Bad alphabet, a misplaced "=", padding left off, a lone character.
    for bad in ["AGFs!WNl", "AG=FsaWNl", "AGFsaWNlAHdvbmRlcmxhbmQ", "A"] {
        assert_err(
            &c.cmd(&format!("AUTH PLAIN {bad}")),
            "the SASL response is not base64 (RFC 4648 section 4)",
        );
        assert_eq!(c.cmd("AUTH PLAIN"), "+ ");
        assert_err(&c.cmd(bad), "the SASL response is not base64");
    }
    still_in_step(&mut c);
}

#[test]
fn a05_equals_is_an_empty_response_which_plain_refuses() {
    let server = demo_server();
    let mut c = server.connect();
    assert_err(
        &c.cmd("AUTH PLAIN ="),
        "an AUTH PLAIN message is three fields with NUL between them, not 1",
    );
    still_in_step(&mut c);
}

#[test]
fn a02_unknown_mechanisms_and_extra_arguments_are_refused() {
    let server = demo_server();
    let mut c = server.connect();
    assert_eq!(
        c.cmd("AUTH CRAM-MD5"),
        "-ERR unknown SASL mechanism CRAM-MD5: popstate offers PLAIN"
    );
    assert_err(
        &c.cmd(&format!("AUTH PLAIN {ALICE} more")),
        "AUTH takes fewer arguments: the syntax is AUTH mechanism [initial-response]",
    );
    still_in_step(&mut c);
}

#[test]
fn rfc4616_malformed_plain_messages_get_their_own_errors() {
    let server = demo_server();
    let mut c = server.connect();
    let cases = [
        (
            "alice\0wonderland",
            "three fields with NUL between them, not 2",
        ),
        (
            "\0alice\0wonder\0land",
            "three fields with NUL between them, not 4",
        ),
        ("\0alice\0", "needs a user name and a password"),
        ("\0\0wonderland", "needs a user name and a password"),
        (
            "bob\0alice\0wonderland",
            "[AUTH] a user may only log in as themselves",
        ),
    ];
    for (message, error) in cases {
        assert_err(&c.cmd(&format!("AUTH PLAIN {}", b64(message))), error);
    }
    let not_utf8 = STANDARD.encode(b"\0alice\0\xff\xfe");
    assert_err(
        &c.cmd(&format!("AUTH PLAIN {not_utf8}")),
        "an AUTH PLAIN message is UTF-8 text",
    );
    // Acting as oneself is allowed.
    assert!(
        c.cmd(&format!("AUTH PLAIN {}", b64("alice\0alice\0wonderland")))
            .starts_with("+OK")
    );
}

#[test]
fn a05_a06_long_responses_are_read_to_their_end() {
    let server = demo_server();
    let mut c = server.connect();
    // An initial response is still bound by the 255-octet command line.
    let long = b64(&format!("\0alice\0{}", "x".repeat(200)));
    assert_err(
        &c.cmd(&format!("AUTH PLAIN {long}")),
        "command line too long",
    );
    // On its own line it may be longer: three 255-octet fields fit (RFC 4616 section 2).
    let biggest = b64(&format!("{0}\0{0}\0{0}", "y".repeat(255)));
    assert_eq!(biggest.len(), 1024);
    assert_eq!(c.cmd("AUTH PLAIN"), "+ ");
    assert_err(&c.cmd(&biggest), "[AUTH] wrong user name or password");
    let too_big = b64(&format!("\0alice\0{}", "z".repeat(256)));
    assert_eq!(c.cmd("AUTH PLAIN"), "+ ");
    assert_err(
        &c.cmd(&too_big),
        "each field of an AUTH PLAIN message may hold at most 255 octets",
    );
    assert_eq!(c.cmd("AUTH PLAIN"), "+ ");
    assert_err(
        &c.cmd(&"A".repeat(100_000)),
        "SASL response too long: at most 1026 octets including CRLF",
    );
    still_in_step(&mut c);
}

#[test]
fn r02_wrong_credentials_share_the_delay_and_the_limit_with_pass() {
    let mut config = test_config();
    config.login.failure_delay = Duration::from_millis(200);
    let server = demo_server_with(config);
    let mut c = server.connect();
    let started = Instant::now();
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", b64("\0alice\0wrong"))),
        "-ERR [AUTH] wrong user name or password; start again with USER"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "same delay as PASS"
    );
    // An unknown user gets the very same reply.
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {}", b64("\0mallory\0x"))),
        "-ERR [AUTH] wrong user name or password; start again with USER"
    );
    // The third failure, by PASS, reaches the limit of 3 that AUTH counted towards.
    c.cmd("USER alice");
    assert_eq!(
        c.cmd("PASS wrong"),
        "-ERR [AUTH] wrong user name or password, 3 times: closing the connection"
    );
    assert!(c.is_closed());
}

#[test]
fn a02_auth_after_a_user_forgets_the_user() {
    let server = demo_server();
    let mut c = server.connect();
    assert!(c.cmd("USER alice").starts_with("+OK"));
    assert_eq!(c.cmd("AUTH PLAIN"), "+ ");
    assert!(c.cmd("*").starts_with("-ERR AUTH cancelled"));
    assert_err(&c.cmd("PASS wonderland"), "PASS must come right after USER");
}

#[test]
fn a01_the_book_transcript_replays() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/transcripts/sasl/auth-plain.txt");
    let text = std::fs::read_to_string(path).expect("the transcript is there");
    let server = demo_server();
    if let Err(difference) = transcript::replay(&text, &server.addr.to_string()) {
        panic!("auth-plain.txt, {difference}");
    }
}

// ---------------------------------------------------------------------------------------------
// Real clients. Each is bounded by its own timeout (poplib's socket timeout, curl --max-time).
// ---------------------------------------------------------------------------------------------

/// Python's poplib has no AUTH method, so the script sends AUTH through `_shortcmd`, both with
/// an initial response and with the `+ ` continuation, as a SASL-minded client would.
const POPLIB_AUTH: &str = r#"
import base64, poplib, sys
port = int(sys.argv[1])
response = base64.b64encode(b"\0alice\0wonderland").decode()
p = poplib.POP3("127.0.0.1", port, timeout=20)
print(p._shortcmd("AUTH PLAIN " + response).decode())
print(p.stat())
p.quit()
p = poplib.POP3("127.0.0.1", port, timeout=20)
print(repr(p._shortcmd("AUTH PLAIN")))
print(p._shortcmd(response).decode())
print(p.stat())
try:
    p._shortcmd("AUTH PLAIN " + response)
except poplib.error_proto as e:
    print("refused:", e.args[0].decode())
p.quit()
"#;

#[test]
fn a09_poplib_logs_in_with_auth_plain_both_ways() {
    let server = demo_server();
    let port = server.addr.port().to_string();
    let out = common::run_tool("python3", &["-I", "-c", POPLIB_AUTH, &port]);
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "+OK alice's maildrop has 6 messages (29816 octets)",
            "(6, 29816)",
            "b'+ '",
            "+OK alice's maildrop has 6 messages (29816 octets)",
            "(6, 29816)",
            "refused: -ERR AUTH is an AUTHORIZATION command; you are logged in as alice already (QUIT and connect again to change user)",
        ]
    );
}

#[test]
fn a09_curl_lists_with_auth_plain() {
    let server = demo_server();
    let out = common::curl_list_as_alice(server.addr, "AUTH=PLAIN");
    let listing = String::from_utf8_lossy(&out.stdout);
    assert_eq!(listing.lines().count(), 6, "{listing}");
    assert!(listing.starts_with("1 "), "{listing}");
    let verbose = String::from_utf8_lossy(&out.stderr);
    assert!(
        verbose.contains("> AUTH PLAIN"),
        "curl logged in with AUTH PLAIN: {verbose}"
    );
    assert!(!verbose.contains("> USER"), "{verbose}");
}
