//! One synchronization cycle: read the directory, resolve each sync item's
//! members (first item wins), compute the plan (pure, in core) and apply it in
//! one store transaction together with the watermark.

use crate::incremental;
use anyhow::{anyhow, bail, Context, Result};
use mfasync_core::config::{Config, ItemKind, SyncItem, WhenRemoved};
use mfasync_core::filter::{dn_is_under, normalize_dn, parent_dn};
use mfasync_core::mapping::{self, DirectoryUser, Packed};
use mfasync_core::plan::{self, Action, Counts, Plan};
use mfasync_core::report::{PlannedChange, SyncMode, SyncReport};
use mfasync_core::MfaUser;
use mfasync_ldap::{Client, Scope};
use mfasync_store::{DomainWatermark, MarkKind, Store, SyncRun, UserKey, Watermark};
use std::collections::{HashMap, HashSet};

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
}

/// The users of a full cycle kept for item resolution after the read (when
/// some item cannot be decided from the DN alone), packed (~250 bytes each).
struct Snapshot {
    /// Users under the base DN matching the user filter (and users found
    /// outside it through an item), by normalised DN.
    users: HashMap<String, Packed>,
    /// Entries found through an item that could not be mapped: (their
    /// unique id if readable, why). Their stored users are left as they are.
    unmapped: Vec<(Option<String>, String)>,
}

