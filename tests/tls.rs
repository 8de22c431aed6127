//! TLS (cargo feature `tls`, built only with it: see `required-features` in Cargo.toml): STLS
//! (RFC 2595) and implicit TLS (RFC 8314) over real sockets on 127.0.0.1.
//!
//! The clients are rustls (in this file), curl (`pop3s://`, and `pop3://` with `--ssl-reqd`, which
//! sends STLS), Python's `poplib` (`POP3_SSL`, and `POP3(...).stls()`) and `openssl s_client
//! -starttls pop3`. Every test makes its own throwaway certificate with rcgen. What comes through
//! TLS is compared byte for byte with what the same messages look like on the plain port, which
//! tests/interop.rs checks against the Maildir files.
//!
//! Test names carry the IDs of docs/conformance.md (T.. RFC 2595, I.. RFC 8314; `note22` is the
//! failed-handshake rule from the project's notes).

mod common;

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use common::{Client, TempDir, assert_err, test_config};
use popstate::maildir::MaildirStore;
use popstate::server::{Config, Security, Server};
use popstate::tls::Certificate;
use popstate::users::Users;

/// How long a client process may take before it is killed and the test fails.
const CHILD_TIMEOUT: Duration = Duration::from_secs(30);

/// How many messages alice has in the demo maildrop (src/demo.rs).
const ALICE_MESSAGES: usize = 6;

// ---------------------------------------------------------------------------------------------
// A server with a certificate, and a TLS client
// ---------------------------------------------------------------------------------------------

/// A demo server listening twice: plain (with STLS) and implicit TLS.
struct TlsServer {
    plain: SocketAddr,
    tls: SocketAddr,
    /// The certificate's PEM file, for clients to trust.
    pem: PathBuf,
    pem_text: String,
    /// Removed when the server is dropped.
    _dir: TempDir,
}

/// A throwaway certificate for 127.0.0.1 and localhost: (certificate PEM, private key PEM).
fn make_certificate() -> (String, String) {
    let made =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("rcgen makes a certificate");
    (made.cert.pem(), made.signing_key.serialize_pem())
}

fn tls_server(change: impl FnOnce(&mut Config)) -> TlsServer {
    let dir = TempDir::new("tls");
    let root = dir.path().join("demo");
    popstate::demo::create(&root).expect("demo");
    let (cert_pem, key_pem) = make_certificate();
    let pem = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    fs::write(&pem, &cert_pem).expect("write cert");
    fs::write(&key, &key_pem).expect("write key");
    let mut config = test_config();
    config.tls = Some(Certificate::load(&pem, &key).expect("the test certificate loads"));
    change(&mut config);
    let text = fs::read_to_string(root.join("users")).expect("users");
    let plain = TcpListener::bind("127.0.0.1:0").expect("bind");
    let tls = TcpListener::bind("127.0.0.1:0").expect("bind");
    let server = Server::with_listeners(
        vec![(plain, Security::Plain), (tls, Security::ImplicitTls)],
        Users::parse(&text).expect("users"),
        Box::new(MaildirStore::new(root.join("maildirs"))),
        config,
    );
    let addrs = server.local_addrs().expect("addresses");
    thread::spawn(move || server.serve());
    TlsServer {
        plain: addrs[0].0,
        tls: addrs[1].0,
        pem,
        pem_text: cert_pem,
        _dir: dir,
    }
}

impl TlsServer {
    fn client_config(&self) -> Arc<ClientConfig> {
        client_config(&self.pem_text)
    }

    /// Connects to the implicit-TLS port and reads the greeting.
    fn connect_tls(&self) -> TlsClient {
        let tcp = TcpStream::connect(self.tls).expect("connect");
        let mut c = TlsClient::handshake(tcp, self.client_config());
        c.greeting = c.line();
        c
    }

    /// Connects to the plain port, sends STLS and does the handshake.
    fn connect_stls(&self) -> TlsClient {
        let mut plain = Client::connect(self.plain);
        let reply = plain.cmd("STLS");
        assert!(reply.starts_with("+OK"), "STLS: {reply}");
        let mut c = TlsClient::handshake(plain.writer, self.client_config());
        c.greeting = plain.greeting;
        c
    }

