//! `sync --user NAME|DN`: one user read from the directory now, decided as a
//! full cycle decides it (`explain::resolve`), and applied alone in one
//! audited transaction. Nobody else is looked at, so nobody else departs,
//! and the incremental starting point is left as it is.

use crate::error::{EngineError, Result};
use mfasync_core::config::Config;
use mfasync_core::plan::{Action, Plan};
use mfasync_core::report::explain::UserSynced;
use mfasync_core::safeguard::{self, Limits, Protection};
use mfasync_store::Store;

/// Sync the user `query` names (a username or a DN) at `actor`'s request
/// (audited); with `plan_only`, only say what would change. The caller
/// holds the sync lease.
pub async fn sync_user(
    store: &dyn Store,
    cfg: &Config,
    query: &str,
    plan_only: bool,
    actor: &str,
) -> Result<UserSynced> {
    let resolved = crate::explain::resolve(store, cfg, query).await?;
    let ex = &resolved.explanation;
    let username = ex
        .would_write
        .as_ref()
        .or(ex.stored.as_ref())
        .map(|u| u.username.clone());
    let mut out = UserSynced {
        action: ex.decision.action.clone(),
        applied: false,
        fields: Vec::new(),
        held: None,
        reason: ex.decision.reason.clone(),
        step: ex.decision.step,
        username,
    };
    let Some(change) = resolved.change else {
        return Ok(out);
    };
    out.fields = change.fields.iter().map(|f| f.to_string()).collect();
    if let Some(other) = &resolved.username_taken {
        if matches!(change.action, Action::Create | Action::Update) {
            return Err(EngineError::Other(format!(
                "{}: the username is held by the stored directory user {other}; a one-user sync cannot settle two users sharing a name (run `mfasync sync --full`)",
                change.user.username
            )));
        }
    }
    // the removal safeguards, as a cycle applies them (a held departure is
    // left for the next cycle, which asks for approval)
    let plan = Plan {
        changes: vec![change],
        ..Plan::default()
    };
    let departs = plan.changes.iter().any(safeguard::is_departure);
    let population = match departs && Limits::needs_population(&cfg.sync) {
        true => crate::approvals::directory_users(store).await?,
        false => 0,
    };
    let limits = Limits::of(&cfg.sync, population);
    // (protected departures were decided by `resolve`)
    let split = safeguard::split(&plan, &limits, &Protection::of_names(&[]));
    if let Some(h) = split.held.first() {
        out.held = Some(h.by.to_string());
        out.reason = format!(
            "{}; held by {}: not applied (the next sync cycle asks for approval)",
            out.reason, h.by
        );
        return Ok(out);
    }
    if plan_only {
        return Ok(out);
    }
    // welcome/update emails are queued in the same transaction, as in a cycle
    let _emails = crate::emails::Armed::arm(store, cfg, None);
    let now: Vec<_> = split.now.into_iter().cloned().collect();
    store.apply(&now, None).await?;
    out.applied = true;
    let detail = format!("sync --user {query}: {}", out.action);
    if let Err(e) = store.audit_event(actor, "sync-user", &detail).await {
        tracing::error!(target: "mfasync::sync", "cannot record the one-user sync in the audit trail: {e}");
    }
    tracing::info!(target: "mfasync::sync",
        user = out.username.as_deref().unwrap_or_default(),
        action = out.action.as_str(),
        "synchronized one user"
    );
    Ok(out)
}
