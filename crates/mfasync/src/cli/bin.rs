//! `users deleted`, `users restore NAME` and `users purge NAME`: the recycle
//! bin of users a sync removed (docs/sync.md, "The recycle bin").

use crate::terminal::say;
use crate::{open_store, print_json, CmdResult, Failure};
use mfasync_store::BinnedUser;

/// `users deleted`: the recycle bin, most recently removed first.
pub async fn list(database: &str, json: bool) -> CmdResult {
    let store = open_store(database).await?;
    let bin = store
        .binned()
        .await
        .map_err(|e| Failure::Refused(e.to_string()))?;
    if json {
        let rows: Vec<_> = bin.iter().map(BinnedUser::entry).collect();
        return print_json(&rows);
    }
    if bin.is_empty() {
        say!("the recycle bin is empty");
    }
    for b in &bin {
        say!(
            "{}  {}  removed {}: {}",
            b.user.username,
            b.user.directory_id.as_deref().unwrap_or("-"),
            b.deleted_at,
            b.reason
        );
    }
    Ok(())
}

/// `users restore NAME`: back among the live users with its MFA data.
pub async fn restore(database: &str, name: &str, json: bool) -> CmdResult {
    let store = open_store(database).await?;
    match store.bin_restore(name, "cli").await {
        Ok(Some(b)) => done(json, &b, "restored"),
        Ok(None) => Err(not_binned(name)),
        Err(e) => Err(Failure::Refused(e.to_string())),
    }
}

/// `users purge NAME`: out of the recycle bin for good.
pub async fn purge(database: &str, name: &str, json: bool) -> CmdResult {
    let store = open_store(database).await?;
    match store.bin_purge(name, "cli").await {
        Ok(Some(b)) => done(json, &b, "purged"),
        Ok(None) => Err(not_binned(name)),
        Err(e) => Err(Failure::Refused(e.to_string())),
    }
}

fn done(json: bool, b: &BinnedUser, what: &str) -> CmdResult {
    if json {
        return print_json(&b.entry());
    }
    say!("{} {what}", b.user.username);
    Ok(())
}

fn not_binned(name: &str) -> Failure {
    Failure::Refused(format!(
        "{name}: no such user in the recycle bin (see mfasync users deleted)"
    ))
}
