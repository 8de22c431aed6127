//! The `popstate` command: parse flags, start logging, bind, serve.

use std::io::{IsTerminal, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use argh::FromArgs;
use log::warn;

use popstate::authorization::LoginPolicy;
use popstate::board::Board;
use popstate::classroom::Trace;
use popstate::expire::Expire;
use popstate::inetd::{Client, Syslog};
use popstate::maildir::MaildirStore;
use popstate::maildrop::Store;
use popstate::mbox::MboxStore;
use popstate::server::{Config, Security, Server};
use popstate::users::Users;
use popstate::{addresses, demo, limits, systemd};

/// popstate: a POP3 server (RFC 1939) over Maildir, one thread per client, made to be read.
/// With no flags it serves a fresh demo maildrop on 127.0.0.1:1110.
#[derive(FromArgs)]
struct Args {
    /// address and port to listen on (default 127.0.0.1:1110, unless only --listen-tls is given;
    /// a socket passed by systemd, LISTEN_FDS, replaces it)
    #[argh(option)]
    listen: Option<String>,
    /// serve one client on standard input and output and exit, as inetd and systemd's
    /// Accept=yes sockets start servers; logs go to standard error
    #[argh(switch)]
    inetd: bool,
    /// refuse a login that comes sooner than SECS after the same user's last one with
    /// -ERR [LOGIN-DELAY], and announce LOGIN-DELAY SECS in CAPA (RFC 2449 section 6.5)
    #[argh(option, arg_name = "SECS")]
    login_delay: Option<u64>,
    /// announce EXPIRE DAYS in CAPA and remove, at QUIT, the messages that session retrieved
    /// and that were delivered DAYS or more days ago; NEVER (the default) keeps everything
    /// until deleted (RFC 2449 section 6.7)
    #[argh(
        option,
        arg_name = "DAYS",
        default = "Expire::Never",
        from_str_fn(expire)
    )]
    expire: Expire,
    /// address and port for implicit TLS, e.g. 0.0.0.0:995 (RFC 8314): the TLS handshake
    /// comes first, then the greeting (needs --tls-cert and --tls-key)
    #[cfg(feature = "tls")]
    #[argh(option)]
    listen_tls: Option<String>,
    /// PEM certificate chain (server certificate first) for STLS and --listen-tls
    #[cfg(feature = "tls")]
    #[argh(option)]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert
    #[cfg(feature = "tls")]
    #[argh(option)]
    tls_key: Option<PathBuf>,
    /// refuse USER/PASS until TLS is active (STLS or --listen-tls), and leave USER out of CAPA
    /// until then (RFC 2595 section 2.3)
    #[cfg(feature = "tls")]
    #[argh(switch)]
    require_tls: bool,
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
    /// print a users-file line NAME:$6$... with a SHA-512-crypt hash of a password read from the
    /// terminal (not shown) or from standard input, and exit (needs the hashed-passwords feature)
    #[argh(option, arg_name = "NAME")]
    hash_password: Option<String>,
}

