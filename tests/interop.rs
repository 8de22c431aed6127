//! Interoperability: the real server driven by real POP3 clients over 127.0.0.1, Python's stdlib
//! `poplib` (through `tests/interop/poplib_client.py`) and curl's `pop3://` support.
//!
//! Both clients must be installed: a missing `python3` or `curl` fails the test with a message
//! saying so, never skips it. Every child process runs under a watchdog and is killed after
//! [`CHILD_TIMEOUT`].
//!
//! What the clients receive is compared with the Maildir files: a message goes out with every
//! line ended by CRLF, whatever the file uses, and with a CRLF after its last line even if the
//! file has none ([`on_the_wire`]). Both clients take the byte-stuffing dots off again.

mod common;

use std::io::{self, Read};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::{TestServer, demo_server};

/// How long a client process may take before the watchdog kills it and fails the test.
const CHILD_TIMEOUT: Duration = Duration::from_secs(30);

/// How many messages alice has in the demo maildrop (src/demo.rs).
const ALICE_MESSAGES: usize = 6;

// ---------------------------------------------------------------------------------------------
// Running a client process
// ---------------------------------------------------------------------------------------------

/// What a finished child process left behind.
struct Run {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Run {
    fn describe(&self) -> String {
        format!(
            "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status,
            String::from_utf8_lossy(&self.stdout),
            String::from_utf8_lossy(&self.stderr)
        )
    }
}

/// Reads a pipe to its end on a thread of its own, so that a chatty child never blocks on a full
/// pipe while we wait for it.
fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut all = Vec::new();
        let _ = pipe.read_to_end(&mut all);
        all
    })
}

/// Runs `program` with `args`, killing it if it outlives [`CHILD_TIMEOUT`]. A program that is not
/// installed fails the test: CI installs python3 and curl, so a missing one is a broken setup.
fn run(program: &str, args: &[String]) -> Run {
    let mut child = match Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == io::ErrorKind::NotFound => panic!(
            "`{program}` was not found on PATH: the interop tests need python3 and curl \
             installed (CI installs both); this test fails rather than skips ({e})"
        ),
        Err(e) => panic!("cannot start `{program}`: {e}"),
    };
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + CHILD_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stdout = stdout.join().unwrap_or_default();
            let stderr = stderr.join().unwrap_or_default();
            panic!(
                "`{program} {}` did not finish within {CHILD_TIMEOUT:?} and was killed\n\
                 --- stdout ---\n{}\n--- stderr ---\n{}",
                args.join(" "),
                String::from_utf8_lossy(&stdout),
                String::from_utf8_lossy(&stderr)
            );
        }
        thread::sleep(Duration::from_millis(10));
    };
    Run {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

// ---------------------------------------------------------------------------------------------
// Python's poplib
// ---------------------------------------------------------------------------------------------

/// The records `poplib_client.py` prints: one per line, a key and the rest of the line.
struct Records(Vec<(String, String)>);

impl Records {
    fn parse(stdout: &[u8]) -> Records {
        let text = String::from_utf8(stdout.to_vec()).expect("poplib_client.py prints text");
        Records(
            text.lines()
                .map(|line| match line.split_once(' ') {
                    Some((key, rest)) => (key.to_string(), rest.to_string()),
                    None => (line.to_string(), String::new()),
                })
                .collect(),
        )
    }

    /// The rest of every record with this key, in order.
    fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, rest)| rest.as_str())
            .collect()
    }

    /// The rest of the one record with this key.
    #[track_caller]
    fn one(&self, key: &str) -> &str {
        let all = self.all(key);
        assert_eq!(all.len(), 1, "expected one {key:?} record, got {all:?}");
        all[0]
    }

    /// The message content of each `retr`/`top0` record, by message number: poplib's lines
    /// joined with CRLF, plus the CRLF that ends the last line.
    fn contents(&self, key: &str) -> Vec<(usize, Vec<u8>)> {
        self.all(key)
            .into_iter()
            .map(|rest| {
                let (n, rest) = rest.split_once(' ').expect("number");
                // `retr` carries the octet count before the hex; `top0` does not.
                let hex = rest.rsplit(' ').next().expect("hex");
                let mut bytes = unhex(hex);
                bytes.extend_from_slice(b"\r\n");
                (n.parse().expect("message number"), bytes)
            })
            .collect()
    }
}

