//! The password-guessing policy of the service (docs/web.md "Lockouts"):
//! which account an attempt is about ([`Account`]: a typed name folded, or
//! the directory entry it resolved to) and whether it may go ahead
//! ([`Guard`]), from three counts:
//!
//! - per account, a sliding window (the API's `account-locked`; the portal
//!   has none, so strangers cannot lock an administrator out everywhere);
//! - per client address, a sliding window of failures for any account: an
//!   address over it is `rate-limited` only for the accounts that failed
//!   from it lately, so a correct password of another account behind the
//!   same address (a NAT, a RADIUS server) is still checked;
//! - per address and account, a bounded exponential backoff: failures from
//!   one address slow that address down for that account, never another
//!   address, and never for longer than the cap.
//!
//! Time is passed in; the caller owns the state.

use std::time::{Duration, Instant};

use unicode_normalization::UnicodeNormalization;

use crate::auth::Reason;
use crate::ratelimit::{Backoff, BackoffPolicy, Limiter};

/// The account an attempt counts against: a typed username folded
/// ([`fold_name`]) until the directory names the account, then the entry's
/// unique id (or DN), so every spelling that finds the same entry shares
/// one count.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Account(String);

impl Account {
    /// A username as typed (trimmed, NFKC, case-folded).
    pub fn typed(username: &str) -> Account {
        Account(format!("name:{}", fold_name(username)))
    }

    /// The directory entry a username resolved to: its unique id (as the
    /// sync stores it), else its DN.
    pub fn directory(unique_id: Option<&str>, dn: &str) -> Account {
        match unique_id.map(str::trim).filter(|id| !id.is_empty()) {
            Some(id) => Account(format!("id:{}", id.to_lowercase())),
            None => Account(format!("dn:{}", fold_dn(dn))),
        }
    }

    /// The key the counts are kept under.
    pub fn key(&self) -> &str {
        &self.0
    }
}

/// A username folded for comparison: Unicode NFKC (fullwidth `ｕｓｅｒ２` is
/// `user2`), full case folding, NFKC again, surrounding white space removed
/// (also what NFKC made white space, such as U+3000).
pub fn fold_name(typed: &str) -> String {
    let composed: String = typed.nfkc().collect();
    let folded = caseless::default_case_fold_str(&composed);
    folded.nfkc().collect::<String>().trim().to_string()
}

/// A DN folded like a name, with the spaces around its separators removed.
fn fold_dn(dn: &str) -> String {
    fold_name(dn)
        .split(',')
        .map(|rdn| rdn.split('=').map(str::trim).collect::<Vec<_>>().join("="))
        .collect::<Vec<_>>()
        .join(",")
}

/// Asked by a password check once it knows which account a username names,
/// before the password is tried: a refusal is the check's answer.
pub trait Gate: Send + Sync {
    fn admit(&self, account: &Account) -> Result<(), Reason>;
}

/// No limits (`mfasync auth` on the command line).
pub struct Open;

impl Gate for Open {
    fn admit(&self, _: &Account) -> Result<(), Reason> {
        Ok(())
    }
}

/// Why an attempt is refused, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The account has too many failures, from anywhere (`account-locked`).
    Locked(Duration),
    /// This address has too many failures, for this account or, while it is
    /// over its limit, overall (`rate-limited`).
    RateLimited(Duration),
}

impl Refusal {
    pub fn reason(self) -> Reason {
        match self {
            Refusal::Locked(_) => Reason::AccountLocked,
            Refusal::RateLimited(_) => Reason::RateLimited,
        }
    }

    /// How long until the attempt would be allowed.
    pub fn wait(self) -> Duration {
        match self {
            Refusal::Locked(w) | Refusal::RateLimited(w) => w,
        }
    }
}

/// The limits a [`Guard`] applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Failures per account within the window after which the account is
    /// refused from every address (None: accounts are never locked as a whole).
    pub account: Option<(usize, Duration)>,
    /// Failures per address (any accounts) within the window after which the
    /// address is over its limit.
    pub address: (usize, Duration),
    /// Per address and account.
    pub backoff: BackoffPolicy,
}

/// The counts of one policy (one for the API, one for portal sign-in).
#[derive(Debug)]
pub struct Guard {
    accounts: Option<Limiter>,
    addresses: Limiter,
    address_window: Duration,
    pairs: Backoff,
}

