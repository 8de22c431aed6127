//! Shared by the integration tests: a real server on 127.0.0.1:0 over a temporary Maildir or
//! mbox folder, and a small client that reads replies byte for byte.
//!
//! A test that should hold for every storage takes a [`Backend`] and is listed in
//! [`on_every_backend!`], which makes one `#[test]` per backend (`maildir::NAME`, `mbox::NAME`).
#![allow(dead_code)]

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use popstate::maildir::MaildirStore;
use popstate::maildrop::Store;
use popstate::mbox::MboxStore;
use popstate::server::{Config, Security, Server};
use popstate::users::Users;

/// A folder below the system's temporary folder, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("popstate-test-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The ways popstate can store mail; the shared suites run over each of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `--maildir-root`: `maildirs/<user>/{new,cur,tmp}`.
    Maildir,
    /// `--mbox-dir`: `mail/<user>`, one mbox file each.
    Mbox,
}

/// Runs each named `fn NAME(backend: Backend)` as a test once per backend, as
/// `maildir::NAME` and `mbox::NAME`.
#[macro_export]
macro_rules! on_every_backend {
    ($($test:ident),* $(,)?) => {
        mod maildir {
            $( #[test] fn $test() { super::$test(super::common::Backend::Maildir) } )*
        }
        mod mbox {
            $( #[test] fn $test() { super::$test(super::common::Backend::Mbox) } )*
        }
    };
}

impl Backend {
    /// The folder below a test's folder that holds the maildrops.
    pub fn root_name(self) -> &'static str {
        match self {
            Backend::Maildir => "maildirs",
            Backend::Mbox => "mail",
        }
    }

    fn store(self, root: PathBuf) -> Box<dyn Store> {
        match self {
            Backend::Maildir => Box::new(MaildirStore::new(root)),
            Backend::Mbox => Box::new(MboxStore::new(root)),
        }
    }

    /// A server on the demo maildrops (alice/wonderland with 6 messages, bob/builder with 2),
    /// stored this way.
    pub fn demo_server(self) -> TestServer {
        self.demo_server_with(test_config())
    }

    pub fn demo_server_with(self, config: Config) -> TestServer {
        let dir = TempDir::new("demo");
        let root = dir.path().join("demo");
        match self {
            Backend::Maildir => popstate::demo::create(&root).expect("demo"),
            Backend::Mbox => popstate::demo::create_mbox(&root).expect("demo"),
        }
        // Move the demo's contents up one level so that the maildrops sit in dir.
        fs::rename(
            root.join(self.root_name()),
            dir.path().join(self.root_name()),
        )
        .expect("move");
        fs::rename(root.join("users"), dir.path().join("users")).expect("move");
        start(dir, config, self)
    }

    /// A server with the given users and no mail.
    pub fn server_with_users(self, users: &str, config: Config) -> TestServer {
        start(self.users_folder(users), config, self)
    }

    /// A folder with a users file and an empty storage root, for a server to start on.
    fn users_folder(self, users: &str) -> TempDir {
        let dir = TempDir::new("users");
        fs::create_dir_all(dir.path().join(self.root_name())).expect("root");
        fs::write(dir.path().join("users"), users).expect("users");
        dir
    }

    /// alice's demo unique-ids, message by message: Maildir names, or mbox hashes (fixed here
    /// so that a change to the hash, which would make clients fetch every message again,
    /// fails a test).
    pub fn alice_uid(self, number: usize) -> &'static str {
        const MAILDIR: [&str; 6] = [
            "1764000001.demo1.popstate",
            "1764000002.demo2.popstate",
            "1764000003.demo3.popstate",
            "1764000004.demo4.popstate",
            "1764000005.demo5.popstate",
            "1764000006.demo6.popstate",
        ];
        const MBOX: [&str; 6] = [
            "mb96caed73ddb6cd1",
            "ma6f91bebe39cc281",
            "m2ee92b596256692e",
            "ma4bc70b687dc3c5b",
            "ma35211cf8ca82f54",
            "m4ae1678701c104ed",
        ];
        match self {
            Backend::Maildir => MAILDIR[number - 1],
            Backend::Mbox => MBOX[number - 1],
        }
    }
}

/// A running server and the folder it serves.
pub struct TestServer {
    pub addr: SocketAddr,
    pub dir: TempDir,
    pub backend: Backend,
}

