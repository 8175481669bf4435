//! The summary email of a sync cycle (issue 22 item 3): after a cycle that
//! changed users, held departures for a new approval, or failed, one email
//! to each `sync.summary` recipient with the mode, the outcome, the counts
//! and the usernames per action (the first [`LISTED`] of each). It is queued
//! in the outbox (delivered, retried and audited like welcome emails) once
//! the cycle's result is known; never for a quiet cycle or `sync --plan`.
//!
//! The usernames come from the store's composer ([`Tally`], armed with the
//! welcome emails by `emails::Armed`): a first sync writes its creates while
//! it reads and never lists them in the plan, but every write asks it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use crate::error::EngineError;
use crate::sync::Outcome;
use mfasync_core::config::Config;
use mfasync_core::email::EmailKind;
use mfasync_core::plan::{Action, Change};
use mfasync_core::report::SyncMode;
use mfasync_store::{ApprovalStatus, NewEmail, Store, SUMMARY_USERNAME};

/// Usernames listed per action; the rest are counted ("... and N more").
pub const LISTED: usize = 100;

const ACTIONS: [Action; 5] = [
    Action::Create,
    Action::Update,
    Action::Enable,
    Action::Disable,
    Action::Remove,
];

fn slot(a: Action) -> usize {
    match a {
        Action::Create => 0,
        Action::Update => 1,
        Action::Enable => 2,
        Action::Disable => 3,
        Action::Remove => 4,
    }
}

/// The usernames a cycle wrote, per action (at most [`LISTED`] each, so a
/// first sync of 100k users holds 500 names, not 100k).
#[derive(Default)]
pub struct Tally(Mutex<[Vec<String>; 5]>);

impl Tally {
    /// Note the changes of one write.
    pub fn record(&self, changes: &[Change]) {
        let mut names = match self.0.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        for c in changes {
            let list = &mut names[slot(c.action)];
            if list.len() < LISTED {
                list.push(c.user.username.clone());
            }
        }
    }

