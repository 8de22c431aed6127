//! Checks the book's classroom exercises (book/src/exercises.md) against a running server: it
//! drives the session an exercise is about and says what is right, what is wrong, and where to
//! look. Nothing but the standard library, like examples/client.rs.
//!
//! ```text
//! cargo run                                 # in one terminal: the server (with your change)
//! cargo run --example check -- N [--server HOST:PORT] [--user NAME --pass PASSWORD] [...]
//!
//! check -- 1 S1 S2 S3 S4 S5 S6      your predicted LIST sizes of alice's six messages
//! check -- 6 [--idle-timeout 5] SLOW FAST
//!                                   what you predict for the slow and the fast trickle:
//!                                   `answer` (the server answers the line) or `close`
//! check -- 8 [--wait]               against a server started with --login-delay 3; --wait also
//!                                   checks a login after the delay
//! ```
//!
//! The last line printed is `solved` or `not yet`. Exit status: 0 solved, 1 not yet, 2 the check
//! could not be made (no server answers, bad arguments).
//!
//! Exercise 9 has no checker: its questions are about reading code and the server's trace, which
//! only a person can compare.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

/// How long to wait to connect and for each reply before giving up on the server.
const TIMEOUT: Duration = Duration::from_secs(10);

/// What the command line asked for.
struct Options {
    exercise: u32,
    server: String,
    /// Overrides the exercise's demo user (say, `student07` on a classroom server).
    user: Option<(String, String)>,
    /// The server's `--idle-timeout`, for exercise 6.
    idle_timeout: Duration,
    /// Exercise 8: also wait out the login delay and log in again.
    wait: bool,
    /// The student's predictions (exercises 1 and 6).
    predictions: Vec<String>,
}

fn main() -> ExitCode {
    let options = match parse(std::env::args().skip(1).collect()) {
        Ok(options) => options,
        Err(why) => {
            eprintln!("check: {why}");
            eprintln!("usage: cargo run --example check -- N [--server HOST:PORT] [...]");
            eprintln!("       (see the top of examples/check.rs)");
            return ExitCode::from(2);
        }
    };
    let mut report = Report::default();
    // ANCHOR: dispatch
    let checked = match options.exercise {
        1 => predict_the_sizes(&options, &mut report),
        2 => change_a_reply(&options, &mut report),
        3 => break_byte_stuffing(&options, &mut report),
        4 => delete_at_once(&options, &mut report),
        5 => add_last(&options, &mut report),
        6 => idle_timer(&options, &mut report),
        7 => too_many_sessions(&options, &mut report),
        8 => login_delay(&options, &mut report),
        9 => Err(
            "exercise 9 has no checker: compare the traces and answer its questions \
                  yourself (book/src/exercises.md says why)"
                .into(),
        ),
        n => Err(format!(
            "there is no exercise {n}: the exercises are 1 to 9"
        )),
    };
    // ANCHOR_END: dispatch
    if let Err(why) = checked {
        eprintln!("check: {why}");
        return ExitCode::from(2);
    }
    report.verdict()
}

fn parse(args: Vec<String>) -> Result<Options, String> {
    let mut options = Options {
        exercise: 0,
        server: "127.0.0.1:1110".into(),
        user: None,
        idle_timeout: Duration::from_secs(5),
        wait: false,
        predictions: Vec::new(),
    };
    let mut exercise = None;
    let (mut user, mut pass) = (None, None);
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| args.next().ok_or(format!("{flag} needs a value"));
        match arg.as_str() {
            "--server" => options.server = value("--server")?,
            "--user" => user = Some(value("--user")?),
            "--pass" => pass = Some(value("--pass")?),
            "--idle-timeout" => {
                let secs: u64 = value("--idle-timeout")?
                    .parse()
                    .map_err(|_| "--idle-timeout takes whole seconds")?;
                if secs == 0 {
                    return Err("--idle-timeout must be at least 1 second".into());
                }
                options.idle_timeout = Duration::from_secs(secs);
            }
            "--wait" => options.wait = true,
            flag if flag.starts_with("--") => return Err(format!("unknown option {flag}")),
            word if exercise.is_none() => {
                exercise = Some(
                    word.parse()
                        .map_err(|_| format!("{word:?} is not an exercise number"))?,
                )
            }
            word => options.predictions.push(word.to_string()),
        }
    }
    options.exercise = exercise.ok_or("which exercise? give its number, 1 to 9")?;
    options.user = match (user, pass) {
        (Some(user), Some(pass)) => Some((user, pass)),
        (None, None) => None,
        _ => return Err("--user and --pass go together".into()),
    };
    Ok(options)
}

