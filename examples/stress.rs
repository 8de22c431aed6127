//! A stress test for popstate, with nothing but the standard library: many sessions at once doing
//! random valid and invalid commands, then a check that every maildrop holds exactly what it
//! should, byte for byte.
//!
//! ```text
//! cargo build --release && cargo run --release --example stress
//! cargo run --release --example stress -- [--threads 50] [--seconds 20] [--seed 1]
//!     [--messages 30] [--shared 5] [--keep]
//! cargo run --release --example stress -- --addr 127.0.0.1:1110 --maildir-root DIR --users FILE
//! ```
//!
//! Without `--addr` it generates a maildrop root in a temporary folder (one user per thread, plus
//! `--shared` users that every thread visits now and then, so that sessions meet `[IN-USE]`) and
//! starts the `popstate` binary built next to this example (target/release/popstate for a release
//! run). With `--addr` it uses a server that is already running on this machine, whose maildrop
//! root and users file it must be given; it DELETES MAIL there, so use it on test data only.
//!
//! Each thread runs sessions until the time is up. A session logs in as its own or a shared user,
//! checks the maildrop listing against the expected contents, sends a random mix of good commands
//! (RETR and TOP are compared byte for byte) and bad ones (each must get `-ERR` and leave the
//! session in step), and ends in one of three ways: DELE then QUIT, DELE then a dropped
//! connection, or DELE, RSET, QUIT. Only a QUIT that got `+OK` removes mail from the expected
//! contents; a dropped session must remove nothing (RFC 1939 §6). Threads also deliver new mail
//! the Maildir way (tmp/, then a rename into new/), which no session that is already logged in
//! may list or remove (RFC 1939 §4).
//!
//! At the end every maildrop is compared with what is expected, and the program prints a summary
//! and exits with status 1 if anything differed (status 2: it could not start).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

const USAGE: &str = "\
usage: stress [--threads N] [--seconds S] [--seed X] [--messages M] [--shared K] [--keep]
       stress --addr 127.0.0.1:PORT --maildir-root DIR --users FILE [--threads N] ...
  --threads N       sessions at once (default 50)
  --seconds S       how long to run (default 20)
  --seed X          seed for every random choice (default 1)
  --messages M      messages per generated user (default 30)
  --shared K        generated users that all threads share (default 5)
  --keep            keep the generated folder
  --addr ADDR       use a running server on this machine instead (it deletes mail!)";

/// How long to wait for any one reply before calling the server stuck.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------

struct Settings {
    threads: usize,
    seconds: u64,
    seed: u64,
    messages: usize,
    shared: usize,
    keep: bool,
    /// A running server, its maildrop root and users file.
    external: Option<(SocketAddr, PathBuf, PathBuf)>,
}

fn parse_args() -> Result<Settings, String> {
    let mut s = Settings {
        threads: 50,
        seconds: 20,
        seed: 1,
        messages: 30,
        shared: 5,
        keep: false,
        external: None,
    };
    let (mut addr, mut root, mut users) = (None, None, None);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--keep" {
            s.keep = true;
            continue;
        }
        if flag == "--help" || flag == "-h" {
            return Err(String::new());
        }
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{flag}: not a number"))
        };
        match flag.as_str() {
            "--threads" => s.threads = number()?.max(1) as usize,
            "--seconds" => s.seconds = number()?,
            "--seed" => s.seed = number()?,
            "--messages" => s.messages = number()? as usize,
            "--shared" => s.shared = number()? as usize,
            "--addr" => {
                let a: SocketAddr = value.parse().map_err(|e| format!("--addr: {e}"))?;
                if !a.ip().is_loopback() {
                    return Err("--addr: only a server on this machine (127.0.0.1)".into());
                }
                addr = Some(a);
            }
            "--maildir-root" => root = Some(PathBuf::from(value)),
            "--users" => users = Some(PathBuf::from(value)),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    match (addr, root, users) {
        (Some(a), Some(r), Some(u)) => s.external = Some((a, r, u)),
        (None, None, None) => {}
        _ => return Err("--addr, --maildir-root and --users go together".into()),
    }
    Ok(s)
}

// ---------------------------------------------------------------------------------------------
// A small deterministic random number generator (xorshift64*)
// ---------------------------------------------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // Never zero, and different seeds give different streams from the first number.
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// True with a chance of `percent` in a hundred.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

// ---------------------------------------------------------------------------------------------
// The expected state of every maildrop
// ---------------------------------------------------------------------------------------------

