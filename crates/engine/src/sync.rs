//! One synchronization cycle: read the directory, resolve each sync item's
//! members (first item wins), compute the plan (pure, in core) and apply it in
//! one store transaction together with the watermark.

use crate::commit::commit;
use crate::connect::connect;
use crate::error::{EngineError, Result};
use crate::full::full;
use crate::incremental;
use crate::read::warm_phone_metadata;
use mfasync_core::config::Config;
use mfasync_core::plan::{Counts, Plan};
use mfasync_core::report::{PlannedChange, SyncMode, SyncReport};
use mfasync_ldap::Client;
use mfasync_store::{DomainWatermark, Store, SyncRun, Watermark};
use std::collections::HashMap;

pub struct Options {
    pub full: bool,
    pub plan_only: bool,
}

pub struct Outcome {
    pub mode: SyncMode,
    pub plan: Plan,
    /// Why a full sync ran when an incremental one was asked for.
    pub note: Option<String>,
    /// Directory entries received by an incremental cycle (None for a full one).
    pub entries_read: Option<usize>,
    /// Disables/removals held back for administrator approval (issue 4).
    pub pending_approval: Option<crate::approvals::PendingApproval>,
    /// Which limit held which departure; protected departures dropped (issue 21).
    pub safeguards: crate::approvals::Safeguards,
    /// A plan's creates kept on disk (`spill`), listed after `plan.changes`
    /// and counted in `plan.unlisted`.
    pub spilled: Option<crate::spill::SpilledChanges>,
}

/// Why a cycle is full after `[attributes]`, `[filters]`, the base DN or
/// `include_trusted_domains` changed: stored users may hold the old mapping.
pub const MAPPING_CHANGED: &str = "the attribute mapping or filters changed since the last full sync: running a full synchronization";
/// The same when the last full sync predates recording them (an upgrade).
pub const MAPPING_UNKNOWN: &str = "the last full sync did not record its attribute mapping and filters (an earlier version): running a full synchronization";

/// Why this cycle cannot be incremental, judged from the configuration and
/// the stored watermark alone (the directory is asked later). Pure.
pub fn full_reason(cfg: &Config, full_asked: bool, wm: Option<&Watermark>) -> Option<String> {
    if full_asked {
        return Some(String::new());
    }
    if cfg.sync.always_full {
        return Some("sync.always_full is set: running a full synchronization".into());
    }
    let Some(wm) = wm else {
        return Some(
            "no full synchronization has set a starting point yet: running a full synchronization"
                .into(),
        );
    };
    if wm.items_fingerprint != cfg.items_fingerprint() {
        return Some(
            "sync items changed since the last full sync: running a full synchronization".into(),
        );
    }
    if wm.mapping_fingerprint.is_empty() {
        return Some(MAPPING_UNKNOWN.into());
    }
    if wm.mapping_fingerprint != cfg.mapping_fingerprint() {
        return Some(MAPPING_CHANGED.into());
    }
    if incremental::Kind::of(wm.kind).is_none() {
        return Some(
            "the last full synchronization could not set an incremental starting point (the directory supports neither DirSync nor syncrepl for this configuration): running a full synchronization".into(),
        );
    }
    None
}

/// One cycle (`serve`, `sync`, Synchronize Now, an approval's re-check);
/// then, unless `plan_only`, the summary email of `sync.summary` (issue 22)
/// is queued with the cycle's result, failures included.
pub async fn run(store: &dyn Store, cfg: &Config, opts: Options) -> Result<Outcome> {
    let watch = match opts.plan_only {
        true => None,
        false => crate::summary::Watch::begin(store, cfg).await,
    };
    let mut mode = None;
    let tally = watch.as_ref().map(|w| w.tally());
    let result = cycle(store, cfg, opts, tally, &mut mode).await;
    if let Some(w) = watch {
        w.end(store, cfg, mode, &result).await;
    }
    result
}

