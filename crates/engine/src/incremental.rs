//! Incremental synchronization: the changes since a stored starting point
//! (an RFC 4533 syncrepl cookie on OpenLDAP, a DirSync cookie on Active
//! Directory, or — when DirSync is refused altogether, or with
//! `sync.change_tracking = "usn"` — a DC's highestCommittedUSN), turned into
//! a plan for only the users they affect.
//!
//! How a cycle works:
//! 1. Fetch what changed since the cookie: changed entries (their current DN
//!    and unique id) and deleted ids. Every kind of object comes (users,
//!    groups, containers, others); nothing is decided from the change alone.
//! 2. Classify each changed entry by asking the server: a base search with the
//!    user filter (then it is a changed user, read with the mapped
//!    attributes), else with the group filter (a changed group), else it is no
//!    user any more (a stored user with that id left the directory's users).
//! 3. A changed group that is a group item, or nested in one that includes
//!    nested groups, makes these users candidates: its current members (read
//!    with range retrieval, nested groups followed) whose stored item comes
//!    after the group's item, and the stored users governed by that item that
//!    are no longer among those members.
//! 4. Each candidate is resolved against the items in order, first item wins:
//!    containers by DN, groups by asking which groups hold the user
//!    (`(&group-filter(member=DN))`, upwards through nested groups).
//! 5. The plan is `core::plan::compute` over the candidates only (the same
//!    rules as a full synchronization), applied with the new cookie in one
//!    transaction by the caller.
//!
//! A cycle holds its candidates in memory (a few KB each) and reads each one
//! alone: past [`max_changes`] changed entries or candidates it gives way to
//! a full cycle, which reads everything faster and in constant memory.

use crate::domains::Domains;
use crate::error::{EngineError, Result, ResultExt};
use crate::marks::{dirsync, naming_context, UsnMark, USER_OBJECTS};
pub use crate::marks::{starting_point, supported, Kind};
use mfasync_core::config::{Config, ItemKind, SyncItem, UniqueIdType, WhenRemoved};
use mfasync_core::filter::{dn_is_under, normalize_dn, parent_dn};
use mfasync_core::hashset::StrSet;
use mfasync_core::mapping::{self, DirectoryUser};
use mfasync_core::plan::{self, Plan};
use mfasync_core::presence::Presence;
use mfasync_core::{Entry, MfaUser, Source};
use mfasync_ldap::{Client, Scope, SyncEvent};
use mfasync_store::{Store, UserKey};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Changed entries, or candidates, an incremental cycle takes on.
const MAX_CHANGES: usize = 10_000;

/// [`MAX_CHANGES`], or `MFASYNC_TEST_MAX_INCREMENTAL` (tests: a few changes
/// are then many).
fn max_changes() -> usize {
    static MAX: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *MAX.get_or_init(|| {
        std::env::var("MFASYNC_TEST_MAX_INCREMENTAL")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(MAX_CHANGES)
    })
}

/// Why a cycle with `n` changed entries (or candidates) gives way to a full one.
fn too_many(n: usize, what: &str) -> Option<String> {
    let max = max_changes();
    (n > max).then(|| {
        format!("{n} {what} since the last cycle, more than an incremental cycle takes ({max})")
    })
}

/// What changed since the cookie.
#[derive(Default)]
struct Changes {
    /// Current DN and unique id (if known) of each changed entry.
    changed: Vec<(String, Option<String>)>,
    /// Unique ids of deleted entries: proved (DirSync isDeleted, a
    /// uSNChanged tombstone).
    deleted: HashSet<String>,
    /// Unique ids that left the read's scope, deleted or not (syncrepl
    /// deletes): looked up by id before anything is decided.
    absent: HashSet<String>,
    /// Present phase (syncrepl without a session log): ids still there.
    present: Option<StrSet>,
    entries: usize,
    cookie: Vec<u8>,
    /// The starting point cannot be continued (uSNChanged: another DC
    /// database): why, and nothing else was read.
    needs_full: Option<String>,
}

/// entryUUID bytes (RFC 4530, big-endian) as OpenLDAP writes them: lower-case, dashed.
fn uuid_text(raw: &[u8]) -> Option<String> {
    if raw.len() != 16 {
        return None;
    }
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    Some(format!(
        "{}-{}-{}-{}-{}",
        hex.get(0..8)?,
        hex.get(8..12)?,
        hex.get(12..16)?,
        hex.get(16..20)?,
        hex.get(20..32)?
    ))
}