impl Guard {
    pub fn new(policy: Policy) -> Guard {
        let address_window = policy.address.1;
        Guard {
            accounts: policy
                .account
                .map(|(max, window)| Limiter::new(max, window)),
            addresses: Limiter::new(policy.address.0, address_window),
            address_window,
            pairs: Backoff::new(BackoffPolicy {
                // the "failed lately" of an address over its limit must be remembered
                forget: policy.backoff.forget.max(address_window),
                ..policy.backoff
            }),
        }
    }

    /// Whether an attempt for `account` from `address` (None: not known, no
    /// address limits) may be checked now.
    pub fn check(
        &mut self,
        address: Option<&str>,
        account: &Account,
        now: Instant,
    ) -> Result<(), Refusal> {
        if let Some(accounts) = &mut self.accounts {
            if let Some(wait) = accounts.retry_after(account.key(), now) {
                return Err(Refusal::Locked(wait));
            }
        }
        let Some(address) = address else {
            return Ok(());
        };
        let pair = pair_key(address, account);
        if let Some(wait) = self.pairs.retry_after(&pair, now) {
            return Err(Refusal::RateLimited(wait));
        }
        // Over its limit, an address is refused only the accounts that failed
        // from it within the window: a correct password of any other account
        // is still checked (everyone behind one NAT is not locked out).
        if let Some(over) = self.addresses.retry_after(address, now) {
            if let Some(ago) = self.pairs.since_last_failure(&pair, now) {
                if ago < self.address_window {
                    return Err(Refusal::RateLimited(over.min(self.address_window - ago)));
                }
            }
        }
        Ok(())
    }

    /// A wrong password for each of `accounts` (the same attempt under the
    /// names it is known by): the address counts it once.
    pub fn failed(&mut self, address: Option<&str>, accounts: &[&Account], now: Instant) {
        for account in accounts {
            if let Some(limiter) = &mut self.accounts {
                limiter.failed(account.key(), now);
            }
            if let Some(address) = address {
                self.pairs.failed(&pair_key(address, account), now);
            }
        }
        if let Some(address) = address {
            self.addresses.failed(address, now);
        }
    }

    /// A correct password: the accounts' failures are cleared (the address's
    /// are not: one known account must not reset a guessing run).
    pub fn succeeded(&mut self, address: Option<&str>, accounts: &[&Account]) {
        for account in accounts {
            if let Some(limiter) = &mut self.accounts {
                limiter.succeeded(account.key());
            }
            if let Some(address) = address {
                self.pairs.succeeded(&pair_key(address, account));
            }
        }
    }
}

