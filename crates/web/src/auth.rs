//! Administrators: password hashes (argon2id), sessions and API tokens stored
//! by the SHA-256 of their secret, the CSRF and cross-site checks, and the
//! security headers every response carries.
//!
//! Nothing here logs a password, a token or a hash.

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::App;

/// The session cookie.
pub const SESSION_COOKIE: &str = "mfasync_session";
/// The double-submit cookie of the sign-in form (there is no session yet).
pub const LOGIN_COOKIE: &str = "mfasync_login";
/// The header a cookie-authenticated API call must carry its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Who is making a request, once signed in.
#[derive(Debug, Clone)]
pub struct Admin {
    pub username: String,
    /// The session's CSRF token (empty for bearer tokens, which need none).
    pub csrf: String,
    /// The hash of the session token (for sign-out).
    pub token_hash: String,
    /// Signed in by `Authorization: Bearer` (not by cookie).
    pub bearer: bool,
}

/// Hash a password for storage (argon2id, default parameters, random salt):
/// a PHC string such as `$argon2id$v=19$m=19456,t=2,p=1$...`.
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| format!("salt: {e}"))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

/// Check a password against a stored PHC string; false on any malformed hash.
pub fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A hash to verify against when the username is unknown, so an unknown
/// name costs the same time as a wrong password.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_password("not a password").unwrap_or_default())
}

/// Check an administrator's password against the store, off the async
/// threads (argon2 is deliberately slow).
pub(crate) async fn check_admin(app: &App, username: &str, password: &str) -> bool {
    let stored = match app.store.admin_password_hash(username).await {
        Ok(h) => h,
        Err(e) => {
            tracing::error!("cannot read administrator accounts: {e}");
            None
        }
    };
    let known = stored.is_some();
    let phc = stored.unwrap_or_else(|| dummy_hash().to_string());
    let password = password.to_string();
    let ok = tokio::task::spawn_blocking(move || verify_password(&password, &phc))
        .await
        .unwrap_or(false);
    known && ok
}

/// Whether the active configuration names a `portal.admin_group`.
async fn admin_group_configured(app: &App) -> bool {
    match app.store.active_config().await {
        Ok(Some(v)) => mfasync_core::config::parse(&v.toml)
            .ok()
            .and_then(|c| c.portal)
            .is_some_and(|p| !p.admin_group.trim().is_empty()),
        _ => false,
    }
}

/// Portal sign-in: a local administrator (argon2 hash in the store), else a
/// member of `portal.admin_group` whose directory password is right. The way
/// in, or None.
/// `gate` is asked about the directory account before its password is tried.
pub(crate) async fn check_sign_in(
    app: &App,
    username: &str,
    password: &str,
    gate: &dyn mfasync_core::lockout::Gate,
) -> Option<&'static str> {
    if check_admin(app, username, password).await {
        return Some("local");
    }
    if password.is_empty() || !admin_group_configured(app).await {
        return None;
    }
    match app
        .backend
        .directory_admin_limited(username, password, gate)
        .await
    {
        Ok(()) => Some("directory"),
        Err(why) => {
            tracing::info!(
                "portal sign-in by directory credentials refused for {:?}: {why}",
                username.chars().take(64).collect::<String>()
            );
            None
        }
    }
}

/// 32 random bytes as lower-case hex.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex(&bytes)
}

/// The SHA-256 of a token as lower-case hex: what the store keeps.
pub fn token_hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

