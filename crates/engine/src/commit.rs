//! The one way a cycle's plan is applied, full and incremental alike: the
//! approval hold (`approvals::hold`), then ONE store transaction with the
//! watermark (`Store::apply`, or the streamed creates' `Applying`).

use crate::error::Result;
use mfasync_core::config::Config;
use mfasync_core::plan::Plan;
use mfasync_store::{Store, Watermark};

/// The single point where a cycle's plan is applied, with its watermark, in
/// ONE transaction (full and incremental cycles alike).
pub(crate) async fn commit(
    store: &dyn Store,
    cfg: &Config,
    p: &Plan,
    wm: &Watermark,
) -> Result<()> {
    let t = std::time::Instant::now();
    // Disables/removals over sync.approval_threshold are held for approval (issue 4).
    let (now, _pending) = crate::approvals::hold(store, cfg, p).await?;
    store.apply(&now, Some(wm)).await?;
    tracing::info!(target: "mfasync::sync", ms = t.elapsed().as_millis() as u64, "applied the plan");
    Ok(())
}

/// `commit` into a write transaction already holding streamed creates.
pub(crate) async fn commit_into(
    store: &dyn Store,
    cfg: &Config,
    p: &Plan,
    mut a: Box<dyn mfasync_store::Applying + '_>,
    wm: &Watermark,
) -> Result<()> {
    let t = std::time::Instant::now();
    let (now, _pending) = crate::approvals::hold(store, cfg, p).await?;
    a.write(&now).await?;
    a.commit(Some(wm)).await?;
    tracing::info!(target: "mfasync::sync", ms = t.elapsed().as_millis() as u64, "applied the plan");
    Ok(())
}
