//! `mfasync history`: the sync history, newest first, each run with its
//! status: ok, failed, running, or interrupted (its process stopped before
//! it recorded a result: killed, crashed, the machine lost).

use crate::{CmdResult, Failure};
use mfasync_store::Store;

pub async fn cli(store: &dyn Store, limit: i64, json: bool) -> CmdResult {
    let runs = store
        .runs(limit)
        .await
        .map_err(|e| Failure::Refused(e.to_string()))?;
    let alive = match runs
        .iter()
        .any(|r| r.finished_at.is_none() && !r.interrupted)
    {
        true => mfasync_engine::cluster::runner_alive(store).await,
        false => false,
    };
    if json {
        let v: Vec<_> = runs
            .iter()
            .map(|r| {
                serde_json::json!({"id": r.id, "started_at": r.started_at, "finished_at": r.finished_at,
                "mode": r.mode, "status": r.status(alive), "created": r.created, "updated": r.updated, "enabled": r.enabled,
                "disabled": r.disabled, "removed": r.removed, "unchanged": r.unchanged, "entries_read": r.entries_read, "error": r.error, "note": r.note})
            })
            .collect();
        return crate::print_json(&v);
    }
    for r in runs {
        let status = r.status(alive);
        crate::terminal::say!(
            "#{} {} {} {status} created={} updated={} enabled={} disabled={} removed={} unchanged={}{}{}{}",
            r.id,
            r.started_at,
            r.mode,
            r.created,
            r.updated,
            r.enabled,
            r.disabled,
            r.removed,
            r.unchanged,
            r.entries_read
                .map(|n| format!(" entries_read={n}"))
                .unwrap_or_default(),
            match (&r.error, status) {
                (Some(e), _) => format!(" error: {e}"),
                (None, "interrupted") => {
                    " (stopped before recording its result: what it committed, if anything, is in `mfasync audit`)".to_string()
                }
                _ => String::new(),
            },
            r.note.as_deref().map(|n| format!(" note: {n}")).unwrap_or_default()
        );
    }
    Ok(())
}