impl Snapshot {
    /// Map `e` (found through an item); an entry that cannot be mapped is
    /// noted (its stored user is then kept as it is) instead of vanishing.
    fn map(
        &mut self,
        a: &mfasync_core::config::Attributes,
        e: &mfasync_core::Entry,
    ) -> Option<DirectoryUser> {
        match mapping::map_user(a, e) {
            Ok(du) => Some(du),
            Err(err) => {
                let id = e
                    .first_bytes(&a.unique_id)
                    .and_then(|raw| mapping::unique_id_text(a.unique_id_type, raw).ok());
                self.unmapped.push((id, err.to_string()));
                None
            }
        }
    }
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

pub async fn run(store: &dyn Store, cfg: &Config, opts: Options) -> Result<Outcome> {
    if cfg.sync.items.is_empty() {
        bail!("no sync items are configured: add [[sync.items]] to the configuration");
    }
    // welcome/update emails are queued in the transactions of this cycle (issue 19)
    let _emails = crate::emails::Armed::arm(store, cfg);
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
    let mut run_id = if opts.plan_only {
        None
    } else {
        Some(store.run_started(mode.as_str()).await?)
    };
    let mut entries_read = None;
    // sync items found under a new DN (renamed or moved): said with the note
    let mut renames: Vec<String> = Vec::new();
    let (result, pending_approval) = crate::approvals::track(async {
        let mut client = connect(cfg).await?;
        let followed = crate::items::follow(store, &mut client, cfg, opts.plan_only).await?;
        renames = followed.notes;
        let cfg = followed.cfg.as_ref().unwrap_or(cfg);
        if mode == SyncMode::Incremental {
            let missing = wm
                .as_ref()
                .and_then(|w| missing_domain_mark(cfg, client.base_dn(), w));
            let ok = match (wm.as_ref(), incremental::supported(&client, cfg)) {
                _ if !renames.is_empty() => Err("a sync item was renamed or moved".to_string()),
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
            if let Some(id) = run_id {
                let skipped = Ok(Plan::default());
                finish(store, id, SyncMode::Incremental, &skipped, Some(msg), None, None).await?;
                run_id = Some(store.run_started(SyncMode::Full.as_str()).await?);
            }
        }
        let p = full(store, cfg, &mut client, opts.plan_only).await?;
        client.unbind().await;
        Ok(p)
    })
    .await;
    if !renames.is_empty() {
        note = Some(
            note.into_iter()
                .chain(renames)
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

/// The query bind's password (`directory.query_bind`), for every connection
/// a cycle opens to the main domain.
fn query_password(cfg: &Config) -> Result<Option<String>> {
    crate::secrets::bind_password(&cfg.directory.query_bind, "directory.query_bind")
        .map_err(|e| anyhow!(e))
}

pub(crate) async fn connect(cfg: &Config) -> Result<Client> {
    let password = query_password(cfg)?;
    let client = mfasync_ldap::connect(
        &cfg.directory,
        &cfg.directory.query_bind,
        password.as_deref(),
    )
    .await
    .context("cannot connect to the directory")?;
    if client.base_dn().is_empty() {
        bail!("directory.base_dn is empty and the server names no naming context");
    }
    Ok(client)
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
        Err(e) => match crate::domains::needs_full(&e) {
            Some(why) => return Ok(Err(why)),
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
        commit(store, cfg, &p, &next).await?;
    }
    Ok(Ok((p, c.entries_read)))
}

/// The single point where a cycle's plan is applied, with its watermark, in
/// ONE transaction (full and incremental cycles alike).
async fn commit(store: &dyn Store, cfg: &Config, p: &Plan, wm: &Watermark) -> Result<()> {
    let t = std::time::Instant::now();
    // Disables/removals over sync.approval_threshold are held for approval (issue 4).
    let (now, _pending) = crate::approvals::hold(store, cfg, p).await?;
    store.apply(&now, Some(wm)).await?;
    tracing::info!(target: "mfasync::sync", ms = t.elapsed().as_millis() as u64, "applied the plan");
    Ok(())
}

async fn full(
    store: &dyn Store,
    cfg: &Config,
    client: &mut Client,
    plan_only: bool,
) -> Result<Plan> {
    let base = client.base_dn().to_string();
    // The incremental starting point is taken BEFORE the full read: a change
    // made while we read is then seen again by the next incremental cycle
    // (harmless: resolution is idempotent) instead of being lost.
    // With `always_full` every cycle is full: no starting point is taken
    // (the DirSync/syncrepl/USN query would be wasted work each cycle).
    let start = if plan_only || cfg.sync.always_full {
        None
    } else {
        match incremental::supported(client, cfg) {
            Ok(kind) => match incremental::starting_point(client, kind, &base).await {
                Ok(start) => Some(start),
                Err(e) => {
                    tracing::warn!(target: "mfasync::sync",
                        "no incremental starting point: {e:#}; the next cycle will be full too"
                    );
                    None
                }
            },
            Err(why) => {
                tracing::info!(target: "mfasync::sync", "no incremental synchronization: {why}");
                None
            }
        }
    };
    let attrs = cfg.attributes.user_attributes();
    let claimer = Claimer::new(&cfg.sync.items, &base)
        .filter(|_| crate::domains::foreign_items(cfg, &base).is_empty());
    if claimer.is_some() {
        // Every item is decided from the DN while reading: check they exist first.
        for (i, item) in cfg.sync.items.iter().enumerate() {
            item_exists(client, item)
                .await
                .with_context(|| format!("sync.items[{i}] ({})", item.dn))?;
        }
    }
    let t = std::time::Instant::now();
    let streaming = claimer.is_some();
    let (worker, stored_dir_users, applying, streamed) =
        read_users(store, client, cfg, &base, &attrs, claimer, plan_only).await?;
    let mut w = worker;
    tracing::info!(target: "mfasync::sync",
        users = w.users,
        stored = stored_dir_users,
        streaming,
        creates_written = streamed,
        ms = t.elapsed().as_millis() as u64,
        "read the directory"
    );

    // Safety: an empty answer must never look like everybody left.
    if w.users == 0 && stored_dir_users > 0 {
        bail!(
            "the directory returned no users under {base} with filter {} while {stored_dir_users} directory users are stored; refusing to treat that as everybody leaving (check base_dn, filters.user and the bind account's rights)",
            cfg.filters.user
        );
    }

    let mut applying = applying;
    let mut streamed = streamed;
    // The other domains' starting points, taken as each is connected.
    let mut domain_marks = Vec::new();
    if let Some(mut snap) = w.deferred.take() {
        // Some item cannot be told from the DN (a group, a container outside
        // the base DN): resolve the items over the packed snapshot, in order.
        let mut claimed: HashSet<String> = HashSet::new();
        let mut domains = crate::domains::Domains::new(&base);
        if !plan_only && start.is_some() {
            domains = domains.taking_marks();
        }
        let follow = crate::domains::follows_other_domains(cfg);
        for (i, item) in cfg.sync.items.iter().enumerate() {
            let read = if crate::domains::foreign_domain(cfg, &base, &item.dn).is_none() {
                // groups of this domain: members from trusted domains followed
                let fsp = follow.then_some(&mut domains);
                item_members(client, cfg, item, &base, &attrs, &mut snap, fsp).await
            } else {
                match domains.client_for(cfg, item).await {
                    // In another domain: read on its own (no base) from its DCs.
                    Ok(Some(c)) => item_members(c, cfg, item, "", &attrs, &mut snap, None).await,
                    Ok(None) => Err(anyhow!("the domain of {} was not connected", item.dn)),
                    Err(why) => {
                        let (p, warn) = (&mut w.planner, &mut w.warnings);
                        crate::domains::leave_as_is(store, p, warn, (i, item), None, &why).await?;
                        continue;
                    }
                }
            };
            let (members, unread) =
                read.with_context(|| format!("sync.items[{i}] ({})", item.dn))?;
            // An item of another domain that answers with nobody while users
            // of it are stored: as for the connected domain, an empty answer
            // is never everybody leaving (its users are left as they are).
            if members.is_empty() && crate::domains::foreign_domain(cfg, &base, &item.dn).is_some()
            {
                let stored = store
                    .users_by(UserKey::SyncItem, std::slice::from_ref(&item.dn))
                    .await?;
                if !stored.is_empty() {
                    let why = "its domain's DCs returned no users for it (check the bind account's rights there)";
                    let (p, warn) = (&mut w.planner, &mut w.warnings);
                    crate::domains::leave_as_is(store, p, warn, (i, item), None, why).await?;
                    continue;
                }
            }
            for (domain, why) in unread {
                let (p, warn) = (&mut w.planner, &mut w.warnings);
                let d = Some(domain.as_str());
                crate::domains::leave_as_is(store, p, warn, (i, item), d, &why).await?;
            }
            for key in members {
                let Some(du) = snap.users.get(&key).and_then(Packed::unpack) else {
                    continue;
                };
                let Some(id) = du.user.directory_id.clone() else {
                    continue;
                };
                if claimed.insert(id) {
                    w.take(du, i, None);
                    if let Some(a) = applying.as_mut() {
                        streamed += w.flush_creates(a.as_mut(), false).await?;
                    }
                }
            }
        }
        for p in snap.users.values() {
            if let Some(id) = p.directory_id() {
                w.planner.exists(&id);
            }
        }
        // entries found through an item that could not be mapped: their
        // stored users are left as they are (as for entries under the base DN)
        for (id, why) in std::mem::take(&mut snap.unmapped) {
            if let Some(id) = id {
                w.planner.keep_as_is(&id);
            }
            w.warnings.push(why);
        }
        if follow {
            // Stored users of other domains no item took: still users there
            // (they left their item: its when_removed) or gone?
            let unseen = w.planner.unseen();
            check_other_domains(store, cfg, &base, &mut domains, &mut w, &unseen).await?;
        }
        domain_marks = domains.taken_marks();
        domains.close().await;
    }
    if let Some(a) = applying.as_mut() {
        streamed += w.flush_creates(a.as_mut(), true).await?;
    }
    // Stored users the read did not see: still in the directory (moved out
    // of the base DN, filtered out: their item's when_removed) or deleted?
    look_up_unseen(store, client, cfg, &base, &mut w).await?;

    let t = std::time::Instant::now();
    let mut changes: Vec<plan::Change> = std::mem::take(&mut w.creates);
    // Users whose digest differs: compare with their stored rows.
    let candidates = std::mem::take(&mut w.changed);
    for chunk in candidates.chunks(500) {
        let ids: Vec<String> = chunk
            .iter()
            .filter_map(|(d, _)| d.directory_id.clone())
            .collect();
        let rows = store.users_by(UserKey::DirectoryId, &ids).await?;
        let by_id: HashMap<&str, &MfaUser> = rows
            .iter()
            .filter(|u| u.source == mfasync_core::Source::Directory)
            .filter_map(|u| u.directory_id.as_deref().map(|id| (id, u)))
            .collect();
        for (d, raw) in chunk {
            let Some(cur) = d.directory_id.as_deref().and_then(|id| by_id.get(id)) else {
                bail!(
                    "stored user {} changed while the synchronization ran; run it again",
                    d.username
                );
            };
            match w.planner.changed(d.clone(), cur) {
                Some(mut c) => {
                    c.raw = *raw;
                    changes.push(c);
                }
                None => {
                    if let (Some(id), Some(raw)) = (d.directory_id.clone(), raw) {
                        w.restamp.push((id, *raw));
                    }
                }
            }
        }
    }
    // Stored users no item holds.
    let items: HashMap<String, WhenRemoved> = cfg
        .sync
        .items
        .iter()
        .map(|i| (i.dn.clone(), i.when_removed))
        .collect();
    let gone = w.planner.departures(
        &|item| items.get(item).copied(),
        cfg.sync.remove_deleted_users,
    );
    for chunk in gone.chunks(500) {
        let ids: Vec<String> = chunk.iter().map(|(id, _, _)| id.clone()).collect();
        let rows = store.users_by(UserKey::DirectoryId, &ids).await?;
        for (id, action, reason) in chunk {
            let Some(cur) = rows
                .iter()
                .find(|u| u.directory_id.as_deref() == Some(id.as_str()))
            else {
                bail!("stored user {id} disappeared while the synchronization ran; run it again");
            };
            changes.push(plan::departure_change(*action, cur, reason.clone()));
        }
    }
    plan::sort_changes(&mut changes);
    let mut p = Plan {
        changes,
        unchanged: w.planner.unchanged,
        warnings: std::mem::take(&mut w.planner.warnings),
        unlisted: Counts {
            created: streamed,
            ..Counts::default()
        },
    };
    p.warnings.append(&mut w.warnings);
    let restamp = std::mem::take(&mut w.restamp);
    drop(w);
    for warning in &p.warnings {
        tracing::warn!(target: "mfasync::sync", "{warning}");
    }
    tracing::info!(target: "mfasync::sync",
        changes = p.changes.len(),
        ms = t.elapsed().as_millis() as u64,
        "computed the plan"
    );
    if !plan_only {
        let wm = match start {
            Some((kind, cookie)) => {
                // A domain read without a starting point is stored as "none":
                // the next cycle is full.
                let domains: Vec<DomainWatermark> = domain_marks
                    .into_iter()
                    .map(|(domain, mark)| match mark {
                        Some((kind, server, value)) => DomainWatermark {
                            domain,
                            kind: kind.mark(),
                            server,
                            value,
                        },
                        None => DomainWatermark {
                            domain,
                            kind: MarkKind::None,
                            server: String::new(),
                            value: Vec::new(),
                        },
                    })
                    .collect();
                Watermark {
                    kind: kind.mark(),
                    server: client.server().to_string(),
                    value: cookie,
                    items_fingerprint: cfg.items_fingerprint(),
                    mapping_fingerprint: cfg.mapping_fingerprint(),
                    domains,
                }
            }
            None => Watermark {
                kind: MarkKind::Full,
                server: String::new(),
                value: Vec::new(),
                items_fingerprint: cfg.items_fingerprint(),
                mapping_fingerprint: cfg.mapping_fingerprint(),
                domains: Vec::new(),
            },
        };
        match applying {
            // Creates were written while reading (nothing was stored: no
            // departure is possible, so the approval hold writes nothing).
            Some(a) => commit_into(store, cfg, &p, a, &wm).await?,
            None => commit(store, cfg, &p, &wm).await?,
        }
        if !restamp.is_empty() {
            // after the cycle's commit: only a cache for the next full sync
            let t = std::time::Instant::now();
            match store.restamp(&restamp).await {
                Ok(()) => tracing::info!(target: "mfasync::sync",
                    users = restamp.len(),
                    ms = t.elapsed().as_millis() as u64,
                    "wrote raw stamps of unchanged users"
                ),
                Err(e) => tracing::warn!(target: "mfasync::sync",
                    "could not write raw stamps (the next full sync maps those users again): {e}"
                ),
            }
        }
    }
    Ok(p)
}

/// Load the phone-number metadata (150-400 ms, once per process) on another
/// core while the cycle connects and reads; the first E.164 conversion would
/// otherwise stall the mapping thread (and, through its queue, the reader).
/// Not at all in a full sync whose users are all known unchanged by their
/// raw stamps (it is then never needed).
fn warm_phone_metadata() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        let _ = std::thread::Builder::new()
            .name("mfasync-phone-warm".into())
            .spawn(|| mfasync_core::phone::to_e164("+1 425 555 0100", "1"));
    });
}

/// `commit` into a write transaction already holding streamed creates.
async fn commit_into(
    store: &dyn Store,
    cfg: &Config,
    p: &Plan,
    mut a: Box<dyn mfasync_store::Applying + '_>,
    wm: &Watermark,
) -> Result<()> {
    let t = std::time::Instant::now();
    let (now, _pending) = crate::approvals::hold(store, cfg, p).await?;
    a.write(&now).await?;
    a.commit(Some(wm)).await?;
    tracing::info!(target: "mfasync::sync", ms = t.elapsed().as_millis() as u64, "applied the plan");
    Ok(())
}

/// The governing item of a user, told from its DN alone: possible when every
/// item is a container under the base DN (then the whole cycle streams).
struct Claimer {
    /// Per item in order: its normalised DN and include_nested.
    items: Vec<(String, bool)>,
}

impl Claimer {
    fn new(items: &[SyncItem], base: &str) -> Option<Claimer> {
        let base = normalize_dn(base);
        items
            .iter()
            .map(|i| {
                let dn = normalize_dn(&i.dn);
                (i.kind == ItemKind::Container && dn_is_under(&dn, &base))
                    .then_some((dn, i.include_nested))
            })
            .collect::<Option<Vec<_>>>()
            .map(|items| Claimer { items })
    }

    /// The first item holding the user with normalised DN `key`.
    fn claim(&self, key: &str) -> Option<usize> {
        self.items.iter().position(|(dn, nested)| {
            if *nested {
                dn_is_under(key, dn) && key != dn
            } else {
                parent_dn(key) == *dn
            }
        })
    }
}

/// The mapping side of a full cycle: maps each entry, decides its item when
/// the DN tells (else keeps it packed for later), applies the item's
/// settings and asks the planner whether anything changed. Only changes are kept.
struct Worker {
    attrs: mfasync_core::config::Attributes,
    items: Vec<SyncItem>,
    claimer: Option<Claimer>,
    planner: plan::Planner,
    cache: mfasync_core::phone::E164Cache,
    /// Users kept for item resolution after the read (no `claimer`).
    deferred: Option<Snapshot>,
    /// Creates not yet handed on.
    creates: Vec<plan::Change>,
    /// Where creates go while reading (first sync into an empty store).
    sink: Option<CreateSink>,
    /// Stored users whose digest differs: to compare with their rows (with
    /// the entry each was mapped from, when known).
    changed: Vec<(MfaUser, Option<plan::RawMark>)>,
    /// Per item: the raw seed of its entries (streaming only; empty: every
    /// entry is mapped).
    seeds: Vec<plan::RawSeed>,
    /// Users unchanged by digest whose raw stamp is missing or stale: the
    /// stamp to write (directory_id and mark).
    restamp: Vec<(String, plan::RawMark)>,
    warnings: Vec<String>,
    /// Users read under the base DN (mapped, or known unchanged by their raw stamp).
    users: usize,
}

/// What `Worker::stamp_check` found: unchanged, or to map (with the raw
/// hash of the entry, when stamps are kept).
enum Stamp {
    Unchanged,
    Map(Option<u128>),
}

/// What identifies this build for raw stamps (`core::plan::RawSeed`): the
/// executable's GNU build ID (`build_id`), so a new binary (new mapping
/// code, new phone metadata) maps every user once more. None (no build ID,
/// or `MFASYNC_NO_RAW_STAMPS` set: the way to force every user through the
/// mapping): no raw stamps are compared or written.
fn build_identity() -> Option<&'static str> {
    static ID: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    if std::env::var_os("MFASYNC_NO_RAW_STAMPS").is_some() {
        return None;
    }
    ID.get_or_init(|| {
        let id = crate::build_id::current();
        if id.is_none() {
            tracing::info!(target: "mfasync::sync", "the executable has no build ID: full syncs map every user");
        }
        id.map(|id| format!("{} {id}", env!("CARGO_PKG_VERSION")))
    })
    .as_deref()
}

/// Creates handed to the store per write.
const CREATE_CHUNK: usize = 1000;

/// Entries read but not yet mapped, at most (bounded queue).
const ENTRY_QUEUE: usize = 2000;
/// Entries the mapping thread takes off the queue while the stored digests
/// still load, at most: the read goes on meanwhile. A no-change sync of
/// 100,000 users read ~18,000 entries during the ~0.18 s load; with only the
/// queue the read stood still for most of it (1.18 -> 1.05 s, ~+9 MB peak).
const LOAD_SLACK: usize = 16384;
/// Entries handed to the mapping thread at a time: one hand-over (and at
/// most one wake-up of the other thread) per batch instead of per entry.
const ENTRY_BATCH: usize = 64;
/// Chunks of creates computed but not yet written, at most.
const CREATE_QUEUE: usize = 2;

/// The mapping thread's way to the writer during a first sync: chunks of
/// creates go `to` it, and come `back` emptied to be filled again. A chunk
/// is ~1.3 MB; allocated anew each time, its memory was faulted in afresh
/// (the allocator returns freed memory to the system): ~4 % of the CPU of
/// a first sync of 100,000 users (`perf`).
struct CreateSink {
    to: std::sync::mpsc::SyncSender<Vec<plan::Change>>,
    back: std::sync::mpsc::Receiver<Vec<plan::Change>>,
}

/// The reader's end of the entry queue.
enum EntryTx {
    Bounded(std::sync::mpsc::SyncSender<Vec<mfasync_core::Entry>>),
    Unbounded(std::sync::mpsc::Sender<Vec<mfasync_core::Entry>>),
}

impl EntryTx {
    /// Queue a batch of entries; a stopped mapping thread has failed, and
    /// its error ends the cycle.
    fn send(&self, e: Vec<mfasync_core::Entry>) {
        let _ = match self {
            EntryTx::Bounded(t) => t.send(e).map_err(|_| ()),
            EntryTx::Unbounded(t) => t.send(e).map_err(|_| ()),
        };
    }
}

impl Worker {
    /// Whether the entry, held by item `i`, is known unchanged by its stored
    /// raw stamp (then it is counted and nothing else is done with it), else
    /// its raw hash to stamp its user with once mapped (None: no stamps).
    fn stamp_check(&mut self, e: &mfasync_core::Entry, i: usize) -> Stamp {
        let Some(seed) = self.seeds.get(i) else {
            return Stamp::Map(None);
        };
        let raw = seed.entry(e);
        // (nothing stored, as in a first sync: no stamp to compare with)
        if self.planner.stored_directory_users() > 0 {
            if let Some(id) = e
                .first_bytes(&self.attrs.unique_id)
                .and_then(|v| mapping::unique_id_text(self.attrs.unique_id_type, v).ok())
            {
                if self.planner.unchanged_raw(&id, raw) {
                    self.planner.exists(&id);
                    self.users += 1;
                    return Stamp::Unchanged;
                }
            }
        }
        Stamp::Map(Some(raw))
    }

