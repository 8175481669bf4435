//! LDAP-bind authentication (the seed's "Bind type - Authentications"): resolve
//! the username to a DN with the query bind, then bind as that DN with the
//! password on a fresh connection, with the auth bind type and server failover.
//!
//! Order of checks: the password is verified before MFA membership is looked
//! at, so the distinct reasons "not-an-mfa-user" / "mfa-user-disabled" are only
//! ever told to someone who knows the password.
//!
//! Fast path (simple/ssl auth binds): when the username is, exactly and
//! case-insensitively, the stored username of one enabled MFA user
//! synchronized from the directory, the password is bound to the DN stored by
//! the last sync, without the username search. If the directory answers
//! "invalid credentials" or "no such object" for that DN (the account may
//! have been renamed or moved since), the usual search-then-bind decides;
//! when the search finds the same DN, the refusal stands without a second
//! bind (a wrong password counts once against lockout policies). The
//! connection to the first directory server that the password is bound on
//! is opened while the stored username is looked up (`open_for_check`).
//!
//! Equal work whatever the username names: a name the search does not find
//! (or finds more than once) still costs one bind, of a DN that does not
//! exist (`decoy_check`), with the MFA user lookup alongside as for a found
//! entry, and is answered `invalid-credentials` like a wrong password; so
//! neither the answer nor the time tells an observer without the password
//! whether the name exists in the directory or is an MFA user.
//!
//! Password-guessing limits (the service): the caller's `Gate` is asked,
//! before any bind, about the account the username names (the stored user's
//! or the search result's unique id, else DN; `core::lockout::Account`), so
//! every spelling that finds the same entry shares one count.

use mfasync_core::auth::Reason;
use mfasync_core::config::{Bind, BindType, Config};
use mfasync_core::escape::filter_value;
use mfasync_core::lockout::{Account, Gate, Open};
use mfasync_core::MfaUser;
use mfasync_ldap::Scope;
use mfasync_store::{Store, UserKey};

/// Connections kept between password checks (the service, `serve`).
///
/// - The query connection: username lookups reuse it instead of connecting
///   and binding each time. It is replaced when the directory settings change
///   or the connection fails.
/// - Spare connections for the password binds: after a check, a new
///   connection to the first server (TCP, and TLS when configured; never
///   bound) is opened in the background for the next check, so a check waits
///   for its bind only. Each is used for one bind at most, as a fresh
///   connection would be. At most [`SPARES`] wait, each at most
///   [`SPARE_MAX_AGE`], and one is opened at a time; one the server has
///   closed, or opened with other directory settings, is never used (and one
///   that the server closes while the bind is sent is replaced by a fresh
///   connection, `check_bind_opened`).
#[derive(Default)]
pub struct AuthConnections {
    slot: tokio::sync::Mutex<Option<(String, mfasync_ldap::Client)>>,
    spares: std::sync::Mutex<Spares>,
}

/// Spare connections waiting for a password check.
pub const SPARES: usize = 2;
/// How long a spare connection waits unused before it is closed (well under
/// the idle timeouts of directory servers: Active Directory's is 900 s).
pub const SPARE_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Default)]
struct Spares {
    /// (when it was opened, the directory settings it was opened with, the connection)
    waiting: Vec<(std::time::Instant, String, mfasync_ldap::Opened)>,
    /// A spare is being opened (one at a time: a server that does not
    /// answer holds up one background task, not one per check).
    opening: bool,
    /// The task that closes spares left unused too long is running.
    sweeping: bool,
}

impl Spares {
    /// Close the spares that can no longer be used: opened with other
    /// settings than `key` (when given), closed by the server, or too old.
    fn prune(&mut self, key: Option<&str>) {
        self.waiting.retain(|(at, k, o)| {
            key.is_none_or(|key| k.as_str() == key) && o.is_alive() && at.elapsed() < SPARE_MAX_AGE
        });
    }
}

