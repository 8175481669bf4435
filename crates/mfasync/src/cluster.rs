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

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use mfasync_core::report::{HandOver, Queued};
use mfasync_store::{Fence, Lease, ServerInfo, Store, SyncRequest};
use mfasync_web::servers::{alive, rfc3339, servers_json};
use tokio::sync::watch;

/// How `serve` joins the cluster.
pub struct Options {
    /// Unique per server (`serve --name`, default the host name).
    pub name: String,
    /// The lease period (`serve --lease-seconds`).
    pub lease: Duration,
}

/// Now, as Unix epoch milliseconds.
pub fn now_ms() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(i64::MAX)
}

fn ms(d: Duration) -> i64 {
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

/// This process in the cluster.
pub struct Cluster {
    store: Arc<dyn Store>,
    me: ServerInfo,
    lease: Duration,
    /// Whether we may run synchronization now.
    role: watch::Sender<bool>,
    /// A Synchronize Now handed over by another server, taken from the
    /// store by the runner at its heartbeat, waiting for `serve`'s cycles.
    requests: watch::Sender<Option<SyncRequest>>,
    state: std::sync::Mutex<State>,
}

#[derive(Default)]
struct State {
    /// When (our clock, before asking) the lease was last confirmed ours.
    held_since_ms: Option<i64>,
    token: i64,
}

impl Cluster {
    pub fn new(store: Arc<dyn Store>, name: &str, address: &str, lease: Duration) -> Cluster {
        let now = now_ms();
        let me = ServerInfo {
            name: name.to_string(),
            instance: uuid::Uuid::new_v4().simple().to_string(),
            address: address.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_ms: now,
            heartbeat_ms: now,
            lease_ms: ms(lease),
        };
        let (role, _) = watch::channel(false);
        let (requests, _) = watch::channel(None);
        Cluster {
            store,
            me,
            lease,
            role,
            requests,
            state: std::sync::Mutex::new(State::default()),
        }
    }

    /// Whether this server runs synchronization now.
    pub fn is_runner(&self) -> bool {
        *self.role.borrow()
    }

    /// Changes of [`Cluster::is_runner`].
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.role.subscribe()
    }

    /// Changes of the handed-over request waiting for a cycle.
    pub fn requests(&self) -> watch::Receiver<Option<SyncRequest>> {
        self.requests.subscribe()
    }

    /// Why this server may not approve now (it does not run synchronization:
    /// the approval's full cycle would be refused at commit), naming the
    /// server that does. None: it runs synchronization.
    pub async fn not_runner(&self) -> Option<String> {
        if self.is_runner() {
            return None;
        }
        let now = now_ms();
        let runner = match self.store.lease().await {
            Ok(l) => l.holder.filter(|_| l.expires_ms > now),
            Err(_) => None,
        };
        Some(match runner {
            Some(r) => format!(
                "server {} does not run synchronization: approve on server {r}, which does",
                self.me.name
            ),
            None => format!(
                "server {} does not run synchronization and no server does right now: approve on the server that runs it (the Servers page shows which)",
                self.me.name
            ),
        })
    }

    /// The handed-over request waiting for a cycle, taken.
    pub fn take_request(&self) -> Option<SyncRequest> {
        self.requests.send_replace(None)
    }

    /// Synchronize Now on a server that does not run synchronization: queue
    /// the request in the database for the runner (it starts the cycle at
    /// its next heartbeat, within `lease / 3`). The answer says who runs it.
    pub async fn hand_over(&self, full: bool, by: &str) -> Result<HandOver, String> {
        let lease = self
            .store
            .sync_request(full, by, &self.me.name, now_ms())
            .await
            .map_err(|e| format!("cannot hand the synchronization over: {e}"))?;
        let runner = lease.holder.filter(|_| lease.expires_ms > now_ms());
        tracing::info!(
            "synchronization requested on server {}: handed to {}",
            self.me.name,
            runner.as_deref().unwrap_or("the next runner")
        );
        Ok(HandOver {
            status: Queued::Queued,
            full,
            requested_on: self.me.name.clone(),
            handed_to: runner,
        })
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        match self.state.lock() {
            Ok(mut g) => f(&mut g),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// Join at start-up: warn when another live process already uses our
    /// name (two servers with one name would take the lease from each other),
    /// then the first heartbeat and lease request.
    pub async fn join(&self) -> Result<()> {
        let now = now_ms();
        let servers = self
            .store
            .servers()
            .await
            .context("cannot read the servers")?;
        if let Some(s) = servers
            .iter()
            .find(|s| s.name == self.me.name && alive(s, now))
        {
            let msg = format!(
                "a server named {} heartbeated at {} (listening on {}): if it still runs, give this one another --name (a server restarted under its name replaces the earlier process)",
                s.name,
                rfc3339(s.heartbeat_ms),
                s.address
            );
            crate::logging::warning(msg);
        }
        self.tick().await
    }

    /// One heartbeat and lease request. Errors (database unreachable) leave
    /// the role as the local view says: runner only until our last confirmed
    /// lease runs out.
    pub async fn tick(&self) -> Result<()> {
        let asked = now_ms();
        let result = self.request(asked).await;
        let now = now_ms();
        let runner = match &result {
            Ok(lease) => {
                let held = lease.held_by(&self.me.name, &self.me.instance, asked);
                let (runner, new_tenure) = self.with_state(|s| {
                    s.held_since_ms = held.then_some(asked);
                    let new_tenure = held && s.token != lease.token;
                    if held {
                        s.token = lease.token;
                    }
                    (
                        still_runner(s.held_since_ms, self.me.lease_ms, now),
                        new_tenure,
                    )
                });
                if new_tenure {
                    mark_interrupted(self.store.as_ref()).await;
                }
                runner
            }
            Err(_) => self.with_state(|s| still_runner(s.held_since_ms, self.me.lease_ms, now)),
        };
        // Our writes always carry our fence: as a non-runner (token of our
        // last tenure, or 0) they are refused by the store.
        let token = self.with_state(|s| s.token);
        self.store.set_fence(Some(Fence {
            holder: self.me.name.clone(),
            instance: self.me.instance.clone(),
            token,
        }));
        self.role.send_if_modified(|r| {
            if *r == runner {
                return false;
            }
            *r = runner;
            true
        });
        if runner && result.is_ok() {
            match self.store.sync_request_take().await {
                Ok(Some(req)) => {
                    tracing::info!(
                        "synchronization requested by {} on server {} (full: {})",
                        req.by,
                        req.on,
                        req.full
                    );
                    self.requests.send_modify(|slot| {
                        let full = req.full || slot.as_ref().is_some_and(|r| r.full);
                        *slot = Some(SyncRequest { full, ..req });
                    });
                }
                Ok(None) => {}
                Err(e) => tracing::warn!("cannot read the synchronization requests: {e}"),
            }
        }
        result.map(|_| ())
    }

    async fn request(&self, now: i64) -> Result<Lease> {
        let mut me = self.me.clone();
        me.heartbeat_ms = now;
        self.store
            .server_heartbeat(&me)
            .await
            .context("cannot record the heartbeat")?;
        self.store
            .lease_acquire(&me.name, &me.instance, now, me.lease_ms)
            .await
            .context("cannot take or renew the sync lease")
    }

    /// Heartbeat and lease requests every `lease / 3`, for ever.
    pub async fn maintain(&self) {
        let every = (self.lease / 3).max(Duration::from_millis(100));
        let mut was = self.is_runner();
        loop {
            tokio::time::sleep(every).await;
            if let Err(e) = self.tick().await {
                tracing::warn!("server {}: {e:#}", self.me.name);
            }
            let now = self.is_runner();
            if now != was {
                let token = self.with_state(|s| s.token);
                if now {
                    crate::logging::notice(format_args!(
                        "server {} now runs synchronization (fencing token {token})",
                        self.me.name
                    ));
                } else {
                    crate::logging::warning(format_args!(
                        "server {} no longer runs synchronization",
                        self.me.name
                    ));
                }
                was = now;
            }
        }
    }

    /// A clean shutdown: give the lease up so another server takes over at once.
    pub async fn leave(&self) {
        match self
            .store
            .lease_release(&self.me.name, &self.me.instance)
            .await
        {
            Ok(true) => tracing::info!("gave the sync lease up"),
            Ok(false) => {}
            Err(e) => tracing::warn!("cannot give the sync lease up: {e}"),
        }
    }
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
    /// Take the lease for `what` ("sync", "approve", "reject"), or refuse
    /// (exit 1) naming the server that holds it.
    pub async fn take(store: &dyn Store, what: &str) -> Result<CliLease, crate::Failure> {
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
                        tracing::info!("gave up the sync lease of {h}: that command is gone");
                    }
                }
            }
        }
        let lease = store
            .lease_acquire(&name, &instance, now, ms(CLI_LEASE))
            .await
            .map_err(|e| crate::Failure::Refused(format!("cannot take the sync lease: {e}")))?;
        if !lease.held_by(&name, &instance, now) {
            let servers = store.servers().await.unwrap_or_default();
            return Err(crate::Failure::Refused(refusal(
                &lease, &servers, what, now,
            )));
        }
        store.set_fence(Some(Fence {
            holder: name.clone(),
            instance: instance.clone(),
            token: lease.token,
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
                // A lost lease is caught by the fence at commit.
                if let Err(e) = store
                    .lease_acquire(&name, &instance, now_ms(), ms(CLI_LEASE))
                    .await
                {
                    tracing::warn!("cannot renew the sync lease: {e}");
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
            tracing::warn!("cannot give the sync lease up: {e}");
        }
    }
}

/// Whether `holder` names a CLI command on `host` (`cli:<host>:<pid>`)
/// whose process is gone. Pure (`alive` asks about a pid).
/// A new holder of the sync lease, before its first cycle: the history rows
/// an earlier holder left unfinished are interrupted runs.
async fn mark_interrupted(store: &dyn Store) {
    match store.runs_interrupted().await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            "{n} synchronization run(s) of an earlier process stopped before recording a result: marked interrupted in the history"
        ),
        Err(e) => tracing::warn!("cannot mark interrupted synchronization runs: {e}"),
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

/// `mfasync servers list|pin|unpin|forget`.
pub async fn cli(store: &dyn Store, cmd: crate::ServersCmd, json: bool) -> crate::CmdResult {
    use crate::{Failure, ServersCmd};
    let refused = |e: mfasync_store::StoreError| Failure::Refused(e.to_string());
    match cmd {
        ServersCmd::List => {
            let servers = store.servers().await.map_err(refused)?;
            let lease = store.lease().await.map_err(refused)?;
            // the document of `GET /api/v1/servers`
            let v = servers_json(&servers, &lease, now_ms());
            if json {
                return crate::print_json(&v);
            }
            if servers.is_empty() {
                crate::terminal::say!(
                    "no server has registered yet (servers register when `mfasync serve` starts)"
                );
            }
            for s in v["servers"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                let text = |k: &str| s[k].as_str().unwrap_or_default().to_string();
                let mut flags = Vec::new();
                if s["runner"] == true {
                    flags.push("runs synchronization");
                }
                if s["pinned"] == true {
                    flags.push("pinned");
                }
                if s["alive"] != true {
                    flags.push("DOWN");
                }
                crate::terminal::say!(
                    "{:20} {:24} {:10} last heartbeat {}{}",
                    text("name"),
                    text("address"),
                    text("version"),
                    text("last_heartbeat"),
                    if flags.is_empty() {
                        String::new()
                    } else {
                        format!("  [{}]", flags.join(", "))
                    }
                );
            }
            match &lease.pinned {
                Some(p) => println!("synchronization is pinned to server {p}"),
                None => println!("synchronization: automatic (any server may run it)"),
            }
            if v["lease"]["runner"].is_null() {
                crate::terminal::say!("no server runs synchronization right now");
            }
            Ok(())
        }
        ServersCmd::Pin { name } => {
            let servers = store.servers().await.map_err(refused)?;
            if let Some(s) = servers.iter().find(|s| s.name == name) {
                if !alive(s, now_ms()) {
                    crate::logging::warning(format_args!(
                        "server {name} is down (last heartbeat {}): no server synchronizes until it is back or `mfasync servers unpin`",
                        rfc3339(s.heartbeat_ms)
                    ));
                }
            }
            if !servers.iter().any(|s| s.name == name) {
                let known: Vec<&str> = servers.iter().map(|s| s.name.as_str()).collect();
                return Err(Failure::Refused(format!(
                    "no server named {name:?} has registered (known: {}); start it with `mfasync serve --name {name}` first",
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                )));
            }
            let lease = store
                .lease_pin(Some(&name), "admin")
                .await
                .map_err(refused)?;
            if json {
                crate::print_json(&servers_json(&[], &lease, now_ms())["lease"])
            } else {
                crate::terminal::say!("synchronization pinned to server {name}: only it runs synchronization (it takes over within one lease period)");
                Ok(())
            }
        }
        ServersCmd::Unpin => {
            let lease = store.lease_pin(None, "admin").await.map_err(refused)?;
            if json {
                crate::print_json(&servers_json(&[], &lease, now_ms())["lease"])
            } else {
                crate::terminal::say!("synchronization no longer pinned: any server may run it");
                Ok(())
            }
        }
        ServersCmd::Forget { name } => {
            let servers = store.servers().await.map_err(refused)?;
            if let Some(s) = servers.iter().find(|s| s.name == name) {
                if alive(s, now_ms()) {
                    return Err(Failure::Refused(format!(
                        "server {name} is alive (last heartbeat {}): stop it first",
                        rfc3339(s.heartbeat_ms)
                    )));
                }
            }
            let found = store.server_forget(&name).await.map_err(refused)?;
            if !found {
                return Err(Failure::Refused(format!("no server named {name:?}")));
            }
            if json {
                crate::print_json(&serde_json::json!({"ok": true, "forgotten": name}))
            } else {
                crate::terminal::say!("server {name} forgotten");
                Ok(())
            }
        }
    }
}

/// `mfasync db migrate --to postgres://...`: copy the SQLite database into
/// PostgreSQL, verified table by table (`mfasync_store::copy_to_postgres`).
pub async fn cli_migrate(from: &str, to: &str, overwrite: bool, json: bool) -> crate::CmdResult {
    let report = mfasync_store::copy_to_postgres(from, to, overwrite)
        .await
        .map_err(|e| crate::Failure::Refused(format!("db migrate: {e}")))?;
    if json {
        return crate::print_json(&report);
    }
    for t in &report.tables {
        crate::terminal::say!(
            "{:16} {:>8} rows  checksum {}  ok",
            t.table,
            t.rows,
            t.checksum
        );
    }
    crate::terminal::say!(
        "copied and verified {} tables (not copied: {}); point every server at the new database with --database",
        report.tables.len(),
        report.skipped.join(", ")
    );
    Ok(())
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
