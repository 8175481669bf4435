//! Syntax checks for LDAP search filters (RFC 4515) and distinguished names
//! (RFC 4514), so configuration mistakes are caught by `config apply`, not by
//! the directory at 3 a.m.

/// Validate an RFC 4515 string filter. The outer parentheses may be omitted
/// for a single item, as most directories accept.
pub fn validate_filter(f: &str) -> Result<(), String> {
    let f = f.trim();
    let owned;
    let text = if f.starts_with('(') {
        f
    } else {
        owned = format!("({f})");
        &owned
    };
    let b = text.as_bytes();
    let mut p = Parser { b, i: 0 };
    p.filter()?;
    if p.i != b.len() {
        return Err(format!(
            "malformed filter: unexpected {:?} at position {}",
            text[p.i..].chars().next().unwrap_or(' '),
            p.i + 1
        ));
    }
    Ok(())
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(match self.peek() {
                Some(x) => format!(
                    "malformed filter: expected '{}' at position {}, found '{}'",
                    c as char,
                    self.i + 1,
                    x as char
                ),
                None => format!(
                    "malformed filter: expected '{}' at the end (unbalanced parentheses?)",
                    c as char
                ),
            })
        }
    }

    fn filter(&mut self) -> Result<(), String> {
        self.expect(b'(')?;
        match self.peek() {
            Some(b'&') | Some(b'|') => {
                self.i += 1;
                while self.peek() == Some(b'(') {
                    self.filter()?;
                }
            }
            Some(b'!') => {
                self.i += 1;
                self.filter()?;
            }
            _ => self.item()?,
        }
        self.expect(b')')
    }

    fn attr(&mut self) -> usize {
        let start = self.i;
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || c == b'-' || c == b'.' || c == b';' || c == b'_' {
                self.i += 1;
            } else {
                break;
            }
        }
        self.i - start
    }

    fn item(&mut self) -> Result<(), String> {
        let n = self.attr();
        // extensible match: attr[:dn][:rule]:=value  or  [:dn]:rule:=value
        if self.peek() == Some(b':') {
            while self.peek() == Some(b':') {
                self.i += 1;
                if self.peek() == Some(b'=') {
                    self.i += 1;
                    return self.value(false);
                }
                if self.attr() == 0 {
                    return Err(format!(
                        "malformed filter: bad extensible match at position {}",
                        self.i + 1
                    ));
                }
            }
            return Err("malformed filter: extensible match without ':='".into());
        }
        if n == 0 {
            return Err(format!(
                "malformed filter: attribute name expected at position {}",
                self.i + 1
            ));
        }
        match self.peek() {
            Some(b'=') => {
                self.i += 1;
                self.value(true)
            }
            Some(b'~') | Some(b'>') | Some(b'<') => {
                self.i += 1;
                self.expect(b'=')?;
                self.value(false)
            }
            _ => Err(format!(
                "malformed filter: '=', '~=', '>=' or '<=' expected at position {}",
                self.i + 1
            )),
        }
    }

    fn value(&mut self, star_ok: bool) -> Result<(), String> {
        while let Some(c) = self.peek() {
            match c {
                b')' => return Ok(()),
                b'(' => {
                    return Err(format!(
                        "malformed filter: unescaped '(' in a value at position {} (write \\28)",
                        self.i + 1
                    ))
                }
                b'*' if !star_ok => {
                    return Err(format!(
                        "malformed filter: '*' not allowed here at position {} (write \\2a)",
                        self.i + 1
                    ))
                }
                b'\\' => {
                    let h = self.b.get(self.i + 1..self.i + 3);
                    match h {
                        Some(h) if h.iter().all(u8::is_ascii_hexdigit) => self.i += 3,
                        _ => {
                            return Err(format!(
                                "malformed filter: bad escape at position {} (use \\XX hex)",
                                self.i + 1
                            ))
                        }
                    }
                }
                0 => return Err("malformed filter: NUL byte".into()),
                _ => self.i += 1,
            }
        }
        Ok(())
    }
}

/// Validate an RFC 4514 distinguished name: one or more `attr=value` RDNs
/// separated by unescaped commas, multi-valued RDNs joined with '+'.
pub fn validate_dn(dn: &str) -> Result<(), String> {
    if dn.trim().is_empty() {
        return Err("empty distinguished name".into());
    }
    for rdn in split_unescaped(dn, b',') {
        for ava in split_unescaped(rdn, b'+') {
            let (attr, value) = split_once_unescaped(ava, b'=')
                .ok_or_else(|| format!("{dn:?} is not a distinguished name: {ava:?} has no '='"))?;
            let attr = attr.trim();
            if attr.is_empty()
                || !attr
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            {
                return Err(format!(
                    "{dn:?} is not a distinguished name: bad attribute type {attr:?}"
                ));
            }
            check_dn_value(value)
                .map_err(|m| format!("{dn:?} is not a distinguished name: {m}"))?;
        }
    }
    Ok(())
}

