//! What the SQLite and PostgreSQL stores share: the SQL text (the same for both:
//! sqlx's SQLite driver accepts `$N` placeholders too), validation of a plan
//! before it is written, error mapping, and `impl_store!`, which writes the `Store`
//! implementation for a concrete sqlx database type (the shared helpers here, each
//! role trait's methods by the macro in its `roles/` file).
//!
//! What differs between the backends is passed in by each store: how a write
//! transaction begins (`BEGIN IMMEDIATE` on SQLite), whether the long
//! multi-row statements use `$N` (PostgreSQL) or `?` (SQLite) placeholders,
//! and each store's own `create_users` and `write_audit` (PostgreSQL: the
//! multi-row ones here; SQLite: single-row statements on its connection,
//! sqlite.rs), `after_write` and `wind_down` (before `Store::close`).

use std::collections::HashSet;

use mfasync_core::plan::{Action, Change};
use mfasync_core::user::Source;
use mfasync_core::MfaUser;

use crate::{Result, StoreError};

/// Rows per multi-row INSERT of users (30 parameters each: 15,000 per statement,
/// under SQLite's 32,766 and PostgreSQL's 65,535).
pub(crate) const USER_CHUNK: usize = 500;
/// Rows per multi-row INSERT of audit entries (8 parameters each).
pub(crate) const AUDIT_CHUNK: usize = 1000;
/// Rows per multi-row UPDATE (32 parameters each) and per DELETE (1 each).
pub(crate) const UPDATE_CHUNK: usize = 400;
pub(crate) const DELETE_CHUNK: usize = 1000;
/// Rows per multi-row UPDATE of raw stamps (3 parameters each).
pub(crate) const RESTAMP_CHUNK: usize = 1000;

/// Columns written for a user, in bind order: username, username_lower, the 24
/// text fields, enabled, source, updated_at, digest, raw_stamp.
pub(crate) const USER_PARAMS: usize = 31;
const AUDIT_PARAMS: usize = 8;

pub(crate) const ACTOR_SYNC: &str = "sync";
pub(crate) const ACTOR_ADMIN: &str = "admin";

/// The fence a store handle's sync writes are checked against
/// (`Store::set_fence`); None: no check.
#[derive(Default)]
pub(crate) struct FenceSlot(std::sync::Mutex<Option<crate::Fence>>);

impl FenceSlot {
    pub(crate) fn set(&self, fence: Option<crate::Fence>) {
        match self.0.lock() {
            Ok(mut g) => *g = fence,
            Err(poisoned) => *poisoned.into_inner() = fence,
        }
    }

    pub(crate) fn get(&self) -> Option<crate::Fence> {
        match self.0.lock() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// Now, as Unix epoch milliseconds.
/// sqlx logs every statement slower than a second as a WARN, and reading
/// 100,000 users (an export, a sync's digests) is such a statement on
/// normal work: here it is INFO (`MFASYNC_LOG=info` shows it), not a warning.
pub(crate) fn slow_statements_as_info<O: sqlx::ConnectOptions>(options: O) -> O {
    options.log_slow_statements(log::LevelFilter::Info, std::time::Duration::from_secs(1))
}

pub(crate) fn now_ms() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(i64::MAX)
}

pub(crate) const SELECT_LEASE: &str =
    "SELECT holder, instance, token, expires_ms, pinned FROM sync_lease WHERE id = 1";

pub(crate) const SELECT_SERVERS: &str = "SELECT name, instance, address, version, started_ms, \
     heartbeat_ms, lease_ms FROM servers";

/// Why a write checked against `fence` must be refused, given the lease as
/// locked in the write's transaction at `now_ms`; None: it may commit.
pub(crate) fn fence_error(
    fence: &crate::Fence,
    lease: &crate::Lease,
    now_ms: i64,
) -> Option<StoreError> {
    let same = lease.holder.as_deref() == Some(fence.holder.as_str())
        && lease.instance.as_deref() == Some(fence.instance.as_str())
        && lease.token == fence.token;
    if !same {
        let now_held = match &lease.holder {
            Some(h) => format!(", now held by server {h}"),
            None => ", now free".to_string(),
        };
        return Some(StoreError::Fenced(format!(
            "server {} does not hold the sync lease (its fencing token {} is not the current {}{}): nothing committed",
            fence.holder, fence.token, lease.token, now_held
        )));
    }
    if lease.expires_ms <= now_ms {
        return Some(StoreError::Fenced(format!(
            "the sync lease of server {} (fencing token {}) expired {} ms ago: nothing committed",
            fence.holder,
            fence.token,
            now_ms.saturating_sub(lease.expires_ms)
        )));
    }
    None
}

/// The names of the optional text fields (= their column names), from core.
pub(crate) fn text_columns() -> [&'static str; 24] {
    MfaUser::default().text_fields().map(|(name, _)| name)
}

/// Now, as RFC 3339 UTC text.
pub(crate) fn now() -> Result<String> {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| StoreError::Corrupt(format!("cannot format the current time: {e}")))
}

/// A user as an audit row stores it: its fields without the empty ones (a
/// first sync of 100,000 users wrote ~270 bytes of `null`s per row, a third
/// of the audit table). [`parse_json`] gives them back.
struct AuditUser<'a>(&'a MfaUser);

impl serde::Serialize for AuditUser<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let u = self.0;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("username", &u.username)?;
        for (name, value) in u.text_fields() {
            if name == "sync_item" {
                // (the export order)
                m.serialize_entry("enabled", &u.enabled)?;
            }
            if let Some(v) = value {
                m.serialize_entry(name, v)?;
            }
        }
        m.serialize_entry("source", &u.source)?;
        m.end()
    }
}

pub(crate) fn user_json(user: &MfaUser) -> Result<String> {
    serde_json::to_string(&AuditUser(user))
        .map_err(|e| StoreError::Corrupt(format!("cannot encode user {}: {e}", user.username)))
}

/// An audit row's before/after user: every field of the user, the ones not
/// stored (empty) as `null`, as rows written before the compact form have them.
pub(crate) fn parse_json(text: Option<String>) -> Result<Option<serde_json::Value>> {
    text.map(|t| {
        let mut v: serde_json::Value = serde_json::from_str(&t)
            .map_err(|e| StoreError::Corrupt(format!("audit entry holds invalid JSON: {e}")))?;
        if let Some(m) = v.as_object_mut().filter(|m| m.contains_key("username")) {
            for name in mfasync_core::user::FIELDS {
                m.entry(*name).or_insert(serde_json::Value::Null);
            }
        }
        Ok(v)
    })
    .transpose()
}

pub(crate) fn held_json(changes: &[crate::HeldChange]) -> Result<String> {
    serde_json::to_string(changes)
        .map_err(|e| StoreError::Corrupt(format!("cannot encode held changes: {e}")))
}

