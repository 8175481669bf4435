//! Stored users that a cycle did not meet, looked up by unique id: still an
//! entry of the directory (anywhere in the naming context that held them,
//! whatever the user filter says) or proved deleted (the search found
//! nothing). A failed search proves nothing: those users stay unknown.

use mfasync_core::filter::{dn_is_under, normalize_dn};
use mfasync_core::mapping;
use mfasync_core::presence::{lookup_filter, LOOKUP_BATCH};
use mfasync_core::Config;
use mfasync_ldap::{Client, Scope};
use std::collections::{BTreeMap, HashSet};

/// What the directory said about the users looked up.
#[derive(Debug, Default)]
pub struct Looked {
    /// Ids found: the users still exist.
    pub found: HashSet<String>,
    /// Ids the directory has no entry for: deleted.
    pub deleted: HashSet<String>,
    /// Ids not decided (the search failed, no naming context holds the
    /// user), with why: those users are left as they are this cycle.
    pub unknown: Vec<(String, String)>,
}

/// The naming context of `client`'s server that holds `dn` (the most
/// specific one of the RootDSE's namingContexts and defaultNamingContext).
pub fn holding_context(client: &Client, dn: &str) -> Option<String> {
    let caps = client.capabilities();
    let n = normalize_dn(dn);
    caps.naming_contexts
        .iter()
        .chain(caps.default_naming_context.iter())
        .filter(|nc| !nc.is_empty() && dn_is_under(&n, &normalize_dn(nc)))
        .max_by_key(|nc| nc.len())
        .cloned()
}

/// Look up `users` (unique id, stored DN) by unique id, batches of
/// [`LOOKUP_BATCH`] per search, each from the naming context that holds the
/// user's stored DN (else the one holding `base`): a subtree search with
/// only the id assertion, so a user moved out of the base DN or filtered
/// out is found.
pub async fn by_unique_id(
    client: &mut Client,
    cfg: &Config,
    base: &str,
    users: &[(String, Option<String>)],
) -> Looked {
    let mut out = Looked::default();
    let mut by_context: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for (id, dn) in users {
        let nc = dn
            .as_deref()
            .and_then(|dn| holding_context(client, dn))
            .or_else(|| holding_context(client, base));
        match nc {
            Some(nc) => by_context.entry(nc).or_default().push(id),
            None => out.unknown.push((
                id.clone(),
                format!(
                    "no naming context of {} holds {}",
                    client.server(),
                    dn.as_deref().unwrap_or(base)
                ),
            )),
        }
    }
    let a = &cfg.attributes;
    let attrs = [a.unique_id.clone()];
    for (nc, ids) in by_context {
        for batch in ids.chunks(LOOKUP_BATCH) {
            let Some(filter) = lookup_filter(&a.unique_id, a.unique_id_type, batch) else {
                continue;
            };
            match client
                .search_all(&nc, Scope::Subtree, &filter, &attrs)
                .await
            {
                Ok(entries) => {
                    let seen: HashSet<String> = entries
                        .iter()
                        .filter_map(|e| e.first_bytes(&a.unique_id))
                        .filter_map(|raw| mapping::unique_id_text(a.unique_id_type, raw).ok())
                        .collect();
                    for id in batch {
                        // (an id is compared as stored; GUID text is lower-case both ways)
                        if seen.contains(*id) || seen.iter().any(|s| s.eq_ignore_ascii_case(id)) {
                            out.found.insert(id.to_string());
                        } else {
                            out.deleted.insert(id.to_string());
                        }
                    }
                }
                Err(e) => {
                    let why = format!("looking users up by {} in {nc} failed: {e}", a.unique_id);
                    out.unknown
                        .extend(batch.iter().map(|id| (id.to_string(), why.clone())));
                }
            }
        }
    }
    out
}

/// One warning per distinct reason of `unknown`, with how many users it left as they are.
pub fn unknown_warnings(unknown: &[(String, String)]) -> Vec<String> {
    let mut by_why: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, why) in unknown {
        *by_why.entry(why).or_default() += 1;
    }
    by_why
        .into_iter()
        .map(|(why, n)| {
            format!(
                "{why}; {n} stored user(s) that no item holds now are left as they are (an unproved absence is never a deletion)"
            )
        })
        .collect()
}
