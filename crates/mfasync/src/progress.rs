//! Progress on the terminal for long synchronizations (indicatif). Shown only
//! when stderr is a terminal, so scripts, `--json` consumers and logs never
//! see it.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;

/// A counting spinner ("reading directory users: 41230 (12034/s)"), or None
/// when stderr is not a terminal.
pub fn counter(what: &'static str) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(5));
    let style = ProgressStyle::with_template("{spinner} {msg}: {human_pos} ({per_sec}, {elapsed})")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    pb.set_style(style);
    pb.set_message(what);
    pb.enable_steady_tick(Duration::from_millis(200));
    Some(pb)
}

/// Live progress of the cycle running in this process, for the web portal's
/// Synchronize Now page (`Backend::sync_progress`): directory entries read so
/// far by the full read, and the phase. One cycle runs at a time (the sync
/// lock), so one set of counters serves every cycle; a cycle resets them when
/// it starts.
pub mod live {
    use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

    static ENTRIES_READ: AtomicU64 = AtomicU64::new(0);
    static PHASE: AtomicU8 = AtomicU8::new(0);

    const PHASES: &[&str] = &[
        "starting",
        "reading directory users",
        "deciding and applying changes",
    ];

    /// A cycle starts: nothing read yet.
    pub fn reset() {
        ENTRIES_READ.store(0, Ordering::Relaxed);
        PHASE.store(0, Ordering::Relaxed);
    }

    /// The full read starts.
    pub fn reading() {
        ENTRIES_READ.store(0, Ordering::Relaxed);
        PHASE.store(1, Ordering::Relaxed);
    }

    /// One directory entry read.
    pub fn entry_read() {
        ENTRIES_READ.fetch_add(1, Ordering::Relaxed);
    }

    /// The read is over: the plan is decided and applied.
    pub fn applying() {
        PHASE.store(2, Ordering::Relaxed);
    }

    /// (entries read so far, phase).
    pub fn snapshot() -> (u64, &'static str) {
        let p = PHASE.load(Ordering::Relaxed) as usize;
        (
            ENTRIES_READ.load(Ordering::Relaxed),
            PHASES.get(p).copied().unwrap_or("starting"),
        )
    }
}
