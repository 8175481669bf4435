//! `sync [--full] [--plan]`: the outcome printed.

use mfasync_core::plan::Action;
use mfasync_engine::sync::Outcome;

pub fn print(o: &Outcome, json: bool, plan_only: bool) -> crate::CmdResult {
    let c = o.plan.counts();
    if let Some(n) = &o.note {
        crate::logging::notice(n);
    }
    if json {
        return crate::print_json(&o.report(plan_only));
    }
    if plan_only {
        const SHOWN: usize = 50;
        for ch in o.plan.changes.iter().take(SHOWN) {
            let detail = match ch.action {
                Action::Update => ch.fields.join(", "),
                Action::Disable | Action::Remove => ch.reason.clone().unwrap_or_default(),
                _ => String::new(),
            };
            crate::terminal::say!("{:8} {} {}", ch.action.as_str(), ch.user.username, detail);
        }
        if o.plan.changes.len() > SHOWN {
            crate::terminal::say!(
                "... and {} more (--json lists them all)",
                o.plan.changes.len() - SHOWN
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
    for w in &o.plan.warnings {
        crate::logging::warning(w);
    }
    Ok(())
}