/// What one maildrop should hold. Message unique-ids are Maildir unique names, which popstate
/// uses as UIDL ids, so a listing can be matched to the expected messages by UIDL.
#[derive(Default)]
struct Mailbox {
    /// unique name → (content, delivery number).
    messages: BTreeMap<String, (Arc<Vec<u8>>, u64)>,
    /// Messages whose fate is unknown: a QUIT that got no reply. Either way is accepted.
    uncertain: BTreeSet<String>,
}

/// Everything the threads share.
struct World {
    addr: SocketAddr,
    root: PathBuf,
    users: Vec<(String, String)>,
    /// Users that belong to one thread each, and users every thread may use.
    own: Vec<usize>,
    shared: Vec<usize>,
    expected: HashMap<String, Mutex<Mailbox>>,
    /// Counts deliveries; a message delivered with number n is in new/ before the count reaches n.
    delivered: AtomicU64,
    /// Messages a maildrop should hold about: below this, sessions deliver new mail.
    target: usize,
    deadline: Instant,
}

impl World {
    fn mailbox(&self, user: &str) -> MutexGuard<'_, Mailbox> {
        self.expected[user]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Delivers a new message to `user` as a delivery agent does: write it in tmp/, then rename
    /// it into new/, where a POP3 session may see it.
    fn deliver(&self, user: &str, content: Vec<u8>, rng: &mut Rng) -> io::Result<()> {
        let mut mailbox = self.mailbox(user);
        let n = self.delivered.load(Ordering::SeqCst) + 1;
        let name = format!(
            "{}.M{n}R{:x}.stress",
            1_800_000_000 + n,
            rng.next() & 0xffff
        );
        let dir = self.root.join(user);
        fs::write(dir.join("tmp").join(&name), &content)?;
        fs::rename(dir.join("tmp").join(&name), dir.join("new").join(&name))?;
        let n = self.delivered.fetch_add(1, Ordering::SeqCst) + 1;
        mailbox.messages.insert(name, (Arc::new(content), n));
        Ok(())
    }
}

/// A message of random shape: LF or CRLF line ends, lines that start with a dot, sometimes no
/// final line end, sometimes long.
fn random_message(rng: &mut Rng, label: &str) -> Vec<u8> {
    let lf = if rng.chance(50) { "\n" } else { "\r\n" };
    let mut m = format!("From: stress@example.org{lf}Subject: {label}{lf}{lf}");
    let lines = match rng.below(100) {
        0..=69 => rng.below(30),
        70..=94 => 30 + rng.below(600),
        _ => 2000 + rng.below(4000),
    };
    for i in 0..lines {
        match rng.below(10) {
            0 => m.push('.'),
            1 => m.push_str(".."),
            _ => {}
        }
        let width = rng.below(90) as usize;
        let _ = write!(m, "{label} line {i} {}", "x".repeat(width));
        m.push_str(lf);
    }
    if rng.chance(10) {
        m.push_str("no line end at the very end");
    }
    m.into_bytes()
}

/// What RETR sends for a stored message, un-stuffed: every line ends in CRLF.
fn as_sent(stored: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(stored.len() + stored.len() / 16);
    let mut lines: Vec<&[u8]> = stored.split(|&b| b == b'\n').collect();
    if lines.last() == Some(&&b""[..]) {
        lines.pop();
    }
    for line in lines {
        out.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// What `TOP msg n` sends: the header, the blank line, and `n` lines of the body.
fn top_of(stored: &[u8], n: usize) -> Vec<u8> {
    let sent = as_sent(stored);
    let lines: Vec<&[u8]> = sent.split_inclusive(|&b| b == b'\n').collect();
    let Some(blank) = lines.iter().position(|l| *l == b"\r\n") else {
        return sent;
    };
    lines[..(blank + 1 + n).min(lines.len())].concat()
}

/// Reads every message file of `user` below `root`: unique name → content.
fn files_of(root: &Path, user: &str) -> io::Result<BTreeMap<String, Vec<u8>>> {
    let mut all = BTreeMap::new();
    for sub in ["new", "cur"] {
        let dir = root.join(user).join(sub);
        if !dir.is_dir() {
            continue;
        }
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let unique = name.split(':').next().unwrap_or(&name).to_string();
            all.insert(unique, fs::read(entry.path())?);
        }
    }
    Ok(all)
}

// ---------------------------------------------------------------------------------------------
// Setting up: a generated maildrop and the popstate binary, or a running server
// ---------------------------------------------------------------------------------------------

/// Writes `users` and one Maildir per user with `messages` messages each below `dir`.
fn generate(dir: &Path, settings: &Settings) -> io::Result<Vec<(String, String)>> {
    let mut rng = Rng::new(settings.seed ^ 0x5eed);
    let mut users = Vec::new();
    for t in 0..settings.threads {
        users.push((format!("t{t:03}"), format!("pw-{t}")));
    }
    for s in 0..settings.shared {
        users.push((format!("shared{s}"), format!("shared pw {s}")));
    }
    let root = dir.join("maildirs");
    for (user, _) in &users {
        for sub in ["new", "cur", "tmp"] {
            fs::create_dir_all(root.join(user).join(sub))?;
        }
        for i in 0..settings.messages {
            let content = random_message(&mut rng, &format!("{user} message {i}"));
            // Some have been seen by a mail reader already: in cur/ with flags.
            let name = format!("{}.M{i}.stress", 1_700_000_000 + i);
            let path = if rng.chance(20) {
                root.join(user).join("cur").join(format!("{name}:2,S"))
            } else {
                root.join(user).join("new").join(name)
            };
            fs::write(path, content)?;
        }
    }
    let text: String = users.iter().map(|(u, p)| format!("{u}:{p}\n")).collect();
    fs::write(dir.join("users"), text)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir.join("users"), fs::Permissions::from_mode(0o600))?;
    }
    Ok(users)
}

