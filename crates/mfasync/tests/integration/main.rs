//! The end-to-end tests that need slapd, a fake AD or no directory, in one test executable
//! (one link instead of sixteen). Each module is one area; `cargo test -p mfasync --test
//! integration openldap::` runs one. Tests with a Samba AD DC keep their own executables: each holds
//! its DC for the whole process, and only one DC runs at a time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;
#[path = "../support/sink.rs"]
mod sink;

mod approvals;
mod auth_equal;
mod browser_e2e;
mod cluster;
mod emails;
mod explain;
mod fake_ad;
mod hostile;
mod incremental_openldap;
mod lockout;
mod openldap;
mod operator;
mod radius;
mod recycle_bin;
mod secrets;
mod serve;
mod service;
mod slow_clients;
mod thresholds;
