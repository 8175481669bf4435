//! Sync items that follow renames. Each item keeps the unique id
//! (`attributes.unique_id`) of its OU or group in the configuration
//! (`[[sync.items]] id`, filled in by the first cycle that finds the item);
//! an item whose DN no longer exists (its OU or group was renamed or moved)
//! is found again by that id, used under its new DN, and the configuration
//! is stored again as a new, audited version. An item found neither way
//! stops the cycle with nothing changed.

use crate::error::{EngineError, Result, ResultExt};
use mfasync_core::config::Config;
use mfasync_core::mapping;
use mfasync_core::presence::lookup_filter;
use mfasync_ldap::{Client, Scope};
use mfasync_store::Store;

/// What a cycle learnt about one item: its id, and its new DN when it
/// was found by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Learnt {
    pub index: usize,
    pub moved_to: Option<String>,
    pub id: String,
}

/// The items as the directory has them now.
#[derive(Default)]
pub struct Followed {
    /// The configuration to run this cycle with, when an item changed.
    pub cfg: Option<Config>,
    /// One line per item found under a new DN (and whether that was
    /// stored): for the log, the run's history note and the output.
    pub notes: Vec<String>,
}

/// Find every item of the connected domain at its DN, else by its id;
/// store what changed (unless `plan_only`). An item that cannot be found
/// is an error (the cycle stops, nothing changed).
pub async fn follow(
    store: &dyn Store,
    client: &mut Client,
    cfg: &Config,
    plan_only: bool,
) -> Result<Followed> {
    let learnt = find(client, cfg, true).await?;
    if learnt.is_empty() {
        return Ok(Followed::default());
    }
    let mut next = cfg.clone();
    let mut moves = Vec::new();
    for l in &learnt {
        let item = &mut next.sync.items[l.index];
        if let Some(dn) = &l.moved_to {
            moves.push(format!(
                "sync item {} ({}) was renamed or moved: found by its {} {} at {dn}",
                l.index + 1,
                item.dn,
                cfg.attributes.unique_id,
                l.id
            ));
            item.dn = dn.clone();
        }
        item.id = Some(l.id.clone());
    }
    let detail = match moves.is_empty() {
        true => "unique ids of sync items recorded by the sync".to_string(),
        false => moves.join("; "),
    };
    let stored = if plan_only {
        Err("plan only".to_string())
    } else {
        store_version(store, cfg, &learnt, &detail).await
    };
    let notes = match &stored {
        Ok(v) if moves.is_empty() => {
            tracing::info!(target: "mfasync::items", "configuration version {v}: {detail}");
            Vec::new()
        }
        Ok(v) => moves
            .into_iter()
            .map(|m| format!("{m}; its DN is updated in configuration version {v}"))
            .collect(),
        Err(why) => {
            if !moves.is_empty() || !plan_only {
                tracing::warn!(target: "mfasync::items",
                    "the sync items' ids and DNs found in the directory are used by this cycle but not stored ({why})"
                );
            }
            moves
                .into_iter()
                .map(|m| {
                    format!("{m}; used by this cycle, the configuration is not updated ({why})")
                })
                .collect()
        }
    };
    for n in &notes {
        tracing::warn!(target: "mfasync::items", "{n}");
    }
    Ok(Followed {
        cfg: Some(next),
        notes,
    })
}

/// The configuration text to store with each item's id filled in (or
/// corrected: the DN decides) from the directory, when it can be reached;
/// else the text as it is and why (the next cycle fills them in). An item
/// not found at its DN is left as it is (the next cycle says so).
pub async fn ids_for_store(cfg: &Config, text: &str) -> (String, Option<String>) {
    let later =
        "the sync items' unique ids are not recorded now, the next synchronization records them";
    if cfg.sync.items.is_empty() {
        return (text.to_string(), None);
    }
    let mut client = match crate::connect::connect(cfg).await {
        Ok(c) => c,
        Err(e) => return (text.to_string(), Some(format!("{e:#}; {later}"))),
    };
    let found = find(&mut client, cfg, false).await;
    client.unbind().await;
    let learnt = match found {
        Ok(l) => l,
        Err(e) => return (text.to_string(), Some(format!("{e:#}; {later}"))),
    };
    if learnt.is_empty() {
        return (text.to_string(), None);
    }
    match edit_items(text, &learnt) {
        Ok(t) => (t, None),
        Err(e) => (text.to_string(), Some(format!("{e}; {later}"))),
    }
}

