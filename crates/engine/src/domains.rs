//! Sync items in other domains (`include_trusted_domains`, Active Directory).
//!
//! An item whose DN is in another domain than the one connected to (the
//! `DC=` components at its end name another DNS domain: a domain of the
//! forest, e.g. a child domain, or a trusted domain) is read from that
//! domain's own domain controllers:
//!
//! * the DCs are found by DNS SRV for the domain's DNS name, the way the main
//!   domain's are (`directory.dns_servers`, failover, timeouts), with the
//!   domain's naming context as base DN; `directory.site` is not used (a
//!   site of this forest means nothing in another);
//! * the bind is the domain's own query bind when `[[directory.domains]]`
//!   names it, else the query bind (`directory.query_bind`). With the
//!   `windows` (Kerberos) bind this domain's account takes a cross-realm
//!   ticket for `ldap/<DC>` of the other domain, which works across a forest
//!   or external trust. A simple bind of this domain's account at another
//!   domain's DC only works where that DC passes the password on to this
//!   domain (Samba 4.17 DCs refuse it); an account of the other domain
//!   (`[[directory.domains]]`) works anywhere, also across a one-way trust;
//! * one connection per domain per cycle.
//!
//! A domain whose DCs cannot be found or reached, or which refuses the bind,
//! does not stop the cycle: the stored users of its items are left exactly as
//! they are (never a departure), the other items are synchronized, and the
//! plan carries a warning naming the domain and why.
//!
//! Each other domain has its own incremental starting point (DirSync cookie
//! or uSNChanged mark, [`mfasync_store::DomainWatermark`]), taken by a full
//! cycle right after connecting to the domain and before reading its items,
//! and committed with the connected domain's watermark in one transaction.
//! An incremental cycle fetches every domain's changes from its own DCs and
//! resolves each entry on the DCs of the domain its DN is in. The rules:
//!
//! * a domain with items but no stored starting point (the last full cycle
//!   could not read it, or could not take one) makes the cycle full;
//! * a domain that cannot be reached in an incremental cycle keeps its
//!   starting point (its changes are read when it answers again) and its
//!   users are left as they are; if it holds a group item (whose members
//!   cannot then be told), the cycle is full instead;
//! * a domain whose starting point came from another DC, or whose DC no
//!   longer offers that kind, makes the cycle full (as for this domain).

use std::collections::HashMap;

use crate::error::EngineError;
use mfasync_core::config::{Config, DirectorySource, SyncItem};
use mfasync_core::filter::normalize_dn;
use mfasync_core::plan::Planner;
use mfasync_ldap::Client;
use mfasync_store::Store;

/// The DNS domain named by the `DC=` components at the end of `dn`
/// (`OU=People,DC=emea,DC=example,DC=com` -> `emea.example.com`); `None`
/// when it does not end with `DC=` components.
pub fn domain_of_dn(dn: &str) -> Option<String> {
    let norm = normalize_dn(dn);
    let mut labels: Vec<&str> = Vec::new();
    for rdn in norm.rsplit(',') {
        match rdn.strip_prefix("dc=") {
            Some(label) if !label.is_empty() && !label.contains(['+', '\\', '=']) => {
                labels.push(label)
            }
            _ => break,
        }
    }
    if labels.is_empty() {
        return None;
    }
    labels.reverse();
    Some(labels.join("."))
}

/// Whether items in other domains are read from those domains' DCs (and
/// members from trusted domains followed).
pub fn follows_other_domains(cfg: &Config) -> bool {
    enabled(cfg)
}

fn enabled(cfg: &Config) -> bool {
    cfg.directory.include_trusted_domains
        && cfg.directory.source == DirectorySource::ActiveDirectory
}

/// The other domain `dn` is in, seen from the domain of naming context
/// `base` (when enabled, and both name a domain).
pub fn foreign_domain(cfg: &Config, base: &str, dn: &str) -> Option<String> {
    if !enabled(cfg) {
        return None;
    }
    let this = domain_of_dn(base)?;
    domain_of_dn(dn).filter(|d| *d != this)
}

