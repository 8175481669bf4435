//! Seed data (LDIF text) for the directory servers.
//!
//! Values that are not LDIF "safe strings" (non-ASCII, leading space/colon/`<`, trailing space)
//! are written base64-encoded (`attr:: ...`), see [`ldif_attr`].

use std::fmt::Write as _;

/// Standard base64 (RFC 4648, with padding).
pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(T[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn ldif_safe(v: &str) -> bool {
    let bytes = v.as_bytes();
    if let Some(&first) = bytes.first() {
        if matches!(first, b' ' | b':' | b'<') {
            return false;
        }
    }
    if bytes.last() == Some(&b' ') {
        return false;
    }
    bytes
        .iter()
        .all(|&c| c.is_ascii() && c != 0 && c != b'\n' && c != b'\r')
}

/// One LDIF line `name: value\n`, or `name:: base64\n` when the value is not a safe string.
/// Works for `dn` too.
pub fn ldif_attr(name: &str, value: &str) -> String {
    if ldif_safe(value) {
        format!("{name}: {value}\n")
    } else {
        format!("{name}:: {}\n", base64(value.as_bytes()))
    }
}

fn entry(dn: &str, attrs: &[(&str, &str)]) -> String {
    let mut s = ldif_attr("dn", dn);
    for (k, v) in attrs {
        s.push_str(&ldif_attr(k, v));
    }
    s.push('\n');
    s
}

// ---------------------------------------------------------------------------------------------
// OpenLDAP
// ---------------------------------------------------------------------------------------------

/// OpenLDAP seed data under `dc=example,dc=com` (the base entry itself is added by
/// [`crate::Slapd::start`]):
///
/// ```text
/// ou=People,dc=example,dc=com
///   ou=Sales,ou=People,...
///     uid=alice,ou=Sales,ou=People,...          alice  Alice Anderson  alice@example.com
///           telephoneNumber "+1 425 555 0100 x123", mobile "(425) 555-0101", homePhone "+1 425 555 0102"
///     ou=EMEA,ou=Sales,ou=People,...
///       uid=bob,ou=EMEA,ou=Sales,ou=People,...  bob    Bob Brown       bob@example.com
///           mobile "+44 20 7946 0958", telephoneNumber "+44 20 7946 0000"
///   ou=Engineering,ou=People,...
///     cn=Smith\, John,ou=Engineering,ou=People,...  uid jsmith  John Smith  john.smith@example.com
///           telephoneNumber "+1 206 555 0199"
///     uid=jmuller,ou=Engineering,ou=People,...  cn "José Müller", givenName "José", sn "Müller"
///           jose.muller@example.com, mobile "+49 30 901820"
///     uid=carol,ou=Engineering,ou=People,...    carol  Carol Clark     carol@example.com
///           mobile "+1 425 555 0110"
///   uid=dave,ou=People,...                      dave   Dave Davis      no mail, no phones, no groups
/// ou=Groups,dc=example,dc=com
///   cn=mfa-users   (groupOfNames)  member: alice, carol
///   cn=mfa-inner   (groupOfNames)  member: bob
///   cn=mfa-nested  (groupOfNames)  member: cn=mfa-inner  (so bob is a nested member)
///   cn=mfa-posix   (posixGroup, gidNumber 5000) memberUid: alice, jsmith
/// ```
pub fn openldap_fixture() -> String {
    const B: &str = "dc=example,dc=com";
    let people = format!("ou=People,{B}");
    let sales = format!("ou=Sales,{people}");
    let emea = format!("ou=EMEA,{sales}");
    let eng = format!("ou=Engineering,{people}");
    let groups = format!("ou=Groups,{B}");
    let alice = format!("uid=alice,{sales}");
    let bob = format!("uid=bob,{emea}");
    let jsmith = format!("cn=Smith\\, John,{eng}");
    let jmuller = format!("uid=jmuller,{eng}");
    let carol = format!("uid=carol,{eng}");
    let dave = format!("uid=dave,{people}");
    let inner = format!("cn=mfa-inner,{groups}");
    const PERSON: [(&str, &str); 4] = [
        ("objectClass", "top"),
        ("objectClass", "person"),
        ("objectClass", "organizationalPerson"),
        ("objectClass", "inetOrgPerson"),
    ];
    let person = |dn: &str, extra: &[(&str, &str)]| {
        let mut a: Vec<(&str, &str)> = PERSON.to_vec();
        a.extend_from_slice(extra);
        entry(dn, &a)
    };
    let ou = |dn: &str, name: &str| {
        entry(
            dn,
            &[
                ("objectClass", "top"),
                ("objectClass", "organizationalUnit"),
                ("ou", name),
            ],
        )
    };
    let mut s = String::new();
    s += &ou(&people, "People");
    s += &ou(&sales, "Sales");
    s += &ou(&emea, "EMEA");
    s += &ou(&eng, "Engineering");
    s += &ou(&groups, "Groups");
    s += &person(
        &alice,
        &[
            ("uid", "alice"),
            ("cn", "Alice Anderson"),
            ("sn", "Anderson"),
            ("givenName", "Alice"),
            ("mail", "alice@example.com"),
            ("telephoneNumber", "+1 425 555 0100 x123"),
            ("mobile", "(425) 555-0101"),
            ("homePhone", "+1 425 555 0102"),
            ("description", "Sales, North America"),
        ],
    );
    s += &person(
        &bob,
        &[
            ("uid", "bob"),
            ("cn", "Bob Brown"),
            ("sn", "Brown"),
            ("givenName", "Bob"),
            ("mail", "bob@example.com"),
            ("telephoneNumber", "+44 20 7946 0000"),
            ("mobile", "+44 20 7946 0958"),
            ("description", "Sales, EMEA"),
        ],
    );
    s += &person(
        &jsmith,
        &[
            ("uid", "jsmith"),
            ("cn", "Smith, John"),
            ("sn", "Smith"),
            ("givenName", "John"),
            ("mail", "john.smith@example.com"),
            ("telephoneNumber", "+1 206 555 0199"),
            ("description", "DN with an escaped comma"),
        ],
    );
    s += &person(
        &jmuller,
        &[
            ("uid", "jmuller"),
            ("cn", "José Müller"),
            ("sn", "Müller"),
            ("givenName", "José"),
            ("mail", "jose.muller@example.com"),
            ("mobile", "+49 30 901820"),
            ("description", "Non-ASCII names"),
        ],
    );
    s += &person(
        &carol,
        &[
            ("uid", "carol"),
            ("cn", "Carol Clark"),
            ("sn", "Clark"),
            ("givenName", "Carol"),
            ("mail", "carol@example.com"),
            ("mobile", "+1 425 555 0110"),
        ],
    );
    s += &person(
        &dave,
        &[
            ("uid", "dave"),
            ("cn", "Dave Davis"),
            ("sn", "Davis"),
            ("givenName", "Dave"),
        ],
    );
    let gon = |dn: &str, cn: &str, members: &[&str]| {
        let mut a: Vec<(&str, &str)> = vec![
            ("objectClass", "top"),
            ("objectClass", "groupOfNames"),
            ("cn", cn),
        ];
        for m in members {
            a.push(("member", m));
        }
        entry(dn, &a)
    };
    s += &gon(
        &format!("cn=mfa-users,{groups}"),
        "mfa-users",
        &[&alice, &carol],
    );
    s += &gon(&inner, "mfa-inner", &[&bob]);
    s += &gon(&format!("cn=mfa-nested,{groups}"), "mfa-nested", &[&inner]);
    s += &entry(
        &format!("cn=mfa-posix,{groups}"),
        &[
            ("objectClass", "top"),
            ("objectClass", "posixGroup"),
            ("cn", "mfa-posix"),
            ("gidNumber", "5000"),
            ("memberUid", "alice"),
            ("memberUid", "jsmith"),
        ],
    );
    s
}

/// `n` users `uid=user{i:06},ou=<ou>,dc=example,dc=com` (i = 1..=n; the ou is created first;
/// cn "User {i:06}", sn "{i:06}", mail `user{i:06}@example.com`, mobile `+1 555 {i:07}`), then
/// `groupOfNames cn=big-<ou>,ou=Groups,dc=example,dc=com` with all of them as members.
/// Needs `ou=Groups` (from [`openldap_fixture`]) to exist, so seed it after the fixture.
pub fn openldap_bulk(n: usize, ou: &str) -> String {
    let ou_dn = format!("ou={ou},dc=example,dc=com");
    let mut s = entry(
        &ou_dn,
        &[
            ("objectClass", "top"),
            ("objectClass", "organizationalUnit"),
            ("ou", ou),
        ],
    );
    let mut group = String::new();
    group += &ldif_attr("dn", &format!("cn=big-{ou},ou=Groups,dc=example,dc=com"));
    group += "objectClass: top\nobjectClass: groupOfNames\n";
    group += &ldif_attr("cn", &format!("big-{ou}"));
    for i in 1..=n {
        let uid = format!("user{i:06}");
        let dn = format!("uid={uid},{ou_dn}");
        s += &ldif_attr("dn", &dn);
        let _ = write!(
            s,
            "objectClass: top\nobjectClass: person\nobjectClass: organizationalPerson\n\
             objectClass: inetOrgPerson\nuid: {uid}\ncn: User {i:06}\nsn: {i:06}\n\
             givenName: User\nmail: {uid}@example.com\nmobile: +1 555 {i:07}\n\n"
        );
        group += &ldif_attr("member", &dn);
    }
    s += &group;
    s.push('\n');
    s
}

// ---------------------------------------------------------------------------------------------
// Samba AD
// ---------------------------------------------------------------------------------------------

/// Samba AD seed data under `DC=mfa,DC=test`:
///
/// ```text
/// OU=People,DC=mfa,DC=test
///   OU=Sales,OU=People,...
///     CN=Alice Anderson,OU=Sales,OU=People,...   alice   UPN alice@mfa.test   uac 544
///           telephoneNumber "+1 425 555 0100 x123", mobile "(425) 555-0101", homePhone "+1 425 555 0102"
///     OU=EMEA,OU=Sales,OU=People,...
///       CN=Bob Brown,OU=EMEA,OU=Sales,...        bob     NO userPrincipalName uac 544
///           mobile "+44 20 7946 0958", telephoneNumber "+44 20 7946 0000"
///   OU=Engineering,OU=People,...
///     CN=Smith\, John,OU=Engineering,...         jsmith  UPN jsmith@mfa.test  uac 544  "+1 206 555 0199"
///     CN=José Müller,OU=Engineering,...          jmuller UPN jmuller@mfa.test uac 544  givenName José, sn Müller
///     CN=Carol Clark,OU=Engineering,...          carol   UPN carol@mfa.test   uac 544  mobile "+1 425 555 0110"
///   CN=Dave Davis,OU=People,...                  dave    UPN dave@mfa.test    uac 546 (DISABLED)
/// OU=Groups,DC=mfa,DC=test    (global security groups, groupType -2147483646)
///   CN=mfa-users    member: alice, carol, dave (disabled)
///   CN=mfa-inner    member: bob
///   CN=mfa-nested   member: CN=mfa-inner  (so bob is a nested member)
/// ```
/// Mail is `<sAMAccountName>@mfa.test` for everyone. No passwords are set (use
/// [`crate::Samba::set_password`]; the default AD complexity rules apply).
pub fn samba_fixture() -> String {
    const B: &str = "DC=mfa,DC=test";
    let people = format!("OU=People,{B}");
    let sales = format!("OU=Sales,{people}");
    let emea = format!("OU=EMEA,{sales}");
    let eng = format!("OU=Engineering,{people}");
    let groups = format!("OU=Groups,{B}");
    let alice = format!("CN=Alice Anderson,{sales}");
    let bob = format!("CN=Bob Brown,{emea}");
    let jsmith = format!("CN=Smith\\, John,{eng}");
    let jmuller = format!("CN=José Müller,{eng}");
    let carol = format!("CN=Carol Clark,{eng}");
    let dave = format!("CN=Dave Davis,{people}");
    let inner = format!("CN=mfa-inner,{groups}");
    let ou = |dn: &str, name: &str| {
        entry(
            dn,
            &[
                ("objectClass", "top"),
                ("objectClass", "organizationalUnit"),
                ("ou", name),
            ],
        )
    };
    let user = |dn: &str, sam: &str, upn: bool, uac: &str, extra: &[(&str, &str)]| {
        let upn_v = format!("{sam}@mfa.test");
        let mut a: Vec<(&str, &str)> = vec![
            ("objectClass", "top"),
            ("objectClass", "person"),
            ("objectClass", "organizationalPerson"),
            ("objectClass", "user"),
            ("sAMAccountName", sam),
            ("mail", &upn_v),
            ("userAccountControl", uac),
        ];
        if upn {
            a.push(("userPrincipalName", &upn_v));
        }
        a.extend_from_slice(extra);
        entry(dn, &a)
    };
    let mut s = String::new();
    s += &ou(&people, "People");
    s += &ou(&sales, "Sales");
    s += &ou(&emea, "EMEA");
    s += &ou(&eng, "Engineering");
    s += &ou(&groups, "Groups");
    s += &user(
        &alice,
        "alice",
        true,
        "544",
        &[
            ("givenName", "Alice"),
            ("sn", "Anderson"),
            ("displayName", "Alice Anderson"),
            ("telephoneNumber", "+1 425 555 0100 x123"),
            ("mobile", "(425) 555-0101"),
            ("homePhone", "+1 425 555 0102"),
            ("description", "Sales, North America"),
        ],
    );
    s += &user(
        &bob,
        "bob",
        false,
        "544",
        &[
            ("givenName", "Bob"),
            ("sn", "Brown"),
            ("displayName", "Bob Brown"),
            ("telephoneNumber", "+44 20 7946 0000"),
            ("mobile", "+44 20 7946 0958"),
            ("description", "Sales, EMEA; no userPrincipalName"),
        ],
    );
    s += &user(
        &jsmith,
        "jsmith",
        true,
        "544",
        &[
            ("givenName", "John"),
            ("sn", "Smith"),
            ("displayName", "Smith, John"),
            ("telephoneNumber", "+1 206 555 0199"),
            ("description", "DN with an escaped comma"),
        ],
    );
    s += &user(
        &jmuller,
        "jmuller",
        true,
        "544",
        &[
            ("givenName", "José"),
            ("sn", "Müller"),
            ("displayName", "José Müller"),
            ("mobile", "+49 30 901820"),
            ("description", "Non-ASCII names"),
        ],
    );
    s += &user(
        &carol,
        "carol",
        true,
        "544",
        &[
            ("givenName", "Carol"),
            ("sn", "Clark"),
            ("displayName", "Carol Clark"),
            ("mobile", "+1 425 555 0110"),
        ],
    );
    s += &user(
        &dave,
        "dave",
        true,
        "546",
        &[
            ("givenName", "Dave"),
            ("sn", "Davis"),
            ("description", "Disabled account"),
        ],
    );
    let group = |dn: &str, name: &str, members: &[&str]| {
        let mut a: Vec<(&str, &str)> = vec![
            ("objectClass", "top"),
            ("objectClass", "group"),
            ("sAMAccountName", name),
            ("groupType", "-2147483646"),
        ];
        for m in members {
            a.push(("member", m));
        }
        entry(dn, &a)
    };
    s += &group(
        &format!("CN=mfa-users,{groups}"),
        "mfa-users",
        &[&alice, &carol, &dave],
    );
    s += &group(&inner, "mfa-inner", &[&bob]);
    s += &group(&format!("CN=mfa-nested,{groups}"), "mfa-nested", &[&inner]);
    s
}

/// `n` enabled users `CN=user{i:06},OU=<ou>,DC=mfa,DC=test` (i = 1..=n; the OU is created first;
/// sAMAccountName `user{i:06}`, UPN/mail `user{i:06}@mfa.test`, givenName "User", sn "{i:06}",
/// mobile `+1 555 {i:07}`, uac 544), then the global security group
/// `CN=big-<ou>,OU=Groups,DC=mfa,DC=test` with all of them as members.
/// Needs `OU=Groups` (from [`samba_fixture`]); sAMAccountNames are domain-wide, so use it once per
/// Samba instance.
pub fn samba_bulk(n: usize, ou: &str) -> String {
    let ou_dn = format!("OU={ou},DC=mfa,DC=test");
    let mut s = entry(
        &ou_dn,
        &[
            ("objectClass", "top"),
            ("objectClass", "organizationalUnit"),
            ("ou", ou),
        ],
    );
    let mut group = String::new();
    group += &ldif_attr("dn", &format!("CN=big-{ou},OU=Groups,DC=mfa,DC=test"));
    group += "objectClass: top\nobjectClass: group\ngroupType: -2147483646\n";
    group += &ldif_attr("sAMAccountName", &format!("big-{ou}"));
    for i in 1..=n {
        let sam = format!("user{i:06}");
        let dn = format!("CN={sam},{ou_dn}");
        s += &ldif_attr("dn", &dn);
        let _ = write!(
            s,
            "objectClass: top\nobjectClass: person\nobjectClass: organizationalPerson\n\
             objectClass: user\nsAMAccountName: {sam}\nuserPrincipalName: {sam}@mfa.test\n\
             mail: {sam}@mfa.test\ngivenName: User\nsn: {i:06}\nmobile: +1 555 {i:07}\n\
             userAccountControl: 544\n\n"
        );
        group += &ldif_attr("member", &dn);
    }
    s += &group;
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foob"), "Zm9vYg==");
        assert_eq!(base64("José".as_bytes()), "Sm9zw6k=");
    }

    #[test]
    fn ldif_attr_encodes_unsafe_values() {
        assert_eq!(ldif_attr("cn", "Alice"), "cn: Alice\n");
        assert_eq!(ldif_attr("sn", "Müller"), "sn:: TcO8bGxlcg==\n");
        assert_eq!(ldif_attr("x", " lead"), "x:: IGxlYWQ=\n");
        assert_eq!(ldif_attr("x", ":x"), "x:: Ong=\n");
    }

    #[test]
    fn bulk_has_n_users_and_members() {
        let l = openldap_bulk(3, "Bulk");
        assert_eq!(l.matches("uid: user").count(), 3);
        assert_eq!(l.matches("member: uid=user").count(), 3);
        let s = samba_bulk(3, "Bulk");
        assert_eq!(s.matches("sAMAccountName: user").count(), 3);
        assert_eq!(s.matches("member: CN=user").count(), 3);
    }
}