    fn add_entry(&mut self, e: mfasync_core::Entry) {
        // Streaming: the entry's item, told by its DN (None: no item holds it).
        let claimed = self
            .claimer
            .as_ref()
            .map(|c| c.claim(&normalize_dn(&mapping::entry_dn(&self.attrs, &e))));
        let raw = match claimed {
            Some(Some(i)) => match self.stamp_check(&e, i) {
                Stamp::Unchanged => return,
                Stamp::Map(raw) => raw,
            },
            _ => None,
        };
        // (once) the phone metadata loads on another core meanwhile; an
        // entry of no item is mapped without it
        if claimed != Some(None) {
            warm_phone_metadata();
        }
        match mapping::map_user(&self.attrs, &e) {
            Ok(du) => {
                self.users += 1;
                if let Some(id) = du.user.directory_id.as_deref() {
                    self.planner.exists(id);
                }
                match (claimed, &mut self.deferred) {
                    (Some(Some(i)), _) => self.take(du, i, raw),
                    (Some(None), _) | (None, None) => {}
                    (None, Some(snap)) => {
                        let key = normalize_dn(du.user.dn.as_deref().unwrap_or(&e.dn));
                        snap.users.insert(key, Packed::pack(&du));
                    }
                }
            }
            Err(err) => {
                if let Some(id) = e
                    .first_bytes(&self.attrs.unique_id)
                    .and_then(|raw| mapping::unique_id_text(self.attrs.unique_id_type, raw).ok())
                {
                    self.planner.keep_as_is(&id);
                }
                self.warnings.push(err.to_string());
            }
        }
    }

