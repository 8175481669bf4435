//! The web side of `mfasync serve`: the management portal (server-rendered
//! HTML, plain forms), the REST API under `/api/v1`, `/metrics` (Prometheus
//! text format) and `/healthz`.
//!
//! The crate does not know how to reach a directory or run a sync: the binary
//! gives it a [`Backend`] for that. What is only a read of the MFA user
//! database (users, pending approvals, sync history, the active configuration)
//! and everything about administrators (password hashes, sessions, API tokens)
//! comes straight from the [`mfasync_store::Store`].
//!
//! Security model (docs/web.md): a local administrator signs in with a password
//! (argon2id hash in the store); the session is a random token whose SHA-256 is
//! stored, sent as an `HttpOnly; SameSite=Strict; Secure` cookie. Every
//! state-changing request without an `Authorization` header must come from the
//! same origin (`Sec-Fetch-Site`/`Origin`), and every portal form carries the
//! session's CSRF token. The API takes `Authorization: Bearer <token>` (an API
//! token created in the portal, or a session token).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::routing::get;
use axum::Router;
use mfasync_core::auth::Reason;
use mfasync_core::lockout::{Account, Gate};
use mfasync_core::report::directory::TestReport;
use mfasync_core::report::explain::{Explanation, UserSynced};
use mfasync_core::report::{Approved, Rejected, SyncNow, SyncProgress, SyncReport};
use mfasync_store::Store;

// The portal's pages each own their routes over the kit (`kit`, `confedit`,
// `jobs`); no page imports another (ARCHITECTURE.md).
mod api;
mod apidoc;
mod approvals;
pub mod auth;
mod banner;
mod charts;
mod confedit;
mod docs;
mod expiry;
mod explain;
mod history;
mod jobs;
mod kit;
pub mod limits;
pub mod metrics;
mod outbox;
mod portal;
mod progress;
mod recycle;
mod schemas;
pub mod servers;
mod settings;
mod smtp;
mod syncpage;
mod syncstate;
mod tabs;
mod tokens;
mod users;

pub use apidoc::document as openapi_document;
pub use metrics::Metrics;
/// Sealing of passwords typed in the portal (`mfasync-secret`).
pub use mfasync_secret as secret;
pub use syncstate::SyncState;

/// What the web side needs from the service: everything that talks to the
/// directory or changes MFA users. Answers are the typed reports of
/// `mfasync_core::report`, serialized as PRODUCT.md section 1's documents.
#[async_trait]
pub trait Backend: Send + Sync {
    /// Validate a configuration as `config apply` does and store it as the
    /// active one; its version number, or every problem as "key.path: message".
    async fn config_put(&self, toml: &str, actor: &str) -> Result<i64, Vec<String>>;
    /// `directory test --json`.
    async fn directory_test(&self) -> TestReport;
    /// The directory's containers (`kind` "container", by the container
    /// filter) or security groups ("security-group", by the group filter)
    /// under the base DN, as (DN, display name), for choosing a sync item;
    /// at most `limit`. The seed's container hierarchy and group list.
    async fn directory_entries(
        &self,
        _kind: &str,
        _limit: usize,
    ) -> Result<Vec<(String, String)>, String> {
        Err("browsing the directory is not available".into())
    }
    /// `directory test --json` with a configuration that is not stored (the
    /// Settings form's values: the seed's Test before the settings are used).
    /// `toml` has been validated and may hold a typed password inline: it is
    /// neither stored nor logged.
    async fn directory_test_candidate(&self, _toml: &str) -> TestReport {
        TestReport::not_run("testing settings that are not saved is not available")
    }
    /// Progress of the cycle running now, for Synchronize Now's live
    /// progress: directory entries read so far by the cycle's full read, and
    /// what it is doing. Read again right after the cycle ends for its final
    /// count. Default: nothing known.
    fn sync_progress(&self) -> SyncProgress {
        SyncProgress::default()
    }
    /// One synchronization cycle now (`sync --json`, or `sync --full --json`),
    /// or where it was handed (a server that does not run synchronization).
    async fn sync_now(&self, full: bool) -> Result<SyncNow, String>;
    /// `sync --plan --json`.
    async fn plan(&self) -> Result<SyncReport, String>;
    /// Approve a pending approval as `actor` (`approvals approve ID`); only
    /// the held `users` when some are named (`--user`).
    async fn approve(&self, id: &str, users: &[String], actor: &str) -> Result<Approved, String>;
    /// Reject a pending approval as `actor` (`approvals reject ID`); only the
    /// held `users` when some are named (`--user`).
    async fn reject(&self, id: &str, users: &[String], actor: &str) -> Result<Rejected, String>;
    /// `users explain NAME|DN`: the user's entry read now and decided step
    /// by step as a sync would.
    async fn explain_user(&self, _query: &str) -> Result<Explanation, String> {
        Err("explaining a user is not available".into())
    }
    /// `sync --user NAME|DN` at `actor`'s request: that one user now.
    async fn sync_user(&self, _query: &str, _actor: &str) -> Result<UserSynced, String> {
        Err("synchronizing one user is not available".into())
    }
    /// Verify a password by LDAP bind (`auth USERNAME`).
    async fn auth(&self, username: &str, password: &str) -> Result<(), Reason>;
    /// `auth` under the service's password-guessing limits: `gate` is asked
    /// once the account the username names is known (the directory entry),
    /// before the password is bound; its refusal is the answer, with nothing
    /// bound. Default: the account is the typed name.
    async fn auth_limited(
        &self,
        username: &str,
        password: &str,
        gate: &dyn Gate,
    ) -> Result<(), Reason> {
        gate.admit(&Account::typed(username))?;
        self.auth(username, password).await
    }
    /// Portal sign-in by directory credentials: `Ok(())` when the directory
    /// accepts the password (as `auth` checks it) AND the account is a member,
    /// directly or through nested groups, of `portal.admin_group`. `Err`: why
    /// not, for the log only (never shown; it must not name the password).
    async fn directory_admin(&self, _username: &str, _password: &str) -> Result<(), String> {
        Err("sign-in by directory credentials is not available".into())
    }
    /// Give the MFA user `username` a new OATH TOTP secret (replacing any),
    /// audited by `actor`: what the user's authenticator app reads, shown once.
    async fn otp_enroll(&self, _username: &str, _actor: &str) -> Result<OtpEnrollment, String> {
        Err("OATH enrollment is not available".into())
    }
    /// Check a code of the user's OATH secret, as the RADIUS server does (a
    /// code is accepted once): `Ok(None)` accepted, `Ok(Some(reason))` refused.
    async fn otp_check(&self, _username: &str, _code: &str) -> Result<Option<String>, String> {
        Err("OATH codes cannot be checked here".into())
    }
    /// `directory_admin` under the limits, as [`Backend::auth_limited`].
    async fn directory_admin_limited(
        &self,
        username: &str,
        password: &str,
        gate: &dyn Gate,
    ) -> Result<(), String> {
        gate.admit(&Account::typed(username))
            .map_err(|r| format!("refused by the sign-in limits ({})", r.as_str()))?;
        self.directory_admin(username, password).await
    }
}

