//! One synchronization cycle: read the directory, resolve each sync item's
//! members (first item wins), compute the plan (pure, in core) and apply it in
//! one store transaction together with the watermark.

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

pub async fn run(store: &dyn Store, cfg: &Config, opts: Options) -> Result<Outcome> {
    if cfg.sync.items.is_empty() {
        bail!("no sync items are configured: add [[sync.items]] to the configuration");
    }
    // Incremental sync (issue 3) is not built yet: every cycle is full.
    let note = (!opts.full).then(|| {
        "incremental synchronization is not available yet; ran a full synchronization".to_string()
    });
    let run_id = if opts.plan_only {
        None
    } else {
        Some(store.run_started("full").await?)
    };
    let (result, pending_approval) = crate::approvals::track(full(store, cfg, opts.plan_only)).await;
    if let Some(id) = run_id {
        let (counts, error) = match &result {
            Ok(p) => (p.counts(), None),
            Err(e) => (Counts::default(), Some(format!("{e:#}"))),
        };
        let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        store
            .run_finished(&SyncRun {
                id,
                started_at: String::new(),
                finished_at: None,
                mode: "full".into(),
                created: n(counts.created),
                updated: n(counts.updated),
                enabled: n(counts.enabled),
                disabled: n(counts.disabled),
                removed: n(counts.removed),
                unchanged: n(counts.unchanged),
                error,
            })
            .await?;
    }
    Ok(Outcome {
        mode: "full",
        plan: result?,
        note,
        pending_approval,
    })
}

async fn full(store: &dyn Store, cfg: &Config, plan_only: bool) -> Result<Plan> {
    let password = crate::secrets::bind_password(&cfg.directory.query_bind, "directory.query_bind")
        .map_err(|e| anyhow!(e))?;
    let mut client = mfasync_ldap::connect(&cfg.directory, &cfg.directory.query_bind, password.as_deref())
        .await
        .context("cannot connect to the directory")?;
    let base = client.base_dn().to_string();
    if base.is_empty() {
        bail!("directory.base_dn is empty and the server names no naming context");
    }
    let attrs = cfg.attributes.user_attributes();
    // Warm the phone-number metadata (~150 ms) on another core while we read.
    let warm = std::thread::spawn(|| mfasync_core::phone::to_e164("+1 425 555 0100", "1"));
    // Read the directory and load the stored users at the same time.
    let t = std::time::Instant::now();
    let (snap, current) = tokio::join!(read_users(&mut client, cfg, &base, &attrs), async {
        let t = std::time::Instant::now();
        let r = store.users().await;
        tracing::info!(ms = t.elapsed().as_millis() as u64, "loaded stored users");
        r
    });
    let (mut snap, current) = (snap?, current?);
    tracing::info!(users = snap.users.len(), stored = current.len(), ms = t.elapsed().as_millis() as u64, "read directory and store");
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

    let mut claimed: HashSet<String> = HashSet::new();
    let mut desired: Vec<MfaUser> = Vec::new();
    for (i, item) in cfg.sync.items.iter().enumerate() {
        let members = item_members(&mut client, cfg, item, &base, &attrs, &mut snap)
            .await
            .with_context(|| format!("sync.items[{i}] ({})", item.dn))?;
        for key in members {
            let Some(du) = snap.users.get(&key) else { continue };
            let Some(id) = du.user.directory_id.clone() else { continue };
            if claimed.insert(id) {
                desired.push(mapping::apply_item(du, item));
            }
        }
    }
    client.unbind().await;

    tracing::info!(desired = desired.len(), "resolved item members");
    let t = std::time::Instant::now();
    let exists: HashSet<String> = snap
        .users
        .values()
        .filter_map(|d| d.user.directory_id.clone())
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
    p.warnings.append(&mut snap.warnings);
    for w in &p.warnings {
        tracing::warn!("{w}");
    }
    tracing::info!(changes = p.changes.len(), ms = t.elapsed().as_millis() as u64, "computed the plan");
    if !plan_only {
        let t = std::time::Instant::now();
        let wm = Watermark {
            kind: "full".into(),
            server: String::new(),
            value: Vec::new(),
            items_fingerprint: cfg.items_fingerprint(),
        };
        // Disables/removals over sync.approval_threshold are held for approval (issue 4).
        let (now, _pending) = crate::approvals::hold(store, cfg, &p).await?;
        store.apply(&now, Some(&wm)).await?;
        tracing::info!(ms = t.elapsed().as_millis() as u64, "applied the plan");
    }
    Ok(p)
}