/// The `popstate` binary that cargo built next to this example.
fn popstate_binary() -> Result<PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| format!("cannot find myself: {e}"))?;
    // target/<profile>/examples/stress → target/<profile>/popstate
    let profile = me
        .parent()
        .and_then(Path::parent)
        .ok_or("unexpected location of the example")?;
    let binary = profile.join(format!("popstate{}", std::env::consts::EXE_SUFFIX));
    if binary.is_file() {
        Ok(binary)
    } else {
        let flag = if profile.ends_with("release") {
            " --release"
        } else {
            ""
        };
        Err(format!(
            "{} is missing: build the server first with `cargo build{flag}`",
            binary.display()
        ))
    }
}

/// Starts the server on 127.0.0.1 with a free port, its log going to `log`.
fn start_server(binary: &Path, dir: &Path, log: &Path) -> Result<(Child, SocketAddr), String> {
    let mut child = Command::new(binary)
        .args(["--listen", "127.0.0.1:0", "--maildir-root"])
        .arg(dir.join("maildirs"))
        .arg("--users")
        .arg(dir.join("users"))
        // Wrong passwords cost little here, so that the run measures sessions, not waiting.
        .args(["--auth-failure-delay-ms", "20"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(fs::File::create(log).map_err(|e| format!("log file: {e}"))?)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let mut banner = String::new();
    let stdout = child.stdout.take().ok_or("no stdout")?;
    BufReader::new(stdout)
        .read_line(&mut banner)
        .map_err(|e| format!("reading the banner: {e}"))?;
    let addr = banner
        .split("listening on ")
        .nth(1)
        .and_then(|a| a.trim().parse().ok())
        .ok_or_else(|| format!("unexpected banner {banner:?}; see {}", log.display()))?;
    Ok((child, addr))
}

/// Reads a users file: `name:password` lines, `#` comments.
fn read_users(path: &Path) -> Result<Vec<(String, String)>, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(u, p)| (u.to_string(), p.to_string()))
        .collect())
}

// ---------------------------------------------------------------------------------------------
// The client side of a session
// ---------------------------------------------------------------------------------------------

struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    fn open(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, REPLY_TIMEOUT)?;
        stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
        Ok(Conn {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        })
    }

    /// Sends one command line.
    fn send(&mut self, line: &[u8]) -> io::Result<()> {
        self.writer.write_all(&[line, b"\r\n"].concat())
    }

    /// One reply line without its CRLF. A closed connection is an error.
    fn line(&mut self) -> io::Result<String> {
        let mut buf = Vec::new();
        self.reader.read_until(b'\n', &mut buf)?;
        if !buf.ends_with(b"\r\n") {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("connection closed (last octets {buf:?})"),
            ));
        }
        buf.truncate(buf.len() - 2);
        String::from_utf8(buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// The rest of a multi-line reply, un-stuffed.
    fn multiline(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let mut line = Vec::new();
            self.reader.read_until(b'\n', &mut line)?;
            if !line.ends_with(b"\r\n") {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            if line == b".\r\n" {
                return Ok(body);
            }
            body.extend_from_slice(line.strip_prefix(b".").unwrap_or(&line));
        }
    }

    /// True once the server has closed the connection.
    fn closed(&mut self) -> bool {
        matches!(self.reader.fill_buf(), Ok([]))
    }
}

