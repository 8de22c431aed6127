//! Running popstate for real (book/src/running.md): `--inetd` over a Unix socket pair, a TCP
//! socket and pipes handed over as standard input; systemd socket activation with the real
//! `systemd-socket-activate` (Debian package `systemd`), `Accept=no` and `Accept=yes`; and the
//! RFC 2449 settings an operator turns on, LOGIN-DELAY (X08, X09) and EXPIRE (X11), over every
//! backend.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{Backend, TempDir, assert_err, test_config};
use popstate::expire::Expire;

const BIN: &str = env!("CARGO_BIN_EXE_popstate");

/// A demo maildrop folder on disk (users file and Maildirs), for a popstate process.
fn demo_folder() -> TempDir {
    let dir = TempDir::new("running");
    popstate::demo::create(dir.path()).expect("demo");
    dir
}

fn storage_args(dir: &Path) -> Vec<String> {
    vec![
        "--maildir-root".into(),
        dir.join("maildirs").display().to_string(),
        "--users".into(),
        dir.join("users").display().to_string(),
    ]
}

/// Waits at most `limit` for `child` to end; kills it (by its own PID) and fails if it does not.
fn wait_bounded(mut child: Child, limit: Duration) -> Output {
    let start = Instant::now();
    while child.try_wait().expect("try_wait").is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("popstate did not end within {limit:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("collect output")
}

/// `popstate --inetd ...` with standard input and output both the given descriptor.
fn inetd_child(fd: OwnedFd, extra: &[&str], dir: &Path) -> Child {
    let out = fd.try_clone().expect("dup");
    Command::new(BIN)
        .arg("--inetd")
        .args(storage_args(dir))
        .args(extra)
        .stdin(Stdio::from(fd))
        .stdout(Stdio::from(out))
        .stderr(Stdio::piped())
        .env("RUST_LOG", "info")
        .spawn()
        .expect("start popstate --inetd")
}

/// Sends `commands` (CRLF each) in one go and reads everything until the server closes.
fn converse(mut stream: impl Read + Write, commands: &[&str]) -> String {
    let mut all = String::new();
    for command in commands {
        all.push_str(command);
        all.push_str("\r\n");
    }
    stream.write_all(all.as_bytes()).expect("send");
    let mut replies = String::new();
    stream
        .read_to_string(&mut replies)
        .expect("read to the end");
    replies
}

const SESSION: &[&str] = &["USER alice", "PASS wonderland", "STAT", "UIDL 1", "QUIT"];

/// What SESSION gets (the greeting's APOP timestamp aside).
fn assert_session(replies: &str) {
    let lines: Vec<&str> = replies.split("\r\n").collect();
    assert!(lines[0].starts_with("+OK popstate ready"), "{replies}");
    assert_eq!(
        &lines[1..],
        [
            "+OK now send PASS with the password for alice",
            "+OK alice's maildrop has 6 messages (29816 octets)",
            "+OK 6 29816",
            "+OK 1 1764000001.demo1.popstate",
            "+OK popstate signing off: removed 0 messages, 6 left",
            "",
        ],
        "{replies}"
    );
}

#[test]
fn inetd_serves_one_session_over_a_unix_socket_pair_and_exits() {
    let dir = demo_folder();
    let (ours, theirs) = UnixStream::pair().expect("socket pair");
    let child = inetd_child(theirs.into(), &[], dir.path());
    ours.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    assert_session(&converse(&ours, SESSION));
    let output = wait_bounded(child, Duration::from_secs(20));
    assert!(output.status.success(), "{output:?}");
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        log.contains("session 1 from a Unix socket: started (inetd)"),
        "{log}"
    );
    assert!(log.contains("ended (QUIT); user alice"), "{log}");
}

#[test]
fn inetd_over_a_tcp_socket_logs_the_peer_from_getpeername() {
    let dir = demo_folder();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (accepted, peer) = listener.accept().expect("accept");
    let child = inetd_child(accepted.into(), &[], dir.path());
    client
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    assert_session(&converse(&client, SESSION));
    let output = wait_bounded(child, Duration::from_secs(20));
    assert!(output.status.success(), "{output:?}");
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        log.contains(&format!("session 1 from {peer}: started (inetd)")),
        "{log}"
    );
}

