//! `outbox list|retry|send`.

use std::time::Instant;

use mfasync_core::config::Config;
use mfasync_engine::outbox::{deliver_due, now_ms, ONE_SHOT_BUDGET};
use mfasync_store::{time_text, OutboxEmail, OutboxStatus, RetryTarget, Store};

/// `outbox list [--status S] [--limit N]`.
pub async fn cli_list(
    store: &dyn Store,
    status: Option<OutboxStatus>,
    limit: i64,
    json: bool,
) -> crate::CmdResult {
    let rows = store
        .outbox(status, limit)
        .await
        .map_err(|e| crate::Failure::Refused(e.to_string()))?;
    if json {
        let v: Vec<serde_json::Value> = rows.iter().map(OutboxEmail::listing_json).collect();
        return crate::print_json(&v);
    }
    if rows.is_empty() {
        crate::terminal::say!("no emails");
    }
    for e in &rows {
        let when = match e.status {
            OutboxStatus::Sent => format!("sent {}", e.sent_ms.map(time_text).unwrap_or_default()),
            OutboxStatus::Pending => format!("next attempt {}", time_text(e.due_ms)),
            OutboxStatus::Failed => "given up".to_string(),
        };
        crate::terminal::say!(
            "#{:<6} {:8} {:7} {} <{}>  {} attempts, {}",
            e.id,
            e.status.as_str(),
            e.kind.as_str(),
            e.username,
            e.recipient,
            e.attempts,
            when
        );
        if let Some(err) = &e.last_error {
            crate::terminal::say!("        last error: {err}");
        }
    }
    Ok(())
}

/// `outbox retry ID...|--failed`.
pub async fn cli_retry(store: &dyn Store, target: RetryTarget, json: bool) -> crate::CmdResult {
    let ids = store
        .outbox_retry(&target, now_ms(), &mfasync_engine::approvals::who())
        .await
        .map_err(|e| crate::Failure::Refused(format!("cannot re-queue: {e}")))?;
    if json {
        return crate::print_json(&serde_json::json!({ "requeued": ids }));
    }
    crate::terminal::say!(
        "{} emails queued again: the service sends them, or the next sync or outbox send",
        ids.len()
    );
    Ok(())
}

/// `outbox send`: deliver what is due now (cron deployments without `serve`).
pub async fn cli_send(store: &dyn Store, cfg: &Config, json: bool) -> crate::CmdResult {
    if cfg.smtp.is_none() {
        return Err(crate::Failure::Refused(
            "no [smtp] is configured: nothing can be sent".into(),
        ));
    }
    let d = deliver_due(store, cfg, Instant::now() + ONE_SHOT_BUDGET)
        .await
        .map_err(|e| crate::Failure::Refused(e.to_string()))?;
    if json {
        return crate::print_json(&serde_json::json!({
            "sent": d.sent, "retrying": d.retrying, "failed": d.failed,
        }));
    }
    crate::terminal::say!(
        "{} sent, {} to be retried, {} given up",
        d.sent,
        d.retrying,
        d.failed
    );
    Ok(())
}