impl TestServer {
    /// The folder that holds every user's maildrop.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join(self.backend.root_name())
    }

    /// The mbox file of `user` (mbox servers).
    pub fn mbox(&self, user: &str) -> PathBuf {
        self.root().join(user)
    }

    /// The Maildir of `user`.
    pub fn maildir(&self, user: &str) -> PathBuf {
        self.dir.path().join("maildirs").join(user)
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// Connects and logs in, panicking if the login fails.
    pub fn login(&self, user: &str, password: &str) -> Client {
        let mut c = self.connect();
        c.login(user, password);
        c
    }

    /// Delivers a message to `user`: a file named `name` in the Maildir's `sub` ("new" or
    /// "cur"), or one more message at the end of the mbox, with `name` in its From_ line. The
    /// mbox append takes no lock, as a delivery agent that ignores locks would: a test can
    /// deliver while a session holds the maildrop, the hardest case for UPDATE. Returns the
    /// file written.
    pub fn deliver(&self, user: &str, sub: &str, name: &str, content: &[u8]) -> PathBuf {
        if self.backend == Backend::Mbox {
            let path = self.mbox(user);
            let mut bytes = Vec::new();
            let from = format!("From {name}@popstate.test Tue Nov 25 09:00:00 2025");
            popstate::mbox::append_message(&mut bytes, &from, content).expect("mbox in memory");
            let mut file = fs::File::options()
                .create(true)
                .append(true)
                .open(&path)
                .expect("open mbox");
            file.write_all(&bytes).expect("append");
            return path;
        }
        let dir = self.maildir(user);
        for s in ["new", "cur", "tmp"] {
            fs::create_dir_all(dir.join(s)).expect("maildir");
        }
        let path = dir.join(sub).join(name);
        fs::write(&path, content).expect("write message");
        path
    }

    /// Every message of `user` with its content, sorted by name: a picture of the maildrop to
    /// compare before and after. The name is the Maildir file name (`new/...`, `cur/...`), or
    /// for an mbox the message's Message-ID, else its From_ line; the content is as stored
    /// (for an mbox: without framing, quoting undone).
    pub fn snapshot(&self, user: &str) -> Vec<(String, Vec<u8>)> {
        if self.backend == Backend::Mbox {
            let bytes = match fs::read(self.mbox(user)) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => panic!("read mbox: {e}"),
            };
            let mut all: Vec<(String, Vec<u8>)> = popstate::mbox::read_all(&bytes)
                .expect("parse mbox")
                .into_iter()
                .map(|(from, content)| (message_id(&content).unwrap_or(from), content))
                .collect();
            all.sort();
            return all;
        }
        let mut all = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(entries) = fs::read_dir(self.maildir(user).join(sub)) else {
                continue;
            };
            for e in entries.flatten() {
                let name = format!("{sub}/{}", e.file_name().to_string_lossy());
                all.push((name, fs::read(e.path()).expect("read message")));
            }
        }
        all.sort();
        all
    }
}

/// Test settings: short waits so that the suite stays fast.
pub fn test_config() -> Config {
    Config {
        idle_timeout: Duration::from_secs(30),
        max_sessions: 100,
        login: popstate::authorization::LoginPolicy {
            failure_delay: Duration::ZERO,
            max_failures: 3,
            require_tls: false,
        },
        ..Config::default()
    }
}

/// The value of a `Message-ID:` header line, if the message has one.
fn message_id(content: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(content);
    text.lines()
        .take_while(|l| !l.is_empty())
        .find_map(|l| l.strip_prefix("Message-ID: "))
        .map(|id| id.trim().to_string())
}

/// Starts a server on the demo maildrop (users alice/wonderland and bob/builder), in Maildir.
pub fn demo_server() -> TestServer {
    Backend::Maildir.demo_server()
}

pub fn demo_server_with(config: Config) -> TestServer {
    Backend::Maildir.demo_server_with(config)
}

/// Starts a server with the given users and empty Maildirs for them.
pub fn server_with_users(users: &str, config: Config) -> TestServer {
    Backend::Maildir.server_with_users(users, config)
}

/// Like [`server_with_users`] (Maildir), with a second listener on `[::1]:0`, whose address it
/// returns too. A client there comes from `::1`, not `127.0.0.1`, so the per-address session
/// limit counts it apart from the clients of `TestServer::addr`.
pub fn server_with_users_and_ipv6(users: &str, config: Config) -> (TestServer, SocketAddr) {
    let backend = Backend::Maildir;
    let dir = backend.users_folder(users);
    let ipv6 = TcpListener::bind("[::1]:0").expect("bind [::1]:0 (is IPv6 loopback up?)");
    let ipv6_addr = ipv6.local_addr().expect("addr");
    (start_on(dir, config, backend, Some(ipv6)), ipv6_addr)
}

fn start(dir: TempDir, config: Config, backend: Backend) -> TestServer {
    start_on(dir, config, backend, None)
}

/// Starts a server on `127.0.0.1:0`, and on `extra` too if given.
fn start_on(
    dir: TempDir,
    config: Config,
    backend: Backend,
    extra: Option<TcpListener>,
) -> TestServer {
    let text = fs::read_to_string(dir.path().join("users")).expect("users file");
    let users = Users::parse(&text).expect("valid users file");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let listeners = std::iter::once(listener)
        .chain(extra)
        .map(|l| (l, Security::Plain))
        .collect();
    let store = backend.store(dir.path().join(backend.root_name()));
    let server = Server::with_listeners(listeners, users, store, config);
    let addr = server.local_addr().expect("addr");
    thread::spawn(move || server.serve());
    TestServer { addr, dir, backend }
}

