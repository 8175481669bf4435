//! Typed reading of a configuration document that reports EVERY unknown key
//! and every type or enum error with its key path, not only the first. The
//! types are the only list of keys: `serde_ignored` names each key no field
//! took, `serde_path_to_error` the key of a type error, which is taken out of
//! the document before it is read again (so it falls back to its default and
//! the other keys are still checked).

use super::{err, Config, ConfigError};
use toml_edit::{DocumentMut, Item, TableLike, Value};

/// One step of a key path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// The configuration in `doc` (keys in error at their defaults) and every
/// unknown key and type/enum error in it, unknown keys first; no
/// configuration when an error could not be stepped over.
pub(super) fn read(mut doc: DocumentMut) -> (Option<Config>, Vec<ConfigError>) {
    let mut unknown: Vec<String> = Vec::new();
    let mut errors = Vec::new();
    // after an error that cannot be stepped over, the reading goes on only
    // to find the unknown keys of the rest (see `drop_through`)
    let mut stopped = false;
    let mut dropped = Dropped::default();
    let cfg = loop {
        let mut ignored: Vec<Vec<Step>> = Vec::new();
        let mut note = |path: serde_ignored::Path| ignored.push(steps_of_ignored(&path));
        let de = serde_ignored::Deserializer::new(
            toml_edit::de::Deserializer::from(doc.clone()),
            &mut note,
        );
        let result = serde_path_to_error::deserialize::<_, Config>(de);
        for path in ignored {
            let key = key_of(&dropped.original(path));
            if !unknown.contains(&key) {
                unknown.push(key);
            }
        }
        let e = match result {
            Ok(cfg) => break (!stopped).then_some(cfg),
            Err(e) => e,
        };
        let path = steps_of_error(e.path());
        if !stopped {
            errors.push(err(
                key_of(&dropped.original(path.clone())),
                e.inner().message().trim().to_string(),
            ));
        }
        // a key that cannot be taken out (a required key missing from an
        // array item) ends the typed reading
        if !remove(&mut doc, &path) {
            stopped = true;
            if !dropped.drop_through(&mut doc, &path) {
                break None;
            }
        }
    };
    let mut all: Vec<ConfigError> = unknown.into_iter().map(|k| err(k, "unknown key")).collect();
    all.extend(errors);
    (cfg, all)
}

fn steps_of_ignored(path: &serde_ignored::Path) -> Vec<Step> {
    use serde_ignored::Path;
    let (parent, step) = match path {
        Path::Root => return Vec::new(),
        Path::Seq { parent, index } => (parent, Some(Step::Index(*index))),
        Path::Map { parent, key } => (parent, Some(Step::Key(key.clone()))),
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => (parent, None),
    };
    let mut steps = steps_of_ignored(parent);
    steps.extend(step);
    steps
}

fn steps_of_error(path: &serde_path_to_error::Path) -> Vec<Step> {
    use serde_path_to_error::Segment;
    path.iter()
        .map(|s| match s {
            Segment::Seq { index } => Step::Index(*index),
            Segment::Map { key } => Step::Key(key.clone()),
            Segment::Enum { variant } => Step::Key(variant.clone()),
            Segment::Unknown => Step::Key("?".into()),
        })
        .collect()
}

/// `sync.items[1].when_removed`; "(file)" for the whole file.
fn key_of(path: &[Step]) -> String {
    if path.is_empty() {
        return "(file)".into();
    }
    let mut key = String::new();
    for step in path {
        match step {
            Step::Key(k) if key.is_empty() => key.push_str(k),
            Step::Key(k) => {
                key.push('.');
                key.push_str(k);
            }
            Step::Index(i) => key.push_str(&format!("[{i}]")),
        }
    }
    key
}

/// The table at `path` (tables, inline tables and array items).
fn table_at<'a>(table: &'a mut dyn TableLike, path: &[Step]) -> Option<&'a mut dyn TableLike> {
    match path {
        [] => Some(table),
        [Step::Key(k), Step::Index(i), rest @ ..] => {
            let item = item_at(table.get_mut(k)?, *i)?;
            table_at(item, rest)
        }
        [Step::Key(k), rest @ ..] => table_at(table.get_mut(k)?.as_table_like_mut()?, rest),
        [Step::Index(_), ..] => None,
    }
}

