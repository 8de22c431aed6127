//! The `popstate` binary: flags, errors, the demo, logs, and the lock across processes.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::{Client, TempDir, assert_err};

const BIN: &str = env!("CARGO_BIN_EXE_popstate");

/// A running `popstate` child process, killed when dropped.
struct Running {
    child: Child,
    addr: SocketAddr,
    stdout: String,
    /// Standard output after the banner, line by line (the `--trace` view).
    more_stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    /// Starts the binary with `args` (plus `--listen 127.0.0.1:0`) and waits for its banner.
    fn start(args: &[&str], env: &[(&str, &str)]) -> Running {
        let listen: &[&str] = if args.contains(&"--listen") {
            &[]
        } else {
            &["--listen", "127.0.0.1:0"]
        };
        let mut child = Command::new(BIN)
            .args(listen)
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start popstate");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (btx, brx) = mpsc::channel();
        let (otx, orx) = mpsc::channel();
        // Without --maildir-root the banner goes on to explain the demo.
        let last_line = if !args.contains(&"--maildir-root") {
            "Stop the server"
        } else {
            "popstate "
        };
        thread::spawn(move || {
            let mut text = String::new();
            let mut banner_done = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if banner_done {
                    if otx.send(line).is_err() {
                        break;
                    }
                    continue;
                }
                text.push_str(&line);
                text.push('\n');
                if line.starts_with(last_line) {
                    let _ = btx.send(text.clone());
                    banner_done = true;
                }
            }
        });
        let stdout = brx
            .recv_timeout(Duration::from_secs(20))
            .expect("popstate printed its banner");
        let addr = stdout
            .lines()
            .find_map(|l| l.split("listening on ").nth(1))
            .expect("address in banner")
            .trim()
            .parse()
            .expect("socket address");
        Running {
            child,
            addr,
            stdout,
            more_stdout: orx,
            stderr: rx,
        }
    }

    /// Collects stderr lines until one contains `needle` (or 10 s pass).
    fn wait_log(&self, needle: &str) -> Vec<String> {
        let mut seen = Vec::new();
        while let Ok(line) = self.stderr.recv_timeout(Duration::from_secs(10)) {
            let found = line.contains(needle);
            seen.push(line);
            if found {
                return seen;
            }
        }
        panic!("no log line with {needle:?}; saw {seen:#?}");
    }
}

/// Runs the binary to completion and returns (exit code, stdout, stderr).
fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start popstate");
    let (mut out, mut err) = (String::new(), String::new());
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let _ = stdout.read_to_string(&mut out);
    err.push_str(&reader.join().expect("join"));
    let status = child.wait().expect("wait");
    (status.code(), out, err)
}

/// A maildrop root and users file for a real (non-demo) run.
fn real_setup() -> TempDir {
    let dir = TempDir::new("cli");
    popstate::demo::create(&dir.path().join("d")).expect("demo files");
    dir
}

#[test]
fn help_lists_every_flag() {
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, Some(0));
    for flag in [
        "--listen",
        "--maildir-root",
        "--users",
        "--idle-timeout",
        "--max-sessions",
    ] {
        assert!(out.contains(flag), "{flag} in {out}");
    }
}

#[test]
fn bad_flags_and_files_give_one_clear_line_and_a_failure_code() {
    let dir = real_setup();
    let root = dir.path().join("d/maildirs");
    let root = root.to_str().expect("utf-8 path");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--frobnicate"], "Unrecognized argument: --frobnicate"),
        (vec!["--idle-timeout", "soon"], "idle-timeout"),
        (
            vec!["--listen", "not-an-address"],
            "cannot listen on not-an-address",
        ),
        (
            vec![
                "--listen",
                "127.0.0.1:0",
                "--maildir-root",
                root,
                "--users",
                "/nonexistent/users",
            ],
            "cannot read users file /nonexistent/users",
        ),
        (
            vec!["--listen", "127.0.0.1:0", "--maildir-root", root],
            "--maildir-root and --users go together",
        ),
        (
            vec![
                "--listen",
                "127.0.0.1:0",
                "--maildir-root",
                "/nonexistent",
                "--users",
                "/dev/null",
            ],
            "not a folder",
        ),
        (
            vec!["--listen", "127.0.0.1:0", "--idle-timeout", "0"],
            "at least 1 second",
        ),
        (
            vec![
                "--listen",
                "127.0.0.1:0",
                "--idle-timeout",
                "18446744073709551615",
            ],
            "at most 86400 seconds",
        ),
        (
            vec!["--listen", "127.0.0.1:0", "--max-sessions", "0"],
            "at least 1",
        ),
    ];
    for (args, expected) in cases {
        let (code, _, err) = run(&args);
        assert_ne!(code, Some(0), "{args:?}");
        assert!(code.is_some(), "{args:?} exited by signal");
        assert!(err.contains(expected), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(err.trim().lines().count() <= 2, "{args:?}: short: {err}");
    }
}

