//! `users explain NAME|DN`: one user read from the directory now and decided
//! step by step as a sync would (entry, user filter, username, each item in
//! order, first wins, disabled, protected), against what is stored. The
//! same resolution gives `sync --user` its one-user plan (`single.rs`).

use crate::domains::Domains;
use crate::error::{EngineError, Result, ResultExt};
use crate::incremental::Resolver;
use mfasync_core::config::{Config, ItemKind, SyncItem};
use mfasync_core::filter::{dn_is_under, normalize_dn, parent_dn, validate_dn};
use mfasync_core::mapping::{self, DirectoryUser};
use mfasync_core::plan::{self, Action, Change};
use mfasync_core::presence::{lookup_filter, Presence};
use mfasync_core::report::explain::*;
use mfasync_core::safeguard::Protection;
use mfasync_core::{Entry, MfaUser, Source};
use mfasync_ldap::{Client, Scope};
use mfasync_store::{Store, UserKey};

/// How many audit rows an explanation lists.
const AUDIT_ROWS: i64 = 10;

/// One user decided: the explanation, and the change a sync would make.
pub(crate) struct Resolved {
    pub explanation: Explanation,
    /// None: nothing to change (unchanged, not an MFA user, protected).
    pub change: Option<Change>,
    /// A stored directory user that already has the username under another
    /// directory id (a one-user sync cannot settle that; a full one can).
    pub username_taken: Option<String>,
}

/// `users explain NAME|DN`.
pub async fn explain(store: &dyn Store, cfg: &Config, query: &str) -> Result<Explanation> {
    Ok(resolve(store, cfg, query).await?.explanation)
}

/// Whether `query` names a DN rather than a username.
fn is_dn(query: &str) -> bool {
    query.contains('=') && validate_dn(query).is_ok()
}

/// Read `query`'s entry now and decide it as a sync would.
pub(crate) async fn resolve(store: &dyn Store, cfg: &Config, query: &str) -> Result<Resolved> {
    let query = query.trim();
    if query.is_empty() {
        return Err(EngineError::Other("name a user: a username or a DN".into()));
    }
    let mut client = crate::connect::connect(cfg).await?;
    let out = decide(store, cfg, &mut client, query).await;
    client.unbind().await;
    out
}

async fn decide(
    store: &dyn Store,
    cfg: &Config,
    client: &mut Client,
    query: &str,
) -> Result<Resolved> {
    let base = client.base_dn().to_string();
    let stored = stored_user(store, query).await?;
    let (found, search, looked_up) = find_entry(client, cfg, &base, query, stored.as_ref()).await?;
    let protection = crate::protected::resolve(client, cfg).await;
    let mut ex = Explanation {
        audit: Vec::new(),
        decision: Decision {
            action: "none".into(),
            item: None,
            reason: String::new(),
            step: Step::Entry,
        },
        differences: Vec::new(),
        entry: None,
        items: Vec::new(),
        protected: None,
        query: query.to_string(),
        search,
        settings: None,
        stored,
        user_filter: None,
        username: None,
        would_write: None,
    };
    let Some(entry) = found else {
        // no entry: a stored user departs if its absence is proved
        let presence = match looked_up {
            true => Presence::Deleted,
            false => Presence::Unknown,
        };
        let why = format!(
            "no directory entry found (searched {} with {})",
            ex.search.base, ex.search.filter
        );
        let change = departure(cfg, &protection, &mut ex, presence, Step::Entry, why);
        return finish(store, ex, change, None).await;
    };
    let mut domains = Domains::new(&base);
    let mut r = Resolver::new(client, &mut domains, cfg, &base, Vec::new())?;
    let filtered = r
        .read_user(&entry.dn)
        .await
        .with_context(|| format!("checking {} against filters.user", entry.dn))?;
    let matches = filtered.is_some();
    let entry = filtered.unwrap_or(entry);
    let unique_id = entry
        .first_bytes(&cfg.attributes.unique_id)
        .and_then(|raw| mapping::unique_id_text(cfg.attributes.unique_id_type, raw).ok());
    // the stored user of this entry is the one with its directory id
    if let Some(id) = &unique_id {
        ex.stored = store
            .users_by(UserKey::DirectoryId, std::slice::from_ref(id))
            .await?
            .into_iter()
            .find(|u| u.source == Source::Directory)
            .or(ex.stored.take().filter(|u| u.source == Source::Manual));
    }
    ex.entry = Some(FoundEntry {
        account_disabled: account_disabled(&entry),
        dn: entry.dn.clone(),
        unique_id,
    });
    ex.user_filter = Some(FilterCheck {
        filter: cfg.filters.user.clone(),
        matches,
    });
    if !matches {
        let why = format!(
            "{} does not match filters.user {}",
            entry.dn, cfg.filters.user
        );
        let change = departure(
            cfg,
            &protection,
            &mut ex,
            Presence::Exists,
            Step::UserFilter,
            why,
        );
        return finish(store, ex, change, None).await;
    }
    ex.username = username_source(cfg, &entry);
    let du = match mapping::map_user(&cfg.attributes, &entry) {
        Ok(du) => du,
        Err(e) => {
            // a sync leaves such a stored user as it is (it cannot be mapped)
            ex.decision = Decision {
                action: if ex.stored.is_some() {
                    "unchanged"
                } else {
                    "none"
                }
                .into(),
                item: None,
                reason: format!("{e}: a sync skips this entry and leaves its MFA user as it is"),
                step: Step::Username,
            };
            return finish(store, ex, None, None).await;
        }
    };
    let mut winner = None;
    for (i, item) in cfg.sync.items.iter().enumerate() {
        let mut v = verdict(&mut r, i, item, &entry.dn).await?;
        if v.holds && winner.is_none() {
            winner = Some((i, item));
            v.wins = true;
        }
        ex.items.push(v);
    }
    let Some((i, item)) = winner else {
        let n = cfg.sync.items.len();
        let why = format!("none of the {n} sync items holds {}", entry.dn);
        let change = departure(
            cfg,
            &protection,
            &mut ex,
            Presence::Exists,
            Step::Items,
            why,
        );
        return finish(store, ex, change, None).await;
    };
    ex.settings = Some(settings(item));
    let (change, taken) = held_by(store, &mut ex, (i, item), du).await?;
    // (said either way: protection matters the day it leaves)
    if let Some(u) = ex.stored.as_ref().or(ex.would_write.as_ref()) {
        ex.protected = protection.why(&plan::departure_change(Action::Disable, u, String::new()));
    }
    finish(store, ex, change, taken).await
}

