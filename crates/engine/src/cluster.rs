//! Several `mfasync serve` processes on one database (issue 8): each
//! registers itself and heartbeats; exactly one — the holder of the sync
//! lease — runs synchronization.
//!
//! Every `lease / 3` a server records its heartbeat and takes or renews the
//! lease (`Store::lease_acquire`, one transaction). The holder renews it; when
//! it stops renewing (killed, frozen, cut off), the lease expires after one
//! period and the next server to try takes it with the fencing token plus one:
//! a takeover within `lease + lease / 3`, under two lease periods.
//!
//! Safety does not rest on timing: the store handle of a server carries its
//! fence (`Store::set_fence`), and every sync write checks, under a row lock
//! of the lease inside its own transaction, that the fence's token is still
//! the current one and the lease has not expired. A former runner that wakes
//! up (SIGCONT, a healed partition) after another took over cannot commit.
//!
//! An administrator may pin synchronization to one server (`mfasync servers
//! pin NAME`, the seed's choice of "the" synchronization server); with SQLite
//! the one server simply holds the lease.
//!
//! Here: the lease's rules and the one-shot commands' lease (`CliLease`);
//! the `serve` process's heartbeat loop is the binary's `cluster.rs`.

use std::time::Duration;

use mfasync_store::{Fence, Lease, ServerInfo, Store};

/// Now, as Unix epoch milliseconds.
pub fn now_ms() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(i64::MAX)
}

/// `d` in milliseconds.
pub fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The default server name: the host name.
pub fn default_name() -> String {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "mfasync".to_string())
}

/// Whether the local view says we may run synchronization: we held the lease
/// when we last asked and the lease, counted from BEFORE that request, has
/// not run out. Pure.
pub fn still_runner(held_since_ms: Option<i64>, lease_ms: i64, now_ms: i64) -> bool {
    held_since_ms.is_some_and(|t| now_ms < t.saturating_add(lease_ms))
}

/// The lease period of a one-shot CLI command (renewed every third of it
/// while the command runs).
pub const CLI_LEASE: Duration = Duration::from_secs(30);

/// The sync lease held by a one-shot CLI command (`mfasync sync`, `approvals
/// approve|reject`) for the duration of its cycle: taken only when no live
/// holder exists, renewed while the command runs, given up at its end. The
/// command's writes are fenced like a server's. A serve process takes the
/// lease afterwards with the token plus one.
pub struct CliLease {
    name: String,
    instance: String,
}

impl CliLease {
    /// Take the lease for `what` ("sync", "approve", "reject"), or the
    /// refusal (exit 1) naming the server that holds it.
    pub async fn take(store: &dyn Store, what: &str) -> Result<CliLease, String> {
        let host = default_name();
        let name = format!("cli:{host}:{}", std::process::id());
        let instance = uuid::Uuid::new_v4().simple().to_string();
        let now = now_ms();
        // An earlier command on this host that was killed (kill -9, Ctrl-C)
        // left its lease behind: give it up rather than wait for it to run
        // out. (Were it alive after all, its writes would be fenced.)
        if let Ok(l) = store.lease().await {
            if let (Some(h), Some(i)) = (&l.holder, &l.instance) {
                if l.expires_ms > now && cli_holder_gone(h, &host, process_alive) {
                    if let Ok(true) = store.lease_release(h, i).await {
                        tracing::info!(target: "mfasync::cluster", "gave up the sync lease of {h}: that command is gone");
                    }
                }
            }
        }
        let lease = store
            .lease_acquire(&name, &instance, now, ms(CLI_LEASE))
            .await
            .map_err(|e| format!("cannot take the sync lease: {e}"))?;
        if !lease.held_by(&name, &instance, now) {
            let servers = store.servers().await.unwrap_or_default();
            return Err(refusal(&lease, &servers, what, now));
        }
        store.set_fence(Some(Fence {
            holder: name.clone(),
            instance: instance.clone(),
            token: lease.token,
            period_ms: ms(CLI_LEASE),
        }));
        mark_interrupted(store).await;
        Ok(CliLease { name, instance })
    }

    /// Run `work` while renewing the lease every third of its period. The
    /// renewal is a task of its own: a full sync blocks its own task while it
    /// reads the directory (`block_in_place`), which must not stop the
    /// renewal (a read longer than the lease would otherwise lose it and be
    /// fenced at commit).
    pub async fn hold<T>(
        &self,
        store: &std::sync::Arc<dyn Store>,
        work: impl std::future::Future<Output = T>,
    ) -> T {
        let (name, instance, store) = (
            self.name.clone(),
            self.instance.clone(),
            std::sync::Arc::clone(store),
        );
        let renew = tokio::spawn(async move {
            loop {
                tokio::time::sleep(CLI_LEASE / 3).await;
                // A lost lease is caught by the fence at commit. While the
                // sync's own SQLite write transaction keeps this renewal out,
                // that transaction renews the lease at each write.
                match store
                    .lease_acquire(&name, &instance, now_ms(), ms(CLI_LEASE))
                    .await
                {
                    Ok(_) => {}
                    Err(e) if e.is_busy() => {
                        tracing::debug!(target: "mfasync::cluster", "sync lease renewed by the sync's own transaction ({e})");
                    }
                    Err(e) => {
                        tracing::warn!(target: "mfasync::cluster", "cannot renew the sync lease: {e}");
                    }
                }
            }
        });
        let r = work.await;
        renew.abort();
        let _ = renew.await;
        r
    }

    /// Give the lease up (a serve process takes it at its next heartbeat).
    pub async fn release(self, store: &dyn Store) {
        store.set_fence(None);
        if let Err(e) = store.lease_release(&self.name, &self.instance).await {
            tracing::warn!(target: "mfasync::cluster", "cannot give the sync lease up: {e}");
        }
    }
}

