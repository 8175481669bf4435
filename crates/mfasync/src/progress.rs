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

/// The engine's counter of the full read ([`counter`] as a
/// `mfasync_engine::notify::Counter`).
pub struct Bar(pub ProgressBar);

impl mfasync_engine::notify::Counter for Bar {
    fn inc(&self) {
        self.0.inc(1);
    }

    fn finish(&self) {
        self.0.finish_and_clear();
    }
}