fn expire(value: &str) -> Result<Expire, String> {
    Expire::parse(value)
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
    let mut logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level));
    // Under a classic inetd, standard error is the client's socket as well (inetd.rs).
    let to_syslog = args.inetd && popstate::inetd::stderr_is_the_client();
    if to_syslog {
        let pid = std::process::id();
        logger
            .target(env_logger::Target::Pipe(Box::new(Syslog::new())))
            .format(move |out, record| {
                let priority = Syslog::priority(record.level());
                writeln!(out, "<{priority}>popstate[{pid}]: {}", record.args())
            });
    }
    logger.init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) if to_syslog => {
            log::error!("{message}");
            ExitCode::FAILURE
        }
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
    if let Some(name) = &args.hash_password {
        return print_users_line(name);
    }
    let (students, login_delay) = check_flags(&args)?;
    // Certificate files are checked before anything binds; tls.rs says what is wrong with them.
    #[cfg(feature = "tls")]
    let certificate = tls_flags::certificate(&args)?;

    let listeners = if args.inetd {
        Vec::new()
    } else {
        listen(&args)?
    };
    // The demo and the board show where to connect; in --inetd mode neither is allowed.
    let address = match listeners.first() {
        Some((listener, _)) => Some(listener.local_addr().map_err(|e| e.to_string())?),
        None => None,
    };
    let hosts = address.map_or_else(Vec::new, |a| addresses::hosts_for(&a));
    let port = address.map_or(0, |a| a.port());

    let (store, users_file, banner, demo_root): (Box<dyn Store>, _, _, _) = match (
        args.maildir_root.clone(),
        args.mbox_dir.clone(),
        args.users.clone(),
    ) {
        (Some(root), _, Some(users)) => {
            folder("--maildir-root", &root)?;
            (
                Box::new(MaildirStore::new(root)),
                users,
                String::new(),
                None,
            )
        }
        (None, Some(dir), Some(users)) => {
            folder("--mbox-dir", &dir)?;
            (Box::new(MboxStore::new(dir)), users, String::new(), None)
        }
        // `fn storage_flags` allowed no other combination but none of the three: the demo.
        _ => {
            let demo = demo::create_in_temp(port, students)
                .map_err(|e| format!("cannot create the demo maildrop: {e}"))?;
            let banner = demo::banner(&demo, &hosts, port);
            (
                Box::new(MaildirStore::new(demo.maildir_root)),
                demo.users_file,
                banner,
                Some(demo.root),
            )
        }
    };
    let text = std::fs::read_to_string(&users_file)
        .map_err(|e| format!("cannot read users file {}: {e}", users_file.display()))?;
    popstate::users::warn_if_readable_by_others(&users_file);
    let users =
        Users::parse(&text).map_err(|e| format!("users file {}: {e}", users_file.display()))?;

    let config = Config {
        idle_timeout: Duration::from_secs(args.idle_timeout),
        write_timeout: Duration::from_secs(args.write_timeout),
        // In --inetd mode this process serves one session; inetd or systemd limit the rest.
        max_sessions: if args.inetd {
            1
        } else {
            limits::session_limit(args.max_sessions, args.mbox_dir.is_some())?
        },
        max_sessions_per_ip: args.max_sessions_per_ip,
        login: LoginPolicy {
            failure_delay: Duration::from_millis(args.auth_failure_delay_ms),
            max_failures: args.max_auth_failures,
            require_tls: false,
        },
        login_delay,
        expire: args.expire,
        classroom: match (args.trace, args.trace_user.clone()) {
            (_, Some(user)) => Trace::User(user),
            (true, None) => Trace::All,
            (false, None) => Trace::Off,
        },
        board: args.board.then(|| {
            Board::new(
                popstate::board::connect_line(&hosts, port),
                popstate::board::note(demo_root.as_deref(), students),
            )
        }),
        #[cfg(feature = "tls")]
        tls: None,
    };
    #[cfg(feature = "tls")]
    let mut listeners = listeners;
    #[cfg(feature = "tls")]
    let (config, banner) = tls_flags::apply(
        &args,
        certificate,
        demo_root.as_deref(),
        config,
        &mut listeners,
        banner,
    )?;
    let _ = demo_root;
    // ANCHOR: inetd_entry
    // Standard output is the client from here on: nothing else may be printed to it.
    if args.inetd {
        let client = Client::from_stdin()
            .map_err(|e| format!("--inetd: cannot serve standard input: {e}"))?;
        Server::with_listeners(Vec::new(), users, store, config).serve_inetd(client);
        return Ok(());
    }
    // ANCHOR_END: inetd_entry
    let mut addresses = Vec::new();
    for (listener, security) in &listeners {
        addresses.push((listener.local_addr().map_err(|e| e.to_string())?, *security));
    }
    warn_about_clear_text(&addresses, &config);
    let server_board = config.board.clone();
    let clear_text_reachable = addresses
        .iter()
        .any(|(a, s)| *s == Security::Plain && !a.ip().is_loopback())
        && !config.login.require_tls;
    let server = Server::with_listeners(listeners, users, store, config);
    print_start(&addresses, clear_text_reachable, &banner);
    if let Some(board) = &server_board {
        board
            .start()
            .map_err(|e| format!("cannot start the board: {e}"))?;
    }
    server.serve();
    Ok(())
}

