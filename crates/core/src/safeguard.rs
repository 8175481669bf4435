//! The seed's "Require administrator approval when more than X users will be
//! disabled or removed": split a plan into what is applied now and what is
//! held back as one pending approval.

use crate::plan::{Action, Change, Plan};

/// A plan split by the approval threshold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Split {
    /// Applied now: everything but held disables/removals.
    pub now: Vec<Change>,
    /// Held for approval (empty when under the threshold).
    pub held: Vec<Change>,
}

/// Hold back every disable and removal when there are more than `threshold`
/// of them; `None` means no approval step.
pub fn split(plan: &Plan, threshold: Option<u32>) -> Split {
    let is_departure = |c: &Change| matches!(c.action, Action::Disable | Action::Remove);
    let departures = plan.changes.iter().filter(|c| is_departure(c)).count();
    match threshold {
        Some(t) if departures > t as usize => Split {
            now: plan
                .changes
                .iter()
                .filter(|c| !is_departure(c))
                .cloned()
                .collect(),
            held: plan
                .changes
                .iter()
                .filter(|c| is_departure(c))
                .cloned()
                .collect(),
        },
        _ => Split {
            now: plan.changes.clone(),
            held: Vec::new(),
        },
    }
}

/// A stable fingerprint of a set of held changes (action + directory id), so a
/// rejected set is not asked about again until the directory changes.
pub fn fingerprint(held: &[Change]) -> String {
    let mut keys: Vec<String> = held
        .iter()
        .map(|c| {
            format!(
                "{}:{}",
                c.action.as_str(),
                c.user.directory_id.as_deref().unwrap_or(&c.user.username)
            )
        })
        .collect();
    keys.sort();
    keys.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MfaUser;

    fn ch(action: Action, n: usize) -> Change {
        Change {
            action,
            user: MfaUser {
                username: format!("u{n}"),
                directory_id: Some(format!("id{n}")),
                ..MfaUser::default()
            },
            before: None,
            fields: vec![],
            reason: None,
            raw: None,
        }
    }

    #[test]
    fn threshold_holds_all_departures_only_when_exceeded() {
        let mut plan = Plan::default();
        plan.changes.push(ch(Action::Create, 0));
        for i in 1..=6 {
            plan.changes.push(ch(
                if i % 2 == 0 {
                    Action::Disable
                } else {
                    Action::Remove
                },
                i,
            ));
        }
        let s = split(&plan, Some(5));
        assert_eq!((s.now.len(), s.held.len()), (1, 6));
        let s = split(&plan, Some(6));
        assert_eq!((s.now.len(), s.held.len()), (7, 0));
        let s = split(&plan, None);
        assert_eq!((s.now.len(), s.held.len()), (7, 0));
    }

    #[test]
    fn fingerprint_is_order_independent() {
        let a = vec![ch(Action::Disable, 1), ch(Action::Remove, 2)];
        let b = vec![ch(Action::Remove, 2), ch(Action::Disable, 1)];
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&a), fingerprint(&a[..1]));
    }
}