/// The cycle of [`run`]; `mode_seen` follows the mode it runs (a failed
/// incremental attempt turns full).
async fn cycle(
    store: &dyn Store,
    cfg: &Config,
    opts: Options,
    tally: Option<std::sync::Arc<crate::summary::Tally>>,
    mode_seen: &mut Option<SyncMode>,
) -> Result<Outcome> {
    if cfg.sync.items.is_empty() {
        return Err(EngineError::Other(
            "no sync items are configured: add [[sync.items]] to the configuration".into(),
        ));
    }
    // welcome/update emails are queued in the transactions of this cycle
    // (issue 19); the summary's tally hears of every write
    let _emails = crate::emails::Armed::arm(store, cfg, tally);
    if !opts.plan_only {
        // pending approvals past sync.approval_expiry are rejected first
        crate::approvals::expire_logged(store, cfg).await;
    }
    let wm = store.watermark().await?;
    let reason = full_reason(cfg, opts.full, wm.as_ref());
    if reason.is_some() && wm.is_none() {
        // a first sync maps every user: load the phone metadata at once
        // (otherwise at the first user that needs mapping: `Worker::add_entry`)
        warm_phone_metadata();
    }
    let mut note = reason.clone().filter(|r| !r.is_empty());
    let mut mode = if reason.is_some() {
        SyncMode::Full
    } else {
        SyncMode::Incremental
    };
    *mode_seen = Some(mode);
    let mut run_id = if opts.plan_only {
        None
    } else {
        Some(store.run_started(mode.as_str()).await?)
    };
    let mut entries_read = None;
    let mut spilled = None;
    // said with the note: sync items found under a new DN, a read cut short
    let mut extra_notes: Vec<String> = Vec::new();
    let (result, pending_approval, safeguards) = crate::approvals::track(async {
        let mut client = connect(cfg).await?;
        let followed = crate::items::follow(store, &mut client, cfg, opts.plan_only).await?;
        extra_notes = followed.notes;
        let cfg = followed.cfg.as_ref().unwrap_or(cfg);
        crate::approvals::set_protection(crate::protected::resolve(&mut client, cfg).await);
        if mode == SyncMode::Incremental {
            let missing = wm
                .as_ref()
                .and_then(|w| missing_domain_mark(cfg, client.base_dn(), w));
            let ok = match (wm.as_ref(), incremental::supported(&client, cfg)) {
                _ if !extra_notes.is_empty() => Err("a sync item was renamed or moved".to_string()),
                (_, Err(e)) => Err(e),
                (None, _) => Err("no starting point".to_string()),
                (Some(_), Ok(_)) if missing.is_some() => Err(missing.unwrap_or_default()),
                (Some(w), Ok(kind)) if kind.resume(w.kind).is_none() => Err(format!(
                    "the starting point is a {} cookie but {} now offers {}",
                    w.kind,
                    client.server(),
                    kind.as_str()
                )),
                (Some(w), Ok(_)) if w.server != client.server() => Err(format!(
                    "the starting point came from {} but {} answered",
                    w.server,
                    client.server()
                )),
                (Some(w), Ok(kind)) => Ok((kind.resume(w.kind).unwrap_or(kind), w)),
            };
            let why = match ok {
                Ok((kind, w)) => {
                    match incremental_cycle(store, cfg, &mut client, kind, w, opts.plan_only).await? {
                        Ok((p, n)) => {
                            entries_read = Some(n);
                            client.unbind().await;
                            if opts.plan_only {
                                crate::approvals::preview(store, cfg, &p).await?;
                            }
                            return Ok(p);
                        }
                        Err(why) => why,
                    }
                }
                Err(why) => why,
            };
            let msg = format!(
                "incremental synchronization is not possible ({why}): running a full synchronization"
            );
            tracing::warn!(target: "mfasync::sync", "{msg}");
            note = Some(msg.clone());
            mode = SyncMode::Full;
            *mode_seen = Some(mode);
            if let Some(id) = run_id {
                let skipped = Ok(Plan::default());
                finish(store, id, SyncMode::Incremental, &skipped, Some(msg), None, None).await?;
                run_id = Some(store.run_started(SyncMode::Full.as_str()).await?);
            }
        }
        let (p, kept) = full(store, cfg, &mut client, opts.plan_only).await?;
        spilled = kept;
        client.unbind().await;
        if opts.plan_only {
            crate::approvals::preview(store, cfg, &p).await?;
        }
        Ok(p)
    })
    .await;
    if let Ok(Plan {
        incomplete_read: Some(why),
        ..
    }) = &result
    {
        extra_notes.push(format!("read cut short, nobody disabled or removed: {why}"));
    }
    if !extra_notes.is_empty() {
        note = Some(
            note.into_iter()
                .chain(extra_notes)
                .collect::<Vec<_>>()
                .join("; "),
        );
    }
    if !opts.plan_only && result.is_ok() {
        crate::approvals::after_cycle(store, mode == SyncMode::Full, pending_approval.as_ref())
            .await;
    }
    if let Some(id) = run_id {
        finish(store, id, mode, &result, None, entries_read, note.clone()).await?;
    }
    if !opts.plan_only {
        crate::retention::after_cycle(store, cfg).await;
    }
    Ok(Outcome {
        mode,
        plan: result?,
        note,
        entries_read,
        pending_approval,
        safeguards,
        spilled,
    })
}

