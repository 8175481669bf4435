//! The one way a cycle's plan is applied, full and incremental alike: the
//! approval hold (`approvals::hold`), then ONE store transaction with the
//! watermark (`Store::apply`, or the streamed creates' `Applying`).

use crate::error::Result;
use mfasync_core::config::Config;
use mfasync_core::plan::Plan;
use mfasync_store::{Store, Watermark};

/// The single point where a cycle's plan is applied, with its watermark, in
/// ONE transaction (full and incremental cycles alike). How many creates
/// were restores from the recycle bin.
pub(crate) async fn commit(
    store: &dyn Store,
    cfg: &Config,
    p: &Plan,
    wm: &Watermark,
) -> Result<usize> {
    commit_full(store, cfg, p, None, None, wm).await
}

/// `commit` of a full cycle: into the write transaction holding the creates
/// streamed on a first sync (when any), and with the changes kept on disk
/// (`spilled`) written after the plan's others (creates of usernames no
/// stored user has, updates that keep theirs: no other change frees or
/// takes a username for them).
pub(crate) async fn commit_full(
    store: &dyn Store,
    cfg: &Config,
    p: &Plan,
    applying: Option<Box<dyn mfasync_store::Applying + '_>>,
    spilled: Option<crate::spill::SpilledChanges>,
    wm: &Watermark,
) -> Result<usize> {
    let t = std::time::Instant::now();
    // (nothing to hold when creates were streamed: nothing was stored)
    let (now, _pending) = crate::approvals::hold(store, cfg, p).await?;
    let mut a = match applying {
        Some(a) => a,
        None => store.begin_apply().await?,
    };
    // (written a chunk at a time: the plan's changes are not copied all at once)
    for chunk in now.chunks(crate::read::CREATE_CHUNK) {
        let chunk: Vec<_> = chunk.iter().map(|c| (*c).clone()).collect();
        a.write(&chunk).await?;
    }
    drop(now);
    if let Some(spilled) = spilled {
        let mut changes = spilled.changes()?;
        loop {
            let chunk = crate::spill::next_chunk(&mut changes, crate::read::CREATE_CHUNK)?;
            if chunk.is_empty() {
                break;
            }
            a.write(&chunk).await?;
        }
    }
    let restored = a.restored();
    a.commit(Some(wm)).await?;
    tracing::info!(target: "mfasync::sync", ms = t.elapsed().as_millis() as u64, "applied the plan");
    Ok(restored)
}