    /// A user held by item `i` (first item wins: the caller decides);
    /// `raw`: the hash of the entry it was mapped from, when stamps are kept.
    fn take(&mut self, du: DirectoryUser, i: usize, raw: Option<u128>) {
        let Some(item) = self.items.get(i) else {
            return;
        };
        let d = mapping::apply_item_into(du, item, &mut self.cache);
        let digest = plan::digest_bits(&d);
        let raw = raw.map(|raw| plan::RawMark { raw, digest });
        let id = raw.and(d.directory_id.clone());
        match self.planner.desired_with_digest(d, digest) {
            plan::Verdict::Unchanged => {
                // unchanged, but its stamp is missing or stale (a new build,
                // another mapping, a first sync with stamps)
                if let (Some(id), Some(raw)) = (id, raw) {
                    self.restamp.push((id, raw));
                }
            }
            plan::Verdict::Changed(d) => self.changed.push((d, raw)),
            plan::Verdict::Create(d) => {
                self.creates.push(plan::Change {
                    action: Action::Create,
                    user: d,
                    before: None,
                    fields: vec![],
                    reason: None,
                    raw,
                });
                if self.creates.len() >= CREATE_CHUNK {
                    self.send_creates();
                }
            }
        }
    }

    /// Hand the creates to the writer, when one listens.
    fn send_creates(&mut self) {
        if let Some(sink) = &self.sink {
            if !self.creates.is_empty() {
                let next = sink
                    .back
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(CREATE_CHUNK));
                // a closed writer has failed: its error ends the cycle
                let _ = sink.to.send(std::mem::replace(&mut self.creates, next));
            }
        }
    }