/// A new OATH enrollment: the `otpauth://` URI (it holds the secret) and its
/// QR code as SVG markup. Never logged (no `Debug`).
pub struct OtpEnrollment {
    pub username: String,
    pub uri: String,
    pub qr_svg: String,
}

/// How the web side behaves.
#[derive(Debug, Clone)]
pub struct WebOptions {
    /// Mark cookies `Secure` (default). Turn off only for plain HTTP on
    /// loopback (tests, a local demo): browsers do not send Secure cookies
    /// over http:// except to localhost.
    pub secure_cookies: bool,
    /// How long a portal session lasts after sign-in.
    pub session_ttl: Duration,
    /// `POST /api/v1/auth`: failed password checks allowed per account (the
    /// directory entry the username names) within `login_window`; more are
    /// refused (429 `account-locked`) without asking the directory. Also the
    /// failures, per client address and account, that cost no wait (API and
    /// portal sign-in; then `backoff_first`, doubling, at most `backoff_cap`).
    pub login_max_failures: usize,
    pub login_window: Duration,
    pub backoff_first: Duration,
    pub backoff_cap: Duration,
    /// Failed password checks per client address (any accounts) within
    /// `auth_client_window` after which the address is over its limit: from
    /// it, the accounts that failed from it within the window are refused
    /// (429 `rate-limited`), others are still checked. Counted separately
    /// for `POST /api/v1/auth` and portal sign-in; a success does not clear
    /// them (one known account must not reset a guessing run).
    pub auth_client_max_failures: usize,
    pub auth_client_window: Duration,
    /// Reverse proxies whose `X-Forwarded-For` is believed: for a request
    /// from one of these, the client is the right-most address in that
    /// header that is not itself a trusted proxy. Empty (default): the socket
    /// peer is the client and the header is ignored.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// The key that seals passwords typed in the portal (`secret::load_key`:
    /// `MFASYNC_SECRET_KEY_FILE` or `MFASYNC_SECRET_KEY`). None: the portal
    /// refuses to store a typed password.
    pub secret_key: Option<secret::SecretKey>,
    /// The counts of `POST /api/v1/auth`, when another way in shares them
    /// (`serve`'s RADIUS server: one account lock whichever way the wrong
    /// passwords came). None: the router keeps its own.
    pub api_limits: Option<Arc<limits::Limits>>,
}

impl Default for WebOptions {
    fn default() -> Self {
        WebOptions {
            secure_cookies: true,
            session_ttl: Duration::from_secs(8 * 3600),
            login_max_failures: 10,
            login_window: Duration::from_secs(300),
            backoff_first: Duration::from_secs(60),
            backoff_cap: Duration::from_secs(900),
            auth_client_max_failures: 50,
            auth_client_window: Duration::from_secs(300),
            trusted_proxies: Vec::new(),
            secret_key: None,
            api_limits: None,
        }
    }
}

