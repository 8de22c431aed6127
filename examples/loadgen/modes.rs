//! The measurements. Each one returns its JSON line; each loop stops at a count or a deadline,
//! whichever comes first.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::Args;
use crate::client::{Body, Failure, Pop3, check_body, listing};
use crate::report::{self, CpuClock, Json, percentile, sort};

/// The user names each client logs in as: `u0001`, `u0002`, ... (mkmaildrop.py makes them).
fn user_name(prefix: &str, index: usize) -> String {
    format!("{prefix}{:04}", index + 1)
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        thread::sleep(t - now);
    }
}

// ANCHOR: sessions
/// `sessions`: C clients, each logged in as its own user (a correct server locks the maildrop),
/// repeat whole sessions for D seconds. Sessions that end inside the measured window count; the
/// first `--warmup` seconds are not measured.
pub fn sessions(args: &Args) -> Result<String, String> {
    let addr = args.addr("addr")?;
    let clients: usize = args.number("clients", 16, 4096)?;
    let seconds: f64 = args.number("seconds", 10.0, 600.0)?;
    let warmup: f64 = args.number("warmup", 1.0, 60.0)?;
    let prefix = args.text("users-prefix", Some("u"))?;
    let password = args.text("password", Some("benchpass"))?;
    // `--retrs N`: retrieve only the first N messages of each session, to see what the
    // messages cost apart from the login and the listings (docs/performance.md, round 2).
    let retrs: usize = args.number("retrs", ALL_MESSAGES, ALL_MESSAGES)?;

    let start = Instant::now();
    let window_start = start + Duration::from_secs_f64(warmup);
    let window_end = window_start + Duration::from_secs_f64(seconds);
    let mut workers = Vec::new();
    for i in 0..clients {
        let user = user_name(&prefix, i);
        let password = password.clone();
        let worker = thread::Builder::new()
            .name(format!("client-{i}"))
            .stack_size(256 * 1024)
            .spawn(move || client_loop(addr, &user, &password, retrs, window_start, window_end))
            .map_err(|e| format!("cannot start client thread {i}: {e}"))?;
        workers.push(worker);
    }
    sleep_until(window_start);
    let cpu = CpuClock::now();
    sleep_until(window_end);
    let (client_cores, busy_cores) = cpu.cores_since();

    let mut total = ClientTotals::default();
    for worker in workers {
        let t = worker
            .join()
            .map_err(|_| "a client thread panicked".to_string())?;
        total.sessions += t.sessions;
        total.commands += t.commands;
        total.payload += t.payload;
        total.latencies_ms.extend(t.latencies_ms);
        for (k, v) in t.errors {
            *total.errors.entry(k).or_insert(0) += v;
        }
    }
    sort(&mut total.latencies_ms);
    let rate = total.sessions as f64 / seconds;
    eprintln!(
        "sessions: {clients} clients, {rate:.1} sessions/s, p50 {:.2} ms, p99 {:.2} ms, errors {:?}",
        percentile(&total.latencies_ms, 50.0),
        percentile(&total.latencies_ms, 99.0),
        total.errors
    );
    let mut json = Json::new("sessions");
    json.common(args).int("clients", clients as u64);
    if retrs != ALL_MESSAGES {
        json.int("retrs", retrs as u64);
    }
    Ok(json
        .number("seconds", seconds)
        .int("sessions", total.sessions)
        .number("sessions_per_s", rate)
        .number("commands_per_s", total.commands as f64 / seconds)
        .number("payload_mb_per_s", total.payload as f64 / seconds / 1e6)
        .number("session_p50_ms", percentile(&total.latencies_ms, 50.0))
        .number("session_p99_ms", percentile(&total.latencies_ms, 99.0))
        .counts("errors", &total.errors)
        .number("client_cpu_cores", client_cores)
        .number("system_busy_cores", busy_cores)
        .finish())
}
// ANCHOR_END: sessions

