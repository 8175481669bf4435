//! The MFA user database behind one trait, with SQLite (embedded default, WAL)
//! and PostgreSQL implementations.
//!
//! Architecture invariant: `apply` writes a whole plan and the sync watermark in
//! ONE transaction; either all of it is committed or none of it.

use async_trait::async_trait;
use mfasync_core::plan::Change;

mod common;
mod copy;
mod outbox;
mod roles;
/// `use mfasync_store::prelude::*;` brings every role trait's methods into scope (needed
/// to call them on a concrete store type; `dyn Store` has them all already).
pub mod prelude {
    pub use crate::{
        AdminStore, ApprovalStore, BinStore, ClusterStore, ConfigStore, HistoryStore, OtpStore,
        OutboxStore, Store, UserStore,
    };
}
pub use copy::{copy_to_postgres, CopyReport, TableCopy};
pub use outbox::{
    time_text, Composer, NewEmail, OutboxEmail, OutboxStatus, RetryTarget, SUMMARY_USERNAME,
};
pub use roles::{
    AdminStore, ApprovalStore, BinStore, BinnedUser, ClusterStore, ConfigStore, HistoryStore,
    OtpSecret, OtpStore, OutboxStore, UserStore,
};
/// The schema migrations of a backend, from `migrations/<dir>/`. ONE list for
/// both backends, so a migration cannot be registered for one and forgotten
/// for the other (each backend keeps its own SQL file per step).
#[macro_export]
#[doc(hidden)]
macro_rules! migrations {
    ($dir:literal) => {{
        use sqlx::migrate::{Migration, MigrationType, Migrator};
        use std::borrow::Cow;
        let steps = [
            (
                1,
                "init",
                include_str!(concat!("../migrations/", $dir, "/0001_init.sql")),
            ),
            (
                2,
                "approvals",
                include_str!(concat!("../migrations/", $dir, "/0002_approvals.sql")),
            ),
            (
                3,
                "user lookups",
                include_str!(concat!("../migrations/", $dir, "/0003_user_lookups.sql")),
            ),
            (
                4,
                "admin",
                include_str!(concat!("../migrations/", $dir, "/0004_admin.sql")),
            ),
            (
                5,
                "user digest",
                include_str!(concat!("../migrations/", $dir, "/0005_user_digest.sql")),
            ),
            (
                6,
                "cluster",
                include_str!(concat!("../migrations/", $dir, "/0006_cluster.sql")),
            ),
            (
                7,
                "sync request",
                include_str!(concat!("../migrations/", $dir, "/0007_sync_request.sql")),
            ),
            (
                8,
                "user audit index",
                include_str!(concat!("../migrations/", $dir, "/0008_user_audit.sql")),
            ),
            (
                9,
                "index of rows without a digest",
                include_str!(concat!("../migrations/", $dir, "/0009_digest_missing.sql")),
            ),
            (
                10,
                "starting points of other domains",
                include_str!(concat!(
                    "../migrations/",
                    $dir,
                    "/0010_domain_watermarks.sql"
                )),
            ),
            (
                11,
                "raw stamps of synchronized users",
                include_str!(concat!("../migrations/", $dir, "/0011_raw_stamp.sql")),
            ),
            (
                12,
                "interrupted sync runs",
                include_str!(concat!("../migrations/", $dir, "/0012_run_interrupted.sql")),
            ),
            (
                13,
                "audit purge index",
                include_str!(concat!("../migrations/", $dir, "/0013_audit_at.sql")),
            ),
            (
                14,
                "outbox of user emails",
                include_str!(concat!("../migrations/", $dir, "/0014_outbox.sql")),
            ),
            (
                15,
                "mapping fingerprint and run notes",
                include_str!(concat!(
                    "../migrations/",
                    $dir,
                    "/0015_mapping_fingerprint.sql"
                )),
            ),
            (
                16,
                "OATH TOTP secrets",
                include_str!(concat!("../migrations/", $dir, "/0016_otp.sql")),
            ),
            (
                17,
                "recycle bin",
                include_str!(concat!("../migrations/", $dir, "/0017_recycle_bin.sql")),
            ),
            (
                18,
                "summary emails in the outbox",
                include_str!(concat!("../migrations/", $dir, "/0018_summary_email.sql")),
            ),
        ];
        Migrator {
            migrations: Cow::Owned(
                steps
                    .into_iter()
                    .map(|(version, name, sql)| {
                        Migration::new(
                            version,
                            Cow::Borrowed(name),
                            MigrationType::Simple,
                            Cow::Borrowed(sql),
                            false,
                        )
                    })
                    .collect(),
            ),
            ..Migrator::DEFAULT
        }
    }};
}