#[test]
fn inetd_idle_timer_ends_a_silent_socket_session_without_a_reply() {
    let dir = demo_folder();
    let (ours, theirs) = UnixStream::pair().expect("socket pair");
    let start = Instant::now();
    let child = inetd_child(theirs.into(), &["--idle-timeout", "1"], dir.path());
    let mut reader = BufReader::new(&ours);
    let mut greeting = String::new();
    reader.read_line(&mut greeting).expect("greeting");
    (&ours)
        .write_all(b"USER alice\r\nPASS wonderland\r\n")
        .expect("send");
    let output = wait_bounded(child, Duration::from_secs(10));
    assert!(start.elapsed() >= Duration::from_secs(1));
    let mut rest = String::new();
    reader.read_to_string(&mut rest).expect("read to the end");
    assert_eq!(
        rest,
        "+OK now send PASS with the password for alice\r\n+OK alice's maildrop has 6 messages (29816 octets)\r\n"
    );
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("timed out; nothing removed"), "{log}");
}

#[test]
fn inetd_on_pipes_answers_and_its_idle_timer_still_works() {
    let dir = demo_folder();
    let start = Instant::now();
    let mut child = Command::new(BIN)
        .arg("--inetd")
        .args(storage_args(dir.path()))
        .args(["--idle-timeout", "1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start popstate --inetd");
    // The pipe stays open and silent: only the idle timer can end the session.
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(b"USER alice\nPASS wonderland\nSTAT\n")
        .expect("send");
    let output = wait_bounded(child, Duration::from_secs(10));
    drop(stdin);
    assert!(start.elapsed() >= Duration::from_secs(1));
    let replies = String::from_utf8_lossy(&output.stdout);
    assert!(replies.ends_with("+OK 6 29816\r\n"), "{replies}");
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("session 1 from standard input"), "{log}");
    assert!(log.contains("timed out; nothing removed"), "{log}");
}

#[test]
fn inetd_refuses_flags_that_would_print_to_the_client() {
    let dir = demo_folder();
    for (flags, says) in [
        (&["--trace"][..], "--trace cannot be used with --inetd"),
        (&["--board"][..], "--board cannot be used with --inetd"),
        (
            &["--trace-user", "alice"][..],
            "--trace-user cannot be used",
        ),
        (&["--listen", "127.0.0.1:0"][..], "--listen cannot be used"),
        (
            &["--login-delay", "30"][..],
            "--login-delay cannot be used with --inetd",
        ),
    ] {
        let output = Command::new(BIN)
            .arg("--inetd")
            .args(storage_args(dir.path()))
            .args(flags)
            .stdin(Stdio::null())
            .output()
            .expect("run popstate");
        assert_eq!(output.status.code(), Some(1), "{flags:?}");
        assert!(output.stdout.is_empty(), "{flags:?} printed to the client");
        assert!(
            String::from_utf8_lossy(&output.stderr).contains(says),
            "{flags:?}"
        );
    }
    let output = Command::new(BIN)
        .args(["--inetd", "--classroom", "3"])
        .stdin(Stdio::null())
        .output()
        .expect("run popstate");
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    let output = Command::new(BIN)
        .arg("--inetd")
        .stdin(Stdio::null())
        .output()
        .expect("run popstate");
    assert!(String::from_utf8_lossy(&output.stderr).contains("--inetd needs --maildir-root"));
}

#[test]
fn listen_pid_of_another_process_is_ignored() {
    let dir = demo_folder();
    let mut child = Command::new(BIN)
        .args(storage_args(dir.path()))
        .args(["--listen", "127.0.0.1:0"])
        .env("LISTEN_PID", "1")
        .env("LISTEN_FDS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start popstate");
    let lines = common::lines_of(child.stdout.take().expect("stdout"));
    let address = common::listening_address(&lines);
    let mut c = common::Client::connect(address);
    c.login("alice", "wonderland");
    let _ = child.kill();
    let _ = child.wait();
}

/// A port that was free a moment ago, for systemd-socket-activate to bind.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("find a free port")
        .port()
}

/// `systemd-socket-activate ARGS`, stopped (by its PID) when dropped.
struct Activator {
    child: Child,
    address: SocketAddr,
}