/// What a check found, printed as it goes: each finding is right or wrong, and a wrong one comes
/// with a hint.
#[derive(Default)]
struct Report {
    wrong: usize,
    /// Hints already given, so that a mistake seen three times is explained once.
    hints: Vec<String>,
}

impl Report {
    fn right(&mut self, what: &str) {
        println!("  right  {what}");
    }

    fn wrong(&mut self, what: &str, hint: &str) {
        self.wrong += 1;
        println!("  WRONG  {what}");
        if !self.hints.iter().any(|h| h == hint) {
            println!("         hint: {hint}");
            self.hints.push(hint.to_string());
        }
    }

    /// Something worth seeing that decides nothing.
    fn note(&mut self, what: &str) {
        println!("  note   {what}");
    }

    fn verdict(&self) -> ExitCode {
        if self.wrong == 0 {
            println!("solved");
            ExitCode::SUCCESS
        } else {
            let things = if self.wrong == 1 { "thing" } else { "things" };
            println!("not yet ({} {things} to change)", self.wrong);
            ExitCode::from(1)
        }
    }
}

// ANCHOR: exercise_1
/// Exercise 1: the sizes the student predicted against what `LIST` says. A wrong guess that
/// matches a typical mistake (LF counted as one octet, the missing last line end, stuffing dots)
/// gets a hint about that mistake, never the right number.
fn predict_the_sizes(options: &Options, report: &mut Report) -> Result<(), String> {
    println!("exercise 1: predict the sizes");
    let predicted: Vec<u64> = options
        .predictions
        .iter()
        .map(|p| {
            p.parse()
                .map_err(|_| format!("{p:?} is not a size in octets"))
        })
        .collect::<Result<_, _>>()?;
    if predicted.is_empty() {
        return Err("give your predicted sizes, one per message: check -- 1 S1 S2 S3 ...".into());
    }
    let (user, pass) = user_or(options, "alice", "wonderland");
    let mut pop = login(&options.server, &user, &pass)?;
    let listing = pop.scan_listing()?;
    if predicted.len() != listing.len() {
        report.wrong(
            &format!(
                "you gave {} sizes, but {user} has {} messages",
                predicted.len(),
                listing.len()
            ),
            "one size per message, in the order of their numbers",
        );
    }
    for (&(number, size), &guess) in listing.iter().zip(&predicted) {
        if guess == size {
            report.right(&format!("message {number}: {guess} octets"));
            continue;
        }
        // What RETR sends, to name the mistake the guess most likely holds.
        pop.command(&format!("RETR {number}"))?;
        let lines = pop.multi_line()?;
        let line_ends = lines.len() as u64;
        let stuffed = lines.iter().filter(|l| l.starts_with(b"..")).count() as u64;
        let hint = if guess + line_ends == size {
            "you counted each line end as one octet: RETR sends every line end as CRLF, two \
             octets (RFC 1939 §3, §11), and LIST counts what RETR sends"
        } else if guess + 2 == size {
            "the file's last line has no line end: RETR adds CRLF so that the final \".\" \
             starts a line of its own, and LIST counts it"
        } else if guess == size + stuffed {
            "you counted the stuffing dots: they are not part of the message, and RFC 1939 §5 \
             leaves them out of the size"
        } else {
            "compare `wc -c` and `wc -l` of the file, and read src/protocol.rs, fn write_message"
        };
        report.wrong(&format!("message {number}: not {guess} octets"), hint);
    }
    pop.quit()
}
// ANCHOR_END: exercise_1