/// A POP3 client that shows the exact bytes.
pub struct Client {
    pub reader: BufReader<TcpStream>,
    pub writer: TcpStream,
    pub greeting: String,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let writer = stream.try_clone().expect("clone");
        let mut c = Client {
            reader: BufReader::new(stream),
            writer,
            greeting: String::new(),
        };
        c.greeting = c.line();
        c
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("send");
    }

    /// Sends one command with CRLF.
    pub fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\r\n").as_bytes());
    }

    /// Reads one line and checks that it ends in CRLF; returns it without the CRLF.
    pub fn line(&mut self) -> String {
        let mut buf = Vec::new();
        self.reader.read_until(b'\n', &mut buf).expect("read line");
        assert!(
            buf.ends_with(b"\r\n"),
            "reply line not ended by CRLF: {buf:?}"
        );
        buf.truncate(buf.len() - 2);
        String::from_utf8(buf).expect("reply is text")
    }

    /// Sends a command and returns the one-line reply.
    pub fn cmd(&mut self, line: &str) -> String {
        self.send(line);
        self.line()
    }

    /// Reads the rest of a multi-line reply as raw wire bytes, up to and including ".\r\n".
    pub fn multiline_raw(&mut self) -> Vec<u8> {
        let mut all = Vec::new();
        loop {
            let mut buf = Vec::new();
            let n = self.reader.read_until(b'\n', &mut buf).expect("read");
            assert!(n > 0, "connection closed inside a multi-line reply");
            assert!(buf.ends_with(b"\r\n"), "line not ended by CRLF: {buf:?}");
            all.extend_from_slice(&buf);
            if buf == b".\r\n" {
                return all;
            }
        }
    }

    /// Reads the rest of a multi-line reply and un-stuffs it, as a client does.
    pub fn multiline(&mut self) -> Vec<u8> {
        let raw = self.multiline_raw();
        let body = &raw[..raw.len() - 3];
        let mut out = Vec::new();
        for line in body.split_inclusive(|&b| b == b'\n') {
            out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        }
        out
    }

    /// Sends a command, expects `+OK`, returns the un-stuffed lines of the multi-line reply.
    pub fn lines(&mut self, line: &str) -> Vec<String> {
        let first = self.cmd(line);
        assert!(first.starts_with("+OK"), "{line}: {first}");
        String::from_utf8(self.multiline())
            .expect("text")
            .lines()
            .map(String::from)
            .collect()
    }

    pub fn login(&mut self, user: &str, password: &str) {
        let r = self.cmd(&format!("USER {user}"));
        assert!(r.starts_with("+OK"), "USER: {r}");
        let r = self.cmd(&format!("PASS {password}"));
        assert!(r.starts_with("+OK"), "PASS: {r}");
    }

    /// True if the server has closed the connection (reads EOF).
    pub fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.reader.read(&mut byte), Ok(0))
    }

    /// Goes away without QUIT, and returns once the server has closed its side: the session is
    /// over by then, its lock released and nothing of it carried out (RFC 1939 §6).
    pub fn hang_up(mut self) {
        self.writer.shutdown(Shutdown::Write).expect("shutdown");
        assert!(
            self.is_closed(),
            "the server did not close after the client went away"
        );
    }
}

/// Asserts that a reply starts with `-ERR` and contains `text`.
#[track_caller]
pub fn assert_err(reply: &str, text: &str) {
    assert!(reply.starts_with("-ERR "), "expected -ERR, got {reply:?}");
    assert!(reply.contains(text), "expected {text:?} in {reply:?}");
}

/// Sends every line `from` produces to a channel, from a thread of its own, so that a child
/// process never blocks on a full pipe and a test can wait for a line with a timeout.
pub fn lines_of(from: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for the built binary's "popstate ... listening on ADDR" line and returns ADDR.
pub fn listening_address(stdout: &std::sync::mpsc::Receiver<String>) -> SocketAddr {
    let banner = stdout
        .recv_timeout(Duration::from_secs(20))
        .expect("popstate printed where it listens");
    banner
        .split("listening on ")
        .nth(1)
        .expect("listening on ADDR")
        .trim()
        .parse()
        .expect("socket address")
}

/// Runs a tool to completion and insists that it succeeded, printing what it said if not. The
/// tools (curl, python3, ...) are installed by `.ci/run`: a missing one fails the test.
pub fn run_tool(program: &str, args: &[&str]) -> std::process::Output {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (CI installs it): {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `curl pop3://127.0.0.1:PORT/` as alice, logging in the way `login_options` asks (curl's
/// `--login-options`, e.g. `AUTH=PLAIN` or `AUTH=+APOP`), with the dialogue on standard error.
pub fn curl_list_as_alice(addr: SocketAddr, login_options: &str) -> std::process::Output {
    let url = format!("pop3://127.0.0.1:{}/", addr.port());
    run_tool(
        "curl",
        &[
            "-q",
            "--silent",
            "--show-error",
            "--max-time",
            "20",
            "--noproxy",
            "*",
            "--user",
            "alice:wonderland",
            "--login-options",
            login_options,
            "--verbose",
            &url,
        ],
    )
}
