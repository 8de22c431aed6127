//! The built-in demo maildrop that `cargo run` serves: two users and a handful of messages, each
//! showing one thing worth seeing on the wire.
//!
//! | alice's message | what it shows                                              |
//! |-----------------|------------------------------------------------------------|
//! | 1 welcome       | an ordinary message with CRLF line ends, already read      |
//! | 2 dots          | lines starting with `.`, byte-stuffed by RETR (RFC 1939 §3) |
//! | 3 unix          | LF-only line ends, sent as CRLF and counted as such         |
//! | 4 long          | 400 body lines: try `TOP 4 5`                               |
//! | 5 multipart     | a MIME message with a text part and an attachment          |
//! | 6 unterminated  | no line end after its last line                            |
//!
//! The names and delivery times are fixed, so message numbers, sizes and unique-ids are the same
//! on every run: the book's transcripts depend on that.
//!
//! For a lesson, `--classroom N` adds `student01` … `studentNN`, each with a fresh copy of
//! alice's six messages and a password of two short words, so thirty students can each hold
//! their own maildrop's lock at once (one shared `alice` would give 29 of them `[IN-USE]`).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The demo users and their passwords.
pub const USERS: &[(&str, &str)] = &[("alice", "wonderland"), ("bob", "builder")];

/// Most classroom accounts: more than a room holds, few enough that the table of passwords
/// still fits on a few printed pages.
pub const MAX_STUDENTS: usize = 200;

/// Where a demo was created.
pub struct Demo {
    /// The folder holding everything; the maildrop root is `root/maildirs`.
    pub root: PathBuf,
    pub maildir_root: PathBuf,
    pub users_file: PathBuf,
    /// The classroom accounts, `(name, password)`, in order; empty without `--classroom`.
    pub students: Vec<(String, String)>,
}

/// Creates a fresh demo for the server listening on `port`, in the system's temporary folder,
/// with `students` classroom accounts (0 for none).
/// The folder is named after the port and replaced on every start: the demo always begins from
/// the same messages, old demos do not pile up, and two servers on two ports keep apart.
pub fn create_in_temp(port: u16, students: usize) -> io::Result<Demo> {
    let root = std::env::temp_dir().join(format!("popstate-demo-{port}"));
    match fs::remove_dir_all(&root) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let students = student_accounts(students);
    create_with_students(&root, &students)?;
    if !students.is_empty() {
        let table = root.join("accounts.txt");
        fs::write(&table, accounts_table(&students))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&table, fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(Demo {
        maildir_root: root.join("maildirs"),
        users_file: root.join("users"),
        root,
        students,
    })
}

/// Writes the demo users file and maildrops into `root`, which must not exist yet.
pub fn create(root: &Path) -> io::Result<()> {
    create_with_students(root, &[])
}

// ANCHOR: create_with_students
/// The demo, plus one maildrop per classroom account, each a copy of alice's messages: every
/// student can delete and QUIT without touching anyone else's mail.
pub fn create_with_students(root: &Path, students: &[(String, String)]) -> io::Result<()> {
    fs::create_dir_all(root)?;
    let users: String = USERS
        .iter()
        .map(|&(u, p)| (u, p))
        .chain(students.iter().map(|(u, p)| (u.as_str(), p.as_str())))
        .map(|(u, p)| format!("{u}:{p}\n"))
        .collect();
    let users_file = root.join("users");
    fs::write(
        &users_file,
        format!("# popstate demo users: name:password\n{users}"),
    )?;
    // Passwords are in clear text: only the owner may read them (the server warns otherwise).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&users_file, fs::Permissions::from_mode(0o600))?;
    }
    write_alice_messages(&root.join("maildirs/alice"))?;
    for (name, _) in students {
        write_alice_messages(&root.join("maildirs").join(name))?;
    }
    let bob = root.join("maildirs/bob");
    make_maildir(&bob)?;
    fs::write(bob.join("new/1764000101.demo1.popstate"), BOB_1)?;
    fs::write(bob.join("new/1764000102.demo2.popstate"), BOB_2)?;
    Ok(())
}
// ANCHOR_END: create_with_students

fn make_maildir(dir: &Path) -> io::Result<()> {
    for sub in ["new", "cur", "tmp"] {
        fs::create_dir_all(dir.join(sub))?;
    }
    Ok(())
}

fn write_alice_messages(dir: &Path) -> io::Result<()> {
    make_maildir(dir)?;
    fs::write(dir.join("cur/1764000001.demo1.popstate:2,S"), WELCOME)?;
    fs::write(dir.join("new/1764000002.demo2.popstate"), DOTS)?;
    fs::write(dir.join("new/1764000003.demo3.popstate"), UNIX)?;
    fs::write(dir.join("new/1764000004.demo4.popstate"), long())?;
    fs::write(dir.join("new/1764000005.demo5.popstate"), MULTIPART)?;
    fs::write(dir.join("new/1764000006.demo6.popstate"), UNTERMINATED)?;
    Ok(())
}

