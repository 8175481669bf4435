//! Typed reading of a configuration table that reports EVERY type or enum
//! error with its key path, not only the first: each error's key (found by
//! `serde_path_to_error`) is taken out of the table and the rest is read
//! again, so the keys in error fall back to their defaults and the others
//! are still checked.

use super::{err, Config, ConfigError};
use serde_path_to_error::{Path, Segment};

/// The configuration in `root` (keys in error at their defaults) and every
/// type/enum error in it; no configuration when an error could not be
/// stepped over.
pub(super) fn read(mut root: toml::Table) -> (Option<Config>, Vec<ConfigError>) {
    let mut errors = Vec::new();
    loop {
        let value = toml::Value::Table(root.clone());
        match serde_path_to_error::deserialize::<_, Config>(value) {
            Ok(cfg) => return (Some(cfg), errors),
            Err(e) => {
                let key = key_of(e.path());
                errors.push(err(key, e.inner().message().trim().to_string()));
                // a key that cannot be taken out (a required key missing
                // from an array item) ends the reading
                if !remove(&mut root, e.path()) {
                    return (None, errors);
                }
            }
        }
    }
}

/// `sync.items[1].when_removed`; "(file)" for the whole file.
fn key_of(path: &Path) -> String {
    if path.iter().next().is_none() {
        "(file)".into()
    } else {
        path.to_string()
    }
}

/// Take the value at `path` out of `root`: its key out of its table (array
/// items are left in place: taking one out would renumber the others).
fn remove(root: &mut toml::Table, path: &Path) -> bool {
    let segments: Vec<&Segment> = path.iter().collect();
    remove_in(root, &segments)
}

fn remove_in(table: &mut toml::Table, path: &[&Segment]) -> bool {
    match path {
        [Segment::Map { key }] => table.remove(key.as_str()).is_some(),
        [Segment::Map { key }, rest @ ..] => match table.get_mut(key.as_str()) {
            Some(value) => remove_in_value(value, rest),
            None => false,
        },
        _ => false,
    }
}

fn remove_in_value(value: &mut toml::Value, path: &[&Segment]) -> bool {
    match (value, path.first()) {
        (toml::Value::Table(t), Some(Segment::Map { .. })) => remove_in(t, path),
        (toml::Value::Array(a), Some(Segment::Seq { index })) if path.len() > 1 => {
            match a.get_mut(*index) {
                Some(v) => remove_in_value(v, &path[1..]),
                None => false,
            }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(text: &str) -> Vec<String> {
        let root: toml::Table = text.parse().unwrap_or_default();
        read(root).1.into_iter().map(|e| e.key).collect()
    }

    #[test]
    fn every_type_and_enum_error_is_listed() {
        let k = keys(
            "[directory]\nquery_size_limit = \"many\"\nstarttls = 3\nsource = \"ldpa\"\n\
             [directory.query_bind]\ntype = \"simpel\"\n\
             [[sync.items]]\ndn = \"ou=a,dc=b\"\n[[sync.items]]\ndn = \"ou=b,dc=b\"\nwhen_removed = \"explode\"\n\
             [sync.items.user]\nmethod = \"pigeon\"\nenabled = \"yes\"\n",
        );
        let mut k = k;
        k.sort();
        assert_eq!(
            k,
            vec![
                "directory.query_bind.type",
                "directory.query_size_limit",
                "directory.source",
                "directory.starttls",
                "sync.items[1].user.enabled",
                "sync.items[1].user.method",
                "sync.items[1].when_removed",
            ]
        );
    }

    #[test]
    fn a_missing_required_key_is_named_and_ends_the_reading() {
        let k = keys("[[directory.domains]]\nname = \"a.test\"\n");
        assert_eq!(k, vec!["directory.domains[0]"]);
    }

    #[test]
    fn a_good_table_reads() {
        let root: toml::Table = "[sync]\ninterval = \"1m\"\n".parse().unwrap_or_default();
        let (cfg, errors) = read(root);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(cfg.map(|c| c.sync.interval).as_deref(), Some("1m"));
    }
}