/// Compare two secrets without an early exit.
pub(crate) fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() || a.is_empty() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(crate) fn rfc3339(t: time::OffsetDateTime) -> String {
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

pub(crate) fn now_text() -> String {
    rfc3339(time::OffsetDateTime::now_utc())
}

fn expired(expires_at: Option<&str>) -> bool {
    match expires_at {
        None => false,
        Some(text) => {
            match time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            {
                Ok(t) => t <= time::OffsetDateTime::now_utc(),
                Err(_) => true,
            }
        }
    }
}

/// The value of one cookie in the request, if sent.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value with the flags every cookie of ours has.
pub(crate) fn set_cookie(app: &App, name: &str, value: &str, max_age: Option<u64>) -> String {
    let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict");
    if app.opts.secure_cookies {
        c.push_str("; Secure");
    }
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    c
}

/// Start a session for `username`: store it, return (cookie token, CSRF token).
pub(crate) async fn start_session(app: &App, username: &str) -> Result<(String, String), String> {
    let token = random_token();
    let csrf = random_token();
    let now = time::OffsetDateTime::now_utc();
    let ttl = time::Duration::seconds(i64::try_from(app.opts.session_ttl.as_secs()).unwrap_or(0));
    let row = mfasync_store::AuthToken {
        token_hash: token_hash(&token),
        kind: mfasync_store::TokenKind::Session,
        username: username.to_string(),
        label: None,
        csrf: Some(csrf.clone()),
        created_at: rfc3339(now),
        expires_at: Some(rfc3339(now + ttl)),
    };
    if let Err(e) = app.store.tokens_delete_expired(&rfc3339(now)).await {
        tracing::warn!("cannot delete expired sessions: {e}");
    }
    app.store
        .token_create(&row)
        .await
        .map_err(|e| format!("cannot store the session: {e}"))?;
    Ok((token, csrf))
}

/// How long an API token read from the store is trusted without reading it
/// again: a token revoked on another server sharing the database (or in the
/// database directly) stops working within this.
const TOKEN_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// API tokens (`kind = "api"`, sent as `Authorization: Bearer`) recently
/// found in the store, by hash: a client sending many requests with its token
/// costs one store read per token and [`TOKEN_RECHECK`], not one per request.
/// Sessions are not kept (sign-out ends them at once), nor unknown tokens; a
/// token revoked in this server's portal is forgotten at once
/// ([`TokenCache::forget`]); the expiry is checked on every request.
#[derive(Default)]
pub(crate) struct TokenCache {
    slot: std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, CachedToken)>>,
}

#[derive(Clone)]
struct CachedToken {
    username: String,
    expires_at: Option<String>,
}

/// At most this many tokens are kept (when full, stale entries are dropped,
/// and all of them if none is stale).
const TOKEN_CACHE_MAX: usize = 256;

impl TokenCache {
    fn get(&self, hash: &str) -> Option<CachedToken> {
        let slot = self.slot.lock().ok()?;
        slot.get(hash)
            .filter(|(read, _)| read.elapsed() < TOKEN_RECHECK)
            .map(|(_, t)| t.clone())
    }

    fn put(&self, hash: &str, token: CachedToken) {
        if let Ok(mut slot) = self.slot.lock() {
            if slot.len() >= TOKEN_CACHE_MAX {
                slot.retain(|_, (read, _)| read.elapsed() < TOKEN_RECHECK);
                if slot.len() >= TOKEN_CACHE_MAX {
                    slot.clear();
                }
            }
            slot.insert(hash.to_string(), (std::time::Instant::now(), token));
        }
    }

    /// Stop trusting a token (revoked or expired).
    pub(crate) fn forget(&self, hash: &str) {
        if let Ok(mut slot) = self.slot.lock() {
            slot.remove(hash);
        }
    }
}

/// Find who a request is from: a bearer token, else the session cookie.
async fn identify(app: &App, headers: &HeaderMap) -> Option<Admin> {
    let (secret, bearer) = match headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        Some(v) => (v.strip_prefix("Bearer ")?.trim(), true),
        None => (cookie(headers, SESSION_COOKIE)?, false),
    };
    if secret.is_empty() {
        return None;
    }
    let hash = token_hash(secret);
    if bearer {
        if let Some(t) = app.tokens.get(&hash) {
            if expired(t.expires_at.as_deref()) {
                app.tokens.forget(&hash);
                let _ = app.store.token_delete(&hash).await;
                return None;
            }
            return Some(Admin {
                username: t.username,
                csrf: String::new(),
                token_hash: hash,
                bearer,
            });
        }
    }
    let row = match app.store.token_get(&hash).await {
        Ok(Some(row)) => row,
        Ok(None) => return None,
        Err(e) => {
            tracing::error!("cannot read sessions: {e}");
            return None;
        }
    };
    if !bearer && row.kind != mfasync_store::TokenKind::Session {
        return None; // API tokens are not cookies
    }
    if expired(row.expires_at.as_deref()) {
        let _ = app.store.token_delete(&hash).await;
        return None;
    }
    if bearer && row.kind == mfasync_store::TokenKind::Api {
        let cached = CachedToken {
            username: row.username.clone(),
            expires_at: row.expires_at.clone(),
        };
        app.tokens.put(&hash, cached);
    }
    Some(Admin {
        username: row.username,
        csrf: if bearer {
            String::new()
        } else {
            row.csrf.unwrap_or_default()
        },
        token_hash: hash,
        bearer,
    })
}