// ---------------------------------------------------------------------------------------------
// What a thread counts
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Tally {
    sessions: u64,
    logged_in: u64,
    in_use: u64,
    refused: u64,
    closed_after_wrong_passwords: u64,
    ended_quit: u64,
    ended_rset_quit: u64,
    ended_dropped: u64,
    commands: u64,
    /// Reply kinds: "+OK", "-ERR", "-ERR [IN-USE]", ...
    replies: BTreeMap<String, u64>,
    retr_checked: u64,
    octets_checked: u64,
    top_checked: u64,
    listings_checked: u64,
    delivered: u64,
    deleted: u64,
    uncertain: u64,
    /// What went wrong, one line each.
    mismatches: Vec<String>,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.sessions += other.sessions;
        self.logged_in += other.logged_in;
        self.in_use += other.in_use;
        self.refused += other.refused;
        self.closed_after_wrong_passwords += other.closed_after_wrong_passwords;
        self.ended_quit += other.ended_quit;
        self.ended_rset_quit += other.ended_rset_quit;
        self.ended_dropped += other.ended_dropped;
        self.commands += other.commands;
        for (k, v) in other.replies {
            *self.replies.entry(k).or_default() += v;
        }
        self.retr_checked += other.retr_checked;
        self.octets_checked += other.octets_checked;
        self.top_checked += other.top_checked;
        self.listings_checked += other.listings_checked;
        self.delivered += other.delivered;
        self.deleted += other.deleted;
        self.uncertain += other.uncertain;
        self.mismatches.extend(other.mismatches);
    }
}

/// One session's connection, with the counting and checking of each command.
struct Session<'a> {
    conn: Conn,
    tally: &'a mut Tally,
    user: String,
}

/// A message as a session sees it: its unique-id and the content it should have.
type Listed = (String, Arc<Vec<u8>>);

/// A surprise: the reply (or closed connection) that a command should not have got.
type Mismatch = String;

impl Session<'_> {
    /// Sends a command and returns the reply line, counting both.
    fn cmd(&mut self, line: &[u8]) -> Result<String, Mismatch> {
        self.tally.commands += 1;
        let shown = String::from_utf8_lossy(&line[..line.len().min(40)]).into_owned();
        self.conn
            .send(line)
            .map_err(|e| format!("{}: sending {shown:?}: {e}", self.user))?;
        let reply = self
            .conn
            .line()
            .map_err(|e| format!("{}: reply to {shown:?}: {e}", self.user))?;
        let kind = if reply.starts_with("+OK") {
            "+OK".to_string()
        } else if let Some(code) = reply
            .strip_prefix("-ERR [")
            .and_then(|r| r.split(']').next())
        {
            format!("-ERR [{code}]")
        } else {
            "-ERR".to_string()
        };
        *self.tally.replies.entry(kind).or_default() += 1;
        Ok(reply)
    }

    fn expect_ok(&mut self, line: &str) -> Result<String, Mismatch> {
        let reply = self.cmd(line.as_bytes())?;
        if reply.starts_with("+OK") {
            Ok(reply)
        } else {
            Err(format!("{}: {line:?} got {reply:?}", self.user))
        }
    }

    fn expect_err(&mut self, line: &[u8]) -> Result<(), Mismatch> {
        let reply = self.cmd(line)?;
        if reply.starts_with("-ERR ") {
            Ok(())
        } else {
            Err(format!(
                "{}: {:?} should be refused, got {reply:?}",
                self.user,
                String::from_utf8_lossy(line)
            ))
        }
    }

    fn multiline(&mut self, what: &str) -> Result<Vec<u8>, Mismatch> {
        self.conn
            .multiline()
            .map_err(|e| format!("{}: body of {what}: {e}", self.user))
    }
}

/// A command the server must refuse in AUTHORIZATION.
fn bad_authorization_command(rng: &mut Rng) -> Vec<u8> {
    let choices: [&[u8]; 14] = [
        b"STAT",
        b"RETR 1",
        b"DELE 1",
        b"PASS before user",
        b"USER",
        b"USER a/b",
        b"HELO",
        b"",
        b"APOP alice c4c9334bac560ecc979e58001b3e22fb",
        b"AUTH PLAIN",
        b"STLS",
        b"NO\0OP",
        b"\xff\xfe\xfd",
        b"QUIT now",
    ];
    match rng.below(16) {
        14 => vec![b'L'; 300 + rng.below(5000) as usize],
        15 => (0..rng.below(200))
            .map(|_| rng.next() as u8)
            .filter(|&b| b != b'\n')
            .collect(),
        i => choices[i as usize].to_vec(),
    }
}