/// One paged read of every user under the base DN: the set that container
/// items, group membership and "still in the directory" are decided from.
async fn read_users(client: &mut Client, cfg: &Config, base: &str, attrs: &[String]) -> Result<Snapshot> {
    let mut snap = Snapshot {
        users: HashMap::new(),
        unmappable: HashSet::new(),
        warnings: Vec::new(),
    };
    let a = &cfg.attributes;
    let mut f = |e: mfasync_core::Entry| add_entry(&mut snap, a, e);
    client
        .search_each(base, Scope::Subtree, &cfg.filters.user, attrs, &mut f)
        .await
        .with_context(|| format!("searching users under {base}"))?;
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
    if client.read(&item.dn, &["objectClass".to_string()]).await?.is_none() {
        bail!("{} does not exist in the directory", item.dn);
    }
    let mut out: Vec<String> = match item.kind {
        ItemKind::Container => {
            if !dn_is_under(&item_dn, &normalize_dn(base)) {
                // outside the base DN: search it on its own
                let scope = if item.include_nested { Scope::Subtree } else { Scope::OneLevel };
                let a = &cfg.attributes;
                let mut found = Vec::new();
                let mut f = |e: mfasync_core::Entry| {
                    if let Ok(du) = mapping::map_user(a, &e) {
                        let key = normalize_dn(du.user.dn.as_deref().unwrap_or(&e.dn));
                        found.push((key, du));
                    }
                };
                client.search_each(&item.dn, scope, &cfg.filters.user, attrs, &mut f).await?;
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
    let use_asq = cfg.directory.use_attribute_scope_queries && client.capabilities().attribute_scoped_query;
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
            client.asq_each(&group, "member", &cfg.filters.user, attrs, &mut f).await?;
            for (k, du) in found {
                snap.users.entry(k.clone()).or_insert(du);
                members.push(k);
            }
            if item.include_nested {
                let mut nested: Vec<String> = Vec::new();
                let mut g = |e: mfasync_core::Entry| nested.push(e.dn.clone());
                client
                    .asq_each(&group, "member", &cfg.filters.security_group, &["objectClass".to_string()], &mut g)
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
                    && !base_match(client, &dn, &cfg.filters.security_group, &["objectClass".to_string()])
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

pub fn print(o: &Outcome, json: bool, plan_only: bool) -> crate::CmdResult {
    let c = o.plan.counts();
    if let Some(n) = &o.note {
        eprintln!("mfasync: {n}");
    }
    if json {
        let mut v = serde_json::json!({
            "mode": o.mode, "created": c.created, "updated": c.updated, "enabled": c.enabled,
            "disabled": c.disabled, "removed": c.removed, "unchanged": c.unchanged,
            "pending_approval": o.pending_approval,
        });
        if plan_only {
            v["changes"] = o
                .plan
                .changes
                .iter()
                .map(|ch| serde_json::json!({"action": ch.action.as_str(), "username": ch.user.username, "fields": ch.fields}))
                .collect();
        }
        return crate::print_json(&v);
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
            println!("... and {} more (--json lists them all)", o.plan.changes.len() - SHOWN);
        }
    }
    println!(
        "{} sync{}: {} created, {} updated, {} enabled, {} disabled, {} removed, {} unchanged",
        o.mode,
        if plan_only { " (plan only, nothing changed)" } else { "" },
        c.created,
        c.updated,
        c.enabled,
        c.disabled,
        c.removed,
        c.unchanged
    );
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