mod postgres;
mod sqlite;
mod sqlite_access;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// From the SQLite connection used directly (a sync's bulk inserts).
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// (Only the URL's scheme is shown: the rest may hold a password.)
    #[error("unsupported database URL {}: use sqlite://PATH or postgres://...", scheme_of(.0))]
    BadUrl(String),
    /// The database the URL names cannot be opened: a missing directory, a
    /// file that cannot be created or is not a database, a malformed URL.
    #[error("{0}")]
    CannotOpen(String),
    /// The database server did not answer in time (or refused).
    #[error("{0}")]
    Unreachable(String),
    #[error("{0}")]
    Conflict(String),
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    /// A sync write by a server that no longer holds the sync lease (or whose
    /// lease expired): refused, nothing committed.
    #[error("{0}")]
    Fenced(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

impl StoreError {
    /// SQLite's "database is locked": another connection's write
    /// transaction held the database for longer than the busy timeout.
    pub fn is_busy(&self) -> bool {
        match self {
            StoreError::Db(sqlx::Error::Database(e)) => {
                matches!(e.code().as_deref(), Some("5" | "517" | "6"))
            }
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ),
            _ => false,
        }
    }
}

/// `"mysql://..."` for a URL with a scheme, else `"without a scheme"`.
fn scheme_of(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, _)) => format!("{scheme:?}://..."),
        None => "without a scheme (sqlite://PATH?)".into(),
    }
}

/// What a stored starting point is, stored as its name (`as_str`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MarkKind {
    /// "full": a full sync that took no incremental starting point.
    Full,
    /// "none": no starting point (a domain read without one), or a stored
    /// name this version does not know. Either way the next cycle is full.
    None,
    /// "dirsync": an Active Directory DirSync cookie.
    DirSync,
    /// "syncrepl": an RFC 4533 syncrepl cookie.
    SyncRepl,
    /// "usn": the highest uSNChanged read from one domain controller.
    Usn,
}

impl MarkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MarkKind::Full => "full",
            MarkKind::None => "none",
            MarkKind::DirSync => "dirsync",
            MarkKind::SyncRepl => "syncrepl",
            MarkKind::Usn => "usn",
        }
    }

    /// The kind a stored name names; an unknown name is [`MarkKind::None`].
    pub fn from_stored(name: &str) -> MarkKind {
        match name {
            "full" => MarkKind::Full,
            "dirsync" => MarkKind::DirSync,
            "syncrepl" => MarkKind::SyncRepl,
            "usn" => MarkKind::Usn,
            _ => MarkKind::None,
        }
    }
}

impl std::fmt::Display for MarkKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The incremental-sync starting point, committed with the changes it produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watermark {
    /// `Full` after a full sync without a starting point; else the incremental kind.
    pub kind: MarkKind,
    /// The server the watermark came from (USN watermarks are per DC).
    pub server: String,
    /// Opaque value: cookie bytes or a USN as text.
    pub value: Vec<u8>,
    /// `Config::items_fingerprint()` of the configuration the full sync ran with.
    pub items_fingerprint: String,
    /// `Config::mapping_fingerprint()` of that configuration ("" when written
    /// before migration 14: unknown).
    pub mapping_fingerprint: String,
    /// The starting points of the other domains whose items are synchronized
    /// (`include_trusted_domains`), one per domain, committed in the same
    /// transaction; replaced as a whole with the watermark. Sorted by domain.
    pub domains: Vec<DomainWatermark>,
}

/// The incremental starting point of one other domain (a trusted domain or
/// another domain of the forest): its own DirSync cookie or uSNChanged mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainWatermark {
    /// The domain's DNS name, lower case (`other.example.com`).
    pub domain: String,
    /// `DirSync` or `Usn`; `None` when the domain was read without one.
    pub kind: MarkKind,
    /// The domain controller the starting point came from.
    pub server: String,
    pub value: Vec<u8>,
}

/// A stored configuration version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigVersion {
    pub version: i64,
    pub created_at: String,
    /// The TOML as applied (may contain secrets: never print it, export via `Config::to_toml_redacted`).
    pub toml: String,
}

