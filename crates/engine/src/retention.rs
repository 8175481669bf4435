//! `audit.retention`: audit entries older than the retention are purged
//! after each synchronization cycle (CLI and service), by the service when
//! synchronization is off, and by `mfasync audit purge`; each purge that
//! deletes something is itself audited. `sync.retention`: users removed
//! into the recycle bin longer ago than that are purged after each cycle.

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

/// RFC 3339 UTC text of `keep` ago (whole seconds): what is older is purged.
fn cutoff(keep: std::time::Duration) -> Result<String> {
    let keep = time::Duration::try_from(keep).map_err(|e| EngineError::Other(e.to_string()))?;
    time::OffsetDateTime::now_utc()
        .checked_sub(keep)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .replace_nanosecond(0)
        .map_err(|e| EngineError::Other(e.to_string()))?
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| EngineError::Other(e.to_string()))
}

/// `sync.retention`: purge the recycle bin's users removed longer ago than
/// that. How many, and the time they were removed before.
pub async fn purge_bin(store: &dyn Store, cfg: &Config) -> Result<(u64, String)> {
    let before = cutoff(cfg.sync.retention_duration())?;
    let why = format!("sync.retention = {:?}", cfg.sync.retention.trim());
    let n = store.bin_purge_before(&before, &why).await?;
    Ok((n, before))
}

/// [`purge`] and [`purge_bin`] after a cycle: a failure is logged, never the cycle's.
pub async fn after_cycle(store: &dyn Store, cfg: &Config) {
    match purge_bin(store, cfg).await {
        Ok((0, _)) => {}
        Ok((n, before)) => {
            tracing::info!(target: "mfasync::retention", "{n} users removed before {before} purged from the recycle bin (sync.retention)")
        }
        Err(e) => {
            tracing::warn!(target: "mfasync::retention", "cannot purge the recycle bin (sync.retention): {e:#}")
        }
    }
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
