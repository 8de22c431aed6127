//! The server over real TCP on 127.0.0.1: every command in every state, byte for byte.
//! Test names start with the requirement ID from pop3-notes.md (docs/conformance.md maps them).

mod common;

use std::fs;
use std::io::Write;
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use common::{Backend, Client, assert_err, test_config};

/// alice's demo messages as stored, in message-number order.
fn alice_files(server: &common::TestServer) -> Vec<Vec<u8>> {
    let mut files: Vec<(String, Vec<u8>)> = server.snapshot("alice");
    files.sort_by(|a, b| a.0.rsplit('/').next().cmp(&b.0.rsplit('/').next()));
    files.into_iter().map(|(_, bytes)| bytes).collect()
}

/// What a client should get for a stored message: CRLF line ends, a final CRLF.
fn as_sent(stored: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
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

/// RFC 1939 §4: one positive line. Its `<...>` invites APOP, so only a build with the `apop`
/// feature has one (tests/apop.rs checks it is new on every greeting).
fn b01_greeting_is_one_positive_line_without_apop_timestamp(backend: Backend) {
    let server = backend.demo_server();
    let c = server.connect();
    assert!(c.greeting.starts_with("+OK "), "{}", c.greeting);
    let stamped = c.greeting.ends_with('>') && c.greeting.contains(" <");
    assert_eq!(
        stamped,
        cfg!(feature = "apop"),
        "an APOP timestamp only with the apop feature: {}",
        c.greeting
    );
    assert!(c.greeting.len() + 2 <= 512);
}

fn b02_keywords_are_case_insensitive_and_bare_lf_is_accepted(backend: Backend) {
    let server = backend.demo_server();
    let mut c = server.connect();
    c.send_raw(b"user alice\npAsS wonderland\nstat\r\n");
    assert!(c.line().starts_with("+OK"));
    assert!(c.line().starts_with("+OK"));
    assert_eq!(c.line(), "+OK 6 29816");
}

fn b08_unknown_and_malformed_commands_get_err_and_the_session_goes_on(backend: Backend) {
    let server = backend.demo_server();
    let mut c = server.connect();
    assert_err(&c.cmd("HELO"), "unknown command HELO");
    assert_err(&c.cmd("XYZZY"), "not a command");
    assert_err(&c.cmd(""), "empty command");
    assert_err(&c.cmd("ST"), "not a command");
    c.send_raw(b"NO\x00OP\r\n");
    assert_err(&c.line(), "control characters");
    c.send_raw(b"\xff\xfe\r\n");
    assert_err(&c.line(), "non-UTF-8");
    c.login("alice", "wonderland");
    assert_err(&c.cmd("FROB 1"), "unknown command FROB");
    assert_eq!(c.cmd("STAT"), "+OK 6 29816");
}

fn b09_wrong_state_commands_say_where_they_belong(backend: Backend) {
    let server = backend.demo_server();
    let mut c = server.connect();
    for cmd in [
        "STAT", "LIST", "RETR 1", "DELE 1", "NOOP", "RSET", "TOP 1 0", "UIDL",
    ] {
        let reply = c.cmd(cmd);
        assert_err(
            &reply,
            "is a TRANSACTION command; log in first with USER and PASS",
        );
    }
    c.login("alice", "wonderland");
    for cmd in ["USER alice", "PASS wonderland"] {
        assert_err(
            &c.cmd(cmd),
            "is an AUTHORIZATION command; you are logged in as alice",
        );
    }
    for (cmd, built) in [
        ("APOP alice 0123", cfg!(feature = "apop")),
        ("AUTH PLAIN", cfg!(feature = "sasl")),
    ] {
        // A command this build offers belongs to AUTHORIZATION; one it does not is not offered.
        let expected = if built {
            "is an AUTHORIZATION command; you are logged in as alice"
        } else {
            "is not offered by popstate"
        };
        assert_err(&c.cmd(cmd), expected);
    }
    // With the tls feature STLS exists, but only before login (RFC 2595 section 4).
    let stls = if cfg!(feature = "tls") {
        "STLS is only valid before login"
    } else {
        "is not offered by popstate"
    };
    assert_err(&c.cmd("STLS"), stls);
    assert_eq!(c.cmd("STAT"), "+OK 6 29816", "still in TRANSACTION");
}

fn b16_quit_in_authorization_closes_without_update(backend: Backend) {
    let server = backend.demo_server();
    let before = server.snapshot("alice");
    let mut c = server.connect();
    assert!(c.cmd("QUIT").starts_with("+OK"));
    assert!(c.is_closed());
    assert_eq!(server.snapshot("alice"), before);
}

fn b17_stat_counts_messages_and_octets_excluding_deleted(backend: Backend) {
    let server = backend.demo_server();
    let mut c = server.login("alice", "wonderland");
    assert_eq!(c.cmd("STAT"), "+OK 6 29816");
    assert!(c.cmd("DELE 4").starts_with("+OK"));
    assert_eq!(c.cmd("STAT"), format!("+OK 5 {}", 29816 - 27765));
    assert_err(&c.cmd("STAT 1"), "STAT takes fewer arguments");
}

fn b18_list_gives_scan_listings_and_single_lines(backend: Backend) {
    let server = backend.demo_server();
    let mut c = server.login("alice", "wonderland");
    assert_eq!(
        c.lines("LIST"),
        ["1 327", "2 443", "3 362", "4 27765", "5 683", "6 236"]
    );
    assert_eq!(c.cmd("LIST 4"), "+OK 4 27765");
    assert_err(&c.cmd("LIST 1 2"), "LIST takes fewer arguments");
}

fn b18_empty_maildrop_lists_nothing(backend: Backend) {
    let server = backend.server_with_users("carol:pw\n", test_config());
    let mut c = server.login("carol", "pw");
    assert_eq!(c.cmd("STAT"), "+OK 0 0");
    assert_eq!(c.cmd("LIST"), "+OK 0 messages (0 octets)");
    assert_eq!(c.multiline_raw(), b".\r\n");
    assert_eq!(c.cmd("UIDL"), "+OK unique-id listing follows");
    assert_eq!(c.multiline_raw(), b".\r\n");
    assert_err(
        &c.cmd("RETR 1"),
        "no such message: 1; the maildrop is empty",
    );
}

fn b19_b20_retr_sends_crlf_lines_and_list_counts_them_exactly(backend: Backend) {
    let server = backend.server_with_users("dan:pw\n", test_config());
    let stored: [&[u8]; 6] = [
        b"Subject: crlf\r\n\r\nbody\r\n",
        b"Subject: lf only\n\nbody\nmore\n",
        b"Subject: mixed\r\n\nbody\r\nmore\n",
        b"Subject: no final newline\n\nlast line",
        b"Subject: dots\n\n.\n..\n.x\nok.\n",
        b"",
    ];
    for (i, content) in stored.iter().enumerate() {
        server.deliver("dan", "new", &format!("17000000{i:02}.m{i}.test"), content);
    }
    let mut c = server.login("dan", "pw");
    let listing = c.lines("LIST");
    for (i, content) in stored.iter().enumerate() {
        let reply = c.cmd(&format!("RETR {}", i + 1));
        let raw = c.multiline_raw();
        let stuffing = raw[..raw.len() - 3]
            .split_inclusive(|&b| b == b'\n')
            .filter(|l| l.starts_with(b"."))
            .count();
        let octets = raw.len() - 3 - stuffing;
        assert_eq!(listing[i], format!("{} {octets}", i + 1), "{content:?}");
        assert_eq!(reply, format!("+OK {octets} octets"));
        let body = raw[..raw.len() - 3]
            .split_inclusive(|&b| b == b'\n')
            .flat_map(|l| l.strip_prefix(b".").unwrap_or(l).to_vec())
            .collect::<Vec<u8>>();
        assert_eq!(body, as_sent(content), "{content:?}");
    }
}

fn b07_b20_retr_byte_stuffs_the_dot_message_exactly(backend: Backend) {
    let server = backend.demo_server();
    let mut c = server.login("alice", "wonderland");
    assert_eq!(c.cmd("RETR 2"), "+OK 443 octets");
    let raw = c.multiline_raw();
    let text = String::from_utf8(raw).expect("text");
    assert!(
        text.contains("\r\n..\r\n... and this line started with two dots"),
        "{text}"
    );
    assert!(text.ends_with("follows this one.\r\n.\r\n"));
}

fn b20_retr_of_every_demo_message_matches_the_files(backend: Backend) {
    let server = backend.demo_server();
    let files = alice_files(&server);
    let mut c = server.login("alice", "wonderland");
    for (i, stored) in files.iter().enumerate() {
        assert!(c.cmd(&format!("RETR {}", i + 1)).starts_with("+OK"));
        assert_eq!(c.multiline(), as_sent(stored), "message {}", i + 1);
    }
}

fn b15_bad_message_numbers_get_err(backend: Backend) {
    let server = backend.demo_server();
    let mut c = server.login("alice", "wonderland");
    for cmd in ["RETR", "DELE", "LIST", "UIDL"] {
        assert_err(&c.cmd(&format!("{cmd} 0")), "message numbers start at 1");
        assert_err(
            &c.cmd(&format!("{cmd} 7")),
            "no such message: 7; there are 6 messages",
        );
        for bad in ["-1", "+1", "1x", "0x1", "1.0"] {
            assert_err(&c.cmd(&format!("{cmd} {bad}")), "is not a message number");
        }
        assert_err(
            &c.cmd(&format!("{cmd} 99999999999999999999")),
            "far too large",
        );
        assert_err(&c.cmd(&format!("{cmd} 1 2")), "takes fewer arguments");
    }
    assert_err(&c.cmd("RETR"), "RETR needs more arguments");
    assert_err(&c.cmd("DELE"), "DELE needs more arguments");
    assert_err(&c.cmd("TOP 1"), "TOP needs more arguments");
    assert_err(&c.cmd("TOP 1 -1"), "is not a line count");
    assert_err(&c.cmd("TOP 1 2 3"), "TOP takes fewer arguments");
    assert_err(&c.cmd("TOP 0 1"), "message numbers start at 1");
    assert_eq!(c.cmd("STAT"), "+OK 6 29816", "nothing was marked");
}

fn b21_dele_marks_and_every_later_reference_says_deleted(backend: Backend) {
    let server = backend.demo_server();
    let mut c = server.login("alice", "wonderland");
    assert!(
        c.cmd("DELE 2")
            .starts_with("+OK message 2 marked as deleted")
    );
    for cmd in ["RETR 2", "DELE 2", "LIST 2", "UIDL 2", "TOP 2 0"] {
        assert_err(
            &c.cmd(cmd),
            "no such message: 2 was deleted in this session",
        );
    }
    assert_eq!(
        c.lines("LIST"),
        ["1 327", "3 362", "4 27765", "5 683", "6 236"]
    );
    let uidl = c.lines("UIDL");
    assert_eq!(uidl.len(), 5);
    assert!(uidl.iter().all(|l| !l.starts_with("2 ")));
    assert_eq!(c.cmd("LIST 3"), "+OK 3 362", "numbers do not shift");
}

fn b22_rset_unmarks_and_noop_answers(backend: Backend) {
    let server = backend.demo_server();
    let mut c = server.login("alice", "wonderland");
    c.cmd("DELE 1");
    c.cmd("DELE 3");
    assert_eq!(c.cmd("RSET"), "+OK maildrop has 6 messages (29816 octets)");
    assert_eq!(c.cmd("STAT"), "+OK 6 29816");
    assert_eq!(c.cmd("NOOP"), "+OK");
    assert_err(&c.cmd("NOOP x"), "NOOP takes fewer arguments");
    assert!(
        c.cmd("QUIT")
            .starts_with("+OK popstate signing off: removed 0 messages, 6 left")
    );
    assert_eq!(server.snapshot("alice").len(), 6);
}

fn b23_quit_removes_exactly_the_marked_messages(backend: Backend) {
    let server = backend.demo_server();
    let before = server.snapshot("alice");
    let mut c = server.login("alice", "wonderland");
    c.cmd("DELE 1");
    c.cmd("DELE 4");
    assert_eq!(
        c.cmd("QUIT"),
        "+OK popstate signing off: removed 2 messages, 4 left"
    );
    assert!(c.is_closed());
    let after = server.snapshot("alice");
    let expected: Vec<_> = before
        .into_iter()
        .filter(|(name, _)| !name.contains("demo1") && !name.contains("demo4"))
        .collect();
    assert_eq!(after, expected, "the others are untouched, byte for byte");
    let mut c = server.login("alice", "wonderland");
    assert_eq!(c.lines("LIST"), ["1 443", "2 362", "3 683", "4 236"]);
}

fn b24_dropped_connection_removes_nothing(backend: Backend) {
    let server = backend.demo_server();
    let before = server.snapshot("alice");
    let mut c = server.login("alice", "wonderland");
    for n in 1..=6 {
        c.cmd(&format!("DELE {n}"));
    }
    drop(c);
    // The lock is released when the session notices the close; then the next login works.
    let mut c = login_when_free(&server, "alice", "wonderland");
    assert_eq!(c.cmd("STAT"), "+OK 6 29816");
    assert_eq!(server.snapshot("alice"), before);
}

/// Logs in, retrying while an ending session still holds the lock.
fn login_when_free(server: &common::TestServer, user: &str, pass: &str) -> Client {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = server.connect();
        c.cmd(&format!("USER {user}"));
        let reply = c.cmd(&format!("PASS {pass}"));
        if reply.starts_with("+OK") {
            return c;
        }
        assert!(reply.contains("[IN-USE]"), "{reply}");
        assert!(Instant::now() < deadline, "lock never released");
        thread::sleep(Duration::from_millis(20));
    }
}

