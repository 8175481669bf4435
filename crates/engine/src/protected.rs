//! Protected users (`sync.protected`): the usernames listed, and the members
//! (nested included) of the groups listed by DN, read from the directory at
//! the start of each cycle with the sync items' membership code. A group that
//! cannot be read makes the protection unknown: no departure is made then.

use crate::{Result, ResultExt};
use mfasync_core::config::{Config, ItemKind, SyncItem};
use mfasync_core::safeguard::{is_group_entry, Protection};
use mfasync_ldap::Client;

use crate::members::{group_members, Snapshot};

/// Who `cfg` protects, as the directory says now.
pub(crate) async fn resolve(client: &mut Client, cfg: &Config) -> Protection {
    let mut protection = Protection::of_names(&cfg.sync.protected);
    for group in cfg.sync.protected.iter().filter(|p| is_group_entry(p)) {
        match members_of(client, cfg, group).await {
            Ok(found) => found
                .iter()
                .for_each(|(dn, id)| protection.add_member(dn, id.as_deref(), group)),
            Err(e) => {
                let why = format!("{e:#}");
                tracing::warn!(target: "mfasync::approvals",
                    "{why}: no user is disabled or removed this cycle");
                return Protection::Unreadable(why);
            }
        }
    }
    protection
}

/// The users in `group`, nested groups followed: (normalised DN, unique id).
async fn members_of(
    client: &mut Client,
    cfg: &Config,
    group: &str,
) -> Result<Vec<(String, Option<String>)>> {
    let item = SyncItem {
        kind: ItemKind::SecurityGroup,
        dn: group.to_string(),
        include_nested: true,
        when_removed: Default::default(),
        user: Default::default(),
        id: None,
        max_departures: None,
    };
    let mut snap = Snapshot {
        users: Default::default(),
        unmapped: Vec::new(),
    };
    let attrs = cfg.attributes.user_attributes();
    let (members, _) = group_members(client, cfg, &item, &attrs, &mut snap, None)
        .await
        .with_context(|| format!("cannot read the protected group {group} (sync.protected)"))?;
    let id_of = |dn: &String| snap.users.get(dn).and_then(|p| p.directory_id());
    Ok(members.iter().map(|dn| (dn.clone(), id_of(dn))).collect())
}
