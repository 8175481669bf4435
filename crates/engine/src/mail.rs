//! Sending one email through `[smtp]` (lettre, rustls): the approval
//! notifications and the outbox's user emails share this transport code.

use std::time::Duration;

use crate::error::{EngineError, Result};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use mfasync_core::config::Smtp;

/// How long one SMTP exchange may take at most.
pub const SMTP_TIMEOUT: Duration = Duration::from_secs(20);

/// `smtp.from` as a mailbox.
pub fn sender(smtp: &Smtp) -> Result<lettre::message::Mailbox> {
    smtp.from
        .parse()
        .map_err(|e| EngineError::Mail(format!("smtp.from {:?} is not a mailbox: {e}", smtp.from)))
}

/// Send `msg` through `smtp.server` (smtp://host[:port], plain, with
/// ?tls=required for STARTTLS or ?tls=opportunistic; smtps://host[:port],
/// TLS from the start), waiting at most `timeout` for the server.
pub async fn send(smtp: &Smtp, msg: Message, timeout: Duration) -> Result<()> {
    let server = server_for_display(&smtp.server);
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(&smtp.server)
        .map_err(|e| EngineError::Mail(format!("smtp.server {server}: {e}")))?
        .timeout(Some(timeout));
    if let Some(user) = &smtp.username {
        let password = crate::secrets::smtp_password(smtp)
            .map_err(EngineError::Other)?
            .unwrap_or_default();
        builder = builder.credentials(Credentials::new(user.clone(), password));
    }
    builder
        .build()
        .send(msg)
        .await
        .map_err(|e| EngineError::Mail(format!("sending through {server}: {e}")))?;
    Ok(())
}

/// Never let a configured SMTP password reach a log line, the audit trail
/// or the outbox's error column.
pub fn redact(text: &str, smtp: &Smtp) -> String {
    match crate::secrets::smtp_password(smtp) {
        Ok(Some(pw)) if !pw.is_empty() => text.replace(&pw, "<redacted>"),
        _ => text.to_string(),
    }
}

/// The server URL without any user:password part.
pub fn server_for_display(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://{host}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_display_drops_credentials() {
        assert_eq!(
            server_for_display("smtps://u:secret@mail.example.com:465"),
            "smtps://mail.example.com:465"
        );
        assert_eq!(
            server_for_display("smtp://127.0.0.1:25"),
            "smtp://127.0.0.1:25"
        );
    }
}
