//! mbox against the world outside popstate: damaged files, delivery agents that append while a
//! session holds the maildrop (Debian's `dotlockfile`, package liblockfile-bin), and `kill -9`
//! in the middle of UPDATE. The shared session suite (tests/session.rs) covers the commands.
//!
//! `dotlockfile` must be installed (CI installs liblockfile-bin); a missing one fails the test
//! with a message saying so. Every child process is killed by its id when the test ends.

mod common;

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{Backend, Client, TempDir, TestServer, assert_err, test_config};
use popstate::mbox::append_message;

/// One mbox of `count` messages for `user`; returns each message's own octets in the file (its
/// From_ line, content and separator), so a test can build the file it expects.
fn write_mbox(path: &Path, count: usize, body_lines: usize) -> Vec<Vec<u8>> {
    let blocks: Vec<Vec<u8>> = (1..=count)
        .map(|n| {
            let mut message = format!(
                "From: sender{n}@example.org\nSubject: message {n}\nMessage-ID: <m{n}@test>\n\n"
            );
            for line in 0..body_lines {
                message.push_str(&format!("line {line} of message {n}\n"));
            }
            message.push_str("From the middle of a line\n\nFrom a quoted line\n>From another\n");
            let mut block = Vec::new();
            let from = format!(
                "From sender{n}@example.org Mon Jan  1 00:00:{:02} 2024",
                n % 60
            );
            append_message(&mut block, &from, message.as_bytes()).expect("Vec write");
            block
        })
        .collect();
    fs::write(path, blocks.concat()).expect("write mbox");
    blocks
}

/// A user `u` with password `pw` and an mbox folder, served in this process.
fn mbox_server() -> TestServer {
    Backend::Mbox.server_with_users("u:pw\n", test_config())
}

// ---- damaged files ------------------------------------------------------------------------

/// Length, modification and change time: any write to the file changes the change time.
fn untouched_stamp(path: &Path) -> (u64, i64, i64, i64, i64) {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(path).expect("stat");
    (
        m.len(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    )
}

#[test]
fn b14_a_damaged_mbox_gets_sys_perm_with_the_reason_and_is_never_changed() {
    let server = mbox_server();
    let path = server.mbox("u");
    type Make = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Make, &str)> = vec![
        (
            "no From_ line",
            Box::new(|p: &Path| fs::write(p, b"Subject: hi\n\nno From_ line\n").expect("write")),
            "it does not start with a \"From \" line",
        ),
        (
            "a NUL-filled tail",
            Box::new(|p: &Path| {
                let mut bytes = b"From a Mon Jan  1 00:00:00 2024\nSubject: x\n\nbody\n\n".to_vec();
                bytes.extend(std::iter::repeat_n(0u8, 8192));
                fs::write(p, bytes).expect("write");
            }),
            "it ends in NUL octets",
        ),
        (
            "a 2 GB sparse file",
            Box::new(|p: &Path| {
                let f = fs::File::create(p).expect("create");
                f.set_len(2 << 30).expect("set_len");
            }),
            "it does not start with a \"From \" line",
        ),
        (
            "a message, then 2 GB of sparse NULs",
            Box::new(|p: &Path| {
                fs::write(p, b"From a Mon Jan  1 00:00:00 2024\n\nhi\n\n").expect("write");
                let f = fs::File::options().write(true).open(p).expect("open");
                f.set_len(2 << 30).expect("set_len");
            }),
            "it ends in NUL octets",
        ),
    ];
    for (what, make, reason) in cases {
        make(&path);
        let before = untouched_stamp(&path);
        let small = fs::metadata(&path).expect("stat").len() < 1 << 20;
        let content = small.then(|| fs::read(&path).expect("read"));
        for _ in 0..2 {
            // Twice: the first refusal must release both locks, or the second says [IN-USE].
            let started = Instant::now();
            let mut c = server.connect();
            c.cmd("USER u");
            let reply = c.cmd("PASS pw");
            assert_err(
                &reply,
                "[SYS/PERM] the mbox is damaged and was left as it is",
            );
            assert!(reply.contains(reason), "{what}: {reply}");
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "{what}: checked at once"
            );
            assert_err(&c.cmd("STAT"), "log in first");
        }
        assert_eq!(untouched_stamp(&path), before, "{what}: not written to");
        if let Some(content) = content {
            assert_eq!(fs::read(&path).expect("read"), content, "{what}");
        }
        assert!(!server.root().join("u.lock").exists(), "{what}: lock left");
        println!("{what}: refused, file untouched");
    }
}

// ---- delivery agents that wait for popstate, and popstate waiting for them -----------------