/// Read each item of the connected domain at its DN (its id: filled in or
/// corrected, the DN decides), else (`follow_missing`) look it up by its
/// stored id.
async fn find(client: &mut Client, cfg: &Config, follow_missing: bool) -> Result<Vec<Learnt>> {
    let base = client.base_dn().to_string();
    let a = &cfg.attributes;
    let attrs = [a.unique_id.clone()];
    let mut out = Vec::new();
    for (index, item) in cfg.sync.items.iter().enumerate() {
        if crate::domains::foreign_domain(cfg, &base, &item.dn).is_some() {
            continue; // read from its own domain's DCs (domains.rs)
        }
        let key = || format!("sync.items[{index}] ({})", item.dn);
        let stored = item.id.as_deref().map(str::trim).filter(|s| !s.is_empty());
        match client.read(&item.dn, &attrs).await.with_context(key)? {
            Some(e) => {
                let id = e
                    .first_bytes(&a.unique_id)
                    .and_then(|raw| mapping::unique_id_text(a.unique_id_type, raw).ok());
                if let Some(id) = id {
                    if !stored.is_some_and(|s| s.eq_ignore_ascii_case(&id)) {
                        out.push(Learnt {
                            index,
                            moved_to: None,
                            id,
                        });
                    }
                }
            }
            None if !follow_missing => {}
            None => {
                let Some(id) = stored else {
                    let e = format!("{} does not exist in the directory", item.dn);
                    return Err(EngineError::Other(e).context(key()));
                };
                match by_id(client, cfg, &base, &item.dn, id)
                    .await
                    .with_context(key)?
                {
                    Some(dn) => out.push(Learnt {
                        index,
                        moved_to: Some(dn),
                        id: id.to_string(),
                    }),
                    None => {
                        return Err(EngineError::Other(format!(
                            "{} does not exist in the directory, and no entry has its {} {id} (deleted?)",
                            item.dn,
                            a.unique_id
                        ))
                        .context(key()))
                    }
                }
            }
        }
    }
    Ok(out)
}

/// The DN of the one entry with unique id `id`, searched (subtree, the id
/// assertion only: `core::presence::lookup_filter`) from the naming context
/// that held `old_dn`.
async fn by_id(
    client: &mut Client,
    cfg: &Config,
    base: &str,
    old_dn: &str,
    id: &str,
) -> Result<Option<String>> {
    let a = &cfg.attributes;
    let nc = crate::lookup::holding_context(client, old_dn)
        .or_else(|| crate::lookup::holding_context(client, base))
        .ok_or_else(|| {
            EngineError::Other(format!(
                "no naming context of {} holds {old_dn}",
                client.server()
            ))
        })?;
    let Some(filter) = lookup_filter(&a.unique_id, a.unique_id_type, &[id]) else {
        return Err(EngineError::Other(format!(
            "its id {id:?} cannot be searched for as {}",
            a.unique_id
        )));
    };
    let found = client
        .search_all(
            &nc,
            Scope::Subtree,
            &filter,
            std::slice::from_ref(&a.unique_id),
        )
        .await
        .with_context(|| format!("looking it up by {} in {nc}", a.unique_id))?;
    match found.as_slice() {
        [] => Ok(None),
        [e] => Ok(Some(e.dn.clone())),
        _ => Err(EngineError::Other(format!(
            "{} entries have its {} {id}: cannot tell which one it is",
            found.len(),
            a.unique_id
        ))),
    }
}

/// Store the active configuration again with what was learnt, only if it
/// is the one this cycle runs with and still active (never over an edit
/// made meanwhile). Returns the new version, or why nothing was stored.
async fn store_version(
    store: &dyn Store,
    cfg: &Config,
    learnt: &[Learnt],
    detail: &str,
) -> std::result::Result<i64, String> {
    let active = store
        .active_config()
        .await
        .map_err(|e| e.to_string())?
        .ok_or("no configuration is stored")?;
    if mfasync_core::config::parse(&active.toml).ok().as_ref() != Some(cfg) {
        return Err(format!(
            "this cycle does not run with the active configuration version {}",
            active.version
        ));
    }
    let text = edit_items(&active.toml, learnt)?;
    if let Err(errs) = mfasync_core::config::parse(&text) {
        let errs: Vec<String> = errs.iter().map(ToString::to_string).collect();
        return Err(format!(
            "the updated configuration does not validate: {}",
            errs.join("; ")
        ));
    }
    store
        .put_config_if_active(&text, active.version, "sync", detail)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            format!(
                "configuration version {} is no longer the active one",
                active.version
            )
        })
}