fn b25_top_gives_header_blank_line_and_n_body_lines(backend: Backend) {
    let server = backend.demo_server();
    let mut c = server.login("alice", "wonderland");
    let header = "From: popstate <teacher@example.org>\nTo: alice@example.org\nSubject: A long message\nDate: Tue, 25 Nov 2025 09:00:04 +0000\nMessage-ID: <demo4@popstate.example>\n";
    assert!(c.cmd("TOP 4 0").starts_with("+OK"));
    assert_eq!(
        String::from_utf8(c.multiline()).expect("text"),
        format!("{header}\n").replace('\n', "\r\n")
    );
    let three = c.lines("TOP 4 3");
    assert_eq!(three.len(), 5 + 1 + 3);
    assert!(three[8].starts_with("Line 003 of 400"));
    let all = c.lines("TOP 4 1000");
    assert_eq!(
        all.len(),
        5 + 1 + 400,
        "a count past the end gives everything"
    );
    let stuffed = {
        c.cmd("TOP 2 1");
        String::from_utf8(c.multiline_raw()).expect("text")
    };
    assert!(stuffed.ends_with("two dots,\r\n.\r\n"));
    let dots = {
        c.cmd("TOP 2 3");
        String::from_utf8(c.multiline_raw()).expect("text")
    };
    assert!(
        dots.ends_with("the message:\r\n..\r\n.\r\n"),
        "TOP stuffs too: {dots}"
    );
}

