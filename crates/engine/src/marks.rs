//! Starting points of incremental cycles, below both cycles: which mechanism
//! the directory offers (`supported`: DirSync, syncrepl or uSNChanged), and
//! the starting point a full cycle takes before it reads (`starting_point`),
//! for the connected domain and each other domain (`domains`).

use crate::error::{EngineError, Result, ResultExt};
use mfasync_core::config::{ChangeTracking, Config, UniqueIdType};
use mfasync_core::filter::{dn_is_under, normalize_dn};
use mfasync_core::Entry;
use mfasync_ldap::{Client, Scope};
use mfasync_store::MarkKind;

/// Which incremental mechanism a watermark belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    SyncRepl,
    DirSync,
    /// uSNChanged polling on one Active Directory DC (plus Show Deleted).
    Usn,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::SyncRepl => "syncrepl",
            Kind::DirSync => "dirsync",
            Kind::Usn => "usn",
        }
    }

    /// The mechanism a stored starting point belongs to (none for a full
    /// sync's mark, a domain read without one or an unknown stored kind).
    pub fn of(mark: MarkKind) -> Option<Kind> {
        match mark {
            MarkKind::SyncRepl => Some(Kind::SyncRepl),
            MarkKind::DirSync => Some(Kind::DirSync),
            MarkKind::Usn => Some(Kind::Usn),
            MarkKind::Full | MarkKind::None => None,
        }
    }

    /// How a starting point of this mechanism is stored.
    pub fn mark(self) -> MarkKind {
        match self {
            Kind::SyncRepl => MarkKind::SyncRepl,
            Kind::DirSync => MarkKind::DirSync,
            Kind::Usn => MarkKind::Usn,
        }
    }

    /// The mechanism to continue a stored watermark of kind `stored` with,
    /// when the directory offers `self`: the same one, or uSNChanged polling
    /// on a DC that offers DirSync (the full sync found DirSync refused).
    pub fn resume(self, stored: MarkKind) -> Option<Kind> {
        match (self, Kind::of(stored)?) {
            (a, b) if a == b => Some(a),
            (Kind::DirSync, Kind::Usn) => Some(Kind::Usn),
            _ => None,
        }
    }
}

/// The incremental mechanism this directory and configuration allow, or why none.
///
/// Deleted entries are reported by their entryUUID (syncrepl) or objectGUID
/// (DirSync tombstones) only, so the unique identifier must be that attribute.
pub fn supported(client: &Client, cfg: &Config) -> std::result::Result<Kind, String> {
    let caps = client.capabilities();
    let uid = cfg.attributes.unique_id.to_ascii_lowercase();
    if cfg.sync.change_tracking == ChangeTracking::Usn {
        if !caps.usn || caps.vendor != mfasync_ldap::Vendor::ActiveDirectory {
            return Err(format!(
                "sync.change_tracking = \"usn\" needs an Active Directory DC (highestCommittedUSN); {} is not one",
                client.server()
            ));
        }
        if uid == "objectguid" && cfg.attributes.unique_id_type == UniqueIdType::Guid {
            return Ok(Kind::Usn);
        }
        return Err(format!(
            "uSNChanged polling needs attributes.unique_id = \"objectGUID\" (type guid), not {:?}",
            cfg.attributes.unique_id
        ));
    }
    if caps.dirsync {
        if uid == "objectguid" && cfg.attributes.unique_id_type == UniqueIdType::Guid {
            return Ok(Kind::DirSync);
        }
        return Err(format!(
            "incremental synchronization with DirSync needs attributes.unique_id = \"objectGUID\" (type guid), not {:?}",
            cfg.attributes.unique_id
        ));
    }
    if caps.syncrepl {
        if uid == "entryuuid" && cfg.attributes.unique_id_type == UniqueIdType::String {
            return Ok(Kind::SyncRepl);
        }
        return Err(format!(
            "incremental synchronization with syncrepl needs attributes.unique_id = \"entryUUID\" (type string), not {:?}",
            cfg.attributes.unique_id
        ));
    }
    Err(format!(
        "{} supports neither DirSync nor syncrepl (RFC 4533)",
        client.server()
    ))
}

