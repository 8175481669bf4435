//! Bind type "windows": SASL GSSAPI (Kerberos) binds.
//!
//! * With a username and password: `kinit` (MIT krb5) obtains a ticket into a
//!   PRIVATE credential cache (a file in a fresh 0700 temp directory, removed
//!   when the bind is done). The password goes to kinit's stdin, never to its
//!   argv, a log line or an error. The user's or service's default cache is
//!   never touched.
//! * With a blank username: the service's own identity, i.e. whatever the
//!   Kerberos library finds by default: `KRB5CCNAME` (a cache kept fresh by
//!   k5start, sssd, ...) or a client keytab (`KRB5_CLIENT_KTNAME`, or
//!   `default_client_keytab_name` in krb5.conf) from which MIT krb5 obtains
//!   tickets by itself.
//!
//! The bind itself is ldap3's `sasl_gssapi_bind`, which always asks for the
//! service ticket of `ldap/<host of the server URL>` with the DEFAULT
//! credentials. To point it at the private cache without touching the
//! process environment, every poll of the bind future runs with MIT's
//! per-thread cache name (`gss_krb5_ccache_name`) set to the private cache
//! and reset afterwards ([`WithCcache`]): binds on other threads, or
//! interleaved on the same thread, are not affected. Over plain `ldap://`
//! ldap3 negotiates the Kerberos confidentiality layer (every later LDAP
//! message is signed and sealed), so it works where the DC requires strong
//! authentication; over TLS it binds with no extra layer, sending the TLS
//! channel binding token.
//!
//! The Kerberos library makes blocking calls (files, the KDC) inside the
//! bind: acceptable for the few binds of a sync cycle or a password check.

use std::ffi::{c_char, CString};
use std::future::Future;
use std::pin::Pin;
use std::process::Stdio;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::error::LdapError;

type OmUint32 = u32;

// MIT krb5 (libgssapi_krb5, linked through libgssapi-sys): set the credential
// cache name used by GSS-API calls made later on the CURRENT THREAD; NULL
// restores the default (KRB5CCNAME / krb5.conf).
#[link(name = "gssapi_krb5")]
extern "C" {
    fn gss_krb5_ccache_name(
        minor_status: *mut OmUint32,
        name: *const c_char,
        out_name: *mut *const c_char,
    ) -> OmUint32;
}

/// Set (or with `None` reset) the current thread's GSS-API credential cache.
fn set_thread_ccache(name: Option<&CString>) -> bool {
    let mut minor: OmUint32 = 0;
    let ptr = name.map_or(std::ptr::null(), |n| n.as_ptr());
    // SAFETY: `minor` is a valid out pointer; `ptr` is NULL or a NUL-terminated
    // string that MIT copies (strdup) before returning; a NULL `out_name` asks
    // for no previous name.
    let major = unsafe { gss_krb5_ccache_name(&mut minor, ptr, std::ptr::null_mut()) };
    major == 0
}

/// Runs every poll of `inner` with the current thread's GSS-API credential
/// cache set to `ccache` (when given), and resets it after the poll.
pub(crate) struct WithCcache<F> {
    inner: Pin<Box<F>>,
    ccache: Option<CString>,
}

impl<F: Future> Future for WithCcache<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let Some(cc) = this.ccache.as_ref() else {
            return this.inner.as_mut().poll(cx);
        };
        if !set_thread_ccache(Some(cc)) {
            tracing::warn!("gss_krb5_ccache_name failed; the bind uses the default credentials");
        }
        let out = this.inner.as_mut().poll(cx);
        set_thread_ccache(None);
        out
    }
}

/// Kerberos credentials for a "windows" bind.
pub(crate) struct Credentials {
    /// The Kerberos principal, e.g. `alice@MFA.TEST` (as given to kinit, or
    /// "the service's own identity" when the username is blank).
    pub principal: String,
    /// The private cache, when a password was given; None = the defaults.
    ccache: Option<PrivateCcache>,
}

struct PrivateCcache {
    // Keeps the directory (and the ticket file) until the bind is done.
    _dir: tempfile::TempDir,
    name: CString,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("principal", &self.principal)
            .field("private_ccache", &self.ccache.is_some())
            .finish()
    }
}

impl Credentials {
    /// Wrap a future (the GSSAPI bind) so that it uses these credentials.
    pub(crate) fn scope<F: Future>(&self, inner: F) -> WithCcache<F> {
        WithCcache {
            inner: Box::pin(inner),
            ccache: self.ccache.as_ref().map(|c| c.name.clone()),
        }
    }