/// Item `index` of an array of tables or an array of inline tables.
fn item_at(array: &mut Item, index: usize) -> Option<&mut dyn TableLike> {
    match array {
        Item::ArrayOfTables(a) => a.get_mut(index).map(|t| t as &mut dyn TableLike),
        Item::Value(Value::Array(a)) => a
            .get_mut(index)
            .and_then(Value::as_inline_table_mut)
            .map(|t| t as &mut dyn TableLike),
        _ => None,
    }
}

/// Take the key at `path` out of its table (array items are left in place:
/// taking one out would renumber the others).
fn remove(doc: &mut DocumentMut, path: &[Step]) -> bool {
    match path.split_last() {
        Some((Step::Key(k), parent)) => table_at(doc.as_table_mut(), parent)
            .and_then(|t| t.remove(k))
            .is_some(),
        _ => false,
    }
}

/// Array items taken out of the document to read on past an error in an
/// item: how many from the front of each array, to name the keys of the
/// others by their index in the file.
#[derive(Default)]
struct Dropped(Vec<(Vec<Step>, usize)>);

impl Dropped {
    /// Take items 0 to N out of the array whose item N is at `path`.
    fn drop_through(&mut self, doc: &mut DocumentMut, path: &[Step]) -> bool {
        let Some((Step::Index(n), array_path)) = path.split_last() else {
            return false;
        };
        let Some((Step::Key(k), parent)) = array_path.split_last() else {
            return false;
        };
        let Some(array) = table_at(doc.as_table_mut(), parent).and_then(|t| t.get_mut(k)) else {
            return false;
        };
        match array {
            Item::ArrayOfTables(a) if *n < a.len() => (0..=*n).for_each(|_| a.remove(0)),
            Item::Value(Value::Array(a)) if *n < a.len() => (0..=*n).for_each(|_| {
                a.remove(0);
            }),
            _ => return false,
        }
        match self.0.iter_mut().find(|(p, _)| p == array_path) {
            Some((_, count)) => *count += n + 1,
            None => self.0.push((array_path.to_vec(), n + 1)),
        }
        true
    }

    /// `path` as it is in the file: array indices after the items taken out.
    fn original(&self, mut path: Vec<Step>) -> Vec<Step> {
        for (array, count) in &self.0 {
            if path.len() > array.len() && path.starts_with(array) {
                if let Step::Index(i) = &mut path[array.len()] {
                    *i += count;
                }
            }
        }
        path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(text: &str) -> Vec<String> {
        let doc: DocumentMut = text.parse().unwrap_or_default();
        read(doc).1.into_iter().map(|e| e.key).collect()
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
    fn unknown_keys_after_an_error_that_ends_the_reading_are_still_listed() {
        let k = keys(
            "[[directory.domains]]\nname = \"a.test\"\n\
             [[directory.domains]]\nname = \"b.test\"\nbogus = 1\n[directory.domains.query_bind]\n\
             [[directory.domains]]\nname = \"c.test\"\ncolour = 1\n\
             [[directory.domains]]\nname = \"d.test\"\nshade = 1\n[directory.domains.query_bind]\n\
             [sync]\ninterval = 5\nfoo = 1\n",
        );
        // the type error after the first one that ends the reading
        // (sync.interval) is not listed: the reading has stopped
        assert_eq!(
            k,
            vec![
                "directory.domains[1].bogus",
                "directory.domains[2].colour",
                "directory.domains[3].shade",
                "sync.foo",
                "directory.domains[0]",
            ]
        );
    }

    #[test]
    fn a_good_table_reads() {
        let doc: DocumentMut = "[sync]\ninterval = \"1m\"\n".parse().unwrap_or_default();
        let (cfg, errors) = read(doc);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(cfg.map(|c| c.sync.interval).as_deref(), Some("1m"));
    }
}
