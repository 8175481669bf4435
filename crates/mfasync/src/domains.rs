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
//! * the bind is the query bind (`directory.query_bind`). With the `windows`
//!   (Kerberos) bind this domain's account takes a cross-realm ticket for
//!   `ldap/<DC>` of the other domain, which works across a forest or external
//!   trust. A simple bind of this domain's account at another domain's DC
//!   only works where that DC passes the password on to this domain (Samba
//!   4.17 DCs refuse it); there are no per-domain credentials;
//! * one connection per domain per cycle.
//!
//! A domain whose DCs cannot be found or reached, or which refuses the bind,
//! does not stop the cycle: the stored users of its items are left exactly as
//! they are (never a departure), the other items are synchronized, and the
//! plan carries a warning naming the domain and why.
//!
//! Full cycles only: every cycle with such an item reads it in full (there
//! is one watermark, the connected domain's; see [`full_only`]).

use std::collections::HashMap;

use mfasync_core::config::{Config, DirectorySource, SyncItem};
use mfasync_core::filter::normalize_dn;
use mfasync_core::plan::Planner;
use mfasync_ldap::Client;
use mfasync_store::{Store, UserKey};

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

/// Whether items in other domains are read from those domains' DCs.
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

/// Why a cycle must be full: some item is in another domain (its changes are
/// not in this domain's DirSync/uSNChanged watermark).
pub fn full_only(cfg: &Config, base: &str) -> Option<String> {
    let items = foreign_items(cfg, base);
    let (i, d) = items.first()?;
    Some(format!(
        "sync.items[{i}] is in the domain {d}, which is read by full cycles only ({} item(s) in other domains)",
        items.len()
    ))
}

/// Connections to the other domains of one cycle.
pub struct Domains {
    base: String,
    conns: HashMap<String, Result<Client, String>>,
}

impl Domains {
    /// For a cycle connected to the domain of naming context `base`.
    pub fn new(base: &str) -> Domains {
        Domains {
            base: base.to_string(),
            conns: HashMap::new(),
        }
    }

    /// The connection for `item`: `Ok(None)` when it is in the connected
    /// domain; `Err(why)` when its domain cannot be read this cycle (the
    /// message names the domain; asked again, the same answer, no retry).
    pub async fn client_for(
        &mut self,
        cfg: &Config,
        item: &SyncItem,
    ) -> Result<Option<&mut Client>, String> {
        let Some(domain) = foreign_domain(cfg, &self.base, &item.dn) else {
            return Ok(None);
        };
        if !self.conns.contains_key(&domain) {
            // A failure is reported once, as the plan's warning (see leave_as_is).
            let c = connect(cfg, &domain).await;
            self.conns.insert(domain.clone(), c);
        }
        match self.conns.get_mut(&domain) {
            Some(Ok(c)) => Ok(Some(c)),
            Some(Err(why)) => Err(why.clone()),
            None => Err(format!("the domain {domain} was not connected")),
        }
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

/// `item`'s domain cannot be read this cycle (`why`): its stored users are
/// left exactly as they are (never departures), and the plan says so.
pub async fn leave_as_is(
    store: &dyn Store,
    planner: &mut Planner,
    warnings: &mut Vec<String>,
    index: usize,
    item: &SyncItem,
    why: &str,
) -> anyhow::Result<()> {
    let stored = store
        .users_by(UserKey::SyncItem, std::slice::from_ref(&item.dn))
        .await?;
    let mut n = 0;
    for id in stored.iter().filter_map(|u| u.directory_id.as_deref()) {
        planner.keep_as_is(id);
        n += 1;
    }
    warnings.push(format!(
        "sync.items[{index}] ({}) was not read: {why}; its {n} stored user(s) are left as they are",
        item.dn
    ));
    Ok(())
}

/// Connect to `domain`'s DCs (DNS SRV) with the query bind.
async fn connect(cfg: &Config, domain: &str) -> Result<Client, String> {
    let password =
        crate::secrets::bind_password(&cfg.directory.query_bind, "directory.query_bind")?;
    let dir = mfasync_core::config::Directory {
        source: DirectorySource::ActiveDirectory,
        domain: domain.to_string(),
        servers: Vec::new(),
        site: String::new(),
        base_dn: mfasync_ldap::dn_of_domain(domain),
        ..cfg.directory.clone()
    };
    mfasync_ldap::connect(&dir, &cfg.directory.query_bind, password.as_deref())
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
        assert!(full_only(&c, base)
            .unwrap()
            .starts_with("sync.items[1] is in the domain other.test"));
        assert_eq!(full_only(&cfg(&["OU=Sales,DC=mfa,DC=test"]), base), None);

        // Off without include_trusted_domains, and for source = "ldap".
        let mut off = c.clone();
        off.directory.include_trusted_domains = false;
        assert!(foreign_items(&off, base).is_empty());
        let mut ldap = c;
        ldap.directory.source = DirectorySource::Ldap;
        assert!(foreign_items(&ldap, base).is_empty());
    }
}
