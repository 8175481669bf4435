//! Removal safeguards (the seed's "Require administrator approval when more
//! than X users will be disabled or removed"): a cycle whose departures go
//! past a limit (`sync.approval_threshold`, `_disables`, `_removals`, an
//! item's `max_departures`; `core::safeguard::split`) applies everything else
//! and holds those departures back as ONE pending approval, stored in the
//! database (each with the limit that held it) and announced by email to
//! `sync.notify`. Departures of protected users (`sync.protected`) are dropped:
//! neither applied nor held.
//!
//! - `hold` is called by the sync cycle right before `Store::apply`.
//! - A newer pending approval supersedes an older one; the same held set
//!   (same `safeguard::fingerprint`) is not asked about twice.
//! - A rejected set is remembered by its fingerprint: later cycles neither hold
//!   nor apply it again until the directory changes (a different set).
//! - `decisions::approve` re-runs a full cycle with the approval in force
//!   (`IN_FORCE`): only the held changes that the directory still calls for
//!   are applied (re-checked now).
//! - Users may be decided one by one (`approvals approve|reject ID --user`):
//!   the approval stays pending with the others, which stay held while it
//!   is pending. A user rejected alone is neither applied nor held while
//!   that approval is the newest one; a new approval asks about them again.
//! - A pending approval older than `sync.approval_expiry` expires as
//!   rejected (`expire`), at the start of each cycle and before a decision.

use std::cell::RefCell;
use std::collections::HashSet;
use std::future::Future;

use crate::error::{EngineError, Result, ResultExt};
use mfasync_core::config::{Config, Smtp};
use mfasync_core::plan::{Action, Change, Plan};
use mfasync_core::report::{HeldDeparture, ProtectedDeparture};
use mfasync_core::safeguard::{self, Held, HeldBy, Limits, Protection, Split};
use mfasync_store::{Approval, ApprovalStatus, HeldChange, Store, UserDecision};

pub use mfasync_core::report::PendingApproval;

/// The approval `a` as `sync --json` reports it.
pub fn pending_of(a: &Approval) -> PendingApproval {
    PendingApproval {
        id: a.id.clone(),
        disable: a.undecided().filter(|c| c.action == "disable").count(),
        remove: a.undecided().filter(|c| c.action == "remove").count(),
    }
}

/// Why a set is held (log line and email), followed by the limits.
const OVER_THRESHOLD: &str = "more users would be disabled or removed than these limits allow";
const TOUCHES_REJECTED: &str =
    "the disables/removals include users whose departure an administrator rejected";

/// Users named in a notification; the rest are counted.
const EMAIL_LISTED: usize = 20;

/// What `hold` decided during one cycle, collected by `track`.
#[derive(Default)]
struct CycleReport {
    pending: Option<PendingApproval>,
    /// Keys (`safeguard::fingerprint` of one change) of the changes not applied.
    withheld: HashSet<String>,
    /// Who is protected this cycle, read by `sync::run` (`set_protection`).
    protection: Option<Protection>,
    safeguards: Safeguards,
}

/// What the safeguards did in one cycle, for the report: the departures held
/// (each with its limit) and those dropped as protected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Safeguards {
    pub held: Vec<HeldDeparture>,
    pub protected: Vec<ProtectedDeparture>,
}

impl Safeguards {
    fn of(split: &Split) -> Safeguards {
        Safeguards {
            held: split
                .held
                .iter()
                .map(|h| HeldDeparture {
                    action: h.change.action,
                    limit: h.by.to_string(),
                    username: h.change.user.username.clone(),
                })
                .collect(),
            protected: split
                .protected
                .iter()
                .map(|p| ProtectedDeparture {
                    action: p.change.action,
                    reason: p.why.clone(),
                    username: p.change.user.username.clone(),
                })
                .collect(),
        }
    }
}

tokio::task_local! {
    /// The approval being applied by `approvals approve` (its held changes may pass).
    pub(crate) static IN_FORCE: Approval;
    /// Filled by `hold`, read by `track`.
    static CYCLE: RefCell<CycleReport>;
}

pub(crate) fn is_departure(c: &Change) -> bool {
    matches!(c.action, Action::Disable | Action::Remove)
}

/// The fingerprint key of one change: "action:directory_id".
pub(crate) fn change_key(c: &Change) -> String {
    safeguard::fingerprint([c])
}

/// The same key for a stored held change.
pub(crate) fn held_key(h: &HeldChange) -> String {
    h.key()
}

