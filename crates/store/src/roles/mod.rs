//! The store's role traits, one per kind of data; [`crate::Store`] is all of them.
//! Each file holds one trait and the macro that implements it for both backends
//! (invoked by `common::impl_store!`, which defines the shared helpers).

pub(crate) mod admins;
pub(crate) mod approvals;
pub(crate) mod cluster;
pub(crate) mod configs;
pub(crate) mod history;
pub(crate) mod otp;
pub(crate) mod outbox;
pub(crate) mod users;

pub use admins::AdminStore;
pub use approvals::ApprovalStore;
pub use cluster::ClusterStore;
pub use configs::ConfigStore;
pub use history::HistoryStore;
pub use otp::{OtpSecret, OtpStore};
pub use outbox::OutboxStore;
pub use users::UserStore;
