//! The `popstate` command: parse flags, start logging, bind, serve.

use std::io::{IsTerminal, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use argh::FromArgs;
use log::warn;

use popstate::authorization::LoginPolicy;
use popstate::board::Board;
use popstate::classroom::Trace;
use popstate::maildir::MaildirStore;
use popstate::maildrop::Store;
use popstate::mbox::MboxStore;
use popstate::server::{Config, Server};
use popstate::users::Users;
use popstate::{addresses, demo, limits};

/// popstate: a POP3 server (RFC 1939) over Maildir, one thread per client, made to be read.
/// With no flags it serves a fresh demo maildrop on 127.0.0.1:1110.
#[derive(FromArgs)]
struct Args {
    /// address and port to listen on (default 127.0.0.1:1110)
    #[argh(option, default = "String::from(\"127.0.0.1:1110\")")]
    listen: String,
    /// folder with one Maildir per user, <DIR>/<user>/{new,cur,tmp} (needs --users)
    #[argh(option)]
    maildir_root: Option<PathBuf>,
    /// folder with one mbox file per user, <DIR>/<user>, as /var/mail is (needs --users;
    /// instead of --maildir-root)
    #[argh(option)]
    mbox_dir: Option<PathBuf>,
    /// users file: one name:password per line, # starts a comment (needs --maildir-root or
    /// --mbox-dir)
    #[argh(option)]
    users: Option<PathBuf>,
    /// seconds without a command before a session is closed (default 600, RFC 1939's minimum)
    #[argh(option, default = "limits::IDLE_TIMEOUT.as_secs()")]
    idle_timeout: u64,
    /// seconds a reply may wait for a client that does not read before the session ends
    /// (default 60)
    #[argh(option, default = "limits::WRITE_TIMEOUT.as_secs()")]
    write_timeout: u64,
    /// most sessions at once; one more gets -ERR [SYS/TEMP] and is closed (default 1000, or
    /// what the open-file limit allows)
    #[argh(option)]
    max_sessions: Option<usize>,
    /// most sessions at once from one IP address (default 500)
    #[argh(option, default = "limits::MAX_SESSIONS_PER_IP")]
    max_sessions_per_ip: usize,
    /// wrong passwords in one session before it is closed (default 3)
    #[argh(option, default = "limits::MAX_AUTH_FAILURES")]
    max_auth_failures: u32,
    /// milliseconds to wait before answering a wrong password (default 1000)
    #[argh(option, default = "limits::AUTH_FAILURE_DELAY.as_millis() as u64")]
    auth_failure_delay_ms: u64,
    /// print every session's dialogue here, for a classroom (passwords masked)
    #[argh(switch)]
    trace: bool,
    /// like --trace, but only the sessions that log in as this user (say, student07)
    #[argh(option)]
    trace_user: Option<String>,
    /// demo only: add N classroom accounts student01..studentNN (1 to 200), each with its own
    /// copy of the demo mail, and print their passwords
    #[argh(option)]
    classroom: Option<usize>,
    /// show the teacher's board: one row per live session, redrawn in place on a terminal
    #[argh(switch)]
    board: bool,
}

/// Longer timeouts are surely a typo, and a huge one would overflow the clock's arithmetic.
const MAX_TIMEOUT_SECS: u64 = 24 * 60 * 60;

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(code) => return code,
    };
    // The board redraws the terminal: a log line there would be drawn over half a second later,
    // so only warnings are shown unless RUST_LOG asks for more.
    let quiet = args.board && std::io::stdout().is_terminal();
    let level = if quiet { "warn" } else { "info" };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("popstate: {message}");
            ExitCode::FAILURE
        }
    }
}

