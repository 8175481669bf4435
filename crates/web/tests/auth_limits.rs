//! `POST /api/v1/auth` is limited per client address as well as per account:
//! served for real on 127.0.0.1 with the socket peer as client address
//! (`into_make_service_with_connect_info`, as `mfasync serve` does), requests
//! sent from two loopback addresses. An address over its limit is refused
//! (`rate-limited`) only the names that failed from it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mfasync_core::auth::Reason;
use mfasync_core::report::directory::TestReport;
use mfasync_core::report::{Approved, Rejected, SyncNow, SyncReport};
use mfasync_store::Store;
use mfasync_web::{Backend, Metrics, WebOptions};
use reqwest::StatusCode;
use serde_json::{json, Value};

const TOKEN: &str = "auth-limits-test-token-0123456789";

/// Accepts "right" as everybody's password; counts the checks it was asked.
struct Directory {
    checks: AtomicUsize,
}

#[async_trait]
impl Backend for Directory {
    async fn config_put(&self, _: &str, _: &str) -> Result<i64, Vec<String>> {
        Err(vec!["not here".into()])
    }
    async fn directory_test(&self) -> TestReport {
        TestReport::not_run("not here")
    }
    async fn sync_now(&self, _: bool) -> Result<SyncNow, String> {
        Err("not here".into())
    }
    async fn plan(&self) -> Result<SyncReport, String> {
        Err("not here".into())
    }
    async fn approve(&self, _: &str, _: &[String], _: &str) -> Result<Approved, String> {
        Err("not here".into())
    }
    async fn reject(&self, _: &str, _: &[String], _: &str) -> Result<Rejected, String> {
        Err("not here".into())
    }
    async fn auth(&self, _username: &str, password: &str) -> Result<(), Reason> {
        self.checks.fetch_add(1, Ordering::SeqCst);
        if password == "right" {
            Ok(())
        } else {
            Err(Reason::InvalidCredentials)
        }
    }
}

struct Server {
    base: String,
    backend: Arc<Directory>,
    _dir: tempfile::TempDir,
}

async fn serve(opts: WebOptions) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("mfa.db").display());
    let store: Arc<dyn Store> = Arc::from(mfasync_store::open(&url).await.unwrap());
    store
        .token_create(&mfasync_store::AuthToken {
            token_hash: mfasync_web::auth::token_hash(TOKEN),
            kind: mfasync_store::TokenKind::Api,
            username: "admin".into(),
            label: Some("test".into()),
            csrf: None,
            created_at: "2026-01-01T00:00:00Z".into(),
            expires_at: None,
        })
        .await
        .unwrap();
    let backend = Arc::new(Directory {
        checks: AtomicUsize::new(0),
    });
    let app = mfasync_web::router(backend.clone(), store, Arc::new(Metrics::new()), opts);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    Server {
        base: format!("http://{addr}"),
        backend,
        _dir: dir,
    }
}

/// A client whose connections come from `from` (a loopback address).
fn client(from: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(from.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

async fn check(
    s: &Server,
    c: &reqwest::Client,
    user: &str,
    pw: &str,
    forwarded: Option<&str>,
) -> (StatusCode, Option<u64>, Value) {
    let mut req = c
        .post(format!("{}/api/v1/auth", s.base))
        .bearer_auth(TOKEN)
        .json(&json!({"username": user, "password": pw}));
    if let Some(f) = forwarded {
        req = req.header("x-forwarded-for", f);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
    (status, retry, resp.json().await.unwrap())
}

#[tokio::test]
async fn failures_from_one_address_refuse_the_names_that_failed_there_only() {
    let s = serve(WebOptions {
        auth_client_max_failures: 5,
        auth_client_window: Duration::from_secs(600),
        ..WebOptions::default()
    })
    .await;
    let a = client("127.0.0.1");
    let b = client("127.0.0.2");
    // one wrong password each for five usernames (far under the per-username limit)
    for i in 0..5 {
        let (st, _, v) = check(&s, &a, &format!("user{i}"), "guess", None).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(v["reason"], "invalid-credentials");
    }
    // a success in between does not reset the address's failures
    assert_eq!(check(&s, &b, "user0", "right", None).await.2["ok"], true);
    // over its limit, the address is refused the names that failed from it
    // (any spelling of them), without asking the directory ...
    let asked = s.backend.checks.load(Ordering::SeqCst);
    for name in ["user0", "user1", "USER2 ", "ｕｓｅｒ３"] {
        let (st, retry, v) = check(&s, &a, name, "right", None).await;
        assert_eq!(st, StatusCode::TOO_MANY_REQUESTS, "{name}");
        assert_eq!(v, json!({"ok": false, "reason": "rate-limited"}));
        let retry = retry.expect("Retry-After");
        assert!(
            (1..=600).contains(&retry),
            "Retry-After {retry} is within the window"
        );
    }
    assert_eq!(s.backend.checks.load(Ordering::SeqCst), asked);
    // ... while a right password for a name that did not fail there is checked
    let (st, _, v) = check(&s, &a, "fresh", "right", None).await;
    assert_eq!((st, v), (StatusCode::OK, json!({"ok": true})));
    assert_eq!(s.backend.checks.load(Ordering::SeqCst), asked + 1);
    // another address is not affected
    let (st, _, v) = check(&s, &b, "user1", "right", None).await;
    assert_eq!((st, v), (StatusCode::OK, json!({"ok": true})));
    // X-Forwarded-For from an untrusted peer changes nothing
    let (st, _, _) = check(&s, &a, "user2", "right", Some("192.0.2.50")).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_address_is_limited() {
    let s = serve(WebOptions {
        auth_client_max_failures: 3,
        trusted_proxies: vec!["127.0.0.1".parse().unwrap()],
        ..WebOptions::default()
    })
    .await;
    let proxy = client("127.0.0.1");
    for i in 0..3 {
        let (_, _, v) = check(&s, &proxy, &format!("u{i}"), "guess", Some("198.51.100.7")).await;
        assert_eq!(v["reason"], "invalid-credentials");
    }
    let (st, _, v) = check(&s, &proxy, "u0", "right", Some("198.51.100.7")).await;
    assert_eq!(
        (st, v),
        (
            StatusCode::TOO_MANY_REQUESTS,
            json!({"ok": false, "reason": "rate-limited"})
        ),
        "the forwarded client is refused the names it failed"
    );
    // other clients behind the same proxy still get through
    let (st, _, v) = check(&s, &proxy, "u0", "right", Some("198.51.100.8")).await;
    assert_eq!((st, v), (StatusCode::OK, json!({"ok": true})));
    // a spoofed left-most entry does not escape: the proxy appends the real peer
    let (st, _, _) = check(&s, &proxy, "u1", "right", Some("203.0.113.1, 198.51.100.7")).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn ten_wrong_passwords_lock_the_account_for_every_address() {
    let s = serve(WebOptions::default()).await;
    let a = client("127.0.0.1");
    let b = client("127.0.0.2");
    // ten wrong passwords lock the account (from anywhere) ...
    for _ in 0..10 {
        let (_, _, v) = check(&s, &a, "kim", "guess", None).await;
        assert_eq!(v["reason"], "invalid-credentials");
    }
    let (st, retry, v) = check(&s, &b, "kim", "right", None).await;
    assert_eq!(
        (st, v),
        (
            StatusCode::TOO_MANY_REQUESTS,
            json!({"ok": false, "reason": "account-locked"})
        )
    );
    assert!(retry.is_some_and(|r| (1..=300).contains(&r)), "{retry:?}");
}