/// A stored configuration version's text replaced ([`ConfigStore::rewrite_configs`]).
#[derive(Clone, PartialEq, Eq)]
pub struct ConfigRewrite {
    pub version: i64,
    /// The text as read: the version is rewritten only if it still has it.
    pub old: String,
    pub new: String,
}

impl std::fmt::Debug for ConfigRewrite {
    // (both texts may hold secrets)
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigRewrite")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// One row of the sync history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRun {
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
    pub error: Option<String>,
    /// Directory entries an incremental cycle received (None for a full one).
    pub entries_read: Option<i64>,
    /// Its process stopped before recording the result (`Store::runs_interrupted`).
    pub interrupted: bool,
    /// What the run says besides its counts: why it was full, sync items
    /// found again after a rename.
    pub note: Option<String>,
}

impl SyncRun {
    /// "ok", "failed", "interrupted", or "running" (unfinished while
    /// `runner_alive`: somebody holds the sync lease and is not known gone).
    pub fn status(&self, runner_alive: bool) -> &'static str {
        match (&self.finished_at, &self.error) {
            _ if self.interrupted => "interrupted",
            (Some(_), None) => "ok",
            (Some(_), Some(_)) => "failed",
            (None, _) if runner_alive => "running",
            (None, _) => "interrupted",
        }
    }
}

/// One row of the audit trail, written in the same transaction as the change it records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: i64,
    /// RFC 3339 UTC.
    pub at: String,
    /// Who made the change: "sync" for `apply`, "admin" for `insert_user` and `put_config`.
    pub actor: String,
    /// `Action::as_str()` of the change ("create", "update", ...), "insert" for
    /// `insert_user`, "config" for `put_config`.
    pub action: String,
    pub username: Option<String>,
    pub directory_id: Option<String>,
    /// The user before the change, as JSON (the serde form of `MfaUser`); None for a create.
    pub before: Option<serde_json::Value>,
    /// The user after the change, as JSON; None for a remove.
    pub after: Option<serde_json::Value>,
    /// The change's reason, or "config version N" for `put_config`.
    pub detail: Option<String>,
}

/// The state of a held approval. Only a `Pending` one can be decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApprovalStatus {
    Pending,
    Approved,
    Rejected,
    /// A newer pending approval replaced it before anyone decided.
    Superseded,
}

impl ApprovalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Rejected => "rejected",
            ApprovalStatus::Superseded => "superseded",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(ApprovalStatus::Pending),
            "approved" => Some(ApprovalStatus::Approved),
            "rejected" => Some(ApprovalStatus::Rejected),
            "superseded" => Some(ApprovalStatus::Superseded),
            _ => None,
        }
    }
}

/// One disable or removal held for approval.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HeldChange {
    /// "disable" or "remove" (`Action::as_str`).
    pub action: String,
    pub username: String,
    pub directory_id: Option<String>,
    /// Why the user would go ("no longer in OU=Sales,...").
    pub reason: Option<String>,
    /// The limit that held it (`safeguard::HeldBy`, as text); kept in the
    /// approval's JSON, absent in approvals stored before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    /// An administrator's decision on this user alone (`approvals approve|reject
    /// --user`); None while undecided, and for every user of an approval
    /// decided whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<UserDecision>,
}

impl HeldChange {
    /// "action:directory_id" (the username without one), as
    /// `core::safeguard::fingerprint` keys a change.
    pub fn key(&self) -> String {
        format!(
            "{}:{}",
            self.action,
            self.directory_id.as_deref().unwrap_or(&self.username)
        )
    }
}

/// A decision on one held user of an approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserDecision {
    Approved,
    Rejected,
}

/// `core::safeguard::fingerprint` of stored held changes.
pub fn held_fingerprint<'a>(changes: impl Iterator<Item = &'a HeldChange>) -> String {
    let mut keys: Vec<String> = changes.map(HeldChange::key).collect();
    keys.sort();
    keys.join(",")
}

/// A set of disables/removals held back by `sync.approval_threshold`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    /// Short random text, unique.
    pub id: String,
    /// RFC 3339 UTC.
    pub created_at: String,
    pub status: ApprovalStatus,
    /// `core::safeguard::fingerprint` of the held changes.
    pub fingerprint: String,
    pub changes: Vec<HeldChange>,
    pub decided_at: Option<String>,
    pub decided_by: Option<String>,
    pub detail: Option<String>,
}