fn unhex(hex: &str) -> Vec<u8> {
    assert!(hex.len().is_multiple_of(2), "odd hex length");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digit"))
        .collect()
}

fn poplib_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/poplib_client.py")
}

/// Runs `poplib_client.py MODE PORT USER PASSWORD EXTRA...` and returns its records, failing the
/// test (with the script's traceback) if it exits non-zero.
fn poplib(server: &TestServer, mode: &str, user: &str, password: &str, extra: &[&str]) -> Records {
    let mut args = vec![
        // Isolated mode: no PYTHON* variables, no user site-packages; only the stdlib.
        "-I".to_string(),
        poplib_script().display().to_string(),
        mode.to_string(),
        server.addr.port().to_string(),
        user.to_string(),
        password.to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let out = run("python3", &args);
    assert!(
        out.status.success(),
        "poplib_client.py {mode} failed: {}",
        out.describe()
    );
    Records::parse(&out.stdout)
}

// ---------------------------------------------------------------------------------------------
// curl
// ---------------------------------------------------------------------------------------------

/// Runs curl against `pop3://127.0.0.1:PORT/PATH` as `user`, with `extra` options after the URL.
fn curl(server: &TestServer, user: &str, password: &str, path: &str, extra: &[&str]) -> Run {
    let mut args: Vec<String> = [
        "-q", // first: ignore any ~/.curlrc
        "--silent",
        "--show-error",
        "--max-time",
        "25",
        "--noproxy",
        "*",
        "--user",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(format!("{user}:{password}"));
    args.push(format!("pop3://127.0.0.1:{}/{path}", server.addr.port()));
    args.extend(extra.iter().map(|s| s.to_string()));
    run("curl", &args)
}

/// Like [`curl`], but the transfer must succeed (exit code 0); returns what curl wrote.
#[track_caller]
fn curl_ok(server: &TestServer, path: &str, extra: &[&str]) -> Vec<u8> {
    let out = curl(server, "alice", "wonderland", path, extra);
    assert!(
        out.status.success(),
        "curl pop3://.../{path} {extra:?} failed: {}",
        out.describe()
    );
    out.stdout
}

/// curl's listing output (LIST or UIDL) as lines without their CRLF.
fn listing_lines(bytes: &[u8]) -> Vec<String> {
    let text = String::from_utf8(bytes.to_vec()).expect("listing is text");
    assert!(
        text.is_empty() || text.ends_with("\r\n"),
        "listing not ended by CRLF: {text:?}"
    );
    text.split_terminator("\r\n").map(String::from).collect()
}

// ---------------------------------------------------------------------------------------------
// The maildrop on disk
// ---------------------------------------------------------------------------------------------

/// One message file as stored.
#[derive(Clone, Debug, PartialEq)]
struct Stored {
    /// The Maildir unique name (the file name up to `:`), which popstate uses as the UIDL.
    uid: String,
    /// The file's contents.
    bytes: Vec<u8>,
}

/// `user`'s message files in message-number order: by the delivery seconds that start a Maildir
/// name, then by name (src/maildir.rs).
fn stored(server: &TestServer, user: &str) -> Vec<Stored> {
    let mut all: Vec<Stored> = server
        .snapshot(user)
        .into_iter()
        .map(|(name, bytes)| {
            let file = name.rsplit('/').next().expect("file name");
            let uid = file.split(':').next().expect("unique name").to_string();
            Stored { uid, bytes }
        })
        .collect();
    let seconds = |s: &Stored| -> u64 {
        s.uid
            .split('.')
            .next()
            .and_then(|t| t.parse().ok())
            .expect("demo names start with the delivery seconds")
    };
    all.sort_by(|a, b| (seconds(a), &a.uid).cmp(&(seconds(b), &b.uid)));
    all
}

/// A stored message as RETR sends it, before byte-stuffing: every line ended by CRLF (a bare LF
/// becomes CRLF), and a CRLF after the last line even if the file has none.
fn on_the_wire(file: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(file.len() + 64);
    for line in file.split_inclusive(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// What `TOP n 0` sends (un-stuffed): the header, the blank line, and nothing of the body.
fn header_only(wire: &[u8]) -> Vec<u8> {
    let end = wire
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("demo messages have a header and a body");
    wire[..end + 4].to_vec()
}

/// Shows a byte string so that CR, LF and other control bytes are visible in a failure.
fn show(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

#[track_caller]
fn assert_bytes_eq(got: &[u8], expected: &[u8], what: &str) {
    if got != expected {
        let at = got
            .iter()
            .zip(expected)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(expected.len()));
        panic!(
            "{what}: bytes differ at offset {at} (got {} bytes, expected {})\n\
             got:      {}\nexpected: {}",
            got.len(),
            expected.len(),
            show(&got[at.saturating_sub(20)..(at + 60).min(got.len())]),
            show(&expected[at.saturating_sub(20)..(at + 60).min(expected.len())]),
        );
    }
}

/// "n size" for each message, numbered from 1.
fn scan_listing(messages: &[Stored]) -> Vec<String> {
    messages
        .iter()
        .enumerate()
        .map(|(i, m)| format!("{} {}", i + 1, on_the_wire(&m.bytes).len()))
        .collect()
}

/// "n uid" for each message, numbered from 1.
fn uid_listing(messages: &[Stored]) -> Vec<String> {
    messages
        .iter()
        .enumerate()
        .map(|(i, m)| format!("{} {}", i + 1, m.uid))
        .collect()
}

fn total_size(messages: &[Stored]) -> usize {
    messages.iter().map(|m| on_the_wire(&m.bytes).len()).sum()
}

// ---------------------------------------------------------------------------------------------
// poplib tests
// ---------------------------------------------------------------------------------------------

#[test]
fn b17_poplib_stat_counts_messages_and_octets() {
    let server = demo_server();
    let messages = stored(&server, "alice");
    assert_eq!(messages.len(), ALICE_MESSAGES);
    let records = poplib(&server, "read", "alice", "wonderland", &[]);
    assert!(records.one("welcome").starts_with("+OK"));
    assert_eq!(
        records.one("stat"),
        format!("{} {}", ALICE_MESSAGES, total_size(&messages))
    );
    assert!(
        records.one("quit").starts_with("+OK"),
        "{}",
        records.one("quit")
    );
}

#[test]
fn b18_poplib_list_sizes_match_maildir() {
    let server = demo_server();
    let expected = scan_listing(&stored(&server, "alice"));
    let records = poplib(&server, "read", "alice", "wonderland", &[]);
    assert_eq!(records.all("list"), expected, "LIST (multi-line)");
    assert_eq!(records.all("listone"), expected, "LIST n (single line)");
}

#[test]
fn b26_poplib_uidl_is_the_maildir_unique_name() {
    let server = demo_server();
    let expected = uid_listing(&stored(&server, "alice"));
    let records = poplib(&server, "read", "alice", "wonderland", &[]);
    assert_eq!(records.all("uidl"), expected, "UIDL (multi-line)");
    assert_eq!(records.all("uidlone"), expected, "UIDL n (single line)");
    // A second session sees the same unique-ids.
    let again = poplib(&server, "read", "alice", "wonderland", &[]);
    assert_eq!(again.all("uidl"), expected, "UIDL in a second session");
}

#[test]
fn b20_poplib_retr_matches_maildir_bytes() {
    let server = demo_server();
    let messages = stored(&server, "alice");
    let records = poplib(&server, "read", "alice", "wonderland", &[]);
    let got = records.contents("retr");
    assert_eq!(got.len(), ALICE_MESSAGES, "one RETR per message");
    for ((n, bytes), m) in got.iter().zip(&messages) {
        assert_bytes_eq(
            bytes,
            &on_the_wire(&m.bytes),
            &format!("poplib RETR {n} ({})", m.uid),
        );
    }
}

#[test]
fn b19_poplib_octets_received_equal_list_sizes() {
    // poplib counts each line with its line end as received, minus the stuffing dots: exactly
    // the octets LIST promised, which a bare LF on the wire would make one short.
    let server = demo_server();
    let records = poplib(&server, "read", "alice", "wonderland", &[]);
    let sizes: Vec<(String, String)> = records
        .all("list")
        .iter()
        .map(|l| {
            let (n, size) = l.split_once(' ').expect("n size");
            (n.to_string(), size.to_string())
        })
        .collect();
    let octets: Vec<(String, String)> = records
        .all("retr")
        .iter()
        .map(|r| {
            let mut f = r.split(' ');
            (
                f.next().expect("n").to_string(),
                f.next().expect("octets").to_string(),
            )
        })
        .collect();
    assert_eq!(octets, sizes, "(message, octets received) vs LIST");
}

#[test]
fn b25_poplib_top_zero_gives_headers_only() {
    let server = demo_server();
    let messages = stored(&server, "alice");
    let records = poplib(&server, "read", "alice", "wonderland", &[]);
    let got = records.contents("top0");
    assert_eq!(got.len(), ALICE_MESSAGES, "one TOP n 0 per message");
    for ((n, bytes), m) in got.iter().zip(&messages) {
        assert_bytes_eq(
            bytes,
            &header_only(&on_the_wire(&m.bytes)),
            &format!("poplib TOP {n} 0 ({})", m.uid),
        );
    }
}

#[test]
fn b23_poplib_dele_then_quit_removes_only_that_message_and_keeps_uidls() {
    let server = demo_server();
    let before = stored(&server, "alice");
    let first = poplib(&server, "read", "alice", "wonderland", &[]);
    assert_eq!(first.all("uidl"), uid_listing(&before));

    let dele = poplib(&server, "dele", "alice", "wonderland", &["quit", "2"]);
    assert_eq!(
        dele.one("stat-before"),
        format!("{} {}", ALICE_MESSAGES, total_size(&before))
    );
    let d = dele.one("dele");
    assert!(d.starts_with("2 +OK"), "DELE 2: {d}");
    // B21: a deleted message cannot be retrieved, and STAT leaves it out.
    let r = dele.one("retr-deleted");
    assert!(r.starts_with("2 -ERR"), "RETR 2 after DELE 2: {r}");
    let mut after = before.clone();
    after.remove(1);
    assert_eq!(
        dele.one("stat-after"),
        format!("{} {}", ALICE_MESSAGES - 1, total_size(&after))
    );
    assert!(dele.one("quit").starts_with("+OK"), "{}", dele.one("quit"));

    // On disk: message 2's file is gone, every other file is untouched.
    assert_eq!(
        stored(&server, "alice"),
        after,
        "maildrop after DELE 2 + QUIT"
    );

    // A new session: five messages, renumbered, each keeping its unique-id and content.
    let second = poplib(&server, "read", "alice", "wonderland", &[]);
    assert_eq!(
        second.one("stat"),
        format!("{} {}", ALICE_MESSAGES - 1, total_size(&after))
    );
    assert_eq!(second.all("uidl"), uid_listing(&after));
    let uids = |r: &Records| -> Vec<String> {
        r.all("uidl")
            .iter()
            .map(|l| l.split_once(' ').expect("n uid").1.to_string())
            .collect()
    };
    let mut expected_uids = uids(&first);
    expected_uids.remove(1);
    assert_eq!(uids(&second), expected_uids, "unique-ids of the others");
    for ((n, bytes), m) in second.contents("retr").iter().zip(&after) {
        assert_bytes_eq(bytes, &on_the_wire(&m.bytes), &format!("RETR {n} after"));
    }
}

#[test]
fn b24_poplib_dele_without_quit_removes_nothing() {
    let server = demo_server();
    let before = stored(&server, "alice");
    let dele = poplib(
        &server,
        "dele",
        "alice",
        "wonderland",
        &["drop", "1", "2", "6"],
    );
    for (d, n) in dele.all("dele").iter().zip(["1", "2", "6"]) {
        assert!(d.starts_with(&format!("{n} +OK")), "DELE {n}: {d}");
    }
    assert_eq!(
        dele.one("stat-after"),
        format!("{} {}", ALICE_MESSAGES - 3, {
            let mut kept = before.clone();
            kept.remove(5);
            kept.remove(1);
            kept.remove(0);
            total_size(&kept)
        })
    );
    assert_eq!(dele.one("dropped"), "");

    // Logging in again succeeds only once the dropped session has let go of the lock, so by the
    // time the next session reads the maildrop, a wrong UPDATE would already have happened.
    let again = poplib(&server, "read", "alice", "wonderland", &[]);
    assert_eq!(
        again.one("stat"),
        format!("{} {}", ALICE_MESSAGES, total_size(&before))
    );
    assert_eq!(again.all("uidl"), uid_listing(&before));
    assert_eq!(stored(&server, "alice"), before, "maildrop after a drop");
}

// ---------------------------------------------------------------------------------------------
// curl tests
// ---------------------------------------------------------------------------------------------

#[test]
fn b18_curl_list_matches_maildir_sizes() {
    let server = demo_server();
    let expected = scan_listing(&stored(&server, "alice"));
    let out = curl_ok(&server, "", &[]);
    assert_eq!(listing_lines(&out), expected, "curl pop3://.../ (LIST)");
}

#[test]
fn b20_curl_retr_matches_maildir_bytes() {
    let server = demo_server();
    let messages = stored(&server, "alice");
    assert_eq!(messages.len(), ALICE_MESSAGES);
    for (i, m) in messages.iter().enumerate() {
        let n = i + 1;
        let got = curl_ok(&server, &n.to_string(), &[]);
        assert_bytes_eq(
            &got,
            &on_the_wire(&m.bytes),
            &format!("curl RETR {n} ({})", m.uid),
        );
    }
}

#[test]
fn b20_curl_retr_of_missing_message_fails() {
    let server = demo_server();
    let n = ALICE_MESSAGES + 1;
    let out = curl(&server, "alice", "wonderland", &n.to_string(), &[]);
    assert!(
        !out.status.success(),
        "curl RETR {n} of a 6-message maildrop should fail: {}",
        out.describe()
    );
    assert!(out.stdout.is_empty(), "{}", out.describe());
}

#[test]
fn b25_curl_top_zero_gives_headers_only() {
    let server = demo_server();
    let messages = stored(&server, "alice");
    for (i, m) in messages.iter().enumerate() {
        let n = i + 1;
        // A custom command goes on the bare URL: with /N curl would append N to it.
        let got = curl_ok(&server, "", &["--request", &format!("TOP {n} 0")]);
        assert_bytes_eq(
            &got,
            &header_only(&on_the_wire(&m.bytes)),
            &format!("curl TOP {n} 0 ({})", m.uid),
        );
    }
}

#[test]
fn b26_curl_uidl_stable() {
    let server = demo_server();
    let before = stored(&server, "alice");
    let first = listing_lines(&curl_ok(&server, "", &["--request", "UIDL"]));
    assert_eq!(first, uid_listing(&before), "curl UIDL");
    let second = listing_lines(&curl_ok(&server, "", &["--request", "UIDL"]));
    assert_eq!(second, first, "curl UIDL in a second session");

    // DELE 1 (no transfer: --head), which curl ends with QUIT; the rest keep their unique-ids.
    curl_ok(&server, "1", &["--request", "DELE", "--head"]);
    let third = listing_lines(&curl_ok(&server, "", &["--request", "UIDL"]));
    let after = before[1..].to_vec();
    assert_eq!(third, uid_listing(&after), "curl UIDL after DELE 1");
    let ids = |lines: &[String]| -> Vec<String> {
        lines
            .iter()
            .map(|l| l.split_once(' ').expect("n uid").1.to_string())
            .collect()
    };
    assert_eq!(ids(&third), ids(&first)[1..].to_vec());
}

#[test]
fn b23_curl_dele_then_quit_removes_only_that_message() {
    let server = demo_server();
    let before = stored(&server, "alice");
    let out = curl_ok(&server, "3", &["--request", "DELE", "--head"]);
    assert!(out.is_empty(), "DELE transfers nothing: {}", show(&out));
    let mut after = before.clone();
    after.remove(2);
    assert_eq!(
        stored(&server, "alice"),
        after,
        "maildrop after curl DELE 3"
    );
    let list = listing_lines(&curl_ok(&server, "", &[]));
    assert_eq!(list, scan_listing(&after), "LIST after DELE 3");
    // The old message 4 is now message 3, with the same bytes.
    assert_bytes_eq(
        &curl_ok(&server, "3", &[]),
        &on_the_wire(&before[3].bytes),
        "curl RETR 3 after DELE 3",
    );
}

// ---------------------------------------------------------------------------------------------
// An mbox written by Python's `mailbox.mbox`
// ---------------------------------------------------------------------------------------------

/// Writes each message (given in hex) into a new mbox with the stdlib's `mailbox.mbox`, which
/// adds the From_ lines and quotes body lines that start with `From ` (mboxo).
const PY_WRITE_MBOX: &str = "import mailbox, sys
box = mailbox.mbox(sys.argv[1])
box.lock()
for hexed in sys.argv[2:]:
    box.add(bytes.fromhex(hexed))
box.flush()
box.unlock()
box.close()
";

#[test]
fn b19_b20_poplib_and_curl_read_an_mbox_written_by_python_mailbox_byte_exact() {
    let server = common::Backend::Mbox.server_with_users("carol:pw\n", common::test_config());
    let mut long = String::from("From: c@example.org\nSubject: long\n\n");
    for n in 0..300 {
        long.push_str(&format!("line {n}\n"));
    }
    let messages: Vec<Vec<u8>> = vec![
        b"From: a@example.org\nSubject: plain\n\nHello\n".to_vec(),
        b"From: b@example.org\nSubject: From_ lookalikes\n\nFrom the start of a line\n\nFrom after a blank line\n.\n..two dots\n".to_vec(),
        b"From: b@example.org\r\nSubject: crlf\r\n\r\nline one\r\nFrom here too\r\n\r\n".to_vec(),
        long.into_bytes(),
    ];
    let hex = |m: &Vec<u8>| m.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let mut args = vec![
        "-I".to_string(),
        "-c".to_string(),
        PY_WRITE_MBOX.to_string(),
        server.mbox("carol").display().to_string(),
    ];
    args.extend(messages.iter().map(hex));
    let wrote = run("python3", &args);
    assert!(wrote.status.success(), "mailbox.mbox: {}", wrote.describe());
    assert!(
        !server.root().join("carol.lock").exists(),
        "Python unlocked"
    );

    let expected: Vec<Vec<u8>> = messages.iter().map(|m| on_the_wire(m)).collect();
    let records = poplib(&server, "read", "carol", "pw", &[]);
    let total: usize = expected.iter().map(Vec::len).sum();
    assert_eq!(records.one("stat"), format!("{} {total}", messages.len()));
    let sizes: Vec<String> = expected
        .iter()
        .enumerate()
        .map(|(i, m)| format!("{} {}", i + 1, m.len()))
        .collect();
    assert_eq!(records.all("list"), sizes);
    let got = records.contents("retr");
    assert_eq!(got.len(), messages.len());
    for (n, bytes) in got {
        assert_bytes_eq(&bytes, &expected[n - 1], &format!("poplib RETR {n}"));
    }
    for (i, wire) in expected.iter().enumerate() {
        let out = curl(&server, "carol", "pw", &(i + 1).to_string(), &[]);
        assert!(
            out.status.success(),
            "curl RETR {}: {}",
            i + 1,
            out.describe()
        );
        assert_bytes_eq(&out.stdout, wire, &format!("curl RETR {}", i + 1));
    }
}
