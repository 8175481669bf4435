//! `sync [--full] [--plan]` and `sync --user NAME|DN [--plan]`.

use crate::{active_config, logging, open_store, CmdResult, Failure};
use mfasync_core::plan::Action;
use mfasync_engine::cluster::CliLease;
use mfasync_engine::outbox;
use mfasync_engine::sync::{self, Outcome};

pub fn print(o: &Outcome, json: bool, plan_only: bool) -> crate::CmdResult {
    let c = o.plan.counts();
    if let Some(n) = &o.note {
        crate::logging::notice(n);
    }
    if json {
        return match plan_only {
            true => crate::print_json(&o.plan_json()),
            false => crate::print_json(
                &o.report(false)
                    .map_err(|e| Failure::Refused(format!("{e:#}")))?,
            ),
        };
    }
    if plan_only {
        // (the first SHOWN are in memory: only changes past 1,000 are spilled)
        const SHOWN: usize = 50;
        for ch in o.plan.changes.iter().take(SHOWN) {
            let detail = match ch.action {
                Action::Update => ch.fields.join(", "),
                Action::Disable | Action::Remove => ch.reason.clone().unwrap_or_default(),
                _ => String::new(),
            };
            crate::terminal::say!("{:8} {} {}", ch.action.as_str(), ch.user.username, detail);
        }
        if o.listed() > SHOWN {
            crate::terminal::say!(
                "... and {} more (--json lists them all)",
                o.listed() - SHOWN
            );
        }
    }
    crate::terminal::say!(
        "{} sync{}: {} created, {} updated, {} enabled, {} disabled, {} removed, {} unchanged",
        o.mode,
        if plan_only {
            " (plan only, nothing changed)"
        } else {
            ""
        },
        c.created,
        c.updated,
        c.enabled,
        c.disabled,
        c.removed,
        c.unchanged
    );
    if let Some(n) = o.entries_read {
        crate::terminal::say!("{n} directory entries read");
    }
    if let Some(a) = &o.pending_approval {
        crate::terminal::say!(
            "held for approval {}: {} to disable, {} to remove (see `mfasync approvals list`)",
            a.id,
            a.disable,
            a.remove
        );
    }
    print_safeguards(&o.safeguards, plan_only);
    for w in &o.plan.warnings {
        crate::logging::warning(w);
    }
    Ok(())
}

/// Usernames named per limit in the human output; the rest are counted.
const NAMES_PER_LIMIT: usize = 10;

/// Which limit held which departures, and the protected users left alone.
fn print_safeguards(s: &mfasync_engine::approvals::Safeguards, plan_only: bool) {
    let verb = if plan_only { "would be held" } else { "held" };
    let mut limits: Vec<&str> = Vec::new();
    for h in &s.held {
        if !limits.contains(&h.limit.as_str()) {
            limits.push(&h.limit);
        }
    }
    for limit in limits {
        let names: Vec<&str> = s
            .held
            .iter()
            .filter(|h| h.limit == limit)
            .map(|h| h.username.as_str())
            .collect();
        let more = names.len().saturating_sub(NAMES_PER_LIMIT);
        let shown = names[..names.len() - more].join(", ");
        let more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        crate::terminal::say!("{verb} by {limit}: {} ({shown}{more})", names.len());
    }
    for p in &s.protected {
        crate::terminal::say!(
            "protected, not {}: {} ({})",
            if p.action == Action::Remove {
                "removed"
            } else {
                "disabled"
            },
            p.username,
            p.reason
        );
    }
}

/// `sync [--full] [--plan]`: the cycle under the CLI lease, then the emails it queued.
pub async fn run(database: &str, full: bool, plan: bool, json: bool) -> CmdResult {
    let store: std::sync::Arc<dyn mfasync_store::Store> = open_store(database).await?.into();
    let cfg = active_config(store.as_ref()).await?;
    // not while a server runs synchronization (docs/cluster.md)
    let lease = match plan {
        true => None,
        false => Some(
            CliLease::take(store.as_ref(), "sync")
                .await
                .map_err(Failure::Refused)?,
        ),
    };
    let opts = sync::Options {
        full,
        plan_only: plan,
    };
    // the cycle, then (not for --plan) the emails it queued and any
    // others due, within a bounded time, still holding the lease
    let work = async {
        let outcome = sync::run(store.as_ref(), &cfg, opts).await;
        if !plan {
            abort_after_commit_for_tests();
            if let Some(d) = outbox::deliver_before_exit(store.as_ref(), &cfg).await {
                if d != outbox::Delivered::default() {
                    logging::notice(format_args!(
                        "emails: {} sent, {} to be retried (mfasync outbox list), {} given up",
                        d.sent, d.retrying, d.failed
                    ));
                }
            }
        }
        outcome
    };
    let outcome = match &lease {
        Some(l) => l.hold(&store, work).await,
        None => work.await,
    };
    if let Some(l) = lease {
        l.release(store.as_ref()).await;
    }
    store.close().await;
    let outcome =
        outcome.map_err(|e| Failure::Refused(format!("sync failed, nothing changed: {e:#}")))?;
    print(&outcome, json, plan)
}

/// Tests only: with `MFASYNC_TEST_ABORT_AFTER_COMMIT` set, a one-shot sync
/// kills itself (SIGKILL; SIGABRT if that fails: nothing cleaned up) right
/// after its cycle committed and before any email is delivered.
fn abort_after_commit_for_tests() {
    if std::env::var_os("MFASYNC_TEST_ABORT_AFTER_COMMIT").is_some() {
        let pid = std::process::id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid])
            .status();
        std::process::abort();
    }
}

/// `sync --user NAME|DN [--plan]`: that one user now, under the CLI lease,
/// then the email it queued.
pub async fn run_user(database: &str, query: &str, plan: bool, json: bool) -> CmdResult {
    let store: std::sync::Arc<dyn mfasync_store::Store> = open_store(database).await?.into();
    let cfg = active_config(store.as_ref()).await?;
    let lease = match plan {
        true => None,
        false => Some(
            CliLease::take(store.as_ref(), "sync --user")
                .await
                .map_err(Failure::Refused)?,
        ),
    };
    let work = async {
        let synced =
            mfasync_engine::single::sync_user(store.as_ref(), &cfg, query, plan, "cli").await;
        if matches!(&synced, Ok(s) if s.applied) {
            outbox::deliver_before_exit(store.as_ref(), &cfg).await;
        }
        synced
    };
    let synced = match &lease {
        Some(l) => l.hold(&store, work).await,
        None => work.await,
    };
    if let Some(l) = lease {
        l.release(store.as_ref()).await;
    }
    store.close().await;
    let s = synced
        .map_err(|e| Failure::Refused(format!("cannot sync {query}, nothing changed: {e:#}")))?;
    if json {
        return crate::print_json(&s);
    }
    let who = s.username.as_deref().unwrap_or(query);
    let fields = match s.fields.is_empty() {
        true => String::new(),
        false => format!(" ({})", s.fields.join(", ")),
    };
    let done = match (s.applied, plan) {
        (true, _) => "",
        (false, true) => " (plan only, nothing changed)",
        (false, false) => " (nothing written)",
    };
    crate::terminal::say!("{} {who}{fields}{done}: {}", s.action, s.reason);
    Ok(())
}