/// Runs a shell command as a child process that the test will kill by its id if needed.
fn shell(script: &str) -> Child {
    Command::new("sh")
        .args(["-c", script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sh")
}

fn require_dotlockfile() {
    let found = Command::new("sh")
        .args(["-c", "command -v dotlockfile"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "dotlockfile is not installed: apt-get install liblockfile-bin (CI does); this test \
         fails rather than skips"
    );
}

/// Waits for a child to exit, killing it (by id) after `limit`.
fn wait_for(mut child: Child, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.success();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn b13_dotlockfile_deliveries_wait_for_the_session_and_update_keeps_every_one_whole() {
    require_dotlockfile();
    let server = mbox_server();
    let path = server.mbox("u");
    let originals = write_mbox(&path, 30, 5);
    let mut c = server.login("u", "pw");
    assert_eq!(c.cmd("STAT").split(' ').nth(1), Some("30"));

    // Five delivery agents, each taking the dot-lock the Debian way before appending.
    let lock = server.root().join("u.lock");
    let mut appended = Vec::new();
    let mut agents = Vec::new();
    for n in 1..=5 {
        let mut block = Vec::new();
        let message = format!("Subject: delivered {n} during the session\n\nFrom me, {n}\n");
        append_message(
            &mut block,
            &format!("From agent{n}@example.org Tue Jan  2 00:00:00 2024"),
            message.as_bytes(),
        )
        .expect("Vec write");
        let file = server.dir.path().join(format!("agent{n}"));
        fs::write(&file, &block).expect("write");
        appended.push(block);
        agents.push(shell(&format!(
            "dotlockfile -r 20 -l {lock} && cat {file} >> {mbox}; dotlockfile -u {lock}",
            lock = lock.display(),
            file = file.display(),
            mbox = path.display()
        )));
    }
    // And one program that ignores every lock: its mail lands during the session, past the
    // part popstate listed, and UPDATE must copy it over.
    server.deliver(
        "u",
        "new",
        "rude",
        b"Subject: appended without a lock\n\nhi\n",
    );
    let rude = {
        let mut block = Vec::new();
        append_message(
            &mut block,
            "From rude@popstate.test Tue Nov 25 09:00:00 2025",
            b"Subject: appended without a lock\n\nhi\n",
        )
        .expect("Vec write");
        block
    };
    thread::sleep(Duration::from_secs(1));
    let during = fs::read(&path).expect("read");
    assert_eq!(
        during,
        [originals.concat(), rude.clone()].concat(),
        "the agents wait while the session holds the dot-lock"
    );

    let marked: Vec<usize> = (0..30).filter(|i| i % 3 == 0).collect();
    for i in &marked {
        assert!(c.cmd(&format!("DELE {}", i + 1)).starts_with("+OK"));
    }
    assert_eq!(
        c.cmd("QUIT"),
        "+OK popstate signing off: removed 10 messages, 20 left"
    );
    let waited = agents
        .into_iter()
        .map(|a| wait_for(a, Duration::from_secs(90)))
        .filter(|&ok| ok)
        .count();
    assert_eq!(waited, 5, "every agent got the lock and delivered");

    let after = fs::read(&path).expect("read");
    let kept: Vec<u8> = originals
        .iter()
        .enumerate()
        .filter(|(i, _)| !marked.contains(i))
        .flat_map(|(_, b)| b.clone())
        .collect();
    assert!(
        after.starts_with(&kept),
        "unmarked messages unchanged, in order"
    );
    let rest = &after[kept.len()..];
    assert!(
        rest.starts_with(&rude),
        "the lock-less append is kept byte for byte"
    );
    let mut tail = rest[rude.len()..].to_vec();
    for block in &appended {
        let at = tail
            .windows(block.len())
            .position(|w| w == &block[..])
            .expect("each delivered message is there whole");
        tail.drain(at..at + block.len());
    }
    assert!(
        tail.is_empty(),
        "nothing else: {:?}",
        String::from_utf8_lossy(&tail)
    );
    for (i, block) in originals.iter().enumerate() {
        let present = after.windows(block.len()).any(|w| w == &block[..]);
        assert_eq!(present, !marked.contains(&i), "message {}", i + 1);
    }
    println!(
        "concurrent delivery: {} unmarked kept, {} marked gone, {} appended (5 by dotlockfile \
         after the session, 1 without a lock during it) all whole",
        30 - marked.len(),
        marked.len(),
        appended.len() + 1
    );
    assert!(!server.root().join("u.lock").exists());
}

#[test]
fn b13_popstate_waits_for_a_delivery_agents_dot_lock_then_says_in_use() {
    require_dotlockfile();
    let server = mbox_server();
    write_mbox(&server.mbox("u"), 3, 1);
    let lock = server.root().join("u.lock");
    let status = Command::new("dotlockfile")
        .args(["-l"])
        .arg(&lock)
        .status()
        .expect("dotlockfile");
    assert!(status.success());
    // A short delivery: the login waits for it.
    let releaser = shell(&format!("sleep 1; dotlockfile -u {}", lock.display()));
    let started = Instant::now();
    let mut c = server.login("u", "pw");
    assert!(started.elapsed() >= Duration::from_millis(500), "it waited");
    assert!(wait_for(releaser, Duration::from_secs(10)));
    assert_eq!(c.cmd("STAT").split(' ').nth(1), Some("3"));
    c.cmd("QUIT");
    assert!(c.is_closed());

    // A lock that stays: [IN-USE] after a bounded wait, and the foreign lock is left alone.
    let status = Command::new("dotlockfile")
        .arg("-l")
        .arg(&lock)
        .status()
        .expect("run");
    assert!(status.success());
    let started = Instant::now();
    let mut c = server.connect();
    c.cmd("USER u");
    assert_err(&c.cmd("PASS pw"), "[IN-USE]");
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(15), "{waited:?}");
    assert!(lock.exists(), "another program's lock is not removed");
    Command::new("dotlockfile")
        .arg("-u")
        .arg(&lock)
        .status()
        .expect("run");
    let mut c = server.login("u", "pw");
    assert_eq!(c.cmd("NOOP"), "+OK");
}

// ---- kill -9 during UPDATE ------------------------------------------------------------------

/// The built server, serving `dir` as an mbox folder; killed by its id when dropped.
struct Popstate {
    child: Child,
    addr: SocketAddr,
}

impl Popstate {
    fn start(mail: &Path, users: &Path) -> Popstate {
        let mut child = Command::new(env!("CARGO_BIN_EXE_popstate"))
            .args(["--listen", "127.0.0.1:0", "--mbox-dir"])
            .arg(mail)
            .arg("--users")
            .arg(users)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start popstate");
        let stdout = common::lines_of(child.stdout.take().expect("stdout"));
        let addr = common::listening_address(&stdout);
        Popstate { child, addr }
    }
}

impl Drop for Popstate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn b23_kill_9_at_any_moment_of_update_leaves_the_old_mbox_or_the_new_one() {
    let dir = TempDir::new("mbox-kill");
    let mail = dir.path().join("mail");
    fs::create_dir_all(&mail).expect("mkdir");
    let users = dir.path().join("users");
    fs::write(&users, "u:pw\n").expect("users");
    let path = mail.join("u");
    // About 40 MB: UPDATE takes long enough to be caught in the middle.
    let blocks = write_mbox(&path, 2000, 600);
    let old = fs::read(&path).expect("read");
    let marked: Vec<usize> = (0..blocks.len()).filter(|i| i % 2 == 0).collect();
    let new: Vec<u8> = blocks
        .iter()
        .enumerate()
        .filter(|(i, _)| !marked.contains(i))
        .flat_map(|(_, b)| b.clone())
        .collect();
    let mut dele = String::new();
    for i in &marked {
        dele.push_str(&format!("DELE {}\r\n", i + 1));
    }

    let (mut saw_old, mut saw_new, mut mid_write) = (0, 0, 0);
    let temp = mail.join(".u:popstate-new");
    let offsets_ms = [0u64, 1, 2, 5, 10, 20, 40, 80, 160, 320, 640, 1280];
    for &offset in &offsets_ms {
        fs::write(&path, &old).expect("restore");
        let server = Popstate::start(&mail, &users);
        let mut c = Client::connect(server.addr);
        c.login("u", "pw");
        c.send_raw(dele.as_bytes());
        for _ in &marked {
            assert!(c.line().starts_with("+OK"));
        }
        c.send("QUIT");
        thread::sleep(Duration::from_millis(offset));
        drop(server);
        // A half-written new file beside the mbox: the kill came while UPDATE was copying.
        mid_write += usize::from(temp.exists());
        let now = fs::read(&path).expect("read");
        if now == old {
            saw_old += 1;
        } else if now == new {
            saw_new += 1;
        } else {
            panic!(
                "kill -9 {offset} ms after QUIT left a file that is neither ({} octets; old {}, new {})",
                now.len(),
                old.len(),
                new.len()
            );
        }
    }
    println!(
        "kill -9 during UPDATE of a {} MB mbox at {} offsets: {saw_old} old, {saw_new} new, \
         0 other ({mid_write} killed while the new file was being written)",
        old.len() >> 20,
        offsets_ms.len()
    );
    // The next server takes over the dead one's dot-lock (its process is gone) and finishes.
    fs::write(&path, &old).expect("restore");
    let server = Popstate::start(&mail, &users);
    let mut c = Client::connect(server.addr);
    c.login("u", "pw");
    c.send_raw(dele.as_bytes());
    for _ in &marked {
        assert!(c.line().starts_with("+OK"));
    }
    assert!(
        c.cmd("QUIT")
            .starts_with("+OK popstate signing off: removed 1000 messages")
    );
    assert_eq!(fs::read(&path).expect("read"), new);
    let leftovers: Vec<PathBuf> = fs::read_dir(&mail)
        .expect("ls")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p != &path)
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