/// The configuration text with each learnt item's `id` (and `dn` when it
/// moved) set in place: comments, layout and sealed passwords are kept.
/// Items may be `[[sync.items]]` tables or an inline array.
pub fn edit_items(text: &str, learnt: &[Learnt]) -> std::result::Result<String, String> {
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e| format!("the stored configuration is not TOML: {e}"))?;
    let items = doc
        .get_mut("sync")
        .and_then(|s| s.get_mut("items"))
        .ok_or("the stored configuration has no sync.items")?;
    for l in learnt {
        let missing = || format!("the stored configuration has no sync.items[{}]", l.index);
        let table: &mut dyn toml_edit::TableLike = match items {
            toml_edit::Item::ArrayOfTables(a) => a.get_mut(l.index).ok_or_else(missing)?,
            toml_edit::Item::Value(toml_edit::Value::Array(a)) => a
                .get_mut(l.index)
                .and_then(toml_edit::Value::as_inline_table_mut)
                .ok_or_else(missing)?,
            _ => return Err("sync.items is not a list of tables".into()),
        };
        if let Some(dn) = &l.moved_to {
            table.insert("dn", toml_edit::value(dn.as_str()));
        }
        table.insert("id", toml_edit::value(l.id.as_str()));
    }
    Ok(doc.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# ours
[directory]
base_dn = "dc=x"   # kept

[[sync.items]]
kind = "container"
dn = "ou=Old,dc=x"
[sync.items.user]
method = "text-message"

[[sync.items]]
dn = "ou=B,dc=x"
"#;

    #[test]
    fn a_moved_item_gets_its_new_dn_and_id_and_the_rest_is_kept() {
        let learnt = [
            Learnt {
                index: 0,
                moved_to: Some("ou=New,dc=x".into()),
                id: "id-a".into(),
            },
            Learnt {
                index: 1,
                moved_to: None,
                id: "id-b".into(),
            },
        ];
        let out = edit_items(TEXT, &learnt).unwrap_or_else(|e| panic!("{e}"));
        assert!(out.starts_with("# ours\n"), "{out}");
        assert!(out.contains(r#"base_dn = "dc=x"   # kept"#), "{out}");
        let cfg = mfasync_core::config::parse(&out).unwrap_or_default();
        assert_eq!(cfg.sync.items.len(), 2, "{out}");
        assert_eq!(cfg.sync.items[0].dn, "ou=New,dc=x");
        assert_eq!(cfg.sync.items[0].id.as_deref(), Some("id-a"));
        assert_eq!(cfg.sync.items[1].dn, "ou=B,dc=x");
        assert_eq!(cfg.sync.items[1].id.as_deref(), Some("id-b"));
        assert_eq!(
            cfg.sync.items[0].user.method,
            mfasync_core::config::Method::TextMessage
        );
    }

    #[test]
    fn inline_items_are_edited_and_a_missing_item_is_refused() {
        let text = "[sync]\nitems = [{ dn = \"ou=A,dc=x\" }]\n";
        let learnt = [Learnt {
            index: 0,
            moved_to: Some("ou=Z,dc=x".into()),
            id: "i".into(),
        }];
        let out = edit_items(text, &learnt).unwrap_or_else(|e| panic!("{e}"));
        let cfg = mfasync_core::config::parse(&out).unwrap_or_default();
        assert_eq!(cfg.sync.items[0].dn, "ou=Z,dc=x", "{out}");
        assert_eq!(cfg.sync.items[0].id.as_deref(), Some("i"));
        let far = [Learnt {
            index: 3,
            ..learnt[0].clone()
        }];
        assert!(edit_items(text, &far).is_err());
        assert!(edit_items("x = 1\n", &learnt).is_err());
    }
}
