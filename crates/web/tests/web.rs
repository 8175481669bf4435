//! The web application served for real on 127.0.0.1 (an ephemeral port),
//! driven over HTTP with reqwest: an in-test `Backend` and a real SQLite
//! store in a temp dir.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use mfasync_core::auth::Reason;
use mfasync_core::report::directory::TestReport;
use mfasync_core::report::{Approved, Rejected, SyncNow, SyncProgress, SyncReport};
use mfasync_core::user::Source;
use mfasync_core::MfaUser;
use mfasync_store::{HeldChange, Store, UserDecision};
use mfasync_web::{Backend, Metrics, WebOptions};
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{redirect, Client, StatusCode};
use serde_json::{json, Value};

const ADMIN: &str = "admin";
const PASSWORD: &str = "correct horse battery staple";

/// Stands in for the service: records calls, answers PRODUCT.md shapes.
/// A PRODUCT.md-shaped JSON literal as the backend's typed report.
fn typed<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).unwrap()
}

struct FakeBackend {
    store: Arc<dyn Store>,
    calls: Mutex<Vec<String>>,
}

#[async_trait]
impl Backend for FakeBackend {
    async fn config_put(&self, toml: &str, actor: &str) -> Result<i64, Vec<String>> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("config_put by {actor}"));
        mfasync_core::config::parse(toml)
            .map_err(|errs| errs.iter().map(ToString::to_string).collect::<Vec<_>>())?;
        self.store
            .put_config(toml)
            .await
            .map_err(|e| vec![e.to_string()])
    }
    async fn directory_test(&self) -> TestReport {
        typed(
            json!({"ok": true, "server": "ldap://127.0.0.1:3890", "vendor": "openldap", "tried": [],
               "steps": [{"step": "connect", "ok": true, "detail": "connected in 2 ms"},
                         {"step": "bind", "ok": true, "detail": "bound as <cn=svc>"}],
               "supports": {"paged_results": true, "syncrepl": true}}),
        )
    }
    async fn directory_entries(
        &self,
        kind: &str,
        _limit: usize,
    ) -> Result<Vec<(String, String)>, String> {
        Ok(match kind {
            "container" => vec![
                ("DC=x".into(), "x".into()),
                ("OU=Sales,DC=x".into(), "Sales".into()),
                ("OU=EMEA,OU=Sales,DC=x".into(), "EMEA <&>".into()),
            ],
            _ => vec![("CN=VPN Users,OU=Groups,DC=x".into(), "VPN Users".into())],
        })
    }
    async fn directory_test_candidate(&self, toml: &str) -> TestReport {
        let cfg = mfasync_core::config::parse(toml).unwrap();
        self.calls.lock().unwrap().push(format!(
            "test candidate {} password={}",
            cfg.directory.servers.join(","),
            cfg.directory.query_bind.password.as_deref().unwrap_or("-")
        ));
        typed(
            json!({"ok": true, "server": cfg.directory.servers[0], "vendor": "openldap",
               "steps": [{"step": "connect", "ok": true, "detail": "connected"}],
               "supports": {}, "tried": []}),
        )
    }
    fn sync_progress(&self) -> SyncProgress {
        // The fake's cycle "reads" 11 entries (3 created, 1 updated, 7 unchanged).
        let synced = self
            .calls
            .lock()
            .unwrap()
            .iter()
            .any(|c| c.starts_with("sync "));
        typed(
            json!({"entries_read": if synced { 11 } else { 0 }, "phase": "reading directory users"}),
        )
    }
    async fn sync_now(&self, full: bool) -> Result<SyncNow, String> {
        self.calls.lock().unwrap().push(format!("sync full={full}"));
        Ok(SyncNow::Ran(typed(
            json!({"mode": "full", "created": 3, "updated": 1, "enabled": 0, "disabled": 0,
                  "removed": 0, "unchanged": 7, "pending_approval": null}),
        )))
    }
    async fn plan(&self) -> Result<SyncReport, String> {
        Ok(typed(
            json!({"mode": "full", "created": 1, "updated": 0, "enabled": 0, "disabled": 0,
                  "removed": 0, "unchanged": 0, "pending_approval": null,
                  "changes": [{"action": "create", "username": "new", "fields": []}]}),
        ))
    }
    async fn otp_enroll(
        &self,
        username: &str,
        actor: &str,
    ) -> Result<mfasync_web::OtpEnrollment, String> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("otp_enroll {username} by {actor}"));
        if !self
            .store
            .otp_enroll(username, "v1:fake", actor)
            .await
            .map_err(|e| e.to_string())?
        {
            return Err(format!("no MFA user named {username}"));
        }
        Ok(mfasync_web::OtpEnrollment {
            username: username.to_string(),
            uri: format!("otpauth://totp/mfasync:{username}?secret=FAKE&x=<y>"),
            qr_svg: "<svg id=\"fake-qr\"></svg>".into(),
        })
    }
    async fn otp_check(&self, username: &str, code: &str) -> Result<Option<String>, String> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("otp_check {username}"));
        Ok((code != "123456").then(|| "wrong-code".to_string()))
    }
    async fn approve(&self, id: &str, users: &[String], actor: &str) -> Result<Approved, String> {
        let whom = match users.is_empty() {
            true => String::new(),
            false => format!(" for {}", users.join(",")),
        };
        self.calls
            .lock()
            .unwrap()
            .push(format!("approve {id} by {actor}{whom}"));
        if !users.is_empty() {
            let a = self
                .store
                .decide_users(id, UserDecision::Approved, users, actor, None)
                .await
                .map_err(|e| e.to_string())?;
            return Ok(typed(
                json!({"id": id, "status": a.status.as_str(), "disabled": 0,
                "removed": 0, "no_longer_needed": [], "still_pending": a.still_pending()}),
            ));
        }
        self.store
            .decide_approval(id, mfasync_store::ApprovalStatus::Approved, actor, None)
            .await
            .map(|_| {
                typed(
                    json!({"id": id, "status": "approved", "disabled": 0, "removed": 0,
                             "no_longer_needed": []}),
                )
            })
            .map_err(|e| e.to_string())
    }
    async fn reject(&self, id: &str, users: &[String], actor: &str) -> Result<Rejected, String> {
        if !users.is_empty() {
            self.calls
                .lock()
                .unwrap()
                .push(format!("reject {id} by {actor} for {}", users.join(",")));
            let a = self
                .store
                .decide_users(id, UserDecision::Rejected, users, actor, None)
                .await
                .map_err(|e| e.to_string())?;
            return Ok(typed(json!({"id": id, "status": a.status.as_str(),
                "still_pending": a.still_pending()})));
        }
        self.store
            .decide_approval(id, mfasync_store::ApprovalStatus::Rejected, actor, None)
            .await
            .map(|_| typed(json!({"id": id, "status": "rejected"})))
            .map_err(|e| e.to_string())
    }
    async fn auth(&self, username: &str, password: &str) -> Result<(), Reason> {
        match (username, password) {
            ("alice", "pw") => Ok(()),
            ("alice", _) => Err(Reason::InvalidCredentials),
            _ => Err(Reason::NotAnMfaUser),
        }
    }
}

struct Server {
    base: String,
    host: String,
    store: Arc<dyn Store>,
    backend: Arc<FakeBackend>,
    client: Client,
    /// The router's `Debug` output (its routes; `served_routes`).
    routes: String,
    _dir: tempfile::TempDir,
}

fn test_key() -> mfasync_web::secret::SecretKey {
    mfasync_web::secret::SecretKey::from_hex(
        "8f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0",
    )
    .unwrap()
}

/// The query bind password as stored: sealed, opened with the test key.
fn stored_password(cfg: &mfasync_core::config::Config) -> Option<String> {
    assert!(
        cfg.directory.query_bind.password.is_none(),
        "never stored in clear"
    );
    cfg.directory
        .query_bind
        .password_encrypted
        .as_ref()
        .map(|s| test_key().open("directory.query_bind", s).unwrap())
}

fn stored_smtp_password(cfg: &mfasync_core::config::Config) -> Option<String> {
    let smtp = cfg.smtp.clone().unwrap_or_default();
    assert!(smtp.password.is_none(), "never stored in clear");
    smtp.password_encrypted
        .as_ref()
        .map(|s| test_key().open("smtp", s).unwrap())
}

async fn serve() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("mfa.db").display());
    let store: Arc<dyn Store> = Arc::from(mfasync_store::open(&url).await.unwrap());
    let hash = mfasync_web::auth::hash_password(PASSWORD).unwrap();
    store.admin_set_password(ADMIN, &hash).await.unwrap();
    let backend = Arc::new(FakeBackend {
        store: store.clone(),
        calls: Mutex::new(Vec::new()),
    });
    let app = mfasync_web::router(
        backend.clone(),
        store.clone(),
        Arc::new(Metrics::new()),
        WebOptions {
            secure_cookies: false,
            secret_key: Some(test_key()),
            ..WebOptions::default()
        },
    );
    let routes = format!("{app:?}");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Server {
        routes,
        base: format!("http://{addr}"),
        host: addr.to_string(),
        store,
        backend,
        client: Client::builder()
            .redirect(redirect::Policy::none())
            .build()
            .unwrap(),
        _dir: dir,
    }
}

/// The value of the `name="NAME"` hidden input in a page.
fn hidden(page: &str, name: &str) -> String {
    let marker = format!(r#"name="{name}" value=""#);
    let start = page
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {page}"))
        + marker.len();
    let end = page[start..].find('"').unwrap() + start;
    page[start..end].to_string()
}

/// The value a response sets for cookie `name`.
fn set_cookie(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix(&format!("{name}=")).map(str::to_string))
        .map(|v| v.split(';').next().unwrap_or("").to_string())
}

/// A signed-in browser: its session cookie and its CSRF token.
struct Session {
    cookie: String,
    csrf: String,
}

impl Server {
    async fn login(&self, user: &str, password: &str) -> reqwest::Response {
        let page = self
            .client
            .get(format!("{}/login", self.base))
            .send()
            .await
            .unwrap();
        let login_cookie = set_cookie(&page, "mfasync_login").unwrap();
        let html = page.text().await.unwrap();
        let field = hidden(&html, "login_csrf");
        self.client
            .post(format!("{}/login", self.base))
            .header("cookie", format!("mfasync_login={login_cookie}"))
            .header("origin", format!("http://{}", self.host))
            .header("sec-fetch-site", "same-origin")
            .form(&[
                ("username", user),
                ("password", password),
                ("login_csrf", field.as_str()),
            ])
            .send()
            .await
            .unwrap()
    }

    async fn session(&self) -> Session {
        let resp = self.login(ADMIN, PASSWORD).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        let cookie = set_cookie(&resp, "mfasync_session").unwrap();
        let page = self.get_page(&cookie, "/settings").await;
        Session {
            csrf: hidden(&page, "csrf"),
            cookie: format!("mfasync_session={cookie}"),
        }
    }

