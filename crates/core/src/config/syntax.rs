//! A TOML syntax error, named by the key being written where it occurred
//! (the document has no keys yet, so the key is read off the text) and by
//! its line and column.

use super::{err, ConfigError};

/// `sync.interval: line 2, column 13: expected newline, …`; `(file)` when
/// the error comes before any key.
pub(super) fn error(text: &str, e: &toml_edit::TomlError) -> ConfigError {
    let at = e.span().map_or(0, |s| s.start);
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .unwrap_or_default()
        .chars()
        .count()
        + 1;
    let key = key_at(text, at);
    err(
        if key.is_empty() {
            "(file)".to_string()
        } else {
            key
        },
        format!("line {line}, column {column}: {}", e.message().trim()),
    )
}

/// The key path being written at byte `pos`: the latest table header
/// (array items numbered, `[sync.items.user]` under the latest item) and
/// the latest `key =` line up to `pos`.
fn key_at(text: &str, pos: usize) -> String {
    let mut table = String::new();
    let mut item_index: std::collections::HashMap<String, usize> = Default::default();
    let mut last_key = String::new();
    let mut offset = 0usize;
    for line in text.split_inclusive('\n') {
        let start = offset;
        offset += line.len();
        let t = line.trim();
        if let Some(name) = t.strip_prefix("[[").and_then(|r| r.split("]]").next()) {
            let name = name.trim().to_string();
            let n = item_index
                .entry(name.clone())
                .and_modify(|n| *n += 1)
                .or_insert(0);
            table = format!("{name}[{n}]");
            last_key.clear();
        } else if let Some(name) = t.strip_prefix('[').and_then(|r| r.split(']').next()) {
            let name = name.trim().to_string();
            let mut resolved = name.clone();
            for (arr, n) in &item_index {
                if let Some(rest) = name.strip_prefix(&format!("{arr}.")) {
                    resolved = format!("{arr}[{n}].{rest}");
                }
            }
            table = resolved;
            last_key.clear();
        } else if let Some((k, _)) = t.split_once('=') {
            if !t.starts_with('#') {
                last_key = k.trim().trim_matches('"').to_string();
            }
        }
        if pos < offset && pos >= start {
            break;
        }
    }
    match (table.is_empty(), last_key.is_empty()) {
        (true, _) => last_key,
        (false, true) => table,
        (false, false) => format!("{table}.{last_key}"),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::parse;

    #[test]
    fn a_syntax_error_names_the_key_and_its_place() {
        let e = parse("[sync]\ninterval = 5m\n").unwrap_err();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].key, "sync.interval");
        assert!(
            e[0].message.starts_with("line 2, column "),
            "{}",
            e[0].message
        );
        let e =
            parse("[[sync.items]]\ndn = \"ou=a\"\n[[sync.items]]\n[sync.items.user]\nmethod = x\n")
                .unwrap_err();
        assert_eq!(e[0].key, "sync.items[1].user.method");
        let e = parse("= 1\n").unwrap_err();
        assert_eq!(e[0].key, "(file)");
    }
}