impl Activator {
    fn start(tool_args: &[&str], popstate_args: &[String]) -> Activator {
        let port = free_port();
        let address: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
        let child = Command::new("systemd-socket-activate")
            .args(tool_args)
            .args(["-l", &address.to_string(), BIN])
            .args(popstate_args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("systemd-socket-activate (Debian package systemd) must be installed");
        // The tool binds before it prints anything; wait until the port takes connections.
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(address).is_err() {
            assert!(
                Instant::now() < deadline,
                "systemd-socket-activate never listened"
            );
            thread::sleep(Duration::from_millis(50));
        }
        Activator { child, address }
    }

    /// Stops the tool and returns what it (and popstate) wrote to standard error.
    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut log = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            let _ = err.read_to_string(&mut log);
        }
        log
    }
}

impl Drop for Activator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn socket_activation_accept_no_serves_the_passed_socket_with_one_process() {
    let dir = demo_folder();
    let mut args = storage_args(dir.path());
    args.extend(["--login-delay".into(), "60".into()]);
    let activator = Activator::start(&[], &args);
    // The probe connection above started popstate; it ended without a command.
    let mut first = common::Client::connect(activator.address);
    first.login("alice", "wonderland");
    assert!(first.cmd("QUIT").starts_with("+OK"));
    // One process serves every connection, so it remembers alice's login.
    let mut second = common::Client::connect(activator.address);
    assert!(second.cmd("USER alice").starts_with("+OK"));
    assert_err(&second.cmd("PASS wonderland"), "[LOGIN-DELAY]");
    drop(second);
    let log = activator.stop();
    assert!(log.contains("Listening on 127.0.0.1"), "{log}");
    assert!(
        log.contains("popstate::server] session 2 from 127.0.0.1"),
        "{log}"
    );
    assert_eq!(log.matches("Execing").count(), 1, "{log}");
}

#[test]
fn socket_activation_accept_yes_runs_popstate_inetd_per_connection() {
    let dir = demo_folder();
    let mut args = vec!["--inetd".to_string()];
    args.extend(storage_args(dir.path()));
    let activator = Activator::start(&["--inetd", "-a"], &args);
    for _ in 0..2 {
        let stream = TcpStream::connect(activator.address).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        assert_session(&converse(&stream, SESSION));
    }
    let log = activator.stop();
    // The probe connection, then one process for each of the two sessions.
    assert!(log.matches("(inetd)").count() >= 2, "{log}");
    assert!(
        log.matches("ended (QUIT); user alice").count() >= 2,
        "{log}"
    );
}

#[test]
fn socket_activation_accept_yes_without_inetd_is_refused_clearly() {
    let dir = demo_folder();
    let activator = Activator::start(&["-a"], &storage_args(dir.path()));
    thread::sleep(Duration::from_millis(500));
    let log = activator.stop();
    assert!(
        log.contains("is a connection, not a listening socket") && log.contains("--inetd"),
        "{log}"
    );
}

fn x08_x09_login_delay_refuses_pass_not_user_until_the_delay_is_over(backend: Backend) {
    let mut config = test_config();
    config.login_delay = Some(Duration::from_secs(2));
    let server = backend.demo_server_with(config);
    let mut c = server.connect();
    let capa = c.lines("CAPA");
    assert!(capa.contains(&"LOGIN-DELAY 2".to_string()), "{capa:?}");
    c.login("alice", "wonderland");
    let started = Instant::now();
    // §6.5: the same value after login, since it is the same for every user.
    assert_eq!(c.lines("CAPA"), capa);
    assert!(c.cmd("QUIT").starts_with("+OK"));

    let mut again = server.connect();
    // §8.1.1: USER says nothing; a wrong password is [AUTH], not a hint that alice was here.
    assert!(again.cmd("USER alice").starts_with("+OK"));
    assert_err(&again.cmd("PASS wrong"), "[AUTH]");
    assert!(again.cmd("USER alice").starts_with("+OK"));
    let refused = again.cmd("PASS wonderland");
    assert_err(
        &refused,
        "[LOGIN-DELAY] alice may log in once every 2 seconds",
    );
    assert!(refused.contains("try again in"), "{refused}");
    // Still in AUTHORIZATION, and other users are not held back.
    assert!(again.cmd("USER bob").starts_with("+OK"));
    assert!(again.cmd("PASS builder").starts_with("+OK"));
    drop(again);

    thread::sleep(Duration::from_secs(2).saturating_sub(started.elapsed()));
    thread::sleep(Duration::from_millis(100));
    server.login("alice", "wonderland");
}