// ANCHOR: exercise_2
/// Exercise 2: `NOOP` answers `+OK still here`, and `STAT` still ends after its numbers.
fn change_a_reply(options: &Options, report: &mut Report) -> Result<(), String> {
    println!("exercise 2: NOOP says \"still here\"");
    let (user, pass) = user_or(options, "alice", "wonderland");
    let mut pop = login(&options.server, &user, &pass)?;
    let noop = pop.command("NOOP")?;
    if noop == "+OK still here" {
        report.right("NOOP answers \"+OK still here\"");
    } else {
        report.wrong(
            &format!("NOOP answers {noop:?}, not \"+OK still here\""),
            "find the \"NOOP\" arm of the match in src/transaction.rs, fn handle",
        );
    }
    let stat = pop.command("STAT")?;
    let words: Vec<&str> = stat.split(' ').collect();
    if words.len() == 3 && words[0] == "+OK" && words[1..].iter().all(|w| w.parse::<u64>().is_ok())
    {
        report.right(&format!(
            "STAT still answers {stat:?}, nothing after the numbers"
        ));
    } else {
        report.wrong(
            &format!("STAT answers {stat:?}"),
            "RFC 1939 §5 fixes STAT's reply to \"+OK nn mm\" so that clients can parse it: \
             leave fn stat alone",
        );
    }
    pop.quit()
}
// ANCHOR_END: exercise_2

// ANCHOR: exercise_3
/// Exercise 3: with byte-stuffing off, the lone `.` line inside alice's message 2 ends the reply
/// early, and what follows it is read as the answer to the next command.
fn break_byte_stuffing(options: &Options, report: &mut Report) -> Result<(), String> {
    println!("exercise 3: break byte-stuffing");
    let (user, pass) = user_or(options, "alice", "wonderland");
    let mut pop = login(&options.server, &user, &pass)?;
    let listed: u64 = match pop.command("LIST 2")?.split(' ').nth(2) {
        Some(size) => size.parse().map_err(|_| "LIST 2: no size in the reply")?,
        None => return Err("LIST 2: no size in the reply (is message 2 there?)".into()),
    };
    let retr = pop.command("RETR 2")?;
    if !retr.starts_with("+OK") {
        return Err(format!("RETR 2 answered {retr:?}"));
    }
    let received: u64 = pop
        .multi_line()?
        .iter()
        .map(|l| unstuff(l).len() as u64)
        .sum();
    if received < listed {
        report.right(&format!(
            "RETR 2 ended after {received} of the {listed} octets LIST 2 promised: the line \
             holding only \".\" went out unstuffed and looked like the end"
        ));
    } else {
        report.wrong(
            &format!("RETR 2 sent all {listed} octets: byte-stuffing still works"),
            "make fn stuffed in src/protocol.rs answer false: it decides which message lines \
             get the extra \".\"",
        );
    }
    // The reply to STAT is the next line on the wire, whatever it is.
    pop.send("STAT")?;
    let next = pop.line()?;
    if next.starts_with("+OK") || next.starts_with("-ERR") {
        report.note(&format!(
            "STAT answered {next:?}: client and server are in step"
        ));
    } else {
        report.note(&format!(
            "the \"reply\" to STAT was {next:?}: the rest of message 2, so from here on every \
             reply is read as the answer to the wrong command"
        ));
    }
    // No QUIT: the client is out of step, and nothing was marked, so nothing can change.
    Ok(())
}
// ANCHOR_END: exercise_3

