//! uSNChanged polling on Active Directory, for when DirSync is refused
//! altogether: every object a DC writes gets that DC's next update sequence
//! number in `uSNChanged`, and its RootDSE tells the highest one committed.
//! USNs are local to one DC, so a starting point is only valid on the DC it
//! came from, and only while that DC's database is the same one: its
//! `invocationId` (on its NTDS Settings object, named by the RootDSE's
//! `dsServiceName`) changes when the database is restored from a backup.
//!
//! Deleted objects (tombstones) are only visible with the Show Deleted
//! control (1.2.840.113556.1.4.417); they keep `objectGUID` and `isDeleted`
//! and live in the naming context's `CN=Deleted Objects` container.

use ldap3::controls::RawControl;
use mfasync_core::Entry;

use crate::client::{Client, Scope};
use crate::error::LdapError;

/// The Show Deleted control: deleted objects (tombstones) are returned too.
pub const OID_SHOW_DELETED: &str = "1.2.840.113556.1.4.417";

fn show_deleted() -> RawControl {
    RawControl {
        ctype: OID_SHOW_DELETED.to_string(),
        crit: true,
        val: None,
    }
}

/// Where a DC's numbering stands, and which DC database it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsnState {
    /// The RootDSE's highestCommittedUSN.
    pub highest_committed_usn: u64,
    /// The RootDSE's dsServiceName (the DC's NTDS Settings object).
    pub dsa: String,
    /// The NTDS Settings object's invocationId, lower-case hex of its 16 bytes.
    pub invocation_id: String,
}

impl Client {
    /// Read this DC's highestCommittedUSN and its identity (dsServiceName and
    /// that object's invocationId). An error names what is missing.
    pub async fn usn_state(&mut self) -> Result<UsnState, LdapError> {
        let server = self.server().to_string();
        let attrs = [
            "highestCommittedUSN".to_string(),
            "dsServiceName".to_string(),
        ];
        let root = self
            .read("", &attrs)
            .await?
            .unwrap_or_else(|| Entry::new(""));
        let usn = root.first_str("highestCommittedUSN").ok_or_else(|| {
            LdapError::Unsupported(format!(
                "{server}: the RootDSE has no highestCommittedUSN (not an Active Directory DC?)"
            ))
        })?;
        let highest_committed_usn = usn.trim().parse::<u64>().map_err(|_| LdapError::Protocol {
            server: server.clone(),
            message: format!("RootDSE highestCommittedUSN {usn:?} is not a number"),
        })?;
        let dsa = root
            .first_str("dsServiceName")
            .filter(|d| !d.trim().is_empty())
            .ok_or_else(|| {
                LdapError::Unsupported(format!("{server}: the RootDSE has no dsServiceName"))
            })?;
        let settings = self.read(&dsa, &["invocationId".to_string()]).await?;
        let invocation = settings
            .as_ref()
            .and_then(|e| e.first_bytes("invocationId"))
            .filter(|b| !b.is_empty())
            .ok_or_else(|| {
                LdapError::Unsupported(format!(
                    "{server}: cannot read invocationId of {dsa} (the DC's NTDS Settings object)"
                ))
            })?;
        Ok(UsnState {
            highest_committed_usn,
            invocation_id: invocation.iter().map(|b| format!("{b:02x}")).collect(),
            dsa,
        })
    }

    /// Whether this bind account can see the tombstones of the naming
    /// context `nc` (in its `CN=Deleted Objects` container, with Show
    /// Deleted). By default only administrators can, and the container itself
    /// may be visible while the tombstones in it are not (Samba). So: true
    /// when the account sees at least one tombstone there, or when the DC
    /// counts no children there (`msDS-Approx-Immed-Subordinates` = 0);
    /// false otherwise (also for a domain with no tombstone yet whose DC does
    /// not count: then it cannot be verified).
    pub async fn can_read_tombstones(&mut self, nc: &str) -> Result<bool, LdapError> {
        let container = deleted_objects(nc);
        let mut seen = false;
        let mut approx: Option<u64> = None;
        let res = self
            .search_with(
                &container,
                Scope::Base,
                "(objectClass=*)",
                &["msDS-Approx-Immed-Subordinates".to_string()],
                vec![show_deleted()],
                &mut |e| {
                    seen = true;
                    approx = e
                        .first_str("msDS-Approx-Immed-Subordinates")
                        .and_then(|v| v.trim().parse().ok());
                },
            )
            .await;
        match res {
            Ok(_) if !seen => return Ok(false),
            Ok(_) => {}
            // noSuchObject, insufficientAccessRights: not visible to this account
            Err(LdapError::Operation { code: 32 | 50, .. }) => return Ok(false),
            Err(e) => return Err(e),
        }
        let mut visible = 0usize;
        self.search_with(
            &container,
            Scope::OneLevel,
            "(isDeleted=TRUE)",
            &["1.1".to_string()],
            vec![show_deleted()],
            &mut |_| visible += 1,
        )
        .await?;
        Ok(visible > 0 || approx == Some(0))
    }

    /// Tombstones of the naming context `nc` written at or after `from_usn`
    /// (`(&(isDeleted=TRUE)(uSNChanged>=from_usn))` with Show Deleted), each
    /// given to `f` with `attrs`. Returns the number of entries.
    pub async fn deleted_since(
        &mut self,
        nc: &str,
        from_usn: u64,
        attrs: &[String],
        f: &mut (dyn FnMut(Entry) + Send),
    ) -> Result<usize, LdapError> {
        let filter = format!("(&(isDeleted=TRUE)(uSNChanged>={from_usn}))");
        self.search_with(
            &deleted_objects(nc),
            Scope::Subtree,
            &filter,
            attrs,
            vec![show_deleted()],
            f,
        )
        .await
    }
}

/// The deleted-objects container of a naming context.
pub fn deleted_objects(nc: &str) -> String {
    format!("CN=Deleted Objects,{nc}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_deleted_is_critical_and_valueless() {
        let c = show_deleted();
        assert_eq!(c.ctype, "1.2.840.113556.1.4.417");
        assert!(c.crit);
        assert!(c.val.is_none());
        assert_eq!(
            deleted_objects("DC=mfa,DC=test"),
            "CN=Deleted Objects,DC=mfa,DC=test"
        );
    }
}