pub(crate) fn parse_held(text: &str) -> Result<Vec<crate::HeldChange>> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Corrupt(format!("approval holds invalid JSON: {e}")))
}

/// Record `decision` on the undecided held users named in `users` of the
/// pending approval `a`; a `Conflict` naming any name that is not one of them.
pub(crate) fn mark_users(
    a: &mut crate::Approval,
    decision: crate::UserDecision,
    users: &[String],
) -> Result<()> {
    if a.status != crate::ApprovalStatus::Pending {
        return Err(StoreError::Conflict(format!(
            "approval {} is {}, not pending{}",
            a.id,
            a.status.as_str(),
            a.detail
                .as_deref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        )));
    }
    let unknown: Vec<&str> = users
        .iter()
        .filter(|u| !a.undecided().any(|c| &c.username == *u))
        .map(String::as_str)
        .collect();
    if users.is_empty() || !unknown.is_empty() {
        return Err(StoreError::Conflict(format!(
            "approval {} holds no undecided user named {}",
            a.id,
            unknown.join(", ")
        )));
    }
    for c in a.changes.iter_mut().filter(|c| c.decision.is_none()) {
        if users.contains(&c.username) {
            c.decision = Some(decision);
        }
    }
    Ok(())
}

/// The status and detail of an approval whose users were all decided one by
/// one: approved when any was approved (partly when some were rejected),
/// rejected when none was. None while some are undecided.
pub(crate) fn settle(a: &crate::Approval) -> Option<(crate::ApprovalStatus, String)> {
    use crate::{ApprovalStatus as S, UserDecision as D};
    if a.undecided().next().is_some() {
        return None;
    }
    let approved = a.decided(D::Approved).count();
    let rejected = a.decided(D::Rejected).count();
    Some(match (approved, rejected) {
        (0, _) => (
            S::Rejected,
            format!("rejected user by user: {rejected} kept"),
        ),
        (_, 0) => (
            S::Approved,
            format!("approved user by user: {approved} approved"),
        ),
        _ => (
            S::Approved,
            format!("partly approved: {approved} approved, {rejected} rejected"),
        ),
    })
}

/// The audit text of a per-user decision: the users, `detail`, and what is
/// left or how the approval ended.
pub(crate) fn user_decision_text(
    a: &crate::Approval,
    decision: crate::UserDecision,
    users: &[String],
    detail: Option<&str>,
) -> String {
    let verb = match decision {
        crate::UserDecision::Approved => "approved",
        crate::UserDecision::Rejected => "rejected",
    };
    let extra = detail.map(|d| format!(" ({d})")).unwrap_or_default();
    let rest = match a.status {
        crate::ApprovalStatus::Pending => format!("{} still pending", a.undecided().count()),
        s => format!(
            "approval {}{}",
            s.as_str(),
            a.detail
                .as_deref()
                .map(|d| format!(": {d}"))
                .unwrap_or_default()
        ),
    };
    format!(
        "approval {}: {verb} for {}{extra}; {rest}",
        a.id,
        users.join(", ")
    )
}

pub(crate) fn parse_status(s: &str) -> Result<crate::ApprovalStatus> {
    crate::ApprovalStatus::parse(s)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown approval status {s:?}")))
}

pub(crate) const SELECT_APPROVALS: &str = "SELECT id, created_at, status, fingerprint, \
     changes_json, decided_at, decided_by, detail FROM approvals";

pub(crate) const SELECT_TOKENS: &str = "SELECT token_hash, kind, username, label, csrf, \
     created_at, expires_at FROM auth_tokens";

/// The first 12 characters of a token hash: enough to name it in the audit.
pub(crate) fn short_hash(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

pub(crate) fn parse_source(s: &str) -> Result<Source> {
    Source::parse(s).ok_or_else(|| StoreError::Corrupt(format!("unknown user source {s:?}")))
}

/// A user from a row of `Sql::select_users`, whichever driver read it:
/// `text` gives each text column by name (sqlx's `user_from_row`,
/// rusqlite's `user_from_rusqlite`).
pub(crate) fn user_from_columns<E>(
    username: String,
    enabled: bool,
    source: &str,
    mut text: impl FnMut(&str) -> std::result::Result<Option<String>, E>,
) -> Result<MfaUser>
where
    StoreError: From<E>,
{
    let mut user = MfaUser {
        username,
        enabled,
        source: parse_source(source)?,
        ..MfaUser::default()
    };
    for name in text_columns() {
        let value = text(name)?;
        match user.text_field_mut(name) {
            Some(slot) => *slot = value,
            None => return Err(StoreError::Corrupt(format!("unknown user field {name}"))),
        }
    }
    Ok(user)
}

/// Turn a unique-constraint violation into a readable `Conflict`; other errors pass.
pub(crate) fn map_unique(err: sqlx::Error, what: &str) -> StoreError {
    if let Some(db) = err.as_database_error() {
        if db.is_unique_violation() {
            let text = format!("{} {}", db.message(), db.constraint().unwrap_or_default());
            let key = if text.contains("username_lower") {
                "username already taken"
            } else if text.contains("directory_id") {
                "directory_id already taken"
            } else {
                "already exists"
            };
            return StoreError::Conflict(format!("{what}: {key} ({})", db.message()));
        }
    }
    StoreError::Db(err)
}

/// The directory_id a non-create change is aimed at.
pub(crate) fn change_key(change: &Change) -> Option<&str> {
    change
        .before
        .as_ref()
        .and_then(|b| b.directory_id.as_deref())
        .or(change.user.directory_id.as_deref())
}

/// Check a plan before anything is written: every change must name a directory
/// user by directory_id, and the creates must not collide among themselves.
pub(crate) fn validate(changes: &[Change]) -> Result<()> {
    let mut names = HashSet::new();
    let mut ids = HashSet::new();
    for ch in changes {
        // only formatted for an error (a first sync validates every create)
        let what = || format!("{} {}", ch.action.as_str(), ch.user.username);
        if ch.action != Action::Remove && ch.user.source != Source::Directory {
            return Err(StoreError::Conflict(format!(
                "{}: a sync may only write directory users, not manual ones",
                what()
            )));
        }
        if ch.action == Action::Create {
            let Some(id) = ch.user.directory_id.as_deref() else {
                return Err(StoreError::Conflict(format!("{}: no directory_id", what())));
            };
            if !names.insert(ch.user.username.to_lowercase()) {
                return Err(StoreError::Conflict(format!(
                    "{}: username already taken by another create of the same plan",
                    what()
                )));
            }
            if !ids.insert(id.to_string()) {
                return Err(StoreError::Conflict(format!(
                    "{}: directory_id {id} created twice in the same plan",
                    what()
                )));
            }
        } else if change_key(ch).is_none() {
            return Err(StoreError::Conflict(format!("{}: no directory_id", what())));
        }
    }
    Ok(())
}

/// One audit row waiting to be written.
pub(crate) struct AuditRow<'a> {
    pub action: &'a str,
    pub actor: &'a str,
    pub username: Option<&'a str>,
    pub directory_id: Option<&'a str>,
    pub before: Option<String>,
    pub after: Option<String>,
    pub detail: Option<&'a str>,
}