// ANCHOR: exercise_4
/// Exercise 4: bob's message 1 is deleted and the connection dropped without QUIT. It is gone
/// at the next login only if DELE removed it at once. The check puts nothing back: restart the
/// server for a fresh demo.
fn delete_at_once(options: &Options, report: &mut Report) -> Result<(), String> {
    println!("exercise 4: delete at once");
    let (user, pass) = user_or(options, "bob", "builder");
    let mut pop = login(&options.server, &user, &pass)?;
    let before = pop.unique_ids()?;
    let Some(first) = before.first().cloned() else {
        return Err(format!(
            "{user}'s maildrop is empty: restart the server for a fresh demo"
        ));
    };
    report.note(&format!("DELE 1 answers {:?}", pop.command("DELE 1")?));
    report.note(&format!(
        "then LIST 1 answers {:?} and RETR 1 answers {:?}: which is right? (RFC 1939 §5)",
        pop.command("LIST 1")?,
        pop.first_line_of("RETR 1")?
    ));
    pop.drop_connection();
    println!("  ...    connection dropped without QUIT; logging in again");
    let mut pop = login(&options.server, &user, &pass)?;
    let after = pop.unique_ids()?;
    if after.contains(&first) {
        report.wrong(
            &format!("message 1 (unique-id {first}) is still there: DELE only marked it"),
            "this is what RFC 1939 §6 asks for, and the exercise asks you to break it: make \
             fn dele in src/transaction.rs call self.maildrop.remove(index)",
        );
    } else {
        report.right(&format!(
            "message 1 (unique-id {first}) is gone although nobody sent QUIT: DELE removed it at once, \
             against RFC 1939 §6, which says a session that ends without QUIT removes nothing"
        ));
    }
    pop.quit()
}
// ANCHOR_END: exercise_4

// ANCHOR: exercise_5
/// Exercise 5: `LAST` before login, after two RETRs, and after RSET.
fn add_last(options: &Options, report: &mut Report) -> Result<(), String> {
    println!("exercise 5: add LAST");
    let (mut pop, _) = Pop3::connect(&options.server)?;
    let early = pop.command("LAST")?;
    if early.starts_with("-ERR") && early.contains("TRANSACTION") {
        report.right(&format!("before login, LAST answers {early:?}"));
    } else {
        report.wrong(
            &format!("before login, LAST answers {early:?}"),
            "it should say that LAST is a TRANSACTION command: see the list at the top of \
             src/authorization.rs",
        );
    }
    pop.quit()?;
    let (user, pass) = user_or(options, "alice", "wonderland");
    let mut pop = login(&options.server, &user, &pass)?;
    let mut expect_last = |pop: &mut Pop3, after: &str, want: &str| -> Result<(), String> {
        let got = pop.command("LAST")?;
        let number = got.strip_prefix("+OK ").and_then(|t| t.split(' ').next());
        if number == Some(want) {
            report.right(&format!("{after}, LAST answers {got:?}"));
        } else {
            report.wrong(
                &format!("{after}, LAST answers {got:?}, not \"+OK {want}\""),
                "one field in Transaction, one arm in fn handle, a fn last, and one line each \
                 in fn retr and fn rset (src/transaction.rs)",
            );
        }
        Ok(())
    };
    expect_last(&mut pop, "at first", "0")?;
    for number in [3, 1] {
        pop.first_line_of(&format!("RETR {number}"))?;
    }
    expect_last(&mut pop, "after RETR 3 and RETR 1", "3")?;
    pop.command("RSET")?;
    expect_last(&mut pop, "after RSET", "0")?;
    pop.quit()
}
// ANCHOR_END: exercise_5

