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

/// `users export [--format] [--raw] [--include-deleted]`.
pub async fn export(
    database: &str,
    format: crate::Format,
    raw: bool,
    include_deleted: bool,
) -> CmdResult {
    let store = open_store(database).await?;
    if !include_deleted {
        return export_streamed(store.as_ref(), format, raw).await;
    }
    let users = store
        .users()
        .await
        .map_err(|e| Failure::Refused(e.to_string()))?;
    let bin = store
        .binned()
        .await
        .map_err(|e| Failure::Refused(e.to_string()))?;
    let rows: Vec<(&MfaUser, Option<&str>)> = users
        .iter()
        .map(|u| (u, None))
        .chain(bin.iter().map(|b| (&b.user, Some(b.deleted_at.as_str()))))
        .collect();
    match format {
        Format::Json => print_json(
            &rows
                .iter()
                .map(|&(user, deleted_at)| Row { user, deleted_at })
                .collect::<Vec<_>>(),
        ),
        Format::Csv => {
            export::write_csv_rows(&rows, std::io::stdout().lock(), raw).map_err(Failure::Refused)
        }
    }
}

/// `users export` of the live users, written as the store reads them (memory:
/// one user); the same bytes as `print_json` / `export::write_csv` of all.
async fn export_streamed(
    store: &dyn mfasync_store::Store,
    format: crate::Format,
    raw: bool,
) -> CmdResult {
    use std::io::Write;
    let out = std::io::BufWriter::new(std::io::stdout());
    let mut failed: Option<String> = None;
    match format {
        Format::Json => {
            let mut out = out;
            let mut n = 0usize;
            store
                .users_each(&mut |u| {
                    let r = serde_json::to_string_pretty(&u)
                        .map_err(|e| e.to_string())
                        .and_then(|text| {
                            let sep = if n == 0 { "[\n  " } else { ",\n  " };
                            n += 1;
                            write!(out, "{sep}{}", text.replace('\n', "\n  "))
                                .map_err(|e| e.to_string())
                        });
                    r.map_err(|e| failed = Some(e)).is_ok()
                })
                .await
                .map_err(|e| Failure::Refused(e.to_string()))?;
            if let Some(e) = failed {
                return Err(Failure::Refused(e));
            }
            let end = if n == 0 { "[]\n" } else { "\n]\n" };
            out.write_all(end.as_bytes())
                .and_then(|()| out.flush())
                .map_err(|e| Failure::Refused(e.to_string()))
        }
        Format::Csv => {
            let mut w = export::CsvWriter::new(out, raw).map_err(Failure::Refused)?;
            store
                .users_each(&mut |u| w.user(&u).map_err(|e| failed = Some(e)).is_ok())
                .await
                .map_err(|e| Failure::Refused(e.to_string()))?;
            if let Some(e) = failed {
                return Err(Failure::Refused(e));
            }
            w.finish().map_err(Failure::Refused)
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