/// A command the server must refuse in TRANSACTION, given `count` messages at login.
fn bad_transaction_command(rng: &mut Rng, count: usize) -> Vec<u8> {
    let past = count + 1 + rng.below(3) as usize;
    match rng.below(16) {
        0 => b"RETR 0".to_vec(),
        1 => format!("RETR {past}").into_bytes(),
        2 => b"DELE x".to_vec(),
        3 => b"LIST 99999999999999999999999".to_vec(),
        4 => b"TOP 1".to_vec(),
        5 => b"USER t000".to_vec(),
        6 => b"PASS pw-0".to_vec(),
        7 => b"STAT 1".to_vec(),
        8 => b"NOOP now".to_vec(),
        9 => b"UIDL 0".to_vec(),
        10 => b"QUIT now".to_vec(),
        11 => format!("TOP {past} 0").into_bytes(),
        12 => b"RETR\t1".to_vec(),
        13 => vec![b'T'; 256 + rng.below(100_000) as usize],
        14 => b"\0\0\0".to_vec(),
        _ => b"XTND XMIT".to_vec(),
    }
}

// ---------------------------------------------------------------------------------------------
// One session
// ---------------------------------------------------------------------------------------------

/// Runs one random session for a user, checking every reply. `Err` is a mismatch.
fn session(
    world: &World,
    user_index: usize,
    rng: &mut Rng,
    tally: &mut Tally,
) -> Result<(), Mismatch> {
    let (user, password) = &world.users[user_index];
    tally.sessions += 1;
    deliver_some(world, user, rng, tally)?;

    let conn = Conn::open(world.addr).map_err(|e| format!("{user}: connect: {e}"))?;
    let mut s = Session {
        conn,
        tally,
        user: user.clone(),
    };
    let greeting = s
        .conn
        .line()
        .map_err(|e| format!("{user}: greeting: {e}"))?;
    if greeting.starts_with("-ERR [SYS/TEMP]") {
        s.tally.refused += 1;
        return Ok(());
    }
    if !greeting.starts_with("+OK") {
        return Err(format!("{user}: greeting {greeting:?}"));
    }
    let Some(delivered_before_login) = authorization(&mut s, world, password, rng)? else {
        return Ok(());
    };
    let messages = check_listing(&mut s, world, delivered_before_login)?;
    let marked = transaction(&mut s, &messages, rng)?;
    end(&mut s, world, &messages, marked, rng)
}

/// Now and then delivers new mail first, to keep the maildrop near its starting size.
fn deliver_some(
    world: &World,
    user: &str,
    rng: &mut Rng,
    tally: &mut Tally,
) -> Result<(), Mismatch> {
    let have = world.mailbox(user).messages.len();
    if have < world.target && rng.chance(60) {
        for _ in 0..(world.target - have).min(1 + rng.below(3) as usize) {
            let content = random_message(rng, &format!("{user} delivered"));
            world
                .deliver(user, content, rng)
                .map_err(|e| format!("delivering to {user}: {e}"))?;
            tally.delivered += 1;
        }
    }
    Ok(())
}

/// AUTHORIZATION: some nonsense, perhaps a wrong password or three, then the login. Returns the
/// delivery count just before the PASS that logged in, or `None` if the session ended here
/// (`[IN-USE]`, or closed after three wrong passwords).
fn authorization(
    s: &mut Session,
    world: &World,
    password: &str,
    rng: &mut Rng,
) -> Result<Option<u64>, Mismatch> {
    let user = s.user.clone();
    for _ in 0..rng.below(3) {
        let bad = bad_authorization_command(rng);
        s.expect_err(&bad)?;
    }
    let wrong = match rng.below(100) {
        0 => 3, // the server closes the session after the third
        1..=9 => 1,
        _ => 0,
    };
    for attempt in 1..=wrong {
        s.expect_ok(&format!("USER {user}"))?;
        let reply = s.cmd(format!("PASS {password}-wrong").as_bytes())?;
        if !reply.starts_with("-ERR [AUTH]") {
            return Err(format!("{user}: wrong password got {reply:?}"));
        }
        if attempt == 3 {
            if !s.conn.closed() {
                return Err(format!("{user}: still open after three wrong passwords"));
            }
            s.tally.closed_after_wrong_passwords += 1;
            return Ok(None);
        }
    }
    s.expect_ok(&format!("USER {user}"))?;
    let delivered_before_login = world.delivered.load(Ordering::SeqCst);
    let reply = s.cmd(format!("PASS {password}").as_bytes())?;
    if reply.starts_with("-ERR [IN-USE]") {
        s.tally.in_use += 1;
        s.expect_ok("QUIT")?;
        return Ok(None);
    }
    if !reply.starts_with("+OK") {
        return Err(format!("{user}: login got {reply:?}"));
    }
    s.tally.logged_in += 1;
    Ok(Some(delivered_before_login))
}