// ANCHOR: exercise_6
/// Exercise 6: a NOOP trickled a letter at a time, slowly (gaps of 0.6 × the idle time, so the
/// line takes longer than the idle time) and fast (gaps of 0.1 ×). The student predicts for each
/// whether the server answers or closes; the check compares with what the server does.
fn idle_timer(options: &Options, report: &mut Report) -> Result<(), String> {
    println!("exercise 6: does the idle timer count commands or bytes?");
    let [slow, fast] = options.predictions.as_slice() else {
        return Err(
            "give two predictions, for the slow and the fast trickle, each `answer` or \
                    `close`: check -- 6 [--idle-timeout 5] SLOW FAST"
                .into(),
        );
    };
    for p in [slow, fast] {
        if p != "answer" && p != "close" {
            return Err(format!("{p:?}: a prediction is `answer` or `close`"));
        }
    }
    let idle = options.idle_timeout;
    // The fast trickle first: when the connection closes after its reply shows that the server
    // runs with this idle time at all.
    let seen = trickle(&options.server, idle.mul_f64(0.1), idle)?;
    match seen.closed_after_line {
        Some(t) if t < idle.mul_f64(2.0) => report.note(&format!(
            "fast trickle: the server closed the connection {:.1} s after the line end",
            t.as_secs_f64()
        )),
        _ => {
            return Err(format!(
                "the server kept an idle connection open for more than {:.0} s: start it with \
                 --idle-timeout {} (or tell the check the right --idle-timeout)",
                idle.mul_f64(2.0).as_secs_f64(),
                idle.as_secs()
            ));
        }
    }
    let slow_seen = trickle(&options.server, idle.mul_f64(0.6), idle)?;
    for (name, prediction, seen) in [("slow", slow, &slow_seen), ("fast", fast, &seen)] {
        let what = match &seen.reply {
            Some(reply) => format!("the server answered {reply:?}"),
            None => "the server closed the connection without an answer".to_string(),
        };
        if (prediction == "answer") == seen.reply.is_some() {
            report.right(&format!("{name} trickle: {what}, as you predicted"));
        } else {
            report.wrong(
                &format!("{name} trickle: you predicted `{prediction}`, but {what}"),
                "read IdleTimer in src/server.rs: when does a wait begin, and does a byte in \
                 the middle of a line start a new one?",
            );
        }
    }
    Ok(())
}

/// What the server did with one trickled `NOOP`.
struct Trickled {
    /// Its reply to the line, if it gave one.
    reply: Option<String>,
    /// How long after the line end the connection closed (if it closed in time).
    closed_after_line: Option<Duration>,
}

/// Sends N, O, O, P and CRLF with `gap` between them (and before the first), then waits for the
/// connection to close, at most three idle times.
fn trickle(server: &str, gap: Duration, idle: Duration) -> Result<Trickled, String> {
    let (pop, _) = Pop3::connect(server)?;
    let mut stream = pop
        .reader
        .get_ref()
        .try_clone()
        .map_err(|e| e.to_string())?;
    // A reader thread notes the reply and the moment of the close while the letters go out.
    // (Long enough for a server that counts bytes to answer the slow trickle too.)
    let reader = thread::spawn(move || {
        let mut pop = pop;
        let _ = pop.reader.get_ref().set_read_timeout(Some(idle * 5));
        let reply = pop.line().ok();
        // A close is the end of input or a reset; a timeout is not one.
        let closed = match pop.reader.read(&mut [0; 64]) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        };
        (reply, closed.then(Instant::now))
    });
    let mut line_end = Instant::now();
    for piece in ["N", "O", "O", "P", "\r\n"] {
        thread::sleep(gap);
        if reader.is_finished() {
            // Closed before the line was complete: the rest has nowhere to go.
            break;
        }
        let _ = stream.write_all(piece.as_bytes());
        line_end = Instant::now();
    }
    let (reply, closed) = reader
        .join()
        .map_err(|_| "the reader thread failed".to_string())?;
    let closed_after_line = match (&reply, closed) {
        (Some(_), Some(at)) => Some(at.saturating_duration_since(line_end)),
        _ => None,
    };
    Ok(Trickled {
        reply,
        closed_after_line,
    })
}
// ANCHOR_END: exercise_6

