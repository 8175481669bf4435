//! The full cycle: the starting point taken first, every user read once
//! (`read::read_users`), each item's members decided in order
//! (`members`), users not seen looked up by unique id, then `commit`.

use crate::commit::*;
use crate::error::{EngineError, Result, ResultExt};
use crate::marks;
use crate::members::*;
use crate::read::*;
use crate::spill::{spill_after, ChangeRecord, Spiller, StampRecord};
use mfasync_core::config::{Config, WhenRemoved};
use mfasync_core::mapping::Packed;
use mfasync_core::plan::{self, Counts, Plan};
use mfasync_core::MfaUser;
use mfasync_ldap::Client;
use mfasync_store::{DomainWatermark, MarkKind, Store, UserKey, Watermark};
use std::collections::{HashMap, HashSet};

pub(crate) async fn full(
    store: &dyn Store,
    cfg: &Config,
    client: &mut Client,
    plan_only: bool,
) -> Result<(Plan, Option<crate::spill::SpilledChanges>)> {
    let base = client.base_dn().to_string();
    // The incremental starting point is taken BEFORE the full read: a change
    // made while we read is then seen again by the next incremental cycle
    // (harmless: resolution is idempotent) instead of being lost.
    // With `always_full` every cycle is full: no starting point is taken
    // (the DirSync/syncrepl/USN query would be wasted work each cycle).
    let start = if plan_only || cfg.sync.always_full {
        None
    } else {
        match marks::supported(client, cfg) {
            Ok(kind) => match marks::starting_point(client, kind, &base).await {
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
    let read = read_users(store, client, cfg, &base, &attrs, claimer, plan_only).await?;
    let (mut w, stored_dir_users, applying, streamed) = (
        read.worker,
        read.stored_dir_users,
        read.applying,
        read.written,
    );
    // A read cut short still creates and updates what it saw; it departs no
    // one, and leaves no starting point (the next cycle is full again).
    let incomplete = read.incomplete;
    let start = if incomplete.is_some() { None } else { start };
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
        return Err(EngineError::Other(format!(
            "the directory returned no users under {base} with filter {} while {stored_dir_users} directory users are stored; refusing to treat that as everybody leaving (check base_dn, filters.user and the bind account's rights)",
            cfg.filters.user
        )));
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
            // the domain router: None for an item of the connected domain
            let (read, foreign) = match domains.client_for(cfg, item).await {
                Ok(None) => {
                    // groups of this domain: members from trusted domains followed
                    let fsp = follow.then_some(&mut domains);
                    let read = item_members(client, cfg, item, &base, &attrs, &mut snap, fsp).await;
                    (read, false)
                }
                // In another domain: read on its own (no base) from its DCs.
                Ok(Some(c)) => (
                    item_members(c, cfg, item, "", &attrs, &mut snap, None).await,
                    true,
                ),
                Err(why) => {
                    let (p, warn) = (&mut w.planner, &mut w.warnings);
                    crate::domains::leave_as_is(store, p, warn, (i, item), None, &why).await?;
                    continue;
                }
            };
            let (members, unread) =
                read.with_context(|| format!("sync.items[{i}] ({})", item.dn))?;
            // An item of another domain that answers with nobody while users
            // of it are stored: as for the connected domain, an empty answer
            // is never everybody leaving (its users are left as they are).
            if members.is_empty() && foreign {
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
        if follow && incomplete.is_none() {
            // Stored users of other domains no item took: still users there
            // (they left their item: its when_removed) or gone?
            resolve_ids(store, &mut w.planner).await?;
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
    if incomplete.is_none() {
        look_up_unseen(store, client, cfg, &base, &mut w).await?;
    }

    let t = std::time::Instant::now();
    let mut planned = Planned {
        changes: std::mem::take(&mut w.creates),
        unlisted: Counts {
            created: streamed + w.spill.len(),
            ..Counts::default()
        },
        spill: std::mem::take(&mut w.spill),
    };
    // Users whose digest differs: compare with their stored rows, 500 at a
    // time (those past the limit come back from their file).
    let candidates = std::mem::take(&mut w.changed);
    for chunk in candidates.chunks(500) {
        compare(store, &mut w, &mut planned, chunk).await?;
    }
    drop(candidates);
    if let Some(more) = std::mem::take(&mut w.changed_spill).finish()? {
        let mut records = more.records()?;
        loop {
            let chunk = crate::spill::next_chunk(&mut records, 500)?;
            if chunk.is_empty() {
                break;
            }
            compare(store, &mut w, &mut planned, &chunk).await?;
        }
    }
    let kept = planned.spill.len();
    if kept > 0 {
        tracing::info!(target: "mfasync::sync", changes = kept, "changes kept in a temporary file");
    }
    let mut spilled = std::mem::take(&mut planned.spill).finish()?;
    let mut changes = std::mem::take(&mut planned.changes);
    // Stored users no item holds.
    let items: HashMap<String, WhenRemoved> = cfg
        .sync
        .items
        .iter()
        .map(|i| (i.dn.clone(), i.when_removed))
        .collect();
    if incomplete.is_none() {
        resolve_ids(store, &mut w.planner).await?;
    }
    let gone = match &incomplete {
        Some(_) => Vec::new(),
        None => w.planner.departures(
            &|item| items.get(item).copied(),
            cfg.sync.remove_deleted_users,
        ),
    };
    for chunk in gone.chunks(500) {
        let ids: Vec<String> = chunk.iter().map(|(id, _, _)| id.clone()).collect();
        let rows = store.users_by(UserKey::DirectoryId, &ids).await?;
        for (id, action, reason) in chunk {
            let Some(cur) = rows
                .iter()
                .find(|u| u.directory_id.as_deref() == Some(id.as_str()))
            else {
                return Err(EngineError::Other(format!(
                    "stored user {id} disappeared while the synchronization ran; run it again"
                )));
            };
            changes.push(plan::departure_change(*action, cur, reason.clone()));
        }
    }
    plan::sort_changes(&mut changes);
    let mut p = Plan {
        changes,
        unchanged: w.planner.unchanged,
        warnings: std::mem::take(&mut w.planner.warnings),
        unlisted: planned.unlisted,
        incomplete_read: incomplete.clone(),
        restored: 0,
    };
    p.warnings.append(&mut w.warnings);
    if let Some(why) = &incomplete {
        p.warnings.push(format!(
            "the directory read was cut short ({why}): users read were created and updated, nobody was disabled or removed; the next cycle reads everything again"
        ));
    }
    let restamp = std::mem::take(&mut w.restamp);
    let restamp_spilled = std::mem::take(&mut w.restamp_spill).finish()?;
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
        // Creates were written while reading (nothing was stored: no
        // departure is possible, so the approval hold writes nothing).
        p.restored = commit_full(store, cfg, &p, applying, spilled.take(), &wm).await?;
        // after the cycle's commit: only a cache for the next full sync
        write_stamps(store, &restamp, restamp_spilled).await;
    }
    // (a plan lists the spilled changes: `sync::Outcome::spilled`)
    Ok((p, spilled))
}

/// Where a full cycle's changes go: listed in memory, or past
/// `spill::spill_after()` on disk: the creates the worker kept there, then
/// updates that keep their username (their write depends on no other change).
struct Planned {
    changes: Vec<plan::Change>,
    spill: Spiller<ChangeRecord>,
    /// The changes on disk (and the creates written while reading).
    unlisted: Counts,
}

impl Planned {
    fn add(&mut self, c: plan::Change) {
        let keeps_name = c
            .before
            .as_ref()
            .is_none_or(|b| b.username == c.user.username);
        if self.changes.len() < spill_after() || !keeps_name {
            return self.changes.push(c);
        }
        let action = c.action;
        match self.spill.keep(ChangeRecord::from(c)) {
            Ok(()) => match action {
                plan::Action::Enable => self.unlisted.enabled += 1,
                _ => self.unlisted.updated += 1,
            },
            Err(r) => self.changes.push(plan::Change::from(r)),
        }
    }
}

/// Users whose digest differs compared with their stored rows: a change,
/// or (no field differs after all) a stamp to write.
async fn compare(
    store: &dyn Store,
    w: &mut Worker,
    planned: &mut Planned,
    chunk: &[(MfaUser, Option<plan::RawMark>)],
) -> Result<()> {
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
            return Err(EngineError::Other(format!(
                "stored user {} changed while the synchronization ran; run it again",
                d.username
            )));
        };
        match w.planner.changed(d.clone(), cur) {
            Some(mut c) => {
                c.raw = *raw;
                planned.add(c);
            }
            None => {
                if let (Some(id), Some(raw)) = (d.directory_id.clone(), raw) {
                    w.restamp.push((id, *raw));
                }
            }
        }
    }
    Ok(())
}

/// Write the stamps of users found unchanged, those kept on disk after the
/// others; a failure is only warned about (the next full sync maps those
/// users again).
async fn write_stamps(
    store: &dyn Store,
    held: &[(String, plan::RawMark)],
    spilled: Option<crate::spill::Spilled<StampRecord>>,
) {
    let t = std::time::Instant::now();
    let mut written = 0;
    let mut write = async |stamps: &[(String, plan::RawMark)]| -> Result<()> {
        if !stamps.is_empty() {
            store.restamp(stamps).await?;
            written += stamps.len();
        }
        Ok(())
    };
    let mut done = write(held).await;
    if let (Ok(()), Some(spilled)) = (&done, spilled) {
        done = async {
            let mut records = spilled.records()?;
            loop {
                let chunk = crate::spill::next_chunk(&mut records, 10_000)?;
                if chunk.is_empty() {
                    return Ok(());
                }
                write(&chunk).await?;
            }
        }
        .await;
    }
    match done {
        Ok(()) if written > 0 => tracing::info!(target: "mfasync::sync",
            users = written,
            ms = t.elapsed().as_millis() as u64,
            "wrote raw stamps of unchanged users"
        ),
        Ok(()) => {}
        Err(e) => tracing::warn!(target: "mfasync::sync",
            "could not write raw stamps (the next full sync maps those users again): {e}"
        ),
    }
}

/// Of the stored users `unseen` (no item took them), those whose DN is in
/// another domain are looked up by unique id at that domain's DCs: found,
/// they exist (and get their item's when_removed); not found, they were
/// deleted; that domain unreachable or the lookup failed, they are left as
/// they are (a trusted domain that is down never disables its users).
pub(crate) async fn check_other_domains(
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
pub(crate) async fn look_up_unseen(
    store: &dyn Store,
    client: &mut Client,
    cfg: &Config,
    base: &str,
    w: &mut Worker,
) -> Result<()> {
    resolve_ids(store, &mut w.planner).await?;
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

/// The directory ids of the stored users no item held, read again from the
/// store: the planner's index keeps hashes, not ids (one pass over the
/// digests, only when some are missing).
pub(crate) async fn resolve_ids(store: &dyn Store, planner: &mut plan::Planner) -> Result<()> {
    if !planner.wants_ids() {
        return Ok(());
    }
    let t = std::time::Instant::now();
    store
        .user_digests(&mut |d| {
            if let (mfasync_core::Source::Directory, Some(id)) =
                (d.source, d.directory_id.as_deref())
            {
                planner.resolve_id(id);
            }
        })
        .await?;
    tracing::info!(target: "mfasync::sync",
        ms = t.elapsed().as_millis() as u64,
        "read the ids of stored users no item holds"
    );
    Ok(())
}