/// The naming context that holds `dn` (DirSync only accepts a naming context head).
pub(crate) fn naming_context(client: &Client, dn: &str) -> String {
    let caps = client.capabilities();
    let n = normalize_dn(dn);
    caps.naming_contexts
        .iter()
        .chain(caps.default_naming_context.iter())
        .filter(|nc| dn_is_under(&n, &normalize_dn(nc)))
        .max_by_key(|nc| nc.len())
        .cloned()
        .unwrap_or_else(|| {
            caps.default_naming_context
                .clone()
                .unwrap_or_else(|| dn.to_string())
        })
}

/// Active Directory's user objects, asked for besides the user filter by
/// DirSync and uSNChanged polling: a user that a change took out of the
/// user filter is then seen (and left its item) instead of staying as it was.
pub(crate) const USER_OBJECTS: &str = "(objectClass=user)";

/// A filter that matches no entry: asking for a cookie without reading everything.
const NOTHING: &str = "(&(objectClass=*)(!(objectClass=*)))";

/// Take a starting point now (before the full read, so that no change made
/// during the full read is lost: such a change is simply seen again by the
/// next incremental cycle, which is harmless since resolution is idempotent).
/// Reads almost nothing: a base-scope syncrepl refresh of the base entry, a
/// DirSync for a filter that matches nothing (tombstones still come; ignored),
/// or the DC's highestCommittedUSN and identity.
///
/// Returns the kind actually used: where the server refuses DirSync even with
/// OBJECT_SECURITY, uSNChanged polling (when the account may read tombstones).
pub async fn starting_point(
    client: &mut Client,
    kind: Kind,
    base: &str,
) -> Result<(Kind, Vec<u8>)> {
    if kind == Kind::DirSync {
        let nc = naming_context(client, base);
        let attrs = ["objectGUID".to_string()];
        return match dirsync(client, &nc, NOTHING, &attrs, &[], &mut |_| {}).await {
            Ok(r) if r.cookie.is_empty() => Err(EngineError::Other(format!(
                "{} gave no DirSync cookie",
                client.server()
            ))),
            Ok(r) => Ok((Kind::DirSync, r.cookie)),
            Err(mfasync_ldap::LdapError::Operation { code, message, .. })
                if client.capabilities().usn =>
            {
                tracing::warn!(target: "mfasync::incremental",
                    code,
                    %message,
                    "DirSync refused even with OBJECT_SECURITY; incremental cycles poll uSNChanged on {} instead",
                    client.server()
                );
                Ok((Kind::Usn, usn_starting_point(client, base).await?))
            }
            Err(e) => Err(EngineError::from(e).context("taking a DirSync cookie")),
        };
    }
    Ok((kind, cookie_for(client, kind, base).await?))
}

/// A uSNChanged starting point: this DC's state, after checking that the
/// account can see tombstones (else deletions would go unnoticed).
async fn usn_starting_point(client: &mut Client, base: &str) -> Result<Vec<u8>> {
    let nc = naming_context(client, base);
    if !client
        .can_read_tombstones(&nc)
        .await
        .context("looking for deleted objects")?
    {
        return Err(EngineError::Other(format!(
            "uSNChanged polling needs to see deleted objects, and the bind account cannot read {} \
             with the Show Deleted control (grant it List Contents and Read Property there, \
             or the Replicating Directory Changes right for DirSync)",
            mfasync_ldap::deleted_objects(&nc)
        )));
    }
    let state = client
        .usn_state()
        .await
        .context("reading highestCommittedUSN")?;
    Ok(UsnMark::from(&state).encode())
}

async fn cookie_for(client: &mut Client, kind: Kind, base: &str) -> Result<Vec<u8>> {
    match kind {
        Kind::Usn => usn_starting_point(client, base).await,
        Kind::SyncRepl => {
            let r = client
                .syncrepl_refresh(
                    base,
                    Scope::Base,
                    "(objectClass=*)",
                    &["1.1".to_string()],
                    None,
                    &mut |_| {},
                )
                .await
                .context("taking a syncrepl cookie")?;
            r.cookie.filter(|c| !c.is_empty()).ok_or_else(|| {
                EngineError::Other(format!("{} gave no syncrepl cookie", client.server()))
            })
        }
        Kind::DirSync => Err(EngineError::Other(
            "DirSync cookies are taken by starting_point".into(),
        )),
    }
}