    fn names(&self) -> [Vec<String>; 5] {
        match self.0.lock() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// A cycle watched for its summary: started before it (None when
/// `sync.summary` is empty), ended with its result.
pub struct Watch {
    tally: Arc<Tally>,
    /// The approvals pending before the cycle: one found again is not news.
    pending_before: HashSet<String>,
}

impl Watch {
    pub async fn begin(store: &dyn Store, cfg: &Config) -> Option<Watch> {
        if cfg.sync.summary.is_empty() {
            return None;
        }
        // unreadable (the store is down: the cycle fails anyway): every
        // approval held counts as new
        let pending_before = match store.approvals(Some(ApprovalStatus::Pending)).await {
            Ok(list) => list.into_iter().map(|a| a.id).collect(),
            Err(_) => HashSet::new(),
        };
        Some(Watch {
            tally: Arc::new(Tally::default()),
            pending_before,
        })
    }

    /// What the store's composer records this cycle's writes into.
    pub fn tally(&self) -> Arc<Tally> {
        self.tally.clone()
    }

    /// Queue the summary of the cycle that ended with `result` (`mode`: the
    /// last one it ran, None when it failed before choosing). A failure to
    /// queue is logged: it never replaces the cycle's own result.
    pub async fn end(
        self,
        store: &dyn Store,
        cfg: &Config,
        mode: Option<SyncMode>,
        result: &crate::Result<Outcome>,
    ) {
        let ended = match result {
            Ok(o) => Ended::Done {
                outcome: o,
                names: self.tally.names(),
                new_approval: o
                    .pending_approval
                    .as_ref()
                    .is_some_and(|p| !self.pending_before.contains(&p.id)),
            },
            Err(e) => Ended::Failed(e),
        };
        let Some((subject, text)) = message(mode, &ended) else {
            return;
        };
        queue(store, cfg, subject, text).await;
    }
}

/// How a cycle ended, as its summary tells it.
pub enum Ended<'a> {
    Done {
        outcome: &'a Outcome,
        /// The usernames written per action ([`Tally`]).
        names: [Vec<String>; 5],
        /// Departures were held by an approval created in this cycle.
        new_approval: bool,
    },
    Failed(&'a EngineError),
}

/// The subject and text of the summary; None for a quiet cycle.
pub fn message(mode: Option<SyncMode>, ended: &Ended) -> Option<(String, String)> {
    let mode_text = mode.map_or("not chosen (the cycle failed before it began)", |m| {
        m.as_str()
    });
    let mut body = String::from("mfasync synchronization cycle\n\n");
    body.push_str(&format!("Mode:    {mode_text}\n"));
    let subject = match ended {
        Ended::Failed(e) => {
            // the history's error text: errors never hold a password
            body.push_str(&format!(
                "Outcome: FAILED, nothing changed\nError:   {e:#}\n"
            ));
            format!(
                "mfasync: synchronization FAILED ({})",
                mode.map_or("sync", |m| m.as_str())
            )
        }
        Ended::Done {
            outcome,
            names,
            new_approval,
        } => {
            let c = outcome.plan.counts();
            let changed = c.created + c.updated + c.enabled + c.disabled + c.removed;
            if changed == 0 && !new_approval {
                return None;
            }
            body.push_str("Outcome: ok\n\n");
            let restored = match outcome.plan.restored {
                0 => String::new(),
                n => format!(" ({n} restored from the recycle bin)"),
            };
            body.push_str(&format!(
                "Created:   {}{restored}\nUpdated:   {}\nEnabled:   {}\nDisabled:  {}\nRemoved:   {}\nUnchanged: {}\n",
                c.created, c.updated, c.enabled, c.disabled, c.removed, c.unchanged
            ));
            for a in ACTIONS {
                let count = match a {
                    Action::Create => c.created,
                    Action::Update => c.updated,
                    Action::Enable => c.enabled,
                    Action::Disable => c.disabled,
                    Action::Remove => c.removed,
                };
                if count > 0 {
                    body.push_str(&format!("\n{} ({count}):\n", title(a)));
                    list(&mut body, &names[slot(a)], count);
                }
            }
            if let Some(p) = &outcome.pending_approval {
                body.push_str(&format!(
                    "\nHeld for approval {} (disable {}, remove {}):\n",
                    p.id, p.disable, p.remove
                ));
                for a in [Action::Disable, Action::Remove] {
                    let held: Vec<String> = outcome
                        .safeguards
                        .held
                        .iter()
                        .filter(|h| h.action == a)
                        .map(|h| format!("{} {}", a.as_str(), h.username))
                        .collect();
                    list(&mut body, &held, held.len());
                }
                body.push_str(&format!(
                    "Review them with `mfasync approvals list` (or the portal's Approvals page) and\n\
                     decide with `mfasync approvals approve {id}` or `mfasync approvals reject {id}`.\n",
                    id = p.id
                ));
            }
            let what = match changed {
                0 => "departures held".to_string(),
                1 => "1 user changed".to_string(),
                n => format!("{n} users changed"),
            };
            format!(
                "mfasync: synchronization ({}): {what}",
                mode.map_or("sync", |m| m.as_str())
            )
        }
    };
    if let Ended::Done { outcome, .. } = ended {
        if let Some(note) = &outcome.note {
            body.push_str(&format!("\nNote: {note}\n"));
        }
    }
    // no public URL of the portal is configured: name the page and the commands
    body.push_str(
        "\nThis cycle is in the portal's Sync history page (/history) and in\n\
         `mfasync history`; each user's change is in `mfasync audit`.\n",
    );
    Some((subject, body))
}

fn title(a: Action) -> &'static str {
    match a {
        Action::Create => "Created",
        Action::Update => "Updated",
        Action::Enable => "Enabled",
        Action::Disable => "Disabled",
        Action::Remove => "Removed",
    }
}

/// `shown` one a line (sorted), then "... and N more" for the rest of `count`.
fn list(body: &mut String, shown: &[String], count: usize) {
    let mut shown: Vec<&String> = shown.iter().take(LISTED).collect();
    shown.sort();
    for n in &shown {
        body.push_str(&format!("  {n}\n"));
    }
    let more = count.saturating_sub(shown.len());
    if more > 0 {
        body.push_str(&format!("  ... and {more} more\n"));
    }
}

/// One outbox row per recipient (each delivered and retried on its own).
async fn queue(store: &dyn Store, cfg: &Config, subject: String, text: String) {
    if cfg.smtp.is_none() {
        // `config apply` refuses sync.summary without [smtp]; kept for safety
        crate::notify::warning("sync.summary is set but no [smtp] is configured: no summary email");
        return;
    }
    let mut emails = Vec::with_capacity(cfg.sync.summary.len());
    for to in &cfg.sync.summary {
        if to.parse::<lettre::message::Mailbox>().is_err() {
            crate::notify::error(format_args!(
                "sync.summary {to:?} is not a mailbox: no summary email to it"
            ));
            continue;
        }
        emails.push(NewEmail {
            kind: EmailKind::Summary,
            username: SUMMARY_USERNAME.into(),
            directory_id: None,
            recipient: to.clone(),
            subject: subject.clone(),
            text: text.clone(),
            html: None,
        });
    }
    if emails.is_empty() {
        return;
    }
    match store.outbox_enqueue(&emails).await {
        Ok(n) => {
            tracing::info!(target: "mfasync::emails", queued = n, "summary email of this cycle")
        }
        Err(e) => crate::notify::error(format_args!(
            "cannot queue the summary email of this cycle: {e}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mfasync_core::plan::Plan;
    use mfasync_core::MfaUser;

    fn change(action: Action, name: &str) -> Change {
        Change {
            action,
            user: MfaUser {
                username: name.into(),
                ..MfaUser::default()
            },
            before: None,
            fields: Vec::new(),
            reason: None,
            raw: None,
        }
    }

    fn outcome(changes: Vec<Change>) -> Outcome {
        Outcome {
            mode: SyncMode::Full,
            plan: Plan {
                changes,
                unchanged: 7,
                ..Plan::default()
            },
            note: None,
            entries_read: None,
            pending_approval: None,
            safeguards: Default::default(),
            spilled: None,
        }
    }

    #[test]
    fn lists_the_first_hundred_names_per_action_then_counts() {
        let mut changes: Vec<Change> = (0..250)
            .map(|i| change(Action::Create, &format!("user{i:03}")))
            .collect();
        changes.push(change(Action::Update, "phoned"));
        let tally = Tally::default();
        tally.record(&changes[..120]);
        tally.record(&changes[120..]);
        let o = outcome(changes);
        let ended = Ended::Done {
            outcome: &o,
            names: tally.names(),
            new_approval: false,
        };
        let (subject, body) = message(Some(SyncMode::Full), &ended).unwrap();
        assert_eq!(
            subject,
            "mfasync: synchronization (full): 251 users changed"
        );
        assert!(body.contains("Mode:    full\n"), "{body}");
        assert!(body.contains("Outcome: ok\n"), "{body}");
        assert!(body.contains("Created:   250\n"), "{body}");
        assert!(body.contains("Unchanged: 7\n"), "{body}");
        assert!(body.contains("\nCreated (250):\n  user000\n"), "{body}");
        assert!(body.contains("  user099\n  ... and 150 more\n"), "{body}");
        assert!(!body.contains("user100"), "{body}");
        assert!(body.contains("\nUpdated (1):\n  phoned\n"), "{body}");
        assert!(!body.contains("Enabled ("), "no empty sections: {body}");
        assert!(body.contains("mfasync history"), "{body}");
    }

    #[test]
    fn a_new_approval_is_news_one_found_again_is_not() {
        let mut o = outcome(Vec::new());
        o.pending_approval = Some(crate::approvals::PendingApproval {
            disable: 1,
            id: "ap1".into(),
            remove: 0,
        });
        o.safeguards.held.push(mfasync_core::report::HeldDeparture {
            action: Action::Disable,
            limit: "approval_threshold = 1".into(),
            username: "leaver".into(),
        });
        let ended = |new_approval| Ended::Done {
            outcome: &o,
            names: Default::default(),
            new_approval,
        };
        assert_eq!(message(Some(SyncMode::Full), &ended(false)), None);
        let (subject, body) = message(Some(SyncMode::Full), &ended(true)).unwrap();
        assert_eq!(subject, "mfasync: synchronization (full): departures held");
        assert!(
            body.contains("Held for approval ap1 (disable 1, remove 0):\n  disable leaver\n"),
            "{body}"
        );
        assert!(body.contains("mfasync approvals approve ap1"), "{body}");
    }

    #[test]
    fn quiet_cycles_have_none_and_failures_say_so() {
        let quiet = outcome(Vec::new());
        let ended = Ended::Done {
            outcome: &quiet,
            names: Default::default(),
            new_approval: false,
        };
        assert_eq!(message(Some(SyncMode::Incremental), &ended), None);
        let e = EngineError::Other("cannot connect to ldap://dc1.example.com".into());
        let (subject, body) = message(Some(SyncMode::Incremental), &Ended::Failed(&e)).unwrap();
        assert_eq!(subject, "mfasync: synchronization FAILED (incremental)");
        assert!(
            body.contains("Outcome: FAILED, nothing changed\nError:   cannot connect to ldap://dc1.example.com\n"),
            "{body}"
        );
        let (_, early) = message(None, &Ended::Failed(&e)).unwrap();
        assert!(early.contains("Mode:    not chosen"), "{early}");
    }
}
