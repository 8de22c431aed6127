//! The limit probe: the least a POP3 server built like popstate (std::net, one OS thread per
//! connection) can do for the same client work. It answers USER, PASS, STAT, LIST, UIDL, RETR,
//! NOOP, DELE, RSET, CAPA and QUIT from memory: every maildrop is read once, converted to CRLF
//! and byte-stuffed in advance, and every reply goes out in one `write_all`. No locks, no disk,
//! any password. A real server cannot reach it; the targets are fractions of it.
//!
//! Users named like the benchmark's `u0001`..`uNNNN` all share one template maildrop (the
//! generator hard-links the same 20 messages into each); any other user (`big`, `m100000`...)
//! is read from `--maildir-root` at its first login and kept.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::Args;

/// One message, ready to send.
struct Message {
    /// RFC 1939 size: CRLF line ends, no stuffing.
    size: u64,
    uid: String,
    /// The whole RETR reply: status line, stuffed CRLF body, terminator.
    reply: Vec<u8>,
}

/// One maildrop, with its STAT, LIST and UIDL replies made in advance.
struct Maildrop {
    messages: Vec<Message>,
    stat: Vec<u8>,
    list: Vec<u8>,
    uidl: Vec<u8>,
}

struct Store {
    root: String,
    template: Arc<Maildrop>,
    template_prefix: String,
    others: Mutex<HashMap<String, Arc<Maildrop>>>,
}

pub fn serve(args: &Args) -> Result<String, String> {
    let listen = args.addr("listen")?;
    let root = args.text("maildir-root", None)?;
    let template_user = args.text("template", Some("u0001"))?;
    let prefix = args.text("users-prefix", Some("u"))?;
    // Bounded like everything else: the probe exits after this long.
    let lifetime: f64 = args.number("seconds", 4.0 * 3600.0, 7.0 * 86400.0)?;
    let stack: usize = args.number("stack-kib", 128, 8192)?;

    let template = Arc::new(load(&Path::new(&root).join(&template_user))?);
    let mut others = HashMap::new();
    for user in args
        .text("preload", Some(""))?
        .split(',')
        .filter(|u| !u.is_empty())
    {
        others.insert(
            user.to_string(),
            Arc::new(load(&Path::new(&root).join(user))?),
        );
    }
    let store = Arc::new(Store {
        root,
        template,
        template_prefix: prefix,
        others: Mutex::new(others),
    });
    let listener =
        TcpListener::bind(listen).map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    eprintln!(
        "probe: listening on {listen}, template {template_user} ({} messages), pid {}",
        store.template.messages.len(),
        std::process::id()
    );
    let started = Instant::now();
    thread::spawn(move || {
        thread::sleep(Duration::from_secs_f64(lifetime));
        eprintln!("probe: lifetime of {lifetime} s over, exiting");
        std::process::exit(0);
    });
    for stream in listener.incoming() {
        let Ok(stream) = stream else {
            thread::sleep(Duration::from_millis(10));
            continue;
        };
        let store = Arc::clone(&store);
        let spawned = thread::Builder::new()
            .stack_size(stack * 1024)
            .spawn(move || {
                let _ = session(&stream, &store);
            });
        if let Err(e) = spawned {
            eprintln!("probe: cannot start a thread: {e}");
        }
    }
    Ok(format!(
        "{{\"mode\":\"probe\",\"seconds\":{}}}",
        started.elapsed().as_secs()
    ))
}

