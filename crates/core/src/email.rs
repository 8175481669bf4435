//! Which users a cycle's changes email (issue 19 item 2): a welcome email to
//! a user created (or first enabled) by an item with `welcome_email = true`,
//! an update email when the MFA settings the user sees (primary phone,
//! backup phone, method) change. Pure: the binary renders and queues them.

use crate::plan::{Action, Change};
use crate::MfaUser;

/// The kind of a user email.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EmailKind {
    Welcome,
    Update,
    /// A sync cycle's summary to the administrators (`sync.summary`), not a user email.
    Summary,
}

impl EmailKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EmailKind::Welcome => "welcome",
            EmailKind::Update => "update",
            EmailKind::Summary => "summary",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "welcome" => Some(EmailKind::Welcome),
            "update" => Some(EmailKind::Update),
            "summary" => Some(EmailKind::Summary),
            _ => None,
        }
    }
}

/// The fields of an MFA user that an update email is about.
pub const SEEN_FIELDS: &[&str] = &["primary_phone", "backup_phone", "method"];

/// One email to queue: its kind, the user after the change, and (update)
/// the user before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned<'a> {
    pub kind: EmailKind,
    pub user: &'a MfaUser,
    pub before: Option<&'a MfaUser>,
}

/// The emails of a batch of changes and the users that would have had one
/// but have no email address.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decision<'a> {
    pub emails: Vec<Planned<'a>>,
    pub without_address: usize,
}

/// The emails `changes` call for. `welcomes(item_dn)` says whether the sync
/// item with that `dn` has `welcome_email = true`: it turns on both kinds
/// for its users (an installation that never asked for user emails sends
/// none). Only enabled users get one; welcome wins over update for a user.
pub fn decide<'a>(changes: &'a [Change], welcomes: impl Fn(&str) -> bool) -> Decision<'a> {
    let mut out = Decision::default();
    for ch in changes {
        let user = &ch.user;
        let item_sends = user.sync_item.as_deref().is_some_and(&welcomes);
        if !user.enabled || !item_sends {
            continue;
        }
        let was_enabled = ch.before.as_ref().is_some_and(|b| b.enabled);
        let kind = match ch.action {
            Action::Create => Some(EmailKind::Welcome),
            Action::Enable | Action::Update if !was_enabled => Some(EmailKind::Welcome),
            Action::Update => ch
                .before
                .as_ref()
                .filter(|b| seen_settings_differ(b, user))
                .map(|_| EmailKind::Update),
            Action::Enable | Action::Disable | Action::Remove => None,
        };
        let Some(kind) = kind else { continue };
        if address(user).is_none() {
            out.without_address += 1;
            continue;
        }
        out.emails.push(Planned {
            kind,
            user,
            before: ch.before.as_ref().filter(|_| kind == EmailKind::Update),
        });
    }
    out
}

/// The user's email address, trimmed, when it has one that looks like one.
pub fn address(user: &MfaUser) -> Option<&str> {
    user.email
        .as_deref()
        .map(str::trim)
        .filter(|e| e.contains('@') && !e.chars().any(|c| c.is_whitespace() || c.is_control()))
}