    /// How the bind step describes itself.
    pub(crate) fn describe(&self) -> String {
        if self.ccache.is_some() {
            format!("GSSAPI (Kerberos) as {}", self.principal)
        } else {
            format!(
                "GSSAPI (Kerberos) as the service's own identity ({})",
                self.principal
            )
        }
    }
}

/// The Kerberos principal for a username as an administrator writes it:
/// `user@realm` (the realm is upper-cased, as Active Directory's always is),
/// `DOMAIN\user` (a DNS domain becomes the realm; a NetBIOS name is dropped
/// and the default realm applies), or a bare `user` (default realm).
pub(crate) fn principal_for(username: &str) -> Result<String, String> {
    let u = username.trim();
    let (user, realm) = if let Some((d, user)) = u.split_once('\\') {
        (user, d.contains('.').then(|| d.to_string()))
    } else if let Some((user, realm)) = u.rsplit_once('@') {
        (user, Some(realm.to_string()))
    } else {
        (u, None)
    };
    if user.is_empty()
        || user.starts_with('-')
        || u.contains('=')
        || u.chars().any(|c| c.is_control())
        || realm.as_deref().is_some_and(|r| r.trim().is_empty())
    {
        return Err(format!(
            "{username:?} is not a Kerberos username (user@REALM, DOMAIN\\user or user; not a DN)"
        ));
    }
    Ok(match realm {
        Some(r) => format!("{user}@{}", r.to_uppercase()),
        None => user.to_string(),
    })
}

/// What kinit's error output means for the caller.
fn kinit_error(principal: &str, stderr: &str) -> LdapError {
    let line = stderr
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with("Password for"))
        .unwrap_or("kinit failed")
        // "kinit: " prefix and the prompt kinit printed before the error
        .trim_start_matches("kinit: ");
    let lower = stderr.to_ascii_lowercase();
    let server = "kerberos".to_string();
    let refused = [
        "password incorrect",
        "preauthentication failed",
        "not found in kerberos database",
        "credentials have been revoked",
        "password has expired",
        "password expired",
        "client not yet valid",
    ];
    if refused.iter().any(|r| lower.contains(r)) {
        // Active Directory style sub-codes, so that `auth_reason` tells them apart.
        let code = if lower.contains("revoked") {
            " (data 533)"
        } else if lower.contains("expired") {
            " (data 532)"
        } else {
            ""
        };
        return LdapError::InvalidCredentials {
            server,
            dn: principal.to_string(),
            detail: format!("Kerberos: {line}{code}"),
            ppolicy: None,
        };
    }
    LdapError::Connect {
        server,
        reason: format!("cannot obtain a Kerberos ticket for {principal}: {line}"),
    }
}

/// How long a realm whose KDCs did not answer is not asked again by this
/// process: a windows bind then goes to NTLM at once instead of waiting for
/// the KDCs on every password check (`serve`).
const KDC_DOWN_FOR: Duration = Duration::from_secs(60);

/// Realms whose KDCs did not answer: (realm, when, why).
#[derive(Default)]
struct KdcDown(Vec<(String, std::time::Instant, String)>);

impl KdcDown {
    /// Why `realm`'s KDCs are taken as down at `now`, if they are.
    fn down(&self, realm: &str, now: std::time::Instant) -> Option<String> {
        self.0
            .iter()
            .find(|(r, at, _)| r == realm && now.saturating_duration_since(*at) < KDC_DOWN_FOR)
            .map(|(_, at, why)| {
                format!(
                    "{why} ({} s ago; asked again {} s after that)",
                    now.saturating_duration_since(*at).as_secs(),
                    KDC_DOWN_FOR.as_secs()
                )
            })
    }

    fn note(&mut self, realm: &str, now: std::time::Instant, why: String) {
        self.0.retain(|(r, _, _)| r != realm);
        self.0.push((realm.to_string(), now, why));
    }

    fn clear(&mut self, realm: &str) {
        self.0.retain(|(r, _, _)| r != realm);
    }
}

static KDC_DOWN: std::sync::Mutex<KdcDown> = std::sync::Mutex::new(KdcDown(Vec::new()));

/// Whether a kinit failure means that no KDC answered (as opposed to a
/// refusal, or a local problem).
fn no_kdc_answered(e: &LdapError) -> bool {
    match e {
        // (a timeout may be one slow KDC: not remembered)
        LdapError::Connect { reason, .. } => {
            let r = reason.to_ascii_lowercase();
            r.contains("cannot contact any kdc") || r.contains("cannot find kdc")
        }
        _ => false,
    }
}

