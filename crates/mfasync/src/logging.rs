//! What the binary writes to stderr: tracing events (filtered by
//! `MFASYNC_LOG`, default `warn`) and its own status lines (always shown),
//! in one of two formats chosen once per process (`--log-format`):
//! - `text`: human lines; colours only when stderr is a terminal (never in a
//!   file or the journal) and `NO_COLOR` is not set;
//! - `json`: one JSON object per line for log shippers, status lines
//!   included (as events of the target `mfasync::notice`).
//!
//! Status lines in text pass through `terminal::safe` (they may quote
//! directory values); JSON escapes control characters itself.

use std::fmt::Display;
use std::io::IsTerminal;
use std::sync::OnceLock;
use tracing_subscriber::EnvFilter;

/// `--log-format` / `MFASYNC_LOG_FORMAT`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, target, fields.message)
    Json,
}

static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// The target of status lines in JSON: enabled whatever `MFASYNC_LOG` says,
/// as the text lines are.
const NOTICE: &str = "mfasync::notice";

/// Install the tracing subscriber for this process (once, before any event).
pub fn init(format: LogFormat) {
    let _ = FORMAT.set(format);
    let filter = EnvFilter::try_from_env("MFASYNC_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt().with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_env_filter(filter).with_ansi(colours()).init(),
        LogFormat::Json => {
            let filter = match format!("{NOTICE}=info").parse() {
                Ok(directive) => filter.add_directive(directive),
                Err(_) => filter,
            };
            builder.json().with_env_filter(filter).init()
        }
    }
}

/// Colour codes only for a person at a terminal (no-color.org).
fn colours() -> bool {
    std::io::stderr().is_terminal()
        && !matches!(std::env::var_os("NO_COLOR"), Some(v) if !v.is_empty())
}

fn json() -> bool {
    FORMAT.get() == Some(&LogFormat::Json)
}

/// A status line ("serving on …"): `mfasync: MSG`, or an INFO event in JSON.
pub fn notice(msg: impl Display) {
    if json() {
        tracing::info!(target: NOTICE, "{msg}");
    } else {
        eprintln!("mfasync: {}", crate::terminal::safe(&msg.to_string()));
    }
}

/// `mfasync: warning: MSG`, or a WARN event in JSON.
pub fn warning(msg: impl Display) {
    if json() {
        tracing::warn!(target: NOTICE, "{msg}");
    } else {
        eprintln!(
            "mfasync: warning: {}",
            crate::terminal::safe(&msg.to_string())
        );
    }
}

/// A failure's reason (`mfasync: MSG`), or an ERROR event in JSON.
pub fn error(msg: impl Display) {
    if json() {
        tracing::error!(target: NOTICE, "{msg}");
    } else {
        eprintln!("mfasync: {}", crate::terminal::safe(&msg.to_string()));
    }
}

/// What the engine tells this process (`mfasync_engine::notify`): status
/// lines as above, the full read's counter on a terminal (`progress.rs`),
/// freed memory kept while a first sync writes as it reads (`alloc.rs`).
pub struct Observer;

impl mfasync_engine::notify::Observer for Observer {
    fn notice(&self, msg: &str) {
        notice(msg);
    }

    fn warning(&self, msg: &str) {
        warning(msg);
    }

    fn error(&self, msg: &str) {
        error(msg);
    }

    fn counter(&self, what: &'static str) -> Option<Box<dyn mfasync_engine::notify::Counter>> {
        crate::progress::counter(what).map(|pb| {
            Box::new(crate::progress::Bar(pb)) as Box<dyn mfasync_engine::notify::Counter>
        })
    }

    fn writing_while_reading(&self) -> Option<Box<dyn Send>> {
        Some(Box::new(crate::alloc::KeepFreedMemory::start()))
    }
}
