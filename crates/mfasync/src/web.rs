//! The binary's side of the web portal and REST API (`crates/web`): a
//! `mfasync_web::Backend` over the store and the directory.

use std::sync::Arc;

use async_trait::async_trait;
use mfasync_core::auth::Reason;
use mfasync_store::Store;
use serde_json::{json, Value};

use crate::{approvals, sync};

pub struct ServiceBackend {
    pub store: Arc<dyn Store>,
    /// Held by every cycle (scheduled, Synchronize Now, approve): one at a time.
    pub sync_lock: Arc<tokio::sync::Mutex<()>>,
    /// The query connection reused by password checks (username lookups).
    pub auth_query: Arc<crate::auth::QueryConnection>,
}

fn failure_text(f: crate::Failure) -> String {
    match f {
        crate::Failure::Refused(m) => m,
        crate::Failure::Invalid(v) => v.join("; "),
    }
}

impl ServiceBackend {
    async fn config(&self) -> Result<mfasync_core::Config, String> {
        crate::active_config(self.store.as_ref())
            .await
            .map_err(failure_text)
    }

    async fn cycle(&self, full: bool, plan_only: bool) -> Result<Value, String> {
        let cfg = self.config().await?;
        let _one_at_a_time = self.sync_lock.lock().await;
        let o = sync::run(self.store.as_ref(), &cfg, sync::Options { full, plan_only })
            .await
            .map_err(|e| format!("{e:#}"))?;
        Ok(sync::outcome_json(&o, plan_only))
    }
}

#[async_trait]
impl mfasync_web::Backend for ServiceBackend {
    async fn config_put(&self, toml: &str, actor: &str) -> Result<i64, Vec<String>> {
        let cfg = mfasync_core::config::parse(toml)
            .map_err(|errs| errs.iter().map(ToString::to_string).collect::<Vec<_>>())?;
        if let Err(w) = crate::secrets::check(&cfg) {
            tracing::warn!("{w}");
        }
        let version = self
            .store
            .put_config(toml)
            .await
            .map_err(|e| vec![e.to_string()])?;
        tracing::info!("configuration version {version} applied by {actor}");
        Ok(version)
    }

    async fn directory_test(&self) -> Value {
        let failed = |detail: String| {
            json!({"ok": false, "server": "", "vendor": "other",
                   "steps": [{"step": "connect", "ok": false, "detail": detail}], "supports": {}})
        };
        let cfg = match self.config().await {
            Ok(c) => c,
            Err(e) => return failed(e),
        };
        let password = match crate::secrets::bind_password(
            &cfg.directory.query_bind,
            "directory.query_bind",
        ) {
            Ok(p) => p,
            Err(e) => return failed(e),
        };
        let report = mfasync_ldap::test(
            &cfg.directory,
            &cfg.directory.query_bind,
            password.as_deref(),
        )
        .await;
        serde_json::to_value(&report).unwrap_or_else(|e| failed(e.to_string()))
    }

    async fn sync_now(&self, full: bool) -> Result<Value, String> {
        self.cycle(full, false).await
    }

    async fn plan(&self) -> Result<Value, String> {
        self.cycle(false, true).await
    }

    async fn approve(&self, id: &str, actor: &str) -> Result<Value, String> {
        let cfg = self.config().await?;
        let _one_at_a_time = self.sync_lock.lock().await;
        let r = approvals::approve(self.store.as_ref(), &cfg, id, actor)
            .await
            .map_err(|e| format!("cannot approve: {e:#}"))?;
        let count = |action: &str| {
            r.applied
                .iter()
                .filter(|c| c.action.as_str() == action)
                .count()
        };
        Ok(json!({
            "id": r.approval.id,
            "status": r.approval.status.as_str(),
            "disabled": count("disable"),
            "removed": count("remove"),
            "no_longer_needed": r.dropped.iter().map(|h| h.username.as_str()).collect::<Vec<_>>(),
        }))
    }

    async fn reject(&self, id: &str, actor: &str) -> Result<Value, String> {
        let a = approvals::reject(self.store.as_ref(), id, actor)
            .await
            .map_err(|e| format!("cannot reject: {e:#}"))?;
        Ok(json!({"id": a.id, "status": a.status.as_str()}))
    }

    async fn auth(&self, username: &str, password: &str) -> Result<(), Reason> {
        let cfg = self
            .config()
            .await
            .map_err(|_| Reason::DirectoryUnavailable)?;
        crate::auth::authenticate_with(
            self.store.as_ref(),
            &cfg,
            username,
            password,
            Some(self.auth_query.as_ref()),
        )
        .await
    }
}