    /// Write the creates held after the read (a full chunk, or all of them
    /// when `all`); how many were written.
    async fn flush_creates(
        &mut self,
        a: &mut (dyn mfasync_store::Applying + '_),
        all: bool,
    ) -> Result<usize> {
        if self.creates.is_empty() || (!all && self.creates.len() < CREATE_CHUNK) {
            return Ok(0);
        }
        let chunk = std::mem::take(&mut self.creates);
        a.write(&chunk).await?;
        Ok(chunk.len())
    }
}

/// Read every user under the base DN once and hand each entry to the
/// `Worker` on a thread of its own (mapping overlaps with reading). The
/// stored users' digests are loaded at the same time; when nothing is stored
/// yet (a first sync), creates are written to the store as they come, in the
/// cycle's one transaction. Returns the worker, the number of stored
/// directory users, the open transaction (if creates were written) and how
/// many creates it holds.
async fn read_users<'s>(
    store: &'s dyn Store,
    client: &mut Client,
    cfg: &Config,
    base: &str,
    attrs: &[String],
    claimer: Option<Claimer>,
    plan_only: bool,
) -> Result<(
    Worker,
    usize,
    Option<Box<dyn mfasync_store::Applying + 's>>,
    usize,
)> {
    let handle = tokio::runtime::Handle::current();
    // On a multi-threaded runtime the reader, the mapping thread and the
    // writer each have a thread, and bounded channels between them keep
    // memory flat: a slower stage holds back the one before it (the reader
    // then asks for the next page later). Elsewhere (never in the binary's
    // sync paths) everything shares one task: unbounded, creates after the read.
    let threads = handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread;
    let (tx, rx) = if threads {
        let (t, r) =
            std::sync::mpsc::sync_channel::<Vec<mfasync_core::Entry>>(ENTRY_QUEUE / ENTRY_BATCH);
        (EntryTx::Bounded(t), r)
    } else {
        let (t, r) = std::sync::mpsc::channel::<Vec<mfasync_core::Entry>>();
        (EntryTx::Unbounded(t), r)
    };
    let (planner_tx, planner_rx) =
        std::sync::mpsc::sync_channel::<(plan::Planner, Option<CreateSink>)>(1);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<Worker>();
    let attributes = mapping::lowercase_names(&cfg.attributes);
    let items = cfg.sync.items.clone();
    // Raw stamps: only when each entry's item is told by its DN.
    let seeds: Vec<plan::RawSeed> = match (&claimer, build_identity()) {
        (Some(_), Some(build)) => items
            .iter()
            .map(|i| plan::RawSeed::new(build, &attributes, i))
            .collect(),
        _ => Vec::new(),
    };
    if seeds.is_empty() {
        // no raw stamps this cycle: every user is mapped
        warm_phone_metadata();
    }
    std::thread::Builder::new()
        .name("mfasync-map".into())
        .spawn(move || {
            // The stored digests arrive first (loaded while the read starts).
            // Meanwhile up to LOAD_SLACK entries are taken off the queue, so
            // that the read goes on instead of waiting for the load.
            let mut early: Vec<mfasync_core::Entry> = Vec::new();
            let mut queue_open = true;
            let (planner, sink) = loop {
                match planner_rx.try_recv() {
                    Ok(p) => break p,
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => return,
                    Err(std::sync::mpsc::TryRecvError::Empty) => {}
                }
                if !queue_open || early.len() >= LOAD_SLACK {
                    match planner_rx.recv() {
                        Ok(p) => break p,
                        Err(_) => return,
                    }
                }
                match rx.recv_timeout(std::time::Duration::from_millis(2)) {
                    Ok(batch) => early.extend(batch),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => queue_open = false,
                }
            };
            let deferred = claimer.is_none().then(|| Snapshot {
                users: HashMap::new(),
                unmapped: Vec::new(),
            });
            let mut w = Worker {
                attrs: attributes,
                items,
                claimer,
                planner,
                cache: Default::default(),
                deferred,
                creates: Vec::new(),
                sink,
                changed: Vec::new(),
                seeds,
                restamp: Vec::new(),
                warnings: Vec::new(),
                users: 0,
            };
            for e in early {
                w.add_entry(e);
            }
            for batch in rx {
                for e in batch {
                    w.add_entry(e);
                }
            }
            w.send_creates();
            // closes the creates channel: the writer ends once it has written them
            w.sink = None;
            let _ = done_tx.send(w);
        })
        .context("cannot start the mapping thread")?;
    let progress = crate::notify::counter("reading directory users");
    let progress_ref = progress.as_ref();
    crate::progress::reading();
    let read = async move {
        // On its own thread the read opens its own connection (see below).
        let mut own = match threads {
            true => sibling(client, cfg).await,
            false => None,
        };
        let reader: &mut Client = match own.as_mut() {
            Some(c) => c,
            None => client,
        };
        let mut batch = Vec::with_capacity(ENTRY_BATCH);
        let mut f = |e: mfasync_core::Entry| {
            if let Some(p) = progress_ref {
                p.inc();
            }
            crate::progress::entry_read();
            batch.push(e);
            if batch.len() >= ENTRY_BATCH {
                tx.send(std::mem::replace(
                    &mut batch,
                    Vec::with_capacity(ENTRY_BATCH),
                ));
            }
        };
        let r = reader
            .search_each(base, Scope::Subtree, &cfg.filters.user, attrs, &mut f)
            .await
            .with_context(|| format!("searching users under {base}"));
        if !batch.is_empty() {
            tx.send(batch);
        }
        drop(tx);
        if let Some(c) = own {
            c.unbind().await;
        }
        crate::progress::applying();
        r
    };
    let load_and_write = async {
        // moved in: if loading fails, the mapping thread's wait for the
        // planner ends with this future (else it would wait forever, and the
        // reader with it on the full entry queue)
        let planner_tx = planner_tx;
        let t = std::time::Instant::now();
        let mut planner = plan::Planner::new(Vec::new());
        store.user_digests(&mut |d| planner.add_stored(d)).await?;
        let stored_dir_users = planner.stored_directory_users();
        tracing::info!(target: "mfasync::sync",
            ms = t.elapsed().as_millis() as u64,
            stored = stored_dir_users,
            "loaded stored digests"
        );
        let (sink, creates) = if threads && !plan_only && stored_dir_users == 0 {
            let (to, r) = std::sync::mpsc::sync_channel(CREATE_QUEUE);
            let (back_tx, back) = std::sync::mpsc::sync_channel(CREATE_QUEUE + 2);
            (Some(CreateSink { to, back }), Some((r, back_tx)))
        } else {
            (None, None)
        };
        planner_tx
            .send((planner, sink))
            .map_err(|_| anyhow!("the mapping thread stopped unexpectedly"))?;
        let mut applying: Option<Box<dyn mfasync_store::Applying + 's>> = None;
        let mut written = 0;
        if let Some((r, back)) = creates {
            let _keep = crate::notify::writing_while_reading();
            // a blocking receive: this runs on the writer's own thread (`threads`)
            while let Ok(mut chunk) = r.recv() {
                let a = match applying.as_mut() {
                    Some(a) => a,
                    None => applying.insert(store.begin_apply().await?),
                };
                a.write(&chunk).await?;
                written += chunk.len();
                chunk.clear();
                let _ = back.try_send(chunk);
            }
        }
        anyhow::Ok((stored_dir_users, applying, written))
    };
    let (searched, loaded) = if threads {
        // The read gets a thread with a runtime of its own, and its own
        // connection opened there: ldap3's connection task then decodes each
        // answer on the thread that turns it into an entry, instead of waking
        // another thread for every entry (BENCHMARKS.md, "History"). This
        // thread writes meanwhile: binding rows and building audit JSON
        // overlap with the read.
        tokio::task::block_in_place(|| {
            std::thread::scope(|sc| {
                let reader = std::thread::Builder::new()
                    .name("mfasync-read".into())
                    .spawn_scoped(sc, move || {
                        tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .context("cannot start the directory reader's runtime")?
                            .block_on(read)
                    });
                let loaded = handle.block_on(load_and_write);
                let searched = match reader {
                    Ok(r) => r.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
                    Err(e) => Err(anyhow!(e).context("cannot start the directory reader")),
                };
                (searched, loaded)
            })
        })
    } else {
        tokio::join!(read, load_and_write)
    };
    if let Some(p) = progress {
        p.finish();
    }
    let loaded = loaded?;
    let w = done_rx
        .await
        .map_err(|_| anyhow!("the mapping thread stopped unexpectedly"))?;
    searched?;
    let (stored_dir_users, applying, written) = loaded;
    Ok((w, stored_dir_users, applying, written))
}

