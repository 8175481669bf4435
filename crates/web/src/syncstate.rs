//! Whether synchronization can run, judged from the active configuration: a
//! service with nothing to synchronize is "not configured", not failing
//! (the dashboard, `/metrics` and `serve`'s log say so in the same words).

use mfasync_core::config::Config;
use mfasync_store::Store;

/// The service's synchronization state (not a cycle's outcome).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncState {
    /// No configuration is applied yet.
    NoConfiguration,
    /// A configuration without any `[[sync.items]]`: nothing to synchronize.
    NoItems,
    /// `sync.enabled = false`.
    Disabled,
    /// Cycles run every `sync.interval`.
    Active,
}

impl SyncState {
    pub fn of(cfg: Option<&Config>) -> SyncState {
        match cfg {
            None => SyncState::NoConfiguration,
            Some(c) if c.sync.items.is_empty() => SyncState::NoItems,
            Some(c) if !c.sync.enabled => SyncState::Disabled,
            Some(_) => SyncState::Active,
        }
    }

    /// The `state` label of `mfasync_sync_state`.
    pub fn label(self) -> &'static str {
        match self {
            SyncState::NoConfiguration | SyncState::NoItems => "not-configured",
            SyncState::Disabled => "disabled",
            SyncState::Active => "active",
        }
    }

    /// What an administrator reads.
    pub fn describe(self) -> &'static str {
        match self {
            SyncState::NoConfiguration => "not configured: apply a configuration",
            SyncState::NoItems => "not configured: add a sync item",
            SyncState::Disabled => "disabled (sync.enabled = false)",
            SyncState::Active => "active",
        }
    }

    /// Whether at least one sync item is configured.
    pub fn configured(self) -> bool {
        matches!(self, SyncState::Disabled | SyncState::Active)
    }
}

/// The state of the active configuration in `store`; None when the store
/// cannot be read or the stored configuration no longer validates.
pub(crate) async fn current(store: &dyn Store) -> Option<SyncState> {
    match store.active_config().await {
        Ok(None) => Some(SyncState::NoConfiguration),
        Ok(Some(v)) => mfasync_core::config::parse(&v.toml)
            .ok()
            .map(|c| SyncState::of(Some(&c))),
        Err(e) => {
            tracing::warn!("the active configuration: {e}");
            None
        }
    }
}
