//! The store's role traits, one per kind of data; [`crate::Store`] is all of them.
//! Each file holds one trait and the macro that implements it for both backends;
//! `impl_roles!` invokes them all, after `common::impl_store!` (which defines the
//! shared helpers they use) in the same module.

pub(crate) mod admins;
pub(crate) mod approvals;
pub(crate) mod bin;
pub(crate) mod cluster;
pub(crate) mod configs;
pub(crate) mod history;
pub(crate) mod otp;
pub(crate) mod outbox;
pub(crate) mod users;

pub use admins::AdminStore;
pub use approvals::ApprovalStore;
pub use bin::{BinStore, BinnedUser};
pub use cluster::ClusterStore;
pub use configs::ConfigStore;
pub use history::HistoryStore;
pub use otp::{OtpSecret, OtpStore};
pub use outbox::OutboxStore;
pub use users::UserStore;

/// Every role trait implemented for `$store` (after `common::impl_store!` in the same module).
macro_rules! impl_roles {
    ($store:ty, $db:ty) => {
        $crate::roles::users::impl_user_store!($store, $db);
        $crate::roles::configs::impl_config_store!($store, $db);
        $crate::roles::history::impl_history_store!($store, $db);
        $crate::roles::approvals::impl_approval_store!($store, $db);
        $crate::roles::admins::impl_admin_store!($store, $db);
        $crate::roles::cluster::impl_cluster_store!($store, $db);
        $crate::roles::outbox::impl_outbox_store!($store, $db);
        $crate::roles::otp::impl_otp_store!($store, $db);
        $crate::roles::bin::impl_bin_store!($store, $db);
    };
}
pub(crate) use impl_roles;
