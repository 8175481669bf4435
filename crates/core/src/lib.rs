//! Pure core of mfasync: configuration types and validation, attribute mapping,
//! phone normalisation, membership resolution and the sync plan.
//!
//! Architecture invariant: nothing in this crate does IO, spawns tasks or reads
//! the clock. Everything is deterministic and table-tested.

pub mod auth;
pub mod config;
pub mod email;
pub mod entry;
pub mod escape;
pub mod filter;
pub mod hashset;
pub mod lockout;
pub mod mapping;
pub mod phone;
pub mod plan;
pub mod presence;
pub mod ratelimit;
pub mod report;
pub mod safeguard;
pub mod sid;
pub mod user;

pub use config::Config;
pub use entry::Entry;
pub use user::{MfaUser, Source};