    async fn get_page(&self, cookie: &str, path: &str) -> String {
        let cookie = if cookie.contains('=') {
            cookie.to_string()
        } else {
            format!("mfasync_session={cookie}")
        };
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "GET {path}");
        resp.text().await.unwrap()
    }

    /// A same-origin form post, as a browser sends it.
    async fn post_form(&self, s: &Session, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.base))
            .header("cookie", &s.cookie)
            .header("origin", format!("http://{}", self.host))
            .header("sec-fetch-site", "same-origin")
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// Synchronize Now from a portal form: it answers at once with a
    /// redirect to the job's progress page, whose status is polled until the
    /// cycle has finished; the final progress page.
    async fn sync_now_done(&self, s: &Session, form: &[(&str, &str)]) -> String {
        let resp = self.post_form(s, "/sync", form).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        let location = resp.headers()["location"].to_str().unwrap().to_string();
        assert!(location.starts_with("/sync/progress/"), "{location}");
        let id = location.trim_start_matches("/sync/progress/").to_string();
        for _ in 0..600 {
            let st: Value = self
                .client
                .get(format!("{}/sync/status/{id}", self.base))
                .header("cookie", &s.cookie)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if st["state"] != "running" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        self.get_page(&s.cookie, &location).await
    }

    async fn create_api_token(&self, s: &Session) -> String {
        let resp = self
            .post_form(s, "/tokens", &[("csrf", &s.csrf), ("label", "ci")])
            .await;
        assert_eq!(resp.status(), StatusCode::OK);
        let html = resp.text().await.unwrap();
        let start =
            html.find(r#"<code id="new-token">"#).unwrap() + r#"<code id="new-token">"#.len();
        html[start..start + 64].to_string()
    }

    fn bearer(&self, token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        h
    }
}

fn user(name: &str, enabled: bool) -> MfaUser {
    MfaUser {
        username: name.to_string(),
        first_name: Some(format!("{name}-first")),
        email: Some(format!("{name}@example.com")),
        enabled,
        source: Source::Manual,
        ..MfaUser::default()
    }
}

#[tokio::test]
async fn portal_requires_sign_in() {
    let s = serve().await;
    for path in [
        "/",
        "/users",
        "/settings",
        "/sync",
        "/sync/items/0/edit",
        "/approvals",
        "/history",
        "/outbox",
        "/tokens",
        "/recycle-bin",
    ] {
        let resp = s
            .client
            .get(format!("{}{path}", s.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(resp.headers()["location"], "/login", "{path}");
    }
    let resp = s
        .client
        .get(format!("{}/users", s.base))
        .header("cookie", "mfasync_session=forged")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER, "an unknown session");
}

#[tokio::test]
async fn api_requires_a_token() {
    let s = serve().await;
    for path in [
        "/api/v1/users",
        "/api/v1/approvals",
        "/api/v1/history",
        "/api/v1/outbox",
        "/api/v1/config",
    ] {
        let resp = s
            .client
            .get(format!("{}{path}", s.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    }
    let resp = s
        .client
        .post(format!("{}/api/v1/sync?full=true", s.base))
        .headers(s.bearer("not-a-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(s.backend.calls.lock().unwrap().is_empty(), "nothing ran");
}

#[tokio::test]
async fn wrong_password_or_unknown_admin_refused() {
    let s = serve().await;
    let resp = s.login(ADMIN, "wrong").await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookie(&resp, "mfasync_session").is_none());
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("Wrong username or password"));
    let resp = s.login("nobody", PASSWORD).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(s
        .store
        .tokens(mfasync_store::TokenKind::Session)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn sign_in_without_the_login_form_token_refused() {
    let s = serve().await;
    let resp = s
        .client
        .post(format!("{}/login", s.base))
        .form(&[("username", ADMIN), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn session_works_and_cookie_flags_are_set() {
    let s = serve().await;
    let resp = s.login(ADMIN, PASSWORD).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()["location"], "/");
    let raw = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|v| v.starts_with("mfasync_session="))
        .unwrap();
    assert!(
        raw.contains("HttpOnly") && raw.contains("SameSite=Strict"),
        "{raw}"
    );
    assert!(
        !raw.contains("Secure"),
        "turned off for http on loopback: {raw}"
    );
    let token = set_cookie(&resp, "mfasync_session").unwrap();
    // Only the hash is stored.
    let stored = s
        .store
        .tokens(mfasync_store::TokenKind::Session)
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_ne!(stored[0].token_hash, token);
    assert_eq!(stored[0].token_hash, mfasync_web::auth::token_hash(&token));

    let page = s.get_page(&token, "/").await;
    assert!(page.contains("Overview") && page.contains("Sign out"));
    let page = s.get_page(&token, "/settings").await;
    assert!(page.contains("No configuration has been applied yet"));

    // Sign out ends the session.
    let sess = s.session().await;
    let resp = s.post_form(&sess, "/logout", &[("csrf", &sess.csrf)]).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let resp = s
        .client
        .get(format!("{}/users", s.base))
        .header("cookie", &sess.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER, "signed out");
}

#[tokio::test]
async fn secure_cookie_flag_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("mfa.db").display());
    let store: Arc<dyn Store> = Arc::from(mfasync_store::open(&url).await.unwrap());
    let backend = Arc::new(FakeBackend {
        store: store.clone(),
        calls: Mutex::new(Vec::new()),
    });
    let app = mfasync_web::router(
        backend,
        store,
        Arc::new(Metrics::new()),
        WebOptions::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let resp = reqwest::get(format!("http://{addr}/login")).await.unwrap();
    let raw = resp.headers()["set-cookie"].to_str().unwrap();
    assert!(raw.contains("; Secure"), "{raw}");
}

#[tokio::test]
async fn csrf_token_missing_or_wrong_is_403() {
    let s = serve().await;
    let sess = s.session().await;
    for form in [
        vec![("full", "true")],
        vec![("csrf", "wrong"), ("full", "true")],
    ] {
        let resp = s.post_form(&sess, "/sync", &form).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    }
    assert!(s.backend.calls.lock().unwrap().is_empty(), "no sync ran");
    let page = s
        .sync_now_done(&sess, &[("csrf", &sess.csrf), ("full", "true")])
        .await;
    assert!(page.contains("3 created, 1 updated"), "{page}");
    assert_eq!(*s.backend.calls.lock().unwrap(), vec!["sync full=true"]);

    // The API with a cookie session needs the token in X-CSRF-Token.
    let resp = s
        .client
        .post(format!("{}/api/v1/sync", s.base))
        .header("cookie", &sess.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = s
        .client
        .post(format!("{}/api/v1/sync", s.base))
        .header("cookie", &sess.cookie)
        .header("x-csrf-token", &sess.csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn cross_site_posts_are_403() {
    let s = serve().await;
    let sess = s.session().await;
    let cases: [(&str, &str); 3] = [
        ("origin", "https://evil.example"),
        ("origin", "null"),
        ("sec-fetch-site", "cross-site"),
    ];
    for (name, value) in cases {
        let resp = s
            .client
            .post(format!("{}/sync", s.base))
            .header("cookie", &sess.cookie)
            .header(name, value)
            .form(&[("csrf", sess.csrf.as_str()), ("full", "true")])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{name}: {value}");
    }
    // Even the sign-in form.
    let resp = s
        .client
        .post(format!("{}/login", s.base))
        .header("origin", "https://evil.example")
        .form(&[("username", ADMIN), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(s.backend.calls.lock().unwrap().is_empty());
}

#[tokio::test]
async fn bearer_token_works_and_can_be_revoked() {
    let s = serve().await;
    let sess = s.session().await;
    let token = s.create_api_token(&sess).await;
    assert_eq!(token.len(), 64);
    let stored = s.store.tokens(mfasync_store::TokenKind::Api).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].label.as_deref(), Some("ci"));

    let resp = s
        .client
        .post(format!("{}/api/v1/sync?full=true", s.base))
        .headers(s.bearer(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["mode"], "full");
    assert_eq!(v["created"], 3);

    // An API token is not a portal cookie.
    let resp = s
        .client
        .get(format!("{}/users", s.base))
        .header("cookie", format!("mfasync_session={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);

    let page = s.get_page(&sess.cookie, "/tokens").await;
    assert!(!page.contains(&token), "the token is shown only once");
    let resp = s
        .post_form(
            &sess,
            "/tokens/revoke",
            &[("csrf", &sess.csrf), ("hash", &stored[0].token_hash)],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = s
        .client
        .get(format!("{}/api/v1/users", s.base))
        .headers(s.bearer(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "revoked");
}

#[tokio::test]
async fn api_users_approvals_history_config_and_auth() {
    let s = serve().await;
    let sess = s.session().await;
    let token = s.create_api_token(&sess).await;
    let h = s.bearer(&token);
    s.store.insert_user(&user("bob", true)).await.unwrap();
    s.store.insert_user(&user("alice", false)).await.unwrap();

    let users: Value = s
        .client
        .get(format!("{}/api/v1/users", s.base))
        .headers(h.clone())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let users = users.as_array().unwrap();
    assert_eq!(users.len(), 2);
    assert_eq!(users[0]["username"], "alice");
    assert_eq!(users[0]["enabled"], false);
    assert_eq!(users[0]["source"], "manual");
    assert_eq!(users[0]["email"], "alice@example.com");
    assert!(users[0]["dn"].is_null(), "absent values are null");
    let found: Value = s
        .client
        .get(format!("{}/api/v1/users?q=BOB", s.base))
        .headers(h.clone())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(found.as_array().unwrap().len(), 1);

    // Approvals: the PRODUCT.md list shape, then a decision.
    let held = |action: &str, name: &str| HeldChange {
        action: action.into(),
        username: name.into(),
        directory_id: None,
        reason: None,
        limit: None,
        decision: None,
    };
    s.store
        .create_approval(
            "ap1",
            "fp",
            &[held("disable", "bob"), held("remove", "carol")],
        )
        .await
        .unwrap();
    let list: Value = s
        .client
        .get(format!("{}/api/v1/approvals", s.base))
        .headers(h.clone())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list[0]["id"], "ap1");
    assert_eq!(list[0]["disable"], json!(["bob"]));
    assert_eq!(list[0]["remove"], json!(["carol"]));
    let resp = s
        .client
        .post(format!("{}/api/v1/approvals/ap1/approve", s.base))
        .headers(h.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = s
        .client
        .post(format!("{}/api/v1/approvals/ap1/reject", s.base))
        .headers(h.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CONFLICT, "no longer pending");
    assert!(s
        .backend
        .calls
        .lock()
        .unwrap()
        .contains(&"approve ap1 by admin".to_string()));

    // History.
    let id = s.store.run_started("full").await.unwrap();
    let runs: Value = s
        .client
        .get(format!("{}/api/v1/history?limit=5", s.base))
        .headers(h.clone())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(runs[0]["id"], id);
    assert_eq!(runs[0]["mode"], "full");

    // Config: invalid refused with key paths, valid stored, GET shows no secret.
    let resp = s
        .client
        .put(format!("{}/api/v1/config", s.base))
        .headers(h.clone())
        .body("[sync]\napproval_threshold = 0\nbogus = 1\n")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let v: Value = resp.json().await.unwrap();
    assert!(v["errors"].to_string().contains("sync.bogus"), "{v}");
    let toml = "[directory]\nservers = [\"ldap://127.0.0.1:3890\"]\nbase_dn = \"dc=example,dc=com\"\n\
                [directory.query_bind]\ntype = \"simple\"\ndn = \"cn=svc,dc=example,dc=com\"\npassword = \"TOPSECRET\"\n";
    let resp = s
        .client
        .put(format!("{}/api/v1/config", s.base))
        .headers(h.clone())
        .body(toml)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["version"], 1);
    let text = s
        .client
        .get(format!("{}/api/v1/config", s.base))
        .headers(h.clone())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("cn=svc,dc=example,dc=com"), "{text}");
    assert!(!text.contains("TOPSECRET"));
    let page = s.get_page(&sess.cookie, "/settings").await;
    assert!(!page.contains("TOPSECRET"));
    assert!(page.contains(
        "<th>Query bind password</th><td>set <code>directory.query_bind.password</code></td>"
    ));
    assert!(page.contains(
        "<th>Authentication bind password</th><td>not set <code>directory.auth_bind.password</code></td>"
    ));

    // Plan and test.
    let plan: Value = s
        .client
        .get(format!("{}/api/v1/plan", s.base))
        .headers(h.clone())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(plan["changes"][0]["username"], "new");
    let test: Value = s
        .client
        .post(format!("{}/api/v1/directory/test", s.base))
        .headers(h.clone())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(test["steps"][0]["step"], "connect");

    // Auth: the PRODUCT.md auth JSON.
    for (user, pw, want) in [
        ("alice", "pw", json!({"ok": true})),
        (
            "alice",
            "bad",
            json!({"ok": false, "reason": "invalid-credentials"}),
        ),
        (
            "zed",
            "x",
            json!({"ok": false, "reason": "not-an-mfa-user"}),
        ),
    ] {
        let v: Value = s
            .client
            .post(format!("{}/api/v1/auth", s.base))
            .headers(h.clone())
            .json(&json!({"username": user, "password": pw}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v, want);
    }
    let resp = s
        .client
        .post(format!("{}/api/v1/auth", s.base))
        .headers(h.clone())
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    // Metrics count what happened.
    let text = s
        .client
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("mfasync_auth_total{outcome=\"ok\"} 1"),
        "{text}"
    );
    assert!(text.contains("mfasync_auth_total{outcome=\"invalid-credentials\"} 1"));
    assert!(text.contains("mfasync_auth_total{outcome=\"not-an-mfa-user\"} 1"));
    assert!(text.contains("mfasync_pending_approvals 0"));
    assert!(text.contains("mfasync_last_sync_start_timestamp_seconds "));
}

#[tokio::test]
async fn the_user_page_enrolls_an_oath_token_and_checks_a_first_code() {
    let s = serve().await;
    let sess = s.session().await;
    s.store.insert_user(&user("bob", true)).await.unwrap();
    let page = s.get_page(&sess.cookie, "/users/bob").await;
    assert!(page.contains("No OATH token secret"), "{page}");
    assert!(page.contains(r#"action="/users/bob/otp""#), "{page}");
    // without the form's token: refused, nothing enrolled
    let resp = s
        .post_form(&sess, "/users/bob/otp", &[("csrf", "nope")])
        .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(s.store.otp_secret("bob").await.unwrap().is_none());

    let resp = s
        .post_form(&sess, "/users/bob/otp", &[("csrf", &sess.csrf)])
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let page = resp.text().await.unwrap();
    assert!(
        page.contains(r#"<svg id="fake-qr"></svg>"#),
        "the SVG as markup: {page}"
    );
    assert!(
        page.contains("otpauth://totp/mfasync:bob?secret=FAKE&#38;x=&#60;y&#62;"),
        "the URI escaped: {page}"
    );
    assert!(page.contains(r#"action="/users/bob/otp/confirm""#));
    assert!(s
        .backend
        .calls
        .lock()
        .unwrap()
        .iter()
        .any(|c| c == &format!("otp_enroll bob by {ADMIN}")));
    let page = s.get_page(&sess.cookie, "/users/bob").await;
    assert!(page.contains("id=\"otp-state\">Enrolled"), "{page}");

    let resp = s
        .post_form(
            &sess,
            "/users/bob/otp/confirm",
            &[("csrf", &sess.csrf), ("code", "000000")],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("Code refused (wrong-code)"));
    let resp = s
        .post_form(
            &sess,
            "/users/bob/otp/confirm",
            &[("csrf", &sess.csrf), ("code", "123456")],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.text().await.unwrap().contains("Code accepted"));
}

#[tokio::test]
async fn portal_pages_users_approvals_settings() {
    let s = serve().await;
    let sess = s.session().await;
    s.store.insert_user(&user("bob", true)).await.unwrap();
    s.store
        .insert_user(&user("<script>x</script>", true))
        .await
        .unwrap();
    let page = s.get_page(&sess.cookie, "/users").await;
    assert!(page.contains(r#"<a href="/users/bob">bob</a>"#));
    assert!(
        page.contains("&#60;script&#62;x&#60;/script&#62;"),
        "escaped"
    );
    assert!(!page.contains("<script>x"));
    let page = s.get_page(&sess.cookie, "/users?q=bob").await;
    assert!(page.contains("1 of 2 users match"));
    assert!(page.contains(r#"<a href="/users/bob">bob</a>"#));
    let page = s.get_page(&sess.cookie, "/users/BOB").await;
    assert!(
        page.contains("<th>Email</th><td>bob@example.com</td>"),
        "{page}"
    );
    assert!(page.contains("<th>Distinguished name</th><td></td>"));
    let page = s
        .get_page(&sess.cookie, "/users/%3Cscript%3Ex%3C%2Fscript%3E")
        .await;
    assert!(page.contains("User &#60;script&#62;x&#60;/script&#62;"));
    let resp = s
        .client
        .get(format!("{}/users/nobody", s.base))
        .header("cookie", &sess.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    s.store
        .create_approval(
            "ap9",
            "fp",
            &[HeldChange {
                action: "remove".into(),
                username: "bob".into(),
                directory_id: None,
                reason: Some("no longer in OU=Sales".into()),
                limit: None,
                decision: None,
            }],
        )
        .await
        .unwrap();
    let page = s.get_page(&sess.cookie, "/approvals").await;
    assert!(page.contains("Approval ap9") && page.contains("no longer in OU=Sales"));
    let resp = s
        .post_form(&sess, "/approvals/ap9/approve", &[("csrf", &sess.csrf)])
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.text().await.unwrap().contains("Approval ap9 approved"));
    let resp = s
        .post_form(&sess, "/approvals/ap9/reject", &[("csrf", &sess.csrf)])
        .await;
    assert_eq!(resp.status(), StatusCode::CONFLICT);

    // Settings: Test shows each step; an invalid config lists its problems.
    let resp = s
        .post_form(&sess, "/settings/test", &[("csrf", &sess.csrf)])
        .await;
    let html = resp.text().await.unwrap();
    assert!(html.contains("<td>connect</td>") && html.contains("bound as &#60;cn=svc&#62;"));
    let resp = s
        .post_form(
            &sess,
            "/settings",
            &[
                ("csrf", &sess.csrf),
                ("toml", "[sync]\r\napproval_threshold = 1000\r\n"),
            ],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("sync.approval_threshold"));
    let resp = s
        .post_form(
            &sess,
            "/settings",
            &[
                ("csrf", &sess.csrf),
                ("toml", "[directory]\r\nservers = [\"ldap://h\"]\r\n"),
            ],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("Configuration version 1 applied"));
    let page = s.get_page(&sess.cookie, "/history").await;
    assert!(page.contains("Synchronize Now"));
}

#[tokio::test]
async fn security_headers_on_every_response() {
    let s = serve().await;
    let sess = s.session().await;
    for (path, cookie) in [
        ("/login", None),
        ("/users", Some(&sess.cookie)),
        ("/api/v1/users", None),
        ("/metrics", None),
        ("/healthz", None),
    ] {
        let mut req = s.client.get(format!("{}{path}", s.base));
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        let resp = req.send().await.unwrap();
        let h = resp.headers();
        assert!(
            h["content-security-policy"]
                .to_str()
                .unwrap()
                .starts_with("default-src 'self'"),
            "{path}"
        );
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["referrer-policy"], "same-origin", "{path}");
    }
}

#[tokio::test]
async fn metrics_and_healthz_are_text() {
    let s = serve().await;
    let resp = s
        .client
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = resp.text().await.unwrap();
    assert!(text.contains("# TYPE mfasync_sync_runs_total counter"));
    assert!(text.contains("mfasync_pending_approvals 0"));
    let resp = s
        .client
        .get(format!("{}/healthz", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), "ok");
}

/// (method, path) of every route a router serves, read from its `Debug`
/// output (axum has no route listing): the node's path for each route id and
/// that id's method router; a whole service at a path is "any".
fn served_routes(debug: &str) -> Vec<(String, String)> {
    let routes = debug.split("fallback_router:").next().unwrap();
    let (endpoints, node) = routes.split_once("node: Node { paths: {").unwrap();
    let paths: std::collections::HashMap<&str, &str> = node
        .split("RouteId(")
        .skip(1)
        .map(|item| {
            let (id, rest) = item.split_once("): \"").unwrap();
            (id, rest.split('"').next().unwrap())
        })
        .collect();
    let mut served = Vec::new();
    for item in endpoints.split("RouteId(").skip(1) {
        let (id, rest) = item.split_once("): ").unwrap();
        let path = paths[id].to_string();
        match rest.strip_prefix("MethodRouter(MethodRouter { ") {
            Some(fields) => {
                let fields = fields.split(", fallback:").next().unwrap();
                for field in fields.split(", ") {
                    let (method, endpoint) = field.split_once(": ").unwrap();
                    // HEAD comes with GET
                    if endpoint != "None" && method != "head" {
                        served.push((method.to_string(), path.clone()));
                    }
                }
            }
            None => served.push(("any".to_string(), path)),
        }
    }
    served.sort();
    served
}

/// The served document's (method, path) pairs.
fn documented_routes(doc: &Value) -> Vec<(String, String)> {
    let mut documented = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if [
                "get", "put", "post", "delete", "patch", "options", "head", "trace",
            ]
            .contains(&method.as_str())
            {
                documented.push((method.clone(), path.clone()));
            }
        }
    }
    documented.sort();
    documented
}

#[tokio::test]
async fn openapi_document_matches_the_router() {
    let s = serve().await;
    let doc: Value = s
        .client
        .get(format!("{}/api/v1/openapi.json", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{doc}");
    let documented = documented_routes(&doc);
    let served = served_routes(&s.routes);
    // the Debug output still reads as expected (a portal route is found)
    assert!(
        served.contains(&("get".to_string(), "/login".to_string())),
        "{served:?} from {}",
        s.routes
    );
    // the API: everything under /api/ but Swagger UI, and /metrics, /healthz
    let api: Vec<(String, String)> = served
        .into_iter()
        .filter(|(_, p)| {
            p.starts_with("/api/") && !p.starts_with("/api/v1/docs")
                || p == "/metrics"
                || p == "/healthz"
        })
        .collect();
    assert_eq!(api, documented, "served routes vs the document");
    assert!(documented.len() >= 18, "{documented:?}");
    // And every documented route answers (not 404/405) with a token.
    let sess = s.session().await;
    let token = s.create_api_token(&sess).await;
    for (method, path) in &documented {
        let url = format!(
            "{}{}",
            s.base,
            path.replace("{id}", "12345")
                .replace("{username}", "nobody")
        );
        let req = match method.as_str() {
            "get" => s.client.get(&url),
            "put" => s.client.put(&url).body(""),
            _ => s
                .client
                .post(&url)
                .json(&json!({"username": "a", "password": "b"})),
        };
        let resp = req.headers(s.bearer(&token)).send().await.unwrap();
        let status = resp.status();
        // A 404 must be the handler's own answer about a missing thing.
        let own_404 = status == StatusCode::NOT_FOUND
            && resp
                .json::<Value>()
                .await
                .is_ok_and(|v| v["error"].is_string());
        assert!(
            status != StatusCode::NOT_FOUND && status != StatusCode::METHOD_NOT_ALLOWED || own_404,
            "{method} {path}: {status}"
        );
        let code = status.as_str();
        assert!(
            doc["paths"][path][method]["responses"][code].is_object(),
            "{method} {path} answered {code}, not in the document"
        );
    }
}

/// Whether `value` has the keys `schema` declares: every required key, no
/// key the schema does not list, enum values among the listed ones, and the
/// same for nested objects and items.
fn check_keys(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.trim_start_matches("#/components/schemas/");
        return check_keys(doc, &doc["components"]["schemas"][name], value, at);
    }
    if value.is_null() {
        return Ok(());
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(alternatives) = schema[key].as_array() {
            let errors: Vec<String> = alternatives
                .iter()
                .filter_map(|s| check_keys(doc, s, value, at).err())
                .collect();
            return if errors.len() < alternatives.len() {
                Ok(())
            } else {
                Err(errors.join("; "))
            };
        }
    }
    if let Some(values) = schema["enum"].as_array() {
        if !values.contains(value) {
            return Err(format!("{at}: {value} is not one of {values:?}"));
        }
    }
    if let Some(items) = value.as_array() {
        for (i, item) in items.iter().enumerate() {
            check_keys(doc, &schema["items"], item, &format!("{at}[{i}]"))?;
        }
        return Ok(());
    }
    let (Some(object), Some(properties)) = (value.as_object(), schema["properties"].as_object())
    else {
        return Ok(());
    };
    for key in schema["required"].as_array().into_iter().flatten() {
        let key = key.as_str().unwrap();
        if !object.contains_key(key) {
            return Err(format!("{at}: no {key:?} in {value}"));
        }
    }
    for (key, v) in object {
        let Some(property) = properties.get(key) else {
            return Err(format!("{at}: {key:?} is not in the schema {schema}"));
        };
        check_keys(doc, property, v, &format!("{at}.{key}"))?;
    }
    Ok(())
}

#[tokio::test]
async fn api_answers_carry_the_keys_the_document_declares() {
    let s = serve().await;
    let doc: Value = s
        .client
        .get(format!("{}/api/v1/openapi.json", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sess = s.session().await;
    let token = s.create_api_token(&sess).await;
    s.store.insert_user(&user("bob", true)).await.unwrap();
    let held = HeldChange {
        action: "disable".into(),
        username: "bob".into(),
        directory_id: None,
        reason: None,
        limit: None,
        decision: None,
    };
    s.store.create_approval("ap1", "fp", &[held]).await.unwrap();
    s.store.run_started("full").await.unwrap();
    let job: Value = s
        .client
        .post(format!("{}/api/v1/sync?wait=false", s.base))
        .headers(s.bearer(&token))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let job_path = job["status"].as_str().unwrap().to_string();
    let calls = [
        ("get", "/api/v1/users", "/api/v1/users".to_string()),
        ("get", "/api/v1/approvals", "/api/v1/approvals".to_string()),
        ("get", "/api/v1/history", "/api/v1/history".to_string()),
        ("get", "/api/v1/servers", "/api/v1/servers".to_string()),
        ("get", "/api/v1/outbox", "/api/v1/outbox".to_string()),
        (
            "get",
            "/api/v1/users/{username}/history",
            "/api/v1/users/bob/history".to_string(),
        ),
        ("get", "/api/v1/sync/jobs/{id}", job_path),
        ("get", "/api/v1/plan", "/api/v1/plan".to_string()),
        ("post", "/api/v1/sync", "/api/v1/sync?full=true".to_string()),
        (
            "post",
            "/api/v1/directory/test",
            "/api/v1/directory/test".to_string(),
        ),
        (
            "post",
            "/api/v1/approvals/{id}/approve",
            "/api/v1/approvals/ap1/approve".to_string(),
        ),
        (
            "post",
            "/api/v1/approvals/{id}/reject",
            "/api/v1/approvals/ap1/reject".to_string(),
        ),
        ("post", "/api/v1/auth", "/api/v1/auth".to_string()),
    ];
    for (method, path, url) in calls {
        let url = format!("{}{url}", s.base);
        let req = match method {
            "get" => s.client.get(&url),
            _ => s
                .client
                .post(&url)
                .json(&json!({"username": "bob", "password": "secret"})),
        };
        let resp = req.headers(s.bearer(&token)).send().await.unwrap();
        let code = resp.status().as_str().to_string();
        let answer: Value = resp.json().await.unwrap();
        let schema = &doc["paths"][path][method]["responses"][code.as_str()]["content"]
            ["application/json"]["schema"];
        assert!(schema.is_object(), "{method} {path} {code}: no schema");
        if let Err(e) = check_keys(&doc, schema, &answer, &format!("{method} {path} {code}")) {
            panic!("{e}");
        }
    }
}

#[tokio::test]
async fn repeated_wrong_passwords_are_throttled() {
    let s = serve().await;
    for _ in 0..10 {
        assert_eq!(
            s.login(ADMIN, "guess").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let resp = s.login(ADMIN, PASSWORD).await;
    assert_eq!(
        resp.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "even the right password, until the window passes"
    );
    assert!(set_cookie(&resp, "mfasync_session").is_none());
    // Other usernames are not affected.
    assert_eq!(
        s.login("other", "x").await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn config_versions_are_listed_and_diffed_without_secrets() {
    let s = serve().await;
    let sess = s.session().await;
    let v1 = "[directory]\nservers = [\"ldap://a\"]\n[directory.query_bind]\ntype = \"simple\"\ndn = \"cn=svc,dc=x\"\npassword = \"TOPSECRET\"\n";
    let v2 = "[directory]\nservers = [\"ldap://b\"]\n[directory.query_bind]\ntype = \"simple\"\ndn = \"cn=svc,dc=x\"\npassword = \"OTHERSECRET\"\n";
    for text in [v1, v2] {
        let resp = s
            .client
            .put(format!("{}/api/v1/config", s.base))
            .header("cookie", &sess.cookie)
            .header("x-csrf-token", &sess.csrf)
            .body(text)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let page = s.get_page(&sess.cookie, "/settings/versions").await;
    assert!(page.contains(r#"<a href="/settings/versions/2">2</a>"#));
    assert!(page.contains(r#"<a href="/settings/versions/1">1</a>"#));
    let page = s.get_page(&sess.cookie, "/settings/versions/2").await;
    assert!(page.contains("Changes from version 1"), "{page}");
    assert!(
        page.contains(r#"<span class="del">- servers = [&#34;ldap://a&#34;]</span>"#),
        "{page}"
    );
    assert!(
        page.contains(r#"<span class="add">+ servers = [&#34;ldap://b&#34;]</span>"#),
        "{page}"
    );
    assert!(!page.contains("SECRET"));
    let resp = s
        .client
        .get(format!("{}/settings/versions/99", s.base))
        .header("cookie", &sess.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn api_auth_is_rate_limited_per_username() {
    let s = serve().await;
    let sess = s.session().await;
    let token = s.create_api_token(&sess).await;
    let h = s.bearer(&token);
    let post = |user: &'static str, pw: &'static str| {
        s.client
            .post(format!("{}/api/v1/auth", s.base))
            .headers(h.clone())
            .json(&json!({"username": user, "password": pw}))
            .send()
    };
    // ten wrong passwords are checked by the directory ...
    for _ in 0..10 {
        let v: Value = post("alice", "guess").await.unwrap().json().await.unwrap();
        assert_eq!(v["reason"], "invalid-credentials");
    }
    // ... the eleventh, even the right one, is refused without asking it
    let resp = post("Alice", "pw").await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().get("retry-after").is_some());
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v, json!({"ok": false, "reason": "account-locked"}));
    // other usernames are not affected
    let v: Value = post("zed", "x").await.unwrap().json().await.unwrap();
    assert_eq!(v["reason"], "not-an-mfa-user");
}

// ------------------------------------------------------------------ /sync page

const SYNC_BASE: &str = "[directory]\nsource = \"ldap\"\nservers = [\"ldap://a\"]\n\n[directory.query_bind]\ntype = \"simple\"\ndn = \"cn=svc,dc=x\"\npassword = \"TOPSECRET\"\n";

impl Server {
    /// The active configuration, validated.
    async fn active(&self) -> mfasync_core::config::Config {
        let v = self.store.active_config().await.unwrap().unwrap();
        mfasync_core::config::parse(&v.toml).unwrap()
    }

    async fn versions(&self) -> usize {
        self.store.config_versions().await.unwrap().len()
    }

    /// Record a full sync that ran with the active configuration's items.
    async fn full_sync_ran(&self) {
        let wm = mfasync_store::Watermark {
            kind: mfasync_store::MarkKind::Full,
            server: String::new(),
            value: Vec::new(),
            items_fingerprint: self.active().await.items_fingerprint(),
            mapping_fingerprint: self.active().await.mapping_fingerprint(),
            domains: Vec::new(),
        };
        self.store.apply(&[], Some(&wm)).await.unwrap();
    }

    /// Post a form of the /sync page with the version shown on it.
    async fn sync_post(
        &self,
        sess: &Session,
        path: &str,
        fields: &[(&str, &str)],
    ) -> (StatusCode, String) {
        let page = self.get_page(&sess.cookie, "/sync").await;
        let version = hidden(&page, "version");
        let mut form: Vec<(&str, &str)> = vec![("csrf", &sess.csrf), ("version", &version)];
        form.extend_from_slice(fields);
        let resp = self.post_form(sess, path, &form).await;
        let status = resp.status();
        (status, resp.text().await.unwrap())
    }
}

fn item_fields<'a>(kind: &'a str, dn: &'a str, method: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("kind", kind),
        ("dn", dn),
        ("include_nested", "true"),
        ("when_removed", "disable"),
        ("user_enabled", "true"),
        ("method", method),
        ("phone", "mobile"),
        ("backup_phone", ""),
        ("country_code", "1"),
        ("language", "en"),
    ]
}

fn item_dns(cfg: &mfasync_core::config::Config) -> Vec<String> {
    cfg.sync.items.iter().map(|i| i.dn.clone()).collect()
}

#[tokio::test]
async fn sync_page_shows_item_ids_and_prompts_after_a_mapping_change() {
    let s = serve().await;
    let sess = s.session().await;
    let items =
        "[[sync.items]]\ndn = \"OU=Sales,DC=x\"\nid = \"6f1c2d3e-0000-4000-8000-00000000abcd\"\n";
    s.store
        .put_config(&format!("{SYNC_BASE}{items}"))
        .await
        .unwrap();
    s.full_sync_ran().await;
    let page = s.get_page(&sess.cookie, "/sync").await;
    assert!(
        page.contains(r#"<td class="item-id">6f1c2d3e-0000-4000-8000-00000000abcd</td>"#),
        "{page}"
    );
    assert!(!page.contains(r#"id="sync-prompt""#), "{page}");
    // a filter edit: the last full sync's mapping no longer holds
    let filters = "[filters]\nuser = \"(objectClass=person)\"\n";
    s.store
        .put_config(&format!("{SYNC_BASE}{filters}{items}"))
        .await
        .unwrap();
    let page = s.get_page(&sess.cookie, "/sync").await;
    assert!(page.contains(r#"id="sync-prompt""#), "{page}");
    assert!(
        page.contains(
            "The attribute mapping or filters changed since the last full synchronization"
        ),
        "{page}"
    );
}

#[tokio::test]
async fn sync_page_items_add_move_edit_remove_keep_the_password() {
    use mfasync_core::config::{ItemKind, Method, PhoneKind, WhenRemoved};
    let s = serve().await;
    let sess = s.session().await;
    s.store.put_config(SYNC_BASE).await.unwrap();

    let page = s.get_page(&sess.cookie, "/sync").await;
    assert!(page.contains(r#"id="no-items""#), "{page}");
    assert!(page.contains(r#"id="sync-prompt""#), "no full sync yet");
    s.full_sync_ran().await;
    let page = s.get_page(&sess.cookie, "/sync").await;
    assert!(!page.contains(r#"id="sync-prompt""#), "{page}");
    assert!(!page.contains("TOPSECRET"));

    // Add two items.
    let (status, page) = s
        .sync_post(
            &sess,
            "/sync/items",
            &item_fields("container", "OU=Sales,DC=x", "phone-call"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("Saved as configuration version 2"), "{page}");
    assert_eq!(item_dns(&s.active().await), vec!["OU=Sales,DC=x"]);
    assert!(
        page.contains("Sync items changed since the last full synchronization"),
        "{page}"
    );
    let mut vpn = item_fields("security-group", "CN=VPN,OU=Groups,DC=x", "text-message");
    vpn.retain(|(k, _)| *k != "backup_phone");
    vpn.push(("backup_phone", "business"));
    let (status, page) = s.sync_post(&sess, "/sync/items", &vpn).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let cfg = s.active().await;
    assert_eq!(
        item_dns(&cfg),
        vec!["OU=Sales,DC=x", "CN=VPN,OU=Groups,DC=x"]
    );
    assert_eq!(cfg.sync.items[1].kind, ItemKind::SecurityGroup);
    assert_eq!(cfg.sync.items[1].user.method, Method::TextMessage);
    assert_eq!(
        cfg.sync.items[1].user.backup_phone,
        Some(PhoneKind::Business)
    );
    assert!(page.contains("CN=VPN,OU=Groups,DC=x"));

    // Move Up: the group first.
    let (status, page) = s.sync_post(&sess, "/sync/items/1/up", &[]).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(
        item_dns(&s.active().await),
        vec!["CN=VPN,OU=Groups,DC=x", "OU=Sales,DC=x"]
    );
    // Moving the first item up is refused, nothing stored.
    let before = s.versions().await;
    let (status, _) = s.sync_post(&sess, "/sync/items/0/up", &[]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(s.versions().await, before);

    // Edit Sales (now the second item).
    let page = s.get_page(&sess.cookie, "/sync/items/1/edit").await;
    assert!(page.contains(r#"value="OU=Sales,DC=x""#), "{page}");
    let (status, page) = s
        .sync_post(
            &sess,
            "/sync/items/1/save",
            &[
                ("kind", "container"),
                ("dn", "OU=Sales,DC=x"),
                ("when_removed", "remove"),
                ("user_enabled", "true"),
                ("method", "mobile-app"),
                ("phone", "business"),
                ("backup_phone", "mobile"),
                ("country_code", "44"),
                ("language", "de"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let cfg = s.active().await;
    let sales = &cfg.sync.items[1];
    assert_eq!(sales.dn, "OU=Sales,DC=x");
    assert!(!sales.include_nested);
    assert_eq!(sales.when_removed, WhenRemoved::Remove);
    assert_eq!(sales.user.method, Method::MobileApp);
    assert_eq!(sales.user.phone, PhoneKind::Business);
    assert_eq!(sales.user.backup_phone, Some(PhoneKind::Mobile));
    assert_eq!(sales.user.country_code, "44");
    assert_eq!(sales.user.language, "de");
    assert_eq!(cfg.sync.items[0].dn, "CN=VPN,OU=Groups,DC=x", "untouched");

    // Remove the group.
    let (status, page) = s.sync_post(&sess, "/sync/items/0/remove", &[]).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(item_dns(&s.active().await), vec!["OU=Sales,DC=x"]);

    // Settings.
    let (status, page) = s
        .sync_post(
            &sess,
            "/sync/settings",
            &[
                ("interval", "10m"),
                ("always_full", "true"),
                ("approval", "true"),
                ("approval_threshold", "7"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let cfg = s.active().await;
    assert!(!cfg.sync.enabled);
    assert_eq!(cfg.sync.interval, "10m");
    assert!(!cfg.sync.remove_deleted_users);
    assert!(cfg.sync.always_full);
    assert_eq!(
        cfg.sync.approval_threshold,
        Some(mfasync_core::config::Threshold::Count(7))
    );
    assert_eq!(item_dns(&cfg), vec!["OU=Sales,DC=x"], "items kept");
    // a percentage is saved as such and shown back as typed
    let (status, page) = s
        .sync_post(
            &sess,
            "/sync/settings",
            &[
                ("interval", "10m"),
                ("always_full", "true"),
                ("approval", "true"),
                ("approval_threshold", "2.5%"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("value=\"2.5%\""), "{page}");
    let cfg = s.active().await;
    assert_eq!(
        cfg.sync.approval_threshold,
        Some(mfasync_core::config::Threshold::Percent(25_000))
    );

    // Every save kept the bind password and the rest of the directory section.
    assert_eq!(
        cfg.directory.query_bind.password.as_deref(),
        Some("TOPSECRET")
    );
    assert_eq!(cfg.directory.servers, vec!["ldap://a"]);
    assert_eq!(s.versions().await, 8);
    assert!(!page.contains("TOPSECRET"));

    // The prompt goes once a full sync ran with these items; Synchronize Now
    // from the prompt runs a full sync and comes back to the page.
    let page = s.get_page(&sess.cookie, "/sync").await;
    assert!(page.contains(r#"id="sync-prompt""#));
    let page = s
        .sync_now_done(
            &sess,
            &[("csrf", &sess.csrf), ("full", "true"), ("from", "sync")],
        )
        .await;
    assert!(page.contains("3 created, 1 updated"), "{page}");
    assert!(
        page.contains(r#"<a href="/sync" class="active">"#),
        "{page}"
    );
    assert!(s
        .backend
        .calls
        .lock()
        .unwrap()
        .contains(&"sync full=true".to_string()));
    s.full_sync_ran().await;
    let page = s.get_page(&sess.cookie, "/sync").await;
    assert!(!page.contains(r#"id="sync-prompt""#), "{page}");
}

#[tokio::test]
async fn sync_page_refuses_bad_input_stale_forms_and_missing_csrf() {
    let s = serve().await;
    let sess = s.session().await;
    s.store.put_config(SYNC_BASE).await.unwrap();
    let before = s.versions().await;

    // A bad DN: the key path is shown, what was typed is kept, nothing stored.
    let (status, page) = s
        .sync_post(
            &sess,
            "/sync/items",
            &item_fields("container", "not a dn", "phone-call"),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.contains("sync.items[0].dn: "), "{page}");
    assert!(page.contains(r#"value="not a dn""#), "{page}");
    let (status, page) = s
        .sync_post(&sess, "/sync/settings", &[("interval", "often")])
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.contains("sync.interval: "), "{page}");
    for threshold in ["0", "many"] {
        let (status, page) = s
            .sync_post(
                &sess,
                "/sync/settings",
                &[
                    ("interval", "5m"),
                    ("approval", "true"),
                    ("approval_threshold", threshold),
                ],
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(page.contains("sync.approval_threshold: "), "{page}");
    }
    let (status, page) = s
        .sync_post(
            &sess,
            "/sync/items",
            &item_fields("organisation", "OU=A,DC=x", "phone-call"),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.contains("sync.items[0].kind"), "{page}");
    let (status, _) = s.sync_post(&sess, "/sync/items/3/remove", &[]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(s.versions().await, before, "nothing stored");

    // A form from an older version of the configuration is refused.
    let page = s.get_page(&sess.cookie, "/sync").await;
    let old = hidden(&page, "version");
    s.store.put_config(SYNC_BASE).await.unwrap();
    let mut form = vec![("csrf", sess.csrf.as_str()), ("version", old.as_str())];
    form.extend(item_fields("container", "OU=A,DC=x", "phone-call"));
    let resp = s.post_form(&sess, "/sync/items", &form).await;
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    assert!(s.active().await.sync.items.is_empty());

    // CSRF token missing or wrong -> 403.
    let before = s.versions().await;
    let version = before.to_string();
    for path in [
        "/sync/items",
        "/sync/settings",
        "/sync/items/0/remove",
        "/sync/items/0/save",
    ] {
        for csrf in [None, Some("wrong")] {
            let mut form = vec![("version", version.as_str())];
            if let Some(c) = csrf {
                form.push(("csrf", c));
            }
            form.extend(item_fields("container", "OU=A,DC=x", "phone-call"));
            form.push(("interval", "5m"));
            let resp = s.post_form(&sess, path, &form).await;
            assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{path}");
        }
    }
    // Not signed in: sent to the sign-in page.
    let resp = s
        .client
        .post(format!("{}/sync/items", s.base))
        .header("origin", format!("http://{}", s.host))
        .header("sec-fetch-site", "same-origin")
        .form(&item_fields("container", "OU=A,DC=x", "phone-call"))
        .send()
        .await
        .unwrap();
    assert_ne!(resp.status(), StatusCode::OK);
    assert_eq!(s.versions().await, before, "nothing stored");
}

// ------------------------------------------------------------------ Settings / Filters / Attributes tabs

impl Server {
    /// Post a form of `page` (its version hidden field) to `path`.
    async fn tab_post(
        &self,
        sess: &Session,
        page: &str,
        path: &str,
        fields: &[(&str, &str)],
    ) -> (StatusCode, String) {
        let html = self.get_page(&sess.cookie, page).await;
        let version = hidden(&html, "version");
        let mut form: Vec<(&str, &str)> = vec![("csrf", &sess.csrf), ("version", &version)];
        form.extend_from_slice(fields);
        let resp = self.post_form(sess, path, &form).await;
        let status = resp.status();
        (status, resp.text().await.unwrap())
    }
}

fn directory_fields<'a>(servers: &'a str, password: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("source", "ldap"),
        ("domain", ""),
        ("include_trusted_domains", "true"),
        ("servers", servers),
        ("base_dn", "dc=example,dc=com"),
        ("query_size_limit", "500"),
        ("timeout_seconds", "7"),
        ("tls_verify", "true"),
        ("tls_ca_file", ""),
        ("query_type", "simple"),
        ("query_dn", "cn=admin,dc=example,dc=com"),
        ("query_password", password),
        ("auth_type", "simple"),
    ]
}

#[tokio::test]
async fn settings_directory_form_saves_validates_and_keeps_the_password() {
    use mfasync_core::config::{BindType, DirectorySource};
    let s = serve().await;
    let sess = s.session().await;

    // From nothing: the form makes version 1.
    let (status, page) = s
        .tab_post(
            &sess,
            "/settings",
            "/settings/directory",
            &directory_fields("ldap://one:389\r\nldaps://two", "FIRSTSECRET"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        page.contains("Directory settings saved as configuration version 1"),
        "{page}"
    );
    assert!(!page.contains("FIRSTSECRET"), "the password is never shown");
    assert!(page.contains(r#"<span id="query-password-state">set</span>"#));
    let cfg = s.active().await;
    assert_eq!(cfg.directory.source, DirectorySource::Ldap);
    assert_eq!(cfg.directory.servers, vec!["ldap://one:389", "ldaps://two"]);
    assert_eq!(cfg.directory.base_dn, "dc=example,dc=com");
    assert_eq!(cfg.directory.query_size_limit, 500);
    assert_eq!(cfg.directory.timeout_seconds, 7);
    assert!(!cfg.directory.use_attribute_scope_queries);
    assert!(!cfg.directory.starttls);
    assert_eq!(cfg.directory.query_bind.kind, BindType::Simple);
    assert_eq!(stored_password(&cfg).as_deref(), Some("FIRSTSECRET"));
    let raw = s.store.active_config().await.unwrap().unwrap().toml;
    assert!(!raw.contains("FIRSTSECRET"), "encrypted at rest: {raw}");
    assert!(raw.contains("password_encrypted = \"v1:"), "{raw}");
    assert_eq!(cfg.directory.auth_bind.kind, BindType::Simple);

    // A blank password keeps the stored one; other sections are kept.
    s.store
        .put_config(&format!(
            "{}\n[sync]\ninterval = \"15m\"\n",
            s.store.active_config().await.unwrap().unwrap().toml
        ))
        .await
        .unwrap();
    let (status, page) = s
        .tab_post(
            &sess,
            "/settings",
            "/settings/directory",
            &directory_fields("ldap://three", ""),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let cfg = s.active().await;
    assert_eq!(cfg.directory.servers, vec!["ldap://three"]);
    assert_eq!(stored_password(&cfg).as_deref(), Some("FIRSTSECRET"));
    assert_eq!(cfg.sync.interval, "15m", "other sections kept");

    // Bad input: every problem by key path, what was typed kept, nothing stored.
    let before = s.versions().await;
    let mut bad = directory_fields("http://nope", "");
    bad.retain(|(k, _)| *k != "base_dn");
    bad.push(("base_dn", "not a dn"));
    let (status, page) = s
        .tab_post(&sess, "/settings", "/settings/directory", &bad)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{page}");
    assert!(page.contains("directory.servers[0]:"), "{page}");
    assert!(page.contains("directory.base_dn:"), "{page}");
    assert!(
        page.contains(r#"value="not a dn""#),
        "typed value kept: {page}"
    );
    assert_eq!(s.versions().await, before);
    let mut bad = directory_fields("ldap://x", "");
    bad.retain(|(k, _)| *k != "timeout_seconds");
    bad.push(("timeout_seconds", "soon"));
    let (status, page) = s
        .tab_post(&sess, "/settings", "/settings/directory", &bad)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{page}");
    assert!(page.contains("directory.timeout_seconds: must be a whole number"));
    assert_eq!(s.versions().await, before);

    // Remove the stored password.
    let mut clear = directory_fields("ldap://three", "");
    clear.push(("query_password_clear", "true"));
    let (status, page) = s
        .tab_post(&sess, "/settings", "/settings/directory", &clear)
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(!s.active().await.directory.query_bind.has_password());
    assert!(page.contains(r#"<span id="query-password-state">not set</span>"#));

    // A stale form and a missing CSRF token are refused.
    let stale = s
        .post_form(
            &sess,
            "/settings/directory",
            &[("csrf", &sess.csrf), ("version", "1"), ("source", "ldap")],
        )
        .await;
    assert_eq!(stale.status(), StatusCode::CONFLICT);
    let no_csrf = s
        .post_form(&sess, "/settings/directory", &[("version", "4")])
        .await;
    assert_eq!(no_csrf.status(), StatusCode::FORBIDDEN);
    assert_eq!(s.versions().await, before + 1);
}

/// Issue 19 items 3 and 9 on the Settings page: the bind account may be a
/// UPN or DOMAIN\name (Active Directory schema), garbage is refused by its
/// key, and an ldaps:// server written as an IP address is warned about.
#[tokio::test]
async fn settings_directory_form_takes_ad_bind_names_and_warns_of_ip_servers() {
    let s = serve().await;
    let sess = s.session().await;
    for name in ["svc-mfa@corp.example", "CORP\\svc-mfa"] {
        let mut fields = directory_fields("ldaps://10.0.0.5", "SECRET");
        fields.retain(|(k, _)| *k != "query_dn");
        fields.push(("query_dn", name));
        let (status, page) = s
            .tab_post(&sess, "/settings", "/settings/directory", &fields)
            .await;
        assert_eq!(status, StatusCode::OK, "{name}: {page}");
        assert_eq!(s.active().await.directory.query_bind.dn, name);
        assert!(
            page.contains(r#"<p class="notice warning">Warning: directory.servers[0]: ldaps://10.0.0.5 names the server by its IP address 10.0.0.5"#),
            "{page}"
        );
    }
    let before = s.versions().await;
    let mut fields = directory_fields("ldaps://dc1.corp.example", "");
    fields.retain(|(k, _)| *k != "query_dn");
    fields.push(("query_dn", "garbage"));
    let (status, page) = s
        .tab_post(&sess, "/settings", "/settings/directory", &fields)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{page}");
    assert!(
        page.contains("directory.query_bind.dn: &#34;garbage&#34; is not a distinguished name"),
        "{page}"
    );
    assert_eq!(s.versions().await, before);
    // a host name: no warning
    let (status, page) = s
        .tab_post(
            &sess,
            "/settings",
            "/settings/directory",
            &directory_fields("ldaps://dc1.corp.example", ""),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(!page.contains("notice warning"), "{page}");
}

/// Issue 19 item 4 on the Filters tab: a blank filter is saved blank, is
/// the schema's default in effect, and the form shows that default.
#[tokio::test]
async fn filters_tab_takes_blank_filters_as_the_schema_default() {
    use mfasync_core::config::{Schema, DEFAULT_USER_FILTER};
    let s = serve().await;
    let sess = s.session().await;
    s.store.put_config(SYNC_BASE).await.unwrap();
    let (status, page) = s
        .tab_post(
            &sess,
            "/filters",
            "/filters",
            &[
                ("container", "(objectClass=organizationalUnit)"),
                ("security_group", "   "),
                ("user", ""),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let cfg = s.active().await;
    let schema = Schema::of(&cfg);
    assert_eq!(cfg.filters.user, DEFAULT_USER_FILTER);
    assert_eq!(cfg.filters.security_group, schema.filters().security_group);
    assert_eq!(cfg.filters.container, "(objectClass=organizationalUnit)");
    let raw = s.store.active_config().await.unwrap().unwrap().toml;
    assert!(raw.contains("user = \"\""), "stored blank: {raw}");
    let page = s.get_page(&sess.cookie, "/filters").await;
    assert!(
        page.contains(r#"<input name="user" size="80" value="" placeholder="(&#38;(objectCategory=person)(objectClass=user))">"#),
        "{page}"
    );
    assert!(
        page.contains(r#"value="(objectClass=organizationalUnit)""#),
        "{page}"
    );
    assert!(
        page.contains(&format!("the default of the {} schema", schema.as_str())),
        "{page}"
    );
}

#[tokio::test]
async fn filters_and_attributes_tabs_save_validate_and_restore_defaults() {
    use mfasync_core::config::{Attributes, Filters, UniqueIdType};
    let s = serve().await;
    let sess = s.session().await;
    s.store.put_config(SYNC_BASE).await.unwrap();

    // Filters.
    let page = s.get_page(&sess.cookie, "/filters").await;
    assert!(
        page.contains("objectCategory=person"),
        "seed defaults shown"
    );
    let (status, page) = s
        .tab_post(
            &sess,
            "/filters",
            "/filters",
            &[
                ("container", "(objectClass=organizationalUnit)"),
                ("security_group", "(objectClass=groupOfNames)"),
                ("user", "(objectClass=inetOrgPerson)"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("Filters saved as configuration version 2"));
    let cfg = s.active().await;
    assert_eq!(cfg.filters.user, "(objectClass=inetOrgPerson)");
    assert_eq!(
        cfg.directory.query_bind.password.as_deref(),
        Some("TOPSECRET")
    );
    let before = s.versions().await;
    let (status, page) = s
        .tab_post(
            &sess,
            "/filters",
            "/filters",
            &[
                ("container", "(objectClass=organizationalUnit)"),
                ("security_group", "(objectClass=groupOfNames"),
                ("user", "(objectClass=inetOrgPerson)"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{page}");
    assert!(page.contains("filters.security_group:"), "{page}");
    assert!(page.contains(r#"value="(objectClass=groupOfNames""#));
    assert_eq!(s.versions().await, before);
    let (status, page) = s
        .tab_post(
            &sess,
            "/filters",
            "/filters/defaults",
            &[("schema", "active-directory")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(s.active().await.filters, Filters::default());

    // Attributes: every mapped attribute is on the form.
    let page = s.get_page(&sess.cookie, "/attributes").await;
    for key in [
        "unique_id",
        "unique_id_type",
        "distinguished_name",
        "container_name",
        "security_group_name",
        "username",
        "first_name",
        "last_name",
        "email",
        "user_group",
        "description",
        "phone_call_language",
        "text_message_language",
        "mobile_app_language",
        "oath_token_language",
        "business_phone",
        "home_phone",
        "pager",
        "mobile_phone",
        "fax",
        "ip_phone",
        "custom_phone",
        "extension",
    ] {
        assert!(page.contains(&format!(r#"name="{key}""#)), "{key}");
    }
    assert!(page.contains(r#"value="userPrincipalName;sAMAccountName""#));
    // OpenLDAP defaults (preselected for source = "ldap").
    assert!(
        page.contains(r#"<option value="openldap" selected>"#),
        "{page}"
    );
    let (status, page) = s
        .tab_post(
            &sess,
            "/attributes",
            "/attributes/defaults",
            &[("schema", "openldap")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let a = s.active().await.attributes;
    assert_eq!(a.unique_id, "entryUUID");
    assert_eq!(a.unique_id_type, UniqueIdType::String);
    assert_eq!(a.username.0, vec!["uid"]);
    // Edit: the whole form as shown, with two fields changed.
    let html = s.get_page(&sess.cookie, "/attributes").await;
    let version = hidden(&html, "version");
    let mut form: Vec<(String, String)> = vec![
        ("csrf".into(), sess.csrf.clone()),
        ("version".into(), version),
    ];
    for (k, v) in [
        ("unique_id", "entryUUID"),
        ("unique_id_type", "string"),
        ("distinguished_name", "entryDN"),
        ("container_name", "ou; cn"),
        ("security_group_name", "cn"),
        ("username", "uid;mail"),
        ("first_name", "givenName"),
        ("last_name", "sn"),
        ("email", "mail"),
        ("mobile_phone", "mobileTelephoneNumber"),
    ] {
        form.push((k.into(), v.into()));
    }
    let resp = s
        .post_form(
            &sess,
            "/attributes",
            &form
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect::<Vec<_>>(),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let a = s.active().await.attributes;
    assert_eq!(a.username.0, vec!["uid", "mail"]);
    assert_eq!(a.container_name.0, vec!["ou", "cn"]);
    assert_eq!(a.mobile_phone, "mobileTelephoneNumber");
    assert_eq!(a.business_phone, "", "a field left out is not mapped");
    // Invalid: three username attributes, unknown id type.
    let before = s.versions().await;
    let (status, page) = s
        .tab_post(
            &sess,
            "/attributes",
            "/attributes",
            &[
                ("unique_id", "entryUUID"),
                ("unique_id_type", "number"),
                ("distinguished_name", "entryDN"),
                ("username", "uid;mail;cn"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{page}");
    assert!(page.contains("attributes.unique_id_type"), "{page}");
    assert_eq!(s.versions().await, before);
    let (status, page) = s
        .tab_post(
            &sess,
            "/attributes",
            "/attributes",
            &[
                ("unique_id", "entryUUID"),
                ("unique_id_type", "string"),
                ("distinguished_name", "entryDN"),
                ("username", "uid;mail;cn"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{page}");
    assert!(page.contains("attributes.username: at most two"), "{page}");
    assert!(page.contains(r#"value="uid;mail;cn""#), "typed value kept");
    assert_eq!(s.versions().await, before);
    // Restore Defaults: the seed's.
    let (status, _) = s
        .tab_post(
            &sess,
            "/attributes",
            "/attributes/defaults",
            &[("schema", "active-directory")],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s.active().await.attributes, Attributes::default());
    // Every version is audited.
    let audited = s
        .store
        .audit(100)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.action == "config")
        .count();
    assert_eq!(audited, s.versions().await);
}

#[tokio::test]
async fn history_chart_and_a_users_sync_history() {
    let s = serve().await;
    let sess = s.session().await;
    let page = s.get_page(&sess.cookie, "/history").await;
    assert!(page.contains(r#"id="chart-empty""#), "{page}");
    for (created, removed, error) in [(4, 0, None), (0, 2, None), (0, 0, Some("directory down"))] {
        let id = s.store.run_started("full").await.unwrap();
        s.store
            .run_finished(&mfasync_store::SyncRun {
                id,
                started_at: String::new(),
                finished_at: Some("2026-01-01T00:00:00Z".into()),
                mode: "full".into(),
                created,
                updated: 0,
                enabled: 0,
                disabled: 0,
                removed,
                unchanged: 0,
                error: error.map(str::to_string),
                entries_read: None,
                interrupted: false,
                note: None,
            })
            .await
            .unwrap();
    }
    let page = s.get_page(&sess.cookie, "/history").await;
    assert!(page.contains(r#"<svg id="changes-chart""#), "{page}");
    // tallest bar 4: run 1's created bar is full height, run 2's removed bar half.
    assert!(
        page.contains(r#"class="c-created" x="26.7" y="0.0" width="213.3" height="180.0""#),
        "{page}"
    );
    assert!(
        page.contains(r#"class="c-removed" x="293.3" y="90.0" width="213.3" height="90.0""#),
        "{page}"
    );
    assert!(page.contains(r#"class="c-failed""#));
    // The stylesheet colours the series (no inline style).
    let css = reqwest::get(format!("{}/static/style.css", s.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(css.contains(".c-removed{fill:"));

    // A user's page lists its own audit rows only.
    s.store.insert_user(&user("carol", true)).await.unwrap();
    s.store.insert_user(&user("dave", true)).await.unwrap();
    let page = s.get_page(&sess.cookie, "/users/carol").await;
    let history = &page[page.find(r#"id="user-history""#).expect("history table")..];
    assert!(history.contains("<td>insert</td>"), "{history}");
    assert_eq!(history.matches("<tr><td>").count(), 1, "{history}");
    assert!(!history.contains("dave"));
}

#[tokio::test]
async fn swagger_ui_is_served_from_vendored_files() {
    let s = serve().await;
    let resp = s
        .client
        .get(format!("{}/api/v1/docs", s.base))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_redirection());
    assert_eq!(resp.headers()["location"], "/api/v1/docs/");
    let resp = s
        .client
        .get(format!("{}/api/v1/docs/", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.starts_with("default-src 'self';"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(resp.headers()["x-frame-options"], "DENY");
    let html = resp.text().await.unwrap();
    assert!(html.contains("swagger-ui-bundle.js"), "{html}");
    assert!(!html.contains("<script>"), "no inline script: {html}");
    let init = s
        .client
        .get(format!("{}/api/v1/docs/swagger-initializer.js", s.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(init.contains("/api/v1/openapi.json"), "{init}");
    let bundle = s
        .client
        .get(format!("{}/api/v1/docs/swagger-ui-bundle.js", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(bundle.status(), StatusCode::OK);
    assert!(bundle.headers()["content-type"]
        .to_str()
        .unwrap()
        .contains("javascript"));
    let missing = s
        .client
        .get(format!("{}/api/v1/docs/nope.js", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_typed_password_is_refused_without_a_secret_key() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("mfa.db").display());
    let store: Arc<dyn Store> = Arc::from(mfasync_store::open(&url).await.unwrap());
    store
        .admin_set_password(ADMIN, &mfasync_web::auth::hash_password(PASSWORD).unwrap())
        .await
        .unwrap();
    let backend = Arc::new(FakeBackend {
        store: store.clone(),
        calls: Mutex::new(Vec::new()),
    });
    let app = mfasync_web::router(
        backend.clone(),
        store.clone(),
        Arc::new(Metrics::new()),
        WebOptions {
            secure_cookies: false,
            ..WebOptions::default()
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let routes = format!("{app:?}");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let s = Server {
        routes,
        base: format!("http://{addr}"),
        host: addr.to_string(),
        store,
        backend,
        client: Client::builder()
            .redirect(redirect::Policy::none())
            .build()
            .unwrap(),
        _dir: dir,
    };
    let sess = s.session().await;
    let (status, page) = s
        .tab_post(
            &sess,
            "/settings",
            "/settings/directory",
            &directory_fields("ldap://one", "TYPED"),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{page}");
    assert!(
        page.contains("directory.query_bind.password: not stored"),
        "{page}"
    );
    assert!(page.contains("MFASYNC_SECRET_KEY_FILE"));
    assert!(!page.contains("TYPED"));
    assert_eq!(s.versions().await, 0, "nothing stored");
    // Without a typed password the rest is saved.
    let (status, page) = s
        .tab_post(
            &sess,
            "/settings",
            "/settings/directory",
            &directory_fields("ldap://one", ""),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(s.versions().await, 1);
    // The whole-configuration text area too: an inline password is refused.
    let resp = s
        .post_form(
            &sess,
            "/settings",
            &[("csrf", &sess.csrf), ("toml", SYNC_BASE)],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = resp.text().await.unwrap();
    assert!(
        page.contains("directory.query_bind.password: not stored"),
        "{page}"
    );
    assert!(!page.contains("TOPSECRET"));
    assert_eq!(s.versions().await, 1);
}

#[tokio::test]
async fn the_configuration_text_area_stores_typed_passwords_sealed() {
    let s = serve().await;
    let sess = s.session().await;
    let resp = s
        .post_form(
            &sess,
            "/settings",
            &[("csrf", &sess.csrf), ("toml", SYNC_BASE)],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let raw = s.store.active_config().await.unwrap().unwrap().toml;
    assert!(!raw.contains("TOPSECRET"), "{raw}");
    assert_eq!(
        stored_password(&s.active().await).as_deref(),
        Some("TOPSECRET")
    );
    // An SMTP password typed there is sealed too (for the setting `smtp`).
    let text = format!(
        "{SYNC_BASE}[smtp]\nserver = \"smtp://127.0.0.1:25\"\nfrom = \"a@example.com\"\nusername = \"u\"\npassword = \"MAILPW\"\n"
    );
    let resp = s
        .post_form(&sess, "/settings", &[("csrf", &sess.csrf), ("toml", &text)])
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let page = resp.text().await.unwrap();
    assert!(!page.contains("MAILPW"));
    assert_eq!(s.versions().await, 2);
    let raw = s.store.active_config().await.unwrap().unwrap().toml;
    assert!(!raw.contains("MAILPW"), "{raw}");
    assert_eq!(
        stored_smtp_password(&s.active().await).as_deref(),
        Some("MAILPW")
    );
}

#[tokio::test]
async fn sealed_passwords_are_validated_and_never_shown() {
    let s = serve().await;
    let sess = s.session().await;
    let token = s.create_api_token(&sess).await;
    let put = |body: String| {
        s.client
            .put(format!("{}/api/v1/config", s.base))
            .headers(s.bearer(&token))
            .body(body)
            .send()
    };
    let base = "[directory]\nsource = \"ldap\"\nservers = [\"ldap://a\"]\n[directory.query_bind]\ntype = \"simple\"\ndn = \"cn=svc,dc=x\"\n";
    // Not a sealed value; two password sources: refused by key path.
    let resp = put(format!("{base}password_encrypted = \"plain\"\n"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let v: Value = resp.json().await.unwrap();
    assert!(
        v["errors"][0]
            .as_str()
            .unwrap()
            .starts_with("directory.query_bind.password_encrypted:"),
        "{v}"
    );
    let sealed = test_key().seal("directory.query_bind", "S3ALED").unwrap();
    let resp = put(format!(
        "{base}password = \"x\"\npassword_encrypted = \"{sealed}\"\n"
    ))
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(s.versions().await, 0);
    // A sealed value: stored, shown only as set, never exported.
    let resp = put(format!("{base}password_encrypted = \"{sealed}\"\n"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let page = s.get_page(&sess.cookie, "/settings").await;
    assert!(page.contains(r#"<span id="query-password-state">set</span>"#));
    assert!(!page.contains(&sealed) && !page.contains("S3ALED"));
    assert!(
        page.contains("passwords stored in it (inline or sealed)"),
        "{page}"
    );
    let exported = s
        .client
        .get(format!("{}/api/v1/config", s.base))
        .headers(s.bearer(&token))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!exported.contains("password_encrypted") && !exported.contains(&sealed));
}

#[tokio::test]
async fn api_sync_without_waiting_and_a_users_history() {
    let s = serve().await;
    let sess = s.session().await;
    let token = s.create_api_token(&sess).await;
    let resp = s
        .client
        .post(format!("{}/api/v1/sync?full=true&wait=false", s.base))
        .headers(s.bearer(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let v: Value = resp.json().await.unwrap();
    let url = v["status"].as_str().unwrap().to_string();
    assert_eq!(url, format!("/api/v1/sync/jobs/{}", v["job"]));
    let mut job = Value::Null;
    for _ in 0..600 {
        job = s
            .client
            .get(format!("{}{url}", s.base))
            .headers(s.bearer(&token))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if job["state"] != "running" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(job["result"]["created"], 3);
    assert_eq!(*s.backend.calls.lock().unwrap(), vec!["sync full=true"]);
    let resp = s
        .client
        .get(format!("{}/api/v1/sync/jobs/999", s.base))
        .headers(s.bearer(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    s.store.insert_user(&user("erin", true)).await.unwrap();
    let v: Value = s
        .client
        .get(format!("{}/api/v1/users/ERIN/history", s.base))
        .headers(s.bearer(&token))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v.as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v[0]["action"], "insert");
    assert_eq!(v[0]["fields"], json!([]));
    let resp = s
        .client
        .get(format!("{}/api/v1/users/nobody/history", s.base))
        .headers(s.bearer(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn sync_page_edits_who_is_notified() {
    let s = serve().await;
    let sess = s.session().await;
    s.store.put_config(SYNC_BASE).await.unwrap();
    let settings = |notify: &'static str| {
        vec![
            ("enabled", "true"),
            ("interval", "5m"),
            ("approval", "true"),
            ("approval_threshold", "3"),
            ("notify", notify),
        ]
    };
    // Recipients without [smtp]: refused by key path, nothing stored.
    let (status, page) = s
        .sync_post(&sess, "/sync/settings", &settings("ops@example.com"))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{page}");
    assert!(
        page.contains("smtp: sync.notify lists recipients"),
        "{page}"
    );
    assert_eq!(s.versions().await, 1);
    s.store
        .put_config(&format!(
            "{SYNC_BASE}\n[smtp]\nserver = \"smtp://127.0.0.1:25\"\nfrom = \"mfasync@example.com\"\n"
        ))
        .await
        .unwrap();
    let (status, page) = s
        .sync_post(&sess, "/sync/settings", &settings("not-an-address"))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{page}");
    assert!(page.contains("sync.notify[0]:"), "{page}");
    let (status, page) = s
        .sync_post(
            &sess,
            "/sync/settings",
            &settings("ops@example.com\r\n\r\nsecurity@example.com\r\n"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let cfg = s.active().await;
    assert_eq!(
        cfg.sync.notify,
        vec!["ops@example.com", "security@example.com"]
    );
    assert!(cfg.smtp.is_some(), "[smtp] kept");
    assert!(page.contains("ops@example.com\nsecurity@example.com</textarea>"));
    // Emptied: no one is notified.
    let (status, _) = s.sync_post(&sess, "/sync/settings", &settings("")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(s.active().await.sync.notify.is_empty());
    // The cycle summary's recipients are edited the same way.
    let mut with_summary = settings("");
    with_summary.push(("summary", "ops@example.com; noc@example.com"));
    let (status, page) = s.sync_post(&sess, "/sync/settings", &with_summary).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(
        s.active().await.sync.summary,
        vec!["ops@example.com", "noc@example.com"]
    );
    assert!(
        page.contains("ops@example.com\nnoc@example.com</textarea>"),
        "{page}"
    );
    let (status, _) = s.sync_post(&sess, "/sync/settings", &settings("")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(s.active().await.sync.summary.is_empty(), "emptied");
}

#[tokio::test]
async fn settings_tests_the_typed_values_without_saving_them() {
    let s = serve().await;
    let sess = s.session().await;
    let (status, page) = s
        .tab_post(
            &sess,
            "/settings",
            "/settings/directory/test",
            &directory_fields("ldap://candidate:389", "TYPED-ONLY"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("they are not saved"), "{page}");
    assert!(
        page.contains("Test passed: server ldap://candidate:389"),
        "{page}"
    );
    assert!(
        page.contains("ldap://candidate:389</textarea>"),
        "typed values kept"
    );
    assert!(!page.contains("TYPED-ONLY"), "the password is not echoed");
    assert_eq!(s.versions().await, 0, "nothing stored");
    assert_eq!(
        *s.backend.calls.lock().unwrap(),
        vec!["test candidate ldap://candidate:389 password=TYPED-ONLY"]
    );
    // Invalid values are not tested: the problems by key path.
    let (status, page) = s
        .tab_post(
            &sess,
            "/settings",
            "/settings/directory/test",
            &directory_fields("http://bad", ""),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{page}");
    assert!(page.contains("directory.servers[0]:"), "{page}");
    assert_eq!(s.backend.calls.lock().unwrap().len(), 1);
    // A blank password tests with the stored one (sealed).
    let (status, _) = s
        .tab_post(
            &sess,
            "/settings",
            "/settings/directory",
            &directory_fields("ldap://saved", "STORED"),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = s
        .tab_post(
            &sess,
            "/settings",
            "/settings/directory/test",
            &directory_fields("ldap://other", ""),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        s.backend.calls.lock().unwrap().last().unwrap(),
        "test candidate ldap://other password=-",
        "the stored password stays sealed in the candidate"
    );
    assert_eq!(s.active().await.directory.servers, vec!["ldap://saved"]);
}

#[tokio::test]
async fn sync_items_are_chosen_from_the_directory() {
    let s = serve().await;
    let sess = s.session().await;
    s.store.put_config(SYNC_BASE).await.unwrap();
    let page = s.get_page(&sess.cookie, "/sync").await;
    assert!(page.contains(r#"href="/sync/browse?kind=container""#));
    let page = s
        .get_page(&sess.cookie, "/sync/browse?kind=container")
        .await;
    // The hierarchy: indented by depth below the top, names escaped.
    assert!(page.contains(r#"<td class="depth0">x</td>"#), "{page}");
    assert!(page.contains(r#"<td class="depth1">Sales</td>"#), "{page}");
    assert!(
        page.contains(r#"<td class="depth2">EMEA &#60;&#38;&#62;</td>"#),
        "{page}"
    );
    assert!(
        page.contains(r#"href="/sync?kind=container&amp;dn=OU%3DEMEA%2COU%3DSales%2CDC%3Dx""#),
        "{page}"
    );
    let page = s
        .get_page(&sess.cookie, "/sync/browse?kind=security-group")
        .await;
    assert!(page.contains("VPN Users"), "{page}");
    // "Use" fills the Add form; Add stores it.
    let page = s
        .get_page(
            &sess.cookie,
            "/sync?kind=security-group&dn=CN%3DVPN%20Users%2COU%3DGroups%2CDC%3Dx",
        )
        .await;
    assert!(
        page.contains(r#"value="CN=VPN Users,OU=Groups,DC=x""#),
        "{page}"
    );
    assert!(
        page.contains(r#"<option value="security-group" selected>"#),
        "{page}"
    );
    assert_eq!(s.versions().await, 1, "choosing stores nothing");
    let (status, _) = s
        .sync_post(
            &sess,
            "/sync/items",
            &item_fields(
                "security-group",
                "CN=VPN Users,OU=Groups,DC=x",
                "phone-call",
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        item_dns(&s.active().await),
        vec!["CN=VPN Users,OU=Groups,DC=x"]
    );
}

#[tokio::test]
async fn the_smtp_form_validates_saves_and_seals_the_password() {
    let s = serve().await;
    let sess = s.session().await;
    let page = s.get_page(&sess.cookie, "/settings").await;
    assert!(page.contains("href=\"/settings/smtp\""), "{page}");
    let page = s.get_page(&sess.cookie, "/settings/smtp").await;
    assert!(page.contains("id=\"smtp-form\""), "{page}");
    assert!(page.contains("<span id=\"smtp-password-state\">not set</span>"));
    // Invalid values: named by key path, nothing stored, the typed password
    // never echoed.
    let (status, page) = s
        .tab_post(
            &sess,
            "/settings/smtp",
            "/settings/smtp",
            &[
                ("server", "mail.example.com"),
                ("from", "not-an-address"),
                ("username", "mailer"),
                ("password", "MAILSECRET"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{page}");
    assert!(
        page.contains("smtp.server: must start with smtp://"),
        "{page}"
    );
    assert!(
        page.contains("smtp.from: must be an email address"),
        "{page}"
    );
    assert!(!page.contains("MAILSECRET"));
    assert!(
        page.contains("value=\"mail.example.com\""),
        "typed values kept"
    );
    assert_eq!(s.versions().await, 0, "nothing stored");
    // A good save: a new version, the password sealed for `smtp`.
    let (status, page) = s
        .tab_post(
            &sess,
            "/settings/smtp",
            "/settings/smtp",
            &[
                ("server", "smtp://mail.example.com:25?tls=required"),
                ("from", "mfasync@example.com"),
                ("username", "mailer"),
                ("password", "MAILSECRET"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        page.contains("SMTP settings saved as configuration version 1"),
        "{page}"
    );
    assert!(
        page.contains("<span id=\"smtp-password-state\">set</span>"),
        "{page}"
    );
    assert!(!page.contains("MAILSECRET"));
    assert_eq!(s.versions().await, 1);
    let raw = s.store.active_config().await.unwrap().unwrap().toml;
    assert!(!raw.contains("MAILSECRET"), "{raw}");
    let cfg = s.active().await;
    let smtp = cfg.smtp.clone().unwrap();
    assert_eq!(smtp.server, "smtp://mail.example.com:25?tls=required");
    assert_eq!(smtp.from, "mfasync@example.com");
    assert_eq!(smtp.username.as_deref(), Some("mailer"));
    assert_eq!(stored_smtp_password(&cfg).as_deref(), Some("MAILSECRET"));
    // Never exported: `config export` / GET /api/v1/config print the
    // redacted text, without the password or its sealed form.
    let sealed = smtp.password_encrypted.clone().unwrap();
    let export = cfg.to_toml_redacted();
    assert!(
        !export.contains(&sealed) && !export.contains("MAILSECRET"),
        "{export}"
    );
    let token = s.create_api_token(&sess).await;
    let api = s
        .client
        .get(format!("{}/api/v1/config", s.base))
        .headers(s.bearer(&token))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(api.contains("smtp://mail.example.com"), "{api}");
    assert!(
        !api.contains(&sealed) && !api.contains("MAILSECRET"),
        "{api}"
    );
    let page = s.get_page(&sess.cookie, "/settings").await;
    assert!(!page.contains(&sealed) && !page.contains("MAILSECRET"));
    // Blank keeps the stored password; another field changes.
    let (status, page) = s
        .tab_post(
            &sess,
            "/settings/smtp",
            "/settings/smtp",
            &[
                ("server", "smtps://mail.example.com:465"),
                ("from", "mfasync@example.com"),
                ("username", "mailer"),
                ("password", ""),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(s.versions().await, 2);
    let cfg = s.active().await;
    assert_eq!(
        cfg.smtp.as_ref().unwrap().server,
        "smtps://mail.example.com:465"
    );
    assert_eq!(stored_smtp_password(&cfg).as_deref(), Some("MAILSECRET"));
    // Removed on request.
    let (status, page) = s
        .tab_post(
            &sess,
            "/settings/smtp",
            "/settings/smtp",
            &[
                ("server", "smtps://mail.example.com:465"),
                ("from", "mfasync@example.com"),
                ("username", ""),
                ("password", ""),
                ("password_clear", "true"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        page.contains("<span id=\"smtp-password-state\">not set</span>"),
        "{page}"
    );
    let cfg = s.active().await;
    assert!(!cfg.smtp.as_ref().unwrap().has_password());
    assert_eq!(s.versions().await, 3);
    // A stale form is refused; a missing CSRF token too.
    let resp = s
        .post_form(
            &sess,
            "/settings/smtp",
            &[
                ("csrf", &sess.csrf),
                ("version", "1"),
                ("server", "smtp://x"),
                ("from", "a@b.c"),
            ],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    let resp = s
        .post_form(
            &sess,
            "/settings/smtp",
            &[("version", "3"), ("server", "smtp://x")],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(s.versions().await, 3);
}

#[tokio::test]
async fn sync_status_reports_the_entries_read() {
    let s = serve().await;
    let sess = s.session().await;
    let resp = s
        .post_form(&sess, "/sync", &[("csrf", &sess.csrf), ("full", "true")])
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let id = location.trim_start_matches("/sync/progress/").to_string();
    let mut last = Value::Null;
    for _ in 0..600 {
        last = s
            .client
            .get(format!("{}/sync/status/{id}", s.base))
            .header("cookie", &sess.cookie)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(last["entries_read"].is_u64(), "a count field: {last}");
        if last["state"] != "running" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(last["state"], "done", "{last}");
    // After the cycle: the entries it read (created + updated + unchanged).
    let r = &last["result"];
    let read = r["created"].as_u64().unwrap()
        + r["updated"].as_u64().unwrap()
        + r["unchanged"].as_u64().unwrap();
    assert_eq!(last["entries_read"].as_u64(), Some(read), "{last}");
    let page = s.get_page(&sess.cookie, &location).await;
    assert!(page.contains("11 directory entries read."), "{page}");
}

fn held(action: &str, name: &str) -> HeldChange {
    HeldChange {
        action: action.into(),
        username: name.into(),
        directory_id: None,
        reason: Some("no longer in OU=Sales".into()),
        limit: None,
        decision: None,
    }
}

#[tokio::test]
async fn a_pending_approval_is_announced_on_every_page() {
    let s = serve().await;
    let sess = s.session().await;
    let pages = [
        "/",
        "/settings",
        "/filters",
        "/users",
        "/history",
        "/tokens",
        "/servers",
        "/approvals",
        "/outbox",
    ];
    for p in pages {
        let page = s.get_page(&sess.cookie, p).await;
        assert!(!page.contains("approval-banner"), "no banner on {p}");
        assert!(!page.contains("<!--"), "no marker left on {p}");
    }
    s.store
        .create_approval(
            "ap7",
            "fp7",
            &[
                held("disable", "a"),
                held("disable", "b"),
                held("disable", "c"),
                held("remove", "d"),
            ],
        )
        .await
        .unwrap();
    for p in pages {
        let page = s.get_page(&sess.cookie, p).await;
        assert!(
            page.contains(r#"<strong id="banner-disable">3</strong> users to disable"#)
                && page.contains(r#"<strong id="banner-remove">1</strong> user to remove"#)
                && page
                    .contains(r#"<a href="/approvals" id="banner-link">Review approval ap7</a>"#),
            "banner on {p}: {page}"
        );
    }
    // Not on the sign-in page, nor in API answers.
    let login = s
        .client
        .get(format!("{}/login", s.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!login.contains("approval-banner"));
    // Decided: the banner goes.
    let resp = s
        .post_form(&sess, "/approvals/ap7/reject", &[("csrf", &sess.csrf)])
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(!resp.text().await.unwrap().contains("approval-banner"));
    let page = s.get_page(&sess.cookie, "/users").await;
    assert!(!page.contains("approval-banner"));
}

#[tokio::test]
async fn users_are_searched_by_description_and_filtered_by_user_group() {
    let s = serve().await;
    let sess = s.session().await;
    let token = s.create_api_token(&sess).await;
    for (name, group, description) in [
        ("ann", Some("Sales"), Some("Regional manager, Berlin")),
        ("ben", Some("sales"), Some("Field engineer")),
        ("cat", Some("Engineering"), Some("Berlin office")),
        ("dan", None, None),
    ] {
        s.store
            .insert_user(&MfaUser {
                user_group: group.map(str::to_string),
                description: description.map(str::to_string),
                ..user(name, true)
            })
            .await
            .unwrap();
    }
    let api = |query: &'static str| {
        let req = s
            .client
            .get(format!("{}/api/v1/users{query}", s.base))
            .headers(s.bearer(&token));
        async move {
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "{query}");
            let users: Vec<Value> = resp.json().await.unwrap();
            users
                .iter()
                .map(|u| u["username"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(api("?q=berlin").await, ["ann", "cat"]);
    assert_eq!(api("?q=field+engineer").await, ["ben"]);
    assert_eq!(api("?user_group=SALES").await, ["ann", "ben"]);
    assert_eq!(api("?user_group=Engineering&q=berlin").await, ["cat"]);
    assert_eq!(api("?user_group=Sales&q=berlin").await, ["ann"]);
    assert_eq!(api("?user_group=").await, ["ann", "ben", "cat", "dan"]);
    assert!(api("?user_group=Nobody").await.is_empty());

    let page = s.get_page(&sess.cookie, "/users?q=berlin").await;
    assert!(page.contains("2 of 4 users match"), "{page}");
    assert!(page.contains("<td>Regional manager, Berlin</td>"));
    // The filter lists each group once (case-insensitively), the chosen one selected.
    let page = s.get_page(&sess.cookie, "/users?user_group=sales").await;
    assert!(page.contains("2 of 4 users match"), "{page}");
    assert!(page.contains(r#"<a href="/users/ann">ann</a>"#));
    assert!(page.contains(r#"<a href="/users/ben">ben</a>"#));
    assert!(!page.contains(r#"<a href="/users/cat">cat</a>"#));
    assert!(page.contains(r#"<option value="">All</option>"#));
    assert!(page.contains(r#"<option value="Engineering">Engineering</option>"#));
    assert_eq!(
        page.matches(r#"<option value="Sales" selected>"#).count(),
        1,
        "{page}"
    );
    assert!(!page.contains(r#"<option value="sales""#));
    let page = s
        .get_page(&sess.cookie, "/users?user_group=Engineering&q=berlin")
        .await;
    assert!(page.contains("1 of 4 users match"));
    assert!(page.contains(r#"<a href="/users/cat">cat</a>"#));
}

#[tokio::test]
async fn the_dashboard_says_when_synchronization_is_not_configured() {
    let s = serve().await;
    let sess = s.session().await;
    let page = s.get_page(&sess.cookie, "/").await;
    assert!(
        page.contains(r#"id="sync-state">not configured: apply a configuration</a>"#),
        "{page}"
    );
    s.store
        .put_config("[directory]\nservers = [\"ldap://h\"]\n")
        .await
        .unwrap();
    let page = s.get_page(&sess.cookie, "/").await;
    assert!(
        page.contains(r#"id="sync-state">not configured: add a sync item</a>"#),
        "{page}"
    );
    let metrics = s
        .client
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("\nmfasync_sync_configured 0\n"),
        "{metrics}"
    );
    assert!(metrics.contains("mfasync_sync_state{state=\"not-configured\"} 1"));
    s.store
        .put_config(
            "[directory]\nservers = [\"ldap://h\"]\n[[sync.items]]\nkind = \"container\"\ndn = \"ou=x,dc=x\"\n",
        )
        .await
        .unwrap();
    let page = s.get_page(&sess.cookie, "/").await;
    assert!(page.contains(r#"id="sync-state">active</a>"#), "{page}");
}

#[tokio::test]
async fn outbox_page_and_api_list_emails_newest_first_escaped() {
    use mfasync_core::email::EmailKind;
    let s = serve().await;
    let email = |name: &str, kind| mfasync_store::NewEmail {
        kind,
        username: name.to_string(),
        directory_id: Some(format!("id-{name}")),
        recipient: format!("{name}@example.com"),
        subject: format!("Hello <b>{name}</b>"),
        text: "body".into(),
        html: None,
    };
    s.store
        .outbox_enqueue(&[
            email("ann", EmailKind::Welcome),
            email("bob", EmailKind::Update),
        ])
        .await
        .unwrap();
    let rows = s.store.outbox(None, 10).await.unwrap();
    let (bob, ann) = (rows[0].id, rows[1].id);
    let now = rows[0].due_ms;
    let claimed = s.store.outbox_claim(now, now + 1).await.unwrap().unwrap();
    assert_eq!(claimed.id, ann);
    s.store
        .outbox_attempt_failed(ann, "550 <script>alert(1)</script>", None)
        .await
        .unwrap();

    let sess = s.session().await;
    let page = s.get_page(&sess.cookie, "/outbox").await;
    assert!(
        page.contains(r#"<a href="/outbox" class="active">Outbox</a>"#),
        "{page}"
    );
    let bob_at = page.find("bob@example.com").unwrap();
    let ann_at = page.find("ann@example.com").unwrap();
    assert!(bob_at < ann_at, "newest first");
    assert!(page.contains("Hello &#60;b&#62;ann&#60;/b&#62;"), "{page}");
    assert!(
        page.contains("550 &#60;script&#62;alert(1)&#60;/script&#62;"),
        "{page}"
    );
    assert!(!page.contains("<script>alert"), "{page}");
    let failed = s.get_page(&sess.cookie, "/outbox?status=failed").await;
    assert!(failed.contains("ann@example.com") && !failed.contains("bob@example.com"));

    let token = s.create_api_token(&sess).await;
    let get = |q: &'static str| {
        s.client
            .get(format!("{}/api/v1/outbox{q}", s.base))
            .headers(s.bearer(&token))
            .send()
    };
    let all: Value = get("").await.unwrap().json().await.unwrap();
    let ids: Vec<i64> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![bob, ann]);
    assert_eq!(all[0]["status"], "pending");
    assert!(all[0]["next_attempt_at"].is_string());
    assert_eq!(all[1]["status"], "failed");
    assert_eq!(all[1]["kind"], "welcome");
    assert_eq!(all[1]["attempts"], 1);
    assert_eq!(all[1]["last_error"], "550 <script>alert(1)</script>");
    let pending: Value = get("?status=pending").await.unwrap().json().await.unwrap();
    assert_eq!(pending.as_array().unwrap().len(), 1);
    let bad = get("?status=lost").await.unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn approvals_decided_user_by_user_through_the_api_and_the_portal() {
    let s = serve().await;
    let sess = s.session().await;
    let token = s.create_api_token(&sess).await;
    let h = s.bearer(&token);
    let four = [
        held("remove", "ann"),
        held("remove", "ben"),
        held("remove", "cid"),
        held("disable", "dee"),
    ];
    s.store.create_approval("ap5", "fp", &four).await.unwrap();

    // API: a `users` list decides those users alone
    let resp = s
        .client
        .post(format!("{}/api/v1/approvals/ap5/approve", s.base))
        .headers(h.clone())
        .json(&json!({"users": ["ann"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["status"], "pending", "{v}");
    assert_eq!(v["still_pending"], json!(["ben", "cid", "dee"]));
    let resp = s
        .client
        .post(format!("{}/api/v1/approvals/ap5/reject", s.base))
        .headers(h.clone())
        .json(&json!({"users": ["nobody"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    assert!(resp.text().await.unwrap().contains("nobody"));
    // a list that is not one is refused, never taken as the whole approval
    let resp = s
        .client
        .post(format!("{}/api/v1/approvals/ap5/approve", s.base))
        .headers(h.clone())
        .json(&json!({"users": "ben"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let list: Value = s
        .client
        .get(format!("{}/api/v1/approvals", s.base))
        .headers(h.clone())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list[0]["remove"], json!(["ben", "cid"]), "{list}");
    assert_eq!(list[0]["disable"], json!(["dee"]), "{list}");

    // Portal: a checkbox per undecided user, "Approve/Reject selected"
    let page = s.get_page(&sess.cookie, "/approvals").await;
    assert!(page.contains(r#"name="user:ben""#), "{page}");
    assert!(!page.contains(r#"name="user:ann""#), "decided: not offered");
    assert!(page.contains("Approve selected") && page.contains("Reject selected"));
    assert!(page.contains(r#"formaction="/approvals/ap5/reject""#));
    let resp = s
        .post_form(
            &sess,
            "/approvals/ap5/reject",
            &[("csrf", &sess.csrf), ("selected", "1"), ("user:cid", "1")],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("Approval ap5 rejected for cid"));
    // nothing ticked: refused, nothing decided
    let resp = s
        .post_form(
            &sess,
            "/approvals/ap5/approve",
            &[("csrf", &sess.csrf), ("selected", "1")],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    // without the CSRF token: refused
    let resp = s
        .post_form(
            &sess,
            "/approvals/ap5/approve",
            &[("selected", "1"), ("user:ben", "1")],
        )
        .await;
    assert_ne!(resp.status(), StatusCode::OK);
    let calls = s.backend.calls.lock().unwrap().clone();
    assert!(
        calls.contains(&"approve ap5 by admin for ann".to_string()),
        "{calls:?}"
    );
    assert!(
        calls.contains(&"reject ap5 by admin for cid".to_string()),
        "{calls:?}"
    );
    assert!(!calls.iter().any(|c| c.contains("for ben")), "{calls:?}");
    let a = s.store.approval("ap5").await.unwrap().unwrap();
    assert_eq!(a.still_pending(), ["ben", "dee"]);
}

/// The Recycle bin page lists what a sync removed (escaped), and its Restore
/// and Purge buttons act only with the CSRF token, audited by the admin.
#[tokio::test]
async fn recycle_bin_page_restores_and_purges() {
    use mfasync_core::plan::{Action, Change};
    let s = serve().await;
    let sess = s.session().await;
    let change = |action: Action, u: &MfaUser| Change {
        action,
        user: u.clone(),
        before: (action != Action::Create).then(|| u.clone()),
        fields: vec![],
        reason: (action == Action::Remove).then(|| "no longer in <OU=Gone>".to_string()),
        raw: None,
    };
    let mut a = user("alice", true);
    a.directory_id = Some("id-a".into());
    a.source = Source::Directory;
    let mut b = user("bob", true);
    b.directory_id = Some("id-b".into());
    b.source = Source::Directory;
    s.store
        .apply(
            &[change(Action::Create, &a), change(Action::Create, &b)],
            None,
        )
        .await
        .unwrap();
    let empty = s.get_page(&sess.cookie, "/recycle-bin").await;
    assert!(empty.contains(r#"id="bin-empty""#), "{empty}");
    s.store
        .apply(
            &[change(Action::Remove, &a), change(Action::Remove, &b)],
            None,
        )
        .await
        .unwrap();
    let page = s.get_page(&sess.cookie, "/recycle-bin").await;
    assert!(
        page.contains(r#"<a href="/recycle-bin" class="active">Recycle bin</a>"#),
        "{page}"
    );
    assert!(
        page.contains("no longer in &#60;OU=Gone&#62;")
            || page.contains("no longer in &lt;OU=Gone&gt;"),
        "{page}"
    );
    assert!(!page.contains("<OU=Gone>"));
    assert!(page.contains(r#"action="/recycle-bin/restore""#));
    assert!(page.contains(r#"name="name" value="id-a""#));

    let refused = s
        .post_form(
            &sess,
            "/recycle-bin/restore",
            &[("csrf", "wrong"), ("name", "id-a")],
        )
        .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let done = s
        .post_form(
            &sess,
            "/recycle-bin/restore",
            &[("csrf", &sess.csrf), ("name", "id-a")],
        )
        .await;
    assert_eq!(done.status(), StatusCode::OK);
    assert!(done.text().await.unwrap().contains("alice restored."));
    assert_eq!(s.store.users().await.unwrap(), vec![a.clone()]);
    let audit = s.store.audit(1).await.unwrap();
    assert_eq!(
        (audit[0].action.as_str(), audit[0].actor.as_str()),
        ("restore", ADMIN)
    );

    // refused while a live user has the username
    let mut taker = user("bob", true);
    taker.directory_id = Some("id-taker".into());
    taker.source = Source::Directory;
    s.store
        .apply(&[change(Action::Create, &taker)], None)
        .await
        .unwrap();
    let clash = s
        .post_form(
            &sess,
            "/recycle-bin/restore",
            &[("csrf", &sess.csrf), ("name", "id-b")],
        )
        .await;
    assert_eq!(clash.status(), StatusCode::CONFLICT);
    assert!(clash.text().await.unwrap().contains("the live user bob"));

    let purged = s
        .post_form(
            &sess,
            "/recycle-bin/purge",
            &[("csrf", &sess.csrf), ("name", "id-b")],
        )
        .await;
    assert_eq!(purged.status(), StatusCode::OK);
    assert!(s.store.binned().await.unwrap().is_empty());
    let gone = s
        .post_form(
            &sess,
            "/recycle-bin/purge",
            &[("csrf", &sess.csrf), ("name", "id-b")],
        )
        .await;
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);

    // the same through the API, with a bearer token
    let token = s.create_api_token(&sess).await;
    let mut carol = user("carol", true);
    carol.directory_id = Some("id-c".into());
    carol.source = Source::Directory;
    s.store
        .apply(&[change(Action::Create, &carol)], None)
        .await
        .unwrap();
    s.store
        .apply(&[change(Action::Remove, &carol)], None)
        .await
        .unwrap();
    let api = |method: reqwest::Method, path: &str| {
        s.client
            .request(method, format!("{}/api/v1{path}", s.base))
            .headers(s.bearer(&token))
            .send()
    };
    let listed: Value = api(reqwest::Method::GET, "/recycle-bin")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed[0]["username"], "carol", "{listed}");
    assert_eq!(listed[0]["directory_id"], "id-c", "{listed}");
    let restored = api(reqwest::Method::POST, "/recycle-bin/carol/restore")
        .await
        .unwrap();
    assert_eq!(restored.status(), StatusCode::OK);
    assert_eq!(restored.json::<Value>().await.unwrap()["username"], "carol");
    assert!(s.store.binned().await.unwrap().is_empty());
    let none = api(reqwest::Method::POST, "/recycle-bin/carol/purge")
        .await
        .unwrap();
    assert_eq!(none.status(), StatusCode::NOT_FOUND);
}