impl Approval {
    /// The held users no one has decided on yet (all of them until a
    /// per-user decision).
    pub fn undecided(&self) -> impl Iterator<Item = &HeldChange> {
        self.changes.iter().filter(|c| c.decision.is_none())
    }

    /// The usernames still waiting for a decision: none once decided whole.
    pub fn still_pending(&self) -> Vec<String> {
        match self.status {
            ApprovalStatus::Pending => self.undecided().map(|h| h.username.clone()).collect(),
            _ => Vec::new(),
        }
    }

    /// Has an administrator decided on some users alone?
    pub fn has_user_decisions(&self) -> bool {
        self.changes.iter().any(|c| c.decision.is_some())
    }

    /// The held users decided `decision` alone.
    pub fn decided(&self, decision: UserDecision) -> impl Iterator<Item = &HeldChange> {
        self.changes
            .iter()
            .filter(move |c| c.decision == Some(decision))
    }

    /// As `approvals list --json` lists it: the users still undecided.
    pub fn listed(&self) -> mfasync_core::report::ApprovalListed {
        let names = |action: &str| {
            self.undecided()
                .filter(|c| c.action == action)
                .map(|c| c.username.clone())
                .collect()
        };
        mfasync_core::report::ApprovalListed {
            created_at: self.created_at.clone(),
            disable: names("disable"),
            id: self.id.clone(),
            remove: names("remove"),
        }
    }
}

/// What a stored token is: a portal session or an API token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Session,
    Api,
}

impl TokenKind {
    /// As stored in `auth_tokens.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Session => "session",
            TokenKind::Api => "api",
        }
    }

    pub fn parse(s: &str) -> Option<TokenKind> {
        match s {
            "session" => Some(TokenKind::Session),
            "api" => Some(TokenKind::Api),
            _ => None,
        }
    }
}

/// A signed-in administrator's session, or an API token, as stored: only the
/// SHA-256 of the secret token is kept (`token_hash`, lower-case hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthToken {
    pub token_hash: String,
    pub kind: TokenKind,
    /// The administrator it acts for.
    pub username: String,
    /// What an API token is for (shown in the portal); None for sessions.
    pub label: Option<String>,
    /// The CSRF token a session's form posts must carry; None for API tokens.
    pub csrf: Option<String>,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// RFC 3339 UTC; None: does not expire.
    pub expires_at: Option<String>,
}

/// A column to look users up by, for [`UserStore::users_by`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserKey {
    DirectoryId,
    /// The DN exactly as stored.
    Dn,
    /// The username lower-cased (Rust `to_lowercase`).
    UsernameLower,
    /// The `dn` of the governing sync item, exactly as configured.
    SyncItem,
}

impl UserKey {
    pub(crate) fn column(self) -> &'static str {
        match self {
            UserKey::DirectoryId => "directory_id",
            UserKey::Dn => "dn",
            UserKey::UsernameLower => "username_lower",
            UserKey::SyncItem => "sync_item",
        }
    }
}

/// One registered `mfasync serve` process (issue 8). Times are Unix epoch
/// milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// Unique per server: `serve --name`, default the host name.
    pub name: String,
    /// Random per process start.
    pub instance: String,
    /// The address the server listens on (`serve --listen`).
    pub address: String,
    /// The mfasync version it runs.
    pub version: String,
    pub started_ms: i64,
    /// Its last heartbeat.
    pub heartbeat_ms: i64,
    /// The lease period it runs with.
    pub lease_ms: i64,
}

impl ServerInfo {
    /// Alive while its last heartbeat is younger than two of its lease periods.
    pub fn alive(&self, now_ms: i64) -> bool {
        now_ms.saturating_sub(self.heartbeat_ms) < self.lease_ms.saturating_mul(2)
    }
}

/// A time kept as milliseconds since the epoch (the cluster tables), as RFC 3339.
pub fn rfc3339_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

/// The sync lease: who may run synchronization, until when, with which
/// fencing token, and the administrator's pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The server name holding it; None when free.
    pub holder: Option<String>,
    /// The holder's `ServerInfo::instance`.
    pub instance: Option<String>,
    /// The fencing token: grows by one whenever a holder takes the lease.
    pub token: i64,
    /// Unix epoch milliseconds; at or after it the lease is expired.
    pub expires_ms: i64,
    /// Only this server may hold the lease (None: any server, automatic).
    pub pinned: Option<String>,
}