fn check_dn_value(v: &str) -> Result<(), String> {
    let b = v.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            match b.get(i + 1) {
                Some(c) if c.is_ascii_hexdigit() => {
                    if !b.get(i + 2).is_some_and(u8::is_ascii_hexdigit) {
                        return Err("bad hex escape".into());
                    }
                    i += 3;
                }
                Some(_) => i += 2,
                None => return Err("trailing backslash".into()),
            }
        } else {
            i += 1;
        }
    }
    Ok(())
}

/// Split on a separator byte not preceded by a backslash escape.
pub fn split_unescaped(s: &str, sep: u8) -> Vec<&str> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            i += 2;
            continue;
        }
        if b[i] == sep {
            out.push(&s[start..i]);
            start = i + 1;
        }
        i += 1;
    }
    out.push(&s[start.min(s.len())..]);
    out
}

fn split_once_unescaped(s: &str, sep: u8) -> Option<(&str, &str)> {
    let parts = split_unescaped(s, sep);
    if parts.len() < 2 {
        return None;
    }
    let first = parts[0];
    Some((first, &s[first.len() + 1..]))
}

/// Rewrite hex escapes of RFC 4514 special characters (`\2C`) into their
/// backslash-character form (`\,`), as Active Directory writes them, so the
/// same DN reads the same whichever server produced it.
pub fn canonical_escapes(dn: &str) -> String {
    if !dn.contains('\\') {
        return dn.to_string();
    }
    let b = dn.as_bytes();
    let mut out = String::with_capacity(dn.len());
    let mut i = 0;
    let mut last = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 2 < b.len() {
            let hex = [b[i + 1].to_ascii_uppercase(), b[i + 2].to_ascii_uppercase()];
            let special = match &hex {
                b"2C" => Some(','),
                b"2B" => Some('+'),
                b"22" => Some('"'),
                b"5C" => Some('\\'),
                b"3B" => Some(';'),
                b"3C" => Some('<'),
                b"3E" => Some('>'),
                b"3D" => Some('='),
                b"23" if i == 0 || b[i - 1] == b'=' => Some('#'),
                _ => None,
            };
            if let Some(c) = special {
                out.push_str(&dn[last..i]);
                out.push('\\');
                out.push(c);
                i += 3;
                last = i;
                continue;
            }
            i += 2;
            continue;
        }
        i += 1;
    }
    out.push_str(&dn[last..]);
    out
}

/// Normalise a DN for comparison: lower-case attribute types and values,
/// no spaces around separators. (Good enough for membership comparison of DNs
/// returned by the same server.)
pub fn normalize_dn(dn: &str) -> String {
    let dn: std::borrow::Cow<str> = if dn.contains('\\') {
        canonical_escapes(dn).into()
    } else {
        dn.into()
    };
    // One pass into one string (a full sync normalises every user's DN):
    // the parts are those of `split_unescaped`, without collecting them.
    let mut out = String::with_capacity(dn.len());
    let lower = |out: &mut String, s: &str| {
        if s.is_ascii() {
            let start = out.len();
            out.push_str(s);
            out[start..].make_ascii_lowercase();
        } else {
            out.push_str(&s.to_lowercase());
        }
    };
    for (i, rdn) in unescaped_parts(&dn, b',').enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, ava) in unescaped_parts(rdn, b'+').enumerate() {
            if j > 0 {
                out.push('+');
            }
            match find_unescaped(ava.as_bytes(), 0, b'=') {
                Some(eq) => {
                    lower(&mut out, ava[..eq].trim());
                    out.push('=');
                    lower(&mut out, ava[eq + 1..].trim());
                }
                None => lower(&mut out, ava.trim()),
            }
        }
    }
    out
}