/// Whether `holder` names a CLI command on `host` (`cli:<host>:<pid>`)
/// whose process is gone. Pure (`alive` asks about a pid).
/// A new holder of the sync lease, before its first cycle: the history rows
/// an earlier holder left unfinished are interrupted runs.
pub async fn mark_interrupted(store: &dyn Store) {
    match store.runs_interrupted().await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(target: "mfasync::cluster",
            "{n} synchronization run(s) of an earlier process stopped before recording a result: marked interrupted in the history"
        ),
        Err(e) => {
            tracing::warn!(target: "mfasync::cluster", "cannot mark interrupted synchronization runs: {e}")
        }
    }
}

/// Whether somebody may be running a cycle now: the sync lease is held and
/// not expired, and its holder is not a command on this host whose process
/// is gone. (An unfinished history row is "running" then, else "interrupted".)
pub async fn runner_alive(store: &dyn Store) -> bool {
    let Ok(lease) = store.lease().await else {
        return true; // unknown: do not call a run interrupted
    };
    let host = default_name();
    match &lease.holder {
        Some(h) => lease.expires_ms > now_ms() && !cli_holder_gone(h, &host, process_alive),
        None => false,
    }
}

pub fn cli_holder_gone(holder: &str, host: &str, alive: impl Fn(u32) -> bool) -> bool {
    let Some((h, pid)) = holder
        .strip_prefix("cli:")
        .and_then(|rest| rest.rsplit_once(':'))
    else {
        return false;
    };
    match pid.parse::<u32>() {
        Ok(pid) => h == host && pid != std::process::id() && !alive(pid),
        Err(_) => false,
    }
}

/// Whether process `pid` runs on this host (not a zombie). Where /proc is
/// not available, every process is taken to be alive.
fn process_alive(pid: u32) -> bool {
    if !std::path::Path::new("/proc/self").exists() {
        return true;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) STATE ...": the state follows the last ')'
        Ok(stat) => stat
            .rsplit_once(')')
            .is_none_or(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Why a CLI command may not run now: who holds the lease (or the pin), and
/// where to run it instead. Pure.
pub fn refusal(lease: &Lease, servers: &[ServerInfo], what: &str, now_ms: i64) -> String {
    let instead = match what {
        "sync" => "use its portal (Synchronize Now) or POST /api/v1/sync there",
        "approve" => "use its portal (Approvals) or POST /api/v1/approvals/ID/approve there",
        _ => "use its portal (Approvals) or POST /api/v1/approvals/ID/reject there",
    };
    match (&lease.holder, &lease.pinned) {
        (Some(h), _) if lease.expires_ms > now_ms && h.starts_with("cli:") => format!(
            "another mfasync command ({h}) holds the sync lease of this database: try again when it ends"
        ),
        (Some(h), _) if lease.expires_ms > now_ms => {
            let at = servers
                .iter()
                .find(|s| &s.name == h)
                .map(|s| format!(" (listening on {})", s.address))
                .unwrap_or_default();
            format!("server {h}{at} runs synchronization on this database: {instead}")
        }
        (_, Some(p)) => format!(
            "synchronization is pinned to server {p}: start it and {instead}, or `mfasync servers unpin` first"
        ),
        _ => "the sync lease was taken by another process meanwhile: try again".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gone_cli_holder_on_this_host_is_recognised() {
        let dead = |_| false;
        let alive = |_| true;
        assert!(cli_holder_gone("cli:h1:42", "h1", dead));
        assert!(!cli_holder_gone("cli:h1:42", "h1", alive));
        assert!(!cli_holder_gone("cli:h2:42", "h1", dead), "another host");
        assert!(!cli_holder_gone("mfa1", "h1", dead), "a server");
        assert!(!cli_holder_gone("cli:h1:x", "h1", dead));
        assert!(cli_holder_gone("cli:a:b:42", "a:b", dead));
        assert!(process_alive(std::process::id()));
    }

    #[test]
    fn cli_refusal_names_the_holder_and_where_to_go() {
        let server = ServerInfo {
            name: "mfa1".into(),
            instance: "i".into(),
            address: "10.0.0.1:8080".into(),
            version: "0".into(),
            started_ms: 0,
            heartbeat_ms: 0,
            lease_ms: 30_000,
        };
        let lease = Lease {
            holder: Some("mfa1".into()),
            instance: Some("i".into()),
            token: 3,
            expires_ms: 2_000,
            pinned: None,
        };
        assert_eq!(
            refusal(&lease, &[server], "sync", 1_000),
            "server mfa1 (listening on 10.0.0.1:8080) runs synchronization on this database: use its portal (Synchronize Now) or POST /api/v1/sync there"
        );
        let cli = Lease {
            holder: Some("cli:h:7".into()),
            ..lease.clone()
        };
        assert!(
            refusal(&cli, &[], "approve", 1_000).starts_with("another mfasync command (cli:h:7)")
        );
        let pinned = Lease {
            holder: None,
            pinned: Some("mfa2".into()),
            ..lease
        };
        assert!(refusal(&pinned, &[], "reject", 1_000).starts_with(
            "synchronization is pinned to server mfa2: start it and use its portal (Approvals)"
        ));
    }

    #[test]
    fn runner_only_until_the_confirmed_lease_runs_out() {
        assert!(!still_runner(None, 30_000, 1_000));
        assert!(still_runner(Some(1_000), 30_000, 1_000));
        assert!(still_runner(Some(1_000), 30_000, 30_999));
        assert!(!still_runner(Some(1_000), 30_000, 31_000));
    }
}