impl Lease {
    /// Whether (`name`, `instance`) holds the lease at `now_ms`.
    pub fn held_by(&self, name: &str, instance: &str, now_ms: i64) -> bool {
        self.holder.as_deref() == Some(name)
            && self.instance.as_deref() == Some(instance)
            && self.expires_ms > now_ms
    }
}

/// A Synchronize Now handed to the runner by a server that does not run
/// synchronization (`Store::sync_request`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRequest {
    /// A full cycle (any of the coalesced requests asked for one).
    pub full: bool,
    /// The administrator who asked (the latest one).
    pub by: String,
    /// The server it was asked on.
    pub on: String,
    /// When, Unix epoch milliseconds.
    pub at_ms: i64,
}

/// What a server's sync writes are checked against (see [`ClusterStore::set_fence`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub holder: String,
    pub instance: String,
    pub token: i64,
    /// The holder's lease period: what a renewal inside a sync's own write
    /// transaction extends it by (SQLite, where that transaction keeps the
    /// holder's renewal task out).
    pub period_ms: i64,
}

#[async_trait]
pub trait Store:
    UserStore
    + ConfigStore
    + HistoryStore
    + ApprovalStore
    + AdminStore
    + ClusterStore
    + OutboxStore
    + OtpStore
    + BinStore
    + Send
    + Sync
{
    /// Close the connections and wait for them to be closed. With SQLite, the
    /// last one to close checkpoints and removes the WAL file; a process that
    /// exits without this may leave its WAL behind (after a first sync of
    /// 100,000 users, 129 MB), which the next process to open the database
    /// reads through to rebuild its index and copies into the database once
    /// more. Later calls on the store fail.
    async fn close(&self);
}

/// A sync's write transaction in progress (`Store::begin_apply`).
#[async_trait]
pub trait Applying: Send {
    /// Write `changes` as `Store::apply` would (checked first; an error
    /// leaves the transaction unusable: drop it).
    async fn write(&mut self, changes: &[Change]) -> Result<()>;
    /// How many creates written so far were restores from the recycle bin.
    fn restored(&self) -> usize;
    /// Set the watermark (when given), check the fence, commit everything
    /// written (the emails the composer queued with it included).
    async fn commit(self: Box<Self>, watermark: Option<&Watermark>) -> Result<()>;
}

/// Open the database named by a URL for a short command that only reads a few
/// rows (`mfasync auth`): a SQLite database whose schema is already current is
/// opened with one connection and without the migration run
/// ([`SqliteStore::open_current`]); anything else as [`open`].
pub async fn open_current(url: &str) -> Result<Box<dyn Store>> {
    match url.strip_prefix("sqlite://") {
        Some(path) => Ok(Box::new(SqliteStore::open_current(path).await?)),
        None => open(url).await,
    }
}

/// How long opening a database server's connection may take by default
/// (`mfasync --connect-timeout`).
pub const DEFAULT_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How [`open_with`] opens a database.
#[derive(Debug, Clone, Copy)]
pub struct OpenOptions {
    /// A database server that does not answer within this is `Unreachable`.
    pub connect_timeout: std::time::Duration,
    /// A short command that reads a few rows: as [`open_current`].
    pub short: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            short: false,
        }
    }
}

/// Open the database named by a URL as `options` say.
pub async fn open_with(url: &str, options: OpenOptions) -> Result<Box<dyn Store>> {
    match url.strip_prefix("sqlite://") {
        Some(path) if options.short => Ok(Box::new(SqliteStore::open_current(path).await?)),
        Some(path) => Ok(Box::new(SqliteStore::open(path).await?)),
        None if url.starts_with("postgres://") || url.starts_with("postgresql://") => Ok(Box::new(
            PgStore::open_with(url, options.connect_timeout).await?,
        )),
        None => Err(StoreError::BadUrl(url.to_string())),
    }
}

/// The most values a lookup reads inline after [`UserStore::read_inline`].
pub const INLINE_LOOKUP: usize = 16;

/// Open (and migrate) the database named by a URL: `sqlite://PATH` or `postgres://...`.
pub async fn open(url: &str) -> Result<Box<dyn Store>> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        Ok(Box::new(SqliteStore::open(path).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Box::new(PgStore::open(url).await?))
    } else {
        Err(StoreError::BadUrl(url.to_string()))
    }
}