impl<'a> AuditRow<'a> {
    /// An event that concerns no single user (config version, approval, token…).
    pub(crate) fn event(action: &'a str, actor: &'a str, detail: &'a str) -> Self {
        AuditRow {
            action,
            actor,
            username: None,
            directory_id: None,
            before: None,
            after: None,
            detail: Some(detail),
        }
    }

    /// The audit row of a sync's change; a create of a user taken out of the
    /// recycle bin (`restored`, with the detail to record) is a "restore"
    /// whose `before` is the binned row.
    pub(crate) fn for_change(
        ch: &'a Change,
        restored: &'a std::collections::HashMap<String, (crate::BinnedUser, String)>,
    ) -> Result<Self> {
        let binned = match ch.action {
            Action::Create => ch
                .user
                .directory_id
                .as_deref()
                .and_then(|id| restored.get(id)),
            _ => None,
        };
        if let Some((b, detail)) = binned {
            return Ok(AuditRow {
                action: "restore",
                actor: ACTOR_SYNC,
                username: Some(ch.user.username.as_str()),
                directory_id: ch.user.directory_id.as_deref(),
                before: Some(user_json(&b.user)?),
                after: Some(user_json(&ch.user)?),
                detail: Some(detail.as_str()),
            });
        }
        let before = match (&ch.before, ch.action) {
            (_, Action::Create) => None,
            (Some(b), _) => Some(user_json(b)?),
            (None, _) => None,
        };
        let after = match ch.action {
            Action::Remove => None,
            _ => Some(user_json(&ch.user)?),
        };
        Ok(AuditRow {
            action: ch.action.as_str(),
            actor: ACTOR_SYNC,
            username: Some(ch.user.username.as_str()),
            directory_id: ch.user.directory_id.as_deref().or_else(|| change_key(ch)),
            before,
            after,
            detail: ch.reason.as_deref(),
        })
    }
}

/// The SQL text of one backend.
pub(crate) struct Sql {
    pub select_users: String,
    /// `select_users` in `UserStore::users`' order (username_lower is unique
    /// and holds Rust's to_lowercase; compared byte by byte on both backends).
    pub select_users_ordered: String,
    /// One page of `Store::user_digests` as ONE JSON text (aggregated by the
    /// database: decoding 100,000 rows through sqlx costs ~1 s, one text ~0.1 s):
    /// `$1` the last id of the previous page, `$2` the page size.
    pub select_digests: String,
    pub select_audit: String,
    /// `$1` username (compared lower-cased), `$2` directory id, `$3` limit.
    pub select_user_audit: String,
    /// `SELECT` of the lease row with a row lock where the backend has one
    /// (PostgreSQL `FOR UPDATE`; a SQLite write transaction is exclusive).
    pub select_lease_locked: String,
    /// Where a sync's write transaction excludes every other writer (SQLite),
    /// the holder's renewal of its own lease inside that transaction (`$1`
    /// the new expiry, `$2` holder, `$3` instance, `$4` token, `$5` now): its
    /// renewal task cannot write until the transaction ends.
    pub renew_lease_in_tx: Option<&'static str>,
    numbered: bool,
}

/// `(p,p,..),(p,p,..)` for a multi-row VALUES, `$N` numbered or plain `?`.
fn placeholders(out: &mut String, numbered: bool, rows: usize, cols: usize) {
    let mut n = 0;
    for r in 0..rows {
        if r > 0 {
            out.push(',');
        }
        out.push('(');
        for c in 0..cols {
            n += 1;
            if c > 0 {
                out.push(',');
            }
            if numbered {
                out.push('$');
                out.push_str(&n.to_string());
            } else {
                out.push('?');
            }
        }
        out.push(')');
    }
}

impl Sql {
    /// `numbered`: `$N` placeholders in the long statements, else `?`. SQLite
    /// needs `?` there: it looks a named parameter up by a linear scan, which
    /// makes binding a 14,500-parameter `$N` statement quadratic.
    pub(crate) fn new(numbered: bool) -> Self {
        let select_users = format!(
            "SELECT username, {}, enabled, source FROM users",
            text_columns().join(", ")
        );
        let select_audit = "SELECT id, at, actor, action, username, directory_id, \
             before_json, after_json, detail FROM audit ORDER BY id DESC LIMIT $1"
            .to_string();
        let select_user_audit = "SELECT id, at, actor, action, username, directory_id, \
             before_json, after_json, detail FROM audit \
             WHERE lower(username) = lower($1) OR directory_id = $2 ORDER BY id DESC LIMIT $3"
            .to_string();
        let select_lease_locked = if numbered {
            format!("{SELECT_LEASE} FOR UPDATE")
        } else {
            SELECT_LEASE.to_string()
        };
        let page = "SELECT id, username, directory_id, source, sync_item, enabled, digest, \
             raw_stamp FROM users WHERE id > $1 ORDER BY id LIMIT $2";
        let select_digests = if numbered {
            format!(
                "SELECT COALESCE(json_agg(json_build_array(id, username, directory_id, source, \
                 sync_item, enabled, digest, raw_stamp) ORDER BY id)::text, '[]') FROM ({page}) AS p"
            )
        } else {
            format!(
                "SELECT json_group_array(json_array(id, username, directory_id, source, \
                 sync_item, enabled, digest, raw_stamp)) FROM ({page})"
            )
        };
        let order = if numbered {
            "ORDER BY username_lower COLLATE \"C\""
        } else {
            "ORDER BY username_lower"
        };
        let renew_lease_in_tx = (!numbered).then_some(
            "UPDATE sync_lease SET expires_ms = $1 WHERE id = 1 AND holder = $2 \
             AND instance = $3 AND token = $4 AND expires_ms > $5 AND expires_ms < $1",
        );
        Sql {
            renew_lease_in_tx,
            select_users_ordered: format!("{select_users} {order}"),
            select_users,
            select_digests,
            select_audit,
            select_user_audit,
            select_lease_locked,
            numbered,
        }
    }