#[test]
fn a_users_file_with_a_bad_line_names_the_line() {
    let dir = real_setup();
    let users = dir.path().join("users");
    std::fs::write(&users, "alice:x\n../etc:y\n").expect("write");
    let root = dir.path().join("d/maildirs");
    let (code, _, err) = run(&[
        "--listen",
        "127.0.0.1:0",
        "--maildir-root",
        root.to_str().expect("utf-8"),
        "--users",
        users.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, Some(1));
    assert!(err.contains("line 2"), "{err}");
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let (code, _, err) = run(&["--listen", &addr]);
    assert_eq!(code, Some(1));
    assert!(
        err.starts_with(&format!("popstate: cannot listen on {addr}")),
        "{err}"
    );
}

#[test]
fn no_flags_serves_the_demo_and_says_how_to_connect() {
    let server = Running::start(&[], &[]);
    assert!(
        server.stdout.contains("telnet 127.0.0.1"),
        "{}",
        server.stdout
    );
    assert!(
        server.stdout.contains("alice / wonderland"),
        "{}",
        server.stdout
    );
    let mut c = Client::connect(server.addr);
    c.login("alice", "wonderland");
    assert_eq!(c.cmd("STAT"), "+OK 6 29816");
}

#[test]
fn b13_the_lock_holds_across_processes() {
    let dir = real_setup();
    let root = dir.path().join("d/maildirs");
    let users = dir.path().join("d/users");
    let args = [
        "--maildir-root",
        root.to_str().expect("utf-8"),
        "--users",
        users.to_str().expect("utf-8"),
    ];
    let one = Running::start(&args, &[]);
    let two = Running::start(&args, &[]);
    let mut first = Client::connect(one.addr);
    first.login("alice", "wonderland");
    let mut second = Client::connect(two.addr);
    second.cmd("USER alice");
    assert_err(&second.cmd("PASS wonderland"), "[IN-USE]");
    first.cmd("QUIT");
    assert!(first.is_closed());
    second.cmd("USER alice");
    assert!(second.cmd("PASS wonderland").starts_with("+OK"));
}

/// The line a Maildir lock file holds: pid, start time, boot id, session.
fn lock_line(root: &std::path::Path, user: &str) -> String {
    std::fs::read_to_string(root.join(user).join("popstate.lock")).expect("read the lock file")
}

/// This test process as a lock file names it: (pid, start time, boot id), from /proc.
fn this_process() -> (u32, u64, String) {
    let pid = std::process::id();
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let (_, after_name) = stat.rsplit_once(')').expect("stat has (comm)");
    let start = after_name
        .split_whitespace()
        .nth(19)
        .and_then(|f| f.parse().ok())
        .expect("field 22");
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").expect("boot_id");
    (pid, start, boot.trim().to_string())
}

#[test]
fn b13_a_lock_left_by_a_killed_server_is_taken_over() {
    let dir = real_setup();
    let root = dir.path().join("d/maildirs");
    let users = dir.path().join("d/users");
    let args = [
        "--maildir-root",
        root.to_str().expect("utf-8"),
        "--users",
        users.to_str().expect("utf-8"),
    ];
    let mut one = Running::start(&args, &[]);
    let mut first = Client::connect(one.addr);
    first.login("alice", "wonderland");
    let held = lock_line(&root, "alice");
    let pid = one.child.id();
    assert!(held.starts_with(&format!("{pid} ")), "{held:?}");
    // SIGKILL: no destructor runs, the line stays behind naming a process that has ended.
    one.child.kill().expect("kill -9");
    one.child.wait().expect("reap");
    assert_eq!(
        lock_line(&root, "alice"),
        held,
        "a killed server cannot clean up"
    );

    let two = Running::start(&args, &[("RUST_LOG", "popstate=warn")]);
    let mut second = Client::connect(two.addr);
    second.login("alice", "wonderland");
    let now = lock_line(&root, "alice");
    assert!(now.starts_with(&format!("{} ", two.child.id())), "{now:?}");
    let log = two.wait_log("taking over");
    assert!(
        log.join("\n")
            .contains(&format!("process {pid}, has ended")),
        "{log:?}"
    );
    second.cmd("QUIT");
    assert!(second.is_closed());
    let released = lock_line(&root, "alice");
    assert!(
        !released.is_empty() && released.trim().is_empty(),
        "QUIT blanks the lock file: {released:?}"
    );
}

#[test]
fn b13_a_lock_naming_a_running_process_holds_and_a_reused_pid_does_not() {
    let dir = real_setup();
    let root = dir.path().join("d/maildirs");
    let users = dir.path().join("d/users");
    let server = Running::start(
        &[
            "--maildir-root",
            root.to_str().expect("utf-8"),
            "--users",
            users.to_str().expect("utf-8"),
        ],
        &[],
    );
    let lock = root.join("alice").join("popstate.lock");
    let (pid, start, boot) = this_process();
    // This test process holds alice's maildrop, as another popstate would.
    std::fs::write(&lock, format!("{pid} {start} {boot} 1\n")).expect("write");
    let mut c = Client::connect(server.addr);
    c.cmd("USER alice");
    assert_err(&c.cmd("PASS wonderland"), "[IN-USE]");
    assert_eq!(
        lock_line(&root, "alice"),
        format!("{pid} {start} {boot} 1\n"),
        "a refused login leaves the holder's line alone"
    );
    // The same pid with another start time is another process that reused the number.
    std::fs::write(&lock, format!("{pid} {} {boot} 1\n", start + 1)).expect("write");
    c.cmd("USER alice");
    assert!(c.cmd("PASS wonderland").starts_with("+OK"));
    c.cmd("QUIT");
    assert!(c.is_closed());
    // A line from an earlier boot names a process that cannot run any more.
    std::fs::write(&lock, format!("{pid} {start} not-this-boot 1\n")).expect("write");
    let mut d = Client::connect(server.addr);
    d.login("alice", "wonderland");
    d.cmd("QUIT");
    assert!(d.is_closed());
}

#[test]
fn a_lock_file_that_cannot_be_made_gets_sys_temp_with_the_reason() {
    let dir = real_setup();
    let root = dir.path().join("d/maildirs");
    let users = dir.path().join("d/users");
    let server = Running::start(
        &[
            "--maildir-root",
            root.to_str().expect("utf-8"),
            "--users",
            users.to_str().expect("utf-8"),
        ],
        &[],
    );
    // Root may write anywhere, so a folder in the lock file's place stands for "cannot open".
    let lock = root.join("alice").join("popstate.lock");
    let _ = std::fs::remove_file(&lock);
    std::fs::create_dir(&lock).expect("mkdir");
    let mut c = Client::connect(server.addr);
    c.cmd("USER alice");
    let reply = c.cmd("PASS wonderland");
    assert_err(&reply, "[SYS/TEMP]");
    assert!(reply.contains("lock file"), "{reply}");
    std::fs::remove_dir(&lock).expect("rmdir");
    c.cmd("USER alice");
    assert!(c.cmd("PASS wonderland").starts_with("+OK"));
}

#[test]
fn logs_show_sessions_and_never_the_password() {
    let server = Running::start(&[], &[("RUST_LOG", "popstate=trace")]);
    let mut c = Client::connect(server.addr);
    c.login("alice", "wonderland");
    c.cmd("RETR 1");
    c.multiline();
    c.cmd("DELE 1");
    c.cmd("QUIT");
    let lines = server.wait_log("ended");
    let all = lines.join("\n");
    assert!(!all.contains("wonderland"), "{all}");
    assert!(all.contains("C: PASS ****"), "{all}");
    assert!(all.contains("S: +OK 327 octets"), "{all}");
    assert!(
        all.contains("TRANSACTION as alice"),
        "debug: state changes: {all}"
    );
    let end = lines.last().expect("end line");
    assert!(end.contains("user alice, 1 retrieved, 1 deleted"), "{end}");
    assert!(end.contains("octets sent"), "{end}");
}

#[test]
fn trace_shows_the_dialogue_with_states_and_summarised_bodies() {
    let server = Running::start(&["--trace"], &[]);
    let mut c = Client::connect(server.addr);
    c.login("alice", "wonderland");
    c.cmd("RETR 4");
    c.multiline();
    c.cmd("QUIT");
    let mut seen = Vec::new();
    while let Ok(line) = server.more_stdout.recv_timeout(Duration::from_secs(10)) {
        let done = line.contains("session over");
        seen.push(line);
        if done {
            break;
        }
    }
    let all = seen.join("\n");
    for expected in [
        "[1 AUTHORIZATION] C: USER alice",
        "[1 AUTHORIZATION] C: PASS ****",
        "[1] ==> TRANSACTION as alice",
        "[1 TRANSACTION] C: RETR 4",
        "[1 TRANSACTION] S: +OK 27765 octets",
        "[1 TRANSACTION] S: From: popstate <teacher@example.org>",
        "[1 TRANSACTION] S: ... 400 more lines (not shown) ...",
        "[1 TRANSACTION] S: .",
        "[1] ==> UPDATE",
        "[1 UPDATE] S: +OK popstate signing off",
        "[1] ==> session over: QUIT",
    ] {
        assert!(all.contains(expected), "{expected:?} missing from:\n{all}");
    }
    assert!(!all.contains("wonderland"), "{all}");
    assert!(
        !all.contains("Line 100 of 400"),
        "bodies are summarised: {all}"
    );
}

#[test]
fn a_session_limit_beyond_the_open_file_limit_is_a_clear_error() {
    let script = format!("ulimit -n 200 && exec {BIN} --listen 127.0.0.1:0 --max-sessions 500");
    let out = Command::new("sh")
        .args(["-c", &script])
        .output()
        .expect("run sh");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("--max-sessions 500 needs about 564 open files, but the limit is 200"),
        "{err}"
    );
}

