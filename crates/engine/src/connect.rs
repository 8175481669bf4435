//! The connection a cycle opens to the connected domain (`directory.query_bind`).

use crate::error::{EngineError, Result, ResultExt};
use mfasync_core::config::Config;
use mfasync_ldap::Client;

/// The query bind's password (`directory.query_bind`), for every connection
/// a cycle opens to the main domain.
pub(crate) fn query_password(cfg: &Config) -> Result<Option<String>> {
    crate::secrets::bind_password(&cfg.directory.query_bind, "directory.query_bind")
        .map_err(EngineError::Other)
}

pub(crate) async fn connect(cfg: &Config) -> Result<Client> {
    let password = query_password(cfg)?;
    let client = mfasync_ldap::connect(
        &cfg.directory,
        &cfg.directory.query_bind,
        password.as_deref(),
    )
    .await
    .context("cannot connect to the directory")?;
    if client.base_dn().is_empty() {
        return Err(EngineError::Other(
            "directory.base_dn is empty and the server names no naming context".into(),
        ));
    }
    Ok(client)
}