// ANCHOR: create_mbox
/// The same demo as [`create`], stored the other way: `root/users` and one mbox per user in
/// `root/mail` (serve it with `--mbox-dir root/mail`). The messages are the same octets, so
/// sizes, TOP and RETR are the same as over Maildir; only the unique-ids differ.
pub fn create_mbox(root: &Path) -> io::Result<()> {
    create(root)?;
    fs::remove_dir_all(root.join("maildirs"))?;
    let mail = root.join("mail");
    fs::create_dir_all(&mail)?;
    let alice = [
        WELCOME.as_bytes(),
        DOTS.as_bytes(),
        UNIX.as_bytes(),
        long().as_bytes(),
        MULTIPART.as_bytes(),
        UNTERMINATED.as_bytes(),
    ]
    .map(<[u8]>::to_vec);
    write_mbox(&mail.join("alice"), "teacher@example.org", 1, &alice)?;
    let bob = [BOB_1, BOB_2].map(|m| m.as_bytes().to_vec());
    write_mbox(&mail.join("bob"), "alice@example.org", 101, &bob)
}

/// Writes `messages` as a new mbox, one From_ line each, delivered a second apart.
fn write_mbox(path: &Path, sender: &str, first: u32, messages: &[Vec<u8>]) -> io::Result<()> {
    let mut out = Vec::new();
    for (n, message) in (first..).zip(messages) {
        let (minute, second) = (n / 60, n % 60);
        let from = format!("From {sender} Tue Nov 25 09:{minute:02}:{second:02} 2025");
        crate::mbox::append_message(&mut out, &from, message)?;
    }
    fs::write(path, out)
}
// ANCHOR_END: create_mbox

// ANCHOR: student_accounts
/// `student01`, `student02`, … with passwords of two short words joined by a dash, say
/// `maple-otter`: easy to read aloud and to type, unlike a random string. New passwords are
/// drawn on every start, so last week's slips do not open this week's maildrops.
pub fn student_accounts(count: usize) -> Vec<(String, String)> {
    let width = count.to_string().len().max(2);
    (1..=count)
        .map(|n| (format!("student{n:0width$}"), spoken_password()))
        .collect()
}

/// Words that sound unlike each other and are spelled as they sound.
const WORDS: &[&str] = &[
    "amber", "apple", "badger", "banjo", "cactus", "candle", "cobalt", "comet", "copper", "daisy",
    "dolphin", "ember", "falcon", "fern", "garlic", "ginger", "harbor", "hazel", "igloo", "island",
    "jasmine", "jelly", "kettle", "koala", "lemon", "lizard", "maple", "marble", "meadow",
    "nutmeg", "olive", "orbit", "otter", "panda", "pepper", "pickle", "quartz", "rabbit", "raven",
    "river", "saddle", "salmon", "spider", "sunset", "tiger", "tomato", "tulip", "velvet",
    "violin", "walnut", "willow", "yogurt", "zebra", "zigzag",
];

/// Two random words. std has no random number generator, but every `RandomState` is seeded
/// from the operating system's randomness, which is all a classroom password needs.
fn spoken_password() -> String {
    use std::hash::{BuildHasher, RandomState};
    let bits = RandomState::new().hash_one(0u8);
    let first = WORDS[(bits % WORDS.len() as u64) as usize];
    let second = WORDS[((bits >> 32) % WORDS.len() as u64) as usize];
    format!("{first}-{second}")
}
// ANCHOR_END: student_accounts

const WELCOME: &str = "From: popstate <teacher@example.org>\r\n\
To: alice@example.org\r\n\
Subject: Welcome to popstate\r\n\
Date: Tue, 25 Nov 2025 09:00:01 +0000\r\n\
Message-ID: <demo1@popstate.example>\r\n\
\r\n\
Hello Alice,\r\n\
\r\n\
this message is stored with CRLF line ends, so RETR sends it as it is.\r\n\
Try LIST, then RETR 2 to see byte-stuffing, and TOP 4 3 for a peek.\r\n";

const DOTS: &str = "From: popstate <teacher@example.org>\r\n\
To: alice@example.org\r\n\
Subject: Lines that start with a dot\r\n\
Date: Tue, 25 Nov 2025 09:00:02 +0000\r\n\
Message-ID: <demo2@popstate.example>\r\n\
\r\n\
The next line holds a single dot. On the wire it is sent as two dots,\r\n\
so the client cannot mistake it for the end of the message:\r\n\
.\r\n\
.. and this line started with two dots, so it goes out with three.\r\n\
The real end is the line with one dot that follows this one.\r\n";