async fn fetch(
    client: &mut Client,
    cfg: &Config,
    kind: Kind,
    base: &str,
    cookie: &[u8],
) -> Result<Changes> {
    let mut ch = Changes::default();
    match kind {
        Kind::SyncRepl => {
            // (a present phase lists every entry still there: a million ids
            // kept as hashes, ~10 bytes each)
            let mut present = StrSet::default();
            let mut saw_present = false;
            let mut f = |ev: SyncEvent| match ev {
                SyncEvent::Changed { uuid, entry } => ch.changed.push((entry.dn, uuid_text(&uuid))),
                // (a syncrepl delete is scoped to the search base: an entry
                // moved out of it is "deleted" too, so it is only an absence)
                SyncEvent::Deleted { uuid } => {
                    if let Some(id) = uuid_text(&uuid) {
                        ch.absent.insert(id);
                    }
                }
                SyncEvent::Present { uuid } => {
                    saw_present = true;
                    if let Some(id) = uuid_text(&uuid) {
                        present.insert(&id);
                    }
                }
            };
            let r = client
                .syncrepl_refresh(
                    base,
                    Scope::Subtree,
                    "(objectClass=*)",
                    &["1.1".to_string()],
                    Some(cookie),
                    &mut f,
                )
                .await
                .with_context(|| format!("syncrepl refresh of {base}"))?;
            ch.entries = r.events;
            ch.cookie = r.cookie.unwrap_or_else(|| cookie.to_vec());
            // A present phase lists what is still there; without one (or with
            // deletions listed) nothing is inferred from absence.
            if !r.deletes_listed && saw_present {
                ch.present = Some(present);
            }
        }
        Kind::Usn => return fetch_usn(client, cfg, base, cookie).await,
        Kind::DirSync => {
            let nc = naming_context(client, base);
            let filter = format!(
                "(|{}{}{}{USER_OBJECTS})",
                cfg.filters.user, cfg.filters.security_group, cfg.filters.container
            );
            // DirSync returns an object only when one of the requested
            // attributes changed: ask for every mapped attribute, group
            // membership, and what a move or rename changes.
            let mut attrs = cfg.attributes.user_attributes();
            for a in [
                "objectGUID",
                "isDeleted",
                "name",
                "member",
                "userAccountControl",
                "objectClass",
            ] {
                if !attrs.iter().any(|x| x.eq_ignore_ascii_case(a)) {
                    attrs.push(a.to_string());
                }
            }
            let mut f = |e: Entry| {
                let id = e
                    .first_bytes("objectGUID")
                    .and_then(|raw| mapping::unique_id_text(UniqueIdType::Guid, raw).ok());
                let deleted = e
                    .first_str("isDeleted")
                    .is_some_and(|v| v.eq_ignore_ascii_case("true"));
                match (deleted, id) {
                    (true, Some(id)) => {
                        ch.deleted.insert(id);
                    }
                    (true, None) => {}
                    (false, id) => ch.changed.push((e.dn, id)),
                }
            };
            let r = dirsync(client, &nc, &filter, &attrs, cookie, &mut f)
                .await
                .with_context(|| format!("DirSync of {nc}"))?;
            ch.entries = r.entries;
            ch.cookie = r.cookie;
        }
    }
    Ok(ch)
}

/// Changes by uSNChanged: the objects of the naming context that match the
/// user, group or container filter and were written after the stored USN
/// (like DirSync, the whole naming context, so that a user moved out of the
/// base DN is seen), and the tombstones written after it (Show Deleted).
/// The new watermark is the highestCommittedUSN read BEFORE the searches: a
/// change made meanwhile is seen again next cycle (harmless), never lost.
async fn fetch_usn(client: &mut Client, cfg: &Config, base: &str, raw: &[u8]) -> Result<Changes> {
    let mut ch = Changes::default();
    let Some(mark) = UsnMark::decode(raw) else {
        ch.needs_full = Some("the stored uSNChanged starting point is unreadable".into());
        return Ok(ch);
    };
    let now = client
        .usn_state()
        .await
        .context("reading highestCommittedUSN")?;
    if now.dsa != mark.dsa || now.invocation_id != mark.invocation_id {
        ch.needs_full = Some(format!(
            "{} is not the DC database the uSNChanged starting point came from (invocationId or dsServiceName changed: restored or replaced)",
            client.server()
        ));
        return Ok(ch);
    }
    if now.highest_committed_usn < mark.usn {
        ch.needs_full = Some(format!(
            "{} reports highestCommittedUSN {} below the stored {}",
            client.server(),
            now.highest_committed_usn,
            mark.usn
        ));
        return Ok(ch);
    }
    let from = mark.usn.saturating_add(1);
    let nc = naming_context(client, base);
    let filter = format!(
        "(&(uSNChanged>={from})(|{}{}{}{USER_OBJECTS}))",
        cfg.filters.user, cfg.filters.security_group, cfg.filters.container
    );
    let guid = |e: &Entry| {
        e.first_bytes("objectGUID")
            .and_then(|raw| mapping::unique_id_text(UniqueIdType::Guid, raw).ok())
    };
    let attrs = ["objectGUID".to_string()];
    let mut changed = Vec::new();
    let n = client
        .search_each(&nc, Scope::Subtree, &filter, &attrs, &mut |e| {
            let id = guid(&e);
            changed.push((e.dn, id));
        })
        .await
        .with_context(|| format!("searching {nc} for uSNChanged>={from}"))?;
    let mut deleted = HashSet::new();
    let d = client
        .deleted_since(&nc, from, &attrs, &mut |e| {
            if let Some(id) = guid(&e) {
                deleted.insert(id);
            }
        })
        .await
        .with_context(|| format!("searching the deleted objects of {nc}"))?;
    ch.changed = changed;
    ch.deleted = deleted;
    ch.entries = n + d;
    ch.cookie = UsnMark::from(&now).encode();
    Ok(ch)
}