/// The decision for an entry that item `i` holds: create, update, enable,
/// disable (AD account disabled) or unchanged; the change, and another
/// stored directory user that has the username.
async fn held_by(
    store: &dyn Store,
    ex: &mut Explanation,
    (i, item): (usize, &SyncItem),
    du: DirectoryUser,
) -> Result<(Option<Change>, Option<String>)> {
    let disabled = du.account_disabled;
    let would = mapping::apply_item(&du, item);
    ex.would_write = Some(would.clone());
    let holder = format!(
        "sync.items[{i}] ({}) holds it, the first item that does",
        item.dn
    );
    let same_name = store
        .users_by(UserKey::UsernameLower, &[would.username.to_lowercase()])
        .await?;
    if let Some(m) = same_name.iter().find(|u| u.source == Source::Manual) {
        ex.decision = Decision {
            action: "none".into(),
            item: Some(i),
            reason: format!(
                "{holder}, but the manual MFA user {} has the username: a sync skips it",
                m.username
            ),
            step: Step::ManualUser,
        };
        return Ok((None, None));
    }
    let taken = same_name
        .iter()
        .filter(|u| u.directory_id != would.directory_id)
        .find_map(|u| u.directory_id.clone());
    let (action, change) = match &ex.stored {
        None => (
            Action::Create.as_str().to_string(),
            Some(Change {
                action: Action::Create,
                user: would,
                before: None,
                fields: vec![],
                reason: None,
                raw: None,
            }),
        ),
        Some(cur) => {
            ex.differences = differences(cur, &would);
            match plan::modify(would, cur) {
                None => ("unchanged".to_string(), None),
                Some(c) => (c.action.as_str().to_string(), Some(c)),
            }
        }
    };
    let (step, note) = match disabled {
        true => (
            Step::AccountDisabled,
            "; the account is disabled in the directory, so the MFA user is disabled",
        ),
        false => (Step::Item, ""),
    };
    ex.decision = Decision {
        action,
        item: Some(i),
        reason: format!("{holder}{note}"),
        step,
    };
    Ok((change, taken))
}