    /// Insert `rows` users, `USER_PARAMS` parameters each (see `bind_user!`).
    pub(crate) fn insert_users(&self, rows: usize) -> String {
        let mut s = format!(
            "INSERT INTO users (username, username_lower, {}, enabled, source, updated_at, digest, raw_stamp) VALUES ",
            text_columns().join(", ")
        );
        placeholders(&mut s, self.numbered, rows, USER_PARAMS);
        s
    }

    /// Update `rows` directory users, each given as its current directory_id
    /// followed by the `USER_PARAMS` values of `bind_user!`.
    pub(crate) fn update_users(&self, rows: usize) -> String {
        // VALUES columns are column1.. in both SQLite and PostgreSQL.
        let mut s =
            String::from("UPDATE users SET username = v.column2, username_lower = v.column3");
        for (i, c) in text_columns().iter().enumerate() {
            s.push_str(&format!(", {c} = v.column{}", i + 4));
        }
        s.push_str(
            ", enabled = v.column28, source = v.column29, updated_at = v.column30, \
             digest = v.column31, raw_stamp = v.column32 FROM (VALUES ",
        );
        placeholders(&mut s, self.numbered, rows, USER_PARAMS + 1);
        s.push_str(") AS v WHERE users.directory_id = v.column1 AND users.source = 'directory'");
        s
    }

    /// Set the raw stamp of `rows` directory users, each given as directory_id,
    /// digest (the row must still have it) and stamp.
    pub(crate) fn restamp_users(&self, rows: usize) -> String {
        let mut s = String::from("UPDATE users SET raw_stamp = v.column3 FROM (VALUES ");
        placeholders(&mut s, self.numbered, rows, 3);
        s.push_str(
            ") AS v WHERE users.directory_id = v.column1 AND users.digest = v.column2 \
             AND users.source = 'directory' \
             AND (users.raw_stamp IS NULL OR users.raw_stamp <> v.column3)",
        );
        s
    }

    /// The users whose `key` is one of `keys` values (`Store::users_by`).
    pub(crate) fn select_users_by(&self, key: crate::UserKey, keys: usize) -> String {
        format!(
            "{} WHERE {} IN {}",
            self.select_users,
            key.column(),
            self.key_list(keys)
        )
    }

    /// `(p,p,..),(p,p,..)`: `rows` rows of `cols` parameters for a VALUES list.
    pub(crate) fn values(&self, rows: usize, cols: usize) -> String {
        let mut s = String::new();
        placeholders(&mut s, self.numbered, rows, cols);
        s
    }

    pub(crate) fn key_list(&self, keys: usize) -> String {
        let mut s = String::new();
        placeholders(&mut s, self.numbered, 1, keys);
        s
    }

    /// Delete the directory users with `keys` directory_ids.
    pub(crate) fn delete_users(&self, keys: usize) -> String {
        format!(
            "DELETE FROM users WHERE source = 'directory' AND directory_id IN {}",
            self.key_list(keys)
        )
    }

    /// Users whose username_lower is among the first `n` parameters or whose
    /// directory_id is among the next `n`.
    pub(crate) fn select_clashes(&self, n: usize) -> String {
        let mut names = String::new();
        placeholders(&mut names, self.numbered, 1, n);
        let ids = if self.numbered {
            let list: Vec<String> = (n + 1..=2 * n).map(|i| format!("${i}")).collect();
            format!("({})", list.join(","))
        } else {
            names.clone()
        };
        format!(
            "SELECT username, username_lower, directory_id, source FROM users \
             WHERE username_lower IN {names} \
             UNION ALL SELECT username, username_lower, directory_id, source FROM users \
             WHERE directory_id IN {ids}"
        )
    }

    /// directory_id and source of the users with `keys` directory_ids.
    pub(crate) fn select_targets(&self, keys: usize) -> String {
        format!(
            "SELECT directory_id, source FROM users WHERE directory_id IN {}",
            self.key_list(keys)
        )
    }

    pub(crate) fn insert_audit(&self, rows: usize) -> String {
        let mut s = String::from(
            "INSERT INTO audit (at, actor, action, username, directory_id, before_json, after_json, detail) VALUES ",
        );
        placeholders(&mut s, self.numbered, rows, AUDIT_PARAMS);
        s
    }
}

/// How a change is written: runs of changes of one kind go in one statement.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Create,
    Modify,
    Remove,
}

pub(crate) fn kind(action: Action) -> Kind {
    match action {
        Action::Create => Kind::Create,
        Action::Update | Action::Enable | Action::Disable => Kind::Modify,
        Action::Remove => Kind::Remove,
    }
}

/// The length of the run of changes at the start of `changes` that can be
/// written with one statement: same kind, at most `max`, and (for updates and
/// removes) distinct target directory_ids.
pub(crate) fn run_len(changes: &[Change], max: usize) -> usize {
    let Some(first) = changes.first() else {
        return 0;
    };
    let k = kind(first.action);
    let mut keys = HashSet::new();
    changes
        .iter()
        .take(max)
        .take_while(|c| {
            kind(c.action) == k && (k == Kind::Create || keys.insert(change_key(c).unwrap_or("")))
        })
        .count()
}

/// A stored user that a create collides with.
pub(crate) struct Clash {
    pub username: String,
    pub username_lower: String,
    pub directory_id: Option<String>,
    pub source: String,
}

/// The error for the first create of `run` that collides with a stored user.
pub(crate) fn clash_error(
    run: &[Change],
    lowers: &[String],
    clashes: &[Clash],
) -> Option<StoreError> {
    for (ch, lower) in run.iter().zip(lowers) {
        let what = format!("create {}", ch.user.username);
        if let Some(c) = clashes.iter().find(|c| &c.username_lower == lower) {
            return Some(StoreError::Conflict(format!(
                "{what}: username already taken by {} user {}",
                c.source, c.username
            )));
        }
        if let Some(c) = clashes
            .iter()
            .find(|c| c.directory_id.is_some() && c.directory_id == ch.user.directory_id)
        {
            return Some(StoreError::Conflict(format!(
                "{what}: directory_id {} already belongs to {} user {}",
                c.directory_id.as_deref().unwrap_or_default(),
                c.source,
                c.username
            )));
        }
    }
    None
}

/// Check that every change of a run targets a directory user that exists;
/// `found` maps the directory_ids found to their source.
pub(crate) fn check_targets(
    run: &[Change],
    found: &std::collections::HashMap<String, String>,
) -> Result<()> {
    for ch in run {
        let key = change_key(ch).unwrap_or_default();
        let what = format!("{} {}", ch.action.as_str(), ch.user.username);
        match found.get(key).map(String::as_str) {
            Some("directory") => {}
            Some(_) => {
                return Err(StoreError::Conflict(format!(
                "{what}: directory_id {key} belongs to a manual user, which a sync never touches"
            )))
            }
            None => {
                return Err(StoreError::Conflict(format!(
                    "{what}: no directory user with directory_id {key}"
                )))
            }
        }
    }
    Ok(())
}

