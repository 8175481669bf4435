//! Reports that cross from the engine to the CLI, the REST API and the
//! portal: pure data, serialized as PRODUCT.md's JSON outputs.
//!
//! Fields are declared in alphabetical order: the JSON documents were built
//! as `serde_json` maps (sorted keys) before these types existed, and users'
//! scripts may compare them byte for byte.

use serde::{Deserialize, Serialize};

pub mod directory;
pub mod explain;

use crate::plan::Action;

/// Which kind of cycle ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum SyncMode {
    Full,
    Incremental,
}

impl SyncMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncMode::Full => "full",
            SyncMode::Incremental => "incremental",
        }
    }
}

impl std::fmt::Display for SyncMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One user of the recycle bin as `users deleted --json` and
/// `GET /api/v1/recycle-bin` list it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BinEntry {
    /// When a sync removed it (RFC 3339 UTC).
    pub deleted_at: String,
    pub directory_id: Option<String>,
    pub reason: String,
    pub username: String,
}

/// The approval a cycle created or found pending (`sync --json`'s
/// `pending_approval`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PendingApproval {
    pub disable: usize,
    pub id: String,
    pub remove: usize,
}

/// One pending approval as `approvals list --json` and
/// `GET /api/v1/approvals` list it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApprovalListed {
    /// RFC 3339 UTC.
    pub created_at: String,
    /// Usernames held to be disabled.
    pub disable: Vec<String>,
    pub id: String,
    /// Usernames held to be removed.
    pub remove: Vec<String>,
}

/// One planned change as `sync --plan --json` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlannedChange {
    pub action: Action,
    pub fields: Vec<String>,
    pub username: String,
}

/// A departure held for approval and the limit that held it (`sync --json`'s
/// `held`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeldDeparture {
    pub action: Action,
    /// The limit, as configured: `approval_threshold_removals = "2%" (20 of
    /// 1,000 users)`, `max_departures = 3 of item CN=VPN,...`.
    pub limit: String,
    pub username: String,
}

/// A departure dropped because its user is protected (`sync.protected`):
/// neither applied nor held (`sync --json`'s `protected`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProtectedDeparture {
    pub action: Action,
    /// Why: the protected name or group, or why no departure was safe.
    pub reason: String,
    pub username: String,
}

/// `sync --json`, `POST /api/v1/sync` and `GET /api/v1/plan`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SyncReport {
    /// Every planned change; only for a plan (`sync --plan`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<Vec<PlannedChange>>,
    pub created: usize,
    pub disabled: usize,
    pub enabled: usize,
    /// Directory entries received by an incremental cycle (absent for a full one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries_read: Option<usize>,
    /// Departures held for approval, each with its limit (absent: none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<HeldDeparture>,
    pub mode: SyncMode,
    /// Why a full cycle ran when an incremental one was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Always present: `null` when nothing is held.
    pub pending_approval: Option<PendingApproval>,
    /// Departures of protected users, dropped (absent: none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protected: Vec<ProtectedDeparture>,
    /// Why the read was incomplete, when it was: no user was disabled or
    /// removed by this cycle (absent when the read saw everything).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_incomplete: Option<String>,
    pub removed: usize,
    /// Users restored from the recycle bin by this cycle, counted among
    /// `created` too (absent when none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restored: usize,
    pub unchanged: usize,
    pub updated: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// A Synchronize Now queued for the server that runs synchronization
/// (docs/cluster.md) rather than run where it was asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HandOver {
    pub full: bool,
    /// The server running synchronization now (`null`: none right now).
    pub handed_to: Option<String>,
    pub requested_on: String,
    pub status: Queued,
}

/// The one status of a [`HandOver`]: `"queued"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Queued {
    Queued,
}

/// What Synchronize Now answers: the cycle's report, or where it was handed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum SyncNow {
    Ran(SyncReport),
    HandedOver(HandOver),
}

/// How far the running cycle is (the Synchronize Now progress page).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncProgress {
    pub entries_read: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
}

/// `POST /api/v1/approvals/{id}/approve`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Approved {
    pub disabled: usize,
    pub id: String,
    /// Held users the directory no longer asks to disable or remove.
    pub no_longer_needed: Vec<String>,
    pub removed: usize,
    /// The approval's state afterwards (`approved`; `pending` while some
    /// held users are undecided after a per-user decision).
    pub status: String,
    /// The held users still undecided after a per-user decision (absent
    /// when none is).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub still_pending: Vec<String>,
}

