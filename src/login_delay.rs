//! LOGIN-DELAY (RFC 2449 §6.5, §8.1.1; `--login-delay SECS`): the least time between two
//! logins by the same user, announced in CAPA and enforced after the password is checked.
//!
//! One `LoginDelay` lives in the server (server.rs, `Shared`) and every session thread asks it,
//! since a user's next login may come on any connection. It remembers only the last successful
//! login of each user who has logged in since the server started: a restart forgets them, and
//! in `--inetd` mode, where every session is a process of its own, there is nothing to remember
//! them in, so main.rs refuses `--login-delay` there.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The delay, and when each user last logged in.
#[derive(Debug, Default)]
pub struct LoginDelay {
    /// `None`: off (the default), nothing is announced or refused.
    delay: Option<Duration>,
    last: Mutex<HashMap<String, Instant>>,
}

impl LoginDelay {
    /// A login delay of `delay` (`None` for none).
    pub fn new(delay: Option<Duration>) -> Self {
        LoginDelay {
            delay,
            last: Mutex::default(),
        }
    }

    /// The delay in whole seconds, for CAPA's `LOGIN-DELAY n`.
    pub fn seconds(&self) -> Option<u64> {
        self.delay.map(|d| d.as_secs())
    }

    // ANCHOR: login_delay_wait
    /// How much longer `user` must wait before logging in again, if at all.
    pub fn wait(&self, user: &str) -> Option<Duration> {
        let delay = self.delay?;
        // Nothing panics while holding this lock, so a poisoned map is still right.
        let last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let since = last.get(user)?.elapsed();
        delay.checked_sub(since).filter(|left| !left.is_zero())
    }

    /// `user` has just logged in: the delay counts from now.
    pub fn record(&self, user: &str) {
        if self.delay.is_some() {
            let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
            last.insert(user.to_string(), Instant::now());
        }
    }
    // ANCHOR_END: login_delay_wait
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x08_off_by_default_refuses_nothing() {
        let off = LoginDelay::default();
        off.record("alice");
        assert_eq!(off.wait("alice"), None);
        assert_eq!(off.seconds(), None);
    }

    #[test]
    fn x09_a_second_login_waits_out_the_delay_for_that_user_only() {
        let delay = LoginDelay::new(Some(Duration::from_secs(60)));
        assert_eq!(delay.wait("alice"), None);
        delay.record("alice");
        let left = delay.wait("alice").expect("alice must wait");
        assert!(left > Duration::from_secs(58) && left <= Duration::from_secs(60));
        assert_eq!(delay.wait("bob"), None);
        assert_eq!(delay.seconds(), Some(60));
    }

    #[test]
    fn x09_the_wait_ends() {
        let delay = LoginDelay::new(Some(Duration::from_millis(20)));
        delay.record("alice");
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(delay.wait("alice"), None);
    }
}
