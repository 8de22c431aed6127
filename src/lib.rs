//! popstate: a POP3 server (RFC 1939) over Maildir, written to be read.
//!
//! Each client gets one OS thread, and that thread walks through RFC 1939's states in a straight
//! line: greeting, AUTHORIZATION, TRANSACTION, UPDATE. The modules, in the order a session
//! meets them:
//!
//! | module            | what it is                                        | RFC            |
//! |-------------------|---------------------------------------------------|----------------|
//! | [`server`]        | the listener and one thread per client            | 1939 §3        |
//! | [`inetd`]         | `--inetd`: one session on standard input          |                |
//! | [`systemd`]       | a listening socket passed by systemd              |                |
//! | [`session`]       | the session loop: the states one after another    | 1939 §3        |
//! | [`protocol`]      | the wire: command lines, replies, byte-stuffing   | 1939 §3, 2449 §4 |
//! | [`command`]       | a line into a keyword and arguments               | 1939 §3        |
//! | [`authorization`] | the AUTHORIZATION state: USER, PASS, QUIT, CAPA   | 1939 §4, §7, §13; 3206 |
//! | [`transaction`]   | the TRANSACTION state: STAT, LIST, RETR, DELE ... | 1939 §5, §7    |
//! | [`update`]        | the UPDATE state: removing what was marked        | 1939 §6        |
//! | [`capa`]          | CAPA, in both states                              | 2449 §5, §6    |
//! | [`login_delay`]   | LOGIN-DELAY: the least time between logins        | 2449 §6.5, §8.1.1 |
//! | [`expire`]        | EXPIRE: retrieved messages removed after n days   | 2449 §6.7      |
//! | [`maildrop`]      | what the states need from storage                 | 1939 §4        |
//! | [`maildir`]       | Maildir storage, unique-ids and the lock          | 1939 §4, §7    |
//! | `maildir::lock`   | the maildrop lock: no file held per session       | 1939 §4        |
//! | [`mbox`]          | mbox storage (`--mbox-dir`): dot-lock, rewrite    | 1939 §4, §6, §7 |
//! | [`users`]         | the users file and password checks                | 1939 §7, §13   |
//! | [`classroom`]     | `--trace`: the dialogue on the server's terminal  |                |
//! | [`board`]         | `--board`: the teacher's board, a row per session |                |
//! | [`addresses`]     | this machine's addresses, for the board's line    |                |
//! | [`limits`]        | every deliberate limit, with its reason           | 1939 §3, §13   |
//! | [`demo`]          | the demo maildrop that `cargo run` serves         |                |
//!
//! Beyond RFC 1939, each behind a cargo feature and each in a file of its own:
//!
//! | module     | feature            | what it is                                   | RFC        |
//! |------------|--------------------|----------------------------------------------|------------|
//! | `tls`      | `tls`              | STLS and implicit TLS                        | 2595, 8314 |
//! | `sasl`     | `sasl`             | AUTH with the PLAIN mechanism                | 5034, 4616 |
//! | `apop`     | `apop`             | APOP: an MD5 digest instead of the password  | 1939 §7    |
//! | `hashed`   | `hashed-passwords` | SHA-crypt (`$6$`) hashes in the users file   |            |

pub mod addresses;
#[cfg(feature = "apop")]
pub mod apop;
pub mod authorization;
pub mod board;
pub mod capa;
pub mod classroom;
pub mod command;
pub mod demo;
pub mod expire;
#[cfg(feature = "hashed-passwords")]
pub mod hashed;
pub mod inetd;
pub mod limits;
pub mod login_delay;
pub mod maildir;
pub mod maildrop;
pub mod mbox;
pub mod protocol;
#[cfg(feature = "sasl")]
pub mod sasl;
pub mod server;
pub mod session;
pub mod systemd;
#[cfg(feature = "tls")]
pub mod tls;
pub mod transaction;
pub mod update;
pub mod users;