fn held_change(h: &Held) -> HeldChange {
    HeldChange {
        limit: Some(h.by.to_string()),
        ..change_held(h.change)
    }
}

fn change_held(c: &Change) -> HeldChange {
    HeldChange {
        limit: None,
        decision: None,
        action: c.action.as_str().to_string(),
        username: c.user.username.clone(),
        directory_id: c
            .user
            .directory_id
            .clone()
            .or_else(|| c.before.as_ref().and_then(|b| b.directory_id.clone())),
        reason: c.reason.clone(),
    }
}

/// Split a cycle's plan into the changes to apply now and the pending approval
/// (created, or found already pending for the same set) that holds the rest.
/// Called right before `Store::apply`. Sends the notification when it creates
/// an approval; a failed notification is logged and audited, never an error.
pub async fn hold<'p>(
    store: &dyn Store,
    cfg: &Config,
    plan: &'p Plan,
) -> Result<(Vec<&'p Change>, Option<PendingApproval>)> {
    let (now, pending, split) = decide(store, cfg, plan).await?;
    let _ = CYCLE.try_with(|r| {
        let mut r = r.borrow_mut();
        // (`now` borrows the plan's changes: the same addresses)
        if now.len() < plan.changes.len() {
            let applied: HashSet<*const Change> = now.iter().map(|c| *c as *const Change).collect();
            r.withheld.extend(
                plan.changes
                    .iter()
                    .filter(|c| !applied.contains(&(*c as *const Change)))
                    .map(change_key),
            );
        }
        r.pending = pending.clone();
        r.safeguards = Safeguards::of(&split);
    });
    Ok((now, pending))
}

/// `sync --plan`: what the safeguards would hold and drop, nobody asked.
/// Protected departures leave the reported plan; held ones stay in it.
pub(crate) async fn preview(store: &dyn Store, cfg: &Config, plan: &Plan) -> Result<()> {
    let split = split_plan(store, cfg, plan).await?;
    let _ = CYCLE.try_with(|r| {
        let mut r = r.borrow_mut();
        let dropped = split.protected.iter().map(|p| change_key(p.change));
        r.withheld.extend(dropped);
        r.safeguards = Safeguards::of(&split);
    });
    Ok(())
}

/// This cycle's protected users (`sync::run` reads them after connecting).
pub(crate) fn set_protection(protection: Protection) {
    let _ = CYCLE.try_with(|r| r.borrow_mut().protection = Some(protection));
}

/// The protection read for this cycle; unread, protected groups are unknown
/// (no departure is safe) and only the usernames are known.
fn protection_now(cfg: &Config) -> Protection {
    let read = CYCLE
        .try_with(|r| r.borrow().protection.clone())
        .ok()
        .flatten();
    read.unwrap_or_else(|| {
        if cfg
            .sync
            .protected
            .iter()
            .any(|p| safeguard::is_group_entry(p))
        {
            Protection::Unreadable("the protected groups were not read in this cycle".into())
        } else {
            Protection::of_names(&cfg.sync.protected)
        }
    })
}

/// The plan split by the limits and the protection (`core::safeguard::split`).
async fn split_plan<'p>(store: &dyn Store, cfg: &Config, plan: &'p Plan) -> Result<Split<'p>> {
    let needs_population =
        Limits::needs_population(&cfg.sync) && plan.changes.iter().any(is_departure);
    let population = match needs_population {
        true => directory_users(store).await?,
        false => 0,
    };
    let limits = Limits::of(&cfg.sync, population);
    Ok(safeguard::split(plan, &limits, &protection_now(cfg)))
}

/// The directory users stored before this cycle (what a percentage is of).
pub(crate) async fn directory_users(store: &dyn Store) -> Result<usize> {
    store
        .directory_user_count()
        .await
        .context("counting the stored directory users (sync.approval_threshold as a percentage)")
}

/// The distinct limits that held `held`, for the log line and the email.
fn limits_text(held: &[Held]) -> String {
    let mut seen: Vec<String> = Vec::new();
    for h in held {
        let text = h.by.to_string();
        if !seen.contains(&text) {
            seen.push(text);
        }
    }
    seen.join("; ")
}

