//! The exercise checkers (examples/check.rs), tested both ways: against the unchanged demo server
//! each must say "not yet" and exit non-zero; against a server built with the exercise's reference
//! solution (book/solutions/exercise-N.patch, applied to a copy of the tree) it must say "solved"
//! and exit 0. Exercises 1, 6 and 7 change no code: their solved case is the right predictions,
//! or the right flag.
//!
//! The checker uses only the standard library, so it is compiled here with `rustc` alone: a
//! `cargo build` into this target folder would wait for the lock `cargo test` holds. The patched
//! servers build with cargo in their own target folder under CARGO_TARGET_TMPDIR, one copy of the
//! tree patched in turn, so dependencies compile once and each patch is an incremental build.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::OnceLock;

const BIN: &str = env!("CARGO_BIN_EXE_popstate");
const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// The exercises that change code, with a reference patch each.
const PATCHED: &[u32] = &[2, 3, 4, 5, 8];

/// alice's sizes as the files on disk hold them (LF-only message 3, unterminated message 6), and
/// as LIST gives them.
const DISK_SIZES: &[&str] = &["327", "443", "353", "27765", "683", "234"];
const LIST_SIZES: &[&str] = &["327", "443", "362", "27765", "683", "236"];

/// The checker and one server binary per reference patch, built once for all tests.
struct Built {
    check: PathBuf,
    patched: HashMap<u32, PathBuf>,
}

fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(build)
}

fn build() -> Built {
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("checkers");
    fs::create_dir_all(&work).expect("make the work folder");
    let check = work.join("check");
    run(Command::new(rustc())
        .args(["--edition", "2024", "--crate-name", "check", "-o"])
        .arg(&check)
        .arg(Path::new(REPO).join("examples/check.rs")));

    let tree = work.join("tree");
    let mut patched = HashMap::new();
    for &n in PATCHED {
        let _ = fs::remove_dir_all(&tree);
        fs::create_dir_all(&tree).expect("make the tree folder");
        for file in ["Cargo.toml", "Cargo.lock"] {
            copy(&Path::new(REPO).join(file), &tree.join(file));
        }
        for dir in ["src", "examples", "tests"] {
            copy(&Path::new(REPO).join(dir), &tree.join(dir));
        }
        let patch = Path::new(REPO).join(format!("book/solutions/exercise-{n}.patch"));
        // The copy lies inside this repository's target folder: the ceiling keeps git from
        // finding the repository and applying the patch to it instead.
        run(Command::new("git")
            .arg("apply")
            .arg(&patch)
            .current_dir(&tree)
            .env("GIT_CEILING_DIRECTORIES", &work));
        run(Command::new(cargo())
            .args(["build", "--bin", "popstate", "--offline", "--quiet"])
            .current_dir(&tree)
            .env("CARGO_TARGET_DIR", work.join("target")));
        let server = work.join(format!("popstate-exercise-{n}"));
        fs::copy(work.join("target/debug/popstate"), &server).expect("keep the patched server");
        patched.insert(n, server);
    }
    Built { check, patched }
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_string())
}

/// rustc from the toolchain running this test: beside its cargo, or the one on the PATH.
fn rustc() -> PathBuf {
    if let Ok(rustc) = std::env::var("RUSTC") {
        return rustc.into();
    }
    let beside = Path::new(&cargo()).with_file_name("rustc");
    if beside.exists() {
        beside
    } else {
        "rustc".into()
    }
}

