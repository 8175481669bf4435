//! `mfasync audit`: the audit trail kept by the store (every change a sync made
//! to an MFA user with before/after, every configuration version, every
//! approval request and decision, notifications sent or failed).

use mfasync_store::{AuditEntry, Store};

/// The fields that differ between a before and an after user (JSON objects),
/// as (field, before, after).
pub fn changed_fields(e: &AuditEntry) -> Vec<(String, serde_json::Value, serde_json::Value)> {
    let (Some(serde_json::Value::Object(b)), Some(serde_json::Value::Object(a))) =
        (&e.before, &e.after)
    else {
        return Vec::new();
    };
    a.iter()
        .filter_map(|(k, av)| {
            let bv = b.get(k).cloned().unwrap_or(serde_json::Value::Null);
            (bv != *av).then(|| (k.clone(), bv, av.clone()))
        })
        .collect()
}

pub async fn cli_list(store: &dyn Store, limit: i64, json: bool) -> crate::CmdResult {
    if limit < 1 {
        return Err(crate::Failure::Invalid(vec![
            "--limit must be at least 1".into()
        ]));
    }
    let entries = store
        .audit(limit)
        .await
        .map_err(|e| crate::Failure::Refused(e.to_string()))?;
    if json {
        let v: Vec<serde_json::Value> = entries
            .iter()
            .map(|e| {
                let changed: serde_json::Map<String, serde_json::Value> = changed_fields(e)
                    .into_iter()
                    .map(|(k, b, a)| (k, serde_json::json!({"before": b, "after": a})))
                    .collect();
                serde_json::json!({
                    "id": e.id, "at": e.at, "actor": e.actor, "action": e.action,
                    "username": e.username, "directory_id": e.directory_id,
                    "detail": e.detail, "changed": changed,
                    "before": e.before, "after": e.after,
                })
            })
            .collect();
        return crate::print_json(&v);
    }
    if entries.is_empty() {
        crate::terminal::say!("the audit trail is empty");
    }
    for e in &entries {
        let mut line = format!("{} {:6} {:20}", e.at, e.actor, e.action);
        if let Some(u) = &e.username {
            line.push(' ');
            line.push_str(u);
        }
        if let Some(d) = &e.detail {
            line.push_str(&format!(" ({d})"));
        }
        let changed: Vec<String> = changed_fields(e)
            .into_iter()
            .map(|(k, b, a)| format!("{k}: {b} -> {a}"))
            .collect();
        if !changed.is_empty() {
            line.push_str(&format!(" [{}]", changed.join("; ")));
        }
        crate::terminal::say!("{line}");
    }
    Ok(())
}