impl AuthConnections {
    /// A spare connection opened with these settings and still up.
    fn take_spare(&self, key: &str) -> Option<mfasync_ldap::Opened> {
        let mut spares = self.spares.lock().ok()?;
        spares.prune(Some(key));
        spares.waiting.pop().map(|(_, _, o)| o)
    }

    /// Open a spare connection for the next check with `dir` (whose
    /// [`settings_key`] is `key`), in the background, unless enough wait or
    /// one is being opened.
    fn refill(self: &std::sync::Arc<Self>, dir: &mfasync_core::config::Directory, key: String) {
        {
            let Ok(mut spares) = self.spares.lock() else {
                return;
            };
            if spares.opening || spares.waiting.len() >= SPARES {
                return;
            }
            spares.opening = true;
            if !spares.sweeping {
                spares.sweeping = true;
                self.sweep();
            }
        }
        let me = std::sync::Arc::clone(self);
        let dir = dir.clone();
        tokio::spawn(async move {
            let opened = mfasync_ldap::open_for_check(&dir).await;
            let Ok(mut spares) = me.spares.lock() else {
                return;
            };
            spares.opening = false;
            // (a server that is down: the next check finds out itself)
            if let Some(opened) = opened.filter(|o| o.is_alive()) {
                if spares.waiting.len() < SPARES {
                    let now = std::time::Instant::now();
                    spares.waiting.push((now, key, opened));
                }
            }
        });
    }

    /// Close spares left unused for [`SPARE_MAX_AGE`], every half of it,
    /// for as long as these connections are kept.
    fn sweep(self: &std::sync::Arc<Self>) {
        let me = std::sync::Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(SPARE_MAX_AGE / 2).await;
                let Some(kept) = me.upgrade() else { return };
                if let Ok(mut spares) = kept.spares.lock() {
                    spares.prune(None);
                };
            }
        });
    }
}

/// The directory settings a kept connection was made with: one made with
/// other settings is not used.
fn settings_key(cfg: &Config) -> String {
    format!("{:?}", cfg.directory)
}

/// Verify `username`/`password`. `Ok(())` when accepted.
pub async fn authenticate(
    store: &dyn Store,
    cfg: &Config,
    username: &str,
    password: &str,
) -> Result<(), Reason> {
    authenticate_with(store, cfg, username, password, None, &Open).await
}

/// Like [`authenticate`], reusing `reuse` for the username lookup, and
/// asking `gate` about the account before its password is bound.
pub async fn authenticate_with(
    store: &dyn Store,
    cfg: &Config,
    username: &str,
    password: &str,
    reuse: Option<&std::sync::Arc<AuthConnections>>,
    gate: &dyn Gate,
) -> Result<(), Reason> {
    authenticate_user(store, cfg, username, password, reuse, gate)
        .await
        .map(|_| ())
}

