//! Password-guessing limits: a sliding window of failures per key
//! ([`Limiter`]: an account, or a client address) and a bounded exponential
//! backoff per key ([`Backoff`]: an address and an account). Time is passed
//! in, so tests control it; the caller owns the state (one per process).
//! the `lockout` module combines them into the policy the service applies.

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
        if self.failures.len() > MAX_KEYS {
            let window = self.window;
            self.failures.retain(|_, q| {
                q.back()
                    .is_some_and(|t| now.saturating_duration_since(*t) < window)
            });
            keep_newest(&mut self.failures, |q| q.back().copied());
        }
    }

    /// A success clears the key's failures.
    pub fn succeeded(&mut self, key: &str) {
        self.failures.remove(key);
    }
}

/// Keys kept at most by a [`Limiter`] or a [`Backoff`]: past it, keys whose
/// failures have expired are dropped, then the older half of the rest.
pub const MAX_KEYS: usize = 100_000;

/// Drop the older half of `map` (by each value's last failure) when it is
/// still over [`MAX_KEYS`]: a flood of distinct keys costs bounded memory.
fn keep_newest<V>(map: &mut HashMap<String, V>, last: impl Fn(&V) -> Option<Instant>) {
    if map.len() <= MAX_KEYS {
        return;
    }
    let mut times: Vec<Instant> = map.values().filter_map(&last).collect();
    let middle = times.len() / 2;
    if middle == 0 {
        map.clear();
        return;
    }
    let (_, cutoff, _) = times.select_nth_unstable(middle);
    let cutoff = *cutoff;
    map.retain(|_, v| last(v).is_some_and(|t| t > cutoff));
}

/// How a [`Backoff`] grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// Failures in a row before any wait (the next attempt after the
    /// `free`-th failure waits).
    pub free: u32,
    /// The wait after the `free`-th failure; it doubles with each further
    /// failure ...
    pub first: Duration,
    /// ... up to this (the backoff is bounded: never a lock for good).
    pub cap: Duration,
    /// A key without a failure for this long starts over (at least `cap`).
    pub forget: Duration,
}

/// A bounded exponential backoff per key: once `free` failures are
/// reached, the next attempt waits `first` after the last failure, twice
/// that after one more failure, and so on, never more than `cap`. A success, or `forget` without a
/// failure, clears the key.
#[derive(Debug)]
pub struct Backoff {
    policy: BackoffPolicy,
    /// (failures in a row, the last one)
    keys: HashMap<String, (u32, Instant)>,
}

impl Backoff {
    pub fn new(policy: BackoffPolicy) -> Self {
        let forget = policy.forget.max(policy.cap);
        Backoff {
            policy: BackoffPolicy { forget, ..policy },
            keys: HashMap::new(),
        }
    }

    fn prune(&mut self, key: &str, now: Instant) {
        let forget = self.policy.forget;
        if self
            .keys
            .get(key)
            .is_some_and(|(_, last)| now.saturating_duration_since(*last) >= forget)
        {
            self.keys.remove(key);
        }
    }

    /// The wait after `failures` failures in a row: none for fewer than
    /// `free`, then `first`, doubling with each further failure, at most `cap`.
    pub fn wait_after(&self, failures: u32) -> Duration {
        let p = &self.policy;
        match failures.checked_sub(p.free) {
            None => Duration::ZERO,
            Some(past) => {
                let factor = 1u32.checked_shl(past).unwrap_or(u32::MAX);
                p.first.saturating_mul(factor).min(p.cap)
            }
        }
    }

    /// How long until an attempt for `key` is allowed again (None: now).
    pub fn retry_after(&mut self, key: &str, now: Instant) -> Option<Duration> {
        self.prune(key, now);
        let (failures, last) = *self.keys.get(key)?;
        let ready = last + self.wait_after(failures);
        (ready > now).then(|| ready - now)
    }

    /// How long ago `key` last failed, if it has failures still counted.
    pub fn since_last_failure(&mut self, key: &str, now: Instant) -> Option<Duration> {
        self.prune(key, now);
        self.keys
            .get(key)
            .map(|(_, last)| now.saturating_duration_since(*last))
    }

    /// Record a failed attempt.
    pub fn failed(&mut self, key: &str, now: Instant) {
        self.prune(key, now);
        let entry = self.keys.entry(key.to_string()).or_insert((0, now));
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
        if self.keys.len() > MAX_KEYS {
            let forget = self.policy.forget;
            self.keys
                .retain(|_, (_, last)| now.saturating_duration_since(*last) < forget);
            keep_newest(&mut self.keys, |(_, last)| Some(*last));
        }
    }

    /// A success clears the key.
    pub fn succeeded(&mut self, key: &str) {
        self.keys.remove(key);
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

    fn backoff() -> Backoff {
        Backoff::new(BackoffPolicy {
            free: 3,
            first: Duration::from_secs(60),
            cap: Duration::from_secs(900),
            forget: Duration::from_secs(3600),
        })
    }

    #[test]
    fn backoff_doubles_after_the_free_failures_and_is_capped() {
        let b = backoff();
        let waits: Vec<u64> = (0..12).map(|n| b.wait_after(n).as_secs()).collect();
        assert_eq!(
            waits,
            [0, 0, 0, 60, 120, 240, 480, 900, 900, 900, 900, 900],
            "free failures, then doubling, never past the cap"
        );
        assert_eq!(
            b.wait_after(u32::MAX),
            Duration::from_secs(900),
            "no overflow"
        );
    }

    #[test]
    fn backoff_waits_from_the_last_failure_and_ends() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut b = backoff();
        for s in 0..3 {
            assert_eq!(b.retry_after("a|admin", at(s)), None, "free attempt {s}");
            b.failed("a|admin", at(s));
        }
        assert_eq!(
            b.retry_after("a|admin", at(12)),
            Some(Duration::from_secs(50)),
            "a minute after the third failure"
        );
        assert_eq!(
            b.retry_after("b|admin", at(13)),
            None,
            "keys are independent"
        );
        assert_eq!(b.retry_after("a|admin", at(62)), None);
        // a stranger failing forever keeps the key waiting at most the cap
        let mut t = 62;
        for _ in 0..40 {
            b.failed("a|admin", at(t));
            let wait = b.retry_after("a|admin", at(t)).unwrap_or_default();
            assert!(wait <= Duration::from_secs(900), "{wait:?}");
            t += wait.as_secs();
            assert_eq!(
                b.retry_after("a|admin", at(t)),
                None,
                "allowed after the wait"
            );
        }
        assert_eq!(
            b.since_last_failure("a|admin", at(t)),
            Some(Duration::from_secs(900))
        );
        // quiet for `forget`: starts over
        assert_eq!(b.since_last_failure("a|admin", at(t + 3600)), None);
        b.failed("a|admin", at(t + 3600));
        assert_eq!(
            b.retry_after("a|admin", at(t + 3600)),
            None,
            "one failure is free"
        );
        b.succeeded("a|admin");
        assert_eq!(b.since_last_failure("a|admin", at(t + 3600)), None);
    }

    #[test]
    fn a_flood_of_keys_is_bounded() {
        let t0 = Instant::now();
        let mut b = backoff();
        for i in 0..MAX_KEYS + 10 {
            b.failed(&format!("k{i}"), t0 + Duration::from_millis(i as u64));
        }
        assert!(b.keys.len() <= MAX_KEYS, "{}", b.keys.len());
        let newest = format!("k{}", MAX_KEYS + 9);
        assert!(b.keys.contains_key(&newest), "the newest key is kept");
    }
}