/// A user whose governing item may have changed.
#[derive(Default)]
struct Candidate {
    /// The DN as the server wrote it.
    dn: String,
    entry: Option<DirectoryUser>,
}

pub(crate) struct Resolver<'a> {
    client: &'a mut Client,
    /// The other domains' connections: an entry is read from its own domain's DCs.
    domains: &'a mut Domains,
    cfg: &'a Config,
    attrs: Vec<String>,
    group_bases: Vec<String>,
    /// The connected domain's naming context (where its foreign security
    /// principals are), when members from trusted domains are followed.
    fsp_nc: Option<String>,
    /// The other domains whose changes this cycle read.
    fetched: Vec<String>,
    /// Direct groups of a DN (normalised DN -> (normalised, as written) group DNs).
    groups_of: HashMap<String, Vec<(String, String)>>,
    reads: usize,
}

impl<'a> Resolver<'a> {
    /// A resolver for `cfg`'s items: groups searched in each group item's
    /// naming context; `fetched`, the other domains whose changes were read.
    pub(crate) fn new(
        client: &'a mut Client,
        domains: &'a mut Domains,
        cfg: &'a Config,
        base: &str,
        fetched: Vec<String>,
    ) -> Result<Self> {
        let mut group_bases: Vec<String> = Vec::new();
        for i in cfg
            .sync
            .items
            .iter()
            .filter(|i| i.kind == ItemKind::SecurityGroup)
        {
            // each group item's naming context, as its own domain's DCs name it
            let nc = match domains.for_dn(cfg, &i.dn)? {
                Some(c) => naming_context(c, &i.dn),
                None => naming_context(client, &i.dn),
            };
            group_bases.push(nc);
        }
        group_bases.sort();
        group_bases.dedup();
        let fsp_nc =
            crate::domains::follows_other_domains(cfg).then(|| naming_context(client, base));
        Ok(Resolver {
            client,
            domains,
            cfg,
            attrs: cfg.attributes.user_attributes(),
            group_bases,
            fsp_nc,
            fetched,
            groups_of: HashMap::new(),
            reads: 0,
        })
    }
}

