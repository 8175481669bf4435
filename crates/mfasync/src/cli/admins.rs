//! `mfasync admin remove NAME`: a local administrator of the portal removed
//! with every session and API token acting for that name, audited. The last
//! one is kept unless `portal.admin_group` lets directory administrators in,
//! so that the portal never ends up with nobody able to sign in.

use std::io::Read;

use crate::{open_store, print_json, CmdResult, Failure};
use mfasync_store::Store;

pub async fn cli_remove(store: &dyn Store, username: &str, json: bool) -> CmdResult {
    let admins = store
        .admins()
        .await
        .map_err(|e| Failure::Refused(e.to_string()))?;
    if !admins.iter().any(|a| a == username) {
        return Err(Failure::Refused(format!(
            "no local administrator {username:?} (local administrators: {})",
            if admins.is_empty() {
                "none".to_string()
            } else {
                admins.join(", ")
            }
        )));
    }
    if admins.len() == 1 && !admin_group_configured(store).await? {
        return Err(Failure::Refused(format!(
            "{username} is the last local administrator and no portal.admin_group is configured: \
             nobody could sign in to the portal; set another one's password first \
             (`mfasync admin set-password NAME --password-stdin`)"
        )));
    }
    let who = mfasync_engine::approvals::who();
    let (sessions, tokens) = store
        .admin_remove(username, &who)
        .await
        .map_err(|e| Failure::Refused(e.to_string()))?
        .ok_or_else(|| Failure::Refused(format!("no local administrator {username:?}")))?;
    if json {
        crate::print_json(&serde_json::json!({
            "ok": true, "username": username,
            "sessions_ended": sessions, "tokens_revoked": tokens,
        }))
    } else {
        crate::terminal::say!(
            "administrator {username} removed: {sessions} session(s) ended, {tokens} API token(s) revoked"
        );
        Ok(())
    }
}

/// Whether the active configuration lets directory group members sign in.
async fn admin_group_configured(store: &dyn Store) -> Result<bool, Failure> {
    let Some(v) = store
        .active_config()
        .await
        .map_err(|e| Failure::Refused(e.to_string()))?
    else {
        return Ok(false);
    };
    let cfg = crate::parse_stored_config(&v)?;
    Ok(cfg.portal.is_some_and(|p| !p.admin_group.trim().is_empty()))
}

/// `admin set-password USERNAME --password-stdin`.
pub async fn set_password(
    database: &str,
    username: &str,
    password_stdin: bool,
    json: bool,
) -> CmdResult {
    if !password_stdin {
        return Err(Failure::Invalid(vec![
            "admin set-password needs --password-stdin (passwords are never taken from the command line)".into(),
        ]));
    }
    let mut pw = String::new();
    std::io::stdin()
        .read_to_string(&mut pw)
        .map_err(|e| Failure::Refused(format!("cannot read the password: {e}")))?;
    let pw = pw
        .strip_suffix('\n')
        .map(|p| p.strip_suffix('\r').unwrap_or(p))
        .unwrap_or(&pw);
    if pw.chars().count() < 12 {
        return Err(Failure::Invalid(vec![
            "the password must have at least 12 characters".into(),
        ]));
    }
    let hash = mfasync_web::auth::hash_password(pw).map_err(Failure::Refused)?;
    let store = open_store(database).await?;
    store
        .admin_set_password(username, &hash)
        .await
        .map_err(|e| Failure::Refused(e.to_string()))?;
    if json {
        print_json(&serde_json::json!({"ok": true, "username": username}))?;
    } else {
        println!("password of administrator {username} set");
    }
    Ok(())
}