/// The items in other domains, as `(index, domain)`.
pub fn foreign_items(cfg: &Config, base: &str) -> Vec<(usize, String)> {
    cfg.sync
        .items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| foreign_domain(cfg, base, &item.dn).map(|d| (i, d)))
        .collect()
}

/// The other domains that hold items, each once, in item order.
pub fn item_domains(cfg: &Config, base: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (_, d) in foreign_items(cfg, base) {
        if !out.contains(&d) {
            out.push(d);
        }
    }
    out
}

/// Whether `domain` holds a security-group item (its members can only be
/// told by asking its DCs).
pub fn holds_group_item(cfg: &Config, base: &str, domain: &str) -> bool {
    cfg.sync.items.iter().any(|i| {
        i.kind == mfasync_core::config::ItemKind::SecurityGroup
            && foreign_domain(cfg, base, &i.dn).as_deref() == Some(domain)
    })
}

/// What a foreign security principal (a member from a trusted domain in a
/// group of this domain) stands for.
pub enum Principal {
    /// Its entries (matching the filter asked; none: not such an object) in
    /// `domain`, read from that domain's DCs.
    Found {
        domain: String,
        entries: Vec<mfasync_core::Entry>,
    },
    /// Its domain's DCs could not be read.
    Unreachable { domain: String, why: String },
    /// A well-known SID (e.g. Authenticated Users): nobody to synchronize.
    NotTrusted,
    /// A domain account's SID (`S-1-5-21-…`) of a domain not found among
    /// the trusts (a child domain of a trusted forest, or the trusts are not
    /// readable): its users cannot be told, so they are left as they are.
    UnknownDomain,
}

/// The `domain` of [`leave_as_is`] meaning "every domain but the item's".
pub const ANY_OTHER_DOMAIN: &str = "*";

/// A starting point taken in another domain: (kind, DC, value).
pub type Mark = (crate::marks::Kind, String, Vec<u8>);

/// Connections to the other domains of one cycle.
pub struct Domains {
    /// The connected domain (of `base`), None when `base` names none or
    /// other domains are not read: then every DN is this domain's.
    this: Option<String>,
    conns: HashMap<String, Result<Client, String>>,
    /// The trusted domains by domain SID, read once per cycle.
    trusts: Option<HashMap<String, String>>,
    /// Domains connected for their items or members (they need a starting
    /// point), as opposed to only looking up stored users there.
    needed: std::collections::HashSet<String>,
    /// Take a starting point in each domain right after connecting (full
    /// cycles that commit).
    take_marks: bool,
    marks: HashMap<String, Mark>,
}

impl Domains {
    /// For a cycle connected to the domain of naming context `base`.
    pub fn new(base: &str) -> Domains {
        Domains {
            this: domain_of_dn(base),
            conns: HashMap::new(),
            trusts: None,
            needed: Default::default(),
            take_marks: false,
            marks: HashMap::new(),
        }
    }

    /// The other domain `dn` is in ([`foreign_domain`], with the connected
    /// domain worked out once).
    fn other(&self, cfg: &Config, dn: &str) -> Option<String> {
        let this = self.this.as_deref().filter(|_| enabled(cfg))?;
        domain_of_dn(dn).filter(|d| d != this)
    }

    /// A full cycle that commits: take each domain's starting point when
    /// connecting, before anything of it is read.
    pub fn taking_marks(mut self) -> Domains {
        self.take_marks = true;
        self
    }

    /// The connection for `item`: `Ok(None)` when it is in the connected
    /// domain; `Err(why)` when its domain cannot be read this cycle (the
    /// message names the domain; asked again, the same answer, no retry).
    pub async fn client_for(
        &mut self,
        cfg: &Config,
        item: &SyncItem,
    ) -> Result<Option<&mut Client>, String> {
        let Some(domain) = self.other(cfg, &item.dn) else {
            return Ok(None);
        };
        self.connect(cfg, &domain).await;
        match self.conns.get_mut(&domain) {
            Some(Ok(c)) => Ok(Some(c)),
            Some(Err(why)) => Err(why.clone()),
            None => Err(format!("the domain {domain} was not connected")),
        }
    }