fn run(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn copy(from: &Path, to: &Path) {
    if from.is_dir() {
        fs::create_dir_all(to).expect("make a folder");
        for entry in fs::read_dir(from).expect("read a folder") {
            let entry = entry.expect("read a folder entry");
            copy(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        fs::copy(from, to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    }
}

/// A server child process, killed when dropped.
struct Server {
    child: Child,
    address: String,
    _stdout: BufReader<ChildStdout>,
}

impl Server {
    fn start(binary: &Path, args: &[&str]) -> Server {
        let mut child = Command::new(binary)
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start popstate");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        let address = loop {
            line.clear();
            if stdout.read_line(&mut line).expect("read the banner") == 0 {
                let _ = child.kill();
                panic!("popstate ended before it said where it listens");
            }
            if let Some((_, rest)) = line.split_once("listening on ") {
                break rest.trim().to_string();
            }
        };
        Server {
            child,
            address,
            _stdout: stdout,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the checker against `server`; its exit code and standard output.
fn check(server: &Server, args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(&built().check)
        .arg("--server")
        .arg(&server.address)
        .args(args)
        .output()
        .expect("run the checker");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    (output.status.code(), format!("{stdout}{stderr}"))
}

fn assert_not_yet(server: &Server, args: &[&str]) {
    let (code, out) = check(server, args);
    assert_eq!(code, Some(1), "check {args:?} should exit 1:\n{out}");
    assert!(out.contains("\nnot yet"), "check {args:?}:\n{out}");
    assert!(out.contains("WRONG") && out.contains("hint:"), "{out}");
}

fn assert_solved(server: &Server, args: &[&str]) {
    let (code, out) = check(server, args);
    assert_eq!(code, Some(0), "check {args:?} should exit 0:\n{out}");
    assert!(out.ends_with("\nsolved\n"), "check {args:?}:\n{out}");
    assert!(!out.contains("WRONG"), "{out}");
}

fn unchanged(args: &[&str]) -> Server {
    Server::start(Path::new(BIN), args)
}

fn patched(n: u32) -> Server {
    patched_with(n, &[])
}

fn patched_with(n: u32, args: &[&str]) -> Server {
    Server::start(&built().patched[&n], args)
}

#[test]
fn exercise_1_wrong_sizes_are_not_yet_and_right_ones_solved() {
    let server = unchanged(&[]);
    let mut args = vec!["1"];
    args.extend(DISK_SIZES);
    assert_not_yet(&server, &args);
    let (_, out) = check(&server, &args);
    assert!(out.contains("message 3: not 353 octets"), "{out}");
    assert!(out.contains("each line end as one octet"), "{out}");
    assert!(out.contains("message 6: not 234 octets"), "{out}");
    assert!(out.contains("last line has no line end"), "{out}");
    let mut args = vec!["1"];
    args.extend(LIST_SIZES);
    assert_solved(&server, &args);
}

#[test]
fn exercise_2_not_yet_then_solved() {
    assert_not_yet(&unchanged(&[]), &["2"]);
    assert_solved(&patched(2), &["2"]);
}

#[test]
fn exercise_3_not_yet_then_solved() {
    assert_not_yet(&unchanged(&[]), &["3"]);
    let server = patched(3);
    assert_solved(&server, &["3"]);
    let (_, out) = check(&server, &["3"]);
    assert!(out.contains("the rest of message 2"), "{out}");
}

#[test]
fn exercise_4_not_yet_then_solved() {
    // On the unchanged server the check changes nothing: it passes twice in a row.
    let server = unchanged(&[]);
    assert_not_yet(&server, &["4"]);
    assert_not_yet(&server, &["4"]);
    assert_solved(&patched(4), &["4"]);
}

#[test]
fn exercise_5_not_yet_then_solved() {
    assert_not_yet(&unchanged(&[]), &["5"]);
    assert_solved(&patched(5), &["5"]);
}

#[test]
fn exercise_6_wrong_predictions_are_not_yet_and_right_ones_solved() {
    // The fast trickle must finish its line within the idle time on a busy machine: it takes
    // half of it, so 3 s leaves a second and a half to spare.
    let server = unchanged(&["--idle-timeout", "3"]);
    assert_not_yet(&server, &["6", "--idle-timeout", "3", "answer", "answer"]);
    assert_solved(&server, &["6", "--idle-timeout", "3", "close", "answer"]);
}

#[test]
fn exercise_7_not_yet_without_the_flag_and_solved_with_it() {
    assert_not_yet(&unchanged(&[]), &["7"]);
    assert_solved(&unchanged(&["--max-sessions", "2"]), &["7"]);
}

#[test]
fn exercise_8_not_yet_then_solved() {
    // The exercise starts from a server with --login-delay; without one the check cannot run.
    let (code, out) = check(&unchanged(&[]), &["8"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("start the server with --login-delay 3"),
        "{out}"
    );
    let delay = ["--login-delay", "2"];
    let (_, out) = check(&unchanged(&delay), &["8"]);
    assert!(
        out.contains("the delay still counts from the login"),
        "{out}"
    );
    assert_not_yet(&unchanged(&delay), &["8"]);
    let server = patched_with(8, &delay);
    assert_solved(&server, &["8", "--wait"]);
}

#[test]
fn no_server_and_exercise_9_are_errors_not_verdicts() {
    // A port that was free a moment ago: nobody answers there.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("find a free port")
        .to_string();
    let output = Command::new(&built().check)
        .args(["--server", &free, "2"])
        .output()
        .expect("run the checker");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no POP3 server answers"));

    let server = unchanged(&[]);
    let (code, out) = check(&server, &["9"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("exercise 9 has no checker"), "{out}");
}