async fn finish(
    store: &dyn Store,
    id: i64,
    mode: SyncMode,
    result: &Result<Plan>,
    error: Option<String>,
    entries_read: Option<usize>,
    note: Option<String>,
) -> Result<()> {
    let (counts, error) = match result {
        Ok(p) => (p.counts(), error),
        Err(e) => (Counts::default(), Some(format!("{e:#}"))),
    };
    let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
    store
        .run_finished(&SyncRun {
            id,
            started_at: String::new(),
            finished_at: None,
            mode: mode.as_str().into(),
            created: n(counts.created),
            updated: n(counts.updated),
            enabled: n(counts.enabled),
            disabled: n(counts.disabled),
            removed: n(counts.removed),
            unchanged: n(counts.unchanged),
            error,
            entries_read: entries_read.map(n),
            interrupted: false,
            note,
        })
        .await?;
    Ok(())
}

/// Why the stored watermark cannot continue: an item is in another domain
/// for which it holds no starting point.
fn missing_domain_mark(cfg: &Config, base: &str, wm: &Watermark) -> Option<String> {
    let unread = wm
        .domains
        .iter()
        .find(|m| incremental::Kind::of(m.kind).is_none())
        .map(|m| m.domain.clone());
    unread
        .or_else(|| {
            crate::domains::item_domains(cfg, base)
                .into_iter()
                .find(|d| !wm.domains.iter().any(|m| m.domain == *d))
        })
        .map(|d| {
            format!(
                "there is no starting point for the domain {d} (the last full synchronization could not read it or take one there)"
            )
        })
}

/// One incremental cycle; returns the plan and the entries read.
async fn incremental_cycle(
    store: &dyn Store,
    cfg: &Config,
    client: &mut Client,
    kind: incremental::Kind,
    wm: &Watermark,
    plan_only: bool,
) -> Result<std::result::Result<(Plan, usize), String>> {
    let base = client.base_dn().to_string();
    let mut domains = crate::domains::Domains::new(&base);
    let r = incremental_in_domains(store, cfg, client, &mut domains, kind, wm, plan_only).await;
    domains.close().await;
    r
}

/// The other domains with items: those reached are read from their own
/// starting points; one that cannot be reached keeps its starting point and
/// its users (unless it holds a group item: then the cycle is full).
async fn incremental_in_domains(
    store: &dyn Store,
    cfg: &Config,
    client: &mut Client,
    domains: &mut crate::domains::Domains,
    kind: incremental::Kind,
    wm: &Watermark,
    plan_only: bool,
) -> Result<std::result::Result<(Plan, usize), String>> {
    let t = std::time::Instant::now();
    let base = client.base_dn().to_string();
    let mut others: Vec<incremental::OtherDomain> = Vec::new();
    let mut servers: HashMap<String, String> = HashMap::new();
    let mut carried: Vec<DomainWatermark> = Vec::new();
    let mut warnings: Vec<String> = Vec::new();
    // The items' domains, and those the last full cycle read for members
    // from trusted domains (each has a starting point).
    let mut read = crate::domains::item_domains(cfg, &base);
    for m in &wm.domains {
        if !read.contains(&m.domain) && crate::domains::follows_other_domains(cfg) {
            read.push(m.domain.clone());
        }
    }
    for d in read {
        let Some(mark) = wm.domains.iter().find(|m| m.domain == d) else {
            return Ok(Err(format!(
                "there is no starting point for the domain {d}"
            )));
        };
        domains.connect(cfg, &d).await;
        match domains.connected(&d) {
            Some(Ok(c)) => {
                let offered = match incremental::supported(c, cfg) {
                    Ok(k) => k,
                    Err(why) => return Ok(Err(format!("the domain {d}: {why}"))),
                };
                let Some(k) = offered.resume(mark.kind) else {
                    return Ok(Err(format!(
                        "the starting point of the domain {d} is a {} cookie but {} now offers {}",
                        mark.kind,
                        c.server(),
                        offered.as_str()
                    )));
                };
                if mark.server != c.server() {
                    return Ok(Err(format!(
                        "the starting point of the domain {d} came from {} but {} answered",
                        mark.server,
                        c.server()
                    )));
                }
                servers.insert(d.clone(), c.server().to_string());
                others.push(incremental::OtherDomain {
                    domain: d,
                    kind: k,
                    cookie: mark.value.clone(),
                });
            }
            unreachable => {
                let why = match unreachable {
                    Some(Err(why)) => why,
                    _ => format!("the domain {d} was not connected"),
                };
                if crate::domains::holds_group_item(cfg, &base, &d) {
                    return Ok(Err(format!(
                        "{why}; it holds a group item, whose members cannot be told without it"
                    )));
                }
                warnings.push(format!(
                    "{why}; its users are left as they are and its changes are read when it answers again"
                ));
                carried.push(mark.clone());
            }
        }
    }
    let c = match incremental::cycle(client, domains, &others, cfg, store, kind, &base, &wm.value)
        .await
    {
        Ok(Ok(c)) => c,
        Ok(Err(why)) => return Ok(Err(why)),
        Err(e) => match e.needs_full() {
            Some(why) => return Ok(Err(why.to_string())),
            None => return Err(e),
        },
    };
    let mut p = c.plan;
    p.warnings.extend(warnings);
    for w in &p.warnings {
        tracing::warn!(target: "mfasync::sync", "{w}");
    }
    tracing::info!(target: "mfasync::sync",
        changes = p.changes.len(),
        entries_read = c.entries_read,
        domains = others.len(),
        ms = t.elapsed().as_millis() as u64,
        "incremental cycle computed"
    );
    if !plan_only {
        let mut marks = carried;
        for (o, (domain, value)) in others.iter().zip(c.domain_cookies) {
            marks.push(DomainWatermark {
                server: servers.remove(&domain).unwrap_or_default(),
                domain,
                kind: o.kind.mark(),
                value,
            });
        }
        marks.sort_by(|a, b| a.domain.cmp(&b.domain));
        let next = Watermark {
            kind: kind.mark(),
            server: client.server().to_string(),
            value: c.cookie,
            items_fingerprint: cfg.items_fingerprint(),
            mapping_fingerprint: cfg.mapping_fingerprint(),
            domains: marks,
        };
        p.restored = commit(store, cfg, &p, &next).await?;
    }
    Ok(Ok((p, c.entries_read)))
}