/// Like [`authenticate_with`], answering the enabled MFA user the password
/// was checked for (the RADIUS server asks for its method's second factor).
pub async fn authenticate_user(
    store: &dyn Store,
    cfg: &Config,
    username: &str,
    password: &str,
    reuse: Option<&std::sync::Arc<AuthConnections>>,
    gate: &dyn Gate,
) -> Result<MfaUser, Reason> {
    // An empty password is an anonymous bind to AD: it would "succeed".
    if password.is_empty()
        || username.trim().is_empty()
        || username.len() > 512
        || username.contains('\0')
    {
        return Err(Reason::InvalidCredentials);
    }
    let (refused_dn, opened) = match fast_path(store, cfg, username, password, reuse, gate).await {
        Fast::Done(result) => return result.map(|u| *u),
        Fast::Search { refused_dn, opened } => (refused_dn, opened),
    };
    let Resolved {
        dn,
        principal,
        directory_id,
    } = match resolve_dn(cfg, username, reuse).await? {
        Lookup::Found(found) => found,
        // the fast path's refused bind was this check's bind
        Lookup::NoSuchUser { .. } if refused_dn.is_some() => {
            return Err(Reason::InvalidCredentials)
        }
        Lookup::NoSuchUser { base_dn } => {
            return decoy_check(store, cfg, username, password, &base_dn, opened).await
        }
    };
    gate.admit(&Account::directory(directory_id.as_deref(), &dn))?;
    if refused_dn.is_some_and(|r| same_dn(&r, &dn)) {
        // The fast path's bind to this very DN was refused: that is the answer.
        tracing::info!(target: "mfasync::auth",
            username,
            reason = Reason::InvalidCredentials.as_str(),
            "password refused by the directory"
        );
        return Err(Reason::InvalidCredentials);
    }
    let kind = cfg.directory.auth_bind.kind;
    let bind = Bind {
        kind,
        // Bind type windows (Kerberos) binds as the account's principal, not its DN.
        dn: if kind == BindType::Windows {
            principal
        } else {
            dn.clone()
        },
        ..Bind::default()
    };
    // The password check (a fresh connection, bind, unbind: no RootDSE read)
    // and the MFA user lookup run at the same time; the lookup's answer is
    // only told once the directory has accepted the password.
    let (checked, found) = tokio::join!(
        mfasync_ldap::check_bind_opened(&cfg.directory, &bind, Some(password), opened),
        mfa_user(store, directory_id, username)
    );
    if let Err(e) = checked {
        return Err(refused(username, &e));
    }
    match found?.into_iter().next() {
        None => Err(Reason::NotAnMfaUser),
        Some(u) if !u.enabled => Err(Reason::MfaUserDisabled),
        Some(u) => Ok(u),
    }
}

/// The first label of the entry a decoy bind names (never created: the
/// directory refuses its bind as it refuses a wrong password).
const DECOY_NAME: &str = "mfasync-no-such-account";

/// The password check of a username that names no single directory entry:
/// the work of a refused password (one bind on the connection opened for it,
/// as the DN `cn=mfasync-no-such-account,<base DN>` or, bind type windows,
/// that name's Kerberos principal; the MFA user lookup alongside) and its
/// answer, `invalid-credentials`, so that neither the answer nor the time
/// taken tells whether the name exists or is an MFA user.
async fn decoy_check(
    store: &dyn Store,
    cfg: &Config,
    username: &str,
    password: &str,
    base_dn: &str,
    opened: Option<mfasync_ldap::Opened>,
) -> Result<MfaUser, Reason> {
    let kind = cfg.directory.auth_bind.kind;
    let dn = match kind {
        BindType::Windows => {
            kerberos_principal(DECOY_NAME, base_dn).unwrap_or_else(|| DECOY_NAME.to_string())
        }
        _ if base_dn.trim().is_empty() => format!("cn={DECOY_NAME}"),
        _ => format!("cn={DECOY_NAME},{}", base_dn.trim()),
    };
    let bind = Bind {
        kind,
        dn,
        ..Bind::default()
    };
    let (checked, _) = tokio::join!(
        mfasync_ldap::check_bind_opened(&cfg.directory, &bind, Some(password), opened),
        mfa_user(store, None, username)
    );
    match checked {
        Err(e) if e.auth_reason().is_none() && e.is_unavailable() => {
            tracing::warn!(target: "mfasync::auth", username, error = %e, "directory unavailable for a password check");
            Err(Reason::DirectoryUnavailable)
        }
        _ => {
            tracing::info!(target: "mfasync::auth",
                username,
                reason = Reason::InvalidCredentials.as_str(),
                "no single directory entry for the username"
            );
            Err(Reason::InvalidCredentials)
        }
    }
}

/// The reason for a password bind that failed with `e` (logged, without the password).
fn refused(username: &str, e: &mfasync_ldap::LdapError) -> Reason {
    if let Some(r) = e.auth_reason() {
        tracing::info!(target: "mfasync::auth",
            username,
            reason = r.as_str(),
            "password refused by the directory"
        );
        return r;
    }
    tracing::warn!(target: "mfasync::auth", username, error = %e, "directory unavailable for a password check");
    if e.is_unavailable() {
        Reason::DirectoryUnavailable
    } else {
        Reason::InvalidCredentials
    }
}

