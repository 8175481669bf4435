//! The sync plan: what must change in the MFA user database so it matches the
//! directory. Computed purely from the desired users and the stored users.

use crate::presence::Presence;
use crate::user::{MfaUser, Source};
use serde::{Deserialize, Serialize};

mod planner;
pub use planner::Planner;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Action {
    Create,
    Update,
    Enable,
    Disable,
    Remove,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Enable => "enable",
            Action::Disable => "disable",
            Action::Remove => "remove",
        }
    }
}

/// One change to one MFA user. `user` is the state after the change (for
/// `Remove`, the user as it was); `before` is the stored state for all but `Create`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub action: Action,
    pub user: MfaUser,
    pub before: Option<MfaUser>,
    pub fields: Vec<&'static str>,
    /// Why (for disable/remove): "left OU=Sales,…", "deleted from the directory".
    pub reason: Option<String>,
    /// The directory entry `user` was mapped from, when a full sync knows
    /// it: the store then writes the row's raw stamp ([`raw_stamp`]).
    pub raw: Option<RawMark>,
}

/// A user as mapped by a full sync from one directory entry: the entry's
/// [`RawSeed::entry`] hash and the [`digest_bits`] of the mapped user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawMark {
    pub raw: u128,
    pub digest: u128,
}

/// What the mapping of a directory entry depends on besides the entry: the
/// build (`build`: anything that changes with the binary, so new mapping
/// code or phone metadata never trusts an old stamp), the attribute mapping
/// and the item's settings. [`RawSeed::entry`] hashes an entry on top.
#[derive(Clone)]
pub struct RawSeed(sha2::Sha256);

impl RawSeed {
    pub fn new(
        build: &str,
        attrs: &crate::config::Attributes,
        item: &crate::config::SyncItem,
    ) -> Self {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(b"mfasync-raw-v1");
        for part in [
            build.to_string(),
            format!("{attrs:?}"),
            format!("{:?}", item.without_id()),
        ] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        RawSeed(h)
    }

    /// A hash of everything the mapping reads of `e` (its DN, every
    /// attribute and value in the order received) with this seed.
    pub fn entry(&self, e: &crate::Entry) -> u128 {
        use sha2::Digest;
        let mut h = self.0.clone();
        h.update((e.dn.len() as u64).to_le_bytes());
        h.update(e.dn.as_bytes());
        for (name, values) in e.attrs.iter() {
            h.update((name.len() as u64).to_le_bytes());
            h.update(name.as_bytes());
            h.update((values.len() as u64).to_le_bytes());
            for v in values {
                h.update((v.len() as u64).to_le_bytes());
                h.update(v);
            }
        }
        first_128(&h.finalize())
    }
}

fn first_128(out: &[u8]) -> u128 {
    let mut first = [0u8; 16];
    first.copy_from_slice(&out[..16]);
    u128::from_be_bytes(first)
}

/// The raw stamp stored beside a user row: "the entry with hash `raw`
/// maps to a row with digest `digest`". A full sync that reads an entry
/// whose hash, combined with the stored row's digest, gives the stored
/// stamp knows the user is unchanged without mapping it (no attribute
/// copies, phone parsing or digest). A row written by anything else (an
/// incremental cycle, an administrator) gets another digest, so its old
/// stamp no longer matches.
/// Only the digest's first 64 bits count: what the planner keeps of a
/// stored row's digest.
pub fn raw_stamp_bits(raw: u128, digest: u128) -> u128 {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"mfasync-stamp-v2");
    h.update(raw.to_be_bytes());
    h.update(digest_head(digest).to_be_bytes());
    first_128(&h.finalize())
}

/// The first 64 bits of a [`digest_bits`]: what the planner compares (a
/// change going unseen is as likely as 2^-64, as for the raw stamp's).
pub fn digest_head(digest: u128) -> u64 {
    (digest >> 64) as u64
}