/// argh's own `from_env` prints a usage paragraph for a bad flag; a single line is easier to read
/// in a service log, so errors are reported here, and only `--help` prints the full text.
fn parse_args() -> Result<Args, ExitCode> {
    let argv: Vec<String> = std::env::args().collect();
    let name = argv.first().map_or("popstate", |s| s.as_str());
    let rest: Vec<&str> = argv.iter().skip(1).map(String::as_str).collect();
    Args::from_args(&[name], &rest).map_err(|exit| match exit.status {
        Ok(()) => {
            println!("{}", exit.output);
            ExitCode::SUCCESS
        }
        Err(()) => {
            let first = exit.output.lines().next().unwrap_or("bad arguments");
            eprintln!("popstate: {first} (see popstate --help)");
            ExitCode::from(2)
        }
    })
}

fn run(args: Args) -> Result<(), String> {
    if args.idle_timeout == 0 {
        return Err("--idle-timeout must be at least 1 second".into());
    }
    if args.idle_timeout > MAX_TIMEOUT_SECS || args.write_timeout > MAX_TIMEOUT_SECS {
        return Err(format!(
            "--idle-timeout and --write-timeout may be at most {MAX_TIMEOUT_SECS} seconds (a day)"
        ));
    }
    if args.idle_timeout < limits::IDLE_TIMEOUT.as_secs() {
        warn!(
            "--idle-timeout {} is below RFC 1939's 10-minute minimum",
            args.idle_timeout
        );
    }
    for (flag, value) in [
        ("--write-timeout", args.write_timeout),
        ("--max-sessions", args.max_sessions.map_or(1, |n| n as u64)),
        ("--max-sessions-per-ip", args.max_sessions_per_ip as u64),
        ("--max-auth-failures", u64::from(args.max_auth_failures)),
    ] {
        if value == 0 {
            return Err(format!("{flag} must be at least 1"));
        }
    }
    let students = match args.classroom {
        None => 0,
        Some(n) if (1..=demo::MAX_STUDENTS).contains(&n) => n,
        Some(n) => {
            return Err(format!(
                "--classroom {n}: give a number of students from 1 to {}",
                demo::MAX_STUDENTS
            ));
        }
    };
    if args.board && args.trace {
        return Err("--board and --trace would both write every session to the terminal: use --board with --trace-user NAME to follow one student".into());
    }
    if students > 0
        && (args.maildir_root.is_some() || args.mbox_dir.is_some() || args.users.is_some())
    {
        return Err("--classroom makes demo accounts: it cannot be used with --maildir-root, --mbox-dir or --users (add students to your users file instead)".into());
    }
    let listener = TcpListener::bind(&args.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    let hosts = addresses::hosts_for(&address);

    let (store, users_file, demo_banner): (Box<dyn Store>, _, _) = match (
        args.maildir_root,
        args.mbox_dir,
        args.users,
    ) {
        (Some(_), Some(_), _) => {
            return Err("--maildir-root and --mbox-dir are two ways to store mail: give one of them, with --users".into());
        }
        (Some(root), None, Some(users)) => {
            folder("--maildir-root", &root)?;
            (Box::new(MaildirStore::new(root)), users, None)
        }
        (None, Some(dir), Some(users)) => {
            folder("--mbox-dir", &dir)?;
            (Box::new(MboxStore::new(dir)), users, None)
        }
        (None, None, None) => {
            let demo = demo::create_in_temp(address.port(), students)
                .map_err(|e| format!("cannot create the demo maildrop: {e}"))?;
            let banner = demo::banner(&demo, &hosts, address.port());
            (
                Box::new(MaildirStore::new(demo.maildir_root)),
                demo.users_file,
                Some(banner),
            )
        }
        (Some(_), None, None) => {
            return Err(
                "--maildir-root and --users go together: give both, or neither for the demo".into(),
            );
        }
        (None, Some(_), None) => {
            return Err(
                "--mbox-dir and --users go together: give both, or neither for the demo".into(),
            );
        }
        (None, None, Some(_)) => {
            return Err("--users needs --maildir-root or --mbox-dir to say where the mail is, or leave all three out for the demo".into());
        }
    };
    let text = std::fs::read_to_string(&users_file)
        .map_err(|e| format!("cannot read users file {}: {e}", users_file.display()))?;
    warn_if_readable_by_others(&users_file);
    let users =
        Users::parse(&text).map_err(|e| format!("users file {}: {e}", users_file.display()))?;

    let config = Config {
        idle_timeout: Duration::from_secs(args.idle_timeout),
        write_timeout: Duration::from_secs(args.write_timeout),
        max_sessions: session_limit(args.max_sessions)?,
        max_sessions_per_ip: args.max_sessions_per_ip,
        login: LoginPolicy {
            failure_delay: Duration::from_millis(args.auth_failure_delay_ms),
            max_failures: args.max_auth_failures,
        },
        classroom: match (args.trace, args.trace_user) {
            (_, Some(user)) => Trace::User(user),
            (true, None) => Trace::All,
            (false, None) => Trace::Off,
        },
        board: args
            .board
            .then(|| Board::new(connect_line(&hosts, address.port()))),
    };
    let server_board = config.board.clone();
    let server = Server::new(listener, users, store, config);
    // A closed standard output (say, `popstate | head -1`) must not stop the server.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "popstate {} listening on {address}",
        env!("CARGO_PKG_VERSION")
    );
    if !address.ip().is_loopback() {
        let _ = writeln!(
            out,
            "Warning: {address} can be reached from other machines, and POP3 sends USER and \
             PASS in clear text: anyone on the network path can read them. Use throwaway \
             passwords (as the demo's are), or a trusted network."
        );
    }
    if let Some(banner) = demo_banner {
        let _ = writeln!(out, "{banner}");
    }
    let _ = out.flush();
    drop(out);
    if let Some(board) = &server_board {
        board
            .start()
            .map_err(|e| format!("cannot start the board: {e}"))?;
    }
    server.serve();
    Ok(())
}

