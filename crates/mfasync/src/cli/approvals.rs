//! `approvals list|approve|reject`.

use mfasync_core::config::Config;
use mfasync_core::plan::Action;
use mfasync_core::report::{Approved, Rejected};
use mfasync_engine::approvals::{expire, pending_of, who};
use mfasync_engine::decisions::{approve, reject};
use mfasync_store::{Approval, ApprovalStatus, Store};

/// `approvals list`: the pending approvals (PRODUCT.md JSON), each with the
/// users still undecided. Those past `sync.approval_expiry` expire first.
pub async fn cli_list(store: &dyn Store, cfg: Option<&Config>, json: bool) -> crate::CmdResult {
    if let Some(cfg) = cfg {
        match expire(store, cfg).await {
            Ok(ids) => ids.iter().for_each(|id| {
                crate::logging::warning(format!(
                    "approval {id} expired (pending longer than sync.approval_expiry): rejected, nothing applied"
                ))
            }),
            Err(e) => crate::logging::warning(format!("cannot expire old approvals: {e:#}")),
        }
    }
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
        say_pending(a);
    }
    Ok(())
}

/// One pending approval, its undecided users and the commands.
fn say_pending(a: &Approval) {
    let p = pending_of(a);
    crate::terminal::say!(
        "approval {} (created {}): {} to disable, {} to remove",
        a.id,
        a.created_at,
        p.disable,
        p.remove
    );
    for h in a.undecided() {
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
    let decided = a.changes.len() - a.undecided().count();
    if decided > 0 {
        crate::terminal::say!("  ({decided} held user(s) already decided one by one)");
    }
    crate::terminal::say!(
        "approve: mfasync approvals approve {id} [--user NAME]...    reject: mfasync approvals reject {id} [--user NAME]...",
        id = a.id
    );
}

/// `approvals approve ID [--user NAME]...`.
pub async fn cli_approve(
    store: &dyn Store,
    cfg: &Config,
    id: &str,
    users: &[String],
    json: bool,
) -> crate::CmdResult {
    let r = approve(store, cfg, id, users, &who())
        .await
        .map_err(|e| crate::Failure::Refused(format!("cannot approve: {e:#}")))?;
    let count = |action: Action| r.applied.iter().filter(|c| c.action == action).count();
    let still = r.approval.still_pending();
    if json {
        return crate::print_json(&Approved {
            disabled: count(Action::Disable),
            id: r.approval.id.clone(),
            no_longer_needed: r.dropped.iter().map(|h| h.username.clone()).collect(),
            removed: count(Action::Remove),
            status: r.approval.status.as_str().to_string(),
            still_pending: still.clone(),
        });
    }
    let whom = match users.is_empty() {
        true => String::new(),
        false => format!(" for {}", users.join(", ")),
    };
    crate::terminal::say!(
        "approval {}{whom} approved: {} disabled, {} removed",
        r.approval.id,
        count(Action::Disable),
        count(Action::Remove)
    );
    for h in &r.dropped {
        crate::terminal::say!(
            "  not applied: {} {} (the directory no longer calls for it)",
            h.action,
            h.username
        );
    }
    say_rest(&r.approval, &still);
    Ok(())
}

/// After a per-user decision: who is still pending, or how the approval ended.
fn say_rest(a: &Approval, still: &[String]) {
    if !still.is_empty() {
        crate::terminal::say!("  still pending: {}", still.join(", "));
    } else if a.has_user_decisions() {
        crate::terminal::say!(
            "  approval {} is now {}{}",
            a.id,
            a.status.as_str(),
            a.detail
                .as_deref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        );
    }
}

/// `approvals reject ID [--user NAME]...`.
pub async fn cli_reject(
    store: &dyn Store,
    cfg: &Config,
    id: &str,
    users: &[String],
    json: bool,
) -> crate::CmdResult {
    let a = reject(store, cfg, id, users, &who())
        .await
        .map_err(|e| crate::Failure::Refused(format!("cannot reject: {e:#}")))?;
    let still = a.still_pending();
    if json {
        return crate::print_json(&Rejected {
            id: a.id.clone(),
            status: a.status.as_str().to_string(),
            still_pending: still.clone(),
        });
    }
    if users.is_empty() {
        crate::terminal::say!(
            "approval {} rejected: {} users kept; the same set is not asked about again until the directory changes",
            a.id,
            a.undecided().count()
        );
        return Ok(());
    }
    crate::terminal::say!(
        "approval {} rejected for {}: kept; not asked about again until the directory changes",
        a.id,
        users.join(", ")
    );
    say_rest(&a, &still);
    Ok(())
}