/// [`raw_stamp_bits`] as stored: 32 hex digits.
pub fn raw_stamp(raw: u128, digest: u128) -> String {
    digest_text(raw_stamp_bits(raw, digest))
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub changes: Vec<Change>,
    pub unchanged: usize,
    /// Problems that did not stop the plan (e.g. a username already taken by a manual user).
    pub warnings: Vec<String>,
    /// Changes applied but not listed in `changes` (a full sync writes its
    /// creates to the store as they are computed instead of holding them);
    /// `counts()` includes them. Never departures: those are always listed.
    pub unlisted: Counts,
    /// Why the directory read did not provably see everything (a limit hit,
    /// a lost connection mid-read): creates and updates of what was read
    /// stand, departures were not computed.
    pub incomplete_read: Option<String>,
    /// Creates the store turned into restores from the recycle bin (known
    /// once the plan is applied; counted among `created` too).
    pub restored: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub created: usize,
    pub updated: usize,
    pub enabled: usize,
    pub disabled: usize,
    pub removed: usize,
    pub unchanged: usize,
}

impl Plan {
    pub fn counts(&self) -> Counts {
        let u = &self.unlisted;
        let mut c = Counts {
            unchanged: self.unchanged + u.unchanged,
            created: u.created,
            updated: u.updated,
            enabled: u.enabled,
            disabled: u.disabled,
            removed: u.removed,
        };
        for ch in &self.changes {
            match ch.action {
                Action::Create => c.created += 1,
                Action::Update => c.updated += 1,
                Action::Enable => c.enabled += 1,
                Action::Disable => c.disabled += 1,
                Action::Remove => c.removed += 1,
            }
        }
        c
    }
}

/// Inputs for a full-sync plan.
pub struct PlanInput<'a> {
    /// Users held by some item, each already carrying its governing item's settings.
    pub desired: Vec<MfaUser>,
    /// Everything in the store.
    pub current: &'a [MfaUser],
    /// What the directory says about a stored directory user (by
    /// directory_id) that no item holds: deleted (proved), still there, or
    /// not known (left as it is).
    pub presence: &'a dyn Fn(&str) -> Presence,
    /// `when_removed` of the item (by its dn) that last governed a user;
    /// None when that item is no longer configured.
    pub when_removed: &'a dyn Fn(&str) -> Option<crate::config::WhenRemoved>,
    pub remove_deleted_users: bool,
    /// Stored users to leave exactly as they are this cycle (their directory
    /// entry exists but could not be mapped, e.g. it lost its username).
    pub keep_as_is: &'a dyn Fn(&str) -> bool,
}

/// Compute the plan of a full synchronization.
///
/// Rules (the seed's):
/// - desired users not stored -> create; stored and different -> update
///   (or enable when only `enabled` went from false to true);
/// - stored directory users no item holds: [`departure`] (deleted from the
///   directory, proved -> `remove_deleted_users`; still there -> the last
///   item's `when_removed`; not known -> left as it is);
/// - manual users are never touched.
pub fn compute(input: PlanInput<'_>) -> Plan {
    use std::collections::{HashMap, HashSet};
    let mut plan = Plan::default();
    let by_id: HashMap<&str, &MfaUser> = input
        .current
        .iter()
        .filter(|u| u.source == Source::Directory)
        .filter_map(|u| u.directory_id.as_deref().map(|id| (id, u)))
        .collect();
    let taken_by_manual: HashSet<String> = input
        .current
        .iter()
        .filter(|u| u.source == Source::Manual)
        .map(|u| u.username.to_lowercase())
        .collect();
    let mut seen: HashSet<&str> = HashSet::new();
    let mut desired_names: HashMap<String, String> = HashMap::new();
    // `desired` is consumed: each user moves into its change (no copies of
    // 100k users on a first sync).
    for d in input.desired {
        let Some(id) = d.directory_id.clone() else {
            continue;
        };
        let cur: Option<(&str, &MfaUser)> = by_id.get_key_value(id.as_str()).map(|(k, u)| (*k, *u));
        if taken_by_manual.contains(&d.username.to_lowercase()) {
            plan.warnings.push(format!(
                "{}: username already used by a manual MFA user; directory user {} skipped",
                d.username, id
            ));
            if let Some((k, _)) = cur {
                seen.insert(k);
            }
            continue;
        }
        if let Some(other) = desired_names.insert(d.username.to_lowercase(), id.clone()) {
            if other != id {
                plan.warnings.push(format!(
                    "{}: two directory users share this username; directory user {id} is skipped",
                    d.username
                ));
                if let Some((k, _)) = cur {
                    if seen.insert(k) {
                        plan.unchanged += 1;
                    }
                }
                continue;
            }
        }
        match cur {
            None => plan.changes.push(Change {
                action: Action::Create,
                user: d,
                before: None,
                fields: vec![],
                reason: None,
                raw: None,
            }),
            Some((k, cur)) => {
                seen.insert(k);
                match modify(d, cur) {
                    None => plan.unchanged += 1,
                    Some(c) => plan.changes.push(c),
                }
            }
        }
    }
    let mut gone: Vec<&MfaUser> = by_id
        .iter()
        .filter(|(id, _)| !seen.contains(*id))
        .filter(|(id, _)| {
            let keep = (input.keep_as_is)(id);
            if keep {
                plan.unchanged += 1;
            }
            !keep
        })
        .map(|(_, u)| *u)
        .collect();
    gone.sort_by(|a, b| a.username.cmp(&b.username));
    for cur in gone {
        let id = cur.directory_id.as_deref().unwrap_or_default();
        let (action, reason) = departure(
            cur.enabled,
            cur.sync_item.as_deref().unwrap_or_default(),
            (input.presence)(id),
            input.remove_deleted_users,
            input.when_removed,
        );
        match action {
            None => plan.unchanged += 1,
            Some(a) => plan.changes.push(departure_change(a, cur, reason)),
        }
    }
    sort_changes(&mut plan.changes);
    plan
}