/// The first thing in TRANSACTION: the UIDL listing must match the expected maildrop. Every
/// message delivered before the login and not removed by an earlier QUIT must be listed, and
/// nothing else. Returns the messages in message-number order: (unique-id, content).
fn check_listing(
    s: &mut Session,
    world: &World,
    delivered_before_login: u64,
) -> Result<Vec<Listed>, Mismatch> {
    let user = s.user.clone();
    s.expect_ok("UIDL")?;
    let listing = String::from_utf8_lossy(&s.multiline("UIDL")?).into_owned();
    let mailbox = world.mailbox(&user);
    let mut messages = Vec::new();
    for line in listing.lines() {
        let (_, uid) = line.split_once(' ').unwrap_or(("", line));
        match mailbox.messages.get(uid) {
            Some((content, _)) => messages.push((uid.to_string(), Arc::clone(content))),
            None if mailbox.uncertain.contains(uid) => {
                return Err(format!("{user}: uncertain {uid} listed; cannot check"));
            }
            None => return Err(format!("{user}: listed {uid}, which should not exist")),
        }
    }
    let listed: BTreeSet<&str> = messages.iter().map(|(u, _)| u.as_str()).collect();
    for (uid, (_, delivery)) in &mailbox.messages {
        let must = *delivery <= delivered_before_login && !mailbox.uncertain.contains(uid);
        if must && !listed.contains(uid.as_str()) {
            return Err(format!("{user}: {uid} is missing from the listing"));
        }
    }
    drop(mailbox);
    s.tally.listings_checked += 1;
    Ok(messages)
}

/// TRANSACTION: up to 13 random commands, good and bad. Returns the message numbers marked as
/// deleted at the end.
fn transaction(
    s: &mut Session,
    messages: &[Listed],
    rng: &mut Rng,
) -> Result<BTreeSet<usize>, Mismatch> {
    let user = s.user.clone();
    let count = messages.len();
    let mut marked = BTreeSet::new();
    for _ in 0..rng.below(14) {
        let n = 1 + rng.below(count as u64) as usize;
        match rng.below(100) {
            0..=29 if count > 0 => {
                let line = format!("RETR {n}");
                if marked.contains(&n) {
                    s.expect_err(line.as_bytes())?;
                    continue;
                }
                s.expect_ok(&line)?;
                let body = s.multiline(&line)?;
                if body != as_sent(&messages[n - 1].1) {
                    return Err(format!("{user}: {line} sent other octets than stored"));
                }
                s.tally.retr_checked += 1;
                s.tally.octets_checked += body.len() as u64;
            }
            30..=39 if count > 0 && !marked.contains(&n) => {
                let lines = rng.below(20) as usize;
                let line = format!("TOP {n} {lines}");
                s.expect_ok(&line)?;
                if s.multiline(&line)? != top_of(&messages[n - 1].1, lines) {
                    return Err(format!("{user}: {line} sent the wrong part"));
                }
                s.tally.top_checked += 1;
            }
            40..=59 if count > 0 => {
                let line = format!("DELE {n}");
                if marked.insert(n) {
                    s.expect_ok(&line)?;
                } else {
                    s.expect_err(line.as_bytes())?;
                }
            }
            60..=63 => {
                s.expect_ok("RSET")?;
                marked.clear();
            }
            64..=69 => {
                let octets: usize = (1..=count)
                    .filter(|i| !marked.contains(i))
                    .map(|i| as_sent(&messages[i - 1].1).len())
                    .sum();
                let want = format!("+OK {} {octets}", count - marked.len());
                let got = s.cmd(b"STAT")?;
                if got != want {
                    return Err(format!("{user}: STAT got {got:?}, expected {want:?}"));
                }
            }
            70..=74 => {
                s.expect_ok("NOOP")?;
            }
            _ => {
                let bad = bad_transaction_command(rng, count);
                s.expect_err(&bad)?;
            }
        }
    }
    Ok(marked)
}

