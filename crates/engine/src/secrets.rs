//! Secrets named in the configuration: inline, sealed with the
//! administrator's key, in a file, or in an environment variable. Their
//! values never appear in errors or logs. Every process reads password files
//! only inside its secrets directories (`--secrets-dir`, [`allow_dirs`]):
//! the stored configuration may come from the portal or the API, so the
//! check is made where the secret is read, and again where the portal or
//! the API saves a configuration ([`outside_dirs`]).

use mfasync_core::config::{Bind, BindType, Config, Smtp};
use mfasync_secret::{Refusal, SecretKey, SecretsDirs};

/// This process's secrets directories, set once at start.
static DIRS: std::sync::OnceLock<SecretsDirs> = std::sync::OnceLock::new();

/// `--secrets-dir`: the directories given (none: `/etc/mfasync`), and
/// `$CREDENTIALS_DIRECTORY` when systemd sets it. The first call decides.
pub fn allow_dirs(given: &[std::path::PathBuf]) {
    let _ = DIRS.set(SecretsDirs::from_operator(given));
}

fn dirs() -> &'static SecretsDirs {
    DIRS.get_or_init(|| SecretsDirs::from_operator(&[]))
}

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
        return mfasync_secret::read_password_file(&format!("{key}.password_file"), path, dirs())
            .map(Some);
    }
    if let Some(var) = env {
        // (validation refuses these names; a stored text is never trusted)
        if mfasync_core::config::reserved_env(var) {
            return Err(format!(
                "{key}.password_env: {var} is not read as a password"
            ));
        }
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

/// A sealed password (typed in the portal, or inline in a configuration
/// stored with a key): opened with the secret key for the setting `key`.
fn open_sealed(sealed: &str, key: &str) -> Result<String, String> {
    let secret = mfasync_secret::load_key()
        .map_err(|e| format!("{key}.password_encrypted: {e}"))?
        .ok_or_else(|| {
            format!(
                "{key}.password_encrypted: no secret key to open it: set {} or {}",
                mfasync_secret::KEY_FILE_ENV,
                mfasync_secret::KEY_ENV
            )
        })?;
    secret
        .open(key, sealed)
        .map_err(|e| format!("{key}.password_encrypted: {e}"))
}

/// The SMTP password (None when none is configured); a sealed one
/// (`smtp.password_encrypted`) is opened with the service's secret key.
pub fn smtp_password(s: &Smtp) -> Result<Option<String>, String> {
    if let Some(sealed) = &s.password_encrypted {
        return open_sealed(sealed, "smtp").map(Some);
    }
    resolve(&s.password, &s.password_file, &s.password_env, "smtp")
}

/// Every password file of `cfg`, as (setting, path).
fn password_files(cfg: &Config) -> Vec<(String, &str)> {
    let d = &cfg.directory;
    let mut binds = vec![
        ("directory.query_bind".to_string(), &d.query_bind),
        ("directory.auth_bind".to_string(), &d.auth_bind),
    ];
    binds.extend(d.domains.iter().map(|dom| (dom.key(), &dom.query_bind)));
    let mut files: Vec<(String, &str)> = binds
        .into_iter()
        .filter_map(|(key, b)| b.password_file.as_deref().map(|p| (key, p)))
        .collect();
    if let Some(p) = cfg.smtp.as_ref().and_then(|s| s.password_file.as_deref()) {
        files.push(("smtp".to_string(), p));
    }
    files
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

/// The password files of `cfg` outside this process's secrets directories,
/// each as "<key>.password_file: …": a configuration saved through the
/// portal or the API is refused for them (a file inside that does not exist
/// yet is not).
pub fn outside_dirs(cfg: &Config) -> Vec<String> {
    password_files(cfg)
        .into_iter()
        .filter_map(
            |(key, path)| match dirs().admit(&format!("{key}.password_file"), path) {
                Err(Refusal::Outside(m)) => Some(m),
                _ => None,
            },
        )
        .collect()
}

/// The secret key of this process (`MFASYNC_SECRET_KEY_FILE` /
/// `MFASYNC_SECRET_KEY`), None when none is set.
pub fn key() -> Result<Option<SecretKey>, String> {
    mfasync_secret::load_key()
}

/// A configuration text as it is stored.
pub struct ForStore {
    /// With a key, its clear passwords sealed (the rest as written).
    pub text: String,
    /// Without a key: the passwords that stay in clear, and what to do.
    pub warning: Option<String>,
}

/// Prepare a validated configuration text for the store (`config apply`,
/// the portal and the API): with a key, every password written in clear is
/// sealed; without one the text is kept and a warning names them.
pub fn for_store(text: &str, key: Option<&SecretKey>) -> Result<ForStore, Vec<String>> {
    if let Some(k) = key {
        let text = mfasync_secret::seal_inline(text, k)?;
        // (what is stored must still validate)
        mfasync_core::config::parse(&text).map_err(|errs| {
            errs.iter()
                .map(|e| format!("sealed: {e}"))
                .collect::<Vec<_>>()
        })?;
        return Ok(ForStore {
            text,
            warning: None,
        });
    }
    let clear = mfasync_secret::inline_passwords(text);
    let warning = (!clear.is_empty()).then(|| {
        format!(
            "{}: stored in clear in the database, with this configuration version; use password_file, or set {} (or {}) so that passwords are stored sealed (`mfasync db rekey` seals those already stored)",
            clear.join(", "),
            mfasync_secret::KEY_FILE_ENV,
            mfasync_secret::KEY_ENV
        )
    });
    Ok(ForStore {
        text: text.to_string(),
        warning,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn passwords_are_stored_sealed_with_a_key_and_named_without_one() {
        let k = mfasync_secret::SecretKey::from_hex(HEX).unwrap_or_else(|e| panic!("{e}"));
        let text =
            "[directory.query_bind]\ntype = \"simple\"\ndn = \"cn=a\"\npassword = \"bind-pw\"\n\
                    [smtp]\nserver = \"smtp://h\"\nfrom = \"a@b.c\"\npassword = \"mail-pw\"\n";
        let sealed = for_store(text, Some(&k)).unwrap_or_else(|e| panic!("{e:?}"));
        assert!(sealed.warning.is_none());
        assert!(
            !sealed.text.contains("bind-pw") && !sealed.text.contains("mail-pw"),
            "{}",
            sealed.text
        );
        let cfg = mfasync_core::config::parse(&sealed.text).unwrap_or_else(|e| panic!("{e:?}"));
        let opened = cfg
            .directory
            .query_bind
            .password_encrypted
            .as_deref()
            .map(|v| k.open("directory.query_bind", v));
        assert_eq!(opened, Some(Ok("bind-pw".to_string())));
        let clear = for_store(text, None).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(clear.text, text);
        let w = clear.warning.unwrap_or_default();
        assert!(
            w.starts_with("directory.query_bind.password, smtp.password: stored in clear")
                && !w.contains("bind-pw")
                && !w.contains("mail-pw"),
            "{w}"
        );
    }

    #[test]
    fn password_files_outside_the_secrets_directories_are_named() {
        // (this binary's tests keep the default: /etc/mfasync)
        let cfg = mfasync_core::config::parse(
            "[directory.query_bind]\ntype = \"simple\"\ndn = \"cn=a\"\npassword_file = \"/etc/shadow\"\n\
             [directory.auth_bind]\npassword_file = \"/etc/mfasync/../shadow\"\n\
             [smtp]\nserver = \"smtp://h\"\nfrom = \"a@b.c\"\npassword_file = \"/etc/mfasync/not-yet\"\n",
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        let refused = outside_dirs(&cfg);
        assert_eq!(refused.len(), 2, "{refused:?}");
        assert!(refused[0].starts_with("directory.query_bind.password_file: /etc/shadow is not in a secrets directory (/etc/mfasync"), "{refused:?}");
        assert!(
            refused[1]
                .starts_with("directory.auth_bind.password_file: /etc/mfasync/../shadow is not"),
            "{refused:?}"
        );
    }

    #[test]
    fn a_sealed_smtp_password_is_opened_with_the_key() {
        let k = mfasync_secret::SecretKey::from_hex(HEX).unwrap_or_else(|e| panic!("{e}"));
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
        std::env::set_var(mfasync_secret::KEY_FILE_ENV, &dir);
        let opened = smtp_password(&smtp);
        // Sealed for another setting: refused, naming the key path only.
        let moved = k
            .seal("directory.query_bind", "mail-pw")
            .unwrap_or_else(|e| panic!("{e}"));
        let wrong = smtp_password(&Smtp {
            password_encrypted: Some(moved),
            ..smtp.clone()
        });
        std::env::remove_var(mfasync_secret::KEY_FILE_ENV);
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
