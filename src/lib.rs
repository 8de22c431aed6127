//! popstate: a POP3 server (RFC 1939) over Maildir, written to be read.
//!
//! Each client gets one OS thread, and that thread walks through RFC 1939's states in a straight
//! line: greeting, AUTHORIZATION, TRANSACTION, UPDATE. The modules, in the order a session
//! meets them:
//!
//! | module            | what it is                                        | RFC            |
//! |-------------------|---------------------------------------------------|----------------|
//! | [`server`]        | the listener and one thread per client            | 1939 §3        |
//! | [`session`]       | the session loop: the states one after another    | 1939 §3        |
//! | [`protocol`]      | the wire: command lines, replies, byte-stuffing   | 1939 §3, 2449 §4 |
//! | [`command`]       | a line into a keyword and arguments               | 1939 §3        |
//! | [`authorization`] | the AUTHORIZATION state: USER, PASS, QUIT, CAPA   | 1939 §4, §7, §13; 3206 |
//! | [`transaction`]   | the TRANSACTION state: STAT, LIST, RETR, DELE ... | 1939 §5, §7    |
//! | [`update`]        | the UPDATE state: removing what was marked        | 1939 §6        |
//! | [`capa`]          | CAPA, in both states                              | 2449 §5, §6    |
//! | [`maildrop`]      | what the states need from storage                 | 1939 §4        |
//! | [`maildir`]       | Maildir storage, unique-ids and the lock          | 1939 §4, §7    |
//! | [`mbox`]          | mbox storage (`--mbox-dir`): dot-lock, rewrite    | 1939 §4, §6, §7 |
//! | [`users`]         | the users file and password checks                | 1939 §7, §13   |
//! | [`classroom`]     | `--trace`: the dialogue on the server's terminal  |                |
//! | [`limits`]        | every deliberate limit, with its reason           | 1939 §3, §13   |
//! | [`demo`]          | the demo maildrop that `cargo run` serves         |                |

pub mod addresses;
pub mod authorization;
pub mod board;
pub mod capa;
pub mod classroom;
pub mod command;
pub mod demo;
pub mod limits;
pub mod maildir;
pub mod maildrop;
pub mod mbox;
pub mod protocol;
pub mod server;
pub mod session;
pub mod transaction;
pub mod update;
pub mod users;