fn pair_key(address: &str, account: &Account) -> String {
    format!("{address}\u{0}{}", account.key())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn policy(account: Option<usize>) -> Policy {
        Policy {
            account: account.map(|n| (n, 5 * MIN)),
            address: (50, 5 * MIN),
            backoff: BackoffPolicy {
                free: 10,
                first: MIN,
                cap: 15 * MIN,
                forget: 60 * MIN,
            },
        }
    }

    #[test]
    fn names_fold_to_one_key() {
        let key = |s: &str| Account::typed(s).key().to_string();
        assert_eq!(key("user2"), "name:user2");
        for spelling in [
            "user2 ",
            " USER2",
            "ｕｓｅｒ２",
            "Ｕｓｅｒ２\u{3000}",
            "\tuser2\n",
        ] {
            assert_eq!(key(spelling), "name:user2", "{spelling:?}");
        }
        assert_eq!(fold_name("Straße"), "strasse", "full case folding");
        assert_eq!(fold_name("ﬁle"), "file", "compatibility ligature");
        assert_ne!(key("user2"), key("user 2"));
        assert_eq!(
            Account::directory(Some("ABC-1"), "uid=x"),
            Account::directory(Some("abc-1"), "uid=y"),
            "the unique id decides"
        );
        assert_eq!(
            Account::directory(None, "uid=User2, ou=People,dc=example,dc=com"),
            Account::directory(Some(" "), "UID=user2,ou=people, dc=example,dc=com")
        );
        assert_ne!(
            Account::directory(Some("abc"), "uid=x").key(),
            Account::typed("abc").key(),
            "a typed name never collides with an id"
        );
    }

    #[test]
    fn an_address_over_its_limit_still_gets_correct_passwords_checked() {
        let t0 = Instant::now();
        let mut g = Guard::new(policy(Some(10)));
        let a = Some("192.0.2.1");
        // 50 failures from one address over 10 accounts (5 each)
        for i in 0..50u64 {
            let victim = Account::typed(&format!("victim{}", i % 10));
            assert_eq!(
                g.check(a, &victim, t0 + Duration::from_secs(i)),
                Ok(()),
                "{i}"
            );
            g.failed(a, &[&victim], t0 + Duration::from_secs(i));
        }
        let now = t0 + Duration::from_secs(60);
        // an account that did not fail from there is checked ...
        assert_eq!(g.check(a, &Account::typed("alice"), now), Ok(()));
        // ... the ones that did are refused for the address, not locked
        let refused = g.check(a, &Account::typed("victim3"), now);
        assert!(
            matches!(refused, Err(Refusal::RateLimited(_))),
            "{refused:?}"
        );
        assert_eq!(
            refused.err().map(Refusal::reason),
            Some(Reason::RateLimited)
        );
        // and from another address they are not refused at all
        assert_eq!(
            g.check(Some("192.0.2.2"), &Account::typed("victim3"), now),
            Ok(())
        );
        // a wrong guess for a fresh account counts, then that one is refused too
        g.failed(a, &[&Account::typed("alice")], now);
        assert!(matches!(
            g.check(a, &Account::typed("alice"), now),
            Err(Refusal::RateLimited(_))
        ));
        // the refusal ends once those failures leave the window
        let later = now + 5 * MIN;
        assert_eq!(g.check(a, &Account::typed("alice"), later), Ok(()));
        assert_eq!(g.check(a, &Account::typed("victim3"), later), Ok(()));
    }

    #[test]
    fn an_account_lock_holds_for_every_address_and_says_so() {
        let t0 = Instant::now();
        let mut g = Guard::new(policy(Some(10)));
        let user2 = Account::directory(Some("uuid-2"), "uid=user2,dc=example");
        for i in 0..10u64 {
            let from = format!("198.51.100.{i}");
            g.failed(Some(&from), &[&user2], t0 + Duration::from_secs(i));
        }
        let now = t0 + Duration::from_secs(20);
        for from in [Some("203.0.113.1"), None] {
            let r = g.check(from, &user2, now);
            assert_eq!(r.err().map(Refusal::reason), Some(Reason::AccountLocked));
        }
        assert_eq!(
            g.check(
                Some("203.0.113.1"),
                &user2,
                t0 + 5 * MIN + Duration::from_secs(1)
            ),
            Ok(()),
            "the oldest failure left the window"
        );
        g.succeeded(Some("198.51.100.1"), &[&user2]);
        assert_eq!(g.check(None, &user2, now), Ok(()), "a success clears it");
    }

    #[test]
    fn without_an_account_lock_a_name_is_slowed_only_where_it_failed() {
        let t0 = Instant::now();
        let mut g = Guard::new(policy(None));
        let admin = Account::typed("admin");
        let (a, b) = (Some("192.0.2.1"), Some("192.0.2.2"));
        // a stranger at A fails for ever: A waits, never more than the cap
        let mut t = t0;
        for i in 0..200 {
            if let Err(r) = g.check(a, &admin, t) {
                assert!(matches!(r, Refusal::RateLimited(_)), "{r:?}");
                assert!(r.wait() <= 15 * MIN, "bounded: {r:?}");
                assert!(i >= 10, "ten free failures");
                t += r.wait();
                assert_eq!(g.check(a, &admin, t), Ok(()), "allowed after the wait");
            }
            g.failed(a, &[&admin], t);
            // the administrator at B is never refused
            assert_eq!(g.check(b, &admin, t), Ok(()));
        }
        assert!(t - t0 > 24 * 60 * MIN, "200 guesses took over a day");
        assert_eq!(
            g.check(a, &admin, t),
            Err(Refusal::RateLimited(15 * MIN)),
            "the wait stays at the cap"
        );
        g.succeeded(b, &[&admin]);
        assert!(g.check(a, &admin, t).is_err(), "B's success is B's");
    }
}
