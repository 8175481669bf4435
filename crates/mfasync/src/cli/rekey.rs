//! `db rekey`: seal the passwords stored in clear in every configuration
//! version (applied before a secret key was set) with the current key, and
//! with `--old-key-file`, move the passwords sealed with an old key to the
//! current one. Every version is rewritten in one audited transaction, or
//! none is. Run by hand rather than as a migration when a key appears: a
//! process that finds a key must not make the stored configuration unusable
//! for the processes that do not have it (another server, `mfasync auth`
//! called by a RADIUS server), and an old key is needed to rotate one.

use mfasync_secret::SecretKey;
use mfasync_store::{ConfigRewrite, Store};

use crate::{CmdResult, Failure};

/// What a rekey changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// The versions rewritten, newest first.
    pub versions: Vec<i64>,
    /// Passwords that were in clear, now sealed.
    pub sealed: usize,
    /// Passwords moved from the old key to the current one.
    pub resealed: usize,
    /// OATH token secrets moved from the old key to the current one.
    pub otp_resealed: usize,
}

/// Rewrite the stored versions that have something to seal.
pub async fn run(
    store: &dyn Store,
    key: &SecretKey,
    old: Option<&SecretKey>,
) -> Result<Report, Failure> {
    let versions = store
        .config_versions()
        .await
        .map_err(|e| Failure::Refused(e.to_string()))?;
    let mut report = Report::default();
    let mut changes = Vec::new();
    let mut errors = Vec::new();
    for v in versions {
        match mfasync_secret::reseal(&v.toml, key, old) {
            Ok(None) => {}
            Ok(Some(r)) => {
                report.versions.push(v.version);
                report.sealed += r.sealed;
                report.resealed += r.resealed;
                changes.push(ConfigRewrite {
                    version: v.version,
                    old: v.toml,
                    new: r.text,
                });
            }
            Err(es) => errors.extend(
                es.into_iter()
                    .map(|e| format!("configuration version {}: {e}", v.version)),
            ),
        }
    }
    if !errors.is_empty() {
        errors.push("nothing changed".into());
        return Err(Failure::Refused(errors.join("; ")));
    }
    // OATH secrets first (their own transaction; a second run skips what moved)
    if let Some(old) = old {
        report.otp_resealed = mfasync_engine::otp::reseal(store, key, old)
            .await
            .map_err(|e| Failure::Refused(format!("{e}; nothing changed")))?;
    }
    if changes.is_empty() {
        return Ok(report);
    }
    let detail = format!(
        "configuration versions {} rewritten: {} passwords sealed, {} moved to the current key",
        list(&report.versions),
        report.sealed,
        report.resealed
    );
    store
        .rewrite_configs(&changes, "admin", "config-rekey", &detail)
        .await
        .map_err(|e| Failure::Refused(e.to_string()))?;
    Ok(report)
}

fn list(versions: &[i64]) -> String {
    versions
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `mfasync db rekey [--old-key-file FILE]`.
pub async fn cli(
    store: &dyn Store,
    old_key_file: Option<&std::path::Path>,
    json: bool,
) -> CmdResult {
    let key = mfasync_engine::secrets::key()
        .map_err(Failure::Refused)?
        .ok_or_else(|| {
            Failure::Refused(format!(
                "db rekey needs the secret key to seal with: set {} or {}",
                mfasync_secret::KEY_FILE_ENV,
                mfasync_secret::KEY_ENV
            ))
        })?;
    let old = match old_key_file {
        None => None,
        Some(path) => {
            let text = mfasync_secret::read_first_line("--old-key-file", path)
                .map_err(|e| Failure::Invalid(vec![e]))?;
            let old = SecretKey::from_hex(&text)
                .map_err(|e| Failure::Invalid(vec![format!("--old-key-file: {e}")]))?;
            Some(old)
        }
    };
    let report = run(store, &key, old.as_ref()).await?;
    if json {
        return crate::print_json(&serde_json::json!({
            "ok": true,
            "versions": report.versions,
            "sealed": report.sealed,
            "resealed": report.resealed,
            "otp_resealed": report.otp_resealed,
        }));
    }
    if report.versions.is_empty() {
        println!(
            "nothing to do: no configuration version holds a password in clear{}",
            if old.is_some() {
                " or sealed with the old key"
            } else {
                ""
            }
        );
    } else {
        println!(
            "configuration versions {}: {} passwords sealed, {} moved to the current key",
            list(&report.versions),
            report.sealed,
            report.resealed
        );
    }
    if report.otp_resealed > 0 {
        println!(
            "{} OATH token secrets moved to the current key",
            report.otp_resealed
        );
    }
    Ok(())
}