/// Users per page of `Store::user_digests`. Small enough that a page's text
/// (~0.5 MB) is not a fresh memory mapping each time (larger pages cost page
/// faults and peak memory for no gain in time: BENCHMARKS.md, "History").
pub(crate) const DIGEST_PAGE: i64 = 2_000;

/// A page of `Sql::select_digests`: (row id, digest) per user.
pub(crate) fn parse_digests(text: &str) -> Result<Vec<(i64, mfasync_core::plan::StoredDigest)>> {
    /// SQLite gives a boolean as 0/1, PostgreSQL as true/false (read
    /// directly: an untagged enum would buffer every value first).
    struct Flag(bool);
    impl<'de> serde::Deserialize<'de> for Flag {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
            struct V;
            impl serde::de::Visitor<'_> for V {
                type Value = Flag;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a boolean or an integer")
                }
                fn visit_bool<E: serde::de::Error>(self, v: bool) -> std::result::Result<Flag, E> {
                    Ok(Flag(v))
                }
                fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<Flag, E> {
                    Ok(Flag(v != 0))
                }
                fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<Flag, E> {
                    Ok(Flag(v != 0))
                }
            }
            d.deserialize_any(V)
        }
    }
    #[derive(serde::Deserialize)]
    struct Row<'a>(
        i64,
        String,
        Option<String>,
        #[serde(borrow)] std::borrow::Cow<'a, str>,
        Option<String>,
        Flag,
        Option<String>,
        Option<String>,
    );
    let rows: Vec<Row<'_>> = serde_json::from_str(text)
        .map_err(|e| StoreError::Corrupt(format!("user digests: {e}")))?;
    rows.into_iter()
        .map(
            |Row(id, username, directory_id, source, sync_item, enabled, digest, raw_stamp)| {
                Ok((
                    id,
                    mfasync_core::plan::StoredDigest {
                        username,
                        directory_id,
                        source: parse_source(&source)?,
                        sync_item,
                        enabled: enabled.0,
                        digest,
                        raw_stamp,
                    },
                ))
            },
        )
        .collect()
}

/// Bind the 31 values of a user row (see `USER_PARAMS`) onto a query. The
/// digest is computed here, so every write of a user row keeps it current;
/// the raw stamp is written only when `$raw` (the entry the user was mapped
/// from) gave exactly this row, else cleared.
macro_rules! bind_user {
    ($q:expr, $user:expr, $lower:expr, $now:expr, $raw:expr) => {{
        let user: &mfasync_core::MfaUser = $user;
        let raw: Option<mfasync_core::plan::RawMark> = $raw;
        let mut q = $q.bind(user.username.as_str()).bind($lower);
        for (_, value) in user.text_fields() {
            q = q.bind(value.as_deref());
        }
        let (digest, stamp) = $crate::common::digest_and_stamp(user, raw);
        q.bind(user.enabled)
            .bind(user.source.as_str())
            .bind($now)
            .bind(digest)
            .bind(stamp)
    }};
}
pub(crate) use bind_user;

/// The digest column of a user row, and its raw stamp: written only when
/// `raw` (the entry the user was mapped from) gave exactly this row, else
/// cleared (`bind_user!`).
pub(crate) fn digest_and_stamp(
    user: &MfaUser,
    raw: Option<mfasync_core::plan::RawMark>,
) -> (String, Option<String>) {
    let digest = mfasync_core::plan::digest_bits(user);
    let stamp = raw
        .filter(|m| m.digest == digest)
        .map(|m| mfasync_core::plan::raw_stamp(m.raw, digest));
    (mfasync_core::plan::digest_text(digest), stamp)
}