fn b26_uidl_is_stable_unique_and_well_formed(backend: Backend) {
    let server = backend.demo_server();
    let mut c = server.login("alice", "wonderland");
    let first = c.lines("UIDL");
    assert_eq!(c.cmd("UIDL 2"), format!("+OK 2 {}", backend.alice_uid(2)));
    c.cmd("QUIT");
    let ids: Vec<&str> = first
        .iter()
        .map(|l| l.split(' ').nth(1).expect("id"))
        .collect();
    for id in &ids {
        assert!((1..=70).contains(&id.len()));
        assert!(id.bytes().all(|b| (0x21..=0x7e).contains(&b)));
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len());
    // A mail reader marks message 3 as seen: its id stays. In a Maildir it moves the file
    // from new/ to cur/ with flags; in an mbox it adds a Status: header (as mutt does).
    match backend {
        Backend::Maildir => {
            let dir = server.maildir("alice");
            fs::rename(
                dir.join("new/1764000003.demo3.popstate"),
                dir.join("cur/1764000003.demo3.popstate:2,S"),
            )
            .expect("rename");
        }
        Backend::Mbox => {
            let path = server.mbox("alice");
            let text = fs::read_to_string(&path).expect("read");
            let id = "Message-ID: <demo3@popstate.example>\n";
            fs::write(&path, text.replace(id, &format!("{id}Status: RO\n"))).expect("write");
        }
    }
    let mut c = login_when_free(&server, "alice", "wonderland");
    assert_eq!(c.lines("UIDL"), first);
}

