//! What the engine tells whoever runs it, without printing: status lines
//! (notices, warnings, errors), the full read's entry counter and the
//! first sync's "writing while reading" phase. The binary installs an
//! [`Observer`] once (its `logging.rs` formats the lines, `progress.rs`
//! draws the counter, `alloc.rs` keeps freed memory); without one, status
//! lines are tracing events of the target `mfasync::notice` and nothing else
//! happens.

use std::fmt::Display;
use std::sync::OnceLock;

/// The engine's listener, installed by the process ([`install`]).
pub trait Observer: Send + Sync {
    /// A status line ("emails: 3 sent").
    fn notice(&self, msg: &str);
    /// A warning the administrator should read.
    fn warning(&self, msg: &str);
    /// A failure that does not stop what is running.
    fn error(&self, msg: &str);
    /// A counter of what the full read receives (`what`: "reading directory
    /// users"), or None when nobody watches.
    fn counter(&self, _what: &'static str) -> Option<Box<dyn Counter>> {
        None
    }
    /// Held while a first sync writes as it reads (the allocator may keep
    /// freed memory meanwhile); dropped when the writing ends.
    fn writing_while_reading(&self) -> Option<Box<dyn Send>> {
        None
    }
}

/// A progress counter of the full read.
pub trait Counter: Send + Sync {
    /// One more.
    fn inc(&self);
    /// The read is over: the counter goes away.
    fn finish(&self);
}

static OBSERVER: OnceLock<Box<dyn Observer>> = OnceLock::new();

/// Install the observer of this process (the first one stays).
pub fn install(o: Box<dyn Observer>) {
    let _ = OBSERVER.set(o);
}

/// A status line.
pub fn notice(msg: impl Display) {
    match OBSERVER.get() {
        Some(o) => o.notice(&msg.to_string()),
        None => tracing::info!(target: "mfasync::notice", "{msg}"),
    }
}

/// A warning.
pub fn warning(msg: impl Display) {
    match OBSERVER.get() {
        Some(o) => o.warning(&msg.to_string()),
        None => tracing::warn!(target: "mfasync::notice", "{msg}"),
    }
}

/// A failure's reason.
pub fn error(msg: impl Display) {
    match OBSERVER.get() {
        Some(o) => o.error(&msg.to_string()),
        None => tracing::error!(target: "mfasync::notice", "{msg}"),
    }
}

/// The full read's counter, if somebody watches.
pub(crate) fn counter(what: &'static str) -> Option<Box<dyn Counter>> {
    OBSERVER.get().and_then(|o| o.counter(what))
}

/// Held while a first sync writes as it reads.
pub(crate) fn writing_while_reading() -> Option<Box<dyn Send>> {
    OBSERVER.get().and_then(|o| o.writing_while_reading())
}