/// Write the `Store` implementation (every role trait: `roles/*.rs`) for `$store`, which must have fields
/// `pool: sqlx::Pool<$db>` and `sql: Sql`, and the inherent methods
/// `async fn begin(&self) -> Result<sqlx::Transaction<'static, $db>>`,
/// `create_users` and `write_audit` (a sync's creates and audit rows, in the
/// transaction `Tx` this macro defines), `after_write(&self, writes: u64)`,
/// `async fn wind_down(&self)`, `fn read_inline_now(&self)` and
/// `fn users_by_inline(&self, key, values) -> Option<Result<Vec<MfaUser>>>`
/// (`Store::read_inline`).
macro_rules! impl_store {
    ($store:ty, $db:ty) => {
        use $crate::common::{
            bind_user, kind, map_unique, now, parse_json, run_len, validate, AuditRow,
            Kind, ACTOR_ADMIN, AUDIT_CHUNK, DELETE_CHUNK, UPDATE_CHUNK, USER_CHUNK,
        };
        use sqlx::Row as _;
        use $crate::{AuditEntry, ConfigVersion, Result, Store, StoreError, SyncRun, Watermark, DomainWatermark, MarkKind};
        #[allow(unused_imports)]
        use $crate::{AdminStore as _, ApprovalStore as _, BinStore as _, ClusterStore as _, ConfigStore as _, HistoryStore as _, OutboxStore as _, UserStore as _};
        use mfasync_core::plan::{Action, Change};
        use mfasync_core::MfaUser;

        type Tx = sqlx::Transaction<'static, $db>;

        /// The next configuration version, active (the caller has deactivated
        /// the previous one in the same transaction).
        async fn insert_config_version(tx: &mut Tx, at: &str, toml: &str) -> Result<i64> {
            sqlx::query_scalar(
                "INSERT INTO config_versions (version, created_at, toml, active) \
                 SELECT COALESCE(MAX(version), 0) + 1, $1, $2, TRUE FROM config_versions \
                 RETURNING version",
            )
            .bind(at)
            .bind(toml)
            .fetch_one(&mut **tx)
            .await
            .map_err(|e| map_unique(e, "store configuration"))
        }

        fn audit_entries(rows: &[<$db as sqlx::Database>::Row]) -> Result<Vec<AuditEntry>> {
            rows.iter()
                .map(|r| {
                    Ok(AuditEntry {
                        id: r.try_get("id")?,
                        at: r.try_get("at")?,
                        actor: r.try_get("actor")?,
                        action: r.try_get("action")?,
                        username: r.try_get("username")?,
                        directory_id: r.try_get("directory_id")?,
                        before: parse_json(r.try_get("before_json")?)?,
                        after: parse_json(r.try_get("after_json")?)?,
                        detail: r.try_get("detail")?,
                    })
                })
                .collect()
        }

        fn user_from_row(row: &<$db as sqlx::Database>::Row) -> Result<MfaUser> {
            $crate::common::user_from_columns(
                row.try_get("username")?,
                row.try_get("enabled")?,
                &row.try_get::<String, _>("source")?,
                |name| row.try_get(name),
            )
        }

        fn run_from_row(row: &<$db as sqlx::Database>::Row) -> Result<SyncRun> {
            Ok(SyncRun {
                id: row.try_get("id")?,
                started_at: row.try_get("started_at")?,
                finished_at: row.try_get("finished_at")?,
                mode: row.try_get("mode")?,
                created: row.try_get("created")?,
                updated: row.try_get("updated")?,
                enabled: row.try_get("enabled")?,
                disabled: row.try_get("disabled")?,
                removed: row.try_get("removed")?,
                unchanged: row.try_get("unchanged")?,
                error: row.try_get("error")?,
                entries_read: row.try_get("entries_read")?,
                interrupted: row.try_get("interrupted")?,
                note: row.try_get("note")?,
            })
        }

        fn approval_from_row(row: &<$db as sqlx::Database>::Row) -> Result<$crate::Approval> {
            let changes: String = row.try_get("changes_json")?;
            let status: String = row.try_get("status")?;
            Ok($crate::Approval {
                id: row.try_get("id")?,
                created_at: row.try_get("created_at")?,
                status: $crate::common::parse_status(&status)?,
                fingerprint: row.try_get("fingerprint")?,
                changes: $crate::common::parse_held(&changes)?,
                decided_at: row.try_get("decided_at")?,
                decided_by: row.try_get("decided_by")?,
                detail: row.try_get("detail")?,
            })
        }

        fn token_from_row(row: &<$db as sqlx::Database>::Row) -> Result<$crate::AuthToken> {
            Ok($crate::AuthToken {
                token_hash: row.try_get("token_hash")?,
                kind: {
                    let kind: String = row.try_get("kind")?;
                    $crate::TokenKind::parse(&kind).ok_or_else(|| {
                        $crate::StoreError::Corrupt(format!("unknown token kind {kind:?}"))
                    })?
                },
                username: row.try_get("username")?,
                label: row.try_get("label")?,
                csrf: row.try_get("csrf")?,
                created_at: row.try_get("created_at")?,
                expires_at: row.try_get("expires_at")?,
            })
        }

        fn config_from_row(row: &<$db as sqlx::Database>::Row) -> Result<ConfigVersion> {
            Ok(ConfigVersion {
                version: row.try_get("version")?,
                created_at: row.try_get("created_at")?,
                toml: row.try_get("toml")?,
            })
        }

        fn lease_from_row(row: &<$db as sqlx::Database>::Row) -> Result<$crate::Lease> {
            Ok($crate::Lease {
                holder: row.try_get("holder")?,
                instance: row.try_get("instance")?,
                token: row.try_get("token")?,
                expires_ms: row.try_get("expires_ms")?,
                pinned: row.try_get("pinned")?,
            })
        }

        fn server_from_row(row: &<$db as sqlx::Database>::Row) -> Result<$crate::ServerInfo> {
            Ok($crate::ServerInfo {
                name: row.try_get("name")?,
                instance: row.try_get("instance")?,
                address: row.try_get("address")?,
                version: row.try_get("version")?,
                started_ms: row.try_get("started_ms")?,
                heartbeat_ms: row.try_get("heartbeat_ms")?,
                lease_ms: row.try_get("lease_ms")?,
            })
        }

        impl $store {
            /// The lease row, locked until the end of `tx`.
            async fn lease_locked(&self, tx: &mut Tx) -> Result<$crate::Lease> {
                let row = sqlx::query(&self.sql.select_lease_locked)
                    .fetch_optional(&mut **tx)
                    .await?
                    .ok_or_else(|| StoreError::Corrupt("the sync_lease row is missing".into()))?;
                lease_from_row(&row)
            }

            /// The fencing check of a sync write, inside its transaction (see
            /// `Store::set_fence`): the lease row stays locked until the
            /// transaction ends, so nobody can take the lease before it commits.
            async fn check_fence(&self, tx: &mut Tx) -> Result<()> {
                let Some(fence) = self.fence.get() else {
                    return Ok(());
                };
                let lease = self.lease_locked(tx).await?;
                match $crate::common::fence_error(&fence, &lease, $crate::common::now_ms()) {
                    Some(e) => Err(e),
                    None => Ok(()),
                }
            }

            /// Renew the fence's lease inside a sync's write transaction, where
            /// that transaction keeps the renewal task out (`Sql::renew_lease_in_tx`):
            /// only while it is still held and live, so an expired or lost lease
            /// is still refused at commit.
            async fn renew_lease_in(&self, tx: &mut Tx) -> Result<()> {
                let (Some(sql), Some(fence)) = (self.sql.renew_lease_in_tx, self.fence.get()) else {
                    return Ok(());
                };
                let now = $crate::common::now_ms();
                sqlx::query(sql)
                    .bind(now.saturating_add(fence.period_ms))
                    .bind(fence.holder.as_str())
                    .bind(fence.instance.as_str())
                    .bind(fence.token)
                    .bind(now)
                    .execute(&mut **tx)
                    .await?;
                Ok(())
            }

            /// Audit rows by multi-row INSERTs (PostgreSQL; SQLite has its own
            /// `write_audit`, in sqlite.rs).
            #[allow(dead_code)]
            async fn write_audit_multirow(&self, tx: &mut Tx, rows: &[AuditRow<'_>], at: &str) -> Result<()> {
                for chunk in rows.chunks(AUDIT_CHUNK) {
                    let sql = self.sql.insert_audit(chunk.len());
                    let mut q = sqlx::query(&sql);
                    for r in chunk {
                        q = q
                            .bind(at)
                            .bind(r.actor)
                            .bind(r.action)
                            .bind(r.username)
                            .bind(r.directory_id)
                            .bind(r.before.as_deref())
                            .bind(r.after.as_deref())
                            .bind(r.detail);
                    }
                    q.execute(&mut **tx).await?;
                }
                Ok(())
            }

            /// Creates by multi-row INSERTs (PostgreSQL; SQLite has its own
            /// `create_users`, in sqlite.rs).
            #[allow(dead_code)]
            async fn create_users_multirow(&self, tx: &mut Tx, creates: &[Change], at: &str) -> Result<()> {
                for chunk in creates.chunks(USER_CHUNK) {
                    let lowers: Vec<String> =
                        chunk.iter().map(|c| c.user.username.to_lowercase()).collect();
                    let sql = self.sql.insert_users(chunk.len());
                    let mut q = sqlx::query(&sql);
                    for (c, lower) in chunk.iter().zip(&lowers) {
                        q = bind_user!(q, &c.user, lower.as_str(), at, c.raw);
                    }
                    // In a savepoint, so that after a failure (which aborts a
                    // PostgreSQL transaction) the culprit can still be looked up.
                    let mut sp = sqlx::Connection::begin(&mut **tx).await?;
                    let done = q.execute(&mut *sp).await;
                    if let Err(e) = done {
                        sp.rollback().await?;
                        if let Some(clash) = self.find_clash(tx, chunk, &lowers).await? {
                            return Err(clash);
                        }
                        let what = match (chunk.first(), chunk.last()) {
                            (Some(a), Some(b)) if chunk.len() > 1 => format!(
                                "create of one of {} users ({} .. {})",
                                chunk.len(),
                                a.user.username,
                                b.user.username
                            ),
                            (Some(a), _) => format!("create {}", a.user.username),
                            _ => "create".to_string(),
                        };
                        return Err(map_unique(e, &what));
                    }
                    sp.commit().await?;
                }
                Ok(())
            }

            /// The first create of `chunk` that collides with a stored user, as an error.
            async fn find_clash(
                &self,
                tx: &mut Tx,
                chunk: &[Change],
                lowers: &[String],
            ) -> Result<Option<StoreError>> {
                let sql = self.sql.select_clashes(chunk.len());
                let mut q = sqlx::query(&sql);
                for lower in lowers {
                    q = q.bind(lower.as_str());
                }
                for c in chunk {
                    q = q.bind(c.user.directory_id.as_deref());
                }
                let clashes = q
                    .fetch_all(&mut **tx)
                    .await?
                    .iter()
                    .map(|r| {
                        Ok($crate::common::Clash {
                            username: r.try_get("username")?,
                            username_lower: r.try_get("username_lower")?,
                            directory_id: r.try_get("directory_id")?,
                            source: r.try_get("source")?,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok($crate::common::clash_error(chunk, lowers, &clashes))
            }

            /// Update or remove a run of changes with distinct directory_ids.
            async fn modify_users(&self, tx: &mut Tx, run: &[Change], at: &str) -> Result<()> {
                let keys: Vec<&str> = run
                    .iter()
                    .map(|c| $crate::common::change_key(c).unwrap_or_default())
                    .collect();
                let sql = self.sql.select_targets(keys.len());
                let mut q = sqlx::query(&sql);
                for k in &keys {
                    q = q.bind(*k);
                }
                let mut found = std::collections::HashMap::new();
                for row in q.fetch_all(&mut **tx).await? {
                    let id: Option<String> = row.try_get("directory_id")?;
                    let source: String = row.try_get("source")?;
                    if let Some(id) = id {
                        found.insert(id, source);
                    }
                }
                $crate::common::check_targets(run, &found)?;
                let remove = run.first().map(|c| c.action) == Some(Action::Remove);
                let done = if remove {
                    // a removal is a move into the recycle bin (migration 17)
                    self.bin_move(tx, run, &keys, at).await?;
                    let sql = self.sql.delete_users(keys.len());
                    let mut q = sqlx::query(&sql);
                    for k in &keys {
                        q = q.bind(*k);
                    }
                    q.execute(&mut **tx).await?
                } else {
                    let lowers: Vec<String> =
                        run.iter().map(|c| c.user.username.to_lowercase()).collect();
                    let sql = self.sql.update_users(run.len());
                    let mut q = sqlx::query(&sql);
                    for ((c, lower), key) in run.iter().zip(&lowers).zip(&keys) {
                        q = bind_user!(q.bind(*key), &c.user, lower.as_str(), at, c.raw);
                    }
                    let what = match run {
                        [one] => format!("{} {}", one.action.as_str(), one.user.username),
                        _ => format!("update of one of {} users", run.len()),
                    };
                    q.execute(&mut **tx).await.map_err(|e| map_unique(e, &what))?
                };
                if done.rows_affected() != run.len() as u64 {
                    return Err(StoreError::Conflict(format!(
                        "{} of {} changes found their directory user",
                        done.rows_affected(),
                        run.len()
                    )));
                }
                Ok(())
            }
        }

        /// A sync's write transaction in progress (`Store::begin_apply`).
        struct StoreApplying<'a> {
            store: &'a $store,
            tx: Tx,
            at: String,
            /// A write failed: what it wrote may be there in part (SQLite's
            /// creates are one statement each), so nothing more is written
            /// and nothing is committed.
            failed: bool,
            /// Writes so far (`after_write`).
            writes: u64,
            /// Creates that were restores from the recycle bin, so far.
            restored: usize,
        }

        impl StoreApplying<'_> {
            fn check_usable(&self) -> Result<()> {
                match self.failed {
                    true => Err(StoreError::Conflict(
                        "an earlier write of this sync's transaction failed: nothing is committed".into(),
                    )),
                    false => Ok(()),
                }
            }
        }

        #[async_trait::async_trait]
        impl $crate::Applying for StoreApplying<'_> {
            async fn write(&mut self, changes: &[Change]) -> Result<()> {
                self.check_usable()?;
                validate(changes)?;
                self.failed = true;
                self.write_checked(changes).await?;
                self.store.renew_lease_in(&mut self.tx).await?;
                self.failed = false;
                self.writes += 1;
                self.store.after_write(self.writes);
                Ok(())
            }

            async fn commit(self: Box<Self>, watermark: Option<&Watermark>) -> Result<()> {
                self.check_usable()?;
                self.commit_usable(watermark).await
            }

            fn restored(&self) -> usize {
                self.restored
            }
        }

        impl StoreApplying<'_> {
            async fn write_checked(&mut self, changes: &[Change]) -> Result<()> {
                let (store, at) = (self.store, self.at.as_str());
                let tx = &mut self.tx;
                let mut restored: std::collections::HashMap<String, ($crate::BinnedUser, String)> =
                    std::collections::HashMap::new();
                let mut rest = changes;
                while let Some(first) = rest.first() {
                    let len = match kind(first.action) {
                        Kind::Create => {
                            let len = run_len(rest, usize::MAX);
                            // a create of a binned directory_id is a restore
                            let found = store.bin_find(tx, &rest[..len]).await?;
                            store.create_users(tx, &rest[..len], at).await?;
                            let ids: Vec<&str> = found.keys().map(String::as_str).collect();
                            store.bin_take(tx, &ids).await?;
                            restored.extend(found.into_iter().map(|(id, b)| {
                                let detail = $crate::roles::bin::restore_detail(&b);
                                (id, (b, detail))
                            }));
                            len
                        }
                        Kind::Modify => {
                            let len = run_len(rest, UPDATE_CHUNK);
                            store.modify_users(tx, &rest[..len], at).await?;
                            len
                        }
                        Kind::Remove => {
                            let len = run_len(rest, DELETE_CHUNK);
                            store.modify_users(tx, &rest[..len], at).await?;
                            len
                        }
                    };
                    rest = &rest[len..];
                }
                // Audit rows (before/after JSON) are built a chunk at a time, so a
                // 100k-user plan never holds 100k JSON documents at once.
                for chunk in changes.chunks(AUDIT_CHUNK) {
                    let rows = chunk
                        .iter()
                        .map(|c| AuditRow::for_change(c, &restored))
                        .collect::<Result<Vec<_>>>()?;
                    store.write_audit(tx, &rows, at).await?;
                }
                // the emails these changes call for, in the same transaction (issue 19)
                store.outbox_compose(tx, changes).await?;
                self.restored += restored.len();
                Ok(())
            }

            async fn commit_usable(self: Box<Self>, watermark: Option<&Watermark>) -> Result<()> {
                let StoreApplying { store, mut tx, at, .. } = *self;
                if let Some(w) = watermark {
                    sqlx::query(
                        "INSERT INTO watermark (id, kind, server, value, items_fingerprint, mapping_fingerprint, updated_at) \
                         VALUES (1, $1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO UPDATE SET \
                         kind = excluded.kind, server = excluded.server, value = excluded.value, \
                         items_fingerprint = excluded.items_fingerprint, \
                         mapping_fingerprint = excluded.mapping_fingerprint, updated_at = excluded.updated_at",
                    )
                    .bind(w.kind.as_str())
                    .bind(w.server.as_str())
                    .bind(w.value.as_slice())
                    .bind(w.items_fingerprint.as_str())
                    .bind(w.mapping_fingerprint.as_str())
                    .bind(at.as_str())
                    .execute(&mut *tx)
                    .await?;
                    // The other domains' starting points: replaced as a whole.
                    sqlx::query("DELETE FROM domain_watermarks")
                        .execute(&mut *tx)
                        .await?;
                    for d in &w.domains {
                        sqlx::query(
                            "INSERT INTO domain_watermarks (domain, kind, server, value) \
                             VALUES ($1, $2, $3, $4)",
                        )
                        .bind(d.domain.as_str())
                        .bind(d.kind.as_str())
                        .bind(d.server.as_str())
                        .bind(d.value.as_slice())
                        .execute(&mut *tx)
                        .await?;
                    }
                }
                store.renew_lease_in(&mut tx).await?;
                store.check_fence(&mut tx).await?;
                tx.commit().await?;
                Ok(())
            }
        }

        impl $store {
            /// Fill the digest of rows written before the digest column
            /// existed (migration 5), in one transaction, a page of rows at a
            /// time (memory: one page); nothing to do after that.
            pub(crate) async fn fill_digests(&self) -> Result<()> {
                const PAGE: i64 = 1000;
                let sql = format!(
                    "{}, id FROM users WHERE digest IS NULL AND id > $1 ORDER BY id LIMIT $2",
                    self.sql.select_users.trim_end_matches(" FROM users")
                );
                let mut tx = self.begin().await?;
                let (mut after, mut filled) = (0i64, 0usize);
                loop {
                    let rows = sqlx::query(&sql).bind(after).bind(PAGE).fetch_all(&mut *tx).await?;
                    for r in &rows {
                        let id: i64 = r.try_get("id")?;
                        let u = user_from_row(r)?;
                        sqlx::query("UPDATE users SET digest = $1 WHERE id = $2")
                            .bind(mfasync_core::plan::digest(&u))
                            .bind(id)
                            .execute(&mut *tx)
                            .await?;
                        after = id;
                    }
                    filled += rows.len();
                    if (rows.len() as i64) < PAGE {
                        break;
                    }
                }
                if filled == 0 {
                    return Ok(());
                }
                tx.commit().await?;
                tracing::info!(users = filled, "filled the digests of stored users");
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl Store for $store {
            async fn close(&self) {
                self.wind_down().await;
                self.pool.close().await;
            }
        }
    };
}
pub(crate) use impl_store;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_users_are_stored_without_empty_fields_and_read_back_whole() {
        let mut u = MfaUser {
            username: "alice".into(),
            directory_id: Some("id-a".into()),
            dn: Some("uid=alice,dc=x".into()),
            primary_phone: Some("+14255550100".into()),
            enabled: true,
            sync_item: Some("ou=People,dc=x".into()),
            ..Default::default()
        };
        u.description = Some(String::new());
        let text = user_json(&u).unwrap_or_default();
        assert!(!text.contains("null"), "{text}");
        assert!(
            text.contains("\"description\":\"\""),
            "an empty string is kept: {text}"
        );
        let back = parse_json(Some(text)).unwrap_or_default();
        let whole = serde_json::to_value(&u).unwrap_or_default();
        assert_eq!(back, Some(whole.clone()));
        // a row written before the compact form reads the same
        assert_eq!(
            parse_json(Some(whole.to_string())).unwrap_or_default(),
            Some(whole)
        );
        // other JSON (not a user) is left as it is
        assert_eq!(
            parse_json(Some(r#"{"a":1}"#.into())).unwrap_or_default(),
            Some(serde_json::json!({"a": 1}))
        );
    }

    #[test]
    fn digest_pages_of_both_backends() {
        // SQLite: enabled as 0/1; PostgreSQL: true/false; an escaped source still reads
        let text = r#"[[1,"Ann","id-1","directory","OU=A",1,"00ff","0a0b"],
            [2,"bob","id-2","direct\u006fry",null,false,null,null],
            [3,"m","id-3","manual",null,0,"ab",null]]"#;
        let rows = parse_digests(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rows.len(), 3);
        let (id, d) = &rows[0];
        assert_eq!(*id, 1);
        assert_eq!(d.username, "Ann");
        assert_eq!(d.directory_id.as_deref(), Some("id-1"));
        assert_eq!(d.sync_item.as_deref(), Some("OU=A"));
        assert!(d.enabled);
        assert_eq!(d.digest.as_deref(), Some("00ff"));
        assert_eq!(d.raw_stamp.as_deref(), Some("0a0b"));
        assert_eq!(rows[1].1.raw_stamp, None);
        assert_eq!(rows[1].1.source, Source::Directory);
        assert!(!rows[1].1.enabled);
        assert_eq!(rows[1].1.digest, None);
        assert_eq!(rows[2].1.source, Source::Manual);
        assert!(!rows[2].1.enabled);
        assert!(parse_digests(r#"[[1,"a",null,"directory",null,"yes",null,null]]"#).is_err());
        assert!(parse_digests(r#"[[1,"a",null,"robot",null,true,null,null]]"#).is_err());
        // a page without the stamp column is not read as one
        assert!(parse_digests(r#"[[1,"a",null,"directory",null,true,null]]"#).is_err());
    }
}