/// The end: a few more DELEs, then QUIT (UPDATE removes the marked messages), a dropped
/// connection, or RSET and QUIT (both remove nothing).
fn end(
    s: &mut Session,
    world: &World,
    messages: &[Listed],
    mut marked: BTreeSet<usize>,
    rng: &mut Rng,
) -> Result<(), Mismatch> {
    let user = s.user.clone();
    for _ in 0..rng.below(3) {
        if !messages.is_empty() {
            let n = 1 + rng.below(messages.len() as u64) as usize;
            if marked.insert(n) {
                s.expect_ok(&format!("DELE {n}"))?;
            }
        }
    }
    match rng.below(10) {
        0..=4 => {
            // Hold the expected maildrop while QUIT runs: no other session can log in and look
            // before the server's UPDATE ends, and this one writes down what UPDATE did first.
            let mut mailbox = world.mailbox(&user);
            let reply = s.cmd(b"QUIT");
            let removed = matches!(&reply, Ok(r) if r.starts_with("+OK"));
            for &n in &marked {
                let uid = &messages[n - 1].0;
                if removed {
                    mailbox.messages.remove(uid);
                    s.tally.deleted += 1;
                } else {
                    mailbox.uncertain.insert(uid.clone());
                    s.tally.uncertain += 1;
                }
            }
            drop(mailbox);
            let reply = reply?;
            if !removed {
                return Err(format!("{user}: QUIT got {reply:?}"));
            }
            s.tally.ended_quit += 1;
        }
        5..=7 => {
            // Dropped without QUIT: nothing may be removed (RFC 1939 §6).
            s.tally.ended_dropped += 1;
        }
        _ => {
            s.expect_ok("RSET")?;
            s.expect_ok("QUIT")?;
            s.tally.ended_rset_quit += 1;
        }
    }
    Ok(())
}

/// One thread: sessions until the deadline, mostly as its own user, sometimes as a shared one.
fn worker(world: &World, thread: usize, seed: u64) -> Tally {
    let mut rng = Rng::new(seed ^ ((thread as u64 + 1) << 32));
    let mut tally = Tally::default();
    while Instant::now() < world.deadline {
        let user = if world.own.is_empty() || (!world.shared.is_empty() && rng.chance(25)) {
            world.shared[rng.below(world.shared.len() as u64) as usize]
        } else {
            world.own[thread % world.own.len()]
        };
        if let Err(mismatch) = session(world, user, &mut rng, &mut tally) {
            tally.mismatches.push(mismatch);
        }
    }
    tally
}

// ---------------------------------------------------------------------------------------------
// Putting it together
// ---------------------------------------------------------------------------------------------