// ANCHOR: exercise_7
/// Exercise 7: against a server started with `--max-sessions 2`, the third session is refused
/// with `[SYS/TEMP]` at once, and a place comes free when one of the first two closes.
fn too_many_sessions(options: &Options, report: &mut Report) -> Result<(), String> {
    println!("exercise 7: too many sessions");
    let (first, greeting) = Pop3::connect(&options.server)?;
    let (_second, _) = Pop3::connect(&options.server)?;
    if !greeting.starts_with("+OK") {
        return Err(format!(
            "the first session got {greeting:?}: is someone else connected? close other \
             sessions and try again"
        ));
    }
    let started = Instant::now();
    let (_third, third) = Pop3::connect(&options.server)?;
    let took = started.elapsed().as_secs_f64();
    if third.starts_with("-ERR [SYS/TEMP]") {
        report.right(&format!(
            "the third session got {third:?} after {took:.2} s"
        ));
    } else {
        report.wrong(
            &format!("the third session got {third:?}"),
            "start the server with --max-sessions 2 (and close any other session to it)",
        );
    }
    first.drop_connection();
    // The first session's thread gives its place back when it sees the close: allow it a moment.
    let deadline = Instant::now() + Duration::from_secs(3);
    let again = loop {
        let (_, greeting) = Pop3::connect(&options.server)?;
        if greeting.starts_with("+OK") || Instant::now() > deadline {
            break greeting;
        }
        thread::sleep(Duration::from_millis(100));
    };
    if again.starts_with("+OK") {
        report.right(&format!(
            "after one session closed, a new one got {again:?}"
        ));
    } else {
        report.wrong(
            &format!("after one session closed, a new one got {again:?}"),
            "a session's place must come back when it ends: see Slot in src/server.rs",
        );
    }
    Ok(())
}
// ANCHOR_END: exercise_7

// ANCHOR: exercise_8
/// Exercise 8: on a server started with `--login-delay N`, the delay counts from the user's
/// last QUIT, not from the last login. A session that stays logged in for longer than the delay
/// and then QUITs must hold the next login back (on PASS, RFC 2449 §8.1.1, while USER still
/// answers `+OK`). Only with `--wait` does the check sit out the delay to see a login work again.
fn login_delay(options: &Options, report: &mut Report) -> Result<(), String> {
    println!("exercise 8: LOGIN-DELAY counted from the last QUIT");
    let (user, pass) = user_or(options, "alice", "wonderland");
    let (mut pop, _) = Pop3::connect(&options.server)?;
    pop.command("CAPA")?;
    let capabilities: Vec<String> = pop.multi_line()?.iter().map(|l| text(l)).collect();
    let Some(delay) = capabilities
        .iter()
        .find_map(|c| c.strip_prefix("LOGIN-DELAY ")?.parse::<u64>().ok())
    else {
        return Err(
            "CAPA has no LOGIN-DELAY line: start the server with --login-delay 3 (cargo run -- --login-delay 3)"
                .into(),
        );
    };
    if delay > 10 {
        return Err(format!(
            "the server's LOGIN-DELAY is {delay} s: start it with --login-delay 3 so the check stays short"
        ));
    }
    pop.drop_connection();
    // A login of an earlier check may still hold the next one back: wait it out once.
    let mut first = Pop3::connect(&options.server)?.0;
    let mut reply = first.login_reply(&user, &pass)?;
    if reply.contains("[LOGIN-DELAY]") {
        first.drop_connection();
        thread::sleep(Duration::from_secs(delay + 1));
        first = Pop3::connect(&options.server)?.0;
        reply = first.login_reply(&user, &pass)?;
    }
    if !reply.starts_with("+OK") {
        return Err(format!("cannot log in as {user}: {reply:?}"));
    }
    println!(
        "  ...    staying logged in for {} s, longer than the delay, then QUIT",
        delay + 1
    );
    thread::sleep(Duration::from_secs(delay + 1));
    first.command("NOOP")?;
    first.quit()?;

    let (mut pop, _) = Pop3::connect(&options.server)?;
    let user_reply = pop.command(&format!("USER {user}"))?;
    if user_reply.starts_with("+OK") {
        report.right(&format!(
            "USER {user} right after the QUIT still answers +OK"
        ));
    } else {
        report.wrong(
            &format!("USER {user} right after the QUIT answers {user_reply:?}"),
            "RFC 2449 §8.1.1: the code goes on PASS, so USER must not change",
        );
    }
    let pass_reply = pop.command(&format!("PASS {pass}"))?;
    if pass_reply.starts_with("-ERR [LOGIN-DELAY]") {
        report.right(&format!("PASS right after the QUIT answers {pass_reply:?}"));
    } else {
        report.wrong(
            &format!(
                "the login right after the QUIT got {pass_reply:?}: the delay still counts from \
                 the login {} s ago",
                delay + 1
            ),
            "the time is recorded in fn log_in (src/authorization.rs); record it when the \
             session QUITs instead (src/session.rs, fn states, where UPDATE ends)",
        );
    }
    pop.drop_connection();
    if options.wait {
        println!(
            "  ...    waiting {} s for the login delay to pass",
            delay + 1
        );
        thread::sleep(Duration::from_secs(delay + 1));
        let (mut pop, _) = Pop3::connect(&options.server)?;
        let later = pop.login_reply(&user, &pass)?;
        if later.starts_with("+OK") {
            report.right(&format!("after {} s, PASS answers {later:?}", delay + 1));
            pop.quit()?;
        } else {
            report.wrong(
                &format!("after {} s, PASS still answers {later:?}", delay + 1),
                "the delay must end: record the time once, at the QUIT",
            );
        }
    } else {
        report.note(&format!(
            "not checked: that a login works again {delay} s after the QUIT (add --wait)"
        ));
    }
    Ok(())
}
// ANCHOR_END: exercise_8

