//! The binary's side of the web portal and REST API (`crates/web`): a
//! `mfasync_web::Backend` over the store and the directory.

use std::sync::Arc;

use async_trait::async_trait;
use mfasync_core::auth::Reason;
use mfasync_core::lockout::{Gate, Open};
use mfasync_core::report::directory::TestReport;
use mfasync_core::report::{Approved, Rejected, SyncNow, SyncProgress, SyncReport};
use mfasync_store::Store;

use mfasync_engine::sync;

pub struct ServiceBackend {
    pub store: Arc<dyn Store>,
    /// Held by every cycle (scheduled, Synchronize Now, approve): one at a time.
    pub sync_lock: Arc<tokio::sync::Mutex<()>>,
    /// The connections password checks keep: the query connection for
    /// username lookups, spare connections for the binds.
    pub auth_connections: Arc<mfasync_engine::auth::AuthConnections>,
    /// The active configuration, parsed once per version.
    pub config_cache: ConfigCache,
    /// This server among those sharing the database (set once it joined):
    /// Synchronize Now on a server that does not run synchronization is
    /// handed to the one that does.
    pub cluster: std::sync::OnceLock<Arc<mfasync_engine::node::Cluster>>,
    /// The secret key (`MFASYNC_SECRET_KEY_FILE`): passwords of a saved
    /// configuration are stored sealed with it.
    pub secret_key: Option<mfasync_secret::SecretKey>,
}

/// `serve --trusted-proxy` / `--auth-client-limit`: how `POST /api/v1/auth`
/// finds and limits the client address (docs/web.md).
#[derive(Debug, Clone)]
pub struct AuthLimits {
    pub trusted_proxies: Vec<std::net::IpAddr>,
    pub client_max_failures: usize,
}

/// The parsed active configuration, kept while the active version number
/// stays the same: a request reads the active version from the store (so a
/// `config apply` by another process is seen at once) but parses and
/// validates the TOML only when the version changed.
#[derive(Default)]
pub struct ConfigCache {
    /// (version, parsed, when the version was last read from the store)
    slot: std::sync::Mutex<Option<(i64, Arc<mfasync_core::Config>, std::time::Instant)>>,
}

/// How long a password check trusts the cached active version without
/// reading it again: a new configuration reaches password checks within this.
const AUTH_CONFIG_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

impl ConfigCache {
    /// The cached configuration if `version` is still the active one (and
    /// note that it was just checked).
    fn get(&self, version: i64) -> Option<Arc<mfasync_core::Config>> {
        let mut slot = self.slot.lock().ok()?;
        let (v, c, checked) = slot.as_mut()?;
        if *v != version {
            return None;
        }
        *checked = std::time::Instant::now();
        Some(c.clone())
    }

    /// The cached configuration if its version was checked within `max_age`.
    fn recent(&self, max_age: std::time::Duration) -> Option<Arc<mfasync_core::Config>> {
        let slot = self.slot.lock().ok()?;
        slot.as_ref()
            .filter(|(_, _, checked)| checked.elapsed() < max_age)
            .map(|(_, c, _)| c.clone())
    }

    fn put(&self, version: i64, cfg: Arc<mfasync_core::Config>) {
        if let Ok(mut slot) = self.slot.lock() {
            *slot = Some((version, cfg, std::time::Instant::now()));
        }
    }
}

fn failure_text(f: crate::Failure) -> String {
    match f {
        crate::Failure::Refused(m) => m,
        crate::Failure::Invalid(v) => v.join("; "),
    }
}

impl ServiceBackend {
    async fn config(&self) -> Result<Arc<mfasync_core::Config>, String> {
        let v = self
            .store
            .active_config()
            .await
            .map_err(|e| e.to_string())?
            .ok_or("no configuration yet: run `mfasync config apply FILE` first")?;
        if let Some(cfg) = self.config_cache.get(v.version) {
            return Ok(cfg);
        }
        let cfg = Arc::new(crate::parse_stored_config(&v).map_err(failure_text)?);
        self.config_cache.put(v.version, cfg.clone());
        Ok(cfg)
    }

    async fn cycle(&self, full: bool, plan_only: bool) -> Result<SyncReport, String> {
        let cfg = self.config().await?;
        let _one_at_a_time = self.sync_lock.lock().await;
        mfasync_engine::progress::reset();
        let o = sync::run(self.store.as_ref(), &cfg, sync::Options { full, plan_only })
            .await
            .map_err(|e| format!("{e:#}"))?;
        o.report(plan_only).map_err(|e| format!("{e:#}"))
    }