    /// What alice's messages look like on the plain port, un-stuffed: the reference that every
    /// TLS client's result is compared with (tests/interop.rs checks it against the files).
    fn alice_plain(&self) -> Vec<Vec<u8>> {
        let mut c = Client::connect(self.plain);
        c.login("alice", "wonderland");
        let messages = (1..=ALICE_MESSAGES)
            .map(|n| {
                let first = c.cmd(&format!("RETR {n}"));
                assert!(first.starts_with("+OK"), "{first}");
                c.multiline()
            })
            .collect();
        c.cmd("QUIT");
        messages
    }
}

fn client_config(pem: &str) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        roots.add(cert.expect("PEM")).expect("a root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A POP3 client over rustls that shows the exact bytes, like common::Client.
struct TlsClient {
    stream: BufReader<StreamOwned<ClientConnection, TcpStream>>,
    greeting: String,
}

impl TlsClient {
    /// Runs the client side of the handshake on `tcp` to its end.
    fn handshake(tcp: TcpStream, config: Arc<ClientConfig>) -> TlsClient {
        tcp.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let name = ServerName::try_from("127.0.0.1").expect("name");
        let conn = ClientConnection::new(config, name).expect("client");
        let mut stream = StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream
                .conn
                .complete_io(&mut stream.sock)
                .expect("the TLS handshake succeeds");
        }
        TlsClient {
            stream: BufReader::new(stream),
            greeting: String::new(),
        }
    }

    fn send(&mut self, line: &str) {
        let s = self.stream.get_mut();
        s.write_all(format!("{line}\r\n").as_bytes()).expect("send");
        s.flush().expect("flush");
    }

    fn line(&mut self) -> String {
        let mut buf = Vec::new();
        self.stream.read_until(b'\n', &mut buf).expect("read line");
        assert!(
            buf.ends_with(b"\r\n"),
            "reply line not ended by CRLF: {buf:?}"
        );
        buf.truncate(buf.len() - 2);
        String::from_utf8(buf).expect("text")
    }

    fn cmd(&mut self, line: &str) -> String {
        self.send(line);
        self.line()
    }

    /// The rest of a multi-line reply, un-stuffed.
    fn multiline(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let mut buf = Vec::new();
            let n = self.stream.read_until(b'\n', &mut buf).expect("read");
            assert!(n > 0, "connection closed inside a multi-line reply");
            if buf == b".\r\n" {
                return out;
            }
            out.extend_from_slice(buf.strip_prefix(b".").unwrap_or(&buf));
        }
    }

    fn capa(&mut self) -> Vec<String> {
        let first = self.cmd("CAPA");
        assert!(first.starts_with("+OK"), "{first}");
        String::from_utf8(self.multiline())
            .expect("text")
            .lines()
            .map(String::from)
            .collect()
    }

    fn login(&mut self, user: &str, password: &str) {
        let r = self.cmd(&format!("USER {user}"));
        assert!(r.starts_with("+OK"), "USER: {r}");
        let r = self.cmd(&format!("PASS {password}"));
        assert!(r.starts_with("+OK"), "PASS: {r}");
    }
}

fn plain_capa(c: &mut Client) -> Vec<String> {
    c.lines("CAPA")
}

// ---------------------------------------------------------------------------------------------
// STLS and implicit TLS, with the rustls client
// ---------------------------------------------------------------------------------------------

#[test]
fn i01_i02_implicit_tls_handshake_first_then_greeting_then_authorization() {
    let server = tls_server(|_| {});
    let expected = server.alice_plain();
    let mut c = server.connect_tls();
    assert_eq!(
        without_timestamp(&c.greeting),
        "+OK popstate ready; log in with USER and PASS (RFC 1939)"
    );
    let capa = c.capa();
    assert!(capa.contains(&"USER".to_string()), "{capa:?}");
    assert!(!capa.contains(&"STLS".to_string()), "T01: {capa:?}");
    // T02: STLS with TLS already active.
    assert_err(&c.cmd("STLS"), "already active");
    c.login("alice", "wonderland");
    let first = c.cmd("RETR 2");
    assert!(first.starts_with("+OK"), "{first}");
    assert_eq!(c.multiline(), expected[1]);
    assert!(c.cmd("QUIT").starts_with("+OK"));
}

#[test]
fn t01_capa_lists_stls_only_before_login_without_tls() {
    let server = tls_server(|_| {});
    let mut c = Client::connect(server.plain);
    let before = plain_capa(&mut c);
    assert!(before.contains(&"STLS".to_string()), "{before:?}");
    c.login("alice", "wonderland");
    let after = plain_capa(&mut c);
    assert!(!after.contains(&"STLS".to_string()), "{after:?}");
    // T02: STLS only in AUTHORIZATION.
    assert_err(&c.cmd("STLS"), "only valid before login");
    assert!(c.cmd("STAT").starts_with("+OK"), "the session is in step");
}

