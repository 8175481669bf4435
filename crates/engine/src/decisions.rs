//! An administrator's decision on a pending approval (`approvals approve|reject`,
//! the portal, the API), above the sync cycle: approving re-runs a full
//! cycle with the approval in force (`approvals::IN_FORCE`), so only the held
//! changes the directory still calls for are applied. A decision may name
//! some held users only (`--user`): the others stay pending in the approval.

use std::collections::HashSet;

use crate::error::{EngineError, Result, ResultExt};
use mfasync_core::config::Config;
use mfasync_core::plan::Change;
use mfasync_store::{Approval, ApprovalStatus, HeldChange, Store, UserDecision};

use crate::approvals::{change_key, expire_one, held_key, is_departure, IN_FORCE};

/// The pending approval `id`, or a clear refusal. One older than
/// `sync.approval_expiry` is expired (rejected) first, and refused.
async fn pending(store: &dyn Store, cfg: &Config, id: &str) -> Result<Approval> {
    let found = store.approval(id).await?;
    let found = match found {
        Some(a) if expire_one(store, cfg, &a).await? => store.approval(id).await?,
        other => other,
    };
    match found {
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

/// The undecided held changes of `a` that `users` names (all of them when
/// `users` is empty); a refusal naming any user it does not hold undecided.
fn selected(a: &Approval, users: &[String]) -> Result<Vec<HeldChange>> {
    let unknown: Vec<&str> = users
        .iter()
        .filter(|u| !a.undecided().any(|h| &h.username == *u))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        return Err(EngineError::Other(format!(
            "approval {} holds no pending departure of {} (`mfasync approvals list` shows who is held)",
            a.id,
            unknown.join(", ")
        )));
    }
    Ok(a.undecided()
        .filter(|h| users.is_empty() || users.contains(&h.username))
        .cloned()
        .collect())
}

/// The result of `approvals approve`.
pub struct Approved {
    pub approval: Approval,
    /// Held changes applied (they still held against the directory).
    pub applied: Vec<Change>,
    /// Held changes no longer called for by the directory (not applied).
    pub dropped: Vec<HeldChange>,
}

/// Approve `id` (only the held `users` when some are named): run a full
/// cycle now with those held changes in force, so the ones the directory
/// still calls for are applied (and nothing else that would need approval),
/// then record the decision.
pub async fn approve(
    store: &dyn Store,
    cfg: &Config,
    id: &str,
    users: &[String],
    actor: &str,
) -> Result<Approved> {
    let a = pending(store, cfg, id).await?;
    let chosen = selected(&a, users)?;
    let in_force = Approval {
        changes: chosen.clone(),
        ..a.clone()
    };
    let outcome = IN_FORCE
        .scope(
            in_force,
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
    let dropped: Vec<HeldChange> = chosen
        .iter()
        .filter(|h| !done.contains(&held_key(h)))
        .cloned()
        .collect();
    let detail = format!(
        "{} of {} held changes applied after re-checking the directory",
        applied.len(),
        chosen.len()
    );
    let decided = match users.is_empty() {
        true => {
            store
                .decide_approval(id, ApprovalStatus::Approved, actor, Some(&detail))
                .await
        }
        false => {
            store
                .decide_users(id, UserDecision::Approved, users, actor, Some(&detail))
                .await
        }
    };
    let approval = decided.map_err(|e| EngineError::Other(e.to_string()))?;
    Ok(Approved {
        approval,
        applied,
        dropped,
    })
}

/// Reject `id` (only the held `users` when some are named): nothing changes,
/// and those departures are not asked about again until the directory changes.
pub async fn reject(
    store: &dyn Store,
    cfg: &Config,
    id: &str,
    users: &[String],
    actor: &str,
) -> Result<Approval> {
    let a = pending(store, cfg, id).await?;
    selected(&a, users)?;
    let kept = "users kept; not asked again until the directory changes";
    let decided = match users.is_empty() {
        true => {
            store
                .decide_approval(id, ApprovalStatus::Rejected, actor, Some(kept))
                .await
        }
        false => {
            store
                .decide_users(id, UserDecision::Rejected, users, actor, Some(kept))
                .await
        }
    };
    decided.map_err(|e| EngineError::Other(e.to_string()))
}