/// A second connection to `client`'s server for a full read on a thread of
/// its own (`Client::sibling`); None when it cannot be had (the server may
/// limit connections): the read then goes on `client`, only slower.
async fn sibling(client: &Client, cfg: &Config) -> Option<Client> {
    let opened = match query_password(cfg) {
        Ok(password) => client
            .sibling(
                &cfg.directory,
                &cfg.directory.query_bind,
                password.as_deref(),
            )
            .await
            .map_err(anyhow::Error::from),
        Err(e) => Err(e),
    };
    match opened {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::info!(target: "mfasync::sync",
                server = client.server(),
                "reading users on the first connection (a second one failed: {e})"
            );
            None
        }
    }
}

/// The item itself must exist: a missing OU or group is an error, never "everybody left".
async fn item_exists(client: &mut Client, item: &SyncItem) -> Result<()> {
    if client
        .read(&item.dn, &["objectClass".to_string()])
        .await?
        .is_none()
    {
        bail!("{} does not exist in the directory", item.dn);
    }
    Ok(())
}

/// The normalised DNs of the users an item holds, in a stable order.
async fn item_members(
    client: &mut Client,
    cfg: &Config,
    item: &SyncItem,
    base: &str,
    attrs: &[String],
    snap: &mut Snapshot,
    fsp: Option<&mut crate::domains::Domains>,
) -> Result<(Vec<String>, Vec<(String, String)>)> {
    let mut unread = Vec::new();
    let item_dn = normalize_dn(&item.dn);
    item_exists(client, item).await?;
    let mut out: Vec<String> = match item.kind {
        ItemKind::Container => {
            if !dn_is_under(&item_dn, &normalize_dn(base)) {
                // outside the base DN: search it on its own
                let scope = if item.include_nested {
                    Scope::Subtree
                } else {
                    Scope::OneLevel
                };
                let a = &cfg.attributes;
                let mut found = Vec::new();
                let mut f = |e: mfasync_core::Entry| found.push(e);
                client
                    .search_each(&item.dn, scope, &cfg.filters.user, attrs, &mut f)
                    .await?;
                let mut keys = Vec::new();
                for e in found {
                    if let Some(du) = snap.map(a, &e) {
                        let k = normalize_dn(du.user.dn.as_deref().unwrap_or(&e.dn));
                        snap.users.insert(k.clone(), Packed::pack(&du));
                        keys.push(k);
                    }
                }
                keys
            } else {
                snap.users
                    .keys()
                    .filter(|dn| {
                        if item.include_nested {
                            dn_is_under(dn, &item_dn) && **dn != item_dn
                        } else {
                            parent_dn(dn) == item_dn
                        }
                    })
                    .cloned()
                    .collect()
            }
        }
        ItemKind::SecurityGroup => {
            let (members, u) = group_members(client, cfg, item, attrs, snap, fsp).await?;
            unread = u;
            members
        }
    };
    out.sort();
    Ok((out, unread))
}

