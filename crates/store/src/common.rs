//! What the SQLite and PostgreSQL stores share: the SQL text (the same for both:
//! sqlx's SQLite driver accepts `$N` placeholders too), validation of a plan
//! before it is written, error mapping, and `impl_store!`, which writes the one
//! `Store` implementation for a concrete sqlx database type.
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

    pub(crate) fn for_change(ch: &'a Change) -> Result<Self> {
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
        Sql {
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

/// Write the `Store` implementation for `$store`, which must have fields
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
                kind: row.try_get("kind")?,
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
                self.failed = false;
                self.writes += 1;
                self.store.after_write(self.writes);
                Ok(())
            }

            async fn commit(self: Box<Self>, watermark: Option<&Watermark>) -> Result<()> {
                self.check_usable()?;
                self.commit_usable(watermark).await
            }
        }

        impl StoreApplying<'_> {
            async fn write_checked(&mut self, changes: &[Change]) -> Result<()> {
                let (store, at) = (self.store, self.at.as_str());
                let tx = &mut self.tx;
                let mut rest = changes;
                while let Some(first) = rest.first() {
                    let len = match kind(first.action) {
                        Kind::Create => {
                            let len = run_len(rest, usize::MAX);
                            store.create_users(tx, &rest[..len], at).await?;
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
                    let rows = chunk.iter().map(AuditRow::for_change).collect::<Result<Vec<_>>>()?;
                    store.write_audit(tx, &rows, at).await?;
                }
                // the emails these changes call for, in the same transaction (issue 19)
                store.outbox_compose(tx, changes).await?;
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
                store.check_fence(&mut tx).await?;
                tx.commit().await?;
                Ok(())
            }
        }

        impl $store {
            /// Fill the digest of rows written before the digest column
            /// existed (migration 5), in one transaction; nothing to do after that.
            pub(crate) async fn fill_digests(&self) -> Result<()> {
                let sql = format!("{}, id FROM users WHERE digest IS NULL", self.sql.select_users.trim_end_matches(" FROM users"));
                let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
                if rows.is_empty() {
                    return Ok(());
                }
                let mut tx = self.begin().await?;
                for r in &rows {
                    let id: i64 = r.try_get("id")?;
                    let u = user_from_row(r)?;
                    sqlx::query("UPDATE users SET digest = $1 WHERE id = $2")
                        .bind(mfasync_core::plan::digest(&u))
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                tracing::info!(users = rows.len(), "filled the digests of stored users");
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl Store for $store {
            async fn users(&self) -> Result<Vec<MfaUser>> {
                use futures_util::TryStreamExt;
                // Stream the rows: at most one row is held undecoded at a time.
                let mut rows = sqlx::query(&self.sql.select_users).fetch(&self.pool);
                let mut keyed: Vec<(String, MfaUser)> = Vec::new();
                while let Some(row) = rows.try_next().await? {
                    let u = user_from_row(&row)?;
                    keyed.push((u.username.to_lowercase(), u));
                }
                keyed.sort_by(|(la, a), (lb, b)| la.cmp(lb).then_with(|| a.username.cmp(&b.username)));
                Ok(keyed.into_iter().map(|(_, u)| u).collect())
            }

            async fn users_by(&self, key: $crate::UserKey, values: &[String]) -> Result<Vec<MfaUser>> {
                if let Some(found) = self.users_by_inline(key, values) {
                    return found;
                }
                let mut out = Vec::new();
                for chunk in values.chunks(500) {
                    let sql = self.sql.select_users_by(key, chunk.len());
                    let mut q = sqlx::query(&sql);
                    for v in chunk {
                        q = q.bind(v.as_str());
                    }
                    for row in q.fetch_all(&self.pool).await? {
                        out.push(user_from_row(&row)?);
                    }
                }
                Ok(out)
            }

            async fn insert_user(&self, user: &MfaUser) -> Result<()> {
                let at = now()?;
                let lower = user.username.to_lowercase();
                let sql = self.sql.insert_users(1);
                let mut tx = self.begin().await?;
                bind_user!(sqlx::query(&sql), user, lower.as_str(), at.as_str(), None)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| map_unique(e, &format!("insert {}", user.username)))?;
                let row = AuditRow {
                    action: "insert",
                    actor: ACTOR_ADMIN,
                    username: Some(&user.username),
                    directory_id: user.directory_id.as_deref(),
                    before: None,
                    after: Some($crate::common::user_json(user)?),
                    detail: None,
                };
                self.write_audit(&mut tx, &[row], &at).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn apply(&self, changes: &[Change], watermark: Option<&Watermark>) -> Result<()> {
                validate(changes)?; // before the transaction begins
                let mut w = self.begin_apply().await?;
                w.write(changes).await?;
                w.commit(watermark).await
            }

            async fn user_digests(
                &self,
                each: &mut (dyn FnMut(mfasync_core::plan::StoredDigest) + Send),
            ) -> Result<()> {
                let mut after: i64 = 0;
                loop {
                    let row = sqlx::query(&self.sql.select_digests)
                        .bind(after)
                        .bind($crate::common::DIGEST_PAGE)
                        .fetch_one(&self.pool)
                        .await?;
                    // borrowed from the row: the page's text is not copied again
                    let text: &str = sqlx::Row::try_get(&row, 0)?;
                    let page = $crate::common::parse_digests(text)?;
                    let n = page.len();
                    for (id, d) in page {
                        after = after.max(id);
                        each(d);
                    }
                    if n < $crate::common::DIGEST_PAGE as usize {
                        return Ok(());
                    }
                }
            }

            async fn restamp(&self, stamps: &[(String, mfasync_core::plan::RawMark)]) -> Result<()> {
                // In directory_id order (rows locked in one order by any
                // writer doing the same), one short transaction per chunk:
                // other writers wait for a chunk, not for all of them.
                let mut sorted: Vec<&(String, mfasync_core::plan::RawMark)> = stamps.iter().collect();
                sorted.sort_by(|a, b| a.0.cmp(&b.0));
                for chunk in sorted.chunks($crate::common::RESTAMP_CHUNK) {
                    let sql = self.sql.restamp_users(chunk.len());
                    let mut q = sqlx::query(&sql);
                    for (id, m) in chunk.iter().copied() {
                        q = q
                            .bind(id.as_str())
                            .bind(mfasync_core::plan::digest_text(m.digest))
                            .bind(mfasync_core::plan::raw_stamp(m.raw, m.digest));
                    }
                    let mut tx = self.begin().await?;
                    q.execute(&mut *tx).await?;
                    tx.commit().await?;
                }
                Ok(())
            }

            async fn begin_apply(&self) -> Result<Box<dyn $crate::Applying + '_>> {
                Ok(Box::new(StoreApplying {
                    store: self,
                    tx: self.begin().await?,
                    at: now()?,
                    failed: false,
                    writes: 0,
                }))
            }

            async fn watermark(&self) -> Result<Option<Watermark>> {
                // both tables in one read transaction (committed together)
                let mut tx = self.pool.begin().await?;
                let row = sqlx::query(
                    "SELECT kind, server, value, items_fingerprint, mapping_fingerprint FROM watermark WHERE id = 1",
                )
                .fetch_optional(&mut *tx)
                .await?;
                let Some(r) = row else { return Ok(None) };
                let domains = sqlx::query(
                    "SELECT domain, kind, server, value FROM domain_watermarks ORDER BY domain",
                )
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .map(|d| {
                    Ok(DomainWatermark {
                        domain: d.try_get("domain")?,
                        kind: MarkKind::from_stored(d.try_get("kind")?),
                        server: d.try_get("server")?,
                        value: d.try_get("value")?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
                Ok(Some(Watermark {
                    kind: MarkKind::from_stored(r.try_get("kind")?),
                    server: r.try_get("server")?,
                    value: r.try_get("value")?,
                    items_fingerprint: r.try_get("items_fingerprint")?,
                    mapping_fingerprint: r.try_get("mapping_fingerprint")?,
                    domains,
                }))
            }

            async fn put_config(&self, toml: &str) -> Result<i64> {
                let at = now()?;
                let mut tx = self.begin().await?;
                sqlx::query("UPDATE config_versions SET active = FALSE WHERE active")
                    .execute(&mut *tx)
                    .await?;
                let version = insert_config_version(&mut tx, &at, toml).await?;
                let detail = format!("config version {version}");
                let row = AuditRow::event("config", ACTOR_ADMIN, &detail);
                self.write_audit(&mut tx, &[row], &at).await?;
                tx.commit().await?;
                Ok(version)
            }

            async fn put_config_if_active(
                &self,
                toml: &str,
                based_on: i64,
                actor: &str,
                detail: &str,
            ) -> Result<Option<i64>> {
                let at = now()?;
                let mut tx = self.begin().await?;
                let done = sqlx::query(
                    "UPDATE config_versions SET active = FALSE WHERE active AND version = $1",
                )
                .bind(based_on)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() != 1 {
                    return Ok(None);
                }
                let version = insert_config_version(&mut tx, &at, toml).await?;
                let detail = format!("config version {version}: {detail}");
                let row = AuditRow::event("config", actor, &detail);
                self.write_audit(&mut tx, &[row], &at).await?;
                tx.commit().await?;
                Ok(Some(version))
            }

            async fn active_config(&self) -> Result<Option<ConfigVersion>> {
                let row = sqlx::query(
                    "SELECT version, created_at, toml FROM config_versions WHERE active",
                )
                .fetch_optional(&self.pool)
                .await?;
                row.as_ref().map(config_from_row).transpose()
            }

            async fn config_versions(&self) -> Result<Vec<ConfigVersion>> {
                let rows = sqlx::query(
                    "SELECT version, created_at, toml FROM config_versions ORDER BY version DESC",
                )
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(config_from_row).collect()
            }

            async fn rewrite_configs(
                &self,
                changes: &[$crate::ConfigRewrite],
                actor: &str,
                action: &str,
                detail: &str,
            ) -> Result<()> {
                let at = now()?;
                let mut tx = self.begin().await?;
                for c in changes {
                    let done = sqlx::query(
                        "UPDATE config_versions SET toml = $1 WHERE version = $2 AND toml = $3",
                    )
                    .bind(c.new.as_str())
                    .bind(c.version)
                    .bind(c.old.as_str())
                    .execute(&mut *tx)
                    .await?;
                    if done.rows_affected() != 1 {
                        return Err($crate::StoreError::Conflict(format!(
                            "configuration version {} changed meanwhile: nothing rewritten",
                            c.version
                        )));
                    }
                }
                let row = AuditRow::event(action, actor, detail);
                self.write_audit(&mut tx, &[row], &at).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn run_started(&self, mode: &str) -> Result<i64> {
                let at = now()?;
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO sync_runs (started_at, mode) VALUES ($1, $2) RETURNING id",
                )
                .bind(at.as_str())
                .bind(mode)
                .fetch_one(&self.pool)
                .await?;
                Ok(id)
            }

            async fn run_finished(&self, run: &SyncRun) -> Result<()> {
                let finished = match &run.finished_at {
                    Some(t) => t.clone(),
                    None => now()?,
                };
                let done = sqlx::query(
                    "UPDATE sync_runs SET finished_at = $1, created = $2, updated = $3, \
                     enabled = $4, disabled = $5, removed = $6, unchanged = $7, error = $8, \
                     entries_read = $9, interrupted = FALSE, note = $10 WHERE id = $11",
                )
                .bind(finished.as_str())
                .bind(run.created)
                .bind(run.updated)
                .bind(run.enabled)
                .bind(run.disabled)
                .bind(run.removed)
                .bind(run.unchanged)
                .bind(run.error.as_deref())
                .bind(run.entries_read)
                .bind(run.note.as_deref())
                .bind(run.id)
                .execute(&self.pool)
                .await?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::Conflict(format!("no sync run with id {}", run.id)));
                }
                Ok(())
            }

            async fn runs_interrupted(&self) -> Result<u64> {
                let done = sqlx::query(
                    "UPDATE sync_runs SET interrupted = TRUE WHERE finished_at IS NULL AND NOT interrupted",
                )
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected())
            }

            async fn runs(&self, limit: i64) -> Result<Vec<SyncRun>> {
                let rows = sqlx::query(
                    "SELECT id, started_at, finished_at, mode, created, updated, enabled, \
                     disabled, removed, unchanged, error, entries_read, interrupted, note FROM sync_runs \
                     ORDER BY id DESC LIMIT $1",
                )
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(run_from_row).collect()
            }

            async fn audit(&self, limit: i64) -> Result<Vec<AuditEntry>> {
                let rows = sqlx::query(&self.sql.select_audit)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                audit_entries(&rows)
            }

            async fn user_audit(
                &self,
                username: &str,
                directory_id: Option<&str>,
                limit: i64,
            ) -> Result<Vec<AuditEntry>> {
                let rows = sqlx::query(&self.sql.select_user_audit)
                    .bind(username)
                    .bind(directory_id)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                audit_entries(&rows)
            }

            async fn audit_purge(&self, before: &str, why: &str) -> Result<u64> {
                let at = now()?;
                let mut tx = self.begin().await?;
                let n = sqlx::query("DELETE FROM audit WHERE at < $1")
                    .bind(before)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if n > 0 {
                    let detail = format!("{n} audit entries from before {before} purged ({why})");
                    let row = AuditRow::event("audit-purged", "retention", &detail);
                    self.write_audit(&mut tx, &[row], &at).await?;
                }
                tx.commit().await?;
                Ok(n)
            }

            async fn audit_event(&self, actor: &str, action: &str, detail: &str) -> Result<()> {
                let at = now()?;
                let mut tx = self.begin().await?;
                let row = AuditRow::event(action, actor, detail);
                self.write_audit(&mut tx, &[row], &at).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn create_approval(
                &self,
                id: &str,
                fingerprint: &str,
                changes: &[$crate::HeldChange],
            ) -> Result<$crate::Approval> {
                let at = now()?;
                let json = $crate::common::held_json(changes)?;
                let mut tx = self.begin().await?;
                let older: Vec<String> =
                    sqlx::query_scalar("SELECT id FROM approvals WHERE status = 'pending' ORDER BY seq")
                        .fetch_all(&mut *tx)
                        .await?;
                sqlx::query(
                    "UPDATE approvals SET status = 'superseded', decided_at = $1, decided_by = $2, \
                     detail = $3 WHERE status = 'pending'",
                )
                .bind(at.as_str())
                .bind($crate::common::ACTOR_SYNC)
                .bind(format!("superseded by {id}"))
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO approvals (id, created_at, status, fingerprint, changes_json) \
                     VALUES ($1, $2, 'pending', $3, $4)",
                )
                .bind(id)
                .bind(at.as_str())
                .bind(fingerprint)
                .bind(json.as_str())
                .execute(&mut *tx)
                .await
                .map_err(|e| map_unique(e, &format!("create approval {id}")))?;
                let disable = changes.iter().filter(|c| c.action == "disable").count();
                let remove = changes.iter().filter(|c| c.action == "remove").count();
                let requested = format!(
                    "approval {id}: {disable} to disable, {remove} to remove, held for approval"
                );
                let superseded: Vec<String> = older
                    .iter()
                    .map(|o| format!("approval {o}: superseded by {id}"))
                    .collect();
                let mut rows: Vec<AuditRow<'_>> = superseded
                    .iter()
                    .map(|d| AuditRow::event("approval-superseded", $crate::common::ACTOR_SYNC, d.as_str()))
                    .collect();
                rows.push(AuditRow::event("approval-requested", $crate::common::ACTOR_SYNC, &requested));
                self.write_audit(&mut tx, &rows, &at).await?;
                self.check_fence(&mut tx).await?;
                tx.commit().await?;
                Ok($crate::Approval {
                    id: id.to_string(),
                    created_at: at,
                    status: $crate::ApprovalStatus::Pending,
                    fingerprint: fingerprint.to_string(),
                    changes: changes.to_vec(),
                    decided_at: None,
                    decided_by: None,
                    detail: None,
                })
            }

            async fn supersede_pending(&self, detail: &str) -> Result<Vec<String>> {
                let at = now()?;
                let mut tx = self.begin().await?;
                let ids: Vec<String> = sqlx::query_scalar(
                    "SELECT id FROM approvals WHERE status = 'pending' ORDER BY seq",
                )
                .fetch_all(&mut *tx)
                .await?;
                if ids.is_empty() {
                    return Ok(ids);
                }
                sqlx::query(
                    "UPDATE approvals SET status = 'superseded', decided_at = $1, decided_by = $2, \
                     detail = $3 WHERE status = 'pending'",
                )
                .bind(at.as_str())
                .bind($crate::common::ACTOR_SYNC)
                .bind(detail)
                .execute(&mut *tx)
                .await?;
                let texts: Vec<String> =
                    ids.iter().map(|id| format!("approval {id}: {detail}")).collect();
                let rows: Vec<AuditRow<'_>> = texts
                    .iter()
                    .map(|d| AuditRow::event("approval-superseded", $crate::common::ACTOR_SYNC, d.as_str()))
                    .collect();
                self.write_audit(&mut tx, &rows, &at).await?;
                self.check_fence(&mut tx).await?;
                tx.commit().await?;
                Ok(ids)
            }

            async fn approval(&self, id: &str) -> Result<Option<$crate::Approval>> {
                let sql = format!("{} WHERE id = $1", $crate::common::SELECT_APPROVALS);
                let row = sqlx::query(&sql).bind(id).fetch_optional(&self.pool).await?;
                row.as_ref().map(approval_from_row).transpose()
            }

            async fn approvals(
                &self,
                status: Option<$crate::ApprovalStatus>,
            ) -> Result<Vec<$crate::Approval>> {
                let rows = match status {
                    Some(st) => {
                        let sql = format!(
                            "{} WHERE status = $1 ORDER BY seq DESC",
                            $crate::common::SELECT_APPROVALS
                        );
                        sqlx::query(&sql).bind(st.as_str()).fetch_all(&self.pool).await?
                    }
                    None => {
                        let sql = format!(
                            "{} ORDER BY seq DESC",
                            $crate::common::SELECT_APPROVALS
                        );
                        sqlx::query(&sql).fetch_all(&self.pool).await?
                    }
                };
                rows.iter().map(approval_from_row).collect()
            }

            async fn decide_approval(
                &self,
                id: &str,
                status: $crate::ApprovalStatus,
                actor: &str,
                detail: Option<&str>,
            ) -> Result<$crate::Approval> {
                use $crate::ApprovalStatus as S;
                if !matches!(status, S::Approved | S::Rejected) {
                    return Err(StoreError::Conflict(format!(
                        "approval {id}: can only be approved or rejected, not {}",
                        status.as_str()
                    )));
                }
                let at = now()?;
                let mut tx = self.begin().await?;
                let sql = format!("{} WHERE id = $1", $crate::common::SELECT_APPROVALS);
                let row = sqlx::query(&sql).bind(id).fetch_optional(&mut *tx).await?;
                let Some(mut a) = row.as_ref().map(approval_from_row).transpose()? else {
                    return Err(StoreError::Conflict(format!("no approval with id {id:?}")));
                };
                if a.status != S::Pending {
                    return Err(StoreError::Conflict(format!(
                        "approval {id} is {}, not pending{}",
                        a.status.as_str(),
                        a.detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default()
                    )));
                }
                sqlx::query(
                    "UPDATE approvals SET status = $1, decided_at = $2, decided_by = $3, detail = $4 \
                     WHERE id = $5 AND status = 'pending'",
                )
                .bind(status.as_str())
                .bind(at.as_str())
                .bind(actor)
                .bind(detail)
                .bind(id)
                .execute(&mut *tx)
                .await?;
                let text = format!(
                    "approval {id}: {}{}",
                    status.as_str(),
                    detail.map(|d| format!(" ({d})")).unwrap_or_default()
                );
                let row = AuditRow::event(if status == S::Approved { "approval-approved" } else { "approval-rejected" }, actor, &text);
                self.write_audit(&mut tx, &[row], &at).await?;
                tx.commit().await?;
                a.status = status;
                a.decided_at = Some(at);
                a.decided_by = Some(actor.to_string());
                a.detail = detail.map(str::to_string);
                Ok(a)
            }

            async fn admin_set_password(&self, username: &str, password_hash: &str) -> Result<()> {
                let at = now()?;
                let mut tx = self.begin().await?;
                sqlx::query(
                    "INSERT INTO admins (username, password_hash, updated_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (username) DO UPDATE SET password_hash = excluded.password_hash, \
                     updated_at = excluded.updated_at",
                )
                .bind(username)
                .bind(password_hash)
                .bind(at.as_str())
                .execute(&mut *tx)
                .await?;
                // whoever signed in with the old password is signed out
                let ended = sqlx::query("DELETE FROM auth_tokens WHERE kind = 'session' AND username = $1")
                    .bind(username)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                let detail = match ended {
                    0 => format!("password of administrator {username} set"),
                    n => format!("password of administrator {username} set; {n} session(s) ended"),
                };
                let row = AuditRow::event("admin-password", ACTOR_ADMIN, &detail);
                self.write_audit(&mut tx, &[row], &at).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn admins(&self) -> Result<Vec<String>> {
                Ok(sqlx::query_scalar("SELECT username FROM admins ORDER BY username")
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn admin_remove(&self, username: &str, actor: &str) -> Result<Option<(u64, u64)>> {
                let at = now()?;
                let mut tx = self.begin().await?;
                let gone = sqlx::query("DELETE FROM admins WHERE username = $1")
                    .bind(username)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if gone == 0 {
                    return Ok(None);
                }
                let kinds: Vec<String> =
                    sqlx::query_scalar("DELETE FROM auth_tokens WHERE username = $1 RETURNING kind")
                        .bind(username)
                        .fetch_all(&mut *tx)
                        .await?;
                let sessions = kinds.iter().filter(|k| *k == "session").count() as u64;
                let tokens = kinds.len() as u64 - sessions;
                let detail = format!(
                    "administrator {username} removed; {sessions} session(s) ended, {tokens} API token(s) revoked"
                );
                let row = AuditRow::event("admin-removed", actor, &detail);
                self.write_audit(&mut tx, &[row], &at).await?;
                tx.commit().await?;
                Ok(Some((sessions, tokens)))
            }

            async fn admin_password_hash(&self, username: &str) -> Result<Option<String>> {
                Ok(
                    sqlx::query_scalar("SELECT password_hash FROM admins WHERE username = $1")
                        .bind(username)
                        .fetch_optional(&self.pool)
                        .await?,
                )
            }

            async fn token_create(&self, token: &$crate::AuthToken) -> Result<()> {
                let mut tx = self.begin().await?;
                sqlx::query(
                    "INSERT INTO auth_tokens (token_hash, kind, username, label, csrf, created_at, \
                     expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(token.token_hash.as_str())
                .bind(token.kind.as_str())
                .bind(token.username.as_str())
                .bind(token.label.as_deref())
                .bind(token.csrf.as_deref())
                .bind(token.created_at.as_str())
                .bind(token.expires_at.as_deref())
                .execute(&mut *tx)
                .await
                .map_err(|e| map_unique(e, "store token"))?;
                if token.kind == "api" {
                    let detail = format!(
                        "API token {} ({}) created for {}, expires {}",
                        $crate::common::short_hash(&token.token_hash),
                        token.label.as_deref().unwrap_or(""),
                        token.username,
                        token.expires_at.as_deref().unwrap_or("never")
                    );
                    let row = AuditRow::event("token-created", ACTOR_ADMIN, &detail);
                    self.write_audit(&mut tx, &[row], &token.created_at).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn token_get(&self, token_hash: &str) -> Result<Option<$crate::AuthToken>> {
                let sql = format!("{} WHERE token_hash = $1", $crate::common::SELECT_TOKENS);
                let row = sqlx::query(&sql).bind(token_hash).fetch_optional(&self.pool).await?;
                row.as_ref().map(token_from_row).transpose()
            }

            async fn tokens(&self, kind: &str) -> Result<Vec<$crate::AuthToken>> {
                let sql = format!(
                    "{} WHERE kind = $1 ORDER BY created_at DESC, token_hash",
                    $crate::common::SELECT_TOKENS
                );
                let rows = sqlx::query(&sql).bind(kind).fetch_all(&self.pool).await?;
                rows.iter().map(token_from_row).collect()
            }

            async fn token_delete(&self, token_hash: &str) -> Result<bool> {
                let at = now()?;
                let mut tx = self.begin().await?;
                let kind: Option<String> =
                    sqlx::query_scalar("DELETE FROM auth_tokens WHERE token_hash = $1 RETURNING kind")
                        .bind(token_hash)
                        .fetch_optional(&mut *tx)
                        .await?;
                if kind.as_deref() == Some("api") {
                    let detail = format!(
                        "API token {} revoked",
                        $crate::common::short_hash(token_hash)
                    );
                    let row = AuditRow::event("token-revoked", ACTOR_ADMIN, &detail);
                    self.write_audit(&mut tx, &[row], &at).await?;
                }
                tx.commit().await?;
                Ok(kind.is_some())
            }

            async fn tokens_delete_expired(&self, now: &str) -> Result<u64> {
                let done = sqlx::query(
                    "DELETE FROM auth_tokens WHERE expires_at IS NOT NULL AND expires_at < $1",
                )
                .bind(now)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected())
            }

            async fn close(&self) {
                self.wind_down().await;
                self.pool.close().await;
            }

            fn read_inline(&self) {
                self.read_inline_now();
            }

            fn set_composer(&self, composer: Option<std::sync::Arc<dyn $crate::Composer>>) {
                self.composer.set(composer);
            }

            async fn outbox_enqueue(&self, emails: &[$crate::NewEmail]) -> Result<u64> {
                self.outbox_enqueue_impl(emails).await
            }

            async fn outbox(
                &self,
                status: Option<$crate::OutboxStatus>,
                limit: i64,
            ) -> Result<Vec<$crate::OutboxEmail>> {
                self.outbox_list_impl(status, limit).await
            }

            async fn outbox_claim(
                &self,
                now_ms: i64,
                claim_until_ms: i64,
            ) -> Result<Option<$crate::OutboxEmail>> {
                self.outbox_claim_impl(now_ms, claim_until_ms).await
            }

            async fn outbox_sent(&self, id: i64, now_ms: i64) -> Result<()> {
                self.outbox_sent_impl(id, now_ms).await
            }

            async fn outbox_attempt_failed(
                &self,
                id: i64,
                error: &str,
                retry_at_ms: Option<i64>,
            ) -> Result<()> {
                self.outbox_attempt_failed_impl(id, error, retry_at_ms).await
            }

            async fn outbox_retry(
                &self,
                target: &$crate::RetryTarget,
                now_ms: i64,
                actor: &str,
            ) -> Result<Vec<i64>> {
                self.outbox_retry_impl(target, now_ms, actor).await
            }

            fn set_fence(&self, fence: Option<$crate::Fence>) {
                self.fence.set(fence);
            }

            async fn server_heartbeat(&self, server: &$crate::ServerInfo) -> Result<()> {
                sqlx::query(
                    "INSERT INTO servers (name, instance, address, version, started_ms, heartbeat_ms, \
                     lease_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (name) DO UPDATE SET \
                     instance = excluded.instance, address = excluded.address, \
                     version = excluded.version, started_ms = excluded.started_ms, \
                     heartbeat_ms = excluded.heartbeat_ms, lease_ms = excluded.lease_ms",
                )
                .bind(server.name.as_str())
                .bind(server.instance.as_str())
                .bind(server.address.as_str())
                .bind(server.version.as_str())
                .bind(server.started_ms)
                .bind(server.heartbeat_ms)
                .bind(server.lease_ms)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn servers(&self) -> Result<Vec<$crate::ServerInfo>> {
                let sql = format!("{} ORDER BY name", $crate::common::SELECT_SERVERS);
                let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
                rows.iter().map(server_from_row).collect()
            }

            async fn server_forget(&self, name: &str) -> Result<bool> {
                let at = now()?;
                let mut tx = self.begin().await?;
                let done = sqlx::query("DELETE FROM servers WHERE name = $1")
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
                let found = done.rows_affected() > 0;
                if found {
                    let detail = format!("server {name} forgotten");
                    let row = AuditRow::event("server-forgotten", ACTOR_ADMIN, &detail);
                    self.write_audit(&mut tx, &[row], &at).await?;
                }
                tx.commit().await?;
                Ok(found)
            }

            async fn lease(&self) -> Result<$crate::Lease> {
                let row = sqlx::query($crate::common::SELECT_LEASE)
                    .fetch_optional(&self.pool)
                    .await?
                    .ok_or_else(|| StoreError::Corrupt("the sync_lease row is missing".into()))?;
                lease_from_row(&row)
            }

            async fn lease_acquire(
                &self,
                name: &str,
                instance: &str,
                now_ms: i64,
                period_ms: i64,
            ) -> Result<$crate::Lease> {
                let mut tx = self.begin().await?;
                let mut l = self.lease_locked(&mut tx).await?;
                let mine = l.holder.as_deref() == Some(name) && l.instance.as_deref() == Some(instance);
                let allowed = l.pinned.as_deref().map_or(true, |p| p == name);
                let expires = now_ms.saturating_add(period_ms);
                let mut event = None;
                if !allowed {
                    if mine {
                        event = Some(format!(
                            "server {name} gave the sync lease up: synchronization is pinned to server {}",
                            l.pinned.as_deref().unwrap_or_default()
                        ));
                        l.holder = None;
                        l.instance = None;
                        l.expires_ms = 0;
                    }
                } else if mine {
                    l.expires_ms = expires;
                } else if l.holder.is_none() || l.expires_ms <= now_ms || l.holder.as_deref() == Some(name) {
                    let was = match (&l.holder, l.expires_ms <= now_ms) {
                        (None, _) => "it was free".to_string(),
                        (Some(h), _) if h == name => "a restart of the same server".to_string(),
                        (Some(h), true) => format!("the lease of server {h} had expired"),
                        (Some(h), false) => format!("held by server {h}"),
                    };
                    l.holder = Some(name.to_string());
                    l.instance = Some(instance.to_string());
                    l.token += 1;
                    l.expires_ms = expires;
                    event = Some(format!(
                        "server {name} took the sync lease, fencing token {} ({was})",
                        l.token
                    ));
                }
                if let Some(detail) = event {
                    sqlx::query(
                        "UPDATE sync_lease SET holder = $1, instance = $2, token = $3, expires_ms = $4 \
                         WHERE id = 1",
                    )
                    .bind(l.holder.as_deref())
                    .bind(l.instance.as_deref())
                    .bind(l.token)
                    .bind(l.expires_ms)
                    .execute(&mut *tx)
                    .await?;
                    let at = now()?;
                    let row = AuditRow::event("sync-lease", name, &detail);
                    self.write_audit(&mut tx, &[row], &at).await?;
                } else if mine && allowed {
                    sqlx::query("UPDATE sync_lease SET expires_ms = $1 WHERE id = 1")
                        .bind(l.expires_ms)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(l)
            }

            async fn lease_release(&self, name: &str, instance: &str) -> Result<bool> {
                let done = sqlx::query(
                    "UPDATE sync_lease SET holder = NULL, instance = NULL, expires_ms = 0 \
                     WHERE id = 1 AND holder = $1 AND instance = $2",
                )
                .bind(name)
                .bind(instance)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn sync_request(
                &self,
                full: bool,
                by: &str,
                on: &str,
                now_ms: i64,
            ) -> Result<$crate::Lease> {
                let at = now()?;
                let mut tx = self.begin().await?;
                let l = self.lease_locked(&mut tx).await?;
                sqlx::query(
                    "UPDATE sync_lease SET request_mode = CASE WHEN request_mode = 1 OR $1 = 1 \
                     THEN 1 ELSE 0 END, request_by = $2, request_on = $3, request_ms = $4 WHERE id = 1",
                )
                .bind(i64::from(full))
                .bind(by)
                .bind(on)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
                let runner = match &l.holder {
                    Some(h) if l.expires_ms > now_ms => format!("server {h}"),
                    _ => "the next server to run synchronization".to_string(),
                };
                let detail = format!(
                    "{} requested on server {on}, handed to {runner}",
                    if full { "full synchronization" } else { "synchronization" }
                );
                let row = AuditRow::event("sync-requested", by, &detail);
                self.write_audit(&mut tx, &[row], &at).await?;
                tx.commit().await?;
                Ok(l)
            }

            async fn sync_request_take(&self) -> Result<Option<$crate::SyncRequest>> {
                let mut tx = self.begin().await?;
                self.lease_locked(&mut tx).await?;
                let row = sqlx::query(
                    "SELECT request_mode, request_by, request_on, request_ms FROM sync_lease \
                     WHERE id = 1 AND request_mode IS NOT NULL",
                )
                .fetch_optional(&mut *tx)
                .await?;
                let Some(row) = row else {
                    return Ok(None);
                };
                let mode: i64 = row.try_get("request_mode")?;
                let req = $crate::SyncRequest {
                    full: mode == 1,
                    by: row.try_get::<Option<String>, _>("request_by")?.unwrap_or_default(),
                    on: row.try_get::<Option<String>, _>("request_on")?.unwrap_or_default(),
                    at_ms: row.try_get::<Option<i64>, _>("request_ms")?.unwrap_or_default(),
                };
                sqlx::query(
                    "UPDATE sync_lease SET request_mode = NULL, request_by = NULL, \
                     request_on = NULL, request_ms = NULL WHERE id = 1",
                )
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(Some(req))
            }

            async fn lease_pin(&self, name: Option<&str>, actor: &str) -> Result<$crate::Lease> {
                let at = now()?;
                let mut tx = self.begin().await?;
                let mut l = self.lease_locked(&mut tx).await?;
                sqlx::query("UPDATE sync_lease SET pinned = $1 WHERE id = 1")
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
                l.pinned = name.map(str::to_string);
                let detail = match name {
                    Some(n) => format!("synchronization pinned to server {n}"),
                    None => "synchronization no longer pinned: any server may run it".to_string(),
                };
                let row = AuditRow::event("servers-pin", actor, &detail);
                self.write_audit(&mut tx, &[row], &at).await?;
                tx.commit().await?;
                Ok(l)
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