fn b26_message_renamed_during_session_is_still_served_and_removed(backend: Backend) {
    let server = backend.demo_server();
    let mut c = server.login("alice", "wonderland");
    // Another program touches the maildrop as its format allows: a Maildir reader renames the
    // file; with an mbox, mail is appended (the file changes, message 2 does not).
    match backend {
        Backend::Maildir => {
            let dir = server.maildir("alice");
            fs::rename(
                dir.join("new/1764000002.demo2.popstate"),
                dir.join("cur/1764000002.demo2.popstate:2,RS"),
            )
            .expect("rename");
        }
        Backend::Mbox => {
            server.deliver("alice", "new", "late", b"Subject: late\n\nx\n");
        }
    }
    assert_eq!(c.cmd("RETR 2"), "+OK 443 octets");
    c.multiline();
    c.cmd("DELE 2");
    c.cmd("QUIT");
    let after = server.snapshot("alice");
    assert!(after.iter().all(|(name, _)| !name.contains("demo2")));
    let appended = usize::from(backend == Backend::Mbox);
    assert_eq!(after.len(), 5 + appended);
}

fn b28_r03_user_never_reveals_whether_a_user_exists(backend: Backend) {
    let server = backend.demo_server();
    let mut c = server.connect();
    let known = c.cmd("USER alice");
    let wrong_pass = c.cmd("PASS nope");
    let unknown = c.cmd("USER mallory");
    let unknown_pass = c.cmd("PASS nope");
    assert_eq!(known.replace("alice", "X"), unknown.replace("mallory", "X"));
    assert!(!known.contains("[AUTH]"), "RFC 3206 §5: no [AUTH] on USER");
    assert_eq!(wrong_pass, unknown_pass);
    assert_err(&wrong_pass, "[AUTH]");
}

fn b29_pass_takes_the_rest_of_the_line_and_must_follow_user(backend: Backend) {
    let server = backend.server_with_users("erin:two words  and more\n", test_config());
    let mut c = server.connect();
    assert_err(
        &c.cmd("PASS two words  and more"),
        "PASS must come right after USER",
    );
    c.cmd("USER erin");
    assert_err(&c.cmd("PASS two words"), "[AUTH]");
    assert_err(
        &c.cmd("PASS two words  and more"),
        "PASS must come right after USER",
    );
    c.cmd("USER erin");
    c.cmd("NOOP");
    assert_err(
        &c.cmd("PASS two words  and more"),
        "PASS must come right after USER",
    );
    c.cmd("USER erin");
    assert!(c.cmd("PASS two words  and more").starts_with("+OK"));
}

fn unsafe_user_names_never_reach_the_file_system(backend: Backend) {
    let server = backend.demo_server();
    let mut c = server.connect();
    for name in ["..", ".", "a/b", "../alice", "a\\b", "a:b"] {
        assert_err(&c.cmd(&format!("USER {name}")), "");
    }
    assert_err(&c.cmd("USER"), "USER needs more arguments");
    assert_err(&c.cmd("USER a b"), "USER takes fewer arguments");
    let root = server.root();
    let mut entries: Vec<String> = fs::read_dir(&root)
        .expect("root")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    assert_eq!(entries, ["alice", "bob"]);
}

fn b13_x13_second_login_gets_in_use_and_stays_in_authorization(backend: Backend) {
    let server = backend.demo_server();
    let mut first = server.login("alice", "wonderland");
    let mut second = server.connect();
    second.cmd("USER alice");
    assert_err(&second.cmd("PASS wonderland"), "[IN-USE]");
    // Still in AUTHORIZATION: a TRANSACTION command is refused as such, another user works.
    assert_err(&second.cmd("STAT"), "log in first");
    second.login("bob", "builder");
    assert_eq!(second.cmd("STAT"), "+OK 2 502");
    // A wrong password on a locked maildrop says [AUTH], not [IN-USE]: no hint without the secret.
    let mut third = server.connect();
    third.cmd("USER alice");
    assert_err(&third.cmd("PASS guess"), "[AUTH]");
    // QUIT releases the lock at once.
    first.cmd("QUIT");
    assert!(first.is_closed());
    third.login("alice", "wonderland");
}

fn b14_unreadable_maildrop_gets_sys_perm_and_no_lock_is_kept(backend: Backend) {
    let server = backend.demo_server();
    // A Maildir's new/ that is a file; an mbox that is a folder.
    let broken = match backend {
        Backend::Maildir => server.maildir("bob").join("new"),
        Backend::Mbox => server.mbox("bob"),
    };
    let fixed = broken.clone();
    match backend {
        Backend::Maildir => {
            fs::remove_dir_all(&broken).expect("rm");
            fs::write(&broken, b"not a folder").expect("write");
        }
        Backend::Mbox => {
            fs::remove_file(&broken).expect("rm");
            fs::create_dir(&broken).expect("mkdir");
        }
    }
    let mut c = server.connect();
    c.cmd("USER bob");
    assert_err(&c.cmd("PASS builder"), "[SYS/PERM]");
    match backend {
        Backend::Maildir => {
            fs::remove_file(&fixed).expect("rm");
            fs::create_dir(&fixed).expect("mkdir");
        }
        Backend::Mbox => fs::remove_dir(&fixed).expect("rmdir"),
    }
    c.cmd("USER bob");
    assert!(
        c.cmd("PASS builder").starts_with("+OK"),
        "the lock was released"
    );
}