fn x08_login_delay_is_not_announced_by_default(backend: Backend) {
    let server = backend.demo_server();
    let mut c = server.connect();
    assert!(!c.lines("CAPA").iter().any(|l| l.starts_with("LOGIN-DELAY")));
    c.login("alice", "wonderland");
    assert!(c.cmd("QUIT").starts_with("+OK"));
    server.login("alice", "wonderland");
}

fn x11_expire_removes_retrieved_old_messages_at_quit_only(backend: Backend) {
    let mut config = test_config();
    config.expire = Expire::Days(30);
    let server = backend.demo_server_with(config);
    let uids: Vec<String> = (1..=6).map(|n| backend.alice_uid(n).to_string()).collect();

    // The demo's mail was delivered in November 2025, more than 30 days ago.
    let mut c = server.login("alice", "wonderland");
    let capa = c.lines("CAPA");
    assert!(capa.contains(&"EXPIRE 30".to_string()), "{capa:?}");
    assert!(!capa.contains(&"EXPIRE NEVER".to_string()), "{capa:?}");
    for n in [1, 2] {
        assert!(c.cmd(&format!("RETR {n}")).starts_with("+OK"));
        c.multiline();
    }
    assert!(c.cmd("TOP 3 0").starts_with("+OK"));
    c.multiline();
    assert!(c.cmd("DELE 4").starts_with("+OK"));
    // A session that ends without QUIT expires nothing (RFC 1939 §6).
    c.hang_up();
    let mut c = server.login("alice", "wonderland");
    assert!(c.cmd("STAT").starts_with("+OK 6 "));
    for n in [1, 2] {
        assert!(c.cmd(&format!("RETR {n}")).starts_with("+OK"));
        c.multiline();
    }
    assert!(c.cmd("TOP 3 0").starts_with("+OK"));
    c.multiline();
    assert!(c.cmd("DELE 4").starts_with("+OK"));
    assert_eq!(
        c.cmd("QUIT"),
        "+OK popstate signing off: removed 3 messages (2 expired: retrieved and older than EXPIRE), 3 left"
    );
    let mut c = server.login("alice", "wonderland");
    let left = c.lines("UIDL");
    assert_eq!(
        left,
        [
            format!("1 {}", uids[2]),
            format!("2 {}", uids[4]),
            format!("3 {}", uids[5])
        ]
    );
}

fn x11_expire_keeps_messages_younger_than_the_days(backend: Backend) {
    let mut config = test_config();
    // About 270 years: nothing in the demo is that old.
    config.expire = Expire::Days(100_000);
    let server = backend.demo_server_with(config);
    let mut c = server.login("alice", "wonderland");
    assert!(c.lines("CAPA").contains(&"EXPIRE 100000".to_string()));
    assert!(c.cmd("RETR 1").starts_with("+OK"));
    c.multiline();
    assert_eq!(
        c.cmd("QUIT"),
        "+OK popstate signing off: removed 0 messages, 6 left"
    );
}

on_every_backend!(
    x08_x09_login_delay_refuses_pass_not_user_until_the_delay_is_over,
    x08_login_delay_is_not_announced_by_default,
    x11_expire_removes_retrieved_old_messages_at_quit_only,
    x11_expire_keeps_messages_younger_than_the_days,
    x08_x09_x11_the_books_transcript_replays,
);

/// RFC 2449 §8.1.1 puts the code on AUTH too: every login method ends in the same `fn log_in`.
#[cfg(feature = "sasl")]
#[test]
fn x09_auth_plain_is_held_to_the_login_delay_too() {
    let mut config = test_config();
    config.login_delay = Some(Duration::from_secs(60));
    let server = Backend::Maildir.demo_server_with(config);
    let mut c = server.login("alice", "wonderland");
    assert!(c.cmd("QUIT").starts_with("+OK"));
    let mut c = server.connect();
    // "\0alice\0wonderland" in base64 (RFC 4616).
    assert_err(
        &c.cmd("AUTH PLAIN AGFsaWNlAHdvbmRlcmxhbmQ="),
        "[LOGIN-DELAY]",
    );
}