/// The user and password from `--user`/`--pass`, or the exercise's demo user.
fn user_or(options: &Options, user: &str, pass: &str) -> (String, String) {
    options
        .user
        .clone()
        .unwrap_or_else(|| (user.to_string(), pass.to_string()))
}

/// Connects and logs in, waiting a little if the maildrop is still locked by a session that
/// just ended (its thread may not have noticed the close yet).
fn login(server: &str, user: &str, pass: &str) -> Result<Pop3, String> {
    let (mut pop, greeting) = Pop3::connect(server)?;
    if !greeting.starts_with("+OK") {
        return Err(format!("the server greeted with {greeting:?}"));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let reply = pop.login_reply(user, pass)?;
        if reply.starts_with("+OK") {
            return Ok(pop);
        }
        if !reply.contains("[IN-USE]") || Instant::now() > deadline {
            return Err(format!(
                "cannot log in as {user}: the server said {reply:?}"
            ));
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// A line without its line end, as text.
fn text(line: &[u8]) -> String {
    String::from_utf8_lossy(line)
        .trim_end_matches(['\r', '\n'])
        .to_string()
}

/// A line of a multi-line reply with the stuffing dot taken off (RFC 1939 §3).
fn unstuff(line: &[u8]) -> &[u8] {
    line.strip_prefix(b".").unwrap_or(line)
}

/// A connection to a POP3 server. Unlike examples/client.rs it keeps `-ERR` replies as answers,
/// since a checker has to look at them.
struct Pop3 {
    reader: BufReader<TcpStream>,
}

impl Pop3 {
    /// Connects and returns the greeting (or the refusal) line.
    fn connect(server: &str) -> Result<(Pop3, String), String> {
        let no_server = |e: std::io::Error| {
            format!(
                "no POP3 server answers at {server}: {e} (start one with `cargo run`, or give \
                 --server HOST:PORT)"
            )
        };
        let address = server
            .to_socket_addrs()
            .map_err(|e| format!("{server} is not an address: {e}"))?
            .next()
            .ok_or(format!("{server} names no address"))?;
        let stream = TcpStream::connect_timeout(&address, TIMEOUT).map_err(no_server)?;
        stream
            .set_read_timeout(Some(TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
            .map_err(no_server)?;
        let mut pop = Pop3 {
            reader: BufReader::new(stream),
        };
        let greeting = pop.line().map_err(|e| format!("{server}: {e}"))?;
        Ok((pop, greeting))
    }

    fn send(&mut self, line: &str) -> Result<(), String> {
        let mut stream = self.reader.get_ref();
        stream
            .write_all(format!("{line}\r\n").as_bytes())
            .map_err(|e| format!("cannot send {line:?}: {e}"))
    }

    /// Sends one command and returns the whole status line, `+OK` or `-ERR` included.
    fn command(&mut self, line: &str) -> Result<String, String> {
        self.send(line)?;
        self.line()
    }

    /// USER then PASS; the answer to PASS (or to USER, if that failed).
    fn login_reply(&mut self, user: &str, pass: &str) -> Result<String, String> {
        let reply = self.command(&format!("USER {user}"))?;
        if !reply.starts_with("+OK") {
            return Ok(reply);
        }
        self.command(&format!("PASS {pass}"))
    }

    /// Sends a command that may answer with several lines, and returns the status line after
    /// reading (and dropping) the rest.
    fn first_line_of(&mut self, line: &str) -> Result<String, String> {
        let reply = self.command(line)?;
        if reply.starts_with("+OK") {
            self.multi_line()?;
        }
        Ok(reply)
    }

    /// `LIST` as `(number, size)` pairs.
    fn scan_listing(&mut self) -> Result<Vec<(u64, u64)>, String> {
        self.expect_ok("LIST")?;
        self.multi_line()?
            .iter()
            .map(|line| {
                let line = text(line);
                let mut words = line.split(' ').map(str::parse::<u64>);
                match (words.next(), words.next()) {
                    (Some(Ok(number)), Some(Ok(size))) => Ok((number, size)),
                    _ => Err(format!("LIST: {line:?} is not a scan listing")),
                }
            })
            .collect()
    }

    /// The unique-ids of `UIDL`, in order.
    fn unique_ids(&mut self) -> Result<Vec<String>, String> {
        self.expect_ok("UIDL")?;
        Ok(self
            .multi_line()?
            .iter()
            .filter_map(|line| text(line).split(' ').nth(1).map(str::to_string))
            .collect())
    }

    fn expect_ok(&mut self, line: &str) -> Result<(), String> {
        let reply = self.command(line)?;
        if reply.starts_with("+OK") {
            Ok(())
        } else {
            Err(format!("{line} answered {reply:?}"))
        }
    }

    /// The lines of a multi-line reply up to the lone `.`, each as sent: line end and stuffing
    /// dot included.
    fn multi_line(&mut self) -> Result<Vec<Vec<u8>>, String> {
        let mut lines = Vec::new();
        loop {
            let mut line = Vec::new();
            self.reader
                .read_until(b'\n', &mut line)
                .map_err(|e| format!("in a multi-line reply: {e}"))?;
            if !line.ends_with(b"\n") {
                return Err("the server closed the connection in a multi-line reply".into());
            }
            if line == b".\r\n" {
                return Ok(lines);
            }
            lines.push(line);
        }
    }

    /// One line without its line end.
    fn line(&mut self) -> Result<String, String> {
        let mut line = Vec::new();
        self.reader
            .read_until(b'\n', &mut line)
            .map_err(|e| format!("no reply from the server: {e}"))?;
        if !line.ends_with(b"\n") {
            return Err("the server closed the connection".into());
        }
        Ok(text(&line))
    }

    fn quit(mut self) -> Result<(), String> {
        self.command("QUIT").map(drop)
    }

    /// Closes the connection without QUIT, as a closed telnet window does.
    fn drop_connection(self) {
        let _ = self.reader.get_ref().shutdown(Shutdown::Both);
    }
}