    /// A password check under `gate` (the API's and the RADIUS server's),
    /// answering the enabled MFA user it was made for.
    pub async fn authenticate_user(
        &self,
        username: &str,
        password: &str,
        gate: &dyn Gate,
    ) -> Result<mfasync_core::MfaUser, Reason> {
        // the active version is read at most once a second for password checks
        let cfg = match self.config_cache.recent(AUTH_CONFIG_RECHECK) {
            Some(cfg) => cfg,
            None => self
                .config()
                .await
                .map_err(|_| Reason::DirectoryUnavailable)?,
        };
        mfasync_engine::auth::authenticate_user(
            self.store.as_ref(),
            &cfg,
            username,
            password,
            Some(&self.auth_connections),
            gate,
        )
        .await
    }
}

#[async_trait]
impl mfasync_web::Backend for ServiceBackend {
    async fn otp_enroll(
        &self,
        username: &str,
        actor: &str,
    ) -> Result<mfasync_web::OtpEnrollment, String> {
        let e = mfasync_engine::otp::enroll(
            self.store.as_ref(),
            self.secret_key.as_ref(),
            username,
            actor,
        )
        .await
        .map_err(|e| e.to_string())?;
        let qr_svg = e.qr_svg().ok_or("the URI does not fit a QR code")?;
        Ok(mfasync_web::OtpEnrollment {
            username: e.username,
            uri: e.uri,
            qr_svg,
        })
    }

    async fn otp_check(&self, username: &str, code: &str) -> Result<Option<String>, String> {
        let key = self
            .secret_key
            .as_ref()
            .ok_or_else(|| mfasync_engine::otp::OtpError::NoKey.to_string())?;
        let verdict = mfasync_engine::otp::check(
            self.store.as_ref(),
            key,
            username,
            code,
            mfasync_engine::otp::now_secs(),
        )
        .await
        .map_err(|e| e.to_string())?;
        Ok(match verdict {
            mfasync_engine::otp::Verdict::Accepted => None,
            other => Some(other.as_str().to_string()),
        })
    }

    fn sync_progress(&self) -> SyncProgress {
        let (entries_read, phase) = mfasync_engine::progress::snapshot();
        SyncProgress {
            entries_read,
            phase: Some(phase.to_string()),
        }
    }

    async fn config_put(&self, toml: &str, actor: &str) -> Result<i64, Vec<String>> {
        let cfg = mfasync_core::config::parse(toml)
            .map_err(|errs| errs.iter().map(ToString::to_string).collect::<Vec<_>>())?;
        // a password file only where this server keeps secrets
        let outside = mfasync_engine::secrets::outside_dirs(&cfg);
        if !outside.is_empty() {
            return Err(outside);
        }
        if let Err(w) = mfasync_engine::secrets::check(&cfg) {
            tracing::warn!("{w}");
        }
        let stored = mfasync_engine::secrets::for_store(toml, self.secret_key.as_ref())?;
        if let Some(w) = &stored.warning {
            tracing::warn!("configuration applied by {actor}: {w}");
        }
        // each sync item's unique id, so that it is found after a rename
        let (text, not_now) = mfasync_engine::items::ids_for_store(&cfg, &stored.text).await;
        if let Some(w) = not_now {
            tracing::info!("configuration applied by {actor}: {w}");
        }
        let version = self
            .store
            .put_config(&text)
            .await
            .map_err(|e| vec![e.to_string()])?;
        tracing::info!("configuration version {version} applied by {actor}");
        Ok(version)
    }

    async fn directory_test(&self) -> TestReport {
        test_report(self.config().await).await
    }

