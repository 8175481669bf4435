//! The service manager's notification protocol for `serve` under systemd
//! (`Type=notify`): READY=1 once the service answers, WATCHDOG=1 pings
//! while its runtime runs, STOPPING=1 on the way out. Every call is a no-op
//! when `NOTIFY_SOCKET` is not set (not started by systemd); a failed
//! notification is logged, never fatal.

use sd_notify::NotifyState;
use std::time::Duration;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("cannot notify the service manager (NOTIFY_SOCKET): {e}");
    }
}

/// The listener is bound and the service answers: READY=1 with a status line.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Shutting down (systemd then waits for the exit, not for a timeout).
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// With `WatchdogSec=` set, a task pinging WATCHDOG=1 at a third of the
/// period from the service's runtime: a runtime that stops running its tasks
/// stops pinging, and systemd restarts the service. None without a watchdog.
pub fn watchdog() -> Option<tokio::task::JoinHandle<()>> {
    let period = sd_notify::watchdog_enabled()?;
    let every = (period / 3).max(Duration::from_millis(100));
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            send(&[NotifyState::Watchdog]);
        }
    }))
}