/// What happens to a stored directory user no item holds: THE decision of
/// every cycle (full and incremental). Deleted (the directory proved it: a
/// tombstone, a delete, a lookup by unique id that found nothing) -> removed
/// when `remove_deleted_users`, else disabled; still in the directory (moved
/// out of the base DN, filtered out, out of its group) -> its last item's
/// `when_removed`, or disabled when that item is no longer configured; not
/// known -> left as it is (an absence is never a deletion). `None`: no change.
pub fn departure(
    enabled: bool,
    item: &str,
    presence: Presence,
    remove_deleted_users: bool,
    when_removed: &dyn Fn(&str) -> Option<crate::config::WhenRemoved>,
) -> (Option<Action>, String) {
    use crate::config::WhenRemoved;
    match presence {
        Presence::Unknown => (None, String::new()),
        Presence::Deleted => {
            let why = "deleted from the directory".to_string();
            if remove_deleted_users {
                (Some(Action::Remove), why)
            } else {
                (enabled.then_some(Action::Disable), why)
            }
        }
        Presence::Exists => match when_removed(item) {
            Some(WhenRemoved::Keep) => (None, String::new()),
            Some(WhenRemoved::Remove) => (Some(Action::Remove), format!("no longer in {item}")),
            Some(WhenRemoved::Disable) => (
                enabled.then_some(Action::Disable),
                format!("no longer in {item}"),
            ),
            None => (
                enabled.then_some(Action::Disable),
                format!("sync item {item} was removed from the configuration"),
            ),
        },
    }
}

/// The change a departure makes to the stored user `cur`.
pub fn departure_change(action: Action, cur: &MfaUser, reason: String) -> Change {
    if action == Action::Disable {
        let mut after = cur.clone();
        after.enabled = false;
        Change {
            action,
            user: after,
            before: Some(cur.clone()),
            fields: vec!["enabled"],
            reason: Some(reason),
            raw: None,
        }
    } else {
        Change {
            action,
            user: cur.clone(),
            before: Some(cur.clone()),
            fields: vec![],
            reason: Some(reason),
            raw: None,
        }
    }
}

/// The change that turns `cur` into `d` (same directory user), or None when
/// no field differs.
pub fn modify(d: MfaUser, cur: &MfaUser) -> Option<Change> {
    let fields = cur.diff_fields(&d);
    if fields.is_empty() {
        return None;
    }
    let action = if fields == ["enabled"] && d.enabled {
        Action::Enable
    } else if fields == ["enabled"] {
        Action::Disable
    } else {
        Action::Update
    };
    Some(Change {
        action,
        user: d,
        before: Some(cur.clone()),
        fields,
        reason: None,
        raw: None,
    })
}