async fn decide<'p>(
    store: &dyn Store,
    cfg: &Config,
    plan: &'p Plan,
) -> Result<(Vec<&'p Change>, Option<PendingApproval>, Split<'p>)> {
    let mut split = split_plan(store, cfg, plan).await?;
    if let Ok(approved) = IN_FORCE.try_with(Approval::clone) {
        // `approvals approve`: the approved departures the directory still calls
        // for pass (protected users never); any other departure waits for the
        // next regular cycle.
        let keys: HashSet<String> = approved.changes.iter().map(held_key).collect();
        let dropped: HashSet<String> = split
            .protected
            .iter()
            .map(|p| change_key(p.change))
            .collect();
        let now = plan
            .changes
            .iter()
            .filter(|c| !is_departure(c) || keys.contains(&change_key(c)))
            .filter(|c| !dropped.contains(&change_key(c)))
            .collect();
        split.held.clear();
        return Ok((now, None, split));
    }
    let rejected_alone = drop_rejected_alone(store, &mut split).await?;
    keep_budget_holds(store, &mut split).await?;
    let mut why = OVER_THRESHOLD.to_string();
    if split.held.is_empty()
        && Limits::of(&cfg.sync, 0).any()
        && split.now.iter().any(|c| is_departure(c))
    {
        // Within the limits, but the last decision rejected some of these
        // users' departures: they are not made without asking again.
        if let Some(r) = latest_rejection(store).await? {
            let rejected: HashSet<String> = r.changes.iter().map(held_key).collect();
            if split
                .now
                .iter()
                .any(|c| is_departure(c) && rejected.contains(&change_key(c)))
            {
                let (held, now): (Vec<&Change>, Vec<&Change>) = std::mem::take(&mut split.now)
                    .into_iter()
                    .partition(|c| is_departure(c));
                split.now = now;
                split.held = held
                    .into_iter()
                    .map(|change| Held {
                        change,
                        by: HeldBy::Rejected,
                    })
                    .collect();
                why = TOUCHES_REJECTED.to_string();
            }
        }
    }
    if split.held.is_empty() {
        return Ok((split.now.clone(), None, split));
    }
    if why == OVER_THRESHOLD {
        why = format!("{OVER_THRESHOLD}: {}", limits_text(&split.held));
    }
    let fingerprint = safeguard::fingerprint(split.held_changes());
    let rejected = store
        .approvals(Some(ApprovalStatus::Rejected))
        .await
        .context("reading rejected approvals")?;
    if let Some(r) = rejected.iter().find(|a| a.fingerprint == fingerprint) {
        tracing::warn!(target: "mfasync::approvals",
            approval = %r.id,
            held = split.held.len(),
            "these disables/removals were rejected before and the directory has not changed since; not applied, not asked again"
        );
        return Ok((split.now.clone(), None, split));
    }
    let pending = store
        .approvals(Some(ApprovalStatus::Pending))
        .await
        .context("reading pending approvals")?;
    if let Some(a) = pending.iter().find(|a| a.fingerprint == fingerprint) {
        tracing::info!(target: "mfasync::approvals", approval = %a.id, "the held disables/removals are already waiting for approval");
        return Ok((split.now.clone(), Some(pending_of(a)), split));
    }
    // a new approval asks again about the users rejected alone
    split
        .held
        .extend(rejected_alone.into_iter().map(|change| Held {
            change,
            by: HeldBy::Rejected,
        }));
    let fingerprint = safeguard::fingerprint(split.held_changes());
    let id = new_id();
    let held: Vec<HeldChange> = split.held.iter().map(held_change).collect();
    let a = store
        .create_approval(&id, &fingerprint, &held)
        .await
        .context("storing the pending approval")?;
    tracing::warn!(target: "mfasync::approvals",
        approval = %a.id,
        held = held.len(),
        "{why}: held for approval"
    );
    notify(store, cfg, &a, &why).await;
    Ok((split.now.clone(), Some(pending_of(&a)), split))
}

