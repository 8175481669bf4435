//! Passwords written in a configuration's text (`password = "…"` of
//! `[directory.query_bind]`, `[directory.auth_bind]`, each
//! `[[directory.domains]]` query bind and `[smtp]`), sealed in place into
//! `password_encrypted = "v1:…"` before the text is stored. The rest of the
//! text (comments, order, layout) is kept as written.

use toml_edit::{DocumentMut, Item, TableLike, Value};

use crate::key::{SecretKey, KEY_ENV, KEY_FILE_ENV};

/// Every table that may hold a password, with the setting it is sealed for
/// (`directory.query_bind`, `directory.domains.<name>.query_bind`, `smtp`),
/// the query bind first.
fn each_password_table(doc: &mut DocumentMut, f: &mut dyn FnMut(&str, &mut dyn TableLike)) {
    if let Some(d) = doc.get_mut("directory").and_then(Item::as_table_like_mut) {
        for name in ["query_bind", "auth_bind"] {
            if let Some(b) = d.get_mut(name).and_then(Item::as_table_like_mut) {
                f(&format!("directory.{name}"), b);
            }
        }
        let mut domain = |t: &mut dyn TableLike| {
            let name = t
                .get("name")
                .and_then(Item::as_str)
                .map(mfasync_core::config::domain_bind_key)
                .unwrap_or_else(|| mfasync_core::config::domain_bind_key(""));
            if let Some(b) = t.get_mut("query_bind").and_then(Item::as_table_like_mut) {
                f(&name, b);
            }
        };
        match d.get_mut("domains") {
            Some(Item::ArrayOfTables(list)) => {
                for t in list.iter_mut() {
                    domain(t);
                }
            }
            Some(Item::Value(Value::Array(list))) => {
                for t in list.iter_mut().filter_map(Value::as_inline_table_mut) {
                    domain(t);
                }
            }
            _ => {}
        }
    }
    if let Some(s) = doc.get_mut("smtp").and_then(Item::as_table_like_mut) {
        f("smtp", s);
    }
}

/// The text as a document; None when it is not TOML (validation says why).
fn document(text: &str) -> Option<DocumentMut> {
    text.parse::<DocumentMut>().ok()
}

/// Replace `password` in `table` by `password_encrypted = sealed`.
fn replace_inline(table: &mut dyn TableLike, sealed: String) {
    table.remove("password");
    table.insert("password_encrypted", Item::Value(Value::from(sealed)));
}

/// The key paths of the passwords written in clear in a configuration text
/// (`directory.query_bind.password`, `smtp.password`, …), in order.
pub fn inline_passwords(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    if let Some(mut doc) = document(text) {
        each_password_table(&mut doc, &mut |setting, t| {
            if t.get("password").and_then(Item::as_str).is_some() {
                found.push(format!("{setting}.password"));
            }
        });
    }
    found
}

/// Seal every password written in clear in `text` with `key`. The text comes
/// back unchanged when it has none (or is not TOML); errors name the key path.
pub fn seal_inline(text: &str, key: &SecretKey) -> Result<String, Vec<String>> {
    let Some(mut doc) = document(text) else {
        return Ok(text.to_string());
    };
    let mut errors = Vec::new();
    let mut changed = false;
    each_password_table(&mut doc, &mut |setting, t| {
        let Some(password) = t.get("password").and_then(Item::as_str).map(str::to_string) else {
            return;
        };
        match key.seal(setting, &password) {
            Ok(sealed) => {
                replace_inline(t, sealed);
                changed = true;
            }
            Err(e) => errors.push(format!("{setting}.password: {e}")),
        }
    });
    match (errors.is_empty(), changed) {
        (false, _) => Err(errors),
        (true, false) => Ok(text.to_string()),
        (true, true) => Ok(doc.to_string()),
    }
}

/// A configuration typed in the web portal: its passwords are stored only
/// sealed, so without a key any password written in clear is refused (use
/// `password_file` / `password_env` there instead).
pub fn seal_typed_config(text: &str, key: Option<&SecretKey>) -> Result<String, Vec<String>> {
    match key {
        Some(k) => seal_inline(text, k),
        None => {
            let found = inline_passwords(text);
            if found.is_empty() {
                return Ok(text.to_string());
            }
            Err(found
                .iter()
                .map(|p| {
                    format!(
                        "{p}: not stored: passwords typed here are stored encrypted, and the service has no secret key (set {KEY_FILE_ENV} or {KEY_ENV}), or use password_file / password_env"
                    )
                })
                .collect())
        }
    }
}

