//! Secrets typed in the portal (bind passwords) are stored sealed: the
//! configuration holds `password_encrypted = "v1:..."`, XChaCha20-Poly1305
//! with a random 24-byte nonce and the key path (such as
//! `directory.query_bind`) as associated data, so a sealed value cannot be
//! moved to another setting. The 256-bit key is the administrator's: 64 hex
//! digits in the file named by `MFASYNC_SECRET_KEY_FILE` (for example made
//! with `openssl rand -hex 32`), or in `MFASYNC_SECRET_KEY` itself. Without a
//! key the portal refuses to store a typed password (use `password_file` or
//! `password_env` in the configuration file instead). The service opens
//! sealed passwords with the same key when it binds. Keys and secrets are
//! never logged or shown.

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;

/// The environment variable naming the key file.
pub const KEY_FILE_ENV: &str = "MFASYNC_SECRET_KEY_FILE";
/// The environment variable holding the key itself (hex).
pub const KEY_ENV: &str = "MFASYNC_SECRET_KEY";
/// The prefix of a sealed value.
pub const PREFIX: &str = "v1:";

/// A 256-bit sealing key. Its Debug output shows nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey([u8; 32]);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

impl SecretKey {
    /// A key from 64 hex digits (surrounding white space ignored).
    pub fn from_hex(text: &str) -> Result<SecretKey, String> {
        let t = text.trim();
        if t.len() != 64 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("the secret key must be 64 hex digits (32 bytes), such as the output of `openssl rand -hex 32`".into());
        }
        let mut key = [0u8; 32];
        for (i, byte) in key.iter_mut().enumerate() {
            let pair = t.get(2 * i..2 * i + 2).unwrap_or("00");
            *byte = u8::from_str_radix(pair, 16).map_err(|_| "not hex".to_string())?;
        }
        Ok(SecretKey(key))
    }

    /// Seal `plaintext` for the setting `context` (e.g. "directory.query_bind").
    pub fn seal(&self, context: &str, plaintext: &str) -> Result<String, String> {
        let cipher = XChaCha20Poly1305::new((&self.0).into());
        let mut nonce = [0u8; 24];
        rand::thread_rng().fill_bytes(&mut nonce);
        let sealed = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| "cannot seal the secret".to_string())?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(out)
        ))
    }

    /// Open a value sealed for `context`.
    pub fn open(&self, context: &str, sealed: &str) -> Result<String, String> {
        let bytes = sealed
            .strip_prefix(PREFIX)
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .filter(|b| b.len() > 24)
            .ok_or("not a sealed value (\"v1:\" and base64)")?;
        let (nonce, ciphertext) = bytes.split_at(24);
        let cipher = XChaCha20Poly1305::new((&self.0).into());
        let plain = cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| {
                "cannot be opened with this secret key (another key, or sealed for another setting)"
                    .to_string()
            })?;
        String::from_utf8(plain).map_err(|_| "the sealed value is not text".to_string())
    }
}

