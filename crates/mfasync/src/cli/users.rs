//! `users export`.

use crate::{open_store, print_json, CmdResult, Failure, Format};
use mfasync_engine::export;

/// `users export [--format] [--raw]`.
pub async fn export(database: &str, format: crate::Format, raw: bool) -> CmdResult {
    let store = open_store(database).await?;
    let users = store
        .users()
        .await
        .map_err(|e| Failure::Refused(e.to_string()))?;
    match format {
        Format::Json => print_json(&users),
        Format::Csv => {
            export::write_csv(&users, std::io::stdout().lock(), raw).map_err(Failure::Refused)
        }
    }
}