    /// Connect to `domain` once per cycle (a failure is remembered, and
    /// reported once, by the caller); take its starting point if asked.
    pub async fn connect(&mut self, cfg: &Config, domain: &str) {
        self.needed.insert(domain.to_string());
        self.connect_to(cfg, domain, self.take_marks).await;
    }

    /// Connect to `domain` only to look up stored users there: no starting
    /// point is taken or required for it.
    pub async fn connect_for_lookup(&mut self, cfg: &Config, domain: &str) {
        self.connect_to(cfg, domain, false).await;
    }

    async fn connect_to(&mut self, cfg: &Config, domain: &str, with_mark: bool) {
        if self.conns.contains_key(domain) {
            return;
        }
        let mut c = connect(cfg, domain).await;
        if let (true, Ok(client)) = (with_mark, c.as_mut()) {
            if let Some(mark) = take_mark(client, cfg).await {
                self.marks.insert(domain.to_string(), mark);
            }
        }
        self.conns.insert(domain.to_string(), c);
    }

    /// The connection to `domain`, if [`Domains::connect`] was asked for it.
    pub fn connected(&mut self, domain: &str) -> Option<Result<&mut Client, String>> {
        self.conns
            .get_mut(domain)
            .map(|c| c.as_mut().map_err(|e| e.clone()))
    }

    /// The connection for an entry at `dn`: `Ok(None)` for the connected
    /// domain and for domains this cycle has not connected to (asked at the
    /// connected domain's DC, as before); [`EngineError::NeedsFull`] when
    /// `dn`'s domain could not be reached (a full cycle leaves its users as
    /// they are).
    pub fn for_dn(&mut self, cfg: &Config, dn: &str) -> Result<Option<&mut Client>, EngineError> {
        // (called for every directory read of an incremental cycle: the
        // connected domain is worked out once, in `new`)
        if self.conns.is_empty() {
            return Ok(None);
        }
        let Some(domain) = self.other(cfg, dn) else {
            return Ok(None);
        };
        match self.conns.get_mut(&domain) {
            None => Ok(None),
            Some(Ok(c)) => Ok(Some(c)),
            Some(Err(why)) => Err(EngineError::NeedsFull(why.clone())),
        }
    }

    /// The object the foreign security principal `sid` stands for, matching
    /// `filter`, in its trusted domain (found by the trust's SID, read by
    /// `main` from the trustedDomain objects of the connected domain).
    pub async fn principal(
        &mut self,
        main: &mut Client,
        cfg: &Config,
        sid: &str,
        filter: &str,
        attrs: &[String],
    ) -> Result<Principal, mfasync_ldap::LdapError> {
        if self.trusts.is_none() {
            self.trusts = Some(self.read_trusts(main).await?);
        }
        let domain = match (mfasync_core::sid::domain_sid(sid), self.trusts.as_ref()) {
            (Some(d), Some(t)) => match t.get(d) {
                Some(name) => name.clone(),
                None if d.starts_with("S-1-5-21-") => return Ok(Principal::UnknownDomain),
                None => return Ok(Principal::NotTrusted),
            },
            _ => return Ok(Principal::NotTrusted),
        };
        self.connect(cfg, &domain).await;
        let client = match self.conns.get_mut(&domain) {
            Some(Ok(c)) => c,
            Some(Err(why)) => {
                return Ok(Principal::Unreachable {
                    domain,
                    why: why.clone(),
                })
            }
            None => {
                return Ok(Principal::Unreachable {
                    why: format!("the domain {domain} was not connected"),
                    domain,
                })
            }
        };
        let base = client.base_dn().to_string();
        let f = format!(
            "(&{filter}(objectSid={}))",
            mfasync_core::escape::filter_value(sid)
        );
        let entries = client
            .search_all(&base, mfasync_ldap::Scope::Subtree, &f, attrs)
            .await?;
        Ok(Principal::Found { domain, entries })
    }