    async fn directory_entries(
        &self,
        kind: &str,
        limit: usize,
    ) -> Result<Vec<(String, String)>, String> {
        let cfg = self.config().await?;
        let (filter, names) = match kind {
            "security-group" => (
                cfg.filters.security_group.clone(),
                vec![cfg.attributes.security_group_name.clone()],
            ),
            _ => (
                cfg.filters.container.clone(),
                cfg.attributes.container_name.0.clone(),
            ),
        };
        // a blank filter already holds its schema's default (`config::parse`)
        let filter = mfasync_engine::auth::wrap(&filter);
        let password = mfasync_engine::secrets::bind_password(
            &cfg.directory.query_bind,
            "directory.query_bind",
        )?;
        let mut client = mfasync_ldap::connect(
            &cfg.directory,
            &cfg.directory.query_bind,
            password.as_deref(),
        )
        .await
        .map_err(|e| e.to_string())?;
        let base = client.base_dn().to_string();
        let mut out: Vec<(String, String)> = Vec::new();
        let mut full = false;
        let found = client
            .search_each(
                &base,
                mfasync_ldap::Scope::Subtree,
                &filter,
                &names,
                &mut |e| {
                    if out.len() >= limit {
                        full = true;
                        return;
                    }
                    let name = names
                        .iter()
                        .find_map(|a| e.first_str(a))
                        .unwrap_or_else(|| e.dn.split(',').next().unwrap_or(&e.dn).to_string());
                    out.push((e.dn.clone(), name));
                },
            )
            .await;
        client.unbind().await;
        found.map_err(|e| e.to_string())?;
        if full {
            tracing::info!("directory browse: the first {limit} {kind} entries listed");
        }
        // Parents before their children: by the RDNs from the top.
        out.sort_by_cached_key(|(dn, _)| {
            dn.split(',')
                .rev()
                .map(|r| r.trim().to_lowercase())
                .collect::<Vec<_>>()
        });
        Ok(out)
    }

    async fn directory_test_candidate(&self, toml: &str) -> TestReport {
        let cfg = mfasync_core::config::parse(toml)
            .map(Arc::new)
            .map_err(|errs| {
                errs.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            });
        test_report(cfg).await
    }

    async fn sync_now(&self, full: bool) -> Result<SyncNow, String> {
        match self.cluster.get() {
            Some(c) if !c.is_runner() => c.hand_over(full, "admin").await.map(SyncNow::HandedOver),
            _ => self.cycle(full, false).await.map(SyncNow::Ran),
        }
    }

    async fn plan(&self) -> Result<SyncReport, String> {
        self.cycle(false, true).await
    }

    async fn explain_user(
        &self,
        query: &str,
    ) -> Result<mfasync_core::report::explain::Explanation, String> {
        let cfg = self.config().await?;
        mfasync_engine::explain::explain(self.store.as_ref(), &cfg, query)
            .await
            .map_err(|e| format!("cannot explain {query}: {e:#}"))
    }

    async fn sync_user(
        &self,
        query: &str,
        actor: &str,
    ) -> Result<mfasync_core::report::explain::UserSynced, String> {
        // only the server that runs synchronization writes users
        if let Some(why) = self.cluster.get().map(|c| c.not_runner()) {
            if let Some(why) = why.await {
                return Err(format!("cannot sync {query}: {why}"));
            }
        }
        let cfg = self.config().await?;
        let _one_at_a_time = self.sync_lock.lock().await;
        mfasync_engine::single::sync_user(self.store.as_ref(), &cfg, query, false, actor)
            .await
            .map_err(|e| format!("cannot sync {query}, nothing changed: {e:#}"))
    }

    async fn approve(&self, id: &str, users: &[String], actor: &str) -> Result<Approved, String> {
        if let Some(why) = self.cluster.get().map(|c| c.not_runner()) {
            if let Some(why) = why.await {
                return Err(format!("cannot approve: {why}"));
            }
        }
        let cfg = self.config().await?;
        let _one_at_a_time = self.sync_lock.lock().await;
        let r = mfasync_engine::decisions::approve(self.store.as_ref(), &cfg, id, users, actor)
            .await
            .map_err(|e| format!("cannot approve: {e:#}"))?;
        let count = |action: &str| {
            r.applied
                .iter()
                .filter(|c| c.action.as_str() == action)
                .count()
        };
        Ok(Approved {
            disabled: count("disable"),
            still_pending: r.approval.still_pending(),
            id: r.approval.id,
            no_longer_needed: r.dropped.iter().map(|h| h.username.clone()).collect(),
            removed: count("remove"),
            status: r.approval.status.as_str().to_string(),
        })
    }

    async fn reject(&self, id: &str, users: &[String], actor: &str) -> Result<Rejected, String> {
        let cfg = self.config().await?;
        let a = mfasync_engine::decisions::reject(self.store.as_ref(), &cfg, id, users, actor)
            .await
            .map_err(|e| format!("cannot reject: {e:#}"))?;
        Ok(Rejected {
            still_pending: a.still_pending(),
            id: a.id,
            status: a.status.as_str().to_string(),
        })
    }

    async fn auth(&self, username: &str, password: &str) -> Result<(), Reason> {
        self.auth_limited(username, password, &Open).await
    }

    async fn auth_limited(
        &self,
        username: &str,
        password: &str,
        gate: &dyn Gate,
    ) -> Result<(), Reason> {
        self.authenticate_user(username, password, gate)
            .await
            .map(|_| ())
    }