/// A uSNChanged watermark: the last USN seen, and the DC database it counts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UsnMark {
    pub(crate) usn: u64,
    pub(crate) invocation_id: String,
    pub(crate) dsa: String,
}

impl From<&mfasync_ldap::UsnState> for UsnMark {
    fn from(s: &mfasync_ldap::UsnState) -> Self {
        UsnMark {
            usn: s.highest_committed_usn,
            invocation_id: s.invocation_id.clone(),
            dsa: s.dsa.clone(),
        }
    }
}

impl UsnMark {
    /// `USN\ninvocationId\ndsServiceName` (text, stored as the watermark value).
    pub(crate) fn encode(&self) -> Vec<u8> {
        format!("{}\n{}\n{}", self.usn, self.invocation_id, self.dsa).into_bytes()
    }

    pub(crate) fn decode(raw: &[u8]) -> Option<UsnMark> {
        let text = std::str::from_utf8(raw).ok()?;
        let mut parts = text.splitn(3, '\n');
        let usn = parts.next()?.parse().ok()?;
        let invocation_id = parts.next()?.to_string();
        let dsa = parts.next()?.to_string();
        (!invocation_id.is_empty() && !dsa.is_empty()).then_some(UsnMark {
            usn,
            invocation_id,
            dsa,
        })
    }
}

/// DirSync with incremental values; when the server refuses it (the bind
/// account lacks the "Replicating Directory Changes" right), again with
/// OBJECT_SECURITY, which only needs read access to the objects returned.
pub(crate) async fn dirsync(
    client: &mut Client,
    nc: &str,
    filter: &str,
    attrs: &[String],
    cookie: &[u8],
    f: &mut (dyn FnMut(Entry) + Send),
) -> std::result::Result<mfasync_ldap::DirSyncResult, mfasync_ldap::LdapError> {
    let flags = mfasync_ldap::DIRSYNC_INCREMENTAL_VALUES;
    match client
        .dirsync_each(nc, filter, attrs, cookie, flags, f)
        .await
    {
        Err(mfasync_ldap::LdapError::Operation { code, message, .. }) => {
            tracing::info!(target: "mfasync::incremental",
                code,
                %message,
                "DirSync refused; again with OBJECT_SECURITY (no replication right needed)"
            );
            let flags = flags | mfasync_ldap::DIRSYNC_OBJECT_SECURITY;
            client
                .dirsync_each(nc, filter, attrs, cookie, flags, f)
                .await
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usn_marks_round_trip_and_bad_ones_are_refused() {
        let m = UsnMark {
            usn: 40213,
            invocation_id: "00112233445566778899aabbccddeeff".into(),
            dsa: "CN=NTDS Settings,CN=DC1,CN=Servers,CN=Default-First-Site-Name,CN=Sites,CN=Configuration,DC=mfa,DC=test".into(),
        };
        assert_eq!(UsnMark::decode(&m.encode()), Some(m));
        for bad in [&b""[..], b"12", b"x\ny\nz", b"12\n\nCN=a", b"\xff\n1\n2"] {
            assert_eq!(UsnMark::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_usn_watermark_continues_where_dirsync_is_offered() {
        assert_eq!(Kind::DirSync.resume(MarkKind::Usn), Some(Kind::Usn));
        assert_eq!(Kind::DirSync.resume(MarkKind::DirSync), Some(Kind::DirSync));
        assert_eq!(Kind::Usn.resume(MarkKind::Usn), Some(Kind::Usn));
        assert_eq!(Kind::Usn.resume(MarkKind::DirSync), None);
        assert_eq!(Kind::SyncRepl.resume(MarkKind::Usn), None);
        assert_eq!(Kind::DirSync.resume(MarkKind::Full), None);
    }
}