fn a_user_without_a_maildir_gets_an_empty_one(backend: Backend) {
    let server = backend.server_with_users("fay:pw\n", test_config());
    let mut c = server.login("fay", "pw");
    assert_eq!(c.cmd("STAT"), "+OK 0 0");
    match backend {
        Backend::Maildir => assert!(server.maildir("fay").join("new").is_dir()),
        // A missing mbox is an empty one, and is left for a delivery agent to create.
        Backend::Mbox => assert!(!server.mbox("fay").exists()),
    }
}

fn b10_b11_idle_timer_closes_silently_and_removes_nothing(backend: Backend) {
    let mut config = test_config();
    config.idle_timeout = Duration::from_secs(2);
    let server = backend.demo_server_with(config);
    let before = server.snapshot("alice");
    let mut c = server.login("alice", "wonderland");
    c.cmd("DELE 1");
    // Each command starts the idle time again: 4 s of NOOPs every 0.5 s keep the session alive.
    let mut last_sent = Instant::now();
    for _ in 0..8 {
        thread::sleep(Duration::from_millis(500));
        last_sent = Instant::now();
        assert_eq!(c.cmd("NOOP"), "+OK");
    }
    assert!(c.is_closed(), "closed without a reply");
    // The server starts waiting once it has answered the last NOOP, so after it was sent: the
    // whole idle time has passed since then, however slow the machine.
    let waited = last_sent.elapsed();
    assert!(waited >= Duration::from_secs(2), "{waited:?}");
    assert_eq!(server.snapshot("alice"), before, "no UPDATE");
    login_when_free(&server, "alice", "wonderland");
}

fn x01_command_lines_up_to_255_octets_are_accepted_longer_ones_refused_in_step(backend: Backend) {
    let server = backend.demo_server();
    let mut c = server.login("alice", "wonderland");
    // NOOP, then spaces: 253 octets + CRLF = 255.
    let max = format!("NOOP{}", " ".repeat(249));
    assert_eq!(c.cmd(&max), "+OK");
    assert_err(&c.cmd(&format!("{max} ")), "command line too long");
    assert_eq!(c.cmd("STAT"), "+OK 6 29816", "in step after a long line");
    c.send_raw(&[b"X".repeat(100_000), b"\r\nSTAT\r\n".to_vec()].concat());
    assert_err(&c.line(), "too long");
    assert_eq!(c.line(), "+OK 6 29816");
    c.send_raw(&[b"Y".repeat(2_000_000), b"\nNOOP\n".to_vec()].concat());
    assert_err(&c.line(), "too long");
    assert_eq!(c.line(), "+OK");
}

fn x02_x03_capa_is_the_same_in_both_states(backend: Backend) {
    let server = backend.demo_server();
    let mut c = server.connect();
    let before = c.lines("CAPA");
    let mut expected = vec![
        "TOP".to_string(),
        "USER".into(),
        "UIDL".into(),
        "RESP-CODES".into(),
        "AUTH-RESP-CODE".into(),
        "PIPELINING".into(),
        "EXPIRE NEVER".into(),
    ];
    if cfg!(feature = "sasl") {
        expected.push("SASL PLAIN".into());
    }
    expected.push(format!(
        "IMPLEMENTATION popstate-{}",
        env!("CARGO_PKG_VERSION")
    ));
    assert_eq!(before, expected);
    c.login("alice", "wonderland");
    assert_eq!(c.lines("CAPA"), before);
    assert_err(&c.cmd("CAPA x"), "CAPA takes no arguments");
}

fn x10_a_thousand_pipelined_commands_get_a_thousand_replies_in_order(backend: Backend) {
    let server = backend.demo_server();
    let mut c = server.connect();
    let mut batch = String::from("USER alice\r\nPASS wonderland\r\n");
    for i in 0..1000 {
        batch.push_str(match i % 4 {
            0 => "STAT\r\n",
            1 => "NOOP\r\n",
            2 => "LIST 3\r\n",
            _ => "UIDL 1\r\n",
        });
    }
    c.send_raw(batch.as_bytes());
    assert!(c.line().starts_with("+OK"));
    assert!(c.line().starts_with("+OK"));
    for i in 0..1000 {
        let expected = match i % 4 {
            0 => "+OK 6 29816",
            1 => "+OK",
            2 => "+OK 3 362",
            _ => &format!("+OK 1 {}", backend.alice_uid(1)),
        };
        assert_eq!(c.line(), expected, "reply {i}");
    }
}

fn x10_a_client_that_writes_everything_before_reading_does_not_deadlock(backend: Backend) {
    let server = backend.demo_server();
    let mut c = server.login("alice", "wonderland");
    // 300 RETRs of the 27 KB message: about 8 MB of replies, far more than socket buffers hold.
    let batch = "RETR 4\r\n".repeat(300);
    let mut writer = c.writer.try_clone().expect("clone");
    let sender = thread::spawn(move || writer.write_all(batch.as_bytes()));
    for _ in 0..300 {
        assert_eq!(c.line(), "+OK 27765 octets");
        assert_eq!(c.multiline().len(), 27765);
    }
    sender.join().expect("join").expect("write");
}

fn mail_delivered_during_a_session_is_not_listed_and_not_removed(backend: Backend) {
    let server = backend.demo_server();
    let mut c = server.login("bob", "builder");
    let late = server.deliver(
        "bob",
        "new",
        "1764000200.late.popstate",
        b"Subject: late\n\nhi\n",
    );
    assert_eq!(c.cmd("STAT"), "+OK 2 502");
    assert_err(&c.cmd("RETR 3"), "no such message: 3");
    c.cmd("DELE 1");
    c.cmd("DELE 2");
    assert!(c.cmd("QUIT").starts_with("+OK"));
    assert!(late.exists());
    let mut c = server.login("bob", "builder");
    assert_eq!(c.cmd("STAT"), "+OK 1 21");
}