/// Seal the inline bind passwords of a configuration typed in the portal
/// (`[directory.query_bind] password`, `[directory.auth_bind] password`) into
/// `password_encrypted`, and an inline `smtp.password` into
/// `smtp.password_encrypted` (sealed for the setting `smtp`). Any inline
/// password is refused without a key. The text comes back unchanged (comments kept) when it holds
/// no inline password or is not TOML (validation reports that).
pub fn seal_typed_config(text: &str, key: Option<&SecretKey>) -> Result<String, Vec<String>> {
    let Ok(mut root) = text.parse::<toml::Table>() else {
        return Ok(text.to_string());
    };
    let mut errors = Vec::new();
    let mut changed = false;
    if let Some(toml::Value::Table(d)) = root.get_mut("directory") {
        // the query binds of other domains: sealed for directory.domains.<name>.query_bind
        let mut other_binds: Vec<(String, &mut toml::Table)> = Vec::new();
        let mut own: Vec<(String, &mut toml::Table)> = Vec::new();
        for (k, v) in d.iter_mut() {
            match (k.as_str(), v) {
                ("query_bind" | "auth_bind", toml::Value::Table(b)) => {
                    own.push((format!("directory.{k}"), b));
                }
                ("domains", toml::Value::Array(list)) => {
                    for dom in list.iter_mut().filter_map(toml::Value::as_table_mut) {
                        let name = dom
                            .get("name")
                            .and_then(toml::Value::as_str)
                            .unwrap_or_default()
                            .trim()
                            .trim_end_matches('.')
                            .to_ascii_lowercase();
                        if let Some(toml::Value::Table(b)) = dom.get_mut("query_bind") {
                            other_binds.push((format!("directory.domains.{name}.query_bind"), b));
                        }
                    }
                }
                _ => {}
            }
        }
        own.sort_by_key(|(path, _)| path != "directory.query_bind");
        for (path, b) in own.into_iter().chain(other_binds) {
            let Some(toml::Value::String(password)) = b.get("password").cloned() else {
                continue;
            };
            match key {
                None => errors.push(format!(
                    "{path}.password: not stored: passwords typed here are stored encrypted, and the service has no secret key (set {KEY_FILE_ENV} or {KEY_ENV}), or use password_file / password_env"
                )),
                Some(k) => match k.seal(&path, &password) {
                    Ok(sealed) => {
                        b.remove("password");
                        b.insert("password_encrypted".into(), toml::Value::String(sealed));
                        changed = true;
                    }
                    Err(e) => errors.push(format!("{path}.password: {e}")),
                },
            }
        }
    }
    if let Some(toml::Value::Table(smtp)) = root.get_mut("smtp") {
        if let Some(toml::Value::String(password)) = smtp.get("password").cloned() {
            match key {
                None => errors.push(format!(
                    "smtp.password: not stored: passwords typed here are stored encrypted, and the service has no secret key (set {KEY_FILE_ENV} or {KEY_ENV}), or use password_file / password_env"
                )),
                Some(k) => match k.seal("smtp", &password) {
                    Ok(sealed) => {
                        smtp.remove("password");
                        smtp.insert("password_encrypted".into(), toml::Value::String(sealed));
                        changed = true;
                    }
                    Err(e) => errors.push(format!("smtp.password: {e}")),
                },
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    if !changed {
        return Ok(text.to_string());
    }
    toml::to_string(&root).map_err(|e| vec![format!("(file): cannot write the configuration: {e}")])
}

/// The key from `MFASYNC_SECRET_KEY_FILE` or `MFASYNC_SECRET_KEY`; None when
/// neither is set. Errors name the variable, never the key.
pub fn load_key() -> Result<Option<SecretKey>, String> {
    if let Ok(path) = std::env::var(KEY_FILE_ENV) {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("{KEY_FILE_ENV}: cannot read {path}: {e}"))?;
        return SecretKey::from_hex(&text)
            .map(Some)
            .map_err(|e| format!("{KEY_FILE_ENV} ({path}): {e}"));
    }
    if let Ok(text) = std::env::var(KEY_ENV) {
        return SecretKey::from_hex(&text)
            .map(Some)
            .map_err(|e| format!("{KEY_ENV}: {e}"));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn seal_and_open() {
        let k = SecretKey::from_hex(&format!("  {HEX}\n")).unwrap_or_else(|e| panic!("{e}"));
        let a = k
            .seal("directory.query_bind", "pa$$word")
            .unwrap_or_default();
        let b = k
            .seal("directory.query_bind", "pa$$word")
            .unwrap_or_default();
        assert!(a.starts_with("v1:") && !a.contains("pa$$word"));
        assert_ne!(a, b, "a fresh nonce each time");
        assert_eq!(
            k.open("directory.query_bind", &a).as_deref(),
            Ok("pa$$word")
        );
        // another setting, another key, a tampered value: refused
        assert!(k.open("smtp", &a).is_err());
        let other = SecretKey::from_hex(&HEX.replace('0', "f")).unwrap_or_else(|e| panic!("{e}"));
        assert!(other.open("directory.query_bind", &a).is_err());
        let mut t = a.clone();
        t.pop();
        t.push(if a.ends_with('A') { 'B' } else { 'A' });
        assert!(k.open("directory.query_bind", &t).is_err());
        assert!(k.open("directory.query_bind", "plain").is_err());
        assert_eq!(format!("{k:?}"), "SecretKey(<redacted>)");
    }

    #[test]
    fn typed_configurations_have_their_bind_passwords_sealed() {
        let k = SecretKey::from_hex(HEX).unwrap_or_else(|e| panic!("{e}"));
        let text = "# mine\n[directory.query_bind]\ntype = \"simple\"\ndn = \"cn=a\"\npassword = \"pw1\"\n";
        let out = seal_typed_config(text, Some(&k)).unwrap_or_default();
        assert!(
            !out.contains("pw1") && out.contains("password_encrypted"),
            "{out}"
        );
        let t: toml::Table = out.parse().unwrap_or_default();
        let sealed = t["directory"]["query_bind"]["password_encrypted"]
            .as_str()
            .unwrap_or_default();
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
        let t: toml::Table = out.parse().unwrap_or_default();
        let sealed = t["smtp"]["password_encrypted"].as_str().unwrap_or_default();
        assert!(!out.contains("mailpw"), "{out}");
        assert_eq!(k.open("smtp", sealed).as_deref(), Ok("mailpw"));

        // another domain's query bind: sealed for its own setting
        let text = "[[directory.domains]]\nname = \"Other.Test\"\n[directory.domains.query_bind]\n\
                    type = \"simple\"\ndn = \"cn=svc\"\npassword = \"domainpw\"\n";
        let out = seal_typed_config(text, Some(&k)).unwrap_or_default();
        assert!(!out.contains("domainpw"), "{out}");
        let t: toml::Table = out.parse().unwrap_or_default();
        let sealed = t["directory"]["domains"][0]["query_bind"]["password_encrypted"]
            .as_str()
            .unwrap_or_default();
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
    fn keys_must_be_64_hex_digits() {
        assert!(SecretKey::from_hex("abc").is_err());
        assert!(SecretKey::from_hex(&HEX.replace('a', "g")).is_err());
    }
}