    async fn directory_admin(&self, username: &str, password: &str) -> Result<(), String> {
        self.directory_admin_limited(username, password, &Open)
            .await
    }

    async fn directory_admin_limited(
        &self,
        username: &str,
        password: &str,
        gate: &dyn Gate,
    ) -> Result<(), String> {
        let cfg = self.config().await?;
        let group = cfg
            .portal
            .as_ref()
            .map(|p| p.admin_group.trim().to_string())
            .filter(|g| !g.is_empty())
            .ok_or("portal.admin_group is not set")?;
        // The password as `mfasync auth` checks it; "not an MFA user" and
        // "MFA user disabled" are only answered once the password was accepted.
        match mfasync_engine::auth::authenticate_with(
            self.store.as_ref(),
            &cfg,
            username,
            password,
            Some(&self.auth_connections),
            gate,
        )
        .await
        {
            Ok(()) | Err(Reason::NotAnMfaUser) | Err(Reason::MfaUserDisabled) => {}
            Err(r) => return Err(format!("password not accepted ({})", r.as_str())),
        }
        admin_group_member(&cfg, username, &group).await
    }
}

/// Whether the account `username` (found as a password check finds it) is a
/// member of `group`, directly or through nested groups: groups holding the
/// account are searched with the security group filter, then the groups
/// holding those, up to 16 levels.
async fn admin_group_member(
    cfg: &mfasync_core::Config,
    username: &str,
    group: &str,
) -> Result<(), String> {
    use mfasync_core::escape::filter_value;
    use mfasync_engine::auth::wrap;
    let password =
        mfasync_engine::secrets::bind_password(&cfg.directory.query_bind, "directory.query_bind")?;
    let mut client = mfasync_ldap::connect(
        &cfg.directory,
        &cfg.directory.query_bind,
        password.as_deref(),
    )
    .await
    .map_err(|e| format!("cannot search the directory: {e}"))?;
    let result = async {
        let value = filter_value(username);
        let alternatives: String = cfg
            .attributes
            .username
            .0
            .iter()
            .map(|a| format!("({a}={value})"))
            .collect();
        let base = client.base_dn().to_string();
        // one small attribute rather than all of them (groups can be large)
        let attrs = [cfg.attributes.distinguished_name.clone()];
        let filter = format!("(&{}(|{alternatives}))", wrap(&cfg.filters.user));
        let found = client
            .search_all(&base, mfasync_ldap::Scope::Subtree, &filter, &attrs)
            .await
            .map_err(|e| format!("username search failed: {e}"))?;
        let user_dn = match found.as_slice() {
            [one] => one.dn.clone(),
            [] => return Err("no such account".to_string()),
            _ => return Err("the username matches several accounts".to_string()),
        };
        let norm = |dn: &str| {
            dn.split(',')
                .map(|p| p.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
                .join(",")
        };
        let wanted = norm(group);
        let mut seen = std::collections::HashSet::new();
        let mut frontier = vec![user_dn];
        for _ in 0..16 {
            let mut next = Vec::new();
            for dn in &frontier {
                let v = filter_value(dn);
                let filter = format!(
                    "(&{}(|(member={v})(uniqueMember={v})))",
                    wrap(&cfg.filters.security_group)
                );
                let groups = client
                    .search_all(&base, mfasync_ldap::Scope::Subtree, &filter, &attrs)
                    .await
                    .map_err(|e| format!("group search failed: {e}"))?;
                for g in groups {
                    let n = norm(&g.dn);
                    if n == wanted {
                        return Ok(());
                    }
                    if seen.insert(n) {
                        next.push(g.dn);
                    }
                }
            }
            if next.is_empty() {
                break;
            }
            frontier = next;
        }
        Err(format!("not a member of {group}"))
    }
    .await;
    client.unbind().await;
    result
}

/// The seed's Test (PRODUCT.md's `directory test` JSON) of a configuration
/// with the query bind, or a failed "connect" step naming why there is none.
async fn test_report(cfg: Result<Arc<mfasync_core::Config>, String>) -> TestReport {
    let cfg = match cfg {
        Ok(c) => c,
        Err(e) => return TestReport::not_run(e),
    };
    let password = match mfasync_engine::secrets::bind_password(
        &cfg.directory.query_bind,
        "directory.query_bind",
    ) {
        Ok(p) => p,
        Err(e) => return TestReport::not_run(e),
    };
    mfasync_ldap::test(
        &cfg.directory,
        &cfg.directory.query_bind,
        password.as_deref(),
    )
    .await
}