/// A stable digest of everything a sync writes for a user (username, every
/// text field, enabled, source): 32 hex digits of SHA-256 over a
/// length-prefixed encoding. The store keeps it beside each user, so a full
/// sync recognises an unchanged user without loading its row. Changing the
/// encoding only costs one slower sync (every digest differs, rows are then
/// compared field by field).
pub fn digest(u: &MfaUser) -> String {
    digest_text(digest_bits(u))
}

/// A digest (or raw stamp) as stored: 32 hex digits.
pub fn digest_text(bits: u128) -> String {
    format!("{bits:032x}")
}

/// `digest` as a number (its 32 hex digits are this, big-endian).
pub fn digest_bits(u: &MfaUser) -> u128 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"mfasync-user-v1");
    let mut put = |v: Option<&str>| match v {
        None => h.update([0u8]),
        Some(s) => {
            h.update([1u8]);
            h.update((s.len() as u64).to_le_bytes());
            h.update(s.as_bytes());
        }
    };
    put(Some(&u.username));
    for (_, v) in u.text_fields() {
        put(v.as_deref());
    }
    put(Some(if u.enabled { "1" } else { "0" }));
    put(Some(u.source.as_str()));
    first_128(&h.finalize())
}

/// What a full sync needs of a stored user before it knows whether the user
/// changed: identity, the departure inputs and the digest (`Store::user_digests`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDigest {
    pub username: String,
    pub directory_id: Option<String>,
    pub source: Source,
    pub sync_item: Option<String>,
    pub enabled: bool,
    /// `digest` of the stored row (None: not known yet).
    pub digest: Option<String>,
    /// The row's [`raw_stamp`] (None: none written).
    pub raw_stamp: Option<String>,
}

/// What the planner says about one desired user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Stored and identical (same digest), or skipped with a warning.
    Unchanged,
    /// Not stored: to create.
    Create(MfaUser),
    /// Stored with another digest: compare with the stored row (`modify`).
    Changed(MfaUser),
}