fn r01_message_removed_or_changed_by_another_program_gets_sys_temp(backend: Backend) {
    let server = backend.demo_server();
    let mut c = server.login("alice", "wonderland");
    match backend {
        Backend::Maildir => {
            let dir = server.maildir("alice");
            fs::remove_file(dir.join("new/1764000003.demo3.popstate")).expect("rm");
            assert_err(&c.cmd("RETR 3"), "[SYS/TEMP] message 3 cannot be sent");
            assert_err(&c.cmd("TOP 3 0"), "[SYS/TEMP]");
            fs::write(dir.join("new/1764000005.demo5.popstate"), b"short now\n").expect("write");
            assert_err(
                &c.cmd("RETR 5"),
                "another program changed it (683 octets when listed, 11 now)",
            );
        }
        Backend::Mbox => {
            // A program that ignores the locks rewrites one line end of message 5 in place.
            let path = server.mbox("alice");
            let bytes = fs::read(&path).expect("read");
            let at = find(&bytes, b"format.\r\n").expect("message 5") + 7;
            let mut file = fs::File::options().write(true).open(&path).expect("open");
            std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(at as u64)).expect("seek");
            file.write_all(b"x").expect("write");
            drop(file);
            assert_err(
                &c.cmd("RETR 5"),
                "[SYS/TEMP] message 5 cannot be sent: another program changed the mbox (683 octets when listed, 684 now)",
            );
            assert_err(&c.cmd("TOP 5 0"), "[SYS/TEMP]");
            // The listed part changed, so UPDATE must refuse to rewrite the file.
            c.cmd("DELE 1");
            let before = fs::read(&path).expect("read");
            assert_err(&c.cmd("QUIT"), "[SYS/TEMP] removed 0 of 1 marked messages");
            assert_eq!(fs::read(&path).expect("read"), before, "left as it was");
            let mut c = server.login("alice", "wonderland");
            assert_eq!(c.cmd("RETR 6"), "+OK 236 octets");
            c.multiline();
            return;
        }
    }
    assert_eq!(c.cmd("RETR 6"), "+OK 236 octets", "the others are fine");
    c.multiline();
    assert_eq!(c.cmd("NOOP"), "+OK");
}

fn session_limit_refuses_with_sys_temp_and_frees_slots(backend: Backend) {
    let mut config = test_config();
    config.max_sessions = 2;
    let server = backend.demo_server_with(config);
    let a = server.connect();
    let _b = server.connect();
    let mut over = TcpStream::connect(server.addr).expect("connect");
    let mut reply = String::new();
    std::io::Read::read_to_string(&mut over, &mut reply).expect("read until close");
    assert!(
        reply.starts_with("-ERR [SYS/TEMP] too many sessions (limit 2)"),
        "{reply}"
    );
    let mut a = a;
    a.cmd("QUIT");
    assert!(a.is_closed());
    // The slot comes back when the thread ends.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let c = Client::connect(server.addr);
        if c.greeting.starts_with("+OK") {
            break;
        }
        assert!(Instant::now() < deadline, "slot never freed");
        thread::sleep(Duration::from_millis(20));
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Rewrites a message file in place: same length, same modification time, other line ends.
fn rewrite_in_place(path: &std::path::Path, content: &[u8]) {
    let mtime = fs::metadata(path).expect("meta").modified().expect("mtime");
    fs::write(path, content).expect("rewrite");
    fs::File::options()
        .write(true)
        .open(path)
        .expect("open")
        .set_modified(mtime)
        .expect("set mtime");
}

fn b19_a_message_rewritten_in_place_is_counted_again_at_the_next_login(backend: Backend) {
    let server = backend.server_with_users("gus:pw\n", test_config());
    let path = server.deliver("gus", "cur", "1700000000.m1.test:2,S", b"abc\n");
    let mut c = server.login("gus", "pw");
    assert_eq!(c.cmd("LIST 1"), "+OK 1 5");
    c.cmd("QUIT");
    assert!(c.is_closed());
    // The folders changed just now, so that listing was not kept: only the file's ctime tells
    // the size cache that the content is new. (An mbox is read at every login anyway.)
    match backend {
        Backend::Maildir => rewrite_in_place(&path, b"a\nb\n"),
        Backend::Mbox => rewrite_in_place(&path, b"From x\na\nb\n\n"),
    }
    let mut c = server.login("gus", "pw");
    assert_eq!(c.cmd("LIST 1"), "+OK 1 6");
    assert_eq!(c.cmd("RETR 1"), "+OK 6 octets");
    assert_eq!(c.multiline(), b"a\r\nb\r\n");
}

/// Maildir only: mbox keeps no listing between logins (it reads the one file at every login).
#[test]
fn b19_b20_a_kept_listing_never_makes_retr_send_what_list_did_not_promise() {
    let server = Backend::Maildir.server_with_users("hal:pw\n", test_config());
    let path = server.deliver("hal", "cur", "1700000000.m1.test:2,S", b"abc\n");
    server.deliver("hal", "new", "1700000001.m2.test", b"x\n");
    // Let the folders settle (maildir.rs, SETTLED) so that the next listing is kept.
    thread::sleep(Duration::from_millis(2500));
    let mut c = server.login("hal", "pw");
    assert_eq!(c.lines("LIST"), ["1 5", "2 3"]);
    c.cmd("QUIT");
    assert!(c.is_closed());
    rewrite_in_place(&path, b"a\nb\n");
    // The folders did not change, so the kept listing is used and LIST shows the old size; RETR
    // notices the file is not what was counted and refuses rather than send 6 octets.
    let mut c = server.login("hal", "pw");
    assert_eq!(c.cmd("LIST 1"), "+OK 1 5");
    assert_err(
        &c.cmd("RETR 1"),
        "[SYS/TEMP] message 1 cannot be sent: another program changed it (5 octets when listed, 6 now)",
    );
    assert_eq!(c.cmd("RETR 2"), "+OK 3 octets", "the others are served");
    c.multiline();
    c.cmd("QUIT");
    assert!(c.is_closed());
    // That refusal dropped the kept listing: the next login counts again.
    let mut c = server.login("hal", "pw");
    assert_eq!(c.cmd("LIST 1"), "+OK 1 6");
    assert_eq!(c.cmd("RETR 1"), "+OK 6 octets");
    assert_eq!(c.multiline(), b"a\r\nb\r\n");
    c.cmd("QUIT");
    assert!(c.is_closed());
    // A delivery changes the folder, so a kept listing is never reused past it.
    server.deliver("hal", "new", "1700000002.m3.test", b"y\n");
    let mut c = server.login("hal", "pw");
    assert_eq!(c.cmd("STAT"), "+OK 3 12");
}

fn x10_a_reply_is_not_held_back_by_half_of_the_next_command(backend: Backend) {
    let server = backend.demo_server();
    let mut c = server.login("alice", "wonderland");
    c.send_raw(b"STAT\r\nNO");
    let started = Instant::now();
    assert_eq!(c.line(), "+OK 6 29816");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "reply waited for the next line"
    );
    c.send_raw(b"OP\r\n");
    assert_eq!(c.line(), "+OK");
}

