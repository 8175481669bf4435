//! One function per command: each prints its own output (text, or JSON with
//! `--json`) and returns `Failure` for the exit code; the work is done by
//! `mfasync-engine` and the store.

pub mod admins;
pub mod approvals;
pub mod audit;
pub mod auth;
pub mod bin;
pub mod config;
pub mod directory;
pub mod explain;
pub mod history;
pub mod outbox;
pub mod rekey;
pub mod retention;
pub mod servers;
pub mod sync;
pub mod users;
