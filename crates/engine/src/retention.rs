//! `audit.retention`: audit entries older than the retention are purged
//! after each synchronization cycle (CLI and service), by the service when
//! synchronization is off, and by `mfasync audit purge`; each purge that
//! deletes something is itself audited.

use crate::error::{EngineError, Result};
use mfasync_core::Config;
use mfasync_store::Store;

/// Purge what `cfg`'s retention no longer keeps: how many entries, and the
/// time they were older than (None: kept forever).
pub async fn purge(store: &dyn Store, cfg: &Config) -> Result<(u64, Option<String>)> {
    let Some(keep) = cfg.audit.retention_duration() else {
        return Ok((0, None));
    };
    // (time's errors as their message: a cause would only repeat it)
    let keep = time::Duration::try_from(keep).map_err(|e| EngineError::Other(e.to_string()))?;
    let before = time::OffsetDateTime::now_utc()
        .checked_sub(keep)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .replace_nanosecond(0)
        .map_err(|e| EngineError::Other(e.to_string()))?
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| EngineError::Other(e.to_string()))?;
    let why = format!("audit.retention = {:?}", cfg.audit.retention.trim());
    let n = store.audit_purge(&before, &why).await?;
    Ok((n, Some(before)))
}

/// [`purge`] after a cycle: a failure is logged, never the cycle's.
pub async fn after_cycle(store: &dyn Store, cfg: &Config) {
    match purge(store, cfg).await {
        Ok((0, _)) => {}
        Ok((n, Some(before))) => {
            tracing::info!(target: "mfasync::retention", "{n} audit entries from before {before} purged (audit.retention)")
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(target: "mfasync::retention", "cannot purge the audit trail (audit.retention): {e:#}")
        }
    }
}