/// Classic inetd gives the socket as standard error too: a log line there would reach the
/// client. popstate notices and logs to syslog (`/dev/log`) instead, or nowhere.
#[test]
fn inetd_with_the_socket_as_standard_error_sends_the_client_only_pop3() {
    let dir = demo_folder();
    let (ours, theirs) = UnixStream::pair().expect("socket pair");
    let theirs: OwnedFd = theirs.into();
    let (out, err) = (
        theirs.try_clone().expect("dup"),
        theirs.try_clone().expect("dup"),
    );
    let child = Command::new(BIN)
        .arg("--inetd")
        .args(storage_args(dir.path()))
        .stdin(Stdio::from(theirs))
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .env("RUST_LOG", "trace")
        .spawn()
        .expect("start popstate --inetd");
    ours.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    assert_session(&converse(&ours, SESSION));
    let output = wait_bounded(child, Duration::from_secs(20));
    assert!(output.status.success(), "{output:?}");
}

/// The files in dist/, read as the tools that use them read them.
fn dist(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("dist")
            .join(name),
    )
    .expect("dist file")
}

/// The shipped storage paths, replaced by a test folder's.
fn with_test_paths(text: &str, dir: &Path) -> String {
    text.replace(
        "/var/mail/maildirs",
        &dir.join("maildirs").display().to_string(),
    )
    .replace(
        "/etc/popstate/users",
        &dir.join("users").display().to_string(),
    )
}

#[test]
fn dist_unit_files_pass_systemd_analyze_verify() {
    let dir = TempDir::new("units");
    for name in ["popstate.socket", "popstate.service", "popstate@.service"] {
        let text = dist(name).replace("/usr/local/bin/popstate", BIN);
        std::fs::write(dir.path().join(name), text).expect("write unit");
    }
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .args(
            ["popstate.socket", "popstate.service", "popstate@.service"]
                .map(|n| dir.path().join(n)),
        )
        .output()
        .expect("systemd-analyze (Debian package systemd) must be installed");
    assert!(output.status.success(), "{output:?}");
    assert!(
        output.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(dist("popstate@.service").contains("ExecStart=/usr/local/bin/popstate --inetd"));
    assert!(dist("popstate@.service").contains("StandardError=journal"));
    assert!(dist("popstate.socket").contains("\nAccept=no\n"));
}

#[test]
fn dist_inetd_conf_line_serves_a_session() {
    let dir = demo_folder();
    let conf = dist("inetd.conf");
    let line = conf
        .lines()
        .find(|l| !l.starts_with('#') && !l.trim().is_empty())
        .expect("one service line");
    let fields: Vec<String> = with_test_paths(line, dir.path())
        .split_whitespace()
        .map(String::from)
        .collect();
    assert_eq!(fields[..5], ["pop3", "stream", "tcp", "nowait", "mail"]);
    assert_eq!(fields[5], "/usr/local/bin/popstate");
    // inetd runs fields[5] with argv = fields[6..]; the first is argv[0].
    let (ours, theirs) = UnixStream::pair().expect("socket pair");
    let theirs: OwnedFd = theirs.into();
    let (out, err) = (
        theirs.try_clone().expect("dup"),
        theirs.try_clone().expect("dup"),
    );
    let child = Command::new(BIN)
        .args(&fields[7..])
        .stdin(Stdio::from(theirs))
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .expect("start the inetd.conf command");
    ours.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    assert_session(&converse(&ours, SESSION));
    assert!(
        wait_bounded(child, Duration::from_secs(20))
            .status
            .success()
    );
}

#[path = "../examples/replay/transcript.rs"]
mod transcript;

/// The book's transcript of the RFC 2449 settings (book/src/running.md), replayed against a
/// demo server started as it says, on every backend.
fn x08_x09_x11_the_books_transcript_replays(backend: Backend) {
    let mut config = test_config();
    config.login_delay = Some(Duration::from_secs(60));
    config.expire = Expire::Days(30);
    let server = backend.demo_server_with(config);
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/transcripts/running/login-delay-and-expire.txt");
    let text = std::fs::read_to_string(path).expect("transcript");
    // As in tests/transcripts.rs: a `sasl` build lists SASL PLAIN before IMPLEMENTATION.
    let text = if cfg!(feature = "sasl") {
        text.replace("S: IMPLEMENTATION", "S: SASL PLAIN\nS: IMPLEMENTATION")
    } else {
        text
    };
    if let Err(difference) = transcript::replay(&text, &server.addr.to_string()) {
        panic!("{difference}");
    }
}