#[test]
fn t02_t03_after_stls_the_session_is_in_authorization_and_capa_changes() {
    let server = tls_server(|_| {});
    let expected = server.alice_plain();
    let mut c = server.connect_stls();
    let capa = c.capa();
    assert!(!capa.contains(&"STLS".to_string()), "T03: {capa:?}");
    assert!(capa.contains(&"USER".to_string()), "{capa:?}");
    // T02: a second STLS gets -ERR and changes nothing.
    assert_err(&c.cmd("STLS"), "TLS is already active");
    // Still AUTHORIZATION: TRANSACTION commands are refused until login.
    assert_err(&c.cmd("STAT"), "log in first");
    c.login("alice", "wonderland");
    let first = c.cmd("LIST");
    assert!(first.starts_with("+OK"), "{first}");
    let listing = String::from_utf8(c.multiline()).expect("text");
    for (n, message) in expected.iter().enumerate() {
        assert!(
            listing.contains(&format!("{} {}\r\n", n + 1, message.len())),
            "B19 sizes over TLS: {listing}"
        );
        let first = c.cmd(&format!("RETR {}", n + 1));
        assert!(first.starts_with("+OK"), "{first}");
        assert_eq!(&c.multiline(), message, "message {}", n + 1);
    }
    assert!(c.cmd("QUIT").starts_with("+OK"));
}

#[test]
fn t02_stls_without_a_certificate_gets_err_and_is_not_in_capa() {
    let server = common::demo_server();
    let mut c = server.connect();
    let capa = plain_capa(&mut c);
    assert!(!capa.contains(&"STLS".to_string()), "{capa:?}");
    assert_err(&c.cmd("STLS"), "no certificate");
    c.login("alice", "wonderland");
}

// ANCHOR: injection
#[test]
fn t06_lines_pipelined_after_stls_are_discarded_never_executed_inside_tls() {
    let server = tls_server(|_| {});
    let mut plain = Client::connect(server.plain);
    // One write: if the server kept "USER evil" in its buffer, it would run it inside TLS.
    plain.send_raw(b"STLS\r\nUSER evil\r\n");
    assert_eq!(plain.line(), "+OK begin TLS negotiation");
    let mut c = TlsClient::handshake(plain.writer, server.client_config());
    // Nothing arrives inside TLS before the client says something.
    c.stream
        .get_ref()
        .sock
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let mut byte = [0u8; 1];
    match c.stream.read(&mut byte) {
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) => {}
        other => panic!("a reply to the injected USER arrived inside TLS: {other:?}"),
    }
    c.stream
        .get_ref()
        .sock
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    // Had USER evil run, PASS would be checked against "evil" and fail with [AUTH].
    assert_err(&c.cmd("PASS evil"), "PASS must come right after USER");
    c.login("alice", "wonderland");
    assert!(c.cmd("QUIT").starts_with("+OK"));
}
// ANCHOR_END: injection

#[test]
fn t04_t05_require_tls_refuses_user_and_pass_before_stls_and_capa_omits_user() {
    let server = tls_server(|config| config.login.require_tls = true);
    let mut c = Client::connect(server.plain);
    let capa = plain_capa(&mut c);
    assert!(!capa.contains(&"USER".to_string()), "{capa:?}");
    assert!(capa.contains(&"STLS".to_string()), "{capa:?}");
    let reply = c.cmd("USER alice");
    assert_err(&reply, "send STLS first");
    assert!(!reply.contains("[AUTH]"), "R03: no [AUTH] on USER: {reply}");
    assert_err(&c.cmd("PASS wonderland"), "send STLS first");

    let mut c = server.connect_stls();
    let capa = c.capa();
    assert!(capa.contains(&"USER".to_string()), "{capa:?}");
    c.login("alice", "wonderland");
    assert!(c.cmd("QUIT").starts_with("+OK"));

    // On the implicit-TLS port logins are accepted at once.
    let mut c = server.connect_tls();
    c.login("bob", "builder");
    assert!(c.cmd("QUIT").starts_with("+OK"));
}