const UNIX: &str = "From: popstate <teacher@example.org>\n\
To: alice@example.org\n\
Subject: LF-only line ends\n\
Date: Tue, 25 Nov 2025 09:00:03 +0000\n\
Message-ID: <demo3@popstate.example>\n\
\n\
This file ends its lines with LF alone, as Unix tools write them.\n\
POP3 sends every line with CRLF, and LIST counts the octets that\n\
are sent: compare LIST 3 with the size of the file on disk.\n";

fn long() -> String {
    let mut text = String::from(
        "From: popstate <teacher@example.org>\r\n\
To: alice@example.org\r\n\
Subject: A long message\r\n\
Date: Tue, 25 Nov 2025 09:00:04 +0000\r\n\
Message-ID: <demo4@popstate.example>\r\n\
\r\n",
    );
    for n in 1..=400 {
        text.push_str(&format!(
            "Line {n:03} of 400: TOP 4 n sends the header and the first n of these.\r\n"
        ));
    }
    text
}

const MULTIPART: &str = "From: popstate <teacher@example.org>\r\n\
To: alice@example.org\r\n\
Subject: A MIME message with an attachment\r\n\
Date: Tue, 25 Nov 2025 09:00:05 +0000\r\n\
Message-ID: <demo5@popstate.example>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"popstate-boundary\"\r\n\
\r\n\
This is a multi-part message in MIME format.\r\n\
\r\n\
--popstate-boundary\r\n\
Content-Type: text/plain; charset=us-ascii\r\n\
\r\n\
POP3 does not look inside a message: parts and attachments are\r\n\
just more lines to send.\r\n\
\r\n\
--popstate-boundary\r\n\
Content-Type: text/plain; name=\"hello.txt\"\r\n\
Content-Disposition: attachment; filename=\"hello.txt\"\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
SGVsbG8gZnJvbSBwb3BzdGF0ZSEK\r\n\
\r\n\
--popstate-boundary--\r\n";

const UNTERMINATED: &str = "From: popstate <teacher@example.org>\r\n\
To: alice@example.org\r\n\
Subject: No line end at the end\r\n\
Date: Tue, 25 Nov 2025 09:00:06 +0000\r\n\
Message-ID: <demo6@popstate.example>\r\n\
\r\n\
The file holding this message stops right after the word here";

const BOB_1: &str = "From: alice@example.org\r\n\
To: bob@example.org\r\n\
Subject: Can we fix it?\r\n\
Date: Tue, 25 Nov 2025 10:00:01 +0000\r\n\
Message-ID: <bob1@popstate.example>\r\n\
\r\n\
Log in as bob in a second telnet while alice is logged in elsewhere:\r\n\
each maildrop has its own lock.\r\n";

const BOB_2: &str = "From: alice@example.org\r\n\
To: bob@example.org\r\n\
Subject: Yes we can\r\n\
Date: Tue, 25 Nov 2025 10:00:02 +0000\r\n\
Message-ID: <bob2@popstate.example>\r\n\
\r\n\
DELE this, then QUIT, and it is gone; DELE it and drop the connection,\r\n\
and it is still here next time.\r\n";

// ANCHOR: banner
/// What `cargo run` prints under its "listening on" line: where the demo is, who can log in,
/// and the exact lines to type. `hosts` are the addresses clients can reach (see
/// addresses.rs); with `--classroom`, the table of accounts follows, one `studentNN  PASSWORD`
/// line each, to print and cut into slips.
pub fn banner(demo: &Demo, hosts: &[std::net::IpAddr], port: u16) -> String {
    let users: Vec<String> = USERS.iter().map(|(u, p)| format!("{u} / {p}")).collect();
    let mut text = format!(
        "Demo maildrop in {} (users: {}).\n",
        demo.root.display(),
        users.join(", ")
    );
    let (user, password) = demo
        .students
        .first()
        .map_or(("alice", "wonderland"), |(u, p)| (u.as_str(), p.as_str()));
    match hosts.first() {
        Some(host) => {
            text.push_str("Try it in another terminal:\n\n");
            text.push_str(&format!("    telnet {host} {port}\n"));
            for other in &hosts[1..] {
                text.push_str(&format!("    (or: telnet {other} {port})\n"));
            }
        }
        None => text.push_str(&format!(
            "This machine's address could not be found: `ip addr` shows it; then type\n\n    \
             telnet ADDRESS {port}\n"
        )),
    }
    text.push_str(&format!(
        "\n    USER {user}\n    PASS {password}\n    STAT\n    LIST\n    RETR 2\n    DELE 1\n    QUIT\n"
    ));
    if !demo.students.is_empty() {
        text.push_str(&format!(
            "\nClassroom accounts ({}; also in {}):\n\n",
            demo.students.len(),
            demo.root.join("accounts.txt").display()
        ));
        text.push_str(&accounts_table(&demo.students));
    }
    text
}
// ANCHOR_END: banner

/// One `studentNN  PASSWORD` line per account.
pub fn accounts_table(students: &[(String, String)]) -> String {
    students
        .iter()
        .map(|(name, password)| format!("{name}  {password}\n"))
        .collect()
}
