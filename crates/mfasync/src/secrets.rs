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
        // Typed in the web portal: sealed with the service's secret key.
        let secret = mfasync_web::secret::load_key()
            .map_err(|e| format!("{key}.password_encrypted: {e}"))?
            .ok_or_else(|| {
                format!(
                    "{key}.password_encrypted: no secret key to open it: set {} or {}",
                    mfasync_web::secret::KEY_FILE_ENV,
                    mfasync_web::secret::KEY_ENV
                )
            })?;
        return secret
            .open(key, sealed)
            .map(Some)
            .map_err(|e| format!("{key}.password_encrypted: {e}"));
    }
    resolve(&b.password, &b.password_file, &b.password_env, key)
}

/// The SMTP password (None when none is configured).
pub fn smtp_password(s: &Smtp) -> Result<Option<String>, String> {
    resolve(&s.password, &s.password_file, &s.password_env, "smtp")
}

/// Check that every configured secret can be read (used by `config apply`).
pub fn check(cfg: &Config) -> Result<(), String> {
    bind_password(&cfg.directory.query_bind, "directory.query_bind")?;
    bind_password(&cfg.directory.auth_bind, "directory.auth_bind")?;
    if let Some(s) = &cfg.smtp {
        smtp_password(s)?;
    }
    Ok(())
}
