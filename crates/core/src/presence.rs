//! Whether a stored directory user that no item holds any more was deleted
//! from the directory or still exists elsewhere (moved out of the base DN,
//! filtered out, removed from its group). Only a proof of deletion (a
//! tombstone, a DirSync `isDeleted`, or a lookup by unique id that finds
//! nothing) makes a user "deleted"; an absence from a read never does.

use crate::config::UniqueIdType;
use crate::escape::{filter_bytes, filter_value};

/// What the directory says about a stored user that left every item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// The directory proved it deleted: `remove_deleted_users` decides.
    Deleted,
    /// Still an entry of the directory: its last item's `when_removed` decides.
    Exists,
    /// Not known (the lookup failed or was not made): left as it is.
    Unknown,
}

/// How many unique ids one lookup search asks for (an OR filter).
pub const LOOKUP_BATCH: usize = 100;

/// The filter that finds the entries with these unique ids (as stored: the
/// text [`crate::mapping::unique_id_text`] made), in any object class and
/// whatever the user filter says: `(|(attr=v1)(attr=v2)…)`. An objectGUID
/// (`guid`) is matched by its binary value (little-endian, RFC 4515 `\xx`
/// per byte); a byte array written as hex both as bytes and as text (a
/// false match only ever keeps a user); a string as itself, escaped.
/// None when no id can be written as an assertion.
pub fn lookup_filter(attr: &str, kind: UniqueIdType, ids: &[&str]) -> Option<String> {
    let mut parts = String::new();
    for id in ids {
        for value in assertion_values(kind, id) {
            parts.push_str(&format!("({attr}={value})"));
        }
    }
    (!parts.is_empty()).then(|| format!("(|{parts})"))
}

fn assertion_values(kind: UniqueIdType, id: &str) -> Vec<String> {
    match kind {
        UniqueIdType::Guid => match uuid::Uuid::parse_str(id.trim()) {
            Ok(u) => vec![filter_bytes(&u.to_bytes_le())],
            // an id that is not a GUID's text cannot be asked for as one
            Err(_) => vec![filter_value(id)],
        },
        UniqueIdType::ByteArray => {
            let mut v = vec![filter_value(id)];
            if let Some(bytes) = hex_bytes(id) {
                v.insert(0, filter_bytes(&bytes));
            }
            v
        }
        UniqueIdType::String => vec![filter_value(id)],
    }
}

fn hex_bytes(s: &str) -> Option<Vec<u8>> {
    if s.is_empty() || !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::unique_id_text;

    #[test]
    fn a_guid_is_asked_for_by_its_bytes() {
        let raw = [4u8, 3, 2, 1, 6, 5, 8, 7, 9, 10, 11, 12, 13, 14, 15, 16];
        let text = unique_id_text(UniqueIdType::Guid, &raw).unwrap_or_default();
        let f = lookup_filter("objectGUID", UniqueIdType::Guid, &[&text]).unwrap_or_default();
        assert_eq!(
            f,
            "(|(objectGUID=\\04\\03\\02\\01\\06\\05\\08\\07\\09\\0a\\0b\\0c\\0d\\0e\\0f\\10))"
        );
        assert!(crate::filter::validate_filter(&f).is_ok());
    }

    #[test]
    fn strings_are_escaped_and_batched() {
        let f = lookup_filter("entryUUID", UniqueIdType::String, &["0b3c-1", "a*)(uid=*"])
            .unwrap_or_default();
        assert_eq!(f, "(|(entryUUID=0b3c-1)(entryUUID=a\\2a\\29\\28uid=\\2a))");
        assert!(crate::filter::validate_filter(&f).is_ok());
        assert_eq!(lookup_filter("entryUUID", UniqueIdType::String, &[]), None);
    }

    #[test]
    fn byte_arrays_are_asked_for_as_bytes_and_as_text() {
        let raw = [0u8, 0xff];
        let text = unique_id_text(UniqueIdType::ByteArray, &raw).unwrap_or_default();
        let f = lookup_filter("id", UniqueIdType::ByteArray, &[&text]).unwrap_or_default();
        assert_eq!(f, "(|(id=\\00\\ff)(id=00ff))");
        let f = lookup_filter("id", UniqueIdType::ByteArray, &["emp-7"]).unwrap_or_default();
        assert_eq!(f, "(|(id=emp-7))");
    }
}