/// `POST /api/v1/approvals/{id}/reject`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Rejected {
    pub id: String,
    /// The approval's state afterwards (`rejected`; `pending` while some
    /// held users are undecided after a per-user decision; `approved` when
    /// the last user decided leaves some approved).
    pub status: String,
    /// As in [`Approved`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub still_pending: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_report_keeps_the_sorted_keys_and_absent_ones() {
        let r = SyncReport {
            changes: None,
            created: 1,
            disabled: 0,
            enabled: 0,
            entries_read: None,
            held: vec![],
            mode: SyncMode::Full,
            note: None,
            pending_approval: None,
            protected: vec![],
            read_incomplete: None,
            removed: 0,
            restored: 0,
            unchanged: 2,
            updated: 0,
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"created":1,"disabled":0,"enabled":0,"mode":"full","pending_approval":null,"removed":0,"unchanged":2,"updated":0}"#
        );
        let queued = SyncNow::HandedOver(HandOver {
            full: true,
            handed_to: None,
            requested_on: "b".into(),
            status: Queued::Queued,
        });
        let text = serde_json::to_string(&queued).unwrap();
        assert_eq!(
            text,
            r#"{"full":true,"handed_to":null,"requested_on":"b","status":"queued"}"#
        );
        assert_eq!(serde_json::from_str::<SyncNow>(&text).unwrap(), queued);
    }

    /// The bytes a report prints are those of the same document as a sorted
    /// `serde_json` map (how `sync --json` and the API built it before).
    fn prints_as_sorted_map(report: &impl Serialize) {
        let typed = serde_json::to_string_pretty(report).unwrap();
        let map = serde_json::to_value(report).unwrap();
        assert_eq!(typed, serde_json::to_string_pretty(&map).unwrap());
    }

    #[test]
    fn every_report_prints_its_keys_sorted() {
        prints_as_sorted_map(&SyncReport {
            changes: Some(vec![PlannedChange {
                action: Action::Update,
                fields: vec!["email".into()],
                username: "alice".into(),
            }]),
            created: 1,
            disabled: 2,
            enabled: 3,
            entries_read: Some(4),
            held: vec![HeldDeparture {
                action: Action::Disable,
                limit: "max_departures = 3 of item cn=vpn".into(),
                username: "dave".into(),
            }],
            mode: SyncMode::Incremental,
            note: Some("why".into()),
            pending_approval: Some(PendingApproval {
                disable: 5,
                id: "ap1".into(),
                remove: 6,
            }),
            protected: vec![ProtectedDeparture {
                action: Action::Remove,
                reason: "protected user erin (sync.protected)".into(),
                username: "erin".into(),
            }],
            read_incomplete: Some("cut short".into()),
            removed: 7,
            restored: 9,
            unchanged: 8,
            updated: 9,
        });
        prints_as_sorted_map(&HandOver {
            full: false,
            handed_to: Some("a".into()),
            requested_on: "b".into(),
            status: Queued::Queued,
        });
        prints_as_sorted_map(&Approved {
            disabled: 1,
            id: "ap1".into(),
            no_longer_needed: vec!["bob".into()],
            removed: 0,
            status: "approved".into(),
            still_pending: Vec::new(),
        });
        prints_as_sorted_map(&Approved {
            disabled: 1,
            id: "ap1".into(),
            no_longer_needed: Vec::new(),
            removed: 0,
            status: "pending".into(),
            still_pending: vec!["carol".into()],
        });
        prints_as_sorted_map(&ApprovalListed {
            created_at: "2026-12-07T04:00:00Z".into(),
            disable: vec!["bob".into()],
            id: "ap1".into(),
            remove: vec!["carol".into()],
        });
        prints_as_sorted_map(&Rejected {
            id: "ap1".into(),
            status: "rejected".into(),
            still_pending: Vec::new(),
        });
        prints_as_sorted_map(&Rejected {
            id: "ap1".into(),
            status: "pending".into(),
            still_pending: vec!["carol".into()],
        });
        prints_as_sorted_map(&SyncProgress {
            entries_read: 3,
            phase: Some("reading".into()),
        });
    }
}
