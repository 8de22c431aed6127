//! Sizes written into Maildir names (`,S=` and `,W=`, as Dovecot's delivery writes them): a
//! login trusts them instead of reading every file, and RETR checks each one before it sends.

mod common;

use common::{assert_err, server_with_users, test_config};

const USERS: &str = "dora:explorer\n";
const BODY: &[u8] = b"Subject: sized\n\nline one\nline two\n";

/// BODY has 4 LFs and no CR: 34 octets on disk, 38 on the wire.
const DISK: usize = 34;
const WIRE: u64 = 38;

#[test]
fn b19_a_true_size_in_the_name_is_listed_and_sent() {
    let server = server_with_users(USERS, test_config());
    assert_eq!(BODY.len(), DISK);
    server.deliver(
        "dora",
        "cur",
        &format!("1700000000.M1P1.host,S={DISK},W={WIRE}:2,S"),
        BODY,
    );
    let mut c = server.login("dora", "explorer");
    assert_eq!(c.cmd("LIST 1"), format!("+OK 1 {WIRE}"));
    assert_eq!(c.cmd("RETR 1"), format!("+OK {WIRE} octets"));
    let body = c.multiline();
    assert_eq!(body.len() as u64, WIRE);
    assert_eq!(
        c.cmd("RETR 1"),
        format!("+OK {WIRE} octets"),
        "checked once, sent again"
    );
    c.multiline();
}

#[test]
fn b19_a_wrong_size_in_the_name_is_refused_then_corrected() {
    let server = server_with_users(USERS, test_config());
    // A name that promises 50 octets for a 38-octet message (a delivery agent that counted
    // otherwise, or a file edited after delivery with its name kept).
    server.deliver(
        "dora",
        "new",
        &format!("1700000000.M2P1.host,S={DISK},W=50"),
        BODY,
    );
    let mut c = server.login("dora", "explorer");
    assert_eq!(c.cmd("LIST 1"), "+OK 1 50", "the name is trusted at login");
    let reply = c.cmd("RETR 1");
    assert_err(&reply, "[SYS/TEMP]");
    assert!(reply.contains("50 octets when listed, 38 now"), "{reply}");
    assert_eq!(c.cmd("NOOP"), "+OK", "the session goes on in step");
    c.cmd("QUIT");
    // The count RETR made is kept: the next login lists the true size and sends it.
    let mut c = server.login("dora", "explorer");
    assert_eq!(c.cmd("LIST 1"), format!("+OK 1 {WIRE}"));
    assert_eq!(c.cmd("RETR 1"), format!("+OK {WIRE} octets"));
    assert_eq!(c.multiline().len() as u64, WIRE);
}

#[test]
fn b19_a_name_whose_s_is_not_the_files_length_is_not_trusted() {
    let server = server_with_users(USERS, test_config());
    server.deliver("dora", "new", "1700000000.M3P1.host,S=999,W=50", BODY);
    let mut c = server.login("dora", "explorer");
    assert_eq!(c.cmd("LIST 1"), format!("+OK 1 {WIRE}"), "counted instead");
}

#[test]
fn b19_many_unnamed_messages_are_counted_exactly() {
    // Enough files for the count to be shared among threads.
    let server = server_with_users(USERS, test_config());
    let mut total = 0u64;
    for n in 0..1500u64 {
        let body = format!("Subject: {n}\n\n{}\n", "x".repeat(n as usize % 97));
        total += body.len() as u64 + body.matches('\n').count() as u64;
        server.deliver(
            "dora",
            "new",
            &format!("{}.M{n}P1.host", 1_700_000_000 + n),
            body.as_bytes(),
        );
    }
    let mut c = server.login("dora", "explorer");
    assert_eq!(c.cmd("STAT"), format!("+OK 1500 {total}"));
}

#[test]
fn b26_one_unique_name_twice_gives_two_ids_and_each_file_is_sent_and_removed() {
    // The same unique name in new/ and cur/ (a copy a mail reader left behind): both are
    // listed, under two different unique-ids, and each RETR and DELE reaches its own file.
    let server = server_with_users(USERS, test_config());
    server.deliver(
        "dora",
        "new",
        "1700000000.M9P1.host",
        b"Subject: new\n\nin new\n",
    );
    server.deliver(
        "dora",
        "cur",
        "1700000000.M9P1.host:2,S",
        b"Subject: cur\n\nin cur\n",
    );
    let mut c = server.login("dora", "explorer");
    assert!(c.cmd("UIDL").starts_with("+OK"));
    let ids = String::from_utf8_lossy(&c.multiline()).into_owned();
    let ids: Vec<&str> = ids
        .lines()
        .map(|l| l.split(' ').nth(1).unwrap_or(""))
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_ne!(ids[0], ids[1], "two messages must not share a unique-id");
    assert!(ids.contains(&"1700000000.M9P1.host"), "{ids:?}");
    let mut bodies = Vec::new();
    for n in 1..=2 {
        assert!(c.cmd(&format!("RETR {n}")).starts_with("+OK"));
        bodies.push(String::from_utf8_lossy(&c.multiline()).into_owned());
    }
    bodies.sort();
    assert_eq!(
        bodies,
        [
            "Subject: cur\r\n\r\nin cur\r\n",
            "Subject: new\r\n\r\nin new\r\n"
        ]
    );
    assert!(c.cmd("DELE 2").starts_with("+OK"));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    let mut c = server.login("dora", "explorer");
    assert_eq!(
        c.cmd("STAT").split(' ').nth(1),
        Some("1"),
        "one file removed"
    );
    assert!(c.cmd("RETR 1").starts_with("+OK"));
    let left = String::from_utf8_lossy(&c.multiline()).into_owned();
    assert!(bodies.contains(&left), "{left:?}");
}
