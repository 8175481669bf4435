//! The administrator's sealing key and sealed values: XChaCha20-Poly1305
//! with a random 24-byte nonce and the setting's key path (such as
//! `directory.query_bind`) as associated data, so a sealed value cannot be
//! moved to another setting. The 256-bit key is 64 hex digits in the file
//! named by `MFASYNC_SECRET_KEY_FILE` (for example made with `openssl rand
//! -hex 32`), or in `MFASYNC_SECRET_KEY` itself. Keys and secrets are never
//! logged or shown.

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

/// The key from `MFASYNC_SECRET_KEY_FILE` or `MFASYNC_SECRET_KEY`; None when
/// neither is set. Errors name the variable, never the key.
pub fn load_key() -> Result<Option<SecretKey>, String> {
    if let Ok(path) = std::env::var(KEY_FILE_ENV) {
        // (the first line of a regular file, like a password file)
        let text = crate::file::read_first_line(KEY_FILE_ENV, std::path::Path::new(&path))?;
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
    fn keys_must_be_64_hex_digits() {
        assert!(SecretKey::from_hex("abc").is_err());
        assert!(SecretKey::from_hex(&HEX.replace('a', "g")).is_err());
    }
}