fn seen_settings_differ(before: &MfaUser, after: &MfaUser) -> bool {
    before.primary_phone != after.primary_phone
        || before.backup_phone != after.backup_phone
        || before.method != after.method
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, email: Option<&str>, item: &str) -> MfaUser {
        MfaUser {
            username: name.into(),
            directory_id: Some(format!("id-{name}")),
            email: email.map(Into::into),
            sync_item: Some(item.into()),
            primary_phone: Some("+15551230000".into()),
            method: Some("phone-call".into()),
            enabled: true,
            ..MfaUser::default()
        }
    }

    fn change(action: Action, before: Option<MfaUser>, after: MfaUser) -> Change {
        Change {
            action,
            fields: before
                .as_ref()
                .map(|b| b.diff_fields(&after))
                .unwrap_or_default(),
            user: after,
            before,
            reason: None,
            raw: None,
        }
    }

    fn kinds(d: &Decision) -> Vec<(EmailKind, String)> {
        d.emails
            .iter()
            .map(|e| (e.kind, e.user.username.clone()))
            .collect()
    }

    const SALES: &str = "ou=Sales,dc=x";
    const OTHER: &str = "ou=Other,dc=x";

    #[test]
    fn creates_by_a_welcoming_item_are_welcomed_others_not() {
        let a = user("a", Some("a@x.test"), SALES);
        let b = user("b", Some("b@x.test"), OTHER);
        let mut c = user("c", Some("c@x.test"), SALES);
        c.enabled = false;
        let changes = vec![
            change(Action::Create, None, a),
            change(Action::Create, None, b),
            change(Action::Create, None, c),
        ];
        let d = decide(&changes, |dn| dn == SALES);
        assert_eq!(kinds(&d), vec![(EmailKind::Welcome, "a".into())]);
        assert_eq!(d.without_address, 0);
    }

    #[test]
    fn users_without_an_address_are_counted() {
        let changes = vec![
            change(Action::Create, None, user("a", None, SALES)),
            change(Action::Create, None, user("b", Some("  "), SALES)),
            change(
                Action::Create,
                None,
                user("c", Some("not an address"), SALES),
            ),
            change(Action::Create, None, user("d", Some(" d@x.test "), SALES)),
        ];
        let d = decide(&changes, |_| true);
        assert_eq!(kinds(&d), vec![(EmailKind::Welcome, "d".into())]);
        assert_eq!(d.without_address, 3);
        assert_eq!(address(d.emails[0].user), Some("d@x.test"));
    }

    #[test]
    fn a_first_enable_is_a_welcome_and_wins_over_an_update() {
        let mut before = user("a", Some("a@x.test"), SALES);
        before.enabled = false;
        let mut after = user("a", Some("a@x.test"), SALES);
        after.primary_phone = Some("+15559990000".into());
        let enable = vec![change(Action::Update, Some(before.clone()), after)];
        let d = decide(&enable, |_| true);
        assert_eq!(kinds(&d), vec![(EmailKind::Welcome, "a".into())]);
        assert_eq!(d.emails[0].before, None);
        let only_enabled = vec![change(
            Action::Enable,
            Some(before),
            user("a", Some("a@x.test"), SALES),
        )];
        assert_eq!(kinds(&decide(&only_enabled, |_| true)).len(), 1);
    }

    #[test]
    fn updates_only_for_the_settings_the_user_sees() {
        let before = user("a", Some("a@x.test"), SALES);
        let mut phone = before.clone();
        phone.primary_phone = Some("+15559990000".into());
        let mut backup = before.clone();
        backup.backup_phone = Some("+15558880000".into());
        let mut method = before.clone();
        method.method = Some("text-message".into());
        let mut name = before.clone();
        name.last_name = Some("Renamed".into());
        let mut disabled = before.clone();
        disabled.enabled = false;
        for (after, expected) in [
            (phone, 1),
            (backup, 1),
            (method, 1),
            (name, 0),
            (disabled, 0),
        ] {
            let action = if after.enabled {
                Action::Update
            } else {
                Action::Disable
            };
            let changes = vec![change(action, Some(before.clone()), after.clone())];
            let d = decide(&changes, |_| true);
            assert_eq!(d.emails.len(), expected, "{after:?}");
            if let Some(e) = d.emails.first() {
                assert_eq!(e.kind, EmailKind::Update);
                assert_eq!(e.before, Some(&before));
            }
        }
        // the item's welcome_email = false: no update email either
        let mut phone = before.clone();
        phone.primary_phone = None;
        let changes = vec![change(Action::Update, Some(before), phone)];
        assert!(decide(&changes, |_| false).emails.is_empty());
    }

    #[test]
    fn removals_and_disables_send_nothing() {
        let a = user("a", Some("a@x.test"), SALES);
        let mut off = a.clone();
        off.enabled = false;
        let changes = vec![
            change(Action::Remove, Some(a.clone()), a.clone()),
            change(Action::Disable, Some(a), off),
        ];
        assert_eq!(decide(&changes, |_| true), Decision::default());
    }

    #[test]
    fn kinds_round_trip() {
        for k in [EmailKind::Welcome, EmailKind::Update] {
            assert_eq!(EmailKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(EmailKind::parse("other"), None);
    }
}
