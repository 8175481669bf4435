//! The sync plan: what must change in the MFA user database so it matches the
//! directory. Computed purely from the desired users and the stored users.

use crate::user::{MfaUser, Source};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
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
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub changes: Vec<Change>,
    pub unchanged: usize,
    /// Problems that did not stop the plan (e.g. a username already taken by a manual user).
    pub warnings: Vec<String>,
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
        let mut c = Counts {
            unchanged: self.unchanged,
            ..Counts::default()
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
    /// Whether a stored directory user (by directory_id) still exists in the
    /// directory at all (in any item or not).
    pub exists_in_directory: &'a dyn Fn(&str) -> bool,
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
/// - stored directory users no item holds: if gone from the directory ->
///   remove when `remove_deleted_users`, else disable; if still in the
///   directory -> the governing item's `when_removed` (disable / remove / keep);
///   a user whose item was deleted from the configuration is disabled;
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
                    "{}: two directory users share this username ({other} and {id}); the second is skipped",
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
            }),
            Some((k, cur)) => {
                seen.insert(k);
                let fields = cur.diff_fields(&d);
                if fields.is_empty() {
                    plan.unchanged += 1;
                } else {
                    let action = if fields == ["enabled"] && d.enabled {
                        Action::Enable
                    } else if fields == ["enabled"] {
                        Action::Disable
                    } else {
                        Action::Update
                    };
                    plan.changes.push(Change {
                        action,
                        user: d,
                        before: Some(cur.clone()),
                        fields,
                        reason: None,
                    });
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
        let item = cur.sync_item.clone().unwrap_or_default();
        let (action, reason) = if !(input.exists_in_directory)(id) {
            if input.remove_deleted_users {
                (
                    Some(Action::Remove),
                    "no longer in the directory".to_string(),
                )
            } else if cur.enabled {
                (
                    Some(Action::Disable),
                    "no longer in the directory".to_string(),
                )
            } else {
                (None, String::new())
            }
        } else {
            match (input.when_removed)(&item) {
                Some(crate::config::WhenRemoved::Keep) => (None, String::new()),
                Some(crate::config::WhenRemoved::Remove) => {
                    (Some(Action::Remove), format!("no longer in {item}"))
                }
                Some(crate::config::WhenRemoved::Disable) => (
                    cur.enabled.then_some(Action::Disable),
                    format!("no longer in {item}"),
                ),
                None => (
                    cur.enabled.then_some(Action::Disable),
                    format!("sync item {item} was removed from the configuration"),
                ),
            }
        };
        match action {
            None => plan.unchanged += 1,
            Some(Action::Disable) => {
                let mut after = cur.clone();
                after.enabled = false;
                plan.changes.push(Change {
                    action: Action::Disable,
                    user: after,
                    before: Some(cur.clone()),
                    fields: vec!["enabled"],
                    reason: Some(reason),
                });
            }
            Some(a) => plan.changes.push(Change {
                action: a,
                user: cur.clone(),
                before: Some(cur.clone()),
                fields: vec![],
                reason: Some(reason),
            }),
        }
    }
    plan.changes
        .sort_by(|a, b| (a.action, &a.user.username).cmp(&(b.action, &b.user.username)));
    plan
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
        let exists: Vec<String> = exists.iter().map(|s| s.to_string()).collect();
        compute(PlanInput {
            desired,
            current,
            exists_in_directory: &|id| exists.iter().any(|e| e == id),
            when_removed: &|item| (item == "ou=a").then_some(wr),
            remove_deleted_users: rm,
            keep_as_is: &|id| id == "keep",
        })
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
}