/// Every flag that is wrong on its own or with another, found before anything binds or is
/// created. Returns the number of classroom accounts and the login delay.
fn check_flags(args: &Args) -> Result<(usize, Option<Duration>), String> {
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
    storage_flags(args)?;
    if args.inetd {
        inetd_flags(args)?;
    }
    let login_delay = match args.login_delay {
        Some(0) => {
            return Err("--login-delay must be at least 1 second (leave it out for none)".into());
        }
        Some(secs) if secs > MAX_TIMEOUT_SECS => {
            return Err(format!(
                "--login-delay may be at most {MAX_TIMEOUT_SECS} seconds (a day)"
            ));
        }
        secs => secs.map(Duration::from_secs),
    };
    Ok((students, login_delay))
}

/// The start banner on standard output: where it listens, the clear-text warning, and the demo's
/// lines to try.
fn print_start(addresses: &[(SocketAddr, Security)], clear_text_reachable: bool, banner: &str) {
    // A closed standard output (say, `popstate | head -1`) must not stop the server.
    let mut out = std::io::stdout().lock();
    for (address, security) in addresses {
        let how = match security {
            Security::Plain => "listening on",
            #[cfg(feature = "tls")]
            Security::ImplicitTls => "listening with implicit TLS (pop3s) on",
        };
        let _ = writeln!(
            out,
            "popstate {} {how} {address}",
            env!("CARGO_PKG_VERSION")
        );
    }
    if clear_text_reachable {
        let _ = writeln!(
            out,
            "Warning: other machines can reach this server, and POP3 sends USER and PASS in \
             clear text: anyone on the network path can read them. Use throwaway passwords \
             (as the demo's are), or a trusted network."
        );
    }
    if !banner.is_empty() {
        let _ = writeln!(
            out,
            "{banner}\nStop the server with Ctrl-C. Set RUST_LOG=popstate=trace to see every line on the wire."
        );
    }
    let _ = out.flush();
    drop(out);
}

// ANCHOR: listen
/// The sockets to serve: the ones systemd passed (socket activation, systemd.rs), or the ones
/// `--listen` and `--listen-tls` name, bound here.
fn listen(args: &Args) -> Result<Vec<(TcpListener, Security)>, String> {
    let passed = systemd::listeners()?;
    if !passed.is_empty() {
        #[cfg(feature = "tls")]
        let tls = args.listen_tls.is_some();
        #[cfg(not(feature = "tls"))]
        let tls = false;
        if args.listen.is_some() || tls {
            return Err("systemd passed a listening socket (LISTEN_FDS): the socket unit's ListenStream= says where to listen, so leave out --listen and --listen-tls".into());
        }
        return Ok(passed.into_iter().map(|l| (l, Security::Plain)).collect());
    }
    let mut listeners = Vec::new();
    if let Some(listen) = plain_address(args) {
        let listener =
            TcpListener::bind(&listen).map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        listeners.push((listener, Security::Plain));
    }
    #[cfg(feature = "tls")]
    if let Some(listen) = &args.listen_tls {
        let listener = TcpListener::bind(listen)
            .map_err(|e| format!("cannot listen on {listen} (--listen-tls): {e}"))?;
        listeners.push((listener, Security::ImplicitTls));
    }
    if listeners.is_empty() {
        return Err("nothing to listen on".into());
    }
    Ok(listeners)
}
// ANCHOR_END: listen

