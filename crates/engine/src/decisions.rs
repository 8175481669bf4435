//! An administrator's decision on a pending approval (`approvals approve|reject`,
//! the portal, the API), above the sync cycle: approving re-runs a full
//! cycle with the approval in force (`approvals::IN_FORCE`), so only the held
//! changes the directory still calls for are applied.

use std::collections::HashSet;

use crate::error::{EngineError, Result, ResultExt};
use mfasync_core::config::Config;
use mfasync_core::plan::Change;
use mfasync_store::{Approval, ApprovalStatus, HeldChange, Store};

use crate::approvals::{change_key, held_key, is_departure, IN_FORCE};

/// The pending approval `id`, or a clear refusal.
async fn pending(store: &dyn Store, id: &str) -> Result<Approval> {
    match store.approval(id).await? {
        None => Err(EngineError::Other(format!(
            "no approval with id {id:?} (`mfasync approvals list` shows the pending ones)"
        ))),
        Some(a) if a.status != ApprovalStatus::Pending => Err(EngineError::Other(format!(
            "approval {id} is {}{}: only a pending approval can be decided (`mfasync approvals list`)",
            a.status.as_str(),
            a.detail
                .as_deref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        ))),
        Some(a) => Ok(a),
    }
}

/// The result of `approvals approve`.
pub struct Approved {
    pub approval: Approval,
    /// Held changes applied (they still held against the directory).
    pub applied: Vec<Change>,
    /// Held changes no longer called for by the directory (not applied).
    pub dropped: Vec<HeldChange>,
}

/// Approve `id`: run a full cycle now with the approval in force, so the held
/// changes that the directory still calls for are applied (and nothing else
/// that would need approval), then mark it approved.
pub async fn approve(store: &dyn Store, cfg: &Config, id: &str, actor: &str) -> Result<Approved> {
    let a = pending(store, id).await?;
    let outcome = IN_FORCE
        .scope(
            a.clone(),
            crate::sync::run(
                store,
                cfg,
                crate::sync::Options {
                    full: true,
                    plan_only: false,
                },
            ),
        )
        .await
        .context("re-checking the held changes against the directory")?;
    let applied: Vec<Change> = outcome
        .plan
        .changes
        .iter()
        .filter(|c| is_departure(c))
        .cloned()
        .collect();
    let done: HashSet<String> = applied.iter().map(change_key).collect();
    let dropped: Vec<HeldChange> = a
        .changes
        .iter()
        .filter(|h| !done.contains(&held_key(h)))
        .cloned()
        .collect();
    let detail = format!(
        "{} of {} held changes applied after re-checking the directory",
        applied.len(),
        a.changes.len()
    );
    let approval = store
        .decide_approval(id, ApprovalStatus::Approved, actor, Some(&detail))
        .await
        .map_err(|e| EngineError::Other(e.to_string()))?;
    Ok(Approved {
        approval,
        applied,
        dropped,
    })
}

/// Reject `id`: nothing changes, and the same set is not asked about again
/// until the directory changes.
pub async fn reject(store: &dyn Store, id: &str, actor: &str) -> Result<Approval> {
    pending(store, id).await?;
    store
        .decide_approval(
            id,
            ApprovalStatus::Rejected,
            actor,
            Some("users kept; not asked again until the directory changes"),
        )
        .await
        .map_err(|e| EngineError::Other(e.to_string()))
}
