//! Password-guessing limits of the web side (`core::lockout`, docs/web.md
//! "Lockouts"): one [`Limits`] for `POST /api/v1/auth`, one for portal
//! sign-in; the client address of a request; the [`RequestGate`] a password
//! check asks once it knows which account the username names.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use mfasync_core::auth::Reason;
use mfasync_core::lockout::{Account, Gate, Guard, Policy, Refusal};
use mfasync_core::ratelimit::BackoffPolicy;

use crate::WebOptions;

/// A key of the per-address backoff without a failure for this long starts over.
const BACKOFF_FORGET: Duration = Duration::from_secs(3600);

/// The address of requests whose client is not known (served without the
/// socket address): they share one set of address limits.
const UNKNOWN_CLIENT: &str = "unknown";

/// The counts of one way in (the API's password checks, or portal sign-in).
#[derive(Debug)]
pub struct Limits {
    guard: Mutex<Guard>,
}

impl Limits {
    /// `POST /api/v1/auth`: an account is locked (`account-locked`) after
    /// `login_max_failures` within `login_window`, from anywhere.
    pub fn for_api(opts: &WebOptions) -> Limits {
        Limits::new(Policy {
            account: Some((opts.login_max_failures, opts.login_window)),
            ..policy(opts)
        })
    }

    /// Portal sign-in: no account is locked as a whole (strangers must not
    /// lock an administrator out); per address and per address+account only.
    pub(crate) fn for_portal(opts: &WebOptions) -> Limits {
        Limits::new(Policy {
            account: None,
            ..policy(opts)
        })
    }

    fn new(policy: Policy) -> Limits {
        Limits {
            guard: Mutex::new(Guard::new(policy)),
        }
    }

    fn guard(&self) -> MutexGuard<'_, Guard> {
        // nothing panics while holding it; a poisoned guard still counts
        self.guard.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn check(&self, client: Option<&str>, account: &Account) -> Result<(), Refusal> {
        let client = client.unwrap_or(UNKNOWN_CLIENT);
        self.guard().check(Some(client), account, Instant::now())
    }

    /// A wrong password, known as each of `accounts` (counted once for the address).
    pub fn failed(&self, client: Option<&str>, accounts: &[&Account]) {
        let client = client.unwrap_or(UNKNOWN_CLIENT);
        self.guard().failed(Some(client), accounts, Instant::now());
    }

    pub fn succeeded(&self, client: Option<&str>, accounts: &[&Account]) {
        let client = client.unwrap_or(UNKNOWN_CLIENT);
        self.guard().succeeded(Some(client), accounts);
    }
}

fn policy(opts: &WebOptions) -> Policy {
    Policy {
        account: None,
        address: (opts.auth_client_max_failures, opts.auth_client_window),
        backoff: BackoffPolicy {
            free: u32::try_from(opts.login_max_failures).unwrap_or(u32::MAX),
            first: opts.backoff_first,
            cap: opts.backoff_cap,
            forget: BACKOFF_FORGET,
        },
    }
}

/// The gate of one request: checks the limits for the account the backend
/// names, and remembers it (a wrong password is counted against it) and
/// any refusal (answered with its wait).
pub struct RequestGate<'a> {
    limits: &'a Limits,
    client: Option<&'a str>,
    seen: Mutex<(Option<Account>, Option<Refusal>)>,
}

impl<'a> RequestGate<'a> {
    pub fn new(limits: &'a Limits, client: Option<&'a str>) -> Self {
        RequestGate {
            limits,
            client,
            seen: Mutex::new((None, None)),
        }
    }

    fn seen(&self) -> MutexGuard<'_, (Option<Account>, Option<Refusal>)> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The last account the check named, if it got that far.
    pub fn account(&self) -> Option<Account> {
        self.seen().0.clone()
    }

    /// The limits refused the account the check named.
    pub fn refusal(&self) -> Option<Refusal> {
        self.seen().1
    }
}

impl Gate for RequestGate<'_> {
    fn admit(&self, account: &Account) -> Result<(), Reason> {
        let verdict = self.limits.check(self.client, account);
        let mut seen = self.seen();
        seen.0 = Some(account.clone());
        match verdict {
            Ok(()) => Ok(()),
            Err(refusal) => {
                seen.1 = Some(refusal);
                Err(refusal.reason())
            }
        }
    }
}

/// `Retry-After` for a wait: whole seconds, at least 1.
pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// The client of a request as the text the limits are keyed on ([`client_address`]).
pub(crate) fn client_key(
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
    trusted: &[IpAddr],
) -> Option<String> {
    client_address(peer, headers, trusted).map(|a| a.to_string())
}

/// The client of a request: the socket peer, or, when the peer is a trusted
/// proxy, the right-most `X-Forwarded-For` address that is not itself a
/// trusted proxy. None without a socket address (not served over TCP).
fn client_address(
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
    trusted: &[IpAddr],
) -> Option<IpAddr> {
    let peer = peer?.ip();
    if !trusted.contains(&peer) {
        return Some(peer);
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|a| a.trim().parse::<IpAddr>())
        .collect::<Result<_, _>>()
        // a malformed header from a trusted proxy: count the proxy itself
        .unwrap_or_default();
    Some(
        forwarded
            .iter()
            .rev()
            .find(|a| !trusted.contains(a))
            .copied()
            .unwrap_or(peer),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn client_address_trusts_forwarded_for_only_from_trusted_proxies() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let peer = |s: &str| Some(SocketAddr::new(ip(s), 4000));
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.9, 198.51.100.7, 10.0.0.2"),
        );
        // not a trusted proxy: the header is ignored
        assert_eq!(
            client_address(peer("192.0.2.1"), &h, &[]),
            Some(ip("192.0.2.1"))
        );
        // trusted proxy: right-most address that is not a trusted proxy
        let trusted = [ip("10.0.0.1"), ip("10.0.0.2")];
        assert_eq!(
            client_address(peer("10.0.0.1"), &h, &trusted),
            Some(ip("198.51.100.7"))
        );
        // trusted proxy without a header, or with garbage: the proxy itself
        assert_eq!(
            client_address(peer("10.0.0.1"), &HeaderMap::new(), &trusted),
            Some(ip("10.0.0.1"))
        );
        let mut bad = HeaderMap::new();
        bad.insert(
            "x-forwarded-for",
            HeaderValue::from_static("1.2.3.4, nonsense"),
        );
        assert_eq!(
            client_address(peer("10.0.0.1"), &bad, &trusted),
            Some(ip("10.0.0.1"))
        );
        assert_eq!(client_address(None, &h, &trusted), None);
    }

    #[test]
    fn the_gate_remembers_the_account_and_the_refusal() {
        let opts = WebOptions {
            login_max_failures: 1,
            ..WebOptions::default()
        };
        let limits = Limits::for_api(&opts);
        let id = Account::directory(Some("u-1"), "uid=a,dc=x");
        let gate = RequestGate::new(&limits, Some("192.0.2.1"));
        assert_eq!(gate.admit(&id), Ok(()));
        assert_eq!(gate.account(), Some(id.clone()));
        assert_eq!(gate.refusal(), None);
        limits.failed(Some("192.0.2.1"), &[&id]);
        let gate = RequestGate::new(&limits, Some("192.0.2.9"));
        assert_eq!(gate.admit(&id), Err(Reason::AccountLocked));
        assert!(matches!(gate.refusal(), Some(Refusal::Locked(_))));
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(60_500)), 61);
    }
}