fn b23_quit_reply_arrives_even_when_more_commands_follow_it(backend: Backend) {
    let server = backend.demo_server();
    let mut c = server.login("bob", "builder");
    c.send_raw(b"DELE 1\r\nQUIT\r\nNOOP\r\nSTAT\r\n");
    assert!(c.line().starts_with("+OK message 1"));
    assert_eq!(
        c.line(),
        "+OK popstate signing off: removed 1 message, 1 left"
    );
    assert!(c.is_closed());
}

fn replies_count_one_message_in_the_singular(backend: Backend) {
    let server = backend.demo_server();
    let mut c = server.login("bob", "builder");
    c.cmd("DELE 1");
    assert_eq!(
        c.cmd("QUIT"),
        "+OK popstate signing off: removed 1 message, 1 left"
    );
    let mut c = server.connect();
    c.cmd("USER bob");
    assert_eq!(
        c.cmd("PASS builder"),
        "+OK bob's maildrop has 1 message (250 octets)"
    );
    assert_eq!(c.cmd("LIST"), "+OK 1 message (250 octets)");
    c.multiline();
    assert_eq!(c.cmd("RSET"), "+OK maildrop has 1 message (250 octets)");
}

fn b29_a_line_that_is_not_a_command_also_forgets_a_pending_user(backend: Backend) {
    let server = backend.demo_server();
    let mut c = server.connect();
    c.cmd("USER alice");
    c.send_raw(b"NO\0OP\r\n");
    assert_err(&c.line(), "control characters");
    assert_err(&c.cmd("PASS wonderland"), "PASS must come right after USER");
    c.cmd("USER alice");
    c.send_raw(&[b"X".repeat(300), b"\r\n".to_vec()].concat());
    assert_err(&c.line(), "too long");
    assert_err(&c.cmd("PASS wonderland"), "PASS must come right after USER");
}

fn replies_quote_client_text_as_ascii_only(backend: Backend) {
    let server = backend.demo_server();
    let mut c = server.connect();
    let reply = c.cmd("\u{e9}t\u{e9}");
    assert_err(&reply, "\\u{e9}t\\u{e9}");
    assert!(reply.is_ascii(), "{reply}");
    assert_err(&c.cmd("USER caf\u{e9}"), "printable ASCII");
}

fn b04_b05_x07_r02_every_status_line_is_ok_or_err_short_and_codes_are_known(backend: Backend) {
    let server = backend.demo_server();
    let mut first = server.login("alice", "wonderland");
    let mut c = server.connect();
    let long_arg = "9".repeat(240);
    let mut replies = vec![c.greeting.clone()];
    for cmd in [
        "USER bob",
        "PASS wrong",
        "USER alice",
        "PASS wonderland",
        &format!("USER {long_arg}"),
        "USER bob",
        "PASS builder",
        &format!("RETR {long_arg}"),
        &format!("TOP 1 {long_arg}"),
        "LIST 9",
        "DELE 1",
        "DELE 1",
        "USER x",
        "QUIT",
    ] {
        replies.push(c.cmd(cmd));
    }
    first.cmd("QUIT");
    for reply in &replies {
        assert!(
            reply.starts_with("+OK") || reply.starts_with("-ERR"),
            "B04: {reply}"
        );
        assert!(reply.len() + 2 <= 512, "B05: {} octets", reply.len() + 2);
        if let Some(code) = reply.strip_prefix("-ERR [") {
            let code = code.split(']').next().expect("closing bracket");
            assert!(
                ["AUTH", "IN-USE", "SYS/TEMP", "SYS/PERM"].contains(&code),
                "X07: unknown code {code}"
            );
        }
    }
    assert!(replies[2].starts_with("-ERR [AUTH]"), "R02: {}", replies[2]);
    assert!(
        replies[4].starts_with("-ERR [IN-USE]"),
        "X13: {}",
        replies[4]
    );
}