/// Members of a security group (and of its nested groups when include_nested):
/// by Attribute Scoped Query when enabled and supported, else by reading
/// `member` with range retrieval.
///
/// With `fsp` (a group of the connected domain, `include_trusted_domains`),
/// members from trusted domains (foreign security principals) are followed
/// to their users (and, with include_nested, groups) in their own domain; the
/// domains that could not be read are returned with why.
async fn group_members(
    client: &mut Client,
    cfg: &Config,
    item: &SyncItem,
    attrs: &[String],
    snap: &mut Snapshot,
    mut fsp: Option<&mut crate::domains::Domains>,
) -> Result<(Vec<String>, Vec<(String, String)>)> {
    let use_asq =
        cfg.directory.use_attribute_scope_queries && client.capabilities().attribute_scoped_query;
    let a = &cfg.attributes;
    let mut unread: Vec<(String, String)> = Vec::new();
    let mut members: Vec<String> = Vec::new();
    let mut visited: HashSet<String> = HashSet::new();
    let mut queue: Vec<String> = vec![item.dn.clone()];
    while let Some(group) = queue.pop() {
        if !visited.insert(normalize_dn(&group)) {
            continue; // nested-group cycle
        }
        if use_asq {
            // with members from trusted domains followed: users and foreign
            // security principals in one query, told apart by objectClass
            let follow = fsp.is_some();
            let filter = match follow {
                true => format!(
                    "(|{}(objectClass=foreignSecurityPrincipal))",
                    cfg.filters.user
                ),
                false => cfg.filters.user.clone(),
            };
            let mut asked = attrs.to_vec();
            if follow && !asked.iter().any(|x| x.eq_ignore_ascii_case("objectClass")) {
                asked.push("objectClass".to_string());
            }
            let mut found: Vec<mfasync_core::Entry> = Vec::new();
            let mut f = |e: mfasync_core::Entry| found.push(e);
            client
                .asq_each(&group, "member", &filter, &asked, &mut f)
                .await?;
            let mut principals: Vec<String> = Vec::new();
            for e in found {
                let is_fsp = follow
                    && e.values("objectClass")
                        .iter()
                        .any(|v| v.eq_ignore_ascii_case(b"foreignSecurityPrincipal"));
                if is_fsp {
                    principals.push(e.dn);
                } else if let Some(du) = snap.map(a, &e) {
                    let k = normalize_dn(du.user.dn.as_deref().unwrap_or(&e.dn));
                    snap.users
                        .entry(k.clone())
                        .or_insert_with(|| Packed::pack(&du));
                    members.push(k);
                }
            }
            if let Some(d) = fsp.as_deref_mut() {
                for dn in principals {
                    if let Some(sid) = mfasync_core::sid::foreign_principal_sid(&dn) {
                        let out = (&mut members, &mut unread);
                        follow_principal(client, d, cfg, item, &sid, attrs, snap, out).await?;
                    }
                }
            }
            if item.include_nested {
                let mut nested: Vec<String> = Vec::new();
                let mut g = |e: mfasync_core::Entry| nested.push(e.dn.clone());
                client
                    .asq_each(
                        &group,
                        "member",
                        &cfg.filters.security_group,
                        &["objectClass".to_string()],
                        &mut g,
                    )
                    .await?;
                queue.extend(nested);
            }
        } else {
            let values = client
                .read_all_values(&group, "member")
                .await?
                .ok_or_else(|| anyhow!("group {group} does not exist"))?;
            for dn in values {
                let key = normalize_dn(&dn);
                if snap.users.contains_key(&key) {
                    members.push(key);
                    continue;
                }
                if let (Some(sid), Some(d)) = (
                    mfasync_core::sid::foreign_principal_sid(&dn),
                    fsp.as_deref_mut(),
                ) {
                    let out = (&mut members, &mut unread);
                    follow_principal(client, d, cfg, item, &sid, attrs, snap, out).await?;
                    continue;
                }
                // not a user under the base DN: a nested group, or a user elsewhere
                if item.include_nested
                    && !base_match(
                        client,
                        &dn,
                        &cfg.filters.security_group,
                        &["objectClass".to_string()],
                    )
                    .await?
                    .is_empty()
                {
                    queue.push(dn);
                    continue;
                }
                let found = base_match(client, &dn, &cfg.filters.user, attrs).await?;
                for e in found {
                    if let Some(du) = snap.map(a, &e) {
                        snap.users
                            .entry(key.clone())
                            .or_insert_with(|| Packed::pack(&du));
                        members.push(key.clone());
                    }
                }
            }
        }
    }
    members.sort();
    members.dedup();
    // one entry per domain (each is one look at the stored users)
    unread.sort();
    unread.dedup_by(|a, b| a.0 == b.0);
    Ok((members, unread))
}

/// A member from a trusted domain (foreign security principal `sid`): its
/// user in that domain, or with include_nested its group's members there.
#[allow(clippy::too_many_arguments)]
async fn follow_principal(
    client: &mut Client,
    domains: &mut crate::domains::Domains,
    cfg: &Config,
    item: &SyncItem,
    sid: &str,
    attrs: &[String],
    snap: &mut Snapshot,
    (members, unread): (&mut Vec<String>, &mut Vec<(String, String)>),
) -> Result<()> {
    use crate::domains::Principal;
    let what = || format!("following the member {sid} from a trusted domain");
    let user = domains
        .principal(client, cfg, sid, &cfg.filters.user, attrs)
        .await
        .with_context(what)?;
    let domain = match user {
        Principal::NotTrusted => return Ok(()),
        Principal::UnknownDomain => {
            unread.push((
                crate::domains::ANY_OTHER_DOMAIN.to_string(),
                format!("{sid} is of a domain not found among this domain's trusts (a child domain of a trusted forest?)"),
            ));
            return Ok(());
        }
        Principal::Unreachable { domain, why } => {
            unread.push((domain, why));
            return Ok(());
        }
        Principal::Found { domain, entries } if entries.is_empty() => domain,
        Principal::Found { entries, .. } => {
            for e in entries {
                if let Some(du) = snap.map(&cfg.attributes, &e) {
                    let key = normalize_dn(du.user.dn.as_deref().unwrap_or(&e.dn));
                    snap.users
                        .entry(key.clone())
                        .or_insert_with(|| Packed::pack(&du));
                    members.push(key);
                }
            }
            return Ok(());
        }
    };
    if !item.include_nested {
        return Ok(());
    }
    let one = ["1.1".to_string()];
    let groups = match domains
        .principal(client, cfg, sid, &cfg.filters.security_group, &one)
        .await
        .with_context(what)?
    {
        Principal::Found { entries, .. } => entries,
        _ => Vec::new(),
    };
    let Some(Ok(c)) = domains.connected(&domain) else {
        return Ok(());
    };
    for g in groups {
        // a group of the trusted domain: its members there (nested groups
        // followed; members from further domains are not)
        let sub = SyncItem {
            dn: g.dn.clone(),
            id: None,
            ..item.clone()
        };
        let (found, _) = Box::pin(group_members(c, cfg, &sub, attrs, snap, None))
            .await
            .with_context(|| format!("reading the members of {} in {domain}", g.dn))?;
        members.extend(found);
    }
    Ok(())
}