#[derive(Clone)]
pub(crate) struct App {
    pub backend: Arc<dyn Backend>,
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    pub opts: Arc<WebOptions>,
    /// Password-guessing limits of portal sign-in.
    pub login_limits: Arc<limits::Limits>,
    /// Password-guessing limits of `POST /api/v1/auth`.
    pub auth_limits: Arc<limits::Limits>,
    /// Synchronize Now jobs started from the portal (live progress).
    pub jobs: Arc<std::sync::Mutex<jobs::Jobs>>,
    /// API tokens recently read from the store (`auth::TokenCache`).
    pub tokens: Arc<auth::TokenCache>,
}

/// The whole web application: portal pages, `/api/v1`, `/metrics`, `/healthz`.
pub fn router(
    backend: Arc<dyn Backend>,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    opts: WebOptions,
) -> Router {
    let app = App {
        backend,
        store,
        metrics,
        login_limits: Arc::new(limits::Limits::for_portal(&opts)),
        auth_limits: opts
            .api_limits
            .clone()
            .unwrap_or_else(|| Arc::new(limits::Limits::for_api(&opts))),
        opts: Arc::new(opts),
        jobs: Arc::default(),
        tokens: Arc::default(),
    };
    // the API's routes come with their documentation (apidoc.rs)
    let (api, public_api, _) = apidoc::routers();
    let api = api.route_layer(axum::middleware::from_fn_with_state(
        app.clone(),
        auth::require_api,
    ));
    let portal = portal::routes()
        .merge(settings::routes())
        .merge(smtp::routes())
        .merge(tabs::routes())
        .merge(syncpage::routes())
        .merge(progress::routes())
        .merge(users::routes())
        .merge(explain::routes())
        .merge(recycle::routes())
        .merge(approvals::routes())
        .merge(history::routes())
        .merge(tokens::routes())
        .merge(servers::portal_routes())
        .merge(outbox::portal_routes())
        .route_layer(axum::middleware::from_fn_with_state(
            app.clone(),
            auth::require_portal,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            app.clone(),
            banner::approval_banner,
        ));
    Router::new()
        .merge(api)
        .merge(public_api)
        .route("/api/v1/docs", get(docs::root))
        .route("/api/v1/docs/", get(docs::index))
        .route("/api/v1/docs/{*file}", get(docs::asset))
        .merge(portal)
        .route("/login", get(portal::login_page).post(portal::login))
        .route("/static/style.css", get(kit::stylesheet))
        .route("/static/favicon.svg", get(kit::favicon))
        .route("/static/times.js", get(kit::times_script))
        .route("/static/progress.js", get(progress::script))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            auth::guard,
        ))
        .with_state(app)
}

/// The active configuration as the portal and `GET /api/v1/config` show it:
/// TOML with every secret left out, and which secrets are set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigView {
    pub version: i64,
    pub created_at: String,
    /// `Config::to_toml_redacted()`; inline passwords are never in it.
    pub toml: String,
    /// ("directory.query_bind.password", set?) for each secret.
    pub secrets: Vec<(String, bool)>,
}

impl ConfigView {
    /// Build the view of a stored version. A stored text that no longer parses
    /// is not shown at all (it may hold secrets).
    pub fn from_stored(v: &mfasync_store::ConfigVersion) -> ConfigView {
        match mfasync_core::config::parse(&v.toml) {
            Ok(cfg) => {
                let mut secrets = vec![
                    (
                        "directory.query_bind.password".to_string(),
                        cfg.directory.query_bind.has_password(),
                    ),
                    (
                        "directory.auth_bind.password".to_string(),
                        cfg.directory.auth_bind.has_password(),
                    ),
                ];
                if let Some(smtp) = &cfg.smtp {
                    secrets.push(("smtp.password".to_string(), smtp.has_password()));
                }
                ConfigView {
                    version: v.version,
                    created_at: v.created_at.clone(),
                    toml: cfg.to_toml_redacted(),
                    secrets,
                }
            }
            Err(errors) => ConfigView {
                version: v.version,
                created_at: v.created_at.clone(),
                toml: format!(
                    "# stored configuration version {} no longer validates ({} problems); not shown\n",
                    v.version,
                    errors.len()
                ),
                secrets: Vec::new(),
            },
        }
    }

    /// Whether the stored configuration has an inline `password` (lost when
    /// the redacted text is saved back).
    pub fn has_inline_password(stored: &mfasync_store::ConfigVersion) -> bool {
        mfasync_core::config::parse(&stored.toml)
            .map(|c| {
                c.directory.query_bind.password.is_some()
                    || c.directory.query_bind.password_encrypted.is_some()
                    || c.directory.auth_bind.password.is_some()
                    || c.directory.auth_bind.password_encrypted.is_some()
                    || c.directory.domains.iter().any(|d| {
                        d.query_bind.password.is_some() || d.query_bind.password_encrypted.is_some()
                    })
                    || c.smtp
                        .as_ref()
                        .is_some_and(|s| s.password.is_some() || s.password_encrypted.is_some())
            })
            .unwrap_or(false)
    }
}
