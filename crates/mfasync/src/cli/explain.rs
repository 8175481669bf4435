//! `users explain NAME|DN`: why a user is (or is not) an MFA user.

use crate::terminal::say;
use crate::{active_config, open_store, print_json, CmdResult, Failure};
use mfasync_core::report::explain::Explanation;

/// `users explain NAME|DN [--json]`.
pub async fn run(database: &str, query: &str, json: bool) -> CmdResult {
    let store = open_store(database).await?;
    let cfg = active_config(store.as_ref()).await?;
    let ex = mfasync_engine::explain::explain(store.as_ref(), &cfg, query).await;
    store.close().await;
    let ex = ex.map_err(|e| Failure::Refused(format!("cannot explain {query}: {e:#}")))?;
    if json {
        return print_json(&ex);
    }
    print(&ex);
    Ok(())
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// The explanation, one step per line.
pub fn print(ex: &Explanation) {
    let s = &ex.search;
    say!("searched: {} ({}) with {}", s.base, s.scope, s.filter);
    match &ex.entry {
        None => say!("entry: none found"),
        Some(e) => {
            say!(
                "entry: {} (unique id {})",
                e.dn,
                e.unique_id.as_deref().unwrap_or("none")
            );
            say!("disabled in the directory: {}", yes_no(e.account_disabled));
        }
    }
    if let Some(f) = &ex.user_filter {
        say!(
            "filters.user {}: {}",
            f.filter,
            if f.matches {
                "matches"
            } else {
                "does not match"
            }
        );
    }
    if let Some(u) = &ex.username {
        say!("username: {} (from {}, {})", u.value, u.attribute, u.kind);
    }
    for i in &ex.items {
        say!(
            "sync.items[{}] {} {}{}: {}{}",
            i.index,
            i.kind,
            i.dn,
            if i.include_nested { " (nested)" } else { "" },
            i.how,
            if i.wins { "  <- wins" } else { "" }
        );
    }
    if let Some(st) = &ex.settings {
        say!(
            "settings: method {}, phone {}{}, country code {}, language {}, {}{}",
            st.method,
            st.phone,
            st.backup_phone
                .as_deref()
                .map(|b| format!(", backup {b}"))
                .unwrap_or_default(),
            st.country_code,
            st.language,
            if st.enabled { "enabled" } else { "disabled" },
            if st.welcome_email {
                ", welcome email"
            } else {
                ""
            }
        );
    }
    say!("protected: {}", ex.protected.as_deref().unwrap_or("no"));
    match &ex.stored {
        None => say!("stored MFA user: none"),
        Some(u) => say!(
            "stored MFA user: {} ({}, {}, item {})",
            u.username,
            if u.enabled { "enabled" } else { "disabled" },
            u.source.as_str(),
            u.sync_item.as_deref().unwrap_or("none")
        ),
    }
    for d in &ex.differences {
        say!(
            "  {}: {} -> {}",
            d.field,
            d.stored.as_deref().unwrap_or("(none)"),
            d.would_write.as_deref().unwrap_or("(none)")
        );
    }
    let step = ex.decision.decided_by();
    say!(
        "decision: {} (decided by {step}): {}",
        ex.decision.action,
        ex.decision.reason
    );
    if !ex.audit.is_empty() {
        say!("last changes:");
        for a in &ex.audit {
            say!(
                "  {} {} by {}{}",
                a.at,
                a.action,
                a.actor,
                a.detail
                    .as_deref()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            );
        }
    }
}