enum Fast {
    /// The answer, as the search-then-bind path would give it.
    Done(Result<Box<MfaUser>, Reason>),
    /// Search for the username and bind as today. `refused_dn`: the stored DN
    /// whose bind was just refused with "invalid credentials" (if the search
    /// finds it again, that refusal is the answer). `opened`: the connection
    /// opened for the bind and not used yet.
    Search {
        refused_dn: Option<String>,
        opened: Option<mfasync_ldap::Opened>,
    },
}

/// The stored-DN fast path (see the module documentation).
async fn fast_path(
    store: &dyn Store,
    cfg: &Config,
    username: &str,
    password: &str,
    reuse: Option<&std::sync::Arc<AuthConnections>>,
    gate: &dyn Gate,
) -> Fast {
    let search = |refused_dn, opened| Fast::Search { refused_dn, opened };
    let kind = cfg.directory.auth_bind.kind;
    if !matches!(kind, BindType::Simple | BindType::Ssl) {
        return search(None, None);
    }
    // The service: a spare connection opened after the last check, and
    // another opened for the next one.
    let spare = reuse.and_then(|r| {
        let key = settings_key(cfg);
        let spare = r.take_spare(&key);
        r.refill(&cfg.directory, key);
        spare
    });
    // An exact (bound-parameter) match on the lower-cased stored username:
    // never a pattern, so `*` or `a*)(uid=*` can only find a user named so.
    // Meanwhile the connection the password will be bound on is opened (the
    // search path binds on it when the fast path does not apply).
    let lower = [username.to_lowercase()];
    let open = async {
        match spare {
            Some(spare) => Some(spare),
            None => mfasync_ldap::open_for_check(&cfg.directory).await,
        }
    };
    let (found, opened) = tokio::join!(store.users_by(UserKey::UsernameLower, &lower), open);
    let found = match found {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(target: "mfasync::auth", error = %e, "MFA database lookup failed; searching the directory");
            return search(None, opened);
        }
    };
    let (dn, user) = match <[MfaUser; 1]>::try_from(found) {
        Ok([u]) if u.enabled && u.source == mfasync_core::user::Source::Directory => {
            match u.dn.as_deref().map(str::trim) {
                Some(dn) if !dn.is_empty() => (dn.to_string(), u),
                _ => return search(None, opened),
            }
        }
        _ => return search(None, opened),
    };
    if let Err(limited) = gate.admit(&Account::directory(user.directory_id.as_deref(), &dn)) {
        return Fast::Done(Err(limited));
    }
    let bind = Bind {
        kind,
        dn: dn.clone(),
        ..Bind::default()
    };
    match mfasync_ldap::check_bind_opened(&cfg.directory, &bind, Some(password), opened).await {
        Ok(()) => Fast::Done(Ok(Box::new(user))),
        Err(e) => match e.auth_reason() {
            Some(Reason::InvalidCredentials) => {
                tracing::debug!(target: "mfasync::auth",
                    username,
                    "bind as the stored DN refused; searching the directory"
                );
                search(Some(dn), None)
            }
            Some(_) => Fast::Done(Err(refused(username, &e))),
            None if no_such_dn(&e) => {
                tracing::debug!(target: "mfasync::auth", username, "the stored DN is gone; searching the directory");
                search(None, None)
            }
            None => Fast::Done(Err(refused(username, &e))),
        },
    }
}

/// Whether a bind failed because its DN does not exist (noSuchObject, 32) or
/// is not a DN (invalidDNSyntax, 34) on some server of the list.
fn no_such_dn(e: &mfasync_ldap::LdapError) -> bool {
    use mfasync_ldap::LdapError;
    match e {
        LdapError::Bind { code, .. } => matches!(code, 32 | 34),
        LdapError::AllServersFailed(failures) => failures.iter().any(|f| {
            f.step == "bind"
                && (f.reason.ends_with("(result code 32)")
                    || f.reason.ends_with("(result code 34)"))
        }),
        _ => false,
    }
}