    /// The trusted domains (`trustPartner`) by their SID
    /// (`securityIdentifier`), from `CN=System` of the connected domain.
    async fn read_trusts(
        &self,
        main: &mut Client,
    ) -> Result<HashMap<String, String>, mfasync_ldap::LdapError> {
        let Some(domain) = self.this.as_deref() else {
            return Ok(HashMap::new());
        };
        let system = format!("CN=System,{}", mfasync_ldap::dn_of_domain(domain));
        let attrs = ["trustPartner".to_string(), "securityIdentifier".to_string()];
        let found = match main
            .search_all(
                &system,
                mfasync_ldap::Scope::OneLevel,
                "(objectClass=trustedDomain)",
                &attrs,
            )
            .await
        {
            Ok(v) => v,
            Err(mfasync_ldap::LdapError::Operation { code: 32, .. }) => Vec::new(),
            Err(e) => return Err(e),
        };
        Ok(found
            .iter()
            .filter_map(|e| {
                let sid = mfasync_core::sid::sid_text(e.first_bytes("securityIdentifier")?)?;
                let name = e.first_str("trustPartner")?.to_ascii_lowercase();
                Some((sid, name))
            })
            .collect())
    }

    /// Every domain this cycle connected to (or tried to), with the
    /// starting point taken there: `None` where none could be (unreachable,
    /// or no incremental mechanism), which makes the next cycle full.
    pub fn taken_marks(&mut self) -> Vec<(String, Option<Mark>)> {
        let mut out: Vec<(String, Option<Mark>)> = self
            .conns
            .keys()
            .filter(|d| self.needed.contains(*d))
            .map(|d| (d.clone(), self.marks.remove(d)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Unbind every connection.
    pub async fn close(self) {
        for (_, c) in self.conns {
            if let Ok(c) = c {
                c.unbind().await;
            }
        }
    }
}

/// The incremental starting point of another domain's DC, or None (logged:
/// the next cycle is then full).
async fn take_mark(client: &mut Client, cfg: &Config) -> Option<Mark> {
    let server = client.server().to_string();
    let base = client.base_dn().to_string();
    let kind = match crate::marks::supported(client, cfg) {
        Ok(kind) => kind,
        Err(why) => {
            tracing::info!(target: "mfasync::domains", "no incremental synchronization of {base}: {why}");
            return None;
        }
    };
    match crate::marks::starting_point(client, kind, &base).await {
        Ok((kind, value)) => Some((kind, server, value)),
        Err(e) => {
            tracing::warn!(target: "mfasync::domains",
                "no incremental starting point for {base} at {server}: {e:#}; the next cycle will be full too"
            );
            None
        }
    }
}

/// `item`'s domain cannot be read this cycle (`why`), or with `domain`,
/// its members from that domain (foreign security principals) cannot: its
/// stored users (of that domain) are left exactly as they are (never
/// departures), and the plan says so.
pub async fn leave_as_is(
    store: &dyn Store,
    planner: &mut Planner,
    warnings: &mut Vec<String>,
    (index, item): (usize, &SyncItem),
    domain: Option<&str>,
    why: &str,
) -> Result<(), EngineError> {
    // every stored user streamed (an item may hold most of them), its own kept
    let mut n = 0;
    let item_domain = domain_of_dn(&item.dn);
    store
        .users_each(&mut |u| {
            if u.sync_item.as_deref() != Some(item.dn.as_str()) {
                return true;
            }
            let of = u.dn.as_deref().and_then(domain_of_dn);
            let in_domain = match domain {
                None => true,
                Some(ANY_OTHER_DOMAIN) => of.is_some() && of != item_domain,
                Some(d) => of.as_deref() == Some(d),
            };
            if let (true, Some(id)) = (in_domain, u.directory_id.as_deref()) {
                planner.keep_as_is(id);
                n += 1;
            }
            true
        })
        .await?;
    warnings.push(match domain {
        None => format!(
            "sync.items[{index}] ({}) was not read: {why}; its {n} stored user(s) are left as they are",
            item.dn
        ),
        Some(ANY_OTHER_DOMAIN) => format!(
            "sync.items[{index}] ({}): some members from other domains were not read: {why}; its {n} stored user(s) of other domains are left as they are",
            item.dn
        ),
        Some(d) => format!(
            "sync.items[{index}] ({}): its members from {d} were not read: {why}; its {n} stored user(s) of {d} are left as they are",
            item.dn
        ),
    });
    Ok(())
}

/// Connect to `domain`'s DCs (DNS SRV) with its own query bind
/// (`[[directory.domains]]`) or else the query bind.
async fn connect(cfg: &Config, domain: &str) -> Result<Client, String> {
    let (bind, key) = cfg.directory.query_bind_for(domain);
    let password = crate::secrets::bind_password(bind, &key)?;
    let dir = mfasync_core::config::Directory {
        source: DirectorySource::ActiveDirectory,
        domain: domain.to_string(),
        servers: Vec::new(),
        site: String::new(),
        base_dn: mfasync_ldap::dn_of_domain(domain),
        ..cfg.directory.clone()
    };
    mfasync_ldap::connect(&dir, bind, password.as_deref())
        .await
        .map_err(|e| format!("the domain {domain} cannot be read: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mfasync_core::config::ItemKind;

    fn cfg(items: &[&str]) -> Config {
        let mut c = Config::default();
        c.sync.items = items
            .iter()
            .map(|dn| SyncItem {
                kind: ItemKind::Container,
                dn: dn.to_string(),
                include_nested: true,
                when_removed: Default::default(),
                user: Default::default(),
                id: None,
                max_departures: None,
            })
            .collect();
        c
    }

    #[test]
    fn the_domain_of_a_dn_is_its_trailing_dc_components() {
        assert_eq!(
            domain_of_dn("OU=People,DC=Other,DC=test").as_deref(),
            Some("other.test")
        );
        assert_eq!(
            domain_of_dn("cn=x, dc=emea ,dc=example,dc=com").as_deref(),
            Some("emea.example.com")
        );
        // DC= above an OU does not count; no DC= at the end: no domain.
        assert_eq!(domain_of_dn("DC=a,OU=b,DC=c,DC=d").as_deref(), Some("c.d"));
        assert_eq!(domain_of_dn("ou=people,o=example"), None);
        assert_eq!(domain_of_dn(""), None);
        assert_eq!(mfasync_ldap::dn_of_domain("other.test"), "DC=other,DC=test");
    }

    #[test]
    fn items_in_other_domains_and_child_domains_are_foreign() {
        let base = "DC=mfa,DC=test";
        let c = cfg(&[
            "OU=Sales,DC=mfa,DC=test",
            "OU=People,DC=other,DC=test",
            "CN=Staff,OU=Groups,DC=emea,DC=mfa,DC=test",
            "ou=x,o=elsewhere",
        ]);
        assert_eq!(
            foreign_items(&c, base),
            vec![
                (1, "other.test".to_string()),
                (2, "emea.mfa.test".to_string())
            ]
        );
        assert_eq!(item_domains(&c, base), ["other.test", "emea.mfa.test"]);
        assert!(!holds_group_item(&c, base, "other.test"));
        let mut g = c.clone();
        g.sync.items[1].kind = ItemKind::SecurityGroup;
        assert!(holds_group_item(&g, base, "other.test"));
        assert!(!holds_group_item(&g, base, "emea.mfa.test"));
        assert!(item_domains(&cfg(&["OU=Sales,DC=mfa,DC=test"]), base).is_empty());

        // Off without include_trusted_domains, and for source = "ldap".
        let mut off = c.clone();
        off.directory.include_trusted_domains = false;
        assert!(foreign_items(&off, base).is_empty());
        let mut ldap = c;
        ldap.directory.source = DirectorySource::Ldap;
        assert!(foreign_items(&ldap, base).is_empty());
    }
}
