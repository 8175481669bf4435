//! Secrets named in the configuration: inline, in a file, or in an
//! environment variable. Their values never appear in errors or logs.

use mfasync_core::config::{Bind, BindType, Config, Smtp};

fn resolve(
    inline: &Option<String>,
    file: &Option<String>,
    env: &Option<String>,
    key: &str,
) -> Result<Option<String>, String> {
    if let Some(p) = inline {
        return Ok(Some(p.clone()));
    }
    if let Some(path) = file {
        return std::fs::read_to_string(path)
            .map(|s| Some(s.trim_end_matches(['\r', '\n']).to_string()))
            .map_err(|e| format!("{key}.password_file: cannot read {path}: {e}"));
    }
    if let Some(var) = env {
        return std::env::var(var)
            .map(Some)
            .map_err(|_| format!("{key}.password_env: environment variable {var} is not set"));
    }
    Ok(None)
}

/// The password of a bind (None for anonymous / no password configured).
pub fn bind_password(b: &Bind, key: &str) -> Result<Option<String>, String> {
    if b.kind == BindType::Anonymous {
        return Ok(None);
    }
    if let Some(sealed) = &b.password_encrypted {
        return open_sealed(sealed, key).map(Some);
    }
    resolve(&b.password, &b.password_file, &b.password_env, key)
}

/// A password typed in the web portal: sealed with the service's secret key
/// for the setting `key`.
fn open_sealed(sealed: &str, key: &str) -> Result<String, String> {
    let secret = mfasync_web::secret::load_key()
        .map_err(|e| format!("{key}.password_encrypted: {e}"))?
        .ok_or_else(|| {
            format!(
                "{key}.password_encrypted: no secret key to open it: set {} or {}",
                mfasync_web::secret::KEY_FILE_ENV,
                mfasync_web::secret::KEY_ENV
            )
        })?;
    secret
        .open(key, sealed)
        .map_err(|e| format!("{key}.password_encrypted: {e}"))
}

/// The SMTP password (None when none is configured); a sealed one
/// (`smtp.password_encrypted`, typed on the portal's SMTP form) is opened
/// with the service's secret key.
pub fn smtp_password(s: &Smtp) -> Result<Option<String>, String> {
    if let Some(sealed) = &s.password_encrypted {
        return open_sealed(sealed, "smtp").map(Some);
    }
    resolve(&s.password, &s.password_file, &s.password_env, "smtp")
}

/// Check that every configured secret can be read (used by `config apply`).
pub fn check(cfg: &Config) -> Result<(), String> {
    bind_password(&cfg.directory.query_bind, "directory.query_bind")?;
    bind_password(&cfg.directory.auth_bind, "directory.auth_bind")?;
    for d in &cfg.directory.domains {
        bind_password(&d.query_bind, &d.key())?;
    }
    if let Some(s) = &cfg.smtp {
        smtp_password(s)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn a_sealed_smtp_password_is_opened_with_the_key() {
        let k = mfasync_web::secret::SecretKey::from_hex(HEX).unwrap_or_else(|e| panic!("{e}"));
        let sealed = k.seal("smtp", "mail-pw").unwrap_or_else(|e| panic!("{e}"));
        let smtp = Smtp {
            server: "smtp://127.0.0.1:25".into(),
            from: "a@example.com".into(),
            username: Some("u".into()),
            password_encrypted: Some(sealed.clone()),
            ..Smtp::default()
        };
        let dir = std::env::temp_dir().join(format!("mfasync-smtp-key-{}", std::process::id()));
        std::fs::write(&dir, HEX).unwrap_or_else(|e| panic!("{e}"));
        // The only test in this binary that sets the key variable.
        std::env::set_var(mfasync_web::secret::KEY_FILE_ENV, &dir);
        let opened = smtp_password(&smtp);
        // Sealed for another setting: refused, naming the key path only.
        let moved = k
            .seal("directory.query_bind", "mail-pw")
            .unwrap_or_else(|e| panic!("{e}"));
        let wrong = smtp_password(&Smtp {
            password_encrypted: Some(moved),
            ..smtp.clone()
        });
        std::env::remove_var(mfasync_web::secret::KEY_FILE_ENV);
        let _ = std::fs::remove_file(&dir);
        assert_eq!(opened, Ok(Some("mail-pw".to_string())));
        let e = wrong.unwrap_err();
        assert!(
            e.starts_with("smtp.password_encrypted:") && !e.contains("mail-pw"),
            "{e}"
        );
        // No key: named, not opened.
        let e = smtp_password(&smtp).unwrap_err();
        assert!(
            e.starts_with("smtp.password_encrypted: no secret key"),
            "{e}"
        );
    }
}
