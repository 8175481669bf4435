//! Password-guessing limits for LDAP-bind authentication: a sliding window of
//! failures per key (a username, or a client address). Time is passed in, so
//! tests control it; the caller owns the state (one limiter per process).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Limiter {
    max_failures: usize,
    window: Duration,
    failures: HashMap<String, VecDeque<Instant>>,
}

impl Limiter {
    /// At most `max_failures` failed attempts per key within `window`.
    pub fn new(max_failures: usize, window: Duration) -> Self {
        Limiter {
            max_failures,
            window,
            failures: HashMap::new(),
        }
    }

    fn prune(&mut self, key: &str, now: Instant) {
        let window = self.window;
        if let Some(q) = self.failures.get_mut(key) {
            while q
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) >= window)
            {
                q.pop_front();
            }
            if q.is_empty() {
                self.failures.remove(key);
            }
        }
    }

    /// Whether an attempt for `key` may go to the directory now.
    pub fn allowed(&mut self, key: &str, now: Instant) -> bool {
        self.prune(key, now);
        self.failures.get(key).map_or(0, VecDeque::len) < self.max_failures
    }

    /// How long until an attempt for `key` is allowed again (None: allowed now).
    pub fn retry_after(&mut self, key: &str, now: Instant) -> Option<Duration> {
        self.prune(key, now);
        let q = self.failures.get(key)?;
        if q.len() < self.max_failures {
            return None;
        }
        // allowed again once enough of the oldest failures left the window
        let oldest_to_expire = q.get(q.len() - self.max_failures)?;
        Some(
            self.window
                .saturating_sub(now.saturating_duration_since(*oldest_to_expire)),
        )
    }

    /// Record a failed attempt.
    pub fn failed(&mut self, key: &str, now: Instant) {
        self.prune(key, now);
        self.failures
            .entry(key.to_string())
            .or_default()
            .push_back(now);
        // bound memory against a flood of distinct keys
        if self.failures.len() > 100_000 {
            let window = self.window;
            self.failures.retain(|_, q| {
                q.back()
                    .is_some_and(|t| now.saturating_duration_since(*t) < window)
            });
        }
    }

    /// A success clears the key's failures.
    pub fn succeeded(&mut self, key: &str) {
        self.failures.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_limits_and_recovers() {
        let t0 = Instant::now();
        let mut l = Limiter::new(3, Duration::from_secs(60));
        for i in 0..3 {
            assert!(l.allowed("alice", t0 + Duration::from_secs(i)));
            l.failed("alice", t0 + Duration::from_secs(i));
        }
        assert!(!l.allowed("alice", t0 + Duration::from_secs(10)));
        assert!(
            l.allowed("bob", t0 + Duration::from_secs(10)),
            "keys are independent"
        );
        assert!(!l.allowed("alice", t0 + Duration::from_secs(59)));
        assert!(
            l.allowed("alice", t0 + Duration::from_secs(61)),
            "oldest failure left the window"
        );
        l.succeeded("alice");
        assert!(l.allowed("alice", t0 + Duration::from_secs(61)));
    }

    #[test]
    fn retry_after_is_when_the_oldest_counted_failure_leaves() {
        let t0 = Instant::now();
        let mut l = Limiter::new(2, Duration::from_secs(60));
        assert_eq!(l.retry_after("ip", t0), None);
        l.failed("ip", t0);
        assert_eq!(l.retry_after("ip", t0), None);
        l.failed("ip", t0 + Duration::from_secs(10));
        assert_eq!(
            l.retry_after("ip", t0 + Duration::from_secs(20)),
            Some(Duration::from_secs(40))
        );
        // a third failure (counted while blocked) keeps it blocked longer
        l.failed("ip", t0 + Duration::from_secs(30));
        assert_eq!(
            l.retry_after("ip", t0 + Duration::from_secs(30)),
            Some(Duration::from_secs(40))
        );
        assert_eq!(l.retry_after("ip", t0 + Duration::from_secs(70)), None);
    }
}