/// `--inetd` serves the one client on standard input: flags about listening, about the demo
/// (which would print its passwords to the client) and about printing sessions (to standard
/// output, which is the client) make no sense with it.
fn inetd_flags(args: &Args) -> Result<(), String> {
    #[cfg(feature = "tls")]
    let tls = args.listen_tls.is_some();
    #[cfg(not(feature = "tls"))]
    let tls = false;
    let clash = [
        ("--listen", args.listen.is_some()),
        ("--listen-tls", tls),
        ("--trace", args.trace),
        ("--trace-user", args.trace_user.is_some()),
        ("--board", args.board),
        ("--classroom", args.classroom.is_some()),
    ];
    if let Some((flag, _)) = clash.iter().find(|(_, given)| *given) {
        return Err(format!(
            "{flag} cannot be used with --inetd: inetd or systemd listens, and standard output is the client"
        ));
    }
    if args.login_delay.is_some() {
        return Err("--login-delay cannot be used with --inetd: each session is a process of its own, so none would know when the user last logged in; use a systemd socket with Accept=no (dist/popstate.socket) instead".into());
    }
    if args.maildir_root.is_none() && args.mbox_dir.is_none() {
        return Err("--inetd needs --maildir-root or --mbox-dir, and --users: the demo makes a new maildrop for every start".into());
    }
    Ok(())
}

/// The plain listener's address: `--listen`, or the default unless only `--listen-tls` was given.
fn plain_address(args: &Args) -> Option<String> {
    #[cfg(feature = "tls")]
    let tls_only = args.listen_tls.is_some();
    #[cfg(not(feature = "tls"))]
    let tls_only = false;
    match &args.listen {
        Some(address) => Some(address.clone()),
        None if tls_only => None,
        None => Some("127.0.0.1:1110".to_string()),
    }
}

/// RFC 8314 §3 and RFC 2595 §2.3: passwords should not cross a network in clear text. A plain
/// listener on a loopback address stays on this machine; any other one is worth a warning unless
/// logins there wait for STLS.
fn warn_about_clear_text(addresses: &[(SocketAddr, Security)], config: &Config) {
    for (address, security) in addresses {
        if *security == Security::Plain && !address.ip().is_loopback() && !config.login.require_tls
        {
            warn!(
                "{address} is not a loopback address, and USER/PASS there cross the network in \
                 clear text: {}",
                if cfg!(feature = "tls") {
                    "add --require-tls (clients must send STLS first), or serve only --listen-tls"
                } else {
                    "build with --features tls and serve it with a certificate"
                }
            );
        }
    }
}

/// Where the mail is: `--maildir-root` or `--mbox-dir`, each with `--users`, or none of the
/// three for the demo. Checked before anything binds.
fn storage_flags(args: &Args) -> Result<(), String> {
    match (&args.maildir_root, &args.mbox_dir, &args.users) {
        (Some(_), Some(_), _) => Err("--maildir-root and --mbox-dir are two ways to store mail: give one of them, with --users".into()),
        (Some(_), None, None) => Err(
            "--maildir-root and --users go together: give both, or neither for the demo".into(),
        ),
        (None, Some(_), None) => Err(
            "--mbox-dir and --users go together: give both, or neither for the demo".into(),
        ),
        (None, None, Some(_)) => Err("--users needs --maildir-root or --mbox-dir to say where the mail is, or leave all three out for the demo".into()),
        _ => Ok(()),
    }
}

/// A storage flag must name a folder.
fn folder(flag: &str, path: &std::path::Path) -> Result<(), String> {
    if path.is_dir() {
        Ok(())
    } else {
        Err(format!("{flag} {}: not a folder", path.display()))
    }
}

/// The TLS flags (cargo feature `tls`): `--tls-cert`, `--tls-key`, `--listen-tls`,
/// `--require-tls`, and the demo's throwaway certificate.
#[cfg(feature = "tls")]
mod tls_flags {
    use std::net::{SocketAddr, TcpListener};
    use std::path::Path;

    use popstate::server::{Config, Security};
    use popstate::tls::Certificate;

    use super::Args;

    /// Port of the demo's implicit-TLS listener: the plain port plus this (1110 -> 1995, as
    /// 110 -> 995).
    const DEMO_TLS_PORT_OFFSET: u16 = 885;