/// The `studentNN  PASSWORD` lines of a classroom banner.
fn accounts(banner: &str) -> Vec<(String, String)> {
    banner
        .lines()
        .filter(|l| l.starts_with("student"))
        .filter_map(|l| {
            let (name, password) = l.split_once("  ")?;
            Some((name.to_string(), password.trim().to_string()))
        })
        .collect()
}

#[test]
fn classroom_of_thirty_each_delete_and_quit_at_once_without_in_use() {
    let server = Running::start(&["--classroom", "30"], &[]);
    let students = accounts(&server.stdout);
    assert_eq!(students.len(), 30, "30 accounts in:\n{}", server.stdout);
    assert_eq!(students[0].0, "student01");
    assert_eq!(students[29].0, "student30");
    for (_, password) in &students {
        let words: Vec<&str> = password.split('-').collect();
        assert!(
            words.len() == 2
                && words
                    .iter()
                    .all(|w| w.chars().all(|c| c.is_ascii_lowercase())),
            "a password to read aloud: {password}"
        );
    }
    let root = std::env::temp_dir().join(format!("popstate-demo-{}/maildirs", server.addr.port()));
    let table = std::fs::read_to_string(root.with_file_name("accounts.txt")).expect("accounts.txt");
    assert_eq!(
        accounts(&table),
        students,
        "accounts.txt holds the same table"
    );

    // Everyone logs in before anyone quits, so thirty locks are held at once; student n
    // deletes message (n % 6) + 1.
    let addr = server.addr;
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(students.len()));
    let threads: Vec<_> = students
        .iter()
        .cloned()
        .enumerate()
        .map(|(n, (user, password))| {
            let barrier = std::sync::Arc::clone(&barrier);
            thread::spawn(move || {
                let mut client = common::Client::connect(addr);
                assert!(client.cmd(&format!("USER {user}")).starts_with("+OK"));
                let reply = client.cmd(&format!("PASS {password}"));
                assert!(reply.starts_with("+OK"), "{user}: {reply}");
                barrier.wait();
                let reply = client.cmd(&format!("DELE {}", n % 6 + 1));
                assert!(reply.starts_with("+OK"), "{user}: {reply}");
                let reply = client.cmd("QUIT");
                assert!(reply.starts_with("+OK"), "{user}: {reply}");
                assert!(
                    reply.contains("removed 1 message, 5 left"),
                    "{user}: {reply}"
                );
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a student's session");
    }
    // Each maildrop lost exactly its own message; alice's is untouched.
    let names = |user: &str| -> Vec<String> {
        let mut all = Vec::new();
        for sub in ["new", "cur"] {
            for e in std::fs::read_dir(root.join(user).join(sub))
                .expect("maildir")
                .flatten()
            {
                all.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        all
    };
    for (n, (user, _)) in students.iter().enumerate() {
        let left = names(user);
        assert_eq!(left.len(), 5, "{user}: {left:?}");
        let gone = format!(".demo{}.", n % 6 + 1);
        assert!(
            !left.iter().any(|f| f.contains(&gone)),
            "{user} lost {gone}: {left:?}"
        );
    }
    assert_eq!(names("alice").len(), 6);
}

#[test]
fn classroom_flag_errors_are_clear() {
    for (args, expected) in [
        (
            vec!["--classroom", "0"],
            "give a number of students from 1 to 200",
        ),
        (
            vec!["--classroom", "1000"],
            "give a number of students from 1 to 200",
        ),
        (vec!["--classroom", "many"], "classroom"),
        (
            vec![
                "--classroom",
                "5",
                "--maildir-root",
                "/tmp",
                "--users",
                "/dev/null",
            ],
            "cannot be used with --maildir-root",
        ),
        (vec!["--board", "--trace"], "use --board with --trace-user"),
    ] {
        let mut all = vec!["--listen", "127.0.0.1:0"];
        all.extend(args.iter().copied());
        let (code, _, err) = run(&all);
        assert_ne!(code, Some(0), "{args:?}");
        assert!(err.contains(expected), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
}

#[test]
fn classroom_banner_on_all_interfaces_names_real_addresses_and_warns() {
    let server = Running::start(&["--listen", "0.0.0.0:0", "--classroom", "2"], &[]);
    let port = server.addr.port();
    assert!(
        !server.stdout.contains("telnet 0.0.0.0"),
        "{}",
        server.stdout
    );
    let telnet = server
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("telnet "))
        .expect("a telnet line");
    let host: std::net::IpAddr = telnet
        .strip_suffix(&format!(" {port}"))
        .expect("the port")
        .parse()
        .expect("an address");
    assert!(!host.is_unspecified() && !host.is_loopback(), "{host}");
    // The address printed is one a client can really connect to.
    let client = common::Client::connect(std::net::SocketAddr::new(host, port));
    assert!(client.greeting.starts_with("+OK"), "{}", client.greeting);
    assert!(server.stdout.contains("clear text"), "{}", server.stdout);
    assert!(
        server.stdout.contains("USER student01"),
        "{}",
        server.stdout
    );
}

#[test]
#[cfg(not(feature = "hashed-passwords"))]
fn a_hashed_password_needs_the_hashed_passwords_feature() {
    let dir = real_setup();
    let users = dir.path().join("users");
    std::fs::write(&users, "alice:$6$salt$abc\n").expect("write");
    let root = dir.path().join("d/maildirs");
    let (code, _, err) = run(&[
        "--listen",
        "127.0.0.1:0",
        "--maildir-root",
        root.to_str().expect("utf-8"),
        "--users",
        users.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("line 1: the password is a $6$ hash, and this popstate was built without the hashed-passwords feature"),
        "{err}"
    );
    let (code, _, err) = run(&["--hash-password", "alice"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("needs popstate built with --features hashed-passwords"),
        "{err}"
    );
}

#[test]
fn board_without_a_terminal_writes_a_line_per_change() {
    let server = Running::start(&["--classroom", "1", "--board"], &[]);
    let mut client = common::Client::connect(server.addr);
    client.cmd("USER student01");
    let mut seen = Vec::new();
    while let Ok(line) = server.more_stdout.recv_timeout(Duration::from_secs(10)) {
        let done = line.contains("student01 AUTHORIZATION last=\"USER student01\"");
        seen.push(line);
        if done {
            break;
        }
    }
    assert!(
        seen.last()
            .is_some_and(|l| l.starts_with("board: session ")),
        "{seen:#?}"
    );
    assert!(
        !seen.iter().any(|l| l.contains("\x1b[")),
        "no escapes: {seen:#?}"
    );
}

#[test]
#[cfg(feature = "sasl")]
fn logs_never_show_sasl_credentials() {
    let server = Running::start(&[], &[("RUST_LOG", "popstate=trace")]);
    let mut c = Client::connect(server.addr);
    assert_eq!(c.cmd("AUTH PLAIN"), "+ ");
    assert!(c.cmd("AGFsaWNlAHdyb25n").starts_with("-ERR [AUTH]"));
    assert!(
        c.cmd("AUTH PLAIN AGFsaWNlAHdvbmRlcmxhbmQ=")
            .starts_with("+OK")
    );
    c.cmd("QUIT");
    let all = server.wait_log("ended").join("\n");
    assert!(!all.contains("AGFsaWNl"), "{all}");
    assert!(all.contains("C: (SASL response, 16 octets)"), "{all}");
    assert!(all.contains("C: AUTH PLAIN ****"), "{all}");
}