/// Take out of the split the departures the newest approval rejected user by
/// user (`approvals reject ID --user`): neither applied nor held while that
/// approval is the newest. Returns them (a new approval asks again).
async fn drop_rejected_alone<'p>(
    store: &dyn Store,
    split: &mut Split<'p>,
) -> Result<Vec<&'p Change>> {
    // most cycles have no departure: no read
    if split.held.is_empty() && !split.now.iter().any(|c| is_departure(c)) {
        return Ok(Vec::new());
    }
    let all = store.approvals(None).await.context("reading approvals")?;
    let Some(newest) = all.first() else {
        return Ok(Vec::new());
    };
    let rejected: HashSet<String> = newest
        .decided(UserDecision::Rejected)
        .map(held_key)
        .collect();
    if rejected.is_empty() {
        return Ok(Vec::new());
    }
    let is_rejected = |c: &Change| is_departure(c) && rejected.contains(&change_key(c));
    let (out, now): (Vec<&Change>, Vec<&Change>) = std::mem::take(&mut split.now)
        .into_iter()
        .partition(|c| is_rejected(c));
    split.now = now;
    let (held_out, held): (Vec<Held>, Vec<Held>) = std::mem::take(&mut split.held)
        .into_iter()
        .partition(|h| is_rejected(h.change));
    split.held = held;
    Ok(out
        .into_iter()
        .chain(held_out.into_iter().map(|h| h.change))
        .collect())
}

/// The limit text a pending approval's undecided user stays held by: an
/// item's budget always; any limit once some of its users were decided
/// alone (the rest wait for their own decision).
fn kept_limit(a: &Approval, h: &HeldChange) -> Option<String> {
    let limit = h.limit.as_deref();
    if let Some(l) = limit.filter(|l| safeguard::is_budget_limit(l)) {
        return Some(l.to_string());
    }
    a.has_user_decisions()
        .then(|| limit.map_or_else(|| format!("approval {}", a.id), str::to_string))
}

/// A departure an item's budget held stays held while its approval is
/// pending: a budget limits departures, it does not only put them off to the
/// next cycle. (Threshold holds are decided again each cycle, unless some of
/// the approval's users were decided alone: see `kept_limit`.)
async fn keep_budget_holds(store: &dyn Store, split: &mut Split<'_>) -> Result<()> {
    if !split.now.iter().any(|c| is_departure(c)) {
        return Ok(());
    }
    let pending = store
        .approvals(Some(ApprovalStatus::Pending))
        .await
        .context("reading pending approvals")?;
    let budget_held: std::collections::HashMap<String, String> = pending
        .iter()
        .flat_map(|a| a.undecided().map(move |h| (a, h)))
        .filter_map(|(a, h)| Some((held_key(h), kept_limit(a, h)?)))
        .collect();
    let (still, now): (Vec<&Change>, Vec<&Change>) = std::mem::take(&mut split.now)
        .into_iter()
        .partition(|c| is_departure(c) && budget_held.contains_key(&change_key(c)));
    split.now = now;
    split.held.extend(still.into_iter().map(|change| {
        let limit = budget_held
            .get(&change_key(change))
            .cloned()
            .unwrap_or_default();
        Held {
            change,
            by: HeldBy::Pending { limit },
        }
    }));
    Ok(())
}

/// The rejected approval that was the last word, if the newest approval is a
/// rejection (a newer approval means the administrator was asked again).
async fn latest_rejection(store: &dyn Store) -> Result<Option<Approval>> {
    let all = store.approvals(None).await.context("reading approvals")?;
    Ok(all
        .into_iter()
        .next()
        .filter(|a| a.status == ApprovalStatus::Rejected))
}

/// After a cycle that applied its plan: when a FULL cycle (which sees every
/// departure, unlike an incremental one) needed no approval, the approvals
/// still pending are no longer needed and become superseded, so
/// `approvals list` only shows what is still waiting. Not while an approval
/// is being applied. Failures are logged: the cycle itself is done.
pub async fn after_cycle(store: &dyn Store, full: bool, pending: Option<&PendingApproval>) {
    if !full || pending.is_some() || IN_FORCE.try_with(|_| ()).is_ok() {
        return;
    }
    let why = "no longer needed: a later full synchronization needed no approval";
    if let Err(e) = retire_pending(store, why).await {
        tracing::error!(target: "mfasync::approvals", "{e:#}");
    }
}

async fn retire_pending(store: &dyn Store, why: &str) -> Result<()> {
    // read first: most cycles have nothing pending and need no write
    if store
        .approvals(Some(ApprovalStatus::Pending))
        .await
        .context("reading pending approvals")?
        .is_empty()
    {
        return Ok(());
    }
    let ids = store
        .supersede_pending(why)
        .await
        .context("retiring pending approvals no longer needed")?;
    if !ids.is_empty() {
        tracing::info!(target: "mfasync::approvals", approvals = ?ids, "{why}");
    }
    Ok(())
}