/// A09 with T04: AUTH PLAIN sends the password (in base64), so `--require-tls` refuses it before
/// STLS and leaves `SASL PLAIN` out of CAPA; inside TLS both come back and the login works.
#[test]
#[cfg(feature = "sasl")]
fn a09_t04_require_tls_refuses_auth_plain_before_stls_and_accepts_it_after() {
    let server = tls_server(|config| config.login.require_tls = true);
    // "\0alice\0wonderland" in base64 (RFC 4616).
    const ALICE: &str = "AGFsaWNlAHdvbmRlcmxhbmQ=";
    let mut c = Client::connect(server.plain);
    let capa = plain_capa(&mut c);
    assert!(!capa.iter().any(|l| l.starts_with("SASL")), "{capa:?}");
    let reply = c.cmd(&format!("AUTH PLAIN {ALICE}"));
    assert_err(&reply, "use STLS first");
    assert!(
        !reply.contains("[AUTH]"),
        "the credentials were not looked at: {reply}"
    );
    assert!(c.cmd("NOOP").starts_with("-ERR"), "still in AUTHORIZATION");

    let mut c = server.connect_stls();
    let capa = c.capa();
    assert!(capa.contains(&"SASL PLAIN".to_string()), "{capa:?}");
    let reply = c.cmd(&format!("AUTH PLAIN {ALICE}"));
    assert!(reply.starts_with("+OK"), "{reply}");
    assert!(c.cmd("STAT").starts_with("+OK 6 "), "in TRANSACTION");
    assert!(c.cmd("QUIT").starts_with("+OK"));
}

// ---------------------------------------------------------------------------------------------
// Handshakes that go wrong end that session only (note 22)
// ---------------------------------------------------------------------------------------------

/// Waits until the server closes `stream` (EOF or reset), or `limit` passes.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    stream.set_read_timeout(Some(limit)).expect("timeout");
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) if start.elapsed() <= limit => return Some(start.elapsed()),
            Ok(_) => continue,
            _ => return None,
        }
    }
}

/// The first record of a real ClientHello, made by rustls.
fn client_hello(config: Arc<ClientConfig>) -> Vec<u8> {
    let name = ServerName::try_from("127.0.0.1").expect("name");
    let mut conn = ClientConnection::new(config, name).expect("client");
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).expect("hello");
    hello
}

/// After one bad handshake, another client still logs in over each kind of TLS.
fn still_serving(server: &TlsServer) {
    let mut c = server.connect_tls();
    c.login("bob", "builder");
    assert!(c.cmd("QUIT").starts_with("+OK"));
    let mut c = server.connect_stls();
    c.login("bob", "builder");
    assert!(c.cmd("QUIT").starts_with("+OK"));
}

#[test]
fn note22_garbage_instead_of_a_client_hello_ends_only_that_session() {
    let server = tls_server(|_| {});
    // On the implicit-TLS port.
    let mut tcp = TcpStream::connect(server.tls).expect("connect");
    tcp.write_all(b"USER alice\r\nPASS wonderland\r\n")
        .expect("send");
    assert!(closed_within(&mut tcp, Duration::from_secs(10)).is_some());
    // After STLS.
    let mut plain = Client::connect(server.plain);
    assert!(plain.cmd("STLS").starts_with("+OK"));
    plain.send_raw(b"\x16\x03\x01\x00\x05hello, this is not TLS\r\nUSER alice\r\n");
    assert!(closed_within(&mut plain.writer, Duration::from_secs(10)).is_some());
    still_serving(&server);
}

#[test]
fn note22_a_handshake_cut_off_halfway_ends_only_that_session() {
    let server = tls_server(|_| {});
    let hello = client_hello(server.client_config());
    for addr in [server.tls, server.plain] {
        let mut tcp = TcpStream::connect(addr).expect("connect");
        if addr == server.plain {
            let mut reader = BufReader::new(tcp.try_clone().expect("clone"));
            let mut greeting = String::new();
            reader.read_line(&mut greeting).expect("greeting");
            tcp.write_all(b"STLS\r\n").expect("send");
            let mut ok = String::new();
            reader.read_line(&mut ok).expect("+OK");
            assert!(ok.starts_with("+OK"), "{ok}");
        }
        tcp.write_all(&hello[..hello.len() / 2])
            .expect("half a hello");
        tcp.shutdown(std::net::Shutdown::Write).expect("shutdown");
        assert!(
            closed_within(&mut tcp, Duration::from_secs(10)).is_some(),
            "the server closes a cut-off handshake on {addr}"
        );
    }
    still_serving(&server);
}

