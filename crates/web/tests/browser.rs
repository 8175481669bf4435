//! The portal in a real headless Chromium (Debian `chromium` +
//! `chromium-driver`, installed by scripts/install-deps), driven over the W3C
//! WebDriver protocol by a few lines of reqwest: sign in, see the Users page,
//! press Synchronize Now (a real browser's same-origin form post with its CSRF
//! field), and a cross-site form post from another origin is refused.
//!
//! Skipped (with a message) when /usr/bin/chromedriver is missing, unless
//! `MFASYNC_REQUIRE_BROWSER=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use mfasync_core::auth::Reason;
use mfasync_core::report::directory::TestReport;
use mfasync_core::report::{Approved, Rejected, SyncNow, SyncReport};
use mfasync_core::user::Source;
use mfasync_core::MfaUser;
use mfasync_store::Store;
use mfasync_testkit::webdriver::{WebDriver as Driver, CHROMEDRIVER};
use mfasync_web::{Backend, Metrics, WebOptions};
use serde_json::{json, Value};

/// A PRODUCT.md-shaped JSON literal as the backend's typed report.
fn typed<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).unwrap()
}

struct Backend1 {
    syncs: Mutex<u32>,
}

#[async_trait]
impl Backend for Backend1 {
    async fn config_put(&self, _: &str, _: &str) -> Result<i64, Vec<String>> {
        Err(vec!["not in this test".into()])
    }
    async fn directory_test(&self) -> TestReport {
        TestReport::not_run("not in this test")
    }
    async fn sync_now(&self, _full: bool) -> Result<SyncNow, String> {
        *self.syncs.lock().unwrap() += 1;
        Ok(SyncNow::Ran(typed(
            json!({"mode": "full", "created": 2, "updated": 0, "enabled": 0, "disabled": 0,
                  "removed": 0, "unchanged": 0, "pending_approval": null}),
        )))
    }
    async fn plan(&self) -> Result<SyncReport, String> {
        Err("not in this test".into())
    }
    async fn approve(&self, _: &str, _: &str) -> Result<Approved, String> {
        Err("not in this test".into())
    }
    async fn reject(&self, _: &str, _: &str) -> Result<Rejected, String> {
        Err("not in this test".into())
    }
    async fn auth(&self, _: &str, _: &str) -> Result<(), Reason> {
        Err(Reason::DirectoryUnavailable)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_see_users_sync_now_and_cross_site_refused() {
    if !std::path::Path::new(CHROMEDRIVER).exists() {
        assert!(
            std::env::var("MFASYNC_REQUIRE_BROWSER").as_deref() != Ok("1"),
            "{CHROMEDRIVER} missing (scripts/install-deps installs it)"
        );
        eprintln!("skipped: {CHROMEDRIVER} missing (scripts/install-deps installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("mfa.db").display());
    let store: Arc<dyn Store> = Arc::from(mfasync_store::open(&url).await.unwrap());
    store
        .admin_set_password(
            "admin",
            &mfasync_web::auth::hash_password("browser-pw").unwrap(),
        )
        .await
        .unwrap();
    store
        .insert_user(&MfaUser {
            username: "bob.browser".into(),
            email: Some("bob@example.com".into()),
            enabled: true,
            source: Source::Manual,
            ..MfaUser::default()
        })
        .await
        .unwrap();
    let backend = Arc::new(Backend1 {
        syncs: Mutex::new(0),
    });
    // Secure cookies as in production: Chromium accepts them on http://127.0.0.1.
    let app = mfasync_web::router(
        backend.clone(),
        store.clone(),
        Arc::new(Metrics::new()),
        WebOptions::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    // Another origin, with a page that posts a form to the portal.
    let evil_page = format!(
        r#"<!doctype html><form id="f" method="post" action="{base}/sync"><input name="full" value="true"><input name="csrf" value="guess"></form><script>document.getElementById('f').submit()</script>"#
    );
    let evil = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let p = evil_page.clone();
            async move { axum::response::Html(p) }
        }),
    );
    let evil_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let evil_base = format!("http://{}", evil_listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(evil_listener, evil).await });

    let profile = tempfile::tempdir().unwrap();
    let d = Driver::start(profile.path()).await;

    d.goto(&format!("{base}/users")).await;
    assert_eq!(d.url().await, format!("{base}/login"), "sign-in required");
    d.type_into("input[name=username]", "admin").await;
    d.type_into("input[name=password]", "wrong").await;
    d.click("button[type=submit]").await;
    d.wait_source("Wrong username or password").await;
    d.type_into("input[name=username]", "admin").await;
    d.type_into("input[name=password]", "browser-pw").await;
    d.click("button[type=submit]").await;
    d.wait_url(&format!("{base}/")).await;
    d.wait_source("Sign out").await;

    d.goto(&format!("{base}/users")).await;
    // The stylesheet loads under the CSP (no inline style is used).
    let header = d.find("header").await;
    let bg = d
        .call(
            "GET",
            &format!("/element/{header}/css/background-color"),
            Value::Null,
        )
        .await;
    assert_eq!(bg, json!("rgba(31, 58, 95, 1)"));
    let page = d.source().await;
    assert!(page.contains("bob.browser"), "{page}");
    assert!(page.contains("1 of 1 users match"));

    d.goto(&format!("{base}/history")).await;
    d.click("#sync-now").await;
    d.wait_source("2 created").await;
    assert_eq!(*backend.syncs.lock().unwrap(), 1);

    // The cross-site post: refused, nothing runs.
    d.goto(&format!("{evil_base}/")).await;
    d.wait_url(&format!("{base}/sync")).await;
    d.wait_source("forbidden").await;
    assert_eq!(*backend.syncs.lock().unwrap(), 1, "no second sync");

    // Swagger UI renders the API document under the CSP (vendored files).
    d.goto(&format!("{base}/api/v1/docs/")).await;
    d.wait_source("opblock-summary-path").await;
    let page = d.wait_source("/api/v1/approvals/{id}/approve").await;
    assert!(page.contains("mfasync"), "the document's title: {page}");

    d.call("DELETE", "", Value::Null).await;
}

/// The seed prompts for a pending approval when the UI is opened: every page
/// shows a banner with the held counts whose link opens the Approvals page;
/// none without a pending approval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_approval_banner_on_every_page() {
    if !std::path::Path::new(CHROMEDRIVER).exists() {
        assert!(
            std::env::var("MFASYNC_REQUIRE_BROWSER").as_deref() != Ok("1"),
            "{CHROMEDRIVER} missing (scripts/install-deps installs it)"
        );
        eprintln!("skipped: {CHROMEDRIVER} missing (scripts/install-deps installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("mfa.db").display());
    let store: Arc<dyn Store> = Arc::from(mfasync_store::open(&url).await.unwrap());
    store
        .admin_set_password(
            "admin",
            &mfasync_web::auth::hash_password("browser-pw").unwrap(),
        )
        .await
        .unwrap();
    let app = mfasync_web::router(
        Arc::new(Backend1 {
            syncs: Mutex::new(0),
        }),
        store.clone(),
        Arc::new(Metrics::new()),
        WebOptions::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let profile = tempfile::tempdir().unwrap();
    let d = Driver::start(profile.path()).await;
    d.goto(&format!("{base}/login")).await;
    d.type_into("input[name=username]", "admin").await;
    d.type_into("input[name=password]", "browser-pw").await;
    d.click("button[type=submit]").await;
    d.wait_url(&format!("{base}/")).await;
    let page = d.wait_source("Sign out").await;
    assert!(!page.contains("approval-banner"), "none pending: {page}");

    let held = |action: &str, name: &str| mfasync_store::HeldChange {
        action: action.into(),
        username: name.into(),
        directory_id: None,
        reason: None,
    };
    store
        .create_approval(
            "apb",
            "fpb",
            &[
                held("disable", "u1"),
                held("disable", "u2"),
                held("remove", "u3"),
                held("remove", "u4"),
                held("remove", "u5"),
            ],
        )
        .await
        .unwrap();
    for path in ["/", "/users", "/history", "/sync", "/settings", "/tokens"] {
        d.goto(&format!("{base}{path}")).await;
        let banner = d.find("#approval-banner").await;
        let text = d
            .call("GET", &format!("/element/{banner}/text"), Value::Null)
            .await;
        let text = text.as_str().unwrap();
        assert!(
            text.contains("2 users to disable") && text.contains("3 users to remove"),
            "{path}: {text}"
        );
        // Styled by the served stylesheet (no inline style under the CSP).
        let bg = d
            .call(
                "GET",
                &format!("/element/{banner}/css/background-color"),
                Value::Null,
            )
            .await;
        assert_eq!(bg, json!("rgba(255, 244, 214, 1)"), "{path}");
    }
    d.goto(&format!("{base}/history")).await;
    d.click("#banner-link").await;
    d.wait_url(&format!("{base}/approvals")).await;
    d.wait_source("Approval apb").await;

    store
        .decide_approval(
            "apb",
            mfasync_store::ApprovalStatus::Rejected,
            "admin",
            None,
        )
        .await
        .unwrap();
    d.goto(&format!("{base}/users")).await;
    let page = d.wait_source("users match").await;
    assert!(!page.contains("approval-banner"), "decided: {page}");

    d.call("DELETE", "", Value::Null).await;
}
