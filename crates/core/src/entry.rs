//! A directory entry as read from LDAP, independent of the LDAP client library.

use std::collections::HashMap;

/// One directory entry. Attribute names are stored lower-cased (LDAP attribute
/// names are case-insensitive); values are raw bytes so binary attributes such
/// as `objectGUID` survive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    pub dn: String,
    pub attrs: HashMap<String, Vec<Vec<u8>>>,
}

impl Entry {
    pub fn new(dn: impl Into<String>) -> Self {
        Entry {
            dn: dn.into(),
            attrs: HashMap::new(),
        }
    }

    /// Builder used by tests and the LDAP layer: add text values.
    pub fn with(mut self, name: &str, values: &[&str]) -> Self {
        self.attrs
            .entry(name.to_ascii_lowercase())
            .or_default()
            .extend(values.iter().map(|v| v.as_bytes().to_vec()));
        self
    }

    pub fn with_bytes(mut self, name: &str, value: Vec<u8>) -> Self {
        self.attrs
            .entry(name.to_ascii_lowercase())
            .or_default()
            .push(value);
        self
    }

    pub fn values(&self, name: &str) -> &[Vec<u8>] {
        // names already lower-case (see `mapping::lowercase_names`) need no copy
        let found = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            self.attrs.get(&name.to_ascii_lowercase())
        } else {
            self.attrs.get(name)
        };
        found.map(Vec::as_slice).unwrap_or(&[])
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
        let s = String::from_utf8_lossy(v).trim().to_string();
        (!s.is_empty()).then_some(s)
    }

    /// All values as text (lossy UTF-8).
    pub fn strs(&self, name: &str) -> Vec<String> {
        self.values(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect()
    }
}
