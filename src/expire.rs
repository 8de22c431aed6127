//! EXPIRE (RFC 2449 §6.7; `--expire DAYS`): how long the server keeps a message that a client
//! has retrieved and left on the server.
//!
//! `EXPIRE NEVER` (the default) promises that messages stay until the client deletes them.
//! `EXPIRE n` promises at least n days: a message delivered at least n days ago that a session
//! retrieved with RETR is removed in that session's UPDATE, as if the client had marked it. The
//! age comes from the maildrop (`MessageInfo::delivered`: the Maildir file name's time, or the
//! mbox From_ line's date). `EXPIRE 0` makes every retrieved message go: POP3 without
//! leave-on-server, which §6.7 allows. Nothing is ever removed without a QUIT (RFC 1939 §6), and
//! TOP does not count as retrieving.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::maildrop::MessageInfo;

/// The retention policy, the same for every user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Expire {
    /// Messages stay until deleted (`EXPIRE NEVER`).
    #[default]
    Never,
    /// Retrieved messages at least this many days old are removed at QUIT (`EXPIRE n`).
    Days(u32),
}

/// A day, as §6.7 counts retention.
const DAY: u64 = 24 * 60 * 60;

impl Expire {
    /// `--expire`'s value: a number of days, or `NEVER`.
    pub fn parse(text: &str) -> Result<Expire, String> {
        if text.eq_ignore_ascii_case("never") {
            return Ok(Expire::Never);
        }
        text.parse()
            .map(Expire::Days)
            .map_err(|_| format!("--expire {text}: give a number of days (0 or more) or NEVER"))
    }

    /// The line CAPA lists (RFC 2449 §6.7).
    pub fn capability(self) -> String {
        match self {
            Expire::Never => "EXPIRE NEVER".to_string(),
            Expire::Days(days) => format!("EXPIRE {days}"),
        }
    }

    // ANCHOR: expired
    /// Which messages UPDATE removes for their age: retrieved in this session (`retrieved[i]`)
    /// and delivered at least the policy's days before `now`.
    pub fn expired(
        self,
        messages: &[MessageInfo],
        retrieved: &[bool],
        now: SystemTime,
    ) -> Vec<bool> {
        let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        messages
            .iter()
            .zip(retrieved)
            .map(|(message, &retrieved)| match self {
                Expire::Never => false,
                Expire::Days(days) => {
                    retrieved && now.saturating_sub(message.delivered) >= u64::from(days) * DAY
                }
            })
            .collect()
    }
    // ANCHOR_END: expired
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(delivered: u64) -> MessageInfo {
        MessageInfo {
            size: 1,
            uid: "u".into(),
            delivered,
        }
    }

    #[test]
    fn x11_parse_and_capability() {
        assert_eq!(Expire::parse("NEVER"), Ok(Expire::Never));
        assert_eq!(Expire::parse("never"), Ok(Expire::Never));
        assert_eq!(Expire::parse("30"), Ok(Expire::Days(30)));
        assert!(Expire::parse("-1").unwrap_err().contains("number of days"));
        assert!(Expire::parse("soon").is_err());
        assert_eq!(Expire::Never.capability(), "EXPIRE NEVER");
        assert_eq!(Expire::Days(0).capability(), "EXPIRE 0");
        assert_eq!(Expire::default(), Expire::Never);
    }

    #[test]
    fn x11_only_retrieved_messages_old_enough_expire() {
        let now = UNIX_EPOCH + Duration::from_secs(100 * DAY);
        let messages = [at(0), at(99 * DAY), at(98 * DAY), at(0)];
        let retrieved = [true, true, true, false];
        assert_eq!(
            Expire::Days(2).expired(&messages, &retrieved, now),
            [true, false, true, false]
        );
        assert_eq!(
            Expire::Days(0).expired(&messages, &retrieved, now),
            [true, true, true, false]
        );
        assert_eq!(
            Expire::Never.expired(&messages, &retrieved, now),
            [false; 4]
        );
    }

    #[test]
    fn x11_a_message_from_the_future_is_not_old() {
        let now = UNIX_EPOCH + Duration::from_secs(DAY);
        assert_eq!(
            Expire::Days(1).expired(&[at(5 * DAY)], &[true], now),
            [false]
        );
    }
}
