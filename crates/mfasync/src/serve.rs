//! `serve`: the synchronization service. Cycles run every `sync.interval`,
//! measured start to start (a cycle that overruns is followed at once by the
//! next); the configuration is read from the store before every cycle, so a
//! `config apply` takes effect without a restart; `sync.enabled = false`
//! stops the cycles (the service keeps answering and re-reads the
//! configuration every interval), and so does a configuration without sync
//! items ("not configured: add a sync item", a state and not a failure). A failing cycle (directory down, ...) is
//! logged, recorded in the history with its error by `sync::run`, changes
//! nothing, and is retried at the next interval.
//!
//! The listen address answers `GET /healthz` with 200 "ok" (the portal, REST
//! API and /metrics come with issue 6).

use anyhow::{Context, Result};
use mfasync_engine::sync;
use mfasync_store::Store;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// When the next cycle starts: `interval` after the last start, or now when
/// that moment has passed already (the last cycle overran). Pure.
pub fn next_start(last_start: Instant, interval: Duration, now: Instant) -> Instant {
    let due = last_start.checked_add(interval).unwrap_or(now);
    if due <= now {
        now
    } else {
        due
    }
}

/// Interval used when no (valid) configuration is stored yet.
const NO_CONFIG_RETRY: Duration = Duration::from_secs(60);

pub async fn run(
    store: Box<dyn Store>,
    listen: &str,
    secure_cookies: bool,
    node: mfasync_engine::node::Options,
    limits: crate::web::AuthLimits,
    http: crate::http::Options,
) -> Result<()> {
    // held connections must not take the descriptors the database and the
    // directory need (issue 18)
    let descriptors = crate::http::raise_descriptor_limit();
    let max_connections = http.connection_cap(descriptors);
    let store: Arc<dyn Store> = Arc::from(store);
    // seals passwords typed in the portal or stored through it and the API
    let secret_key = mfasync_engine::secrets::key().map_err(anyhow::Error::msg)?;
    // password checks look their MFA user up on the calling thread (SQLite)
    store.read_inline();
    let metrics = Arc::new(mfasync_web::Metrics::new());
    let sync_lock = Arc::new(tokio::sync::Mutex::new(()));
    let backend = Arc::new(crate::web::ServiceBackend {
        cluster: Default::default(),
        store: store.clone(),
        sync_lock: sync_lock.clone(),
        auth_connections: Arc::default(),
        config_cache: Default::default(),
        secret_key: secret_key.clone(),
    });
    let mut web = mfasync_web::WebOptions {
        secure_cookies,
        secret_key: secret_key.clone(),
        trusted_proxies: limits.trusted_proxies,
        auth_client_max_failures: limits.client_max_failures,
        ..mfasync_web::WebOptions::default()
    };
    // one count of wrong passwords for the API and the RADIUS server
    let api_limits = Arc::new(mfasync_web::limits::Limits::for_api(&web));
    web.api_limits = Some(api_limits.clone());
    // the RADIUS server, when the configuration has [radius] (read once: a change needs a restart)
    let radius = match crate::active_config(store.as_ref())
        .await
        .ok()
        .and_then(|c| c.radius.clone())
    {
        Some(settings) => {
            let server = crate::radius::bind(
                &settings,
                backend.clone(),
                store.clone(),
                metrics.clone(),
                api_limits.clone(),
                secret_key.clone(),
            )
            .await?;
            let at = server
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|| settings.listen.clone());
            crate::logging::notice(format_args!(
                "RADIUS on udp://{at} for {} client(s)",
                settings.clients.len()
            ));
            Some(tokio::spawn(server.serve()))
        }
        None => None,
    };
    let app = mfasync_web::router(backend.clone(), store.clone(), metrics.clone(), web);
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| listen.to_string());
    tracing::info!(
        listen = %local,
        max_connections,
        open_files = descriptors,
        "serving the portal, /api/v1, /metrics, /healthz"
    );
    crate::logging::notice(format_args!("serving on http://{local}"));
    // Register, heartbeat, and take the sync lease when it is free (issue 8).
    let cluster = Arc::new(mfasync_engine::node::Cluster::new(
        store.clone(),
        &node.name,
        &local,
        node.lease,
    ));
    let _ = backend.cluster.set(cluster.clone());
    cluster
        .join()
        .await
        .with_context(|| format!("server {}: cannot join", node.name))?;
    let role = format!(
        "server {} {}",
        node.name,
        if cluster.is_runner() {
            "runs synchronization"
        } else {
            "waits: another server runs synchronization"
        }
    );
    crate::logging::notice(&role);
    let maintain = tokio::spawn({
        let cluster = cluster.clone();
        async move { cluster.maintain().await }
    });
    // welcome/update emails, sent by the server running synchronization
    let emails_due = Arc::new(tokio::sync::Notify::new());
    let sender = tokio::spawn(outbox_sender(
        store.clone(),
        cluster.clone(),
        emails_due.clone(),
    ));
    let http = tokio::spawn(crate::http::serve(listener, app, http, max_connections));
    // (systemd: the unit is started once the port answers)
    crate::systemd::ready(&format!("serving on http://{local}; {role}"));
    let watchdog = crate::systemd::watchdog();
    let result = tokio::select! {
        r = cycles(store.as_ref(), &metrics, &sync_lock, &cluster, &emails_due) => r,
        _ = shutdown_signal() => {
            crate::systemd::stopping();
            crate::logging::notice("stopping");
            Ok(())
        }
    };
    if let Some(w) = watchdog {
        w.abort();
    }
    http.abort();
    if let Some(r) = radius {
        r.abort();
    }
    sender.abort();
    maintain.abort();
    cluster.leave().await;
    result
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn cycles(
    store: &dyn Store,
    metrics: &mfasync_web::Metrics,
    sync_lock: &tokio::sync::Mutex<()>,
    cluster: &mfasync_engine::node::Cluster,
    emails_due: &tokio::sync::Notify,
) -> Result<()> {
    let mut role = cluster.subscribe();
    let mut requests = cluster.requests();
    let mut last_state = mfasync_web::SyncState::Active;
    loop {
        // Only the holder of the sync lease runs cycles; a server that
        // becomes the holder starts one at once (its predecessor may have
        // died mid-cycle).
        if !*role.borrow_and_update() {
            tracing::info!("another server runs synchronization: waiting");
            while !*role.borrow_and_update() {
                if role.changed().await.is_err() {
                    return Ok(());
                }
            }
        }
        let started = Instant::now();
        let interval = match crate::active_config(store).await {
            Err(f) => {
                let msg = match f {
                    crate::Failure::Refused(m) => m,
                    crate::Failure::Invalid(v) => v.join("; "),
                };
                crate::logging::warning(format_args!("no cycle: {msg}"));
                NO_CONFIG_RETRY
            }
            Ok(cfg) => {
                let interval = cfg.sync.interval_duration();
                let state = mfasync_web::SyncState::of(Some(&cfg));
                if state != last_state {
                    // a state, not a failure: said once when it changes
                    tracing::info!("synchronization {}", state.describe());
                    last_state = state;
                }
                if state != mfasync_web::SyncState::Active {
                    // nothing to synchronize (no sync item) or sync.enabled = false:
                    // no cycle, nothing in the history; a Synchronize Now handed
                    // over meanwhile is dropped (kept, it would wake this loop at once);
                    // audit retention is applied here (a cycle applies it after itself)
                    mfasync_engine::retention::after_cycle(store, &cfg).await;
                    if cluster.take_request().is_some() {
                        tracing::warn!(
                            "a Synchronize Now handed over is not run: synchronization {}",
                            state.describe()
                        );
                    }
                } else {
                    let _one_at_a_time = sync_lock.lock().await;
                    // a Synchronize Now handed over by another server
                    let full = cluster.take_request().is_some_and(|r| r.full);
                    let result = sync::run(
                        store,
                        &cfg,
                        sync::Options {
                            full,
                            plan_only: false,
                        },
                    )
                    .await;
                    let secs = started.elapsed().as_secs_f64();
                    // the emails this cycle queued go out now
                    emails_due.notify_one();
                    match result {
                        Ok(o) => {
                            metrics.record_sync(
                                o.mode.as_str(),
                                secs,
                                o.report(false).ok().as_ref(),
                            );
                            let c = o.plan.counts();
                            tracing::info!(
                                mode = o.mode.as_str(),
                                created = c.created,
                                updated = c.updated,
                                enabled = c.enabled,
                                disabled = c.disabled,
                                removed = c.removed,
                                unchanged = c.unchanged,
                                entries_read = o.entries_read,
                                ms = started.elapsed().as_millis() as u64,
                                "sync cycle done"
                            );
                            if let Some(n) = &o.note {
                                tracing::info!("{n}");
                            }
                        }
                        Err(e) => {
                            metrics.record_sync("auto", secs, None);
                            crate::logging::error(format_args!(
                                "sync cycle failed, nothing changed: {e:#}"
                            ));
                        }
                    }
                }
                interval
            }
        };
        let next = next_start(started, interval, Instant::now());
        tokio::select! {
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(next)) => {}
            _ = role.wait_for(|runner| !*runner) => {}
            _ = requests.wait_for(|r| r.is_some()) => {}
        }
    }
}