/// Expire `a` if it is pending and older than `sync.approval_expiry`: it
/// becomes rejected (audited, actor "sync"), nothing applied. True if it did.
pub(crate) async fn expire_one(store: &dyn Store, cfg: &Config, a: &Approval) -> Result<bool> {
    if a.status != ApprovalStatus::Pending || a.created_at.as_str() >= expiry_cutoff(cfg)?.as_str()
    {
        return Ok(false);
    }
    let detail = format!(
        "expired: pending longer than sync.approval_expiry = {:?}; nothing applied",
        cfg.sync.approval_expiry.trim()
    );
    store
        .decide_approval(&a.id, ApprovalStatus::Rejected, "sync", Some(&detail))
        .await
        .map_err(|e| EngineError::Other(e.to_string()))?;
    tracing::warn!(target: "mfasync::approvals", approval = %a.id, "{detail}");
    Ok(true)
}

/// Approvals created before this time (RFC 3339 UTC, as stored) have expired.
fn expiry_cutoff(cfg: &Config) -> Result<String> {
    // (time's errors as their message: a cause would only repeat it)
    let keep = time::Duration::try_from(cfg.sync.approval_expiry_duration())
        .map_err(|e| EngineError::Other(e.to_string()))?;
    time::OffsetDateTime::now_utc()
        .checked_sub(keep)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| EngineError::Other(e.to_string()))
}

/// Expire every pending approval older than `sync.approval_expiry`; their ids.
pub async fn expire(store: &dyn Store, cfg: &Config) -> Result<Vec<String>> {
    let pending = store
        .approvals(Some(ApprovalStatus::Pending))
        .await
        .context("reading pending approvals")?;
    let mut expired = Vec::new();
    for a in &pending {
        if expire_one(store, cfg, a).await? {
            expired.push(a.id.clone());
        }
    }
    Ok(expired)
}

/// [`expire`] at the start of a cycle: a failure is logged, never the cycle's.
pub(crate) async fn expire_logged(store: &dyn Store, cfg: &Config) {
    if let Err(e) = expire(store, cfg).await {
        tracing::error!(target: "mfasync::approvals", "cannot expire old approvals: {e:#}");
    }
}

/// Run one sync cycle (a future giving its plan) and collect what `hold`
/// decided in it: the plan returned keeps only the changes applied, so its
/// counts are what happened, and the pending approval is returned beside it.
pub async fn track<F>(cycle: F) -> (Result<Plan>, Option<PendingApproval>, Safeguards)
where
    F: Future<Output = Result<Plan>>,
{
    CYCLE
        .scope(RefCell::new(CycleReport::default()), async {
            let result = cycle.await;
            let report = CYCLE.with(|r| std::mem::take(&mut *r.borrow_mut()));
            let result = result.map(|mut p| {
                if !report.withheld.is_empty() {
                    p.changes
                        .retain(|c| !report.withheld.contains(&change_key(c)));
                }
                p
            });
            (result, report.pending, report.safeguards)
        })
        .await
}

/// A short random id (12 hex digits).
fn new_id() -> String {
    let mut s = uuid::Uuid::new_v4().simple().to_string();
    s.truncate(12);
    s
}

/// Who decides: the administrator behind sudo, else the login user, else "cli".
pub fn who() -> String {
    ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|v| !v.trim().is_empty())
        .unwrap_or_else(|| "cli".to_string())
}

// ---------------------------------------------------------------- email

/// Send the notification for a new approval; failures are logged and audited.
async fn notify(store: &dyn Store, cfg: &Config, a: &Approval, why: &str) {
    if cfg.sync.notify.is_empty() {
        tracing::warn!(target: "mfasync::approvals", approval = %a.id, "sync.notify is empty: nobody is told about the pending approval");
        return;
    }
    let Some(smtp) = &cfg.smtp else {
        // `config apply` refuses notify without [smtp]; kept for safety
        tracing::warn!(target: "mfasync::approvals", approval = %a.id, "no [smtp] configured: cannot send the approval notification");
        return;
    };
    let to = cfg.sync.notify.join(", ");
    let (action, detail) = match send(smtp, &cfg.sync.notify, a, why).await {
        Ok(()) => (
            "notify-sent",
            format!("approval {}: notification sent to {to}", a.id),
        ),
        Err(e) => {
            let e = crate::mail::redact(&format!("{e:#}"), smtp);
            tracing::error!(target: "mfasync::approvals", approval = %a.id, "cannot send the approval notification to {to}: {e}");
            (
                "notify-failed",
                format!("approval {}: notification to {to} failed: {e}", a.id),
            )
        }
    };
    if let Err(e) = store.audit_event("sync", action, &detail).await {
        tracing::error!(target: "mfasync::approvals", "cannot record the notification in the audit trail: {e}");
    }
}