fn main() -> ExitCode {
    let settings = match parse_args() {
        Ok(s) => s,
        Err(why) => {
            if !why.is_empty() {
                eprintln!("stress: {why}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&settings) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(why) => {
            eprintln!("stress: {why}");
            ExitCode::from(2)
        }
    }
}

/// Sets up, runs the threads, verifies; `Ok(false)` when something did not match.
fn run(settings: &Settings) -> Result<bool, String> {
    let scratch = std::env::temp_dir().join(format!("popstate-stress-{}", std::process::id()));
    let mut server = None;
    let (addr, root, users) = match &settings.external {
        Some((addr, root, users)) => (*addr, root.clone(), read_users(users)?),
        None => {
            let binary = popstate_binary()?;
            let _ = fs::remove_dir_all(&scratch);
            fs::create_dir_all(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
            let users = generate(&scratch, settings).map_err(|e| format!("generating: {e}"))?;
            let (child, addr) = start_server(&binary, &scratch, &scratch.join("server.log"))?;
            println!(
                "started {} (pid {}) on {addr}",
                binary.display(),
                child.id()
            );
            server = Some(child);
            (addr, scratch.join("maildirs"), users)
        }
    };

    if users.is_empty() {
        return Err("the users file lists nobody".into());
    }
    // The expected contents: what is on disk now.
    let mut expected = HashMap::new();
    let (mut files, mut octets) = (0usize, 0usize);
    for (user, _) in &users {
        let mut mailbox = Mailbox::default();
        for (uid, content) in files_of(&root, user).map_err(|e| format!("reading {user}: {e}"))? {
            files += 1;
            octets += content.len();
            mailbox.messages.insert(uid, (Arc::new(content), 0));
        }
        expected.insert(user.clone(), Mutex::new(mailbox));
    }
    let (own, shared): (Vec<usize>, Vec<usize>) = if settings.external.is_some() {
        ((0..users.len()).collect(), Vec::new())
    } else {
        (0..users.len()).partition(|&i| i < settings.threads)
    };
    println!(
        "{} threads for {} s (seed {}): {} users ({} shared), {files} messages ({:.1} MB)",
        settings.threads,
        settings.seconds,
        settings.seed,
        users.len(),
        shared.len(),
        octets as f64 / 1e6
    );
    let target = files.div_ceil(users.len().max(1));
    let world = World {
        addr,
        root: root.clone(),
        users,
        own,
        shared,
        expected,
        delivered: AtomicU64::new(0),
        target,
        deadline: Instant::now() + Duration::from_secs(settings.seconds),
    };

    let started = Instant::now();
    let mut tally = Tally::default();
    thread::scope(|scope| {
        let handles: Vec<_> = (0..settings.threads)
            .map(|t| {
                let world = &world;
                scope.spawn(move || worker(world, t, settings.seed))
            })
            .collect();
        for h in handles {
            match h.join() {
                Ok(t) => tally.add(t),
                Err(_) => tally.mismatches.push("a client thread panicked".into()),
            }
        }
    });
    let elapsed = started.elapsed().as_secs_f64();

    // Sessions that were dropped end when the server notices; give it a moment, then compare.
    thread::sleep(Duration::from_millis(500));
    let mut wrong_files = Vec::new();
    let mut files_left = 0;
    for (user, _) in &world.users {
        let now = files_of(&root, user).map_err(|e| format!("reading {user}: {e}"))?;
        files_left += now.len();
        let mailbox = world.mailbox(user);
        for (uid, (content, _)) in &mailbox.messages {
            match now.get(uid) {
                Some(found) if found == content.as_slice() => {}
                Some(_) => wrong_files.push(format!("{user}/{uid}: content changed")),
                None if mailbox.uncertain.contains(uid) => {}
                None => wrong_files.push(format!("{user}/{uid}: missing")),
            }
        }
        for uid in now.keys() {
            if !mailbox.messages.contains_key(uid) && !mailbox.uncertain.contains(uid) {
                wrong_files.push(format!("{user}/{uid}: should have been removed"));
            }
        }
    }

    // The server: still running, and what it logged.
    let mut server_note = String::from("external");
    if let Some(mut child) = server {
        let alive = matches!(child.try_wait(), Ok(None));
        let _ = child.kill();
        let _ = child.wait();
        let log = fs::read_to_string(scratch.join("server.log")).unwrap_or_default();
        let panics = log.matches("panicked").count();
        let warnings = log.lines().filter(|l| l.contains(" WARN ")).count();
        server_note = format!(
            "{}; log: {panics} panics, {warnings} warnings",
            if alive {
                "was running to the end"
            } else {
                "HAD STOPPED"
            }
        );
        if !alive || panics > 0 {
            tally.mismatches.push(format!("server {server_note}"));
        }
    }

    let ok = tally.mismatches.is_empty() && wrong_files.is_empty() && tally.uncertain == 0;
    print_summary(&tally, elapsed, files_left, &wrong_files, &server_note);
    if settings.external.is_none() {
        if settings.keep || !ok {
            println!("kept {}", scratch.display());
        } else {
            let _ = fs::remove_dir_all(&scratch);
        }
    }
    println!("result: {}", if ok { "OK" } else { "MISMATCH" });
    Ok(ok)
}

fn print_summary(t: &Tally, elapsed: f64, files_left: usize, wrong: &[String], server: &str) {
    let per_s = |n: u64| n as f64 / elapsed;
    println!("ran {elapsed:.1} s");
    println!(
        "sessions      {:>9}  ({:.0}/s): logged in {}, [IN-USE] {}, refused {}, closed after 3 wrong passwords {}",
        t.sessions,
        per_s(t.sessions),
        t.logged_in,
        t.in_use,
        t.refused,
        t.closed_after_wrong_passwords
    );
    println!(
        "endings       QUIT {}, DELE+RSET+QUIT {}, dropped without QUIT {}",
        t.ended_quit, t.ended_rset_quit, t.ended_dropped
    );
    println!(
        "commands      {:>9}  ({:.0}/s)",
        t.commands,
        per_s(t.commands)
    );
    let replies: Vec<String> = t.replies.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!("replies       {}", replies.join(", "));
    println!(
        "checked       {} listings at login, {} RETR ({:.1} MB) and {} TOP byte for byte",
        t.listings_checked,
        t.retr_checked,
        t.octets_checked as f64 / 1e6,
        t.top_checked
    );
    println!(
        "mail          {} delivered during the run, {} removed by QUITs that got +OK, {} uncertain",
        t.delivered, t.deleted, t.uncertain
    );
    println!(
        "verification  {files_left} message files on disk: {}",
        if wrong.is_empty() {
            "each one expected and byte-identical, none missing".to_string()
        } else {
            format!("{} differ", wrong.len())
        }
    );
    for w in wrong.iter().take(20) {
        println!("    {w}");
    }
    println!("server        {server}");
    println!("mismatches    {}", t.mismatches.len());
    for m in t.mismatches.iter().take(20) {
        println!("    {m}");
    }
}
