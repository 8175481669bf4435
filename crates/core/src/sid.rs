//! Windows security identifiers (SIDs) as Active Directory stores them
//! (`objectSid`, a trust's `securityIdentifier`) and as it names foreign
//! security principals: a member from a trusted domain appears in a group as
//! `CN=S-1-5-21-…-1103,CN=ForeignSecurityPrincipals,DC=…`.

use crate::filter::{normalize_dn, parent_dn};

/// The text form (`S-1-5-21-1-2-3-1103`) of a binary SID: revision, number
/// of sub-authorities, 48-bit big-endian identifier authority, then 32-bit
/// little-endian sub-authorities. `None` when malformed.
pub fn sid_text(raw: &[u8]) -> Option<String> {
    let (&rev, rest) = raw.split_first()?;
    let (&n, rest) = rest.split_first()?;
    let (auth, subs) = rest.split_at_checked(6)?;
    if subs.len() != 4 * usize::from(n) {
        return None;
    }
    let authority = auth.iter().fold(0u64, |a, &b| (a << 8) | u64::from(b));
    let mut s = format!("S-{rev}-{authority}");
    for c in subs.chunks_exact(4) {
        let v = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        s.push('-');
        s.push_str(&v.to_string());
    }
    Some(s)
}

/// Whether `s` is a SID in text form (`S-` then dash-separated decimals, at
/// least revision and authority).
pub fn is_sid(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("S-").or_else(|| s.strip_prefix("s-")) else {
        return false;
    };
    let parts: Vec<&str> = rest.split('-').collect();
    parts.len() >= 2
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 20 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// The SID of a foreign security principal's DN
/// (`CN=<SID>,CN=ForeignSecurityPrincipals,<naming context>`), upper-case `S-`.
pub fn foreign_principal_sid(dn: &str) -> Option<String> {
    let n = normalize_dn(dn);
    let parent = parent_dn(&n);
    if !parent.starts_with("cn=foreignsecurityprincipals,") {
        return None;
    }
    let rdn = n.split(',').next()?.strip_prefix("cn=")?;
    is_sid(rdn).then(|| format!("S-{}", &rdn[2..]))
}

/// The DN of the foreign security principal for `sid` in the domain of
/// naming context `nc`.
pub fn foreign_principal_dn(sid: &str, nc: &str) -> String {
    format!("CN={sid},CN=ForeignSecurityPrincipals,{nc}")
}

/// The domain part of an account SID (all but the last sub-authority, the
/// RID): `S-1-5-21-1-2-3-1103` -> `S-1-5-21-1-2-3`.
pub fn domain_sid(sid: &str) -> Option<&str> {
    let (domain, rid) = sid.rsplit_once('-')?;
    (is_sid(domain) && !rid.is_empty() && rid.bytes().all(|b| b.is_ascii_digit())).then_some(domain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_sids_as_text() {
        // Olga's objectSid from the test Samba (base64 AQUAAAAAAAUVAAAAu9n0hLBVoiUMF0OsTwQAAA==).
        let raw = [
            1, 5, 0, 0, 0, 0, 0, 5, 21, 0, 0, 0, 0xbb, 0xd9, 0xf4, 0x84, 0xb0, 0x55, 0xa2, 0x25,
            0x0c, 0x17, 0x43, 0xac, 0x4f, 0x04, 0, 0,
        ];
        assert_eq!(
            sid_text(&raw).as_deref(),
            Some("S-1-5-21-2230639035-631395760-2890077964-1103")
        );
        // the trust's securityIdentifier (AQQAAAAAAAUVAAAAu9n0hLBVoiUMF0Os): the domain SID
        let domain = [&[1u8, 4][..], &raw[2..24]].concat();
        assert_eq!(
            sid_text(&domain).as_deref(),
            Some("S-1-5-21-2230639035-631395760-2890077964")
        );
        assert_eq!(
            sid_text(&[1, 1, 0, 0, 0, 0, 0, 5, 11, 0, 0, 0]).as_deref(),
            Some("S-1-5-11")
        );
        for bad in [&[][..], &[1], &[1, 2, 0, 0, 0, 0, 0, 5, 1, 0, 0, 0]] {
            assert_eq!(sid_text(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn foreign_principals_by_dn() {
        let dn = "CN=S-1-5-21-2230639035-631395760-2890077964-1103,CN=ForeignSecurityPrincipals,DC=mfa,DC=test";
        let sid = foreign_principal_sid(dn);
        assert_eq!(
            sid.as_deref(),
            Some("S-1-5-21-2230639035-631395760-2890077964-1103")
        );
        assert_eq!(
            foreign_principal_dn(sid.as_deref().unwrap_or_default(), "DC=mfa,DC=test"),
            dn
        );
        assert_eq!(
            domain_sid("S-1-5-21-2230639035-631395760-2890077964-1103"),
            Some("S-1-5-21-2230639035-631395760-2890077964")
        );
        assert_eq!(
            foreign_principal_sid("cn=s-1-5-11, cn=foreignsecurityprincipals, dc=x").as_deref(),
            Some("S-1-5-11")
        );
        for not in [
            "CN=Olga,OU=People,DC=other,DC=test",
            "CN=S-1-5-x,CN=ForeignSecurityPrincipals,DC=a",
            "CN=S-1-5-11,CN=Users,DC=a",
            "OU=S-1-5-11,CN=ForeignSecurityPrincipals,DC=a",
        ] {
            assert_eq!(foreign_principal_sid(not), None, "{not}");
        }
        assert!(!is_sid("S-1") && !is_sid("S-1-") && !is_sid("X-1-5") && is_sid("S-1-5"));
    }
}