/// Of the stored users `unseen` (no item took them), those whose DN is in
/// another domain are looked up by unique id at that domain's DCs: found,
/// they exist (and get their item's when_removed); not found, they were
/// deleted; that domain unreachable or the lookup failed, they are left as
/// they are (a trusted domain that is down never disables its users).
async fn check_other_domains(
    store: &dyn Store,
    cfg: &Config,
    base: &str,
    domains: &mut crate::domains::Domains,
    w: &mut Worker,
    unseen: &[String],
) -> Result<()> {
    let mut down: Vec<(String, String, usize)> = Vec::new();
    for chunk in unseen.chunks(500) {
        let rows = store.users_by(UserKey::DirectoryId, chunk).await?;
        for u in rows
            .iter()
            .filter(|u| u.source == mfasync_core::Source::Directory)
        {
            let (Some(id), Some(dn)) = (u.directory_id.as_deref(), u.dn.as_deref()) else {
                continue;
            };
            let Some(d) = crate::domains::foreign_domain(cfg, base, dn) else {
                continue;
            };
            domains.connect_for_lookup(cfg, &d).await;
            let why = match domains.connected(&d) {
                Some(Ok(c)) => {
                    let their_base = c.base_dn().to_string();
                    let user = [(id.to_string(), Some(dn.to_string()))];
                    let looked = crate::lookup::by_unique_id(c, cfg, &their_base, &user).await;
                    if looked.found.contains(id) {
                        w.planner.exists(id);
                        continue;
                    }
                    if looked.deleted.contains(id) {
                        w.planner.deleted(id);
                        continue;
                    }
                    looked
                        .unknown
                        .into_iter()
                        .next()
                        .map(|(_, why)| why)
                        .unwrap_or_else(|| format!("{} could not be looked up in {d}", u.username))
                }
                Some(Err(why)) => why,
                None => format!("the domain {d} was not connected"),
            };
            w.planner.keep_as_is(id);
            match down.iter_mut().find(|(x, _, _)| *x == d) {
                Some(e) => e.2 += 1,
                None => down.push((d, why, 1)),
            }
        }
    }
    for (d, why, n) in down {
        w.warnings.push(format!(
            "{why}; {n} stored user(s) of {d} that no item holds now are left as they are"
        ));
    }
    Ok(())
}

/// The stored users no item took and the read did not see (nor another
/// domain's DCs), looked up by unique id in the naming context that held
/// them: found, they left their item (its when_removed); not found, the
/// directory proves them deleted (`remove_deleted_users`); a failed lookup
/// leaves them as they are this cycle, with a warning.
async fn look_up_unseen(
    store: &dyn Store,
    client: &mut Client,
    cfg: &Config,
    base: &str,
    w: &mut Worker,
) -> Result<()> {
    let unseen = w.planner.unseen();
    if unseen.is_empty() {
        return Ok(());
    }
    let t = std::time::Instant::now();
    let mut users = Vec::with_capacity(unseen.len());
    for chunk in unseen.chunks(500) {
        for u in store.users_by(UserKey::DirectoryId, chunk).await? {
            if let (mfasync_core::Source::Directory, Some(id)) = (u.source, u.directory_id) {
                users.push((id, u.dn));
            }
        }
    }
    let looked = crate::lookup::by_unique_id(client, cfg, base, &users).await;
    for id in &looked.found {
        w.planner.exists(id);
    }
    for id in &looked.deleted {
        w.planner.deleted(id);
    }
    w.warnings
        .extend(crate::lookup::unknown_warnings(&looked.unknown));
    tracing::info!(target: "mfasync::sync",
        users = users.len(),
        found = looked.found.len(),
        deleted = looked.deleted.len(),
        unknown = looked.unknown.len(),
        ms = t.elapsed().as_millis() as u64,
        "looked up the stored users the read did not see, by unique id"
    );
    Ok(())
}

/// The entry `dn` if it matches `filter`; empty when it does not or no longer
/// exists (a member value pointing at a deleted object). Other errors stop the cycle.
async fn base_match(
    client: &mut Client,
    dn: &str,
    filter: &str,
    attrs: &[String],
) -> Result<Vec<mfasync_core::Entry>> {
    match client.search_all(dn, Scope::Base, filter, attrs).await {
        Ok(v) => Ok(v),
        Err(mfasync_ldap::LdapError::Operation { code: 32, .. }) => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

/// The `sync --json` document of PRODUCT.md (`plan_only`: with the changes, as
/// `--plan`); also what the REST API answers for a sync.
impl Outcome {
    /// The outcome as `sync --json` (and with `plan_only`, `sync --plan --json`) reports it.
    pub fn report(&self, plan_only: bool) -> SyncReport {
        let c = self.plan.counts();
        let changes = plan_only.then(|| {
            self.plan
                .changes
                .iter()
                .map(|ch| PlannedChange {
                    action: ch.action,
                    fields: ch.fields.iter().map(|f| f.to_string()).collect(),
                    username: ch.user.username.clone(),
                })
                .collect()
        });
        SyncReport {
            changes,
            created: c.created,
            disabled: c.disabled,
            enabled: c.enabled,
            entries_read: self.entries_read,
            mode: self.mode,
            note: self.note.clone(),
            pending_approval: self.pending_approval.clone(),
            removed: c.removed,
            unchanged: c.unchanged,
            updated: c.updated,
        }
    }
}