/// The first `sep` at or after `from` that no backslash escapes.
fn find_unescaped(b: &[u8], from: usize, sep: u8) -> Option<usize> {
    let mut i = from;
    while i < b.len() {
        if b[i] == b'\\' {
            i += 2;
            continue;
        }
        if b[i] == sep {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// `split_unescaped` as an iterator (at least one part, maybe empty).
fn unescaped_parts(s: &str, sep: u8) -> impl Iterator<Item = &str> + '_ {
    let mut start = Some(0);
    std::iter::from_fn(move || {
        let from = start?;
        match find_unescaped(s.as_bytes(), from, sep) {
            Some(at) => {
                start = Some(at + 1);
                Some(&s[from..at])
            }
            None => {
                start = None;
                Some(&s[from.min(s.len())..])
            }
        }
    })
}

/// Whether `dn` is `base` or below it (both normalised).
pub fn dn_is_under(dn_norm: &str, base_norm: &str) -> bool {
    if dn_norm.len() == base_norm.len() {
        return dn_norm == base_norm;
    }
    if dn_norm.len() < base_norm.len() + 2 || !dn_norm.ends_with(base_norm) {
        return false;
    }
    // the separator before the base must be an unescaped comma
    let head = &dn_norm.as_bytes()[..dn_norm.len() - base_norm.len()];
    let Some((&b',', before)) = head.split_last() else {
        return false;
    };
    before.iter().rev().take_while(|&&c| c == b'\\').count() % 2 == 0
}

/// The parent DN (one level up), or "" for a top entry.
pub fn parent_dn(dn_norm: &str) -> &str {
    let parts = split_unescaped(dn_norm, b',');
    if parts.len() < 2 {
        return "";
    }
    &dn_norm[parts[0].len() + 1..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        for ok in [
            "(objectClass=*)",
            "objectClass=inetOrgPerson",
            crate::config::DEFAULT_CONTAINER_FILTER,
            crate::config::DEFAULT_SECURITY_GROUP_FILTER,
            crate::config::DEFAULT_USER_FILTER,
            "(&(uid=a*b*c)(!(cn=x\\2a)))",
            "(member:1.2.840.113556.1.4.1941:=cn=x,dc=y)",
            "(:dn:2.4.8.10:=Dino)",
            "(cn~=jon)",
            "(uSNChanged>=100)",
        ] {
            assert!(
                validate_filter(ok).is_ok(),
                "{ok}: {:?}",
                validate_filter(ok)
            );
        }
        for bad in [
            "(objectClass=user",
            "objectClass=ou)",
            "(&(a=b)(c=d)",
            "(=x)",
            "(a=b\\zz)",
            "(a>=*)",
            "(a=b)(c=d)",
            "(a:=)x",
            "(a b=c)",
        ] {
            assert!(validate_filter(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn dns() {
        for ok in [
            "dc=example,dc=com",
            "CN=Smith\\, John,OU=Sales,DC=example,DC=com",
            "cn=a+sn=b,dc=c",
            "CN=Jos\\C3\\A9,DC=x",
            "OU=Ventes é,DC=x",
        ] {
            assert!(validate_dn(ok).is_ok(), "{ok}: {:?}", validate_dn(ok));
        }
        for bad in ["", "not a dn", "dc=x,,dc=y", "=x", "cn=a\\", "c n=x"] {
            assert!(validate_dn(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn normalize_dn_matches_the_component_wise_definition() {
        // the definition: each AVA's type and value trimmed and lower-cased
        // (Unicode rules), joined back with '+' and ','
        fn reference(dn: &str) -> String {
            let dn = canonical_escapes(dn);
            split_unescaped(&dn, b',')
                .into_iter()
                .map(|rdn| {
                    split_unescaped(rdn, b'+')
                        .into_iter()
                        .map(|ava| match split_once_unescaped(ava, b'=') {
                            Some((a, v)) => {
                                format!("{}={}", a.trim().to_lowercase(), v.trim().to_lowercase())
                            }
                            None => ava.trim().to_lowercase(),
                        })
                        .collect::<Vec<_>>()
                        .join("+")
                })
                .collect::<Vec<_>>()
                .join(",")
        }
        for dn in [
            "",
            "dc=com",
            " CN = Smith\\, John , OU=Sales,DC=Example,DC=com ",
            "cn=a+SN=B,dc=c",
            "CN=ΣΑΣ ΟΔΟΣ,OU=Ελλάδα,DC=x",
            "CN=Jos\\C3\\A9,DC=X\\2c",
            "novalue,DC=X",
            "cn=a\\+b=c,dc=d\\",
            "CN=İstanbul\u{3000},DC=x",
            "cn=a,,dc=b,",
            ",",
            "+=,=+",
            "cn=a\\",
            "cn=x\\é,dc=y\\,",
            "cn=a\\,,dc=b",
            "CN = \\2B Ab \\2c\\5C ,O=Z",
        ] {
            assert_eq!(normalize_dn(dn), reference(dn), "{dn}");
        }
    }

    #[test]
    fn dn_helpers() {
        let n = normalize_dn("CN=Smith\\, John, OU=Sales,DC=Example,DC=com");
        assert_eq!(n, "cn=smith\\, john,ou=sales,dc=example,dc=com");
        assert!(dn_is_under(&n, "ou=sales,dc=example,dc=com"));
        assert!(!dn_is_under(&n, "les,dc=example,dc=com"));
        assert!(dn_is_under("dc=com", "dc=com"));
        assert!(!dn_is_under("dc=com", "ou=x,dc=com"));
        assert!(!dn_is_under("xdc=com", "dc=com"));
        assert!(
            !dn_is_under("cn=a\\,ou=x,dc=com", "ou=x,dc=com"),
            "escaped comma"
        );
        assert!(
            dn_is_under("cn=a\\\\,ou=x,dc=com", "ou=x,dc=com"),
            "escaped backslash"
        );
        assert_eq!(parent_dn(&n), "ou=sales,dc=example,dc=com");
        assert_eq!(
            normalize_dn("cn=Smith\\2C John,dc=x"),
            "cn=smith\\, john,dc=x"
        );
        assert_eq!(
            canonical_escapes("cn=a\\2cb\\2Bc\\C3\\A9,dc=x"),
            "cn=a\\,b\\+c\\C3\\A9,dc=x"
        );
        assert_eq!(canonical_escapes("cn=x\\"), "cn=x\\");
        assert_eq!(canonical_escapes("cn=\\éé\\2c"), "cn=\\éé\\,");
    }
}