/// How often the service looks for due outbox rows (also right after each cycle).
const OUTBOX_POLL: std::time::Duration = std::time::Duration::from_secs(10);

/// `serve`: deliver due rows while this server runs synchronization,
/// every [`OUTBOX_POLL`] and whenever `wake` is notified (after a cycle).
async fn outbox_sender(
    store: std::sync::Arc<dyn Store>,
    cluster: std::sync::Arc<mfasync_engine::node::Cluster>,
    wake: std::sync::Arc<tokio::sync::Notify>,
) {
    loop {
        if cluster.is_runner() {
            if let Ok(cfg) = crate::active_config(store.as_ref()).await {
                // bounded, so a change of role is seen again soon
                let until = Instant::now() + mfasync_engine::outbox::ONE_SHOT_BUDGET;
                if let Err(e) =
                    mfasync_engine::outbox::deliver_due(store.as_ref(), &cfg, until).await
                {
                    tracing::warn!(target: "mfasync::outbox", "outbox: {e}");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(OUTBOX_POLL) => {}
            _ = wake.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_start_is_start_to_start() {
        let t0 = Instant::now();
        let i = Duration::from_secs(300);
        // a short cycle: wait for the rest of the interval
        assert_eq!(next_start(t0, i, t0 + Duration::from_secs(20)), t0 + i);
        // exactly on time
        assert_eq!(next_start(t0, i, t0 + i), t0 + i);
        // an overrunning cycle: the next one starts at once
        let late = t0 + Duration::from_secs(420);
        assert_eq!(next_start(t0, i, late), late);
        // the interval is measured from the start, not from the end
        let end = t0 + Duration::from_secs(100);
        assert_eq!(next_start(t0, i, end) - end, Duration::from_secs(200));
    }
}