/// Credentials for a windows bind as `username` (blank: the service's own
/// identity) with `password`. A realm whose KDCs did not answer within the
/// last minute is not asked again (the same error at once: NTLM fallback).
pub(crate) async fn obtain(
    username: &str,
    password: Option<&str>,
    timeout: Duration,
) -> Result<Credentials, LdapError> {
    // the realm as kinit will be asked for it ("" for the default realm)
    let realm = principal_for(username)
        .ok()
        .and_then(|p| p.rsplit_once('@').map(|(_, r)| r.to_string()))
        .unwrap_or_default();
    let now = std::time::Instant::now();
    if !username.trim().is_empty() {
        let down = KDC_DOWN
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .down(&realm, now);
        if let Some(why) = down {
            return Err(LdapError::Connect {
                server: "kerberos".into(),
                reason: why,
            });
        }
    }
    let r = obtain_now(username, password, timeout).await;
    if !username.trim().is_empty() {
        let mut memo = KDC_DOWN.lock().unwrap_or_else(|p| p.into_inner());
        match &r {
            Err(e) if no_kdc_answered(e) => {
                memo.note(&realm, std::time::Instant::now(), e.to_string())
            }
            Err(_) => {}
            Ok(_) => memo.clear(&realm),
        }
    }
    r
}

async fn obtain_now(
    username: &str,
    password: Option<&str>,
    timeout: Duration,
) -> Result<Credentials, LdapError> {
    if username.trim().is_empty() {
        let name = tokio::task::spawn_blocking(default_principal)
            .await
            .map_err(|e| LdapError::Config(format!("Kerberos: {e}")))?
            .map_err(|e| {
                LdapError::Config(format!(
                    "bind type windows with a blank username uses the service's own Kerberos \
                     identity, but there is none: {e} (set KRB5CCNAME to a ticket cache or \
                     KRB5_CLIENT_KTNAME to a keytab)"
                ))
            })?;
        return Ok(Credentials {
            principal: name,
            ccache: None,
        });
    }
    let principal = principal_for(username).map_err(LdapError::Config)?;
    let password = match password {
        Some(p) if !p.is_empty() => p,
        _ => {
            return Err(LdapError::Config(format!(
                "bind type windows as {principal:?} needs a non-empty password \
                 (or a blank username for the service's own Kerberos identity)"
            )))
        }
    };
    if password.contains('\n') || password.contains('\r') {
        return Err(LdapError::InvalidCredentials {
            server: "kerberos".into(),
            dn: principal,
            detail: "a password with a line break cannot be used for Kerberos".into(),
            ppolicy: None,
        });
    }
    let dir = tempfile::Builder::new()
        .prefix("mfasync-krb5cc-")
        .tempdir()
        .map_err(|e| LdapError::Config(format!("Kerberos: cannot create a temp dir: {e}")))?;
    let cc_path = dir.path().join("ccache");
    let cc_name = format!("FILE:{}", cc_path.display());
    let c_name = CString::new(cc_name.clone())
        .map_err(|_| LdapError::Config("Kerberos: temp dir path contains NUL".into()))?;
    let mut cmd = tokio::process::Command::new("kinit");
    cmd.arg("-c")
        .arg(&cc_name)
        .arg("--")
        .arg(&principal)
        .env("KRB5CCNAME", &cc_name)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| {
        LdapError::Config(format!(
            "Kerberos: cannot run kinit ({e}); install the MIT Kerberos client (krb5-user)"
        ))
    })?;
    let run = async {
        if let Some(mut stdin) = child.stdin.take() {
            // kinit reads the password from stdin when it is not a terminal.
            let mut line = Vec::with_capacity(password.len() + 1);
            line.extend_from_slice(password.as_bytes());
            line.push(b'\n');
            let _ = stdin.write_all(&line).await;
            line.fill(0);
            drop(stdin);
        }
        child.wait_with_output().await
    };
    let out = match tokio::time::timeout(timeout, run).await {
        Err(_) => {
            return Err(LdapError::Timeout {
                server: "kerberos".into(),
                op: format!("kinit {principal}"),
                seconds: timeout.as_secs(),
            })
        }
        Ok(Err(e)) => {
            return Err(LdapError::Config(format!("Kerberos: kinit failed: {e}")));
        }
        Ok(Ok(o)) => o,
    };
    if !out.status.success() {
        let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
        text.push('\n');
        text.push_str(&String::from_utf8_lossy(&out.stdout));
        return Err(kinit_error(&principal, &text));
    }
    Ok(Credentials {
        principal,
        ccache: Some(PrivateCcache {
            _dir: dir,
            name: c_name,
        }),
    })
}

