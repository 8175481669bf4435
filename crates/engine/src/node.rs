//! This `serve` process in the cluster: registry, heartbeat and the sync
//! lease taken or renewed every `lease / 3` (docs/cluster.md; the lease
//! rules and the one-shot commands' `CliLease` are in `cluster`).

use std::sync::Arc;
use std::time::Duration;

use mfasync_core::report::{HandOver, Queued};
use mfasync_store::{rfc3339_ms, Fence, Lease, ServerInfo, Store, SyncRequest};
use tokio::sync::watch;

use crate::cluster::{mark_interrupted, ms, now_ms, still_runner};
use crate::{Result, ResultExt};

/// How `serve` joins the cluster.
pub struct Options {
    /// Unique per server (`serve --name`, default the host name).
    pub name: String,
    /// The lease period (`serve --lease-seconds`).
    pub lease: Duration,
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
            .find(|s| s.name == self.me.name && s.alive(now))
        {
            let msg = format!(
                "a server named {} heartbeated at {} (listening on {}): if it still runs, give this one another --name (a server restarted under its name replaces the earlier process)",
                s.name,
                rfc3339_ms(s.heartbeat_ms),
                s.address
            );
            crate::notify::warning(msg);
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
            period_ms: self.me.lease_ms,
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
                    crate::notify::notice(format_args!(
                        "server {} now runs synchronization (fencing token {token})",
                        self.me.name
                    ));
                } else {
                    crate::notify::warning(format_args!(
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
