//! The teacher's board (`--board`) as a teacher sees it: the real binary in a real terminal
//! (tmux, 80×24), read back with `tmux capture-pane`. Needs tmux on PATH (`.ci/run` installs
//! it); the test fails rather than skips without it.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::Client;

const BIN: &str = env!("CARGO_BIN_EXE_popstate");

/// A private tmux server (its own socket name), killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(name: &str, command: &str, width: u16, height: u16) -> Tmux {
        let socket = format!("popstate-{name}-{}", std::process::id());
        let status = Command::new("tmux")
            .args(["-L", &socket, "new-session", "-d", "-x"])
            .arg(width.to_string())
            .arg("-y")
            .arg(height.to_string())
            .arg(command)
            .status()
            .expect("tmux must be installed for this test (apt-get install tmux)");
        assert!(status.success(), "tmux new-session");
        Tmux { socket }
    }

    /// The screen as it is now, one string per line; wrapped lines joined (`-J`), so a line
    /// written past the width shows up as a longer line.
    fn capture(&self) -> Vec<String> {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "capture-pane", "-p", "-J"])
            .output()
            .expect("capture-pane");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// Waits for the greeting: the port is bound before the demo is written, so a connection
/// alone does not mean the accounts exist yet.
fn wait_for_server(addr: SocketAddr) {
    let start = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "server did not start"
        );
        thread::sleep(Duration::from_millis(100));
    }
    let greeting = Client::connect(addr).greeting;
    assert!(greeting.starts_with("+OK"), "{greeting}");
}

/// Waits until the screen satisfies `ready` (the board redraws twice a second).
fn screen_when(tmux: &Tmux, ready: impl Fn(&[String]) -> bool) -> Vec<String> {
    let start = Instant::now();
    loop {
        let screen = tmux.capture();
        if ready(&screen) {
            return screen;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the board never showed what was expected:\n{}",
            screen.join("\n")
        );
        thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn board_shows_thirty_sessions_in_mixed_states_within_80_by_24() {
    let port = free_port();
    let tmux = Tmux::start(
        "board30",
        &format!("{BIN} --listen 127.0.0.1:{port} --classroom 30 --board"),
        80,
        24,
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    wait_for_server(addr);
    let table = std::env::temp_dir().join(format!("popstate-demo-{port}/accounts.txt"));
    let accounts: Vec<(String, String)> = std::fs::read_to_string(table)
        .expect("accounts.txt")
        .lines()
        .filter_map(|l| {
            let (u, p) = l.split_once("  ")?;
            Some((u.to_string(), p.to_string()))
        })
        .collect();
    assert_eq!(accounts.len(), 30);

    // Ten wait in AUTHORIZATION after USER, ten are logged in, ten are logged in with two
    // messages marked.
    let mut clients = Vec::new();
    for (n, (user, password)) in accounts.iter().enumerate() {
        let mut client = Client::connect(addr);
        assert!(client.cmd(&format!("USER {user}")).starts_with("+OK"));
        if n % 3 != 0 {
            assert!(client.cmd(&format!("PASS {password}")).starts_with("+OK"));
        }
        if n % 3 == 2 {
            assert!(client.cmd("DELE 1").starts_with("+OK"));
            assert!(client.cmd("DELE 2").starts_with("+OK"));
        }
        clients.push(client);
    }

    let screen = screen_when(&tmux, |s| {
        s.iter()
            .any(|l| l.contains("AUTHORIZATION 10 --PASS--> TRANSACTION 20"))
    });
    let shown = screen.join("\n");
    assert!(screen[0].starts_with("popstate board"), "{shown}");
    assert!(
        screen[0].contains(&format!("telnet 127.0.0.1 {port}")),
        "{shown}"
    );
    assert!(screen[0].contains("30 sessions"), "{shown}");
    // The banner with the passwords is drawn over: the board says where they are.
    assert!(
        screen.iter().any(|l| l.starts_with("passwords: ")
            && l.contains(&format!("popstate-demo-{port}/accounts.txt"))),
        "{shown}"
    );
    assert!(screen.len() <= 24, "{shown}");
    for line in &screen {
        assert!(line.chars().count() <= 80, "past the width: {line:?}");
    }
    // Every student has exactly one row, with the right state and marks.
    for (n, (user, _)) in accounts.iter().enumerate() {
        let cells: Vec<&str> = screen
            .iter()
            .flat_map(|l| [l.get(..40).unwrap_or(l), l.get(40..).unwrap_or("")])
            .filter(|c| c.starts_with(user.as_str()))
            .collect();
        assert_eq!(cells.len(), 1, "{user} once:\n{shown}");
        let words: Vec<&str> = cells[0].split_whitespace().collect();
        let (state, marked) = match n % 3 {
            0 => ("AUTH", "0"),
            1 => ("TRANS", "0"),
            _ => ("TRANS", "2"),
        };
        assert_eq!(words[1], state, "{user}: {}", cells[0]);
        assert_eq!(words[words.len() - 2], marked, "{user}: {}", cells[0]);
    }
    println!("{shown}");
    drop(clients);
}

#[test]
fn trace_user_shows_one_students_dialogue_under_the_board() {
    let port = free_port();
    let tmux = Tmux::start(
        "traceuser",
        &format!("{BIN} --listen 127.0.0.1:{port} --classroom 3 --board --trace-user student02"),
        80,
        24,
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    wait_for_server(addr);
    let mut one = Client::connect(addr);
    let mut two = Client::connect(addr);
    one.cmd("USER student01");
    two.cmd("USER student02");
    two.cmd("PASS not-the-password");
    two.cmd("NOOP");
    let screen = screen_when(&tmux, |s| s.iter().any(|l| l.contains("C: NOOP")));
    let shown = screen.join("\n");
    assert!(shown.contains("-- dialogue (--trace-user) --"), "{shown}");
    assert!(
        shown.contains("C: PASS ****"),
        "the password is masked:\n{shown}"
    );
    assert!(!shown.contains("not-the-password"), "{shown}");
    assert!(
        !shown.contains("C: USER student01"),
        "only student02:\n{shown}"
    );
    for line in &screen {
        assert!(line.chars().count() <= 80, "past the width: {line:?}");
    }
}