fn b09_commands_popstate_does_not_offer_say_so_before_login_too(backend: Backend) {
    let server = backend.demo_server();
    let mut c = server.connect();
    if !cfg!(feature = "apop") {
        assert_err(
            &c.cmd("APOP alice c4c9334bac560ecc979e58001b3e22fb"),
            "APOP (RFC 1939 section 7) is not offered by popstate: log in with USER and PASS",
        );
    }
    if !cfg!(feature = "sasl") {
        assert_err(&c.cmd("AUTH"), "SASL AUTH (RFC 5034) is not offered");
    }
    // With the tls feature STLS exists, but this server has no certificate.
    let stls = if cfg!(feature = "tls") {
        "STLS is not available: this server has no certificate"
    } else {
        "STLS (TLS) (RFC 2595) is not offered"
    };
    assert_err(&c.cmd("STLS"), stls);
    c.login("alice", "wonderland");
}

#[test]
fn b05_a_reply_line_is_cut_to_512_octets_whatever_its_text() {
    let reply = popstate::protocol::Reply::Err("x".repeat(2000)).status_line();
    assert_eq!(reply.len(), 510, "510 octets, then CRLF");
    assert!(reply.starts_with("-ERR xxx") && reply.ends_with("..."));
}

fn b23_update_never_removes_another_file_that_shares_the_unique_name(backend: Backend) {
    let server = backend.server_with_users("ivy:pw\n", test_config());
    let first = server.deliver("ivy", "new", "1700000000.m1.test", b"Subject: one\n\nx\n");
    let mut c = server.login("ivy", "pw");
    assert_eq!(c.cmd("STAT"), "+OK 1 19");
    if backend == Backend::Mbox {
        // The same message arrives again during the session: same From_ line, same id. UPDATE
        // removes the listed one by its place, never the copy.
        server.deliver("ivy", "new", "1700000000.m1.test", b"Subject: one\n\nx\n");
        assert!(c.cmd("DELE 1").starts_with("+OK"));
        assert!(c.cmd("QUIT").starts_with("+OK"));
        let after = server.snapshot("ivy");
        assert_eq!(after.len(), 1, "the copy delivered later is kept");
        let mut c = server.login("ivy", "pw");
        assert_eq!(c.cmd("STAT"), "+OK 1 19");
        return;
    }
    // Another program removes the message and, later, a different file appears under the same
    // unique name (a new inode): it is not the message this session marked.
    fs::remove_file(&first).expect("rm");
    let other = server.deliver(
        "ivy",
        "cur",
        "1700000000.m1.test:2,S",
        b"Subject: two\n\ny\n",
    );
    assert!(c.cmd("DELE 1").starts_with("+OK"));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    assert!(
        other.exists(),
        "UPDATE removed a file that was never listed"
    );
}

on_every_backend!(
    b01_greeting_is_one_positive_line_without_apop_timestamp,
    b02_keywords_are_case_insensitive_and_bare_lf_is_accepted,
    b08_unknown_and_malformed_commands_get_err_and_the_session_goes_on,
    b09_wrong_state_commands_say_where_they_belong,
    b16_quit_in_authorization_closes_without_update,
    b17_stat_counts_messages_and_octets_excluding_deleted,
    b18_list_gives_scan_listings_and_single_lines,
    b18_empty_maildrop_lists_nothing,
    b19_b20_retr_sends_crlf_lines_and_list_counts_them_exactly,
    b07_b20_retr_byte_stuffs_the_dot_message_exactly,
    b20_retr_of_every_demo_message_matches_the_files,
    b15_bad_message_numbers_get_err,
    b21_dele_marks_and_every_later_reference_says_deleted,
    b22_rset_unmarks_and_noop_answers,
    b23_quit_removes_exactly_the_marked_messages,
    b24_dropped_connection_removes_nothing,
    b25_top_gives_header_blank_line_and_n_body_lines,
    b26_uidl_is_stable_unique_and_well_formed,
    b26_message_renamed_during_session_is_still_served_and_removed,
    b28_r03_user_never_reveals_whether_a_user_exists,
    b29_pass_takes_the_rest_of_the_line_and_must_follow_user,
    unsafe_user_names_never_reach_the_file_system,
    b13_x13_second_login_gets_in_use_and_stays_in_authorization,
    b14_unreadable_maildrop_gets_sys_perm_and_no_lock_is_kept,
    a_user_without_a_maildir_gets_an_empty_one,
    b10_b11_idle_timer_closes_silently_and_removes_nothing,
    x01_command_lines_up_to_255_octets_are_accepted_longer_ones_refused_in_step,
    x02_x03_capa_is_the_same_in_both_states,
    x10_a_thousand_pipelined_commands_get_a_thousand_replies_in_order,
    x10_a_client_that_writes_everything_before_reading_does_not_deadlock,
    mail_delivered_during_a_session_is_not_listed_and_not_removed,
    r01_message_removed_or_changed_by_another_program_gets_sys_temp,
    session_limit_refuses_with_sys_temp_and_frees_slots,
    b19_a_message_rewritten_in_place_is_counted_again_at_the_next_login,
    x10_a_reply_is_not_held_back_by_half_of_the_next_command,
    b23_quit_reply_arrives_even_when_more_commands_follow_it,
    replies_count_one_message_in_the_singular,
    b29_a_line_that_is_not_a_command_also_forgets_a_pending_user,
    replies_quote_client_text_as_ascii_only,
    b04_b05_x07_r02_every_status_line_is_ok_or_err_short_and_codes_are_known,
    b09_commands_popstate_does_not_offer_say_so_before_login_too,
    b23_update_never_removes_another_file_that_shares_the_unique_name,
);
