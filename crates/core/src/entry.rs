//! A directory entry as read from LDAP, independent of the LDAP client library.

/// The longest attribute value (and DN) kept from the directory, in bytes.
/// No value mfasync maps (names, addresses, phones, descriptions,
/// identifiers) comes near it; a longer value is dropped where the entry is
/// read, with a warning naming the entry and attribute, so that one
/// directory value cannot fill the MFA database or the service's memory.
pub const MAX_VALUE_BYTES: usize = 64 << 10;

/// One directory entry. Attribute names are stored lower-cased (LDAP attribute
/// names are case-insensitive); values are raw bytes so binary attributes such
/// as `objectGUID` survive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    pub dn: String,
    pub attrs: Attrs,
}

/// The attributes of an entry: lower-cased names, each once, with their
/// values. A short list rather than a hash map: an entry carries a handful
/// of attributes (those asked for), and a full sync builds one per user, so
/// building it must cost little (no hashing, one allocation for the list);
/// a lookup compares names without copying them. Equality ignores order.
#[derive(Debug, Clone, Default)]
pub struct Attrs(Vec<(String, Vec<Vec<u8>>)>);

impl Attrs {
    pub fn new() -> Self {
        Attrs(Vec::new())
    }

    pub fn with_capacity(n: usize) -> Self {
        Attrs(Vec::with_capacity(n))
    }

    /// The values of `name` (any case).
    pub fn get(&self, name: &str) -> Option<&Vec<Vec<u8>>> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The values of `name`, added empty when absent. `name` is lower-cased
    /// in place (no copy).
    pub fn slot(&mut self, mut name: String) -> &mut Vec<Vec<u8>> {
        let i = match self
            .0
            .iter()
            .position(|(n, _)| n.eq_ignore_ascii_case(&name))
        {
            Some(i) => i,
            None => {
                name.make_ascii_lowercase();
                self.0.push((name, Vec::new()));
                self.0.len() - 1
            }
        };
        &mut self.0[i].1
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> + '_ {
        self.0.iter().map(|(n, _)| n)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Vec<Vec<u8>>)> + '_ {
        self.0.iter().map(|(n, v)| (n, v))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl PartialEq for Attrs {
    fn eq(&self, other: &Self) -> bool {
        // names are unique within each list
        self.0.len() == other.0.len()
            && self
                .0
                .iter()
                .all(|(n, v)| other.get(n).is_some_and(|w| w == v))
    }
}

impl Eq for Attrs {}

impl<'a> IntoIterator for &'a Attrs {
    type Item = (&'a String, &'a Vec<Vec<u8>>);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (String, Vec<Vec<u8>>)>,
        fn(&'a (String, Vec<Vec<u8>>)) -> (&'a String, &'a Vec<Vec<u8>>),
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(n, v)| (n, v))
    }
}

impl Entry {
    pub fn new(dn: impl Into<String>) -> Self {
        Entry {
            dn: dn.into(),
            attrs: Attrs::new(),
        }
    }

    /// Builder used by tests and the LDAP layer: add text values.
    pub fn with(mut self, name: &str, values: &[&str]) -> Self {
        self.attrs
            .slot(name.to_string())
            .extend(values.iter().map(|v| v.as_bytes().to_vec()));
        self
    }

    pub fn with_bytes(mut self, name: &str, value: Vec<u8>) -> Self {
        self.attrs.slot(name.to_string()).push(value);
        self
    }

    /// The values of `name` (any case; no copy of the name).
    pub fn values(&self, name: &str) -> &[Vec<u8>] {
        self.attrs.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn first_bytes(&self, name: &str) -> Option<&[u8]> {
        if name.is_empty() {
            return None;
        }
        self.values(name).first().map(Vec::as_slice)
    }

    /// First value as text (lossy UTF-8), trimmed; empty values count as absent.
    pub fn first_str(&self, name: &str) -> Option<String> {
        let v = self.first_bytes(name)?;
        let s = String::from_utf8_lossy(v);
        let t = s.trim();
        (!t.is_empty()).then(|| t.to_string())
    }

    /// All values as text (lossy UTF-8).
    pub fn strs(&self, name: &str) -> Vec<String> {
        self.values(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_case_insensitive_and_merged() {
        let e = Entry::new("cn=a")
            .with("Mail", &["a@x"])
            .with("MAIL", &["b@x"])
            .with_bytes("objectGUID", vec![1, 2]);
        assert_eq!(e.values("mail").len(), 2);
        assert_eq!(e.first_str("mAiL").as_deref(), Some("a@x"));
        assert_eq!(e.first_bytes("objectguid"), Some(&[1u8, 2][..]));
        assert_eq!(e.attrs.keys().collect::<Vec<_>>(), ["mail", "objectguid"]);
        assert!(e.values("sn").is_empty());
        assert_eq!(e.first_bytes(""), None);
        // equality ignores the order of attributes
        let f = Entry::new("cn=a")
            .with_bytes("objectguid", vec![1, 2])
            .with("mail", &["a@x", "b@x"]);
        assert_eq!(e, f);
        assert_ne!(e, Entry::new("cn=a").with("mail", &["a@x", "b@x"]));
        assert_eq!(Entry::new("cn=a").with("sn", &[" "]).first_str("sn"), None);
    }
}