/// The name of the default initiator credential (cache or client keytab).
fn default_principal() -> Result<String, String> {
    use libgssapi::credential::{Cred, CredUsage};
    use libgssapi::oid::{OidSet, GSS_MECH_KRB5};
    let mut mechs = OidSet::new().map_err(|e| e.to_string())?;
    mechs.add(&GSS_MECH_KRB5).map_err(|e| e.to_string())?;
    let cred = Cred::acquire(None, None, CredUsage::Initiate, Some(&mechs))
        .map_err(|e| format!("{e}").replace('\n', " "))?;
    let name = cred.name().map_err(|e| e.to_string())?;
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_realm_whose_kdcs_did_not_answer_is_not_asked_again_for_a_minute() {
        let t0 = std::time::Instant::now();
        let mut m = KdcDown::default();
        assert_eq!(m.down("MFA.TEST", t0), None);
        m.note(
            "MFA.TEST",
            t0,
            "cannot obtain a Kerberos ticket: Cannot contact any KDC".into(),
        );
        let why = m
            .down("MFA.TEST", t0 + Duration::from_secs(5))
            .unwrap_or_default();
        assert!(
            why.contains("Cannot contact any KDC") && why.contains("5 s ago"),
            "{why}"
        );
        assert_eq!(m.down("OTHER.TEST", t0), None, "per realm");
        assert_eq!(
            m.down("MFA.TEST", t0 + KDC_DOWN_FOR),
            None,
            "asked again after a minute"
        );
        m.clear("MFA.TEST");
        assert_eq!(m.down("MFA.TEST", t0), None);

        let timeout = LdapError::Timeout {
            server: "kerberos".into(),
            op: "kinit".into(),
            seconds: 5,
        };
        assert!(!no_kdc_answered(&timeout), "one slow KDC is not remembered");
        assert!(no_kdc_answered(&kinit_error(
            "alice@MFA.TEST",
            "kinit: Cannot contact any KDC for realm 'MFA.TEST' while getting initial credentials",
        )));
        assert!(!no_kdc_answered(&kinit_error(
            "alice@MFA.TEST",
            "kinit: Password incorrect while getting initial credentials",
        )));
    }

    #[test]
    fn principals() {
        for (given, want) in [
            ("alice@mfa.test", "alice@MFA.TEST"),
            ("alice@MFA.TEST", "alice@MFA.TEST"),
            ("MFA\\alice", "alice"),
            ("mfa.test\\alice", "alice@MFA.TEST"),
            ("alice", "alice"),
            (" svc-mfa ", "svc-mfa"),
        ] {
            assert_eq!(principal_for(given).as_deref(), Ok(want), "{given}");
        }
        for bad in [
            "@MFA.TEST",
            "MFA\\",
            "-x",
            "alice@",
            "a\nb",
            "CN=Alice,DC=mfa,DC=test",
        ] {
            assert!(principal_for(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn kinit_errors() {
        let e = kinit_error(
            "alice@MFA.TEST",
            "Password for alice@MFA.TEST: \nkinit: Password incorrect while getting initial credentials\n",
        );
        assert!(e.is_invalid_credentials(), "{e}");
        assert_eq!(
            e.auth_reason().map(|r| r.as_str()),
            Some("invalid-credentials")
        );
        let e = kinit_error(
            "bob@MFA.TEST",
            "kinit: Client's credentials have been revoked while getting initial credentials",
        );
        assert_eq!(
            e.auth_reason().map(|r| r.as_str()),
            Some("account-disabled")
        );
        let e = kinit_error(
            "bob@MFA.TEST",
            "kinit: Cannot contact any KDC for realm 'MFA.TEST' while getting initial credentials",
        );
        assert!(e.is_unavailable(), "{e}");
        assert!(!e.to_string().contains("Password for"));
    }

    #[test]
    fn debug_shows_no_cache_path() {
        let c = Credentials {
            principal: "a@B".into(),
            ccache: None,
        };
        assert_eq!(
            format!("{c:?}"),
            "Credentials { principal: \"a@B\", private_ccache: false }"
        );
    }
}
