//! `users export` and `users otp enroll|remove` (the recycle bin: `cli::bin`).

use crate::{open_store, print_json, CmdResult, Failure, Format};
use mfasync_core::MfaUser;
use mfasync_engine::{export, otp, secrets};

/// A user of `users export --include-deleted --format json`: the export
/// fields, then `deleted_at` for one in the recycle bin.
#[derive(serde::Serialize)]
struct Row<'a> {
    #[serde(flatten)]
    user: &'a MfaUser,
    #[serde(skip_serializing_if = "Option::is_none")]
    deleted_at: Option<&'a str>,
}

/// `users export [--format] [--raw] [--include-deleted]`: each user written
/// as the store reads it (memory: one row, whatever the user count), then
/// the recycle bin's.
pub async fn export(
    database: &str,
    format: crate::Format,
    raw: bool,
    include_deleted: bool,
) -> CmdResult {
    let store = open_store(database).await?;
    let out = std::io::BufWriter::new(std::io::stdout());
    let mut sink = match format {
        Format::Json => Sink::Json(export::JsonArray::new(out)),
        Format::Csv => Sink::Csv(Box::new(
            export::CsvExport::new(out, raw, include_deleted).map_err(Failure::Refused)?,
        )),
    };
    let mut failed: Option<String> = None;
    store
        .users_each(&mut |u| match sink.user(&u, None) {
            Ok(()) => true,
            Err(e) => {
                failed = Some(e);
                false
            }
        })
        .await
        .map_err(|e| Failure::Refused(e.to_string()))?;
    if let Some(e) = failed {
        return Err(Failure::Refused(e));
    }
    if include_deleted {
        let bin = store
            .binned()
            .await
            .map_err(|e| Failure::Refused(e.to_string()))?;
        for b in &bin {
            sink.user(&b.user, Some(&b.deleted_at))
                .map_err(Failure::Refused)?;
        }
    }
    sink.finish().map_err(Failure::Refused)
}

/// Where `users export` writes.
enum Sink<W: std::io::Write> {
    Json(export::JsonArray<W>),
    Csv(Box<export::CsvExport<W>>),
}

impl<W: std::io::Write> Sink<W> {
    fn user(&mut self, user: &MfaUser, deleted_at: Option<&str>) -> Result<(), String> {
        match self {
            // (a live user exactly as `users` serializes it)
            Sink::Json(a) => match deleted_at {
                None => a.item(user),
                Some(_) => a.item(&Row { user, deleted_at }),
            },
            Sink::Csv(c) => c.user(user, deleted_at),
        }
    }

    fn finish(self) -> Result<(), String> {
        match self {
            Sink::Json(a) => a.finish(),
            Sink::Csv(c) => (*c).finish(),
        }
    }
}

/// `users otp enroll NAME`: a new secret, shown once (URI and QR code).
pub async fn otp_enroll(database: &str, username: &str, json: bool) -> CmdResult {
    let store = open_store(database).await?;
    let key = secrets::key().map_err(Failure::Refused)?;
    let e = otp::enroll(store.as_ref(), key.as_ref(), username, "cli")
        .await
        .map_err(|e| Failure::Refused(e.to_string()))?;
    if json {
        return print_json(&serde_json::json!({"username": e.username, "otpauth_uri": e.uri}));
    }
    println!(
        "OATH token of {} enrolled. Scan the code, or enter the URI, in an authenticator app:",
        e.username
    );
    if let Some(qr) = e.qr_text() {
        println!("{qr}");
    }
    println!("{}", e.uri);
    Ok(())
}

/// `users otp remove NAME`.
pub async fn otp_remove(database: &str, username: &str, json: bool) -> CmdResult {
    let store = open_store(database).await?;
    match store.otp_remove(username, "cli").await {
        Ok(true) => {
            if !json {
                println!("OATH token secret of {username} removed");
            }
            Ok(())
        }
        Ok(false) => Err(Failure::Refused(format!(
            "{username}: no MFA user with an OATH token secret"
        ))),
        Err(e) => Err(Failure::Refused(e.to_string())),
    }
}