impl Resolver<'_> {
    /// The connection to the DCs of the domain `dn` is in.
    fn client_for(&mut self, dn: &str) -> Result<&mut Client> {
        match self.domains.for_dn(self.cfg, dn)? {
            Some(c) => Ok(c),
            None => Ok(&mut *self.client),
        }
    }

    /// `dn` if it matches `filter` (base search); None when it does not or is gone.
    async fn base_match(
        &mut self,
        dn: &str,
        filter: &str,
        attrs: &[String],
    ) -> Result<Option<Entry>> {
        let client = self.client_for(dn)?;
        match client.search_all(dn, Scope::Base, filter, attrs).await {
            Ok(mut v) => {
                self.reads += v.len();
                Ok(v.pop())
            }
            Err(mfasync_ldap::LdapError::Operation { code: 32, .. }) => Ok(None),
            Err(e) => Err(EngineError::from(e).context(format!("reading {dn}"))),
        }
    }

    pub(crate) async fn read_user(&mut self, dn: &str) -> Result<Option<Entry>> {
        let (f, a) = (self.cfg.filters.user.clone(), self.attrs.clone());
        self.base_match(dn, &f, &a).await
    }

    async fn is_container(&mut self, dn: &str) -> Result<bool> {
        let f = self.cfg.filters.container.clone();
        Ok(self
            .base_match(dn, &f, &["1.1".to_string()])
            .await?
            .is_some())
    }

    async fn is_group(&mut self, dn: &str) -> Result<bool> {
        let f = self.cfg.filters.security_group.clone();
        Ok(self
            .base_match(dn, &f, &["1.1".to_string()])
            .await?
            .is_some())
    }

    /// The groups (matching the group filter) that list `dn` as a member.
    async fn direct_groups(&mut self, dn: &str) -> Result<Vec<(String, String)>> {
        let key = normalize_dn(dn);
        if let Some(g) = self.groups_of.get(&key) {
            return Ok(g.clone());
        }
        let filter = format!(
            "(&{}(member={}))",
            self.cfg.filters.security_group,
            mfasync_core::escape::filter_value(dn)
        );
        let mut out = Vec::new();
        for base in self.group_bases.clone() {
            let found = self
                .client_for(&base)?
                .search_all(&base, Scope::Subtree, &filter, &["1.1".to_string()])
                .await
                .with_context(|| format!("searching the groups of {dn} under {base}"))?;
            self.reads += found.len();
            out.extend(found.into_iter().map(|e| (normalize_dn(&e.dn), e.dn)));
        }
        // An entry of another domain read this cycle: the groups of its own
        // domain that hold it (a trusted domain's group may be a member of
        // this domain's groups, below) ...
        if self.fsp_nc.is_some() {
            if let Ok(Some(c)) = self.domains.for_dn(self.cfg, dn) {
                let nc = naming_context(c, dn);
                if !self.group_bases.contains(&nc) {
                    let found = c
                        .search_all(&nc, Scope::Subtree, &filter, &["1.1".to_string()])
                        .await
                        .with_context(|| format!("searching the groups of {dn} under {nc}"))?;
                    self.reads += found.len();
                    out.extend(found.into_iter().map(|e| (normalize_dn(&e.dn), e.dn)));
                }
            }
        }
        // ... and it is a member of this domain's groups as a foreign
        // security principal (CN=<its SID>,CN=ForeignSecurityPrincipals,…).
        if let Some(fsp) = self.principal_dn(dn).await? {
            let filter = format!(
                "(&{}(member={}))",
                self.cfg.filters.security_group,
                mfasync_core::escape::filter_value(&fsp)
            );
            for base in self.group_bases.clone() {
                if !matches!(self.domains.for_dn(self.cfg, &base), Ok(None)) {
                    continue;
                }
                let found = self
                    .client
                    .search_all(&base, Scope::Subtree, &filter, &["1.1".to_string()])
                    .await
                    .with_context(|| format!("searching the groups of {fsp} under {base}"))?;
                self.reads += found.len();
                out.extend(found.into_iter().map(|e| (normalize_dn(&e.dn), e.dn)));
            }
        }
        out.sort();
        out.dedup();
        self.groups_of.insert(key, out.clone());
        Ok(out)
    }

    /// The foreign security principal DN that stands for `dn` (an entry of
    /// another domain read this cycle) in the connected domain.
    async fn principal_dn(&mut self, dn: &str) -> Result<Option<String>> {
        let Some(nc) = self.fsp_nc.clone() else {
            return Ok(None);
        };
        let Some(client) = self.domains.for_dn(self.cfg, dn)? else {
            return Ok(None);
        };
        let attrs = ["objectSid".to_string()];
        let found = match client
            .search_all(dn, Scope::Base, "(objectClass=*)", &attrs)
            .await
        {
            Ok(v) => v,
            Err(mfasync_ldap::LdapError::Operation { code: 32, .. }) => Vec::new(),
            Err(e) => {
                return Err(EngineError::from(e).context(format!("reading the objectSid of {dn}")))
            }
        };
        self.reads += found.len();
        Ok(found
            .first()
            .and_then(|e| e.first_bytes("objectSid"))
            .and_then(mfasync_core::sid::sid_text)
            .map(|sid| mfasync_core::sid::foreign_principal_dn(&sid, &nc)))
    }

    /// What a foreign security principal `sid` (a member of `group`) stands
    /// for in its trusted domain: the DN of a user (with its entry) or of a
    /// group there; None when neither (or of no trusted domain).
    async fn principal(
        &mut self,
        sid: &str,
        group: &str,
    ) -> Result<Option<(String, Option<Entry>)>> {
        use crate::domains::Principal;
        let (cfg, attrs) = (self.cfg, self.attrs.clone());
        let found = self
            .domains
            .principal(self.client, cfg, sid, &cfg.filters.user, &attrs)
            .await
            .with_context(|| format!("following the member {sid} of {group}"))?;
        match found {
            Principal::NotTrusted => Ok(None),
            Principal::UnknownDomain => Err(EngineError::NeedsFull(format!(
                "{group} holds {sid}, of a domain not found among the trusts"
            ))),
            Principal::Unreachable { why, .. } => Err(EngineError::NeedsFull(why)),
            Principal::Found { domain, .. } if !self.fetched.contains(&domain) => {
                Err(EngineError::NeedsFull(format!(
                    "{group} holds members from {domain}, which has no starting point yet"
                )))
            }
            Principal::Found { mut entries, .. } => {
                self.reads += entries.len();
                if let Some(e) = entries.pop() {
                    return Ok(Some((e.dn.clone(), Some(e))));
                }
                let one = ["1.1".to_string()];
                let groups = self
                    .domains
                    .principal(self.client, cfg, sid, &cfg.filters.security_group, &one)
                    .await
                    .with_context(|| format!("following the member {sid} of {group}"))?;
                // a group of the trusted domain: its DN (read as a nested group there)
                match groups {
                    Principal::Found { mut entries, .. } => {
                        self.reads += entries.len();
                        Ok(entries.pop().map(|g| (g.dn, None)))
                    }
                    _ => Ok(None),
                }
            }
        }
    }

    /// Every group that holds `dn`, directly or through nested groups.
    async fn all_groups(&mut self, dn: &str) -> Result<HashSet<String>> {
        let mut seen: HashSet<String> = HashSet::new();
        let mut queue = vec![dn.to_string()];
        while let Some(x) = queue.pop() {
            for (n, orig) in self.direct_groups(&x).await? {
                if seen.insert(n) {
                    queue.push(orig);
                }
            }
        }
        Ok(seen)
    }

    async fn holds(&mut self, item: &SyncItem, dn: &str) -> Result<bool> {
        let n = normalize_dn(dn);
        let item_dn = normalize_dn(&item.dn);
        Ok(match item.kind {
            ItemKind::Container => {
                if item.include_nested {
                    dn_is_under(&n, &item_dn) && n != item_dn
                } else {
                    parent_dn(&n) == item_dn
                }
            }
            ItemKind::SecurityGroup => {
                if item.include_nested {
                    self.all_groups(dn).await?.contains(&item_dn)
                } else {
                    self.direct_groups(dn)
                        .await?
                        .iter()
                        .any(|(g, _)| *g == item_dn)
                }
            }
        })
    }

    /// The nested groups through which `dn` is a member of `group`: empty
    /// when a direct member, from the group holding `dn` outwards; None when
    /// not a member at all (`users explain`).
    pub(crate) async fn group_path(
        &mut self,
        group: &str,
        dn: &str,
    ) -> Result<Option<Vec<String>>> {
        let target = normalize_dn(group);
        // group (normalised) -> (the group below it on the way, None for `dn`; as written)
        let mut from: HashMap<String, (Option<String>, String)> = HashMap::new();
        let mut queue = std::collections::VecDeque::from([(None::<String>, dn.to_string())]);
        while let Some((below, x)) = queue.pop_front() {
            for (n, orig) in self.direct_groups(&x).await? {
                if from.contains_key(&n) {
                    continue;
                }
                from.insert(n.clone(), (below.clone(), orig.clone()));
                if n == target {
                    let mut chain = Vec::new();
                    let mut cur = below.clone();
                    while let Some((next, written)) = cur.as_ref().and_then(|c| from.get(c)) {
                        chain.push(written.clone());
                        cur = next.clone();
                    }
                    chain.reverse();
                    return Ok(Some(chain));
                }
                queue.push_back((Some(n), orig));
            }
        }
        Ok(None)
    }

    /// The index of the first item that holds `dn`.
    async fn first_item(&mut self, dn: &str) -> Result<Option<usize>> {
        for (i, item) in self.cfg.sync.items.iter().enumerate() {
            if self.holds(item, dn).await? {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }
}

pub struct Cycle {
    pub plan: Plan,
    pub cookie: Vec<u8>,
    /// The new starting points of the other domains read, as `(domain, value)`.
    pub domain_cookies: Vec<(String, Vec<u8>)>,
    /// Directory entries received: changes plus the reads they needed.
    pub entries_read: usize,
}

/// Another domain read by an incremental cycle (connected in `Domains`):
/// its mechanism and stored starting point.
pub struct OtherDomain {
    pub domain: String,
    pub kind: Kind,
    pub cookie: Vec<u8>,
}

/// The absent stored `users` (id, stored DN) looked up by unique id: those of
/// the connected domain in batches, those of another domain on its DCs.
async fn look_up(
    r: &mut Resolver<'_>,
    base: &str,
    users: &[(String, Option<String>)],
) -> crate::lookup::Looked {
    let (here, elsewhere): (Vec<_>, Vec<_>) = users.iter().cloned().partition(|(_, dn)| {
        dn.as_deref()
            .is_none_or(|dn| matches!(r.domains.for_dn(r.cfg, dn), Ok(None)))
    });
    let cfg = r.cfg;
    let mut looked = crate::lookup::by_unique_id(r.client, cfg, base, &here).await;
    for (id, dn) in elsewhere {
        let dn_text = dn.clone().unwrap_or_default();
        match r.client_for(&dn_text) {
            Ok(c) => {
                let their_base = c.base_dn().to_string();
                let one = crate::lookup::by_unique_id(c, cfg, &their_base, &[(id, dn)]).await;
                looked.found.extend(one.found);
                looked.deleted.extend(one.deleted);
                looked.unknown.extend(one.unknown);
            }
            Err(e) => looked.unknown.push((id, format!("{e:#}"))),
        }
    }
    looked
}

/// One incremental cycle: changes since `cookie` (and since each other
/// domain's own starting point, read from its DCs), resolved into a plan;
/// `Ok(Err(why))` when the changes need a full synchronization instead (also
/// when another domain's DCs fail in the middle: a full cycle leaves its
/// users as they are). An error carrying [`EngineError::NeedsFull`] means
/// the same (the caller turns it into a full cycle: [`EngineError::needs_full`]).
#[allow(clippy::too_many_arguments)]
pub async fn cycle(
    client: &mut Client,
    domains: &mut Domains,
    others: &[OtherDomain],
    cfg: &Config,
    store: &dyn Store,
    kind: Kind,
    base: &str,
    cookie: &[u8],
) -> Result<std::result::Result<Cycle, String>> {
    let mut changes = fetch(client, cfg, kind, base, cookie).await?;
    if let Some(why) = changes.needs_full {
        return Ok(Err(why));
    }
    let mut domain_cookies = Vec::new();
    for o in others {
        let c = match domains.connected(&o.domain) {
            Some(Ok(c)) => c,
            Some(Err(why)) => return Ok(Err(why)),
            None => return Ok(Err(format!("the domain {} was not connected", o.domain))),
        };
        let b = c.base_dn().to_string();
        let ch = match fetch(c, cfg, o.kind, &b, &o.cookie).await {
            Ok(ch) => ch,
            Err(e) => {
                return Ok(Err(format!(
                    "reading the changes of the domain {} failed: {e:#}",
                    o.domain
                )))
            }
        };
        if let Some(why) = ch.needs_full {
            return Ok(Err(format!("the domain {}: {why}", o.domain)));
        }
        changes.changed.extend(ch.changed);
        changes.deleted.extend(ch.deleted);
        changes.absent.extend(ch.absent);
        changes.entries += ch.entries;
        domain_cookies.push((o.domain.clone(), ch.cookie));
    }
    tracing::info!(target: "mfasync::incremental",
        changed = changes.changed.len(),
        deleted = changes.deleted.len(),
        absent = changes.absent.len(),
        entries = changes.entries,
        "fetched incremental changes"
    );
    // (deleted ids cost little until looked up, and only stored users are)
    if let Some(why) = too_many(changes.changed.len(), "directory entries changed") {
        return Ok(Err(why));
    }
    let a = &cfg.attributes;
    let fetched = others.iter().map(|o| o.domain.clone()).collect();
    let mut r = Resolver::new(client, domains, cfg, base, fetched)?;

    let item_index: HashMap<&str, usize> = cfg
        .sync
        .items
        .iter()
        .enumerate()
        .map(|(i, it)| (it.dn.as_str(), i))
        .collect();
    let stored_index = |u: &MfaUser| {
        u.sync_item
            .as_deref()
            .and_then(|s| item_index.get(s).copied())
    };

    // (ordered: resolved in DN order, each freed as it is resolved)
    let mut candidates: BTreeMap<String, Candidate> = BTreeMap::new();
    // Proved deleted; and absent (gone from the read's scope or from the
    // users, deleted or not: looked up by unique id below).
    let deleted: HashSet<String> = changes.deleted.clone();
    let mut absent: HashSet<String> = changes.absent.clone();
    let mut keep: HashSet<String> = HashSet::new();
    let mut warnings: Vec<String> = Vec::new();
    let mut changed_ids: HashSet<String> = HashSet::new();
    let mut changed_groups: Vec<String> = Vec::new();

    // Present phase: stored users under the base DN not listed are absent.
    if let Some(present) = &changes.present {
        // (a present phase lists everything: compare with every stored
        // user, streamed: a million of them never sit in memory)
        let listed: HashSet<&str> = changes
            .changed
            .iter()
            .filter_map(|(_, id)| id.as_deref())
            .collect();
        let base_n = normalize_dn(base);
        store
            .users_each(&mut |u| {
                if u.source != Source::Directory {
                    return true;
                }
                let (Some(id), Some(dn)) = (u.directory_id.as_deref(), u.dn.as_deref()) else {
                    return true;
                };
                if dn_is_under(&normalize_dn(dn), &base_n)
                    && !present.contains(id)
                    && !listed.contains(id)
                {
                    absent.insert(id.to_string());
                }
                true
            })
            .await?;
    }

    // Classify the changed entries.
    for (dn, id) in &changes.changed {
        if let Some(e) = r.read_user(dn).await? {
            match mapping::map_user(a, &e) {
                Ok(du) => {
                    if let Some(i) = du.user.directory_id.clone() {
                        changed_ids.insert(i);
                    }
                    let key = normalize_dn(du.user.dn.as_deref().unwrap_or(&e.dn));
                    candidates.insert(
                        key,
                        Candidate {
                            dn: e.dn.clone(),
                            entry: Some(du),
                        },
                    );
                }
                Err(err) => {
                    if let Some(id) = id {
                        keep.insert(id.clone());
                    }
                    warnings.push(err.to_string());
                }
            }
        } else if r.is_group(dn).await? {
            changed_groups.push(dn.clone());
        } else if r.is_container(dn).await? {
            // a renamed or moved container moves every user below it, and
            // the directory reports only the container: re-read everything
            return Ok(Err(format!(
                "container {dn} changed (renamed, moved or edited)"
            )));
        } else if let Some(id) = id {
            // no longer a user (or not one): a stored user with this id left
            // the users (filtered out) or was deleted meanwhile
            absent.insert(id.clone());
        }
    }

    // Changed groups: who may have joined or left an item.
    for g in &changed_groups {
        let gn = normalize_dn(g);
        let above = r.all_groups(g).await?;
        let relevant: Vec<usize> = cfg
            .sync
            .items
            .iter()
            .enumerate()
            .filter(|(_, it)| it.kind == ItemKind::SecurityGroup)
            .filter(|(_, it)| {
                let n = normalize_dn(&it.dn);
                n == gn || (it.include_nested && above.contains(&n))
            })
            .map(|(i, _)| i)
            .collect();
        let Some(&min_rel) = relevant.iter().min() else {
            continue;
        };
        let nested = relevant
            .iter()
            .any(|&i| cfg.sync.items.get(i).is_some_and(|it| it.include_nested));
        // the group's current members, nested groups followed when an item includes them
        let mut members: HashSet<String> = HashSet::new();
        let mut visited: HashSet<String> = HashSet::new();
        let mut queue = vec![g.clone()];
        while let Some(grp) = queue.pop() {
            if !visited.insert(normalize_dn(&grp)) {
                continue;
            }
            let values = r
                .client_for(&grp)?
                .read_all_values(&grp, "member")
                .await
                .with_context(|| format!("reading the members of {grp}"))?
                .unwrap_or_default();
            r.reads += 1;
            let by_dn: HashMap<String, MfaUser> = store
                .users_by(UserKey::Dn, &values)
                .await?
                .into_iter()
                .filter(|u| u.source == Source::Directory)
                .filter_map(|u| u.dn.as_deref().map(normalize_dn).map(|n| (n, u)))
                .collect();
            for v in values {
                // a member from a trusted domain: its entry there
                let mut principal_entry = None;
                // (followed in groups of this domain only, as full cycles do)
                let this_domain = matches!(r.domains.for_dn(cfg, &grp), Ok(None));
                let v = match mfasync_core::sid::foreign_principal_sid(&v)
                    .filter(|_| r.fsp_nc.is_some() && this_domain)
                {
                    None => v,
                    Some(sid) => match r.principal(&sid, &grp).await? {
                        Some((dn, e)) => {
                            principal_entry = e;
                            dn
                        }
                        None => continue,
                    },
                };
                let n = normalize_dn(&v);
                if members.contains(&n) {
                    continue;
                }
                if let Some(u) = by_dn.get(&n) {
                    members.insert(n.clone());
                    if stored_index(u).is_none_or(|k| k > min_rel) {
                        candidates.entry(n).or_insert_with(|| Candidate {
                            dn: v.clone(),
                            entry: None,
                        });
                    }
                    continue;
                }
                if candidates.contains_key(&n) {
                    members.insert(n);
                    continue;
                }
                let entry = match principal_entry {
                    Some(e) => Some(e),
                    None => r.read_user(&v).await?,
                };
                if let Some(e) = entry {
                    members.insert(n.clone());
                    match mapping::map_user(a, &e) {
                        Ok(du) => {
                            candidates.insert(
                                n,
                                Candidate {
                                    dn: v.clone(),
                                    entry: Some(du),
                                },
                            );
                        }
                        Err(err) => warnings.push(err.to_string()),
                    }
                } else if nested && r.is_group(&v).await? {
                    queue.push(v);
                }
            }
        }
        // stored users governed by a relevant item that are not members any more (or via other paths)
        let relevant_dns: Vec<String> = relevant
            .iter()
            .filter_map(|&i| cfg.sync.items.get(i).map(|it| it.dn.clone()))
            .collect();
        let governed = store.users_by(UserKey::SyncItem, &relevant_dns).await?;
        for u in governed.iter().filter(|u| u.source == Source::Directory) {
            let Some(dn) = u.dn.as_deref() else { continue };
            let n = normalize_dn(dn);
            if stored_index(u).is_some_and(|k| relevant.contains(&k)) && !members.contains(&n) {
                candidates.entry(n).or_insert_with(|| Candidate {
                    dn: dn.to_string(),
                    entry: None,
                });
            }
        }
    }

    // (a changed group can make many candidates: each is read alone below)
    if let Some(why) = too_many(candidates.len(), "users to look at") {
        return Ok(Err(why));
    }
    // Resolve every candidate: read its entry if needed, then the first item that holds it.
    let mut desired: Vec<MfaUser> = Vec::new();
    let mut subset: HashSet<String> = HashSet::new();
    let mut resolved: HashSet<String> = HashSet::new();
    while let Some((_, c)) = candidates.pop_first() {
        let du = match c.entry {
            Some(du) => du,
            None => match r.read_user(&c.dn).await? {
                Some(e) => match mapping::map_user(a, &e) {
                    Ok(du) => du,
                    Err(err) => {
                        // not in this cycle's subset: left exactly as it is
                        warnings.push(err.to_string());
                        continue;
                    }
                },
                None => {
                    // not (or no longer) a user at this DN: moved (seen under its new DN),
                    // deleted (seen as a deletion) or out of the filter (seen as a change);
                    // anything else is left as it is: an empty read is never a departure
                    continue;
                }
            },
        };
        let Some(id) = du.user.directory_id.clone() else {
            continue;
        };
        if !resolved.insert(id.clone()) {
            continue;
        }
        subset.insert(id.clone());
        let dn = du.user.dn.clone().unwrap_or_else(|| c.dn.clone());
        // In no item (inside or outside the base DN): it still exists, so
        // it left its item (its when_removed), as in a full cycle.
        if let Some(item) = r.first_item(&dn).await?.and_then(|i| cfg.sync.items.get(i)) {
            desired.push(mapping::apply_item(&du, item));
        }
    }

    // Plan over the affected users only (plus manual users, for username clashes).
    // (read as a user this cycle: not absent)
    absent.retain(|id| !resolved.contains(id));
    subset.extend(deleted.iter().cloned());
    subset.extend(absent.iter().cloned());
    subset.extend(keep.iter().cloned());
    let subset_ids: Vec<String> = subset.iter().cloned().collect();
    let mut current: Vec<MfaUser> = store
        .users_by(UserKey::DirectoryId, &subset_ids)
        .await?
        .into_iter()
        .filter(|u| u.source == Source::Directory)
        .collect();
    let mut names: Vec<String> = desired.iter().map(|d| d.username.to_lowercase()).collect();
    names.sort();
    names.dedup();
    let same_names = store.users_by(UserKey::UsernameLower, &names).await?;
    // a username held by a stored directory user outside this cycle is not taken over
    let others: HashMap<String, String> = same_names
        .iter()
        .filter(|u| u.source == Source::Directory)
        .filter_map(|u| {
            u.directory_id
                .as_deref()
                .filter(|id| !subset.contains(*id))
                .map(|id| (u.username.to_lowercase(), id.to_string()))
        })
        .collect();
    // manual users holding a wanted username: the plan skips those users with a warning
    current.extend(
        same_names
            .into_iter()
            .filter(|u| u.source == Source::Manual),
    );
    desired.retain(|d| match others.get(&d.username.to_lowercase()) {
        Some(other) if Some(other.as_str()) != d.directory_id.as_deref() => {
            warnings.push(format!(
                "{}: two directory users share this username ({other} and {}); the second is skipped",
                d.username,
                d.directory_id.as_deref().unwrap_or_default()
            ));
            if let Some(id) = &d.directory_id {
                keep.insert(id.clone());
            }
            false
        }
        _ => true,
    });
    let items: HashMap<String, WhenRemoved> = cfg
        .sync
        .items
        .iter()
        .map(|i| (i.dn.clone(), i.when_removed))
        .collect();
    // The absent stored users, looked up by unique id (on their domain's DCs).
    let absent_users: Vec<(String, Option<String>)> = current
        .iter()
        .filter(|u| u.source == Source::Directory)
        .filter_map(|u| {
            let id = u.directory_id.as_deref()?;
            (absent.contains(id) && !deleted.contains(id)).then(|| (id.to_string(), u.dn.clone()))
        })
        .collect();
    let looked = look_up(&mut r, base, &absent_users).await;
    warnings.extend(crate::lookup::unknown_warnings(&looked.unknown));
    let presence = |id: &str| {
        if deleted.contains(id) || looked.deleted.contains(id) {
            Presence::Deleted
        } else if absent.contains(id) && !looked.found.contains(id) {
            Presence::Unknown
        } else {
            Presence::Exists
        }
    };
    let mut p = plan::compute(plan::PlanInput {
        desired,
        current: &current,
        presence: &presence,
        when_removed: &|item| items.get(item).copied(),
        remove_deleted_users: cfg.sync.remove_deleted_users,
        keep_as_is: &|id| keep.contains(id),
    });
    p.warnings.extend(warnings);
    let entries_read = changes.entries + r.reads;
    Ok(Ok(Cycle {
        plan: p,
        cookie: changes.cookie,
        domain_cookies,
        entries_read,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_uuid_text() {
        let raw: Vec<u8> = (0u8..16).collect();
        assert_eq!(
            uuid_text(&raw).as_deref(),
            Some("00010203-0405-0607-0809-0a0b0c0d0e0f")
        );
        assert_eq!(uuid_text(&raw[..15]), None);
    }
}
