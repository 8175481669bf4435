//! `approvals list|approve|reject`.

use mfasync_core::config::Config;
use mfasync_engine::approvals::{pending_of, who};
use mfasync_engine::decisions::{approve, reject};
use mfasync_store::{Approval, ApprovalStatus, Store};

/// `approvals list`: the pending approvals (PRODUCT.md JSON).
pub async fn cli_list(store: &dyn Store, json: bool) -> crate::CmdResult {
    let pending = store
        .approvals(Some(ApprovalStatus::Pending))
        .await
        .map_err(|e| crate::Failure::Refused(e.to_string()))?;
    if json {
        let listed: Vec<_> = pending.iter().map(Approval::listed).collect();
        return crate::print_json(&listed);
    }
    if pending.is_empty() {
        crate::terminal::say!("no pending approvals");
    }
    for a in &pending {
        let p = pending_of(a);
        crate::terminal::say!(
            "approval {} (created {}): {} to disable, {} to remove",
            a.id,
            a.created_at,
            p.disable,
            p.remove
        );
        for h in &a.changes {
            crate::terminal::say!(
                "  {:8} {}  ({})",
                h.action,
                h.username,
                h.reason.as_deref().unwrap_or("no reason given")
            );
            if let Some(limit) = &h.limit {
                crate::terminal::say!("           held by {limit}");
            }
        }
        crate::terminal::say!(
            "approve: mfasync approvals approve {id}    reject: mfasync approvals reject {id}",
            id = a.id
        );
    }
    Ok(())
}

/// `approvals approve ID`.
pub async fn cli_approve(
    store: &dyn Store,
    cfg: &Config,
    id: &str,
    json: bool,
) -> crate::CmdResult {
    let r = approve(store, cfg, id, &who())
        .await
        .map_err(|e| crate::Failure::Refused(format!("cannot approve: {e:#}")))?;
    let count = |action: &str| {
        r.applied
            .iter()
            .filter(|c| c.action.as_str() == action)
            .count()
    };
    if json {
        return crate::print_json(&serde_json::json!({
            "id": r.approval.id,
            "status": r.approval.status.as_str(),
            "disabled": count("disable"),
            "removed": count("remove"),
            "no_longer_needed": r.dropped.iter().map(|h| h.username.as_str()).collect::<Vec<_>>(),
        }));
    }
    crate::terminal::say!(
        "approval {} approved: {} disabled, {} removed",
        r.approval.id,
        count("disable"),
        count("remove")
    );
    for h in &r.dropped {
        crate::terminal::say!(
            "  not applied: {} {} (the directory no longer calls for it)",
            h.action,
            h.username
        );
    }
    Ok(())
}

/// `approvals reject ID`.
pub async fn cli_reject(store: &dyn Store, id: &str, json: bool) -> crate::CmdResult {
    let a = reject(store, id, &who())
        .await
        .map_err(|e| crate::Failure::Refused(format!("cannot reject: {e:#}")))?;
    if json {
        return crate::print_json(&serde_json::json!({"id": a.id, "status": a.status.as_str()}));
    }
    crate::terminal::say!(
        "approval {} rejected: {} users kept; the same set is not asked about again until the directory changes",
        a.id,
        a.changes.len()
    );
    Ok(())
}