/// The subject and plain-text body of the notification.
pub fn message_text(a: &Approval, why: &str) -> (String, String) {
    let p = pending_of(a);
    let subject = format!(
        "mfasync: approval needed to disable {} and remove {} MFA users (approval {})",
        p.disable, p.remove, a.id
    );
    let mut body = format!(
        "A synchronization would disable {} and remove {} MFA users:\n{why}.\n\
         None of them has been changed: they are held as approval {} (created {}).\n\n",
        p.disable, p.remove, a.id, a.created_at
    );
    for h in a.changes.iter().take(EMAIL_LISTED) {
        body.push_str(&format!(
            "  {:8} {}  ({})\n",
            h.action,
            h.username,
            h.reason.as_deref().unwrap_or("no reason given")
        ));
        if let Some(limit) = &h.limit {
            body.push_str(&format!("           held by {limit}\n"));
        }
    }
    if a.changes.len() > EMAIL_LISTED {
        body.push_str(&format!(
            "  ... and {} more\n",
            a.changes.len() - EMAIL_LISTED
        ));
    }
    body.push_str(&format!(
        "\nTo review the full list:\n    mfasync approvals list\n\
         To apply them (re-checked against the directory first):\n    mfasync approvals approve {id}\n\
         To keep these users (not asked again until the directory changes):\n    mfasync approvals reject {id}\n\n\
         If this is unexpected, check the directory configuration (base_dn,\n\
         filters, the bind account's rights) before approving.\n",
        id = a.id
    ));
    (subject, body)
}

async fn send(smtp: &Smtp, to: &[String], a: &Approval, why: &str) -> Result<()> {
    use lettre::message::header::ContentType;
    use lettre::Message;

    let (subject, body) = message_text(a, why);
    let mut msg = Message::builder()
        .from(crate::mail::sender(smtp)?)
        .subject(subject);
    for r in to {
        let mbox = r
            .parse()
            .map_err(|e| EngineError::Mail(format!("sync.notify {r:?} is not a mailbox: {e}")))?;
        msg = msg.to(mbox);
    }
    let msg = msg
        .header(ContentType::TEXT_PLAIN)
        .body(body)
        .map_err(|e| EngineError::Mail(format!("cannot build the message: {e}")))?;
    crate::mail::send(smtp, msg, crate::mail::SMTP_TIMEOUT).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_names_counts_users_and_commands() {
        let changes: Vec<HeldChange> = (0..25)
            .map(|i| HeldChange {
                action: if i % 5 == 0 { "remove" } else { "disable" }.into(),
                username: format!("user{i:02}"),
                directory_id: Some(format!("id{i}")),
                reason: Some("no longer in ou=Sales".into()),
                limit: Some("max_departures = 3 of item ou=Sales".into()),
                decision: None,
            })
            .collect();
        let a = Approval {
            id: "abc123".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            status: ApprovalStatus::Pending,
            fingerprint: String::new(),
            changes,
            decided_at: None,
            decided_by: None,
            detail: None,
        };
        let (subject, body) = message_text(&a, OVER_THRESHOLD);
        assert!(
            subject.contains("disable 20") && subject.contains("remove 5"),
            "{subject}"
        );
        assert!(subject.contains("abc123"));
        assert!(body.contains("user00") && body.contains("user19"), "{body}");
        assert!(!body.contains("user20"), "only the first 20 are listed");
        assert!(body.contains("... and 5 more"));
        assert!(body.contains("mfasync approvals approve abc123"));
        assert!(body.contains("mfasync approvals list"));
        assert!(
            body.contains("user00  (no longer in ou=Sales)\n           held by max_departures = 3 of item ou=Sales\n"),
            "{body}"
        );
    }

    #[test]
    fn keys_agree_with_the_fingerprint() {
        let c = Change {
            action: Action::Disable,
            user: mfasync_core::MfaUser {
                username: "u".into(),
                directory_id: Some("id-1".into()),
                ..Default::default()
            },
            before: None,
            fields: vec![],
            reason: None,
            raw: None,
        };
        assert_eq!(change_key(&c), held_key(&change_held(&c)));
    }
}