/// The decision for a stored user that no item holds (or whose entry is
/// gone): the departure every cycle decides, unless protected.
fn departure(
    cfg: &Config,
    protection: &Protection,
    ex: &mut Explanation,
    presence: Presence,
    step: Step,
    why: String,
) -> Option<Change> {
    let Some(cur) = ex.stored.clone().filter(|u| u.source == Source::Directory) else {
        let manual = ex.stored.is_some();
        ex.decision = Decision {
            action: if manual { "unchanged" } else { "none" }.into(),
            item: None,
            reason: match manual {
                true => format!("{why}; the MFA user is manual: a sync never touches it"),
                false => format!("{why}; no MFA user is stored or made"),
            },
            step,
        };
        return None;
    };
    let when_removed = |dn: &str| {
        cfg.sync
            .items
            .iter()
            .find(|i| i.dn == dn)
            .map(|i| i.when_removed)
    };
    let (action, reason) = plan::departure(
        cur.enabled,
        cur.sync_item.as_deref().unwrap_or_default(),
        presence,
        cfg.sync.remove_deleted_users,
        &when_removed,
    );
    let change = action.map(|a| plan::departure_change(a, &cur, reason.clone()));
    let guarded = change.as_ref().and_then(|c| protection.why(c));
    let probe = plan::departure_change(Action::Disable, &cur, String::new());
    ex.protected = guarded.clone().or_else(|| protection.why(&probe));
    let unchanged = |reason: String| Decision {
        action: "unchanged".into(),
        item: None,
        reason,
        step,
    };
    ex.decision = match (&change, guarded) {
        (Some(_), Some(p)) => Decision {
            step: Step::Protected,
            ..unchanged(format!("{why}; it would depart, but {p}"))
        },
        (Some(c), None) => Decision {
            action: c.action.as_str().into(),
            ..unchanged(format!("{why}: {reason}"))
        },
        (None, _) if presence == Presence::Unknown => unchanged(format!(
            "{why}; its absence is not proved, so it is left as it is"
        )),
        (None, _) => unchanged(format!(
            "{why}; it is already as a departure leaves it, or its item keeps it"
        )),
    };
    change.filter(|_| ex.decision.step != Step::Protected)
}

/// The user's last audit rows added; the decision handed back.
async fn finish(
    store: &dyn Store,
    mut ex: Explanation,
    change: Option<Change>,
    username_taken: Option<String>,
) -> Result<Resolved> {
    let (name, id) = match (&ex.would_write, &ex.stored) {
        (Some(u), _) | (None, Some(u)) => (u.username.clone(), u.directory_id.clone()),
        (None, None) => (ex.query.clone(), None),
    };
    let rows = store.user_audit(&name, id.as_deref(), AUDIT_ROWS).await?;
    ex.audit = rows
        .into_iter()
        .map(|r| AuditLine {
            action: r.action,
            actor: r.actor,
            at: r.at,
            detail: r.detail,
        })
        .collect();
    Ok(Resolved {
        explanation: ex,
        change,
        username_taken,
    })
}

/// The stored MFA user the query names: by DN, else by username.
async fn stored_user(store: &dyn Store, query: &str) -> Result<Option<MfaUser>> {
    let (key, value) = match is_dn(query) {
        true => (UserKey::Dn, query.to_string()),
        false => (UserKey::UsernameLower, query.to_lowercase()),
    };
    Ok(store.users_by(key, &[value]).await?.into_iter().next())
}

/// The entry `query` names, where it was looked for, and whether its
/// absence is proved (a stored user's unique id looked up and not found).
async fn find_entry(
    client: &mut Client,
    cfg: &Config,
    base: &str,
    query: &str,
    stored: Option<&MfaUser>,
) -> Result<(Option<Entry>, Search, bool)> {
    let attrs = cfg.attributes.user_attributes();
    let a = &cfg.attributes;
    if is_dn(query) {
        let search = Search {
            base: query.to_string(),
            filter: "(objectClass=*)".into(),
            scope: "base".into(),
        };
        let found = match client
            .search_all(query, Scope::Base, &search.filter, &attrs)
            .await
        {
            Ok(mut v) => v.pop(),
            Err(mfasync_ldap::LdapError::Operation { code: 32, .. }) => None,
            Err(e) => return Err(EngineError::from(e).context(format!("reading {query}"))),
        };
        return Ok((found, search, false));
    }
    // a stored directory user is found by its unique id (renamed or moved too)
    let id = stored
        .filter(|u| u.source == Source::Directory)
        .and_then(|u| u.directory_id.as_deref().map(|id| (id, u.dn.as_deref())));
    if let Some((id, dn)) = id {
        let nc = dn
            .and_then(|dn| crate::lookup::holding_context(client, dn))
            .or_else(|| crate::lookup::holding_context(client, base))
            .unwrap_or_else(|| base.to_string());
        if let Some(filter) = lookup_filter(&a.unique_id, a.unique_id_type, &[id]) {
            let found = client
                .search_all(&nc, Scope::Subtree, &filter, &attrs)
                .await
                .with_context(|| format!("looking {query} up by {} under {nc}", a.unique_id))?;
            let search = Search {
                base: nc,
                filter,
                scope: "subtree".into(),
            };
            return Ok((found.into_iter().next(), search, true));
        }
    }
    let value = mfasync_core::escape::filter_value(query);
    let parts: String = a
        .username
        .0
        .iter()
        .map(|attr| format!("({attr}={value})"))
        .collect();
    let filter = format!("(|{parts})");
    let found = client
        .search_all(base, Scope::Subtree, &filter, &attrs)
        .await
        .with_context(|| format!("searching {query} under {base}"))?;
    let search = Search {
        base: base.to_string(),
        filter,
        scope: "subtree".into(),
    };
    Ok((found.into_iter().next(), search, false))
}