/// Whether two DNs name the same entry as written by the directory (the
/// stored DN and the search result come from the same server's answers).
fn same_dn(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

/// The MFA user synchronized from this directory entry (by its unique id),
/// whichever username attribute the caller typed (a user stored as
/// alice@example.com may sign in as "alice"); manual users by username.
async fn mfa_user(
    store: &dyn Store,
    directory_id: Option<String>,
    username: &str,
) -> Result<Vec<mfasync_core::MfaUser>, Reason> {
    let unavailable = |e: mfasync_store::StoreError| {
        tracing::error!(target: "mfasync::auth", error = %e, "MFA database unavailable");
        Reason::DirectoryUnavailable
    };
    let mut found = match directory_id {
        Some(id) => store
            .users_by(UserKey::DirectoryId, &[id])
            .await
            .map_err(unavailable)?,
        None => Vec::new(),
    };
    if found.is_empty() {
        found = store
            .users_by(UserKey::UsernameLower, &[username.to_lowercase()])
            .await
            .map_err(unavailable)?;
    }
    Ok(found)
}

/// What the username search found.
enum Lookup {
    /// Exactly one entry.
    Found(Resolved),
    /// None, or several: refused after a decoy bind under `base_dn`.
    NoSuchUser { base_dn: String },
}

struct Resolved {
    dn: String,
    principal: String,
    directory_id: Option<String>,
}

/// The user's DN and Kerberos principal: a search with the query bind on the
/// username attributes, every value escaped (RFC 4515), restricted by the user
/// filter. Exactly one entry must match.
async fn resolve_dn(
    cfg: &Config,
    username: &str,
    reuse: Option<&std::sync::Arc<AuthConnections>>,
) -> Result<Lookup, Reason> {
    let Some(reuse) = reuse else {
        let mut client = query_connection(cfg).await?;
        let r = search_user(&mut client, cfg, username).await;
        client.unbind().await;
        return r;
    };
    // The settings the connection was made with: a change means a new connection.
    let key = settings_key(cfg);
    let mut slot = reuse.slot.lock().await;
    if let Some((k, client)) = slot.as_mut() {
        if *k == key {
            match search_user(client, cfg, username).await {
                Err(Reason::DirectoryUnavailable) => {} // stale connection: reconnect below
                other => return other,
            }
        }
    }
    if let Some((_, old)) = slot.take() {
        old.unbind().await;
    }
    let mut client = query_connection(cfg).await?;
    let r = search_user(&mut client, cfg, username).await;
    if matches!(r, Err(Reason::DirectoryUnavailable)) {
        client.unbind().await;
    } else {
        *slot = Some((key, client));
    }
    r
}

async fn query_connection(cfg: &Config) -> Result<mfasync_ldap::Client, Reason> {
    let password = crate::secrets::bind_password(&cfg.directory.query_bind, "directory.query_bind")
        .map_err(|e| {
            tracing::error!(target: "mfasync::auth", "{e}");
            Reason::DirectoryUnavailable
        })?;
    mfasync_ldap::connect(
        &cfg.directory,
        &cfg.directory.query_bind,
        password.as_deref(),
    )
    .await
    .map_err(|e| {
        tracing::warn!(target: "mfasync::auth", error = %e, "cannot search the directory for a password check");
        Reason::DirectoryUnavailable
    })
}

async fn search_user(
    client: &mut mfasync_ldap::Client,
    cfg: &Config,
    username: &str,
) -> Result<Lookup, Reason> {
    let value = filter_value(username);
    let alternatives: String = cfg
        .attributes
        .username
        .0
        .iter()
        .map(|a| format!("({a}={value})"))
        .collect();
    let filter = format!("(&{}(|{alternatives}))", wrap(&cfg.filters.user));
    let base = client.base_dn().to_string();
    let mut attrs = vec![
        cfg.attributes.distinguished_name.clone(),
        cfg.attributes.unique_id.clone(),
    ];
    if cfg.directory.auth_bind.kind == BindType::Windows {
        attrs.push("sAMAccountName".to_string());
    }
    let found = client
        .search_all(&base, Scope::Subtree, &filter, &attrs)
        .await;
    let found = found.map_err(|e| {
        tracing::warn!(target: "mfasync::auth", error = %e, "username search failed");
        Reason::DirectoryUnavailable
    })?;
    match found.as_slice() {
        [one] => {
            let principal = one
                .first_str("sAMAccountName")
                .and_then(|sam| kerberos_principal(&sam, &one.dn))
                .unwrap_or_else(|| username.to_string());
            let directory_id = one.first_bytes(&cfg.attributes.unique_id).and_then(|raw| {
                mfasync_core::mapping::unique_id_text(cfg.attributes.unique_id_type, raw).ok()
            });
            Ok(Lookup::Found(Resolved {
                dn: one.dn.clone(),
                principal,
                directory_id,
            }))
        }
        [] => Ok(Lookup::NoSuchUser { base_dn: base }),
        many => {
            tracing::warn!(target: "mfasync::auth",
                username,
                matches = many.len(),
                "username matches several directory entries; refused"
            );
            Ok(Lookup::NoSuchUser { base_dn: base })
        }
    }
}

/// An Active Directory account's Kerberos principal: `sAMAccountName@REALM`,
/// the realm being the account's domain (the DC= components of its DN, upper
/// case). None without DC= components.
fn kerberos_principal(sam: &str, dn: &str) -> Option<String> {
    let labels: Vec<&str> = dn
        .split(',')
        .filter_map(|rdn| {
            let (k, v) = rdn.trim().split_once('=')?;
            k.trim().eq_ignore_ascii_case("dc").then(|| v.trim())
        })
        .collect();
    if sam.trim().is_empty() || labels.is_empty() {
        return None;
    }
    Some(format!(
        "{}@{}",
        sam.trim(),
        labels.join(".").to_uppercase()
    ))
}

/// A filter in parentheses (`uid=*` becomes `(uid=*)`), trimmed.
pub fn wrap(filter: &str) -> String {
    let f = filter.trim();
    if f.starts_with('(') {
        f.to_string()
    } else {
        format!("({f})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kerberos_principals_from_the_dn() {
        assert_eq!(
            kerberos_principal("alice", "CN=Alice A,OU=People,DC=mfa,DC=test").as_deref(),
            Some("alice@MFA.TEST")
        );
        assert_eq!(
            kerberos_principal("bob", "cn=Bob,dc=Corp, dc=Example,dc=com").as_deref(),
            Some("bob@CORP.EXAMPLE.COM")
        );
        assert_eq!(kerberos_principal("bob", "cn=Bob,o=corp"), None);
        assert_eq!(kerberos_principal("", "cn=Bob,dc=corp"), None);
    }

    #[test]
    fn a_missing_dn_sends_the_fast_path_to_the_search() {
        use mfasync_ldap::{LdapError, ServerFailure};
        let bind = |code| LdapError::Bind {
            server: "ldap://a".into(),
            dn: "uid=x".into(),
            code,
            message: "m".into(),
        };
        assert!(no_such_dn(&bind(32)));
        assert!(no_such_dn(&bind(34)));
        assert!(!no_such_dn(&bind(53)));
        let failure = |step: &str, e: &LdapError| ServerFailure {
            server: "ldap://a".into(),
            step: step.into(),
            reason: e.to_string(),
        };
        let down = LdapError::Connect {
            server: "ldap://b".into(),
            reason: "refused".into(),
        };
        assert!(no_such_dn(&LdapError::AllServersFailed(vec![
            failure("connect", &down),
            failure("bind", &bind(32)),
        ])));
        assert!(!no_such_dn(&LdapError::AllServersFailed(vec![
            failure("connect", &down),
            failure("bind", &bind(53)),
        ])));
        assert!(!no_such_dn(&down));
        assert!(same_dn(
            "uid=a,dc=Example,dc=com",
            " UID=a,dc=example,dc=com"
        ));
        assert!(!same_dn("uid=a,ou=x,dc=example", "uid=a,ou=y,dc=example"));
    }
}