/// One client: a line in, one reply out, until QUIT or the connection goes.
fn session(stream: &TcpStream, store: &Store) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(660)))?;
    let mut input = BufReader::with_capacity(512, stream);
    let mut out = stream;
    out.write_all(b"+OK probe ready\r\n")?;
    let mut user = String::new();
    let mut maildrop: Option<Arc<Maildrop>> = None;
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        // Bounded: a command line is at most 255 octets (RFC 2449 §4); a longer one ends it.
        let n = Read::take(&mut input, 256).read_until(b'\n', &mut line)?;
        if n == 0 || !line.ends_with(b"\n") {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line);
        let mut words = text.split_whitespace();
        let keyword = words.next().unwrap_or("").to_ascii_uppercase();
        let arg = words.next().unwrap_or("");
        let number = arg.parse::<usize>().ok();
        let reply: Vec<u8> = match (keyword.as_str(), &maildrop) {
            ("QUIT", _) => {
                out.write_all(b"+OK bye\r\n")?;
                return Ok(());
            }
            ("NOOP", Some(_)) | ("RSET", Some(_)) | ("DELE", Some(_)) => b"+OK\r\n".to_vec(),
            ("CAPA", _) => b"+OK\r\nUSER\r\nUIDL\r\nTOP\r\n.\r\n".to_vec(),
            ("USER", None) => {
                user = arg.to_string();
                b"+OK\r\n".to_vec()
            }
            ("PASS", None) => match store.open(&user) {
                Ok(drop) => {
                    let stat = drop.stat.clone();
                    maildrop = Some(drop);
                    stat
                }
                Err(why) => format!("-ERR {why}\r\n").into_bytes(),
            },
            ("STAT", Some(m)) => m.stat.clone(),
            ("LIST", Some(m)) if arg.is_empty() => {
                out.write_all(&m.list)?;
                continue;
            }
            ("UIDL", Some(m)) if arg.is_empty() => {
                out.write_all(&m.uidl)?;
                continue;
            }
            ("LIST" | "UIDL" | "RETR", Some(m)) => {
                match number
                    .and_then(|n| n.checked_sub(1))
                    .and_then(|i| m.messages.get(i))
                {
                    None => b"-ERR no such message\r\n".to_vec(),
                    Some(msg) if keyword == "RETR" => {
                        out.write_all(&msg.reply)?;
                        continue;
                    }
                    Some(msg) if keyword == "LIST" => {
                        format!("+OK {arg} {}\r\n", msg.size).into_bytes()
                    }
                    Some(msg) => format!("+OK {arg} {}\r\n", msg.uid).into_bytes(),
                }
            }
            _ => b"-ERR not here\r\n".to_vec(),
        };
        out.write_all(&reply)?;
    }
}

impl Store {
    fn open(&self, user: &str) -> Result<Arc<Maildrop>, String> {
        let numbered = user
            .strip_prefix(self.template_prefix.as_str())
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if numbered {
            return Ok(Arc::clone(&self.template));
        }
        if user.is_empty() || user.contains('/') || user.starts_with('.') {
            return Err("no such user".to_string());
        }
        // The lock is held while a maildrop loads: only the first login of each user pays.
        let mut others = self.others.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(m) = others.get(user) {
            return Ok(Arc::clone(m));
        }
        let loaded = Arc::new(load(&Path::new(&self.root).join(user))?);
        others.insert(user.to_string(), Arc::clone(&loaded));
        Ok(loaded)
    }
}

/// Reads a Maildir's `cur/` and `new/` into memory, in name order (delivery time first).
fn load(dir: &Path) -> Result<Maildrop, String> {
    let mut names = Vec::new();
    for sub in ["cur", "new"] {
        let entries = fs::read_dir(dir.join(sub)).map_err(|e| format!("{}: {e}", dir.display()))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') {
                names.push((name, entry.path()));
            }
        }
    }
    names.sort();
    let mut messages = Vec::with_capacity(names.len());
    for (name, path) in names {
        let data = fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let (body, size) = to_wire(&data);
        let mut reply = format!("+OK {size} octets\r\n").into_bytes();
        reply.extend_from_slice(&body);
        reply.extend_from_slice(b".\r\n");
        let uid = name.split(':').next().unwrap_or(&name).to_string();
        messages.push(Message { size, uid, reply });
    }
    let total: u64 = messages.iter().map(|m| m.size).sum();
    let mut list = format!("+OK {} messages\r\n", messages.len());
    let mut uidl = String::from("+OK\r\n");
    for (i, m) in messages.iter().enumerate() {
        list.push_str(&format!("{} {}\r\n", i + 1, m.size));
        uidl.push_str(&format!("{} {}\r\n", i + 1, m.uid));
    }
    list.push_str(".\r\n");
    uidl.push_str(".\r\n");
    Ok(Maildrop {
        stat: format!("+OK {} {total}\r\n", messages.len()).into_bytes(),
        list: list.into_bytes(),
        uidl: uidl.into_bytes(),
        messages,
    })
}

/// A stored message as RETR sends it: CRLF line ends, a CRLF after a last line without one,
/// and a `.` in front of every line that starts with `.`. Also returns the RFC 1939 size (the
/// same without the stuffing dots).
fn to_wire(data: &[u8]) -> (Vec<u8>, u64) {
    let mut wire = Vec::with_capacity(data.len() + data.len() / 16);
    let mut size = 0u64;
    for line in data.split_inclusive(|&b| b == b'\n') {
        let content = line.strip_suffix(b"\n").unwrap_or(line);
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        if content.first() == Some(&b'.') {
            wire.push(b'.');
        }
        wire.extend_from_slice(content);
        wire.extend_from_slice(b"\r\n");
        size += content.len() as u64 + 2;
    }
    (wire, size)
}