/// What [`reseal`] changed in one text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resealed {
    pub text: String,
    /// Passwords that were in clear, now sealed.
    pub sealed: usize,
    /// Sealed values opened with the old key and sealed again with the new.
    pub resealed: usize,
}

/// `db rekey` for one stored text: seal its clear passwords with `key`, and
/// with an `old` key, seal again with `key` what `old` opens (values `key`
/// already opens are left as they are). None: nothing to change. A sealed
/// value neither key opens is an error naming its key path.
pub fn reseal(
    text: &str,
    key: &SecretKey,
    old: Option<&SecretKey>,
) -> Result<Option<Resealed>, Vec<String>> {
    let Some(mut doc) = document(text) else {
        return Ok(None);
    };
    let (mut sealed, mut resealed) = (0, 0);
    let mut errors = Vec::new();
    each_password_table(&mut doc, &mut |setting, t| {
        if let Some(password) = t.get("password").and_then(Item::as_str).map(str::to_string) {
            match key.seal(setting, &password) {
                Ok(s) => {
                    replace_inline(t, s);
                    sealed += 1;
                }
                Err(e) => errors.push(format!("{setting}.password: {e}")),
            }
        }
        let Some(old) = old else {
            return;
        };
        let Some(value) = t
            .get("password_encrypted")
            .and_then(Item::as_str)
            .map(str::to_string)
        else {
            return;
        };
        match old.open(setting, &value) {
            Ok(plain) => match key.seal(setting, &plain) {
                Ok(s) => {
                    t.insert("password_encrypted", Item::Value(Value::from(s)));
                    resealed += 1;
                }
                Err(e) => errors.push(format!("{setting}.password_encrypted: {e}")),
            },
            Err(_) if key.open(setting, &value).is_ok() => {}
            Err(_) => errors.push(format!(
                "{setting}.password_encrypted: opened by neither the old key nor the current one"
            )),
        }
    });
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok((sealed + resealed > 0).then(|| Resealed {
        text: doc.to_string(),
        sealed,
        resealed,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn key(hex: &str) -> SecretKey {
        SecretKey::from_hex(hex).unwrap_or_else(|e| panic!("{e}"))
    }

    fn get<'a>(doc: &'a toml_edit::DocumentMut, path: &[&str]) -> &'a str {
        let mut item = doc.as_item();
        for p in path {
            item = match p.parse::<usize>() {
                Ok(i) => item.get(i).unwrap_or_else(|| panic!("{path:?}")),
                Err(_) => item.get(p).unwrap_or_else(|| panic!("{path:?}")),
            };
        }
        item.as_str().unwrap_or_else(|| panic!("{path:?}"))
    }

    #[test]
    fn typed_configurations_have_their_bind_passwords_sealed() {
        let k = key(HEX);
        let text = "# mine\n[directory.query_bind]\ntype = \"simple\"\ndn = \"cn=a\"\npassword = \"pw1\"\n";
        let out = seal_typed_config(text, Some(&k)).unwrap_or_default();
        assert!(
            !out.contains("pw1")
                && out.contains("password_encrypted")
                && out.starts_with("# mine\n"),
            "{out}"
        );
        let t: toml_edit::DocumentMut = out.parse().unwrap_or_default();
        let sealed = get(&t, &["directory", "query_bind", "password_encrypted"]);
        assert_eq!(k.open("directory.query_bind", sealed).as_deref(), Ok("pw1"));
        // nothing to seal: unchanged, comments kept
        let plain = "# mine\n[sync]\nenabled = false\n";
        assert_eq!(seal_typed_config(plain, Some(&k)).as_deref(), Ok(plain));
        // no key, or an SMTP password: refused by key path
        let e = seal_typed_config(text, None).unwrap_err();
        assert!(
            e[0].starts_with("directory.query_bind.password: not stored"),
            "{e:?}"
        );
        let e = seal_typed_config("[smtp]\npassword = \"x\"\n", None).unwrap_err();
        assert!(e[0].starts_with("smtp.password: not stored"), "{e:?}");
        let out =
            seal_typed_config("[smtp]\npassword = \"mailpw\"\n", Some(&k)).unwrap_or_default();
        let t: toml_edit::DocumentMut = out.parse().unwrap_or_default();
        assert!(!out.contains("mailpw"), "{out}");
        assert_eq!(
            k.open("smtp", get(&t, &["smtp", "password_encrypted"]))
                .as_deref(),
            Ok("mailpw")
        );

        // another domain's query bind: sealed for its own setting
        let text = "[[directory.domains]]\nname = \"Other.Test\"\n[directory.domains.query_bind]\n\
                    type = \"simple\"\ndn = \"cn=svc\"\npassword = \"domainpw\"\n";
        let out = seal_typed_config(text, Some(&k)).unwrap_or_default();
        assert!(!out.contains("domainpw"), "{out}");
        let t: toml_edit::DocumentMut = out.parse().unwrap_or_default();
        let sealed = get(
            &t,
            &[
                "directory",
                "domains",
                "0",
                "query_bind",
                "password_encrypted",
            ],
        );
        assert_eq!(
            k.open("directory.domains.other.test.query_bind", sealed)
                .as_deref(),
            Ok("domainpw")
        );
        assert!(k.open("directory.query_bind", sealed).is_err());
        let e = seal_typed_config(text, None).unwrap_err();
        assert!(
            e[0].starts_with("directory.domains.other.test.query_bind.password: not stored"),
            "{e:?}"
        );
    }

    #[test]
    fn every_way_of_writing_a_table_is_found() {
        let k = key(HEX);
        let text = "[directory]\nauth_bind.password = \"a1\"\n\
                    query_bind = { type = \"simple\", dn = \"cn=q\", password = \"q1\" }\n\
                    domains = [{ name = \"x.test.\", query_bind = { password = \"d1\" } }]\n\
                    [smtp]\nserver = \"smtp://h\"\npassword = \"s1\" # the mail password\n";
        assert_eq!(
            inline_passwords(text),
            [
                "directory.query_bind.password",
                "directory.auth_bind.password",
                "directory.domains.x.test.query_bind.password",
                "smtp.password"
            ]
        );
        let out = seal_inline(text, &k).unwrap_or_default();
        for pw in ["a1", "q1", "d1", "s1"] {
            assert!(!out.contains(&format!("\"{pw}\"")), "{pw}: {out}");
        }
        assert!(inline_passwords(&out).is_empty(), "{out}");
        let t: toml_edit::DocumentMut = out.parse().unwrap_or_default();
        assert_eq!(
            k.open(
                "directory.auth_bind",
                get(&t, &["directory", "auth_bind", "password_encrypted"])
            )
            .as_deref(),
            Ok("a1")
        );
        assert_eq!(
            k.open(
                "directory.domains.x.test.query_bind",
                get(
                    &t,
                    &[
                        "directory",
                        "domains",
                        "0",
                        "query_bind",
                        "password_encrypted"
                    ]
                )
            )
            .as_deref(),
            Ok("d1")
        );
        // not TOML: left for validation to report
        assert_eq!(seal_inline("[x", &k).as_deref(), Ok("[x"));
        assert!(inline_passwords("[x").is_empty());
    }

    #[test]
    fn reseal_seals_clear_passwords_and_moves_old_sealed_ones_to_the_new_key() {
        let old = key(HEX);
        let new = key(&HEX.replace('0', "e"));
        let by_old = old.seal("smtp", "mailpw").unwrap_or_default();
        let text = format!(
            "[directory.query_bind]\npassword = \"q1\"\n[smtp]\nserver = \"smtp://h\"\npassword_encrypted = \"{by_old}\"\n"
        );
        // without the old key: only the clear one
        let r = reseal(&text, &new, None).unwrap_or_default();
        let r = r.unwrap_or_else(|| panic!("nothing changed"));
        assert_eq!((r.sealed, r.resealed), (1, 0));
        assert!(
            r.text.contains(&by_old) && !r.text.contains("q1"),
            "{}",
            r.text
        );
        // with it: both under the new key; again: nothing left to do
        let r = reseal(&text, &new, Some(&old)).unwrap_or_default();
        let r = r.unwrap_or_else(|| panic!("nothing changed"));
        assert_eq!((r.sealed, r.resealed), (1, 1));
        let t: toml_edit::DocumentMut = r.text.parse().unwrap_or_default();
        assert_eq!(
            new.open("smtp", get(&t, &["smtp", "password_encrypted"]))
                .as_deref(),
            Ok("mailpw")
        );
        assert_eq!(reseal(&r.text, &new, Some(&old)), Ok(None));
        // sealed with a third key: named, nothing changed
        let third = key(&HEX.replace('1', "c"));
        let e = reseal(&text, &third, Some(&new)).unwrap_err();
        assert_eq!(
            e,
            ["smtp.password_encrypted: opened by neither the old key nor the current one"]
        );
    }
}