/// The default of `--retrs`: every message, however many the maildrop has (and the limit).
const ALL_MESSAGES: usize = 1_000_000;

#[derive(Default)]
struct ClientTotals {
    sessions: u64,
    commands: u64,
    payload: u64,
    latencies_ms: Vec<f64>,
    errors: BTreeMap<&'static str, u64>,
}

/// One client's sessions, one after another, until the window closes.
fn client_loop(
    addr: SocketAddr,
    user: &str,
    password: &str,
    retrs: usize,
    window_start: Instant,
    window_end: Instant,
) -> ClientTotals {
    let mut totals = ClientTotals::default();
    let mut body = Body::default();
    // The wire length of each message's first retrieval, checked in full once (check_body);
    // later retrievals must arrive with the same length.
    let mut known: Vec<usize> = Vec::new();
    let mut shown = 0;
    // Bounded: no client on two cores completes a million sessions in 600 s.
    for _ in 0..1_000_000 {
        let began = Instant::now();
        if began >= window_end {
            break;
        }
        let result = one_session(addr, user, password, retrs, &mut body, &mut known);
        let ended = Instant::now();
        let counted = ended >= window_start && ended <= window_end;
        match result {
            Ok((commands, payload)) if counted => {
                totals.sessions += 1;
                totals.commands += commands;
                totals.payload += payload;
                totals
                    .latencies_ms
                    .push((ended - began).as_secs_f64() * 1000.0);
            }
            Ok(_) => {}
            Err(failure) => {
                if counted {
                    *totals.errors.entry(failure.kind()).or_insert(0) += 1;
                }
                if shown < 3 {
                    shown += 1;
                    eprintln!("sessions: {user}: {failure}");
                }
                // Do not spin on a server that refuses: let it breathe.
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
    totals
}

// ANCHOR: one_session
/// A whole session as a mail client does it: greeting, USER, PASS, STAT, LIST, UIDL, RETR of
/// every message (or of the first `retrs`), QUIT, and the server closing. Returns (commands
/// sent, payload octets).
fn one_session(
    addr: SocketAddr,
    user: &str,
    password: &str,
    retrs: usize,
    body: &mut Body,
    known: &mut Vec<usize>,
) -> Result<(u64, u64), Failure> {
    let mut conn = Pop3::login(addr, user, password)?;
    let stat = conn.command("STAT")?;
    let (count, size) = parse_stat(&stat)?;

    conn.multiline("LIST", body)?;
    let sizes = listing(body.wire()).map_err(Failure::Protocol)?;
    let listed: u64 = sizes
        .iter()
        .map(|(_, s)| s.trim().parse::<u64>().unwrap_or(0))
        .sum();
    if sizes.len() as u64 != count || listed != size {
        return Err(Failure::Protocol(format!(
            "STAT says {count} messages, {size} octets; LIST says {}, {listed}",
            sizes.len()
        )));
    }
    conn.multiline("UIDL", body)?;
    let uids = listing(body.wire()).map_err(Failure::Protocol)?;
    if uids.len() as u64 != count {
        return Err(Failure::Protocol(format!(
            "UIDL lists {} messages, STAT {count}",
            uids.len()
        )));
    }

    let mut payload = 0;
    let mut retrieved = 0;
    for (i, (n, listed_size)) in sizes.iter().enumerate().take(retrs) {
        let listed_size: u64 = listed_size.trim().parse().unwrap_or(0);
        match known.get(i) {
            Some(&len) => {
                let (_, wire_len) = conn.skim(&format!("RETR {n}"), &mut body.scratch)?;
                if len != wire_len {
                    return Err(Failure::Protocol(format!(
                        "message {n}: {wire_len} octets on the wire, {len} the first time"
                    )));
                }
            }
            None => {
                conn.multiline(&format!("RETR {n}"), body)?;
                let wire_len = body.wire().len();
                let kept = check_body(body.wire()).map_err(Failure::Protocol)?;
                if kept != listed_size {
                    return Err(Failure::Protocol(format!(
                        "message {n}: LIST says {listed_size} octets, RETR gave {kept}"
                    )));
                }
                known.push(wire_len);
            }
        }
        payload += listed_size;
        retrieved += 1;
    }
    conn.command("QUIT")?;
    conn.expect_close()?;
    Ok((6 + retrieved, payload))
}
// ANCHOR_END: one_session

/// `+OK 20 962102` → (20, 962102).
fn parse_stat(text: &str) -> Result<(u64, u64), Failure> {
    let mut words = text.split_whitespace().map(str::parse::<u64>);
    match (words.next(), words.next()) {
        (Some(Ok(count)), Some(Ok(size))) => Ok((count, size)),
        _ => Err(Failure::Protocol(format!("bad STAT reply {text:?}"))),
    }
}

/// `retr`: one session, RETR of message 1 again and again. The first copy is checked in full
/// (CRLF everywhere, stuffing, the size LIST gave); later ones must have the same wire length.
pub fn retr(args: &Args) -> Result<String, String> {
    let addr = args.addr("addr")?;
    let user = args.text("user", Some("big"))?;
    let password = args.text("password", Some("benchpass"))?;
    let seconds: f64 = args.number("seconds", 8.0, 600.0)?;
    let max_count: u64 = args.number("count", 100_000, 10_000_000)?;
    let min_count: u64 = args.number("min-count", 3, 1000)?;
    let fail = |f: Failure| format!("{user}: {f}");

    let mut conn = Pop3::login(addr, &user, &password).map_err(fail)?;
    let size: u64 = conn
        .command("LIST 1")
        .map_err(fail)?
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("bad LIST 1 reply")?;
    let mut body = Body::default();
    // One retrieval that is not timed: it warms the page cache and sizes the buffer.
    conn.multiline("RETR 1", &mut body).map_err(fail)?;
    let kept = check_body(body.wire())?;
    if kept != size {
        return Err(format!("LIST says {size} octets, RETR gave {kept}"));
    }
    let wire_len = body.wire().len();

    let cpu = CpuClock::now();
    let start = Instant::now();
    let mut times_ms = Vec::new();
    let deadline = Duration::from_secs_f64(seconds);
    while (times_ms.len() as u64) < max_count
        && (start.elapsed() < deadline || (times_ms.len() as u64) < min_count)
        // A hard stop, even below the minimum count.
        && start.elapsed() < deadline * 4
    {
        let t = Instant::now();
        let (_, got) = conn.skim("RETR 1", &mut body.scratch).map_err(fail)?;
        if got != wire_len {
            return Err(format!(
                "{got} octets on the wire, {wire_len} the first time"
            ));
        }
        times_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let (client_cores, busy_cores) = cpu.cores_since();
    let _ = conn.command("QUIT");
    let count = times_ms.len();
    let mb_s = (size * count as u64) as f64 / elapsed / 1e6;
    sort(&mut times_ms);
    eprintln!("retr: {user}, {size} octets x {count}: {mb_s:.0} MB/s");
    Ok(Json::new("retr")
        .common(args)
        .text("user", &user)
        .int("octets", size)
        .int("wire_octets", wire_len as u64)
        .int("count", count as u64)
        .number("mb_per_s", mb_s)
        .number("retr_p50_ms", percentile(&times_ms, 50.0))
        .number("client_cpu_cores", client_cores)
        .number("system_busy_cores", busy_cores)
        .finish())
}

/// `latency`: one logged-in session, NOOP and its `+OK` back and forth.
pub fn latency(args: &Args) -> Result<String, String> {
    let addr = args.addr("addr")?;
    let user = args.text("user", Some("u0001"))?;
    let password = args.text("password", Some("benchpass"))?;
    let seconds: f64 = args.number("seconds", 5.0, 600.0)?;
    let count: usize = args.number("count", 200_000, 10_000_000)?;
    let warmup: usize = args.number("warmup", 2000, 1_000_000)?;
    let fail = |f: Failure| format!("{user}: {f}");

    let mut conn = Pop3::login(addr, &user, &password).map_err(fail)?;
    for _ in 0..warmup {
        conn.command("NOOP").map_err(fail)?;
    }
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let cpu = CpuClock::now();
    let mut us = Vec::with_capacity(count.min(1_000_000));
    while us.len() < count && Instant::now() < deadline {
        let t = Instant::now();
        conn.command("NOOP").map_err(fail)?;
        us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let (client_cores, busy_cores) = cpu.cores_since();
    let _ = conn.command("QUIT");
    sort(&mut us);
    let (p50, p99) = (percentile(&us, 50.0), percentile(&us, 99.0));
    eprintln!(
        "latency: {} NOOPs, p50 {p50:.1} µs, p99 {p99:.1} µs",
        us.len()
    );
    Ok(Json::new("latency")
        .common(args)
        .int("round_trips", us.len() as u64)
        .number("p50_us", p50)
        .number("p99_us", p99)
        .number("p999_us", percentile(&us, 99.9))
        .number("client_cpu_cores", client_cores)
        .number("system_busy_cores", busy_cores)
        .finish())
}

/// `idle`: N logged-in sessions (each its own user) held open; the server's memory from /proc
/// before and while they are held. KiB per session = (PSS while held − PSS before) / N.
pub fn idle(args: &Args) -> Result<String, String> {
    let addr = args.addr("addr")?;
    let wanted: usize = args.number("sessions", 1000, 20_000)?;
    let hold: f64 = args.number("hold", 10.0, 600.0)?;
    let pid: u32 = args.number("server-pid", 0, u32::MAX)?;
    if pid == 0 {
        return Err("--server-pid is required".to_string());
    }
    let prefix = args.text("users-prefix", Some("u"))?;
    let password = args.text("password", Some("benchpass"))?;
    let workers: usize = args.number("workers", 32, 256)?;
    let open_limit = Duration::from_secs_f64(args.number("open-seconds", 300.0, 600.0)?);

    let before = report::tree_memory(pid);
    let kernel_before = report::kernel_kib();
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(Mutex::new(BTreeMap::<&'static str, u64>::new()));
    let started = Instant::now();
    let mut handles = Vec::new();
    for w in 0..workers {
        let (next, errors, prefix, password) = (
            Arc::clone(&next),
            Arc::clone(&errors),
            prefix.clone(),
            password.clone(),
        );
        let handle = thread::Builder::new()
            .name(format!("opener-{w}"))
            .spawn(move || {
                let mut held = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= wanted || started.elapsed() > open_limit {
                        return held;
                    }
                    match Pop3::login(addr, &user_name(&prefix, i), &password) {
                        Ok(conn) => held.push(conn),
                        Err(f) => {
                            let mut errors = errors.lock().unwrap_or_else(PoisonError::into_inner);
                            if errors.is_empty() {
                                eprintln!("idle: session {}: {f}", i + 1);
                            }
                            *errors.entry(f.kind()).or_insert(0) += 1;
                        }
                    }
                }
            })
            .map_err(|e| format!("cannot start opener thread: {e}"))?;
        handles.push(handle);
    }
    let mut held: Vec<Pop3> = Vec::with_capacity(wanted);
    for h in handles {
        held.extend(h.join().map_err(|_| "an opener thread panicked")?);
    }
    let open_secs = started.elapsed().as_secs_f64();
    let established = held.len();
    eprintln!("idle: {established} sessions open after {open_secs:.1} s; holding {hold} s");

    // Let the server's threads settle (stacks touched, buffers allocated) before reading.
    thread::sleep(Duration::from_secs(2));
    let during = report::tree_memory(pid);
    let kernel_during = report::kernel_kib();
    thread::sleep(Duration::from_secs_f64(hold));

    // Are they all still there? One NOOP each, timed.
    let mut alive = 0u64;
    let mut noop_us = Vec::with_capacity(held.len());
    for conn in &mut held {
        let t = Instant::now();
        if conn.command("NOOP").is_ok() {
            alive += 1;
            noop_us.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    for conn in &mut held {
        let _ = conn.send("QUIT");
    }
    drop(held);
    sort(&mut noop_us);
    let n = established.max(1) as f64;
    let per_session = (during.pss_kib as f64 - before.pss_kib as f64) / n;
    let kernel_per_session = (kernel_during as f64 - kernel_before as f64) / n;
    let errors = errors
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    eprintln!(
        "idle: {established}/{wanted} held, {alive} alive after {hold} s; PSS {} → {} KiB, \
         {per_session:.1} KiB per session; errors {errors:?}",
        before.pss_kib, during.pss_kib
    );
    Ok(Json::new("idle")
        .common(args)
        .int("wanted", wanted as u64)
        .int("established", established as u64)
        .int("alive_after_hold", alive)
        .number("logins_per_s", established as f64 / open_secs)
        .int("pss_before_kib", before.pss_kib)
        .int("pss_during_kib", during.pss_kib)
        .number("pss_per_session_kib", per_session)
        .number(
            "rss_per_session_kib",
            (during.rss_kib as f64 - before.rss_kib as f64) / n,
        )
        .number("kernel_per_session_kib", kernel_per_session)
        .int("server_processes", during.processes)
        .int("server_threads", during.threads)
        .number("noop_p50_us", percentile(&noop_us, 50.0))
        .number("noop_p99_us", percentile(&noop_us, 99.0))
        .counts("errors", &errors)
        .finish())
}

/// `login`: greeting → USER → PASS (+OK) → STAT, timed. First the very first login as things
/// are, then `--cold` logins each after dropping the page cache (root only), then `--repeat`
/// warm ones.
pub fn login(args: &Args) -> Result<String, String> {
    let addr = args.addr("addr")?;
    let user = args.text("user", None)?;
    let password = args.text("password", Some("benchpass"))?;
    let cold: usize = args.number("cold", 0, 20)?;
    let repeat: usize = args.number("repeat", 10, 1000)?;
    let limit = Duration::from_secs_f64(args.number("seconds", 120.0, 600.0)?);
    let started = Instant::now();

    let first = timed_login(addr, &user, &password)?;
    let mut cold_ms = Vec::new();
    let mut cold_note = "";
    for _ in 0..cold {
        if started.elapsed() > limit {
            break;
        }
        if let Err(e) = drop_caches() {
            cold_note = "cannot drop the page cache (needs root)";
            eprintln!("login: {cold_note}: {e}");
            break;
        }
        cold_ms.push(timed_login(addr, &user, &password)?.0);
    }
    let mut warm_ms = Vec::new();
    let mut pass_ms = Vec::new();
    for _ in 0..repeat {
        if started.elapsed() > limit {
            break;
        }
        let (total, pass, _) = timed_login(addr, &user, &password)?;
        warm_ms.push(total);
        pass_ms.push(pass);
    }
    let mut cold_sorted = cold_ms.clone();
    sort(&mut cold_sorted);
    sort(&mut warm_ms);
    sort(&mut pass_ms);
    eprintln!(
        "login: {user} ({} messages): first {:.1} ms, cold {:?} ms, warm p50 {:.2} ms",
        first.2,
        first.0,
        cold_ms,
        percentile(&warm_ms, 50.0)
    );
    Ok(Json::new("login")
        .common(args)
        .text("user", &user)
        .int("messages", first.2)
        .number("first_ms", first.0)
        .list("cold_ms", &cold_ms)
        .number("cold_p50_ms", percentile(&cold_sorted, 50.0))
        .text("cold_note", cold_note)
        .int("warm_count", warm_ms.len() as u64)
        .number("warm_p50_ms", percentile(&warm_ms, 50.0))
        .number("warm_min_ms", warm_ms.first().copied().unwrap_or(f64::NAN))
        .number("warm_max_ms", warm_ms.last().copied().unwrap_or(f64::NAN))
        .number("warm_pass_p50_ms", percentile(&pass_ms, 50.0))
        .finish())
}

/// One timed login: (greeting to STAT's +OK in ms, PASS alone in ms, messages).
fn timed_login(addr: SocketAddr, user: &str, password: &str) -> Result<(f64, f64, u64), String> {
    let fail = |f: Failure| format!("{user}: {f}");
    let t = Instant::now();
    let mut conn = Pop3::connect(addr).map_err(fail)?;
    conn.command(&format!("USER {user}")).map_err(fail)?;
    let p = Instant::now();
    conn.command(&format!("PASS {password}")).map_err(fail)?;
    let pass_ms = p.elapsed().as_secs_f64() * 1000.0;
    let (count, _) = parse_stat(&conn.command("STAT").map_err(fail)?).map_err(fail)?;
    let total_ms = t.elapsed().as_secs_f64() * 1000.0;
    conn.command("QUIT").map_err(fail)?;
    // The next login must find the maildrop unlocked.
    conn.expect_close().map_err(fail)?;
    Ok((total_ms, pass_ms, count))
}

/// Writes dirty pages out, then asks the kernel to forget clean ones (page cache, dentries and
/// inodes): the next login reads the maildrop from the disk.
fn drop_caches() -> std::io::Result<()> {
    std::process::Command::new("sync").status()?;
    std::fs::write("/proc/sys/vm/drop_caches", "3")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    /// A scripted server for one session over a real socket: two messages, every command
    /// answered, and the command lines it received returned when the client has gone.
    fn scripted_server() -> (SocketAddr, thread::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        let server = thread::spawn(move || {
            let (stream, _) = listener.accept().expect("accept");
            let mut input = BufReader::new(stream.try_clone().expect("clone"));
            let mut out = stream;
            let mut seen = Vec::new();
            out.write_all(b"+OK ready\r\n").expect("greeting");
            let mut line = String::new();
            while input.read_line(&mut line).expect("read") > 0 {
                let command = line.trim_end().to_string();
                line.clear();
                let reply: &[u8] = match command.as_str() {
                    "STAT" => b"+OK 2 8\r\n",
                    "LIST" => b"+OK\r\n1 4\r\n2 4\r\n.\r\n",
                    "UIDL" => b"+OK\r\n1 a\r\n2 b\r\n.\r\n",
                    "RETR 1" | "RETR 2" => b"+OK 4 octets\r\nab\r\n.\r\n",
                    _ => b"+OK\r\n",
                };
                out.write_all(reply).expect("reply");
                let quit = command == "QUIT";
                seen.push(command);
                if quit {
                    break;
                }
            }
            seen
        });
        (addr, server)
    }

    #[test]
    fn retrs_limits_the_retrievals_of_a_session_and_its_command_count() {
        for (retrs, retrieved) in [
            (0, vec![]),
            (1, vec!["RETR 1"]),
            (ALL_MESSAGES, vec!["RETR 1", "RETR 2"]),
        ] {
            let (addr, server) = scripted_server();
            let (mut body, mut known) = (Body::default(), Vec::new());
            let (commands, payload) =
                one_session(addr, "u0001", "pw", retrs, &mut body, &mut known).expect("session");
            let seen = server.join().expect("server");
            let retr: Vec<&str> = seen
                .iter()
                .map(String::as_str)
                .filter(|c| c.starts_with("RETR"))
                .collect();
            assert_eq!(retr, retrieved, "--retrs {retrs}");
            assert_eq!(commands, 6 + retrieved.len() as u64);
            assert_eq!(payload, 4 * retrieved.len() as u64);
            assert_eq!(seen.last().map(String::as_str), Some("QUIT"));
        }
    }
}
