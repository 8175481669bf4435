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
    async fn approve(&self, _: &str, _: &[String], _: &str) -> Result<Approved, String> {
        Err("not in this test".into())
    }
    async fn reject(&self, _: &str, _: &[String], _: &str) -> Result<Rejected, String> {
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
        limit: None,
        decision: None,
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

/// Visible text of the page that looks like a key name (`first_name`): code,
/// preformatted text and form fields aside, where key names belong.
const KEY_NAMES_JS: &str = r#"
const body = document.body.cloneNode(true);
body.querySelectorAll('code, pre, textarea, select, script, noscript, title').forEach(e => e.remove());
return body.textContent.match(/\b[a-z0-9]+(_[a-z0-9]+)+\b/g) || [];
"#;

/// Every portal page at 1280×800 in Chromium: no horizontal scrolling, no
/// key names shown as labels, a favicon, and readable times.
#[tokio::test]
async fn every_page_fits_1280_pixels_and_shows_labels() {
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
    // A configuration with two items whose DNs are long, users with every
    // field filled, a run, a pending approval, a token and a server.
    let long_ou = "OU=Regional Sales and Customer Success,OU=Europe Middle East and Africa,OU=Departments,DC=corp,DC=example,DC=com";
    store
        .put_config(&format!(
            "[directory]\nsource = \"ldap\"\nservers = [\"ldap://dc1.corp.example.com\", \"ldap://dc2.corp.example.com\"]\n\n[directory.query_bind]\ntype = \"simple\"\ndn = \"cn=svc,dc=x\"\npassword = \"pw\"\n\n[[sync.items]]\ndn = \"{long_ou}\"\nid = \"6f1c2d3e-0000-4000-8000-00000000abcd\"\n\n[[sync.items]]\nkind = \"security-group\"\ndn = \"CN=MFA Users,{long_ou}\"\n"
        ))
        .await
        .unwrap();
    for i in 0..120 {
        store
            .insert_user(&MfaUser {
                username: format!("firstname.lastname{i}@corp.example.com"),
                directory_id: Some(format!("6f1c2d3e-0000-4000-8000-{i:012}")),
                dn: Some(format!("CN=Firstname Lastname {i},{long_ou}")),
                first_name: Some("Firstname".into()),
                last_name: Some(format!("Lastname {i}")),
                email: Some(format!("firstname.lastname{i}@corp.example.com")),
                user_group: Some("Regional Sales and Customer Success".into()),
                description: Some("Regional manager for key accounts, Berlin office".into()),
                primary_phone: Some("+49 30 1234567890".into()),
                mobile_phone: Some("+49 170 1234567".into()),
                oath_token_language: Some("de".into()),
                method: Some("phone-call".into()),
                enabled: i % 7 != 0,
                source: Source::Directory,
                sync_item: Some(long_ou.into()),
                ..MfaUser::default()
            })
            .await
            .unwrap();
    }
    let id = store.run_started("full").await.unwrap();
    store
        .run_finished(&mfasync_store::SyncRun {
            id,
            started_at: String::new(),
            finished_at: Some("2026-01-01T00:00:00.123456789Z".into()),
            mode: "full".into(),
            created: 120,
            updated: 0,
            enabled: 0,
            disabled: 0,
            removed: 0,
            unchanged: 0,
            error: None,
            entries_read: None,
            interrupted: false,
            note: None,
        })
        .await
        .unwrap();
    store
        .create_approval(
            "ap1",
            "fp1",
            &[mfasync_store::HeldChange {
                action: "remove".into(),
                username: "firstname.lastname1@corp.example.com".into(),
                directory_id: None,
                reason: Some("no longer in any sync item".into()),
                limit: None,
                decision: None,
            }],
        )
        .await
        .unwrap();
    store
        .token_create(&mfasync_store::AuthToken {
            token_hash: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".into(),
            kind: mfasync_store::TokenKind::Api,
            username: "admin".into(),
            label: Some("monitoring".into()),
            csrf: None,
            created_at: "2026-01-01T00:00:00Z".into(),
            expires_at: None,
        })
        .await
        .unwrap();
    store
        .server_heartbeat(&mfasync_store::ServerInfo {
            name: "mfa-sync-01.corp.example.com".into(),
            instance: "i1".into(),
            address: "https://mfa-sync-01.corp.example.com:8443".into(),
            version: "0.1.0".into(),
            started_ms: 1_767_225_600_000,
            heartbeat_ms: 1_767_225_600_000,
            lease_ms: 30_000,
        })
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
    d.call(
        "POST",
        "/window/rect",
        json!({"x": 0, "y": 0, "width": 1280, "height": 800}),
    )
    .await;
    d.goto(&format!("{base}/login")).await;
    d.type_into("input[name=username]", "admin").await;
    d.type_into("input[name=password]", "browser-pw").await;
    d.click("button[type=submit]").await;
    d.wait_url(&format!("{base}/")).await;
    d.wait_source("Sign out").await;

    let script = |s: &str| json!({"script": s, "args": []});
    let pages = [
        "/",
        "/settings",
        "/settings/smtp",
        "/settings/versions",
        "/settings/versions/1",
        "/filters",
        "/attributes",
        "/sync",
        "/sync/browse?kind=container",
        "/sync/items/0/edit",
        "/users",
        "/users?page=2",
        "/users/firstname.lastname1@corp.example.com",
        "/approvals",
        "/history",
        "/outbox",
        "/tokens",
        "/servers",
    ];
    for path in pages {
        d.goto(&format!("{base}{path}")).await;
        d.wait_source("Sign out").await;
        let widths = d
            .call(
                "POST",
                "/execute/sync",
                script("return [document.documentElement.scrollWidth, document.documentElement.clientWidth];"),
            )
            .await;
        let (scroll, client) = (widths[0].as_i64().unwrap(), widths[1].as_i64().unwrap());
        assert!(client >= 1200, "{path}: window {client} px");
        assert!(scroll <= client, "{path}: {scroll} px wide in {client} px");
        let keys = d.call("POST", "/execute/sync", script(KEY_NAMES_JS)).await;
        assert_eq!(keys, json!([]), "{path}: key names shown");
        let icon = d
            .call(
                "POST",
                "/execute/sync",
                script("return document.querySelector('link[rel=icon]').href;"),
            )
            .await;
        assert_eq!(icon, json!(format!("{base}/static/favicon.svg")), "{path}");
    }
    // Times to the second in the browser's zone, the stored time on hover.
    d.goto(&format!("{base}/history")).await;
    d.wait_source("Sign out").await;
    let finished = d
        .call(
            "POST",
            "/execute/sync",
            script("const t = document.querySelector('time[title=\"2026-01-01T00:00:00.123456789Z\"]'); return t && t.textContent;"),
        )
        .await;
    let finished = finished.as_str().unwrap_or_default().to_string();
    assert_eq!(finished.len(), "2026-01-01 00:00:00".len(), "{finished}");
    assert!(finished.ends_with(":00:00"), "{finished}");
    // The user's page by labels; the list paged by 100.
    d.goto(&format!(
        "{base}/users/firstname.lastname1@corp.example.com"
    ))
    .await;
    let page = d.wait_source("OATH token language").await;
    assert!(page.contains("First name") && !page.contains("first_name"));
    d.goto(&format!(
        "{base}/users?q=firstname&user_group=Regional+Sales+and+Customer+Success"
    ))
    .await;
    d.wait_source("120 of 120 users match; 1 to 100 are shown")
        .await;
    d.click("#next-page").await;
    let page = d.wait_source("101 to 120 are shown").await;
    assert!(page.contains("Page 2 of 2"), "{page}");
    let url = d.url().await;
    assert!(
        url.contains("q=firstname") && url.contains("user_group=Regional"),
        "{url}"
    );
    // Synchronize Now's progress page fits too.
    d.goto(&format!("{base}/history")).await;
    d.click("#sync-now").await;
    d.wait_source("2 created").await;
    let fits = d
        .call(
            "POST",
            "/execute/sync",
            script("return document.documentElement.scrollWidth <= document.documentElement.clientWidth;"),
        )
        .await;
    assert_eq!(fits, json!(true), "the progress page overflows");
    let keys = d.call("POST", "/execute/sync", script(KEY_NAMES_JS)).await;
    assert_eq!(keys, json!([]), "progress page: key names shown");
    let favicon = reqwest::get(format!("{base}/static/favicon.svg"))
        .await
        .unwrap();
    assert_eq!(favicon.headers()["content-type"], "image/svg+xml");

    d.call("DELETE", "", Value::Null).await;
}
