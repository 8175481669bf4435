//! `auth USERNAME --password-stdin`.

use std::io::Read;

use crate::{active_config, database, print_json, CmdResult, Failure};
use mfasync_engine::auth;

/// `auth USERNAME --password-stdin`: a password check by LDAP bind.
pub async fn check(database: &str, username: &str, password_stdin: bool, json: bool) -> CmdResult {
    if !password_stdin {
        return Err(Failure::Invalid(vec![
            "auth needs --password-stdin (passwords are never taken from the command line)".into(),
        ]));
    }
    let mut pw = String::new();
    std::io::stdin()
        .read_to_string(&mut pw)
        .map_err(|e| Failure::Refused(format!("cannot read the password: {e}")))?;
    // one trailing newline (from `echo`) is not part of the password
    let pw = pw
        .strip_suffix('\n')
        .map(|p| p.strip_suffix('\r').unwrap_or(p))
        .unwrap_or(&pw);
    // a current schema is not migrated again: one cheap version read
    let store = database::open(database, true).await?;
    let cfg = active_config(store.as_ref()).await?;
    let result = auth::authenticate(store.as_ref(), &cfg, username, pw).await;
    if json {
        match result {
            Ok(()) => print_json(&serde_json::json!({"ok": true}))?,
            Err(r) => print_json(&serde_json::json!({"ok": false, "reason": r}))?,
        }
    } else {
        match result {
            Ok(()) => println!("accepted"),
            Err(r) => println!("refused: {}", r.as_str()),
        }
    }
    match result {
        Ok(()) => Ok(()),
        Err(r) => Err(Failure::Refused(format!(
            "authentication refused: {}",
            r.as_str()
        ))),
    }
}