#[test]
fn note22_a_client_that_never_finishes_the_handshake_is_closed_by_the_idle_timer() {
    let idle = Duration::from_secs(2);
    let server = tls_server(|config| config.idle_timeout = idle);
    let hello = client_hello(server.client_config());
    // One client sends half a ClientHello and waits; one sends nothing at all.
    let mut half = TcpStream::connect(server.tls).expect("connect");
    half.write_all(&hello[..hello.len() / 2]).expect("half");
    let mut silent = TcpStream::connect(server.tls).expect("connect");
    // Meanwhile others are served.
    still_serving(&server);
    for stream in [&mut half, &mut silent] {
        let waited = closed_within(stream, Duration::from_secs(10)).expect("closed");
        assert!(waited <= idle + Duration::from_secs(3), "{waited:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// The book's transcript, replayed over TLS
// ---------------------------------------------------------------------------------------------

/// Replays `tests/transcripts/tls/*.txt`: `C:` lines in a row go out in one write (that is how
/// the injection is sent), `S:` lines must come back exactly, and `-- TLS handshake` switches
/// the connection to TLS.
fn replay_tls(text: &str, server: &TlsServer) {
    let text = &for_this_build(text);
    let mut plain = Some(Client::connect(server.plain));
    let mut tls: Option<TlsClient> = None;
    let mut pending = String::new();
    let mut greeting_seen = false;
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(sent) = line.strip_prefix("C: ") {
            pending.push_str(sent);
            pending.push_str("\r\n");
            continue;
        }
        if !pending.is_empty() {
            match (&mut plain, &mut tls) {
                (_, Some(c)) => {
                    let s = c.stream.get_mut();
                    s.write_all(pending.as_bytes()).expect("send");
                    s.flush().expect("flush");
                }
                (Some(c), None) => c.send_raw(pending.as_bytes()),
                (None, None) => unreachable!(),
            }
            pending.clear();
        }
        if line == "-- TLS handshake" {
            let c = plain.take().expect("a plain connection to upgrade");
            tls = Some(TlsClient::handshake(c.writer, server.client_config()));
            continue;
        }
        let expected = line
            .strip_prefix("S: ")
            .or_else(|| line.strip_prefix("S:"))
            .unwrap_or_else(|| panic!("line {n}: not C:, S: or -- TLS handshake: {line}"));
        let got = match (&mut plain, &mut tls) {
            (Some(c), None) if !greeting_seen => c.greeting.clone(),
            (Some(c), None) => c.line(),
            (_, Some(c)) => c.line(),
            (None, None) => unreachable!(),
        };
        greeting_seen = true;
        assert_eq!(without_timestamp(&got), expected, "line {n}");
    }
}

#[test]
fn t06_book_transcript_stls_injection_replays_over_tls() {
    let server = tls_server(|_| {});
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/transcripts/tls/stls.txt");
    replay_tls(&fs::read_to_string(path).expect("transcript"), &server);
}

// ---------------------------------------------------------------------------------------------
// Real clients: curl, Python's poplib, openssl s_client
// ---------------------------------------------------------------------------------------------

/// Runs a program with a watchdog; returns (success, stdout, stderr). Fails the test if the
/// program is not installed (CI installs curl, python3 and openssl).
fn run(program: &str, args: &[&str], stdin: &[u8]) -> (bool, Vec<u8>, String) {
    let mut child: Child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{program}` (CI installs it): {e}"));
    let mut input = child.stdin.take().expect("stdin");
    let stdin = stdin.to_vec();
    let writer = thread::spawn(move || {
        let _ = input.write_all(&stdin);
        // openssl s_client quits at the end of its input, so keep it open a moment.
        thread::sleep(Duration::from_millis(1500));
    });
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + CHILD_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`{program}` did not finish within {CHILD_TIMEOUT:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    let _ = writer.join();
    let out = out.join().expect("stdout");
    let err = String::from_utf8_lossy(&err.join().expect("stderr")).into_owned();
    (status.success(), out, err)
}

fn curl(server: &TlsServer, url: &str, extra: &[&str]) -> Vec<u8> {
    let pem = server.pem.display().to_string();
    let mut args = vec![
        "--silent",
        "--show-error",
        "--max-time",
        "20",
        "--cacert",
        &pem,
    ];
    args.extend_from_slice(extra);
    args.push(url);
    let (ok, out, err) = run("curl", &args, b"");
    assert!(ok, "curl {url}: {err}");
    out
}

#[test]
fn i01_curl_pop3s_lists_and_retrieves_byte_exact() {
    let server = tls_server(|_| {});
    let expected = server.alice_plain();
    let base = format!("pop3s://alice:wonderland@{}", server.tls);
    let listing = String::from_utf8(curl(&server, &format!("{base}/"), &[])).expect("text");
    assert_eq!(listing.lines().count(), ALICE_MESSAGES, "{listing}");
    for (n, message) in expected.iter().enumerate() {
        assert!(
            listing.contains(&format!("{} {}\r\n", n + 1, message.len())),
            "{listing}"
        );
        let got = curl(&server, &format!("{base}/{}", n + 1), &[]);
        assert_eq!(&got, message, "message {}", n + 1);
    }
}

#[test]
fn t02_curl_stls_with_ssl_reqd_lists_and_retrieves_byte_exact() {
    let server = tls_server(|config| config.login.require_tls = true);
    let expected = server.alice_plain_after_stls();
    let base = format!("pop3://alice:wonderland@{}", server.plain);
    let listing =
        String::from_utf8(curl(&server, &format!("{base}/"), &["--ssl-reqd"])).expect("text");
    assert_eq!(listing.lines().count(), ALICE_MESSAGES, "{listing}");
    for (n, message) in expected.iter().enumerate() {
        let got = curl(&server, &format!("{base}/{}", n + 1), &["--ssl-reqd"]);
        assert_eq!(&got, message, "message {}", n + 1);
    }
}

impl TlsServer {
    /// Like `alice_plain`, for a server that takes logins only over TLS.
    fn alice_plain_after_stls(&self) -> Vec<Vec<u8>> {
        let mut c = self.connect_stls();
        c.login("alice", "wonderland");
        let messages = (1..=ALICE_MESSAGES)
            .map(|n| {
                let first = c.cmd(&format!("RETR {n}"));
                assert!(first.starts_with("+OK"), "{first}");
                c.multiline()
            })
            .collect();
        c.cmd("QUIT");
        messages
    }
}

/// Python's poplib, trusting only the test certificate: `ssl` (POP3_SSL on the implicit-TLS
/// port) or `stls` (POP3 on the plain port, then `stls()`). Prints the capabilities it saw and
/// every message as hex.
const POPLIB: &str = r#"
import poplib, ssl, sys
mode, host, port, cafile = sys.argv[1:5]
ctx = ssl.create_default_context(cafile=cafile)
if mode == "ssl":
    p = poplib.POP3_SSL(host, int(port), context=ctx, timeout=20)
else:
    p = poplib.POP3(host, int(port), timeout=20)
    print("before", " ".join(sorted(p.capa())))
    p.stls(context=ctx)
print("after", " ".join(sorted(p.capa())))
p.user("alice")
p.pass_("wonderland")
resp, listing, _ = p.list()
for entry in listing:
    n, size = entry.split()
    resp, lines, octets = p.retr(int(n))
    print("msg", int(n), int(size), (b"\r\n".join(lines) + b"\r\n").hex())
print("quit", p.quit().decode())
"#;

fn poplib(server: &TlsServer, mode: &str, addr: SocketAddr) -> Vec<String> {
    let pem = server.pem.display().to_string();
    let port = addr.port().to_string();
    let (ok, out, err) = run(
        "python3",
        &["-c", POPLIB, mode, "127.0.0.1", &port, &pem],
        b"",
    );
    assert!(ok, "poplib {mode}: {err}");
    String::from_utf8(out)
        .expect("text")
        .lines()
        .map(String::from)
        .collect()
}

fn check_poplib_messages(lines: &[String], expected: &[Vec<u8>]) {
    let messages: Vec<&String> = lines.iter().filter(|l| l.starts_with("msg ")).collect();
    assert_eq!(messages.len(), expected.len(), "{lines:?}");
    for (n, (line, message)) in messages.iter().zip(expected).enumerate() {
        let hex: String = message.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            **line,
            format!("msg {} {} {hex}", n + 1, message.len()),
            "message {}",
            n + 1
        );
    }
    assert!(
        lines.last().is_some_and(|l| l.starts_with("quit +OK")),
        "{lines:?}"
    );
}

#[test]
fn i01_python_poplib_pop3_ssl_retrieves_byte_exact() {
    let server = tls_server(|_| {});
    let expected = server.alice_plain();
    let lines = poplib(&server, "ssl", server.tls);
    assert!(
        lines[0].starts_with("after ") && !lines[0].contains("STLS"),
        "{lines:?}"
    );
    check_poplib_messages(&lines, &expected);
}

#[test]
fn t03_python_poplib_stls_sees_capa_change_and_retrieves_byte_exact() {
    let server = tls_server(|_| {});
    let expected = server.alice_plain();
    let lines = poplib(&server, "stls", server.plain);
    assert!(lines[0].contains(" STLS"), "{lines:?}");
    assert!(
        lines[1].starts_with("after ") && !lines[1].contains("STLS"),
        "{lines:?}"
    );
    check_poplib_messages(&lines, &expected);
}

#[test]
fn t02_openssl_s_client_starttls_pop3_logs_in() {
    let server = tls_server(|config| config.login.require_tls = true);
    let pem = server.pem.display().to_string();
    let connect = server.plain.to_string();
    let (ok, out, err) = run(
        "openssl",
        &[
            "s_client",
            "-quiet",
            "-verify_return_error",
            "-starttls",
            "pop3",
            "-connect",
            &connect,
            "-CAfile",
            &pem,
        ],
        b"USER alice\r\nPASS wonderland\r\nSTAT\r\nQUIT\r\n",
    );
    let out = String::from_utf8_lossy(&out);
    assert!(ok, "openssl s_client failed:\n{out}\n{err}");
    assert!(
        out.contains("+OK alice's maildrop has 6 messages (29816 octets)\r\n+OK 6 29816\r\n"),
        "{out}\n{err}"
    );
    assert!(out.contains("+OK popstate signing off"), "{out}");
}

// ---------------------------------------------------------------------------------------------
// The binary: certificate flags, and no leaks after failed handshakes
// ---------------------------------------------------------------------------------------------

/// Runs the binary to its end with `args`; returns (exit code, stderr).
fn popstate(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_popstate"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run popstate");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn tls_flags_name_the_wrong_file_before_anything_binds() {
    let dir = TempDir::new("tls-flags");
    let (cert, key) = make_certificate();
    let (_, other_key) = make_certificate();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        fs::write(&path, text).expect("write");
        path.display().to_string()
    };
    let cert = write("cert.pem", &cert);
    let key = write("key.pem", &key);
    let other_key = write("other-key.pem", &other_key);
    let not_pem = write("not-pem.txt", "hello\n");
    let missing = dir.path().join("missing.pem").display().to_string();
    // Hold a port: an error about the files must come before any attempt to bind it.
    let busy = TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy = busy.local_addr().expect("addr").to_string();
    // (flags, what the error says, the file it names)
    let cases: Vec<(Vec<&str>, &str, &str)> = vec![
        (
            vec!["--tls-cert", &missing, "--tls-key", &key],
            "cannot read",
            &missing,
        ),
        (
            vec!["--tls-cert", &cert, "--tls-key", &missing],
            "cannot read",
            &missing,
        ),
        (
            vec!["--tls-cert", &not_pem, "--tls-key", &key],
            "holds no certificate",
            &not_pem,
        ),
        (
            vec!["--tls-cert", &key, "--tls-key", &key],
            "holds no certificate",
            &key,
        ),
        (
            vec!["--tls-cert", &cert, "--tls-key", &cert],
            "holds no private key",
            &cert,
        ),
        (
            vec!["--tls-cert", &cert, "--tls-key", &other_key],
            "do not fit together",
            &other_key,
        ),
        (vec!["--tls-cert", &cert], "go together", ""),
    ];
    for (args, expected, file) in cases {
        let mut all = vec!["--listen", &busy];
        all.extend(args.iter());
        let (code, err) = popstate(&all);
        assert_eq!(code, Some(1), "{all:?}: {err}");
        assert!(err.contains(expected), "{all:?}: {err}");
        assert!(err.contains(file), "the error names {file}: {err}");
        assert!(!err.contains("cannot listen"), "{all:?}: {err}");
    }
    // Without a certificate, outside the demo, the TLS-only flags are refused.
    let d = TempDir::new("tls-flags-real");
    popstate::demo::create(&d.path().join("d")).expect("demo");
    let root = d.path().join("d/maildirs").display().to_string();
    let users = d.path().join("d/users").display().to_string();
    for flag in [
        ["--listen-tls", "127.0.0.1:0"].as_slice(),
        ["--require-tls"].as_slice(),
    ] {
        let mut all = vec!["--maildir-root", &root, "--users", &users];
        all.extend(flag.iter());
        let (code, err) = popstate(&all);
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains("needs a certificate"), "{err}");
    }
}

/// A running binary, killed when dropped.
struct Binary(Child);

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Binary {
    fn threads(&self) -> u64 {
        let text = fs::read_to_string(format!("/proc/{}/status", self.0.id())).expect("status");
        text.lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("Threads")
    }

    fn open_files(&self) -> usize {
        fs::read_dir(format!("/proc/{}/fd", self.0.id()))
            .expect("fd")
            .count()
    }
}

/// Polls `f` until it holds or 10 s pass.
fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        thread::sleep(Duration::from_millis(50));
    }
    f()
}

#[test]
fn note22_failed_handshakes_leave_no_threads_or_files_behind() {
    let dir = TempDir::new("tls-leaks");
    let (cert, key) = make_certificate();
    fs::write(dir.path().join("cert.pem"), &cert).expect("cert");
    fs::write(dir.path().join("key.pem"), &key).expect("key");
    let cert_path = dir.path().join("cert.pem").display().to_string();
    let key_path = dir.path().join("key.pem").display().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_popstate"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--listen-tls",
            "127.0.0.1:0",
            "--tls-cert",
            &cert_path,
            "--tls-key",
            &key_path,
            "--idle-timeout",
            "2",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start popstate");
    let stdout = common::lines_of(child.stdout.take().expect("stdout"));
    let binary = Binary(child);
    let mut addrs = Vec::new();
    for _ in 0..2 {
        let line = stdout
            .recv_timeout(Duration::from_secs(20))
            .expect("a listening line");
        let addr: SocketAddr = line
            .rsplit(' ')
            .next()
            .and_then(|a| a.parse().ok())
            .expect("an address");
        addrs.push(addr);
    }
    let (plain, tls) = (addrs[0], addrs[1]);
    // The listening lines come before the second listener's thread starts: one closed session on
    // each listener shows both accept loops running. Then let the server settle, and count.
    let mut c = Client::connect(plain);
    assert!(c.cmd("QUIT").starts_with("+OK"));
    assert!(c.is_closed());
    let mut probe = TcpStream::connect(tls).expect("connect");
    probe.write_all(b"garbage\r\n\r\n").expect("send");
    assert!(closed_within(&mut probe, Duration::from_secs(10)).is_some());
    thread::sleep(Duration::from_millis(300));
    let (threads, files) = (binary.threads(), binary.open_files());
    let hello = client_hello(client_config(&cert));
    for round in 0..10 {
        // Garbage, half a hello then close, half a hello then silence (the idle timer).
        let mut garbage = TcpStream::connect(tls).expect("connect");
        garbage.write_all(b"garbage\r\n\r\n").expect("send");
        let mut half = TcpStream::connect(tls).expect("connect");
        half.write_all(&hello[..hello.len() / 2]).expect("send");
        half.shutdown(std::net::Shutdown::Write).expect("shutdown");
        let mut stalled = TcpStream::connect(plain).expect("connect");
        stalled.write_all(b"STLS\r\n").expect("send");
        stalled.write_all(&hello[..hello.len() / 2]).expect("send");
        if round == 0 {
            // A good client is served alongside.
            let mut c = Client::connect(plain);
            assert!(c.cmd("STLS").starts_with("+OK"));
            let mut c = TlsClient::handshake(c.writer, client_config(&cert));
            c.login("alice", "wonderland");
            assert!(c.cmd("QUIT").starts_with("+OK"));
        }
        for stream in [&mut garbage, &mut half, &mut stalled] {
            assert!(closed_within(stream, Duration::from_secs(10)).is_some());
        }
    }
    assert!(
        eventually(|| binary.threads() <= threads && binary.open_files() <= files),
        "threads {} (was {threads}), open files {} (was {files})",
        binary.threads(),
        binary.open_files()
    );
}

/// A greeting without the APOP timestamp a build with the `apop` feature adds (`<pid.n.t@host>`).
fn without_timestamp(line: &str) -> &str {
    match line.rsplit_once(" <") {
        Some((before, stamp))
            if line.starts_with("+OK") && stamp.ends_with('>') && stamp.contains('@') =>
        {
            before
        }
        _ => line,
    }
}

/// The fixture shows the default build; with the `sasl` feature CAPA also lists `SASL PLAIN`
/// just before IMPLEMENTATION (as tests/transcripts.rs replays it).
fn for_this_build(text: &str) -> String {
    text.lines()
        .flat_map(|line| match line.strip_prefix("S: IMPLEMENTATION ") {
            Some(_) if cfg!(feature = "sasl") => vec!["S: SASL PLAIN", line],
            _ => vec![line],
        })
        .map(|line| format!("{line}\n"))
        .collect()
}
