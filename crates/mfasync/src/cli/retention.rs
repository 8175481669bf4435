//! `audit purge`.

use mfasync_core::config::Config;
use mfasync_engine::retention::purge;
use mfasync_store::Store;

/// `mfasync audit purge`.
pub async fn cli(store: &dyn Store, cfg: &Config, json: bool) -> crate::CmdResult {
    let (n, before) = purge(store, cfg)
        .await
        .map_err(|e| crate::Failure::Refused(format!("cannot purge the audit trail: {e:#}")))?;
    if json {
        return crate::print_json(&serde_json::json!({
            "purged": n, "before": before, "retention": cfg.audit.retention.trim(),
        }));
    }
    match before {
        Some(b) => println!(
            "{n} audit entries from before {b} purged (audit.retention = {:?})",
            cfg.audit.retention.trim()
        ),
        None => println!("audit.retention = \"forever\": nothing purged"),
    }
    Ok(())
}
