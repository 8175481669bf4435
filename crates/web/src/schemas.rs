//! Hand-described schemas of the JSON answers that are built as maps
//! (`json!`) rather than typed: these types only describe them for the
//! document and are never serialized. tests/web.rs checks real answers
//! carry the keys declared here.
#![allow(dead_code)]

use utoipa::ToSchema;

use mfasync_core::auth::Reason;
use mfasync_core::report::SyncReport;

/// Every error answer.
#[derive(ToSchema)]
pub(crate) struct Error {
    pub error: String,
}

/// `PUT /api/v1/config` applied.
#[derive(ToSchema)]
pub(crate) struct ConfigApplied {
    pub version: i64,
}

/// `PUT /api/v1/config` refused: every problem as "key.path: message".
#[derive(ToSchema)]
pub(crate) struct ConfigErrors {
    pub errors: Vec<String>,
}

/// `POST /api/v1/sync` answered 202: a job to poll (`wait=false`), or the
/// request queued for the server that runs synchronization (then `status`
/// is "queued" and `full`, `requested_on`, `handed_to` are set).
#[derive(ToSchema)]
pub(crate) struct SyncAccepted {
    pub job: Option<u64>,
    /// The job's URL, or "queued" when handed to another server.
    pub status: String,
    pub full: Option<bool>,
    /// This server's name.
    pub requested_on: Option<String>,
    /// The server that runs synchronization.
    pub handed_to: Option<String>,
}

/// A synchronization started with `wait=false` or from the portal.
#[derive(ToSchema)]
pub(crate) struct SyncJob {
    pub state: JobState,
    pub elapsed_seconds: u64,
    /// Directory entries read so far by the cycle's full read (after the
    /// cycle: all it read; 0 when the cycle did no full read).
    pub entries_read: u64,
    /// While running: starting, reading directory users, or deciding and
    /// applying changes.
    pub phase: Option<String>,
    /// While running: the store's running cycle.
    pub cycle: Option<String>,
    /// Done: the cycle's report.
    pub result: Option<SyncReport>,
    /// Failed: why.
    pub error: Option<String>,
}

/// Where a synchronization job stands.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub(crate) enum JobState {
    Running,
    Done,
    Failed,
}

/// One audit row of a user's history, newest first.
#[derive(ToSchema)]
pub(crate) struct UserHistoryEntry {
    pub at: String,
    /// create, update, enable, disable, remove, insert.
    pub action: String,
    pub actor: String,
    /// Fields changed by an update.
    pub fields: Vec<String>,
    pub detail: Option<String>,
}

/// One synchronization run of the history.
#[derive(ToSchema)]
pub(crate) struct SyncRun {
    pub id: i64,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub mode: String,
    pub created: i64,
    pub updated: i64,
    pub enabled: i64,
    pub disabled: i64,
    pub removed: i64,
    pub unchanged: i64,
    /// Directory entries read by an incremental cycle.
    pub entries_read: Option<i64>,
    pub error: Option<String>,
    /// Why the cycle was full (sync items, attribute mapping or filters
    /// changed, ...), sync items found again after a rename.
    pub note: Option<String>,
    pub status: RunStatus,
}

/// How a run ended; interrupted: its process stopped before recording a
/// result.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub(crate) enum RunStatus {
    Ok,
    Failed,
    Running,
    Interrupted,
}

/// `POST /api/v1/auth`'s body.
#[derive(ToSchema)]
pub(crate) struct AuthRequest {
    pub username: String,
    #[schema(format = Password)]
    pub password: String,
}

/// `POST /api/v1/auth`'s outcome; `reason` when refused.
#[derive(ToSchema)]
pub(crate) struct AuthResult {
    pub ok: bool,
    pub reason: Option<Reason>,
}

/// One email of the outbox (`mfasync outbox list --json`); bodies are not
/// listed.
#[derive(ToSchema)]
pub(crate) struct OutboxEmail {
    pub id: i64,
    pub kind: EmailKind,
    pub username: String,
    pub recipient: String,
    pub subject: String,
    pub status: EmailStatus,
    /// Delivery attempts started.
    pub attempts: i64,
    /// The last failed attempt's error.
    #[schema(required = true)]
    pub last_error: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Pending emails only.
    #[schema(required = true, format = DateTime)]
    pub next_attempt_at: Option<String>,
    #[schema(required = true, format = DateTime)]
    pub sent_at: Option<String>,
}

/// What an outbox email is about.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub(crate) enum EmailKind {
    Welcome,
    Update,
    /// A sync cycle's summary to `sync.summary` (username "(summary)").
    Summary,
}

/// Where an outbox email stands.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub(crate) enum EmailStatus {
    Pending,
    Sent,
    Failed,
}

/// The servers sharing the database and the sync lease.
#[derive(ToSchema)]
pub(crate) struct Servers {
    pub servers: Vec<Server>,
    pub lease: Lease,
}

/// One server of `GET /api/v1/servers`.
#[derive(ToSchema)]
pub(crate) struct Server {
    pub name: String,
    pub address: String,
    pub version: String,
    pub started_at: String,
    pub last_heartbeat: String,
    pub alive: bool,
    pub runner: bool,
    pub pinned: bool,
}

/// The sync lease of `GET /api/v1/servers`.
#[derive(ToSchema)]
pub(crate) struct Lease {
    pub runner: Option<String>,
    pub token: i64,
    pub expires_at: Option<String>,
    pub pinned: Option<String>,
}