/// AD userAccountControl's ACCOUNTDISABLE bit.
fn account_disabled(e: &Entry) -> bool {
    e.first_str("useraccountcontrol")
        .and_then(|v| v.parse::<i64>().ok())
        .is_some_and(|v| v & 2 != 0)
}

/// The username and the attribute it came from (the first with a value).
fn username_source(cfg: &Config, e: &Entry) -> Option<UsernameSource> {
    cfg.attributes
        .username
        .0
        .iter()
        .enumerate()
        .find_map(|(i, attr)| {
            e.first_str(attr).map(|value| UsernameSource {
                attribute: attr.clone(),
                kind: if i == 0 { "primary" } else { "backup" }.into(),
                value,
            })
        })
}

/// Whether item `i` holds `dn`, and how.
async fn verdict(r: &mut Resolver<'_>, i: usize, item: &SyncItem, dn: &str) -> Result<ItemVerdict> {
    let (n, item_n) = (normalize_dn(dn), normalize_dn(&item.dn));
    let (holds, how, via) = match item.kind {
        ItemKind::Container => {
            let under = dn_is_under(&n, &item_n) && n != item_n;
            let direct = parent_dn(&n) == item_n;
            match (under, direct, item.include_nested) {
                (_, true, _) => (true, "directly in the container".to_string(), Vec::new()),
                (true, false, true) => (
                    true,
                    "in a container below it (nested containers included)".to_string(),
                    Vec::new(),
                ),
                (true, false, false) => (
                    false,
                    "in a container below it, but include_nested is off".to_string(),
                    Vec::new(),
                ),
                (false, _, _) => (false, "not under the container".to_string(), Vec::new()),
            }
        }
        ItemKind::SecurityGroup => {
            let path = r
                .group_path(&item.dn, dn)
                .await
                .with_context(|| format!("sync.items[{i}] ({})", item.dn))?;
            match path {
                None => (
                    false,
                    "not a member (directly or through nested groups)".to_string(),
                    Vec::new(),
                ),
                Some(via) if via.is_empty() => (true, "a direct member".to_string(), via),
                Some(via) if item.include_nested => (
                    true,
                    format!("a member through the nested group {}", via.join(" → ")),
                    via,
                ),
                Some(via) => (
                    false,
                    format!(
                        "a member only through the nested group {}, but include_nested is off",
                        via.join(" → ")
                    ),
                    via,
                ),
            }
        }
    };
    Ok(ItemVerdict {
        dn: item.dn.clone(),
        holds,
        how,
        include_nested: item.include_nested,
        index: i,
        kind: match item.kind {
            ItemKind::Container => "container",
            ItemKind::SecurityGroup => "security-group",
        }
        .into(),
        via,
        wins: false,
    })
}

/// The MFA settings an item gives (its `user` table).
fn settings(item: &SyncItem) -> ItemSettings {
    let s = &item.user;
    ItemSettings {
        backup_phone: s.backup_phone.map(|p| p.as_str().to_string()),
        country_code: s.country_code.clone(),
        enabled: s.enabled,
        language: s.language.clone(),
        method: s.method.as_str().to_string(),
        phone: s.phone.as_str().to_string(),
        welcome_email: s.welcome_email,
    }
}

/// The fields whose stored value differs from what a sync would write.
fn differences(stored: &MfaUser, would: &MfaUser) -> Vec<FieldDifference> {
    let mut out = Vec::new();
    if stored.username != would.username {
        out.push(FieldDifference {
            field: "username".into(),
            stored: Some(stored.username.clone()),
            would_write: Some(would.username.clone()),
        });
    }
    for ((name, a), (_, b)) in stored.text_fields().iter().zip(would.text_fields().iter()) {
        if a != b {
            out.push(FieldDifference {
                field: name.to_string(),
                stored: (*a).clone(),
                would_write: (*b).clone(),
            });
        }
    }
    if stored.enabled != would.enabled {
        out.push(FieldDifference {
            field: "enabled".into(),
            stored: Some(stored.enabled.to_string()),
            would_write: Some(would.enabled.to_string()),
        });
    }
    out
}
