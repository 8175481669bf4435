//! Live progress of the cycle running in this process, for the web portal's
//! Synchronize Now page (`Backend::sync_progress`): directory entries read so
//! far by the full read, and the phase. One cycle runs at a time (the sync
//! lock), so one set of counters serves every cycle; a cycle resets them when
//! it starts.

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