/// The `sync --json` document of PRODUCT.md (`plan_only`: with the changes, as
/// `--plan`); also what the REST API answers for a sync.
impl Outcome {
    /// The outcome as `sync --json` (and with `plan_only`, `sync --plan --json`)
    /// reports it: a plan's changes all in memory (the REST API; the CLI
    /// streams them: [`Outcome::plan_json`]). Fails only reading spilled creates.
    pub fn report(&self, plan_only: bool) -> Result<SyncReport> {
        let mut report = self.counts_report();
        if plan_only {
            let mut changes: Vec<PlannedChange> = self.plan.changes.iter().map(planned).collect();
            if let Some(spilled) = &self.spilled {
                for ch in spilled.changes()? {
                    changes.push(planned(&ch?));
                }
            }
            report.changes = Some(changes);
        }
        Ok(report)
    }

    /// `sync --plan --json` written as it goes: the changes come from memory,
    /// then from the spill file, one at a time (a plan of a million creates
    /// never sits in memory, nor does its text).
    pub fn plan_json(&self) -> PlanJson<'_> {
        PlanJson(self)
    }

    /// How many changes a plan lists (held in memory and spilled).
    pub fn listed(&self) -> usize {
        self.plan.changes.len() + self.spilled.as_ref().map_or(0, |s| s.len())
    }

    fn counts_report(&self) -> SyncReport {
        let c = self.plan.counts();
        SyncReport {
            changes: None,
            created: c.created,
            disabled: c.disabled,
            enabled: c.enabled,
            entries_read: self.entries_read,
            held: self.safeguards.held.clone(),
            mode: self.mode,
            note: self.note.clone(),
            pending_approval: self.pending_approval.clone(),
            protected: self.safeguards.protected.clone(),
            read_incomplete: self.plan.incomplete_read.clone(),
            removed: c.removed,
            restored: self.plan.restored,
            unchanged: c.unchanged,
            updated: c.updated,
        }
    }
}

fn planned(ch: &mfasync_core::plan::Change) -> PlannedChange {
    PlannedChange {
        action: ch.action,
        fields: ch.fields.iter().map(|f| f.to_string()).collect(),
        username: ch.user.username.clone(),
    }
}

/// See [`Outcome::plan_json`]: the same document as `report(true)`, with
/// `changes` first.
pub struct PlanJson<'a>(&'a Outcome);

impl serde::Serialize for PlanJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        struct Doc<'a> {
            changes: Changes<'a>,
            #[serde(flatten)]
            report: SyncReport,
        }
        Doc {
            changes: Changes(self.0),
            report: self.0.counts_report(),
        }
        .serialize(s)
    }
}

struct Changes<'a>(&'a Outcome);

impl serde::Serialize for Changes<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeSeq};
        let mut seq = s.serialize_seq(Some(self.0.listed()))?;
        for ch in &self.0.plan.changes {
            seq.serialize_element(&planned(ch))?;
        }
        if let Some(spilled) = &self.0.spilled {
            for ch in spilled.changes().map_err(S::Error::custom)? {
                seq.serialize_element(&planned(&ch.map_err(S::Error::custom)?))?;
            }
        }
        seq.end()
    }
}