/// Whether a request is cross-site by the browser's own word: `Sec-Fetch-Site`
/// other than same-origin/none when the browser sends it (every current
/// one does), else an `Origin` whose host is not ours (or "null").
pub(crate) fn cross_site(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return !matches!(site.to_str(), Ok("same-origin") | Ok("none"));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let Ok(origin) = origin.to_str() else {
            return true;
        };
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let origin_host = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        return match origin_host {
            Some(h) => host.is_empty() || !h.eq_ignore_ascii_case(host),
            None => true, // "null" and anything odd
        };
    }
    false
}

fn forbidden(why: &str) -> Response {
    (StatusCode::FORBIDDEN, format!("forbidden: {why}\n")).into_response()
}

/// Every request: refuse cross-site state changes made with the browser's
/// ambient credentials, identify the administrator, and add the security
/// headers to the response.
pub(crate) async fn guard(State(app): State<App>, mut req: Request, next: Next) -> Response {
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let has_bearer = req.headers().contains_key(header::AUTHORIZATION);
    let mut resp = if !safe && !has_bearer && cross_site(req.headers()) {
        forbidden("cross-site request")
    } else {
        if let Some(admin) = identify(&app, req.headers()).await {
            req.extensions_mut().insert(admin);
        }
        next.run(req).await
    };
    let h = resp.headers_mut();
    // A handler may set a stricter or page-specific policy (Swagger UI).
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
            ),
        );
    }
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        // Not "no-referrer": under it Chromium sends `Origin: null` even on
        // same-origin form posts.
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// API routes: a signed-in administrator, and for cookie sessions the CSRF
/// token in `X-CSRF-Token` on every state-changing call.
pub(crate) async fn require_api(req: Request, next: Next) -> Response {
    let Some(admin) = req.extensions().get::<Admin>() else {
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header(header::WWW_AUTHENTICATE, "Bearer")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(r#"{"error":"authentication required"}"#))
            .unwrap_or_else(|_| StatusCode::UNAUTHORIZED.into_response());
    };
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe && !admin.bearer {
        let sent = req
            .headers()
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !same_secret(sent, &admin.csrf) {
            return forbidden("missing or wrong CSRF token");
        }
    }
    next.run(req).await
}

/// Portal pages: a signed-in administrator (by cookie), else to the sign-in page.
pub(crate) async fn require_portal(req: Request, next: Next) -> Response {
    match req.extensions().get::<Admin>() {
        Some(admin) if !admin.bearer => next.run(req).await,
        _ => Redirect::to("/login").into_response(),
    }
}

/// Check a form's CSRF field against the session: the 403 to send when it
/// does not match.
pub(crate) fn csrf_refusal(admin: &Admin, sent: &str) -> Option<Response> {
    (!same_secret(sent, &admin.csrf)).then(|| forbidden("missing or wrong CSRF token"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let h = hash_password("s3cret!").unwrap_or_default();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("s3cret!", &h));
        assert!(!verify_password("s3cret", &h));
        assert!(!verify_password("s3cret!", "not a hash"));
    }

    #[test]
    fn tokens_are_random_hex_and_hashed() {
        let a = random_token();
        assert_eq!(a.len(), 64);
        assert_ne!(a, random_token());
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn token_cache_keeps_forgets_and_stays_bounded() {
        let cache = TokenCache::default();
        let token = |name: &str| CachedToken {
            username: name.into(),
            expires_at: None,
        };
        assert!(cache.get("h1").is_none());
        cache.put("h1", token("alice"));
        assert_eq!(
            cache.get("h1").map(|t| t.username).as_deref(),
            Some("alice")
        );
        cache.forget("h1");
        assert!(cache.get("h1").is_none(), "a revoked token is not kept");
        for i in 0..3 * TOKEN_CACHE_MAX {
            cache.put(&format!("h{i}"), token("bob"));
        }
        let kept = cache.slot.lock().map(|s| s.len()).unwrap_or(usize::MAX);
        assert!(kept <= TOKEN_CACHE_MAX, "{kept} tokens kept");
        assert!(cache
            .get(&format!("h{}", 3 * TOKEN_CACHE_MAX - 1))
            .is_some());
    }

    #[test]
    fn cross_site_detection() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(!cross_site(&h), "no browser headers: not a browser post");
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(!cross_site(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(cross_site(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(cross_site(&h));
        h.remove(header::ORIGIN);
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(cross_site(&h));
        h.insert("sec-fetch-site", HeaderValue::from_static("same-site"));
        assert!(cross_site(&h), "a sibling subdomain is another origin");
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(!cross_site(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!cross_site(&h), "the browser's Sec-Fetch-Site decides");
    }

    #[test]
    fn secrets_compare() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("", ""));
        assert!(!same_secret("abc", "abcd"));
    }
}
