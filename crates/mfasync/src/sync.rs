//! One synchronization cycle: read the directory, resolve each sync item's
//! members (first item wins), compute the plan (pure, in core) and apply it in
//! one store transaction together with the watermark.

use crate::incremental;
use anyhow::{anyhow, bail, Context, Result};
use mfasync_core::config::{Config, ItemKind, SyncItem, WhenRemoved};
use mfasync_core::filter::{dn_is_under, normalize_dn, parent_dn};
use mfasync_core::mapping::{self, DirectoryUser};
use mfasync_core::plan::{self, Action, Counts, Plan};
use mfasync_core::MfaUser;
use mfasync_ldap::{Client, Scope};
use mfasync_store::{Store, SyncRun, Watermark};
use std::collections::{HashMap, HashSet};

pub struct Options {
    pub full: bool,
    pub plan_only: bool,
}

pub struct Outcome {
    pub mode: &'static str,
    pub plan: Plan,
    /// Why a full sync ran when an incremental one was asked for.
    pub note: Option<String>,
    /// Directory entries received by an incremental cycle (None for a full one).
    pub entries_read: Option<usize>,
    /// Disables/removals held back for administrator approval (issue 4).
    pub pending_approval: Option<crate::approvals::PendingApproval>,
}

/// Everything read from the directory for one full cycle.
struct Snapshot {
    /// Users under the base DN matching the user filter, by normalised DN.
    users: HashMap<String, DirectoryUser>,
    /// Unique ids of entries that exist but could not be mapped (left as they are).
    unmappable: HashSet<String>,
    warnings: Vec<String>,
}

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
    if incremental::Kind::parse(&wm.kind).is_none() {
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
    let wm = store.watermark().await?;
    let reason = full_reason(cfg, opts.full, wm.as_ref());
    let mut note = reason.clone().filter(|r| !r.is_empty());
    let mut mode: &'static str = if reason.is_some() {
        "full"
    } else {
        "incremental"
    };
    let mut run_id = if opts.plan_only {
        None
    } else {
        Some(store.run_started(mode).await?)
    };
    let mut entries_read = None;
    let (result, pending_approval) = crate::approvals::track(async {
        let mut client = connect(cfg).await?;
        if mode == "incremental" {
            let ok = match (wm.as_ref(), incremental::supported(&client, cfg)) {
                (_, Err(e)) => Err(e),
                (None, _) => Err("no starting point".to_string()),
                (Some(w), Ok(kind)) if w.kind != kind.as_str() => Err(format!(
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
                (Some(w), Ok(kind)) => Ok((kind, w)),
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
            tracing::warn!("{msg}");
            note = Some(msg.clone());
            mode = "full";
            if let Some(id) = run_id {
                let skipped = Ok(Plan::default());
                finish(store, id, "incremental", &skipped, Some(msg), None).await?;
                run_id = Some(store.run_started("full").await?);
            }
        }
        let p = full(store, cfg, &mut client, opts.plan_only).await?;
        client.unbind().await;
        Ok(p)
    })
    .await;
    if !opts.plan_only && result.is_ok() {
        crate::approvals::after_cycle(store, mode == "full", pending_approval.as_ref()).await;
    }
    if let Some(id) = run_id {
        finish(store, id, mode, &result, None, entries_read).await?;
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
    mode: &str,
    result: &Result<Plan>,
    error: Option<String>,
    entries_read: Option<usize>,
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
            mode: mode.into(),
            created: n(counts.created),
            updated: n(counts.updated),
            enabled: n(counts.enabled),
            disabled: n(counts.disabled),
            removed: n(counts.removed),
            unchanged: n(counts.unchanged),
            error,
            entries_read: entries_read.map(n),
        })
        .await?;
    Ok(())
}

async fn connect(cfg: &Config) -> Result<Client> {
    let password = crate::secrets::bind_password(&cfg.directory.query_bind, "directory.query_bind")
        .map_err(|e| anyhow!(e))?;
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

/// One incremental cycle; returns the plan and the entries read.
async fn incremental_cycle(
    store: &dyn Store,
    cfg: &Config,
    client: &mut Client,
    kind: incremental::Kind,
    wm: &Watermark,
    plan_only: bool,
) -> Result<std::result::Result<(Plan, usize), String>> {
    let t = std::time::Instant::now();
    let base = client.base_dn().to_string();
    let c = match incremental::cycle(client, cfg, store, kind, &base, &wm.value).await? {
        Ok(c) => c,
        Err(why) => return Ok(Err(why)),
    };
    for w in &c.plan.warnings {
        tracing::warn!("{w}");
    }
    tracing::info!(
        changes = c.plan.changes.len(),
        entries_read = c.entries_read,
        ms = t.elapsed().as_millis() as u64,
        "incremental cycle computed"
    );
    if !plan_only {
        let next = Watermark {
            kind: kind.as_str().into(),
            server: client.server().to_string(),
            value: c.cookie.clone(),
            items_fingerprint: cfg.items_fingerprint(),
        };
        commit(store, cfg, &c.plan, &next).await?;
    }
    Ok(Ok((c.plan, c.entries_read)))
}

/// The single point where a cycle's plan is applied, with its watermark, in
/// ONE transaction (full and incremental cycles alike).
async fn commit(store: &dyn Store, cfg: &Config, p: &Plan, wm: &Watermark) -> Result<()> {
    let t = std::time::Instant::now();
    // Disables/removals over sync.approval_threshold are held for approval (issue 4).
    let (now, _pending) = crate::approvals::hold(store, cfg, p).await?;
    store.apply(&now, Some(wm)).await?;
    tracing::info!(ms = t.elapsed().as_millis() as u64, "applied the plan");
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
    let start = if plan_only {
        None
    } else {
        match incremental::supported(client, cfg) {
            Ok(kind) => match incremental::starting_point(client, kind, &base).await {
                Ok(cookie) => Some((kind, cookie)),
                Err(e) => {
                    tracing::warn!(
                        "no incremental starting point: {e:#}; the next cycle will be full too"
                    );
                    None
                }
            },
            Err(why) => {
                tracing::info!("no incremental synchronization: {why}");
                None
            }
        }
    };
    let attrs = cfg.attributes.user_attributes();
    // Warm the phone-number metadata (~150 ms) on another core while we read.
    let warm = std::thread::spawn(|| mfasync_core::phone::to_e164("+1 425 555 0100", "1"));
    // Read the directory and load the stored users at the same time.
    let t = std::time::Instant::now();
    let (snap, current) = tokio::join!(read_users(client, cfg, &base, &attrs), async {
        let t = std::time::Instant::now();
        let r = store.users().await;
        tracing::info!(ms = t.elapsed().as_millis() as u64, "loaded stored users");
        r
    });
    let (mut snap, current) = (snap?, current?);
    tracing::info!(
        users = snap.users.len(),
        stored = current.len(),
        ms = t.elapsed().as_millis() as u64,
        "read directory and store"
    );
    let _ = warm.join();

    // Safety: an empty answer must never look like everybody left.
    let stored_dir_users = current
        .iter()
        .filter(|u| u.source == mfasync_core::Source::Directory)
        .count();
    if snap.users.is_empty() && stored_dir_users > 0 {
        bail!(
            "the directory returned no users under {base} with filter {} while {stored_dir_users} directory users are stored; refusing to treat that as everybody leaving (check base_dn, filters.user and the bind account's rights)",
            cfg.filters.user
        );
    }

    // Which item governs each user: the first that holds it.
    let mut claimed: HashSet<String> = HashSet::new();
    let mut claims: Vec<(String, usize)> = Vec::new();
    for (i, item) in cfg.sync.items.iter().enumerate() {
        let members = item_members(client, cfg, item, &base, &attrs, &mut snap)
            .await
            .with_context(|| format!("sync.items[{i}] ({})", item.dn))?;
        for key in members {
            let Some(du) = snap.users.get(&key) else {
                continue;
            };
            let Some(id) = du.user.directory_id.clone() else {
                continue;
            };
            if claimed.insert(id) {
                claims.push((key, i));
            }
        }
    }
    let desired = desired_users(&snap, &claims, &cfg.sync.items);

    tracing::info!(desired = desired.len(), "resolved item members");
    let t = std::time::Instant::now();
    // The snapshot is not needed past this point: keep only the ids (memory).
    let exists: HashSet<String> = std::mem::take(&mut snap.users)
        .into_values()
        .filter_map(|d| d.user.directory_id)
        .collect();
    let items: HashMap<String, WhenRemoved> = cfg
        .sync
        .items
        .iter()
        .map(|i| (i.dn.clone(), i.when_removed))
        .collect();
    let mut p = plan::compute(plan::PlanInput {
        desired,
        current: &current,
        exists_in_directory: &|id| exists.contains(id),
        when_removed: &|item| items.get(item).copied(),
        remove_deleted_users: cfg.sync.remove_deleted_users,
        keep_as_is: &|id| snap.unmappable.contains(id),
    });
    drop(current);
    p.warnings.append(&mut snap.warnings);
    for w in &p.warnings {
        tracing::warn!("{w}");
    }
    tracing::info!(
        changes = p.changes.len(),
        ms = t.elapsed().as_millis() as u64,
        "computed the plan"
    );
    if !plan_only {
        let wm = match start {
            Some((kind, cookie)) => Watermark {
                kind: kind.as_str().into(),
                server: client.server().to_string(),
                value: cookie,
                items_fingerprint: cfg.items_fingerprint(),
            },
            None => Watermark {
                kind: "full".into(),
                server: String::new(),
                value: Vec::new(),
                items_fingerprint: cfg.items_fingerprint(),
            },
        };
        commit(store, cfg, &p, &wm).await?;
    }
    Ok(p)
}

/// One paged read of every user under the base DN: the set that container
/// items, group membership and "still in the directory" are decided from.
/// The MFA users the claims call for (item settings applied, phones in
/// E.164), computed on two threads; the order of `claims` is kept.
fn desired_users(snap: &Snapshot, claims: &[(String, usize)], items: &[SyncItem]) -> Vec<MfaUser> {
    let work = |part: &[(String, usize)]| -> Vec<MfaUser> {
        part.iter()
            .filter_map(|(key, i)| {
                let du = snap.users.get(key)?;
                let item = items.get(*i)?;
                Some(mapping::apply_item(du, item))
            })
            .collect()
    };
    if claims.len() < 2_000 {
        return work(claims);
    }
    let (a, b) = claims.split_at(claims.len() / 2);
    std::thread::scope(|s| {
        let second = s.spawn(|| work(b));
        let mut first = work(a);
        // a panic on the other thread is a bug: let it surface here (nothing is written yet)
        let mut rest = second
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        first.append(&mut rest);
        first
    })
}

async fn read_users(
    client: &mut Client,
    cfg: &Config,
    base: &str,
    attrs: &[String],
) -> Result<Snapshot> {
    // Entries are mapped on a thread of their own while the directory is read
    // (and, in a full cycle, while the stored users are loaded): mapping and
    // decoding overlap on two cores instead of taking turns on one task.
    let (tx, rx) = std::sync::mpsc::channel::<mfasync_core::Entry>();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<Snapshot>();
    let a = cfg.attributes.clone();
    std::thread::Builder::new()
        .name("mfasync-map".into())
        .spawn(move || {
            let mut snap = Snapshot {
                users: HashMap::new(),
                unmappable: HashSet::new(),
                warnings: Vec::new(),
            };
            for e in rx {
                add_entry(&mut snap, &a, e);
            }
            let _ = done_tx.send(snap);
        })
        .context("cannot start the mapping thread")?;
    let progress = crate::progress::counter("reading directory users");
    let mut f = |e: mfasync_core::Entry| {
        if let Some(p) = &progress {
            p.inc(1);
        }
        let _ = tx.send(e);
    };
    let searched = client
        .search_each(base, Scope::Subtree, &cfg.filters.user, attrs, &mut f)
        .await
        .with_context(|| format!("searching users under {base}"));
    drop(tx);
    if let Some(p) = progress {
        p.finish_and_clear();
    }
    let snap = done_rx
        .await
        .map_err(|_| anyhow!("the mapping thread stopped unexpectedly"))?;
    searched?;
    Ok(snap)
}

fn add_entry(snap: &mut Snapshot, a: &mfasync_core::config::Attributes, e: mfasync_core::Entry) {
    match mapping::map_user(a, &e) {
        Ok(du) => {
            let key = normalize_dn(du.user.dn.as_deref().unwrap_or(&e.dn));
            snap.users.insert(key, du);
        }
        Err(err) => {
            if let Some(id) = e
                .first_bytes(&a.unique_id)
                .and_then(|raw| mapping::unique_id_text(a.unique_id_type, raw).ok())
            {
                snap.unmappable.insert(id);
            }
            snap.warnings.push(err.to_string());
        }
    }
}

/// The normalised DNs of the users an item holds, in a stable order.
async fn item_members(
    client: &mut Client,
    cfg: &Config,
    item: &SyncItem,
    base: &str,
    attrs: &[String],
    snap: &mut Snapshot,
) -> Result<Vec<String>> {
    let item_dn = normalize_dn(&item.dn);
    // The item itself must exist: a missing OU or group is an error, never "everybody left".
    if client
        .read(&item.dn, &["objectClass".to_string()])
        .await?
        .is_none()
    {
        bail!("{} does not exist in the directory", item.dn);
    }
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
                let mut f = |e: mfasync_core::Entry| {
                    if let Ok(du) = mapping::map_user(a, &e) {
                        let key = normalize_dn(du.user.dn.as_deref().unwrap_or(&e.dn));
                        found.push((key, du));
                    }
                };
                client
                    .search_each(&item.dn, scope, &cfg.filters.user, attrs, &mut f)
                    .await?;
                let mut keys = Vec::new();
                for (k, du) in found {
                    snap.users.insert(k.clone(), du);
                    keys.push(k);
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
        ItemKind::SecurityGroup => group_members(client, cfg, item, attrs, snap).await?,
    };
    out.sort();
    Ok(out)
}

/// Members of a security group (and of its nested groups when include_nested):
/// by Attribute Scoped Query when enabled and supported, else by reading
/// `member` with range retrieval.
async fn group_members(
    client: &mut Client,
    cfg: &Config,
    item: &SyncItem,
    attrs: &[String],
    snap: &mut Snapshot,
) -> Result<Vec<String>> {
    let use_asq =
        cfg.directory.use_attribute_scope_queries && client.capabilities().attribute_scoped_query;
    let a = &cfg.attributes;
    let mut members: Vec<String> = Vec::new();
    let mut visited: HashSet<String> = HashSet::new();
    let mut queue: Vec<String> = vec![item.dn.clone()];
    while let Some(group) = queue.pop() {
        if !visited.insert(normalize_dn(&group)) {
            continue; // nested-group cycle
        }
        if use_asq {
            let mut found: Vec<(String, DirectoryUser)> = Vec::new();
            let mut f = |e: mfasync_core::Entry| {
                if let Ok(du) = mapping::map_user(a, &e) {
                    found.push((normalize_dn(du.user.dn.as_deref().unwrap_or(&e.dn)), du));
                }
            };
            client
                .asq_each(&group, "member", &cfg.filters.user, attrs, &mut f)
                .await?;
            for (k, du) in found {
                snap.users.entry(k.clone()).or_insert(du);
                members.push(k);
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
                    if let Ok(du) = mapping::map_user(a, &e) {
                        snap.users.entry(key.clone()).or_insert(du);
                        members.push(key.clone());
                    }
                }
            }
        }
    }
    members.sort();
    members.dedup();
    Ok(members)
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
pub fn outcome_json(o: &Outcome, plan_only: bool) -> serde_json::Value {
    let c = o.plan.counts();
    let mut v = serde_json::json!({
        "mode": o.mode, "created": c.created, "updated": c.updated, "enabled": c.enabled,
        "disabled": c.disabled, "removed": c.removed, "unchanged": c.unchanged,
        "pending_approval": o.pending_approval,
    });
    if let Some(n) = o.entries_read {
        v["entries_read"] = n.into();
    }
    if plan_only {
        v["changes"] = o
            .plan
            .changes
            .iter()
            .map(|ch| serde_json::json!({"action": ch.action.as_str(), "username": ch.user.username, "fields": ch.fields}))
            .collect();
    }
    v
}

pub fn print(o: &Outcome, json: bool, plan_only: bool) -> crate::CmdResult {
    let c = o.plan.counts();
    if let Some(n) = &o.note {
        eprintln!("mfasync: {n}");
    }
    if json {
        return crate::print_json(&outcome_json(o, plan_only));
    }
    if plan_only {
        const SHOWN: usize = 50;
        for ch in o.plan.changes.iter().take(SHOWN) {
            let detail = match ch.action {
                Action::Update => ch.fields.join(", "),
                Action::Disable | Action::Remove => ch.reason.clone().unwrap_or_default(),
                _ => String::new(),
            };
            println!("{:8} {} {}", ch.action.as_str(), ch.user.username, detail);
        }
        if o.plan.changes.len() > SHOWN {
            println!(
                "... and {} more (--json lists them all)",
                o.plan.changes.len() - SHOWN
            );
        }
    }
    println!(
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
        println!("{n} directory entries read");
    }
    if let Some(a) = &o.pending_approval {
        println!(
            "held for approval {}: {} to disable, {} to remove (see `mfasync approvals list`)",
            a.id, a.disable, a.remove
        );
    }
    for w in &o.plan.warnings {
        eprintln!("mfasync: warning: {w}");
    }
    Ok(())
}