    /// The certificate from `--tls-cert`/`--tls-key`, or `None` (the demo then makes one).
    pub fn certificate(args: &Args) -> Result<Option<Certificate>, String> {
        let demo = args.maildir_root.is_none() && args.mbox_dir.is_none();
        let certificate = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(Certificate::load(cert, key)?),
            (None, None) => None,
            _ => return Err("--tls-cert and --tls-key go together: give both".into()),
        };
        if certificate.is_none() && !demo {
            for (flag, given) in [
                ("--listen-tls", args.listen_tls.is_some()),
                ("--require-tls", args.require_tls),
            ] {
                if given {
                    return Err(format!(
                        "{flag} needs a certificate: give --tls-cert and --tls-key"
                    ));
                }
            }
        }
        Ok(certificate)
    }

    /// Puts the certificate and `--require-tls` into the settings. The demo without
    /// `--tls-cert` gets a self-signed certificate saved beside its maildrop, and an
    /// implicit-TLS listener unless `--listen-tls` names one.
    pub fn apply(
        args: &Args,
        certificate: Option<Certificate>,
        demo_root: Option<&Path>,
        mut config: Config,
        listeners: &mut Vec<(TcpListener, Security)>,
        mut banner: String,
    ) -> Result<(Config, String), String> {
        config.login.require_tls = args.require_tls;
        config.tls = match (certificate, demo_root) {
            (Some(certificate), _) => Some(certificate),
            (None, Some(root)) => Some(demo_certificate(args, root, listeners, &mut banner)?),
            (None, None) => None,
        };
        Ok((config, banner))
    }

    fn demo_certificate(
        args: &Args,
        root: &Path,
        listeners: &mut Vec<(TcpListener, Security)>,
        banner: &mut String,
    ) -> Result<Certificate, String> {
        let first = match listeners.first() {
            Some((listener, _)) => listener.local_addr().map_err(|e| e.to_string())?,
            None => return Err("nothing to listen on".into()),
        };
        let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        if !names.contains(&first.ip().to_string()) {
            names.push(first.ip().to_string());
        }
        let (certificate, pem) = Certificate::self_signed(&names)?;
        let pem_file = root.join("cert.pem");
        std::fs::write(&pem_file, pem)
            .map_err(|e| format!("cannot save the demo certificate: {e}"))?;
        if args.listen_tls.is_none() {
            let port = match first.port() {
                0 => 0,
                port => port.checked_add(DEMO_TLS_PORT_OFFSET).unwrap_or(0),
            };
            // The port beside the plain one is only a convenience: when it is taken, any free
            // port will do (the banner says which).
            let address = SocketAddr::new(first.ip(), port);
            let listener = TcpListener::bind(address)
                .or_else(|_| TcpListener::bind(SocketAddr::new(first.ip(), 0)))
                .map_err(|e| format!("cannot listen on {address} for the demo's TLS: {e}"))?;
            listeners.push((listener, Security::ImplicitTls));
        }
        let mut plain = None;
        let mut tls = None;
        for (listener, security) in listeners.iter() {
            let address = listener.local_addr().map_err(|e| e.to_string())?;
            match security {
                Security::Plain => plain = plain.or(Some(address)),
                Security::ImplicitTls => tls = tls.or(Some(address)),
            }
        }
        let pem = pem_file.display();
        banner.push_str(&format!(
            "\nWith TLS (a throwaway self-signed certificate, saved in {pem}):\n"
        ));
        if let Some(plain) = plain {
            banner.push_str(&format!(
                "\n    openssl s_client -quiet -starttls pop3 -connect {plain} -CAfile {pem}"
            ));
        }
        if let Some(tls) = tls {
            banner.push_str(&format!(
                "\n    curl --cacert {pem} pop3s://alice:wonderland@{tls}/1"
            ));
        }
        banner.push('\n');
        Ok(certificate)
    }
}

/// `--hash-password NAME` (hashed.rs).
#[cfg(feature = "hashed-passwords")]
fn print_users_line(name: &str) -> Result<(), String> {
    popstate::hashed::print_users_line(name)
}

#[cfg(not(feature = "hashed-passwords"))]
fn print_users_line(_name: &str) -> Result<(), String> {
    Err("--hash-password needs popstate built with --features hashed-passwords".into())
}
