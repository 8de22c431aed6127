//! The UPDATE state (RFC 1939 §6): after QUIT in TRANSACTION, and only then, the messages marked
//! as deleted are removed from the maildrop.
//!
//! No commands are read here. The state removes exactly the marked messages (and, with
//! `--expire`, the retrieved ones old enough to expire: RFC 2449 §6.7, expire.rs), releases the
//! lock, answers the QUIT and ends the session. A session that ends any other way (the connection
//! drops, the idle timer fires, the server stops) never gets here, so it removes nothing.

use crate::maildrop::Maildrop;
use crate::protocol::{self, Reply};

/// What UPDATE did, for the reply and the session's log line.
pub struct Removed {
    pub reply: Reply,
    pub removed: u64,
}

// ANCHOR: update
/// Removes every message marked in `deleted` or in `expired` and returns the reply to QUIT:
///
/// ```text
/// +OK popstate signing off: removed 2 messages, 3 left
/// +OK popstate signing off: removed 3 messages (1 expired: retrieved and older than EXPIRE), 2 left
/// -ERR [SYS/TEMP] removed 1 of 2 marked messages; message 4 could not be removed: ...
/// ```
pub fn update(mut maildrop: Box<dyn Maildrop>, deleted: &[bool], expired: &[bool]) -> Removed {
    let gone = |i: usize| deleted[i] || expired.get(i).copied().unwrap_or(false);
    let marked: Vec<usize> = (0..deleted.len()).filter(|&i| gone(i)).collect();
    let expiring = (0..deleted.len())
        .filter(|&i| !deleted[i] && gone(i))
        .count();
    let failures: Vec<String> = maildrop
        .remove(&marked)
        .into_iter()
        .map(|(index, why)| format!("message {} could not be removed: {why}", index + 1))
        .collect();
    let removed = (marked.len() - failures.len()) as u64;
    let left = deleted.len() - removed as usize;
    // Release the lock before the reply, so that a client that reconnects at once finds the
    // maildrop free (RFC 1939 §6: "releases any exclusive-access lock on the maildrop").
    drop(maildrop);
    let reply = if failures.is_empty() {
        let why = match expiring {
            0 => String::new(),
            n => format!(" ({n} expired: retrieved and older than EXPIRE)"),
        };
        Reply::Ok(format!(
            "popstate signing off: removed {}{why}, {left} left",
            protocol::messages(removed as usize)
        ))
    } else {
        // RFC 3206 §4: a file system problem that may clear up; the rest stay marked for nobody,
        // so the client will see them again next time and can DELE them again.
        // Only the first failure is spelled out, so the line stays under RFC 1939's 512 octets.
        let more = match failures.len() {
            1 => String::new(),
            n => format!(" (and {} more)", n - 1),
        };
        Reply::Err(format!(
            "[SYS/TEMP] removed {removed} of {} marked messages; {}{more}",
            marked.len(),
            failures[0]
        ))
    };
    Removed { reply, removed }
}
// ANCHOR_END: update

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maildrop::MessageInfo;
    use std::io::BufRead;

    /// A maildrop in memory whose `remove` fails for chosen messages.
    struct Fake {
        messages: Vec<MessageInfo>,
        fail: Vec<usize>,
        removed: std::sync::Arc<std::sync::Mutex<Vec<usize>>>,
    }

    impl Maildrop for Fake {
        fn messages(&self) -> &[MessageInfo] {
            &self.messages
        }
        fn open(&self, _: usize) -> Result<Box<dyn BufRead + Send>, String> {
            Err("not used".into())
        }
        fn remove(&mut self, marked: &[usize]) -> Vec<(usize, String)> {
            let mut failed = Vec::new();
            for &index in marked {
                if self.fail.contains(&index) {
                    failed.push((index, "read-only file system".to_string()));
                } else {
                    self.removed.lock().expect("lock").push(index);
                }
            }
            failed
        }
    }

    fn fake(
        n: usize,
        fail: Vec<usize>,
    ) -> (
        Box<dyn Maildrop>,
        std::sync::Arc<std::sync::Mutex<Vec<usize>>>,
    ) {
        let removed = std::sync::Arc::default();
        let messages = (0..n)
            .map(|i| MessageInfo {
                size: 10,
                uid: format!("u{i}"),
                delivered: 0,
            })
            .collect();
        (
            Box::new(Fake {
                messages,
                fail,
                removed: std::sync::Arc::clone(&removed),
            }),
            removed,
        )
    }

    #[test]
    fn b23_removes_exactly_the_marked_messages() {
        let (maildrop, removed) = fake(4, vec![]);
        let done = update(maildrop, &[true, false, true, false], &[false; 4]);
        assert_eq!(*removed.lock().expect("lock"), [0, 2]);
        assert_eq!(done.removed, 2);
        assert_eq!(
            done.reply.status_line(),
            "+OK popstate signing off: removed 2 messages, 2 left"
        );
    }

    #[test]
    fn x11_expired_messages_go_with_the_marked_ones_and_the_reply_says_so() {
        let (maildrop, removed) = fake(4, vec![]);
        let done = update(
            maildrop,
            &[true, false, false, false],
            &[true, true, false, false],
        );
        assert_eq!(*removed.lock().expect("lock"), [0, 1]);
        assert_eq!(done.removed, 2);
        assert_eq!(
            done.reply.status_line(),
            "+OK popstate signing off: removed 2 messages (1 expired: retrieved and older than EXPIRE), 2 left"
        );
    }

    #[test]
    fn b23_r01_a_failed_removal_is_reported_with_sys_temp() {
        let (maildrop, removed) = fake(4, vec![1, 3]);
        let done = update(maildrop, &[true, true, false, true], &[]);
        assert_eq!(*removed.lock().expect("lock"), [0]);
        assert_eq!(done.removed, 1);
        assert_eq!(
            done.reply.status_line(),
            "-ERR [SYS/TEMP] removed 1 of 3 marked messages; message 2 could not be removed: read-only file system (and 1 more)"
        );
    }
}