/// Sort changes as `compute` does: by action, then username.
pub fn sort_changes(changes: &mut [Change]) {
    changes.sort_by(|a, b| (a.action, &a.user.username).cmp(&(b.action, &b.user.username)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::WhenRemoved;

    fn u(name: &str, id: &str, item: &str) -> MfaUser {
        MfaUser {
            username: name.into(),
            directory_id: Some(id.into()),
            sync_item: Some(item.into()),
            enabled: true,
            ..MfaUser::default()
        }
    }

    fn run(
        desired: Vec<MfaUser>,
        current: &[MfaUser],
        exists: &[&str],
        wr: WhenRemoved,
        rm: bool,
    ) -> Plan {
        let exists_owned: Vec<String> = exists.iter().map(|s| s.to_string()).collect();
        let p = compute(PlanInput {
            desired: desired.clone(),
            current,
            presence: &|id| presence_of(&exists_owned, id),
            when_removed: &|item| (item == "ou=a").then_some(wr),
            remove_deleted_users: rm,
            keep_as_is: &|id| id == "keep",
        });
        // the streaming planner (digests instead of rows) must give the same plan
        assert_eq!(streamed(desired, current, exists, wr, rm), p);
        p
    }

    /// In these tests: an id in `exists` still exists, one starting with
    /// `?` could not be looked up, any other is proved deleted.
    fn presence_of(exists: &[String], id: &str) -> Presence {
        if exists.iter().any(|e| e == id) {
            Presence::Exists
        } else if id.starts_with('?') {
            Presence::Unknown
        } else {
            Presence::Deleted
        }
    }

    /// The plan as a full sync computes it with `Planner`.
    fn streamed(
        desired: Vec<MfaUser>,
        current: &[MfaUser],
        exists: &[&str],
        wr: WhenRemoved,
        rm: bool,
    ) -> Plan {
        let row = |id: &str| {
            current
                .iter()
                .find(|u| u.directory_id.as_deref() == Some(id))
                .cloned()
                .unwrap_or_else(|| panic!("no stored {id}"))
        };
        let mut p = Planner::new(current.iter().map(|u| stored_with_stamp(u, None)).collect());
        for e in exists {
            p.exists(e);
        }
        let exists_owned: Vec<String> = exists.iter().map(|s| s.to_string()).collect();
        for id in current.iter().filter_map(|u| u.directory_id.as_deref()) {
            if presence_of(&exists_owned, id) == Presence::Deleted {
                p.deleted(id);
            }
        }
        p.keep_as_is("keep");
        let mut changes = Vec::new();
        for d in desired {
            match p.desired(d) {
                Verdict::Unchanged => {}
                Verdict::Create(u) => changes.push(Change {
                    action: Action::Create,
                    user: u,
                    before: None,
                    fields: vec![],
                    reason: None,
                    raw: None,
                }),
                Verdict::Changed(u) => {
                    let cur = row(u.directory_id.as_deref().unwrap_or_default());
                    changes.extend(p.changed(u, &cur));
                }
            }
        }
        // as the engine does: the ids of users no item held, read again
        for id in current.iter().filter_map(|u| u.directory_id.as_deref()) {
            p.resolve_id(id);
        }
        for (id, a, why) in p.departures(&|item| (item == "ou=a").then_some(wr), rm) {
            changes.push(departure_change(a, &row(&id), why));
        }
        sort_changes(&mut changes);
        Plan {
            changes,
            unchanged: p.unchanged,
            warnings: p.warnings,
            unlisted: Counts::default(),
            incomplete_read: None,
            restored: 0,
        }
    }

    #[test]
    fn digest_sees_every_field() {
        let a = u("a", "1", "ou=a");
        assert_eq!(digest(&a), digest(&a.clone()));
        assert_eq!(digest(&a).len(), 32);
        let mut b = a.clone();
        b.enabled = false;
        assert_ne!(digest(&a), digest(&b));
        for name in crate::user::FIELDS {
            let mut b = a.clone();
            match b.text_field_mut(name) {
                Some(slot) => *slot = Some(format!("{name}!")),
                None => continue,
            }
            assert_ne!(digest(&a), digest(&b), "{name}");
        }
        // None and "" differ, and field boundaries count
        let mut c = a.clone();
        c.email = Some(String::new());
        assert_ne!(digest(&a), digest(&c));
        let (mut d, mut e) = (a.clone(), a.clone());
        d.first_name = Some("ab".into());
        e.first_name = Some("a".into());
        e.last_name = Some("b".into());
        d.last_name = Some(String::new());
        assert_ne!(digest(&d), digest(&e));
    }

    #[test]
    fn unlisted_changes_are_counted() {
        let p = Plan {
            unchanged: 2,
            unlisted: Counts {
                created: 5,
                ..Counts::default()
            },
            ..Plan::default()
        };
        assert_eq!(p.counts().created, 5);
        assert_eq!(p.counts().unchanged, 2);
    }

    #[test]
    fn planner_matches_compute_on_a_mixed_cycle() {
        // changed, unchanged, enabled again, disabled in the directory,
        // moved out (kept), gone, unmappable (kept as is), duplicate name
        let mut cur = vec![
            u("same", "1", "ou=a"),
            u("edit", "2", "ou=a"),
            u("back", "3", "ou=a"),
            u("off", "4", "ou=a"),
            u("gone", "5", "ou=a"),
            u("keep", "keep", "ou=a"),
            u("dup", "6", "ou=a"),
        ];
        cur[2].enabled = false;
        let mut edit = u("edit", "2", "ou=a");
        edit.email = Some("e@x".into());
        let mut off = u("off", "4", "ou=a");
        off.enabled = false;
        for rm in [true, false] {
            run(
                vec![
                    u("same", "1", "ou=a"),
                    edit.clone(),
                    u("back", "3", "ou=a"),
                    off.clone(),
                    u("new", "9", "ou=a"),
                    u("DUP", "8", "ou=a"),
                    u("dup", "6", "ou=a"),
                ],
                &cur,
                &["1", "2", "3", "4", "6", "8", "9", "keep"],
                WhenRemoved::Remove,
                rm,
            );
        }
    }

    fn actions(p: &Plan) -> Vec<(Action, String)> {
        p.changes
            .iter()
            .map(|c| (c.action, c.user.username.clone()))
            .collect()
    }

    #[test]
    fn create_update_unchanged() {
        let cur = vec![u("b", "2", "ou=a"), u("c", "3", "ou=a")];
        let mut b2 = u("b", "2", "ou=a");
        b2.email = Some("b@x".into());
        let p = run(
            vec![u("a", "1", "ou=a"), b2, u("c", "3", "ou=a")],
            &cur,
            &["1", "2", "3"],
            WhenRemoved::Disable,
            true,
        );
        assert_eq!(
            actions(&p),
            vec![(Action::Create, "a".into()), (Action::Update, "b".into())]
        );
        assert_eq!(p.changes[1].fields, vec!["email"]);
        assert_eq!(p.unchanged, 1);
        assert_eq!(p.counts().created, 1);
    }

    #[test]
    fn departures_follow_when_removed() {
        let cur = vec![u("gone", "9", "ou=a"), u("left", "8", "ou=a")];
        for (wr, want_left) in [
            (WhenRemoved::Disable, Some(Action::Disable)),
            (WhenRemoved::Remove, Some(Action::Remove)),
            (WhenRemoved::Keep, None),
        ] {
            let p = run(vec![], &cur, &["8"], wr, true);
            let left: Vec<_> = p
                .changes
                .iter()
                .filter(|c| c.user.username == "left")
                .map(|c| c.action)
                .collect();
            assert_eq!(left.first().copied(), want_left, "{wr:?}");
            assert!(p
                .changes
                .iter()
                .any(|c| c.user.username == "gone" && c.action == Action::Remove));
        }
        // not removing deleted users: they are disabled instead
        let p = run(vec![], &cur, &["8"], WhenRemoved::Keep, false);
        assert_eq!(actions(&p), vec![(Action::Disable, "gone".into())]);
        assert!(!p.changes[0].user.enabled);
    }

    #[test]
    fn enable_again_and_manual_users_untouched() {
        let mut off = u("x", "1", "ou=a");
        off.enabled = false;
        let manual = MfaUser {
            username: "boss".into(),
            source: Source::Manual,
            enabled: true,
            ..MfaUser::default()
        };
        let p = run(
            vec![u("x", "1", "ou=a"), u("Boss", "7", "ou=a")],
            &[off, manual],
            &["1", "7"],
            WhenRemoved::Disable,
            true,
        );
        assert_eq!(actions(&p), vec![(Action::Enable, "x".into())]);
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    }

    #[test]
    fn removed_item_disables_its_users() {
        let cur = vec![u("x", "1", "ou=old")];
        let p = run(vec![], &cur, &["1"], WhenRemoved::Keep, true);
        assert_eq!(actions(&p), vec![(Action::Disable, "x".into())]);
    }

    fn stored_with_stamp(u: &MfaUser, raw: Option<u128>) -> StoredDigest {
        StoredDigest {
            username: u.username.clone(),
            directory_id: u.directory_id.clone(),
            source: u.source,
            sync_item: u.sync_item.clone(),
            enabled: u.enabled,
            digest: Some(digest(u)),
            raw_stamp: raw.map(|r| raw_stamp(r, digest_bits(u))),
        }
    }

    #[test]
    fn a_raw_stamp_stands_for_the_mapped_user_only_under_the_same_rules() {
        let a = u("ann", "1", "ou=a");
        let mut b = u("bob", "2", "ou=a");
        let mut p = Planner::new(vec![
            stored_with_stamp(&a, Some(7)),
            stored_with_stamp(&b, Some(8)),
        ]);
        assert!(!p.unchanged_raw("1", 6), "another entry");
        assert!(!p.unchanged_raw("3", 7), "not stored");
        assert!(p.unchanged_raw("1", 7));
        assert!(!p.unchanged_raw("1", 7), "one entry per user and cycle");
        assert_eq!(p.unchanged, 1);
        // a row written since (another digest) has no valid stamp
        b.email = Some("b@example.com".into());
        let mut stale = stored_with_stamp(&u("bob", "2", "ou=a"), Some(8));
        stale.digest = Some(digest(&b));
        let mut p = Planner::new(vec![stale]);
        assert!(!p.unchanged_raw("2", 8));
        // a username taken by a manual user, or already by another entry:
        // `desired` decides (with its warning)
        let mut manual = u("ANN", "m", "ou=a");
        manual.source = Source::Manual;
        manual.directory_id = None;
        let mut p = Planner::new(vec![
            stored_with_stamp(&a, Some(7)),
            stored_with_stamp(&manual, None),
        ]);
        assert!(!p.unchanged_raw("1", 7));
        let mut p = Planner::new(vec![stored_with_stamp(&a, Some(7))]);
        assert!(matches!(
            p.desired(u("Ann", "9", "ou=a")),
            Verdict::Create(_)
        ));
        assert!(
            !p.unchanged_raw("1", 7),
            "ann is taken by entry 9 this cycle"
        );
        // and a stamp-known user's name is taken for the entries after it
        let mut p = Planner::new(vec![stored_with_stamp(&a, Some(7))]);
        assert!(p.unchanged_raw("1", 7));
        assert_eq!(p.desired(u("ANN", "9", "ou=a")), Verdict::Unchanged);
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
        assert!(p.departures(&|_| None, true).is_empty(), "ann was held");
    }

    #[test]
    fn the_raw_hash_reads_every_attribute_value_and_the_seed() {
        let attrs = crate::config::Attributes::default();
        let item = |cc: &str| {
            let mut i: crate::config::SyncItem =
                toml::from_str("kind = \"container\"\ndn = \"ou=a\"").unwrap();
            i.user.country_code = cc.into();
            i
        };
        let mut e = crate::Entry {
            dn: "uid=a,ou=a".into(),
            ..Default::default()
        };
        e.attrs.slot("mail".into()).push(b"a@example.com".to_vec());
        let seed = RawSeed::new("build 1", &attrs, &item("1"));
        let h = seed.entry(&e);
        assert_eq!(h, RawSeed::new("build 1", &attrs, &item("1")).entry(&e));
        assert_ne!(h, RawSeed::new("build 2", &attrs, &item("1")).entry(&e));
        assert_ne!(h, RawSeed::new("build 1", &attrs, &item("44")).entry(&e));
        let mut f = e.clone();
        f.attrs
            .slot("mail".into())
            .push(b"second@example.com".to_vec());
        assert_ne!(h, seed.entry(&f));
        let mut g = e.clone();
        g.dn = "uid=b,ou=a".into();
        assert_ne!(h, seed.entry(&g));
    }

    /// The decision table: only a proved deletion follows
    /// `remove_deleted_users`; a user still in the directory (moved out of the
    /// base DN, filtered out, out of its group) follows its item's
    /// `when_removed`; an unknown one is left as it is, whatever the settings.
    #[test]
    fn departure_decision_table() {
        use Presence::*;
        let wr = |item: &str| match item {
            "ou=d" => Some(WhenRemoved::Disable),
            "ou=r" => Some(WhenRemoved::Remove),
            "ou=k" => Some(WhenRemoved::Keep),
            _ => None,
        };
        let d = Some(Action::Disable);
        let r = Some(Action::Remove);
        for (presence, item, rm, enabled, want) in [
            (Deleted, "ou=d", true, true, r),
            (Deleted, "ou=k", true, true, r),
            (Deleted, "ou=k", false, true, d),
            (Deleted, "ou=r", false, true, d),
            (Deleted, "ou=r", false, false, None),
            (Exists, "ou=d", true, true, d),
            (Exists, "ou=d", false, true, d),
            (Exists, "ou=d", true, false, None),
            (Exists, "ou=r", true, true, r),
            (Exists, "ou=r", false, true, r),
            (Exists, "ou=k", true, true, None),
            (Exists, "ou=gone", true, true, d),
            (Unknown, "ou=r", true, true, None),
            (Unknown, "ou=d", true, true, None),
            (Unknown, "ou=gone", true, true, None),
        ] {
            let (got, why) = departure(enabled, item, presence, rm, &wr);
            assert_eq!(
                got, want,
                "{presence:?} {item} remove_deleted={rm} enabled={enabled}"
            );
            if presence == Deleted && got.is_some() {
                assert_eq!(why, "deleted from the directory");
            }
        }
    }

    #[test]
    fn moved_or_filtered_out_users_are_not_deleted_and_unknown_ones_stay() {
        // "left" still exists (moved out of the base DN / filtered out),
        // "gone" was proved deleted, "?lost" could not be looked up
        let cur = vec![
            u("left", "8", "ou=a"),
            u("gone", "9", "ou=a"),
            u("lost", "?1", "ou=a"),
        ];
        let p = run(vec![], &cur, &["8"], WhenRemoved::Disable, true);
        assert_eq!(
            actions(&p),
            vec![
                (Action::Disable, "left".into()),
                (Action::Remove, "gone".into())
            ]
        );
        assert_eq!(p.unchanged, 1, "the unknown one is left as it is");
        let left = &p.changes[0];
        assert_eq!(
            left.user.mobile_phone,
            left.before.as_ref().and_then(|b| b.mobile_phone.clone())
        );
        let p = run(vec![], &cur, &["8"], WhenRemoved::Keep, false);
        assert_eq!(actions(&p), vec![(Action::Disable, "gone".into())]);
        assert_eq!(p.unchanged, 2);
    }

    #[test]
    fn duplicate_usernames_are_skipped_not_fatal() {
        let p = run(
            vec![u("x", "1", "ou=a"), u("X", "2", "ou=a")],
            &[],
            &["1", "2"],
            WhenRemoved::Disable,
            true,
        );
        assert_eq!(actions(&p), vec![(Action::Create, "x".into())]);
        assert_eq!(p.warnings.len(), 1);
    }
    #[test]
    fn stored_names_are_known_whoever_holds_them() {
        let mut manual = u("Boss", "", "");
        manual.directory_id = None;
        manual.source = crate::Source::Manual;
        let mut p = Planner::new(vec![
            stored_with_stamp(&u("Alice", "1", "ou=a"), None),
            stored_with_stamp(&manual, None),
        ]);
        p.seal().unwrap();
        assert!(p.name_stored("alice"));
        assert!(p.name_stored("boss"));
        assert!(!p.name_stored("carol"));
    }

    #[test]
    fn two_stored_ids_with_one_index_hash_stop_the_planner() {
        let stored = vec![
            stored_with_stamp(&u("a", "1", "ou=a"), None),
            stored_with_stamp(&u("b", "2", "ou=a"), None),
        ];
        let mut p = Planner::with_short_keys(0, stored.clone());
        assert!(p.seal().is_err());
        let mut p = Planner::new(stored);
        assert!(p.seal().is_ok());
    }

    #[test]
    fn an_index_hit_of_another_id_is_never_unchanged() {
        // "2" is not stored but has the key of stored "1": same username and
        // fields, yet the digest covers the id, so it is not taken for "1"
        let a = u("a", "1", "ou=a");
        let mut p = Planner::with_short_keys(0, vec![stored_with_stamp(&a, Some(7))]);
        assert!(p.seal().is_ok());
        // another entry has another raw hash (it covers the entry's unique id)
        assert!(!p.unchanged_raw("2", 8));
        let v = p.desired(u("a", "2", "ou=a"));
        assert!(matches!(v, Verdict::Changed(_)), "{v:?}");
        assert_eq!(p.unchanged, 0);
    }

    #[test]
    fn departures_come_from_the_index_once_ids_are_read_again() {
        let cur = [
            u("a", "1", "ou=a"),
            u("b", "2", "ou=a"),
            u("c", "3", "ou=a"),
        ];
        let mut p = Planner::new(cur.iter().map(|u| stored_with_stamp(u, None)).collect());
        assert_eq!(p.desired(u("a", "1", "ou=a")), Verdict::Unchanged);
        p.exists("2");
        assert!(p.wants_ids());
        for id in ["1", "2", "3", "nope"] {
            p.resolve_id(id);
        }
        assert!(!p.wants_ids());
        assert_eq!(p.unseen(), vec!["3".to_string()]);
        p.deleted("3");
        let mut gone = p.departures(&|_| Some(WhenRemoved::Disable), true);
        gone.sort();
        assert_eq!(
            gone.iter()
                .map(|(id, a, _)| (id.as_str(), *a))
                .collect::<Vec<_>>(),
            vec![("2", Action::Disable), ("3", Action::Remove)]
        );
        // an id not read again (its row went away): left as it is
        let mut p = Planner::new(cur.iter().map(|u| stored_with_stamp(u, None)).collect());
        p.resolve_id("1");
        p.exists("1");
        let gone = p.departures(&|_| Some(WhenRemoved::Disable), true);
        assert_eq!(gone.len(), 1);
        assert_eq!(p.unchanged, 2);
        assert_eq!(p.warnings.len(), 1);
    }
}