/// A storage flag must name a folder.
fn folder(flag: &str, path: &std::path::Path) -> Result<(), String> {
    if path.is_dir() {
        Ok(())
    } else {
        Err(format!("{flag} {}: not a folder", path.display()))
    }
}

/// The session limit that the open-file limit can carry. A logged-in session holds two file
/// descriptors (its socket and its maildrop's lock file), and a few more are needed for a
/// moment while it lists or sends a message. A limit the operator asked for that cannot be met
/// is an error; the default is lowered with a warning, so that clients over the limit get a
/// clean `-ERR [SYS/TEMP]` instead of hanging in the accept queue.
fn session_limit(asked: Option<usize>) -> Result<usize, String> {
    const PER_SESSION: u64 = 2;
    const RESERVE: u64 = 64;
    let wanted = asked.unwrap_or(limits::MAX_SESSIONS);
    let Some(files) = open_file_limit() else {
        return Ok(wanted);
    };
    let fits = usize::try_from(files.saturating_sub(RESERVE) / PER_SESSION).unwrap_or(usize::MAX);
    if wanted <= fits {
        return Ok(wanted);
    }
    let needed = (wanted as u64)
        .saturating_mul(PER_SESSION)
        .saturating_add(RESERVE);
    let advice = format!("raise the open-file limit (ulimit -n {needed}) or lower --max-sessions");
    if asked.is_some() {
        return Err(format!(
            "--max-sessions {wanted} needs about {needed} open files, but the limit is {files}: {advice}"
        ));
    }
    if fits == 0 {
        return Err(format!(
            "the open-file limit ({files}) is too low to serve anyone: {advice}"
        ));
    }
    warn!("the open-file limit ({files}) allows {fits} sessions, not {wanted}: {advice}");
    Ok(fits)
}

/// The soft limit on open files, from /proc (Linux); `None` where that cannot be read.
fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The users file holds passwords in clear: say so when others may read it.
fn warn_if_readable_by_others(path: &std::path::Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode();
            if mode & 0o077 != 0 {
                warn!(
                    "users file {} can be read by others (mode {:o}); chmod 600 it",
                    path.display(),
                    mode & 0o777
                );
            }
        }
    }
}

/// What students type to connect, for the board's header.
fn connect_line(hosts: &[std::net::IpAddr], port: u16) -> String {
    match hosts.first() {
        Some(host) => format!("telnet {host} {port}"),
        None => format!("telnet ADDRESS {port} (see ip addr)"),
    }
}
