//! `config apply FILE [--dry-run]`.

use crate::{logging, open_store, print_json, CmdResult, Failure};
use mfasync_engine::{items, secrets};

/// `config apply FILE [--dry-run]`.
pub async fn apply(database: &str, file: &std::path::Path, dry_run: bool, json: bool) -> CmdResult {
    let text = std::fs::read_to_string(file)
        .map_err(|e| Failure::Invalid(vec![format!("cannot read {}: {e}", file.display())]))?;
    let cfg = mfasync_core::config::parse(&text).map_err(|errs| {
        Failure::Invalid(
            errs.iter()
                .map(|e| format!("{}: {e}", file.display()))
                .collect(),
        )
    })?;
    // secrets named by file or env are read by the service later; say so now if they are unreadable here
    if let Err(w) = secrets::check(&cfg) {
        logging::warning(w);
    }
    for note in mfasync_core::config::warnings(&cfg) {
        logging::warning(format_args!("{}: {note}", file.display()));
    }
    if dry_run {
        if json {
            print_json(&serde_json::json!({"ok": true, "stored": false}))?;
        } else {
            println!("{}: valid", file.display());
        }
        return Ok(());
    }
    // with a secret key, passwords are stored sealed
    let key = secrets::key().map_err(Failure::Refused)?;
    let stored = secrets::for_store(&text, key.as_ref()).map_err(Failure::Invalid)?;
    if let Some(w) = &stored.warning {
        logging::warning(w);
    }
    // each sync item's unique id, so that it is found after a rename
    let (text, not_now) = items::ids_for_store(&cfg, &stored.text).await;
    if let Some(w) = not_now {
        logging::notice(w);
    }
    let store = open_store(database).await?;
    let version = store
        .put_config(&text)
        .await
        .map_err(|e| Failure::Refused(e.to_string()))?;
    if json {
        print_json(&serde_json::json!({"ok": true, "stored": true, "version": version}))
    } else {
        println!("configuration version {version} is now active");
        Ok(())
    }
}
