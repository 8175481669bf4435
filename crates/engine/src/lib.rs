//! `mfasync-engine`: the synchronization engine of mfasync. A cycle reads the
//! directory, decides the plan (pure, in `mfasync-core`) and applies it in
//! one store transaction with its starting point (`sync::run`); around it,
//! the approval hold, user emails and their outbox, the sync lease of
//! one-shot commands and password checks by LDAP bind.
//!
//! It never prints: functions return typed results, and status lines,
//! progress and the first sync's writing phase go to the process's
//! [`notify::Observer`].

pub mod approvals;
pub mod auth;
pub mod build_id;
pub mod cluster;
mod commit;
mod connect;
pub mod decisions;
pub mod domains;
pub mod emails;
pub mod error;
pub mod explain;
pub mod export;
mod full;
pub mod incremental;
pub mod items;
pub mod lookup;
pub mod mail;
pub mod marks;
mod members;
pub mod node;
pub mod notify;
pub mod otp;
pub mod outbox;
pub mod progress;
mod protected;
mod read;
pub mod retention;
pub mod secrets;
pub mod single;
pub mod spill;
pub mod summary;
pub mod sync;

pub use error::{EngineError, Result, ResultExt};
