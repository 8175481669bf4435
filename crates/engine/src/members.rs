//! Which users each sync item holds: containers by DN, security groups by
//! ASQ or `member` with range retrieval (nested groups, foreign security
//! principals followed to their own domain); `Snapshot`, the users kept
//! packed for that after the read.

use crate::error::{EngineError, Result, ResultExt};
use mfasync_core::config::{Config, ItemKind, SyncItem};
use mfasync_core::filter::{dn_is_under, normalize_dn, parent_dn};
use mfasync_core::mapping::{self, DirectoryUser, Packed};
use mfasync_ldap::{Client, Scope};
use std::collections::{HashMap, HashSet};

/// The users of a full cycle kept for item resolution after the read (when
/// some item cannot be decided from the DN alone), packed (~250 bytes each).
pub(crate) struct Snapshot {
    /// Users under the base DN matching the user filter (and users found
    /// outside it through an item), by normalised DN.
    pub(crate) users: HashMap<String, Packed>,
    /// Entries found through an item that could not be mapped: (their
    /// unique id if readable, why). Their stored users are left as they are.
    pub(crate) unmapped: Vec<(Option<String>, String)>,
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

/// The item itself must exist: a missing OU or group is an error, never "everybody left".
pub(crate) async fn item_exists(client: &mut Client, item: &SyncItem) -> Result<()> {
    if client
        .read(&item.dn, &["objectClass".to_string()])
        .await?
        .is_none()
    {
        return Err(EngineError::Other(format!(
            "{} does not exist in the directory",
            item.dn
        )));
    }
    Ok(())
}

/// The normalised DNs of the users an item holds, in a stable order.
pub(crate) async fn item_members(
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
pub(crate) async fn group_members(
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
                .ok_or_else(|| EngineError::Other(format!("group {group} does not exist")))?;
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
pub(crate) async fn follow_principal(
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

/// The entry `dn` if it matches `filter`; empty when it does not or no longer
/// exists (a member value pointing at a deleted object). Other errors stop the cycle.
pub(crate) async fn base_match(
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
