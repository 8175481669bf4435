//! The outbox sender (issue 19 item 2): delivers the user emails a sync
//! queued in its transaction, one claimed row at a time, through `[smtp]`;
//! a failed attempt is retried with exponential backoff until
//! `email.give_up_after`, then the row is failed (audited either way, by
//! the store). `serve` runs it on the server holding the sync lease; a
//! one-shot `sync` delivers what is due for a bounded time before it exits.

use std::time::{Duration, Instant};

use crate::error::{EngineError, Result};
use lettre::message::{header::ContentType, MultiPart, SinglePart};
use lettre::Message;
use mfasync_core::config::{Config, Smtp};
use mfasync_store::{OutboxEmail, Store};

/// How long a one-shot command delivers before it exits (what is left
/// stays pending for the next run or the service).
pub const ONE_SHOT_BUDGET: Duration = Duration::from_secs(30);
/// A row is claimed for one attempt for this long: a sender killed in the
/// middle leaves it to the next sender after that.
const CLAIM: Duration = Duration::from_secs(120);
/// The first retry waits this long, each next one twice as long...
const FIRST_RETRY: Duration = Duration::from_secs(30);
/// ... up to this.
const LONGEST_RETRY: Duration = Duration::from_secs(3600);
/// The wait before the next attempt after `attempts` failed ones (>= 1).
pub fn backoff(attempts: i64) -> Duration {
    let doublings = u32::try_from(attempts.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
    FIRST_RETRY
        .saturating_mul(2u32.saturating_pow(doublings))
        .min(LONGEST_RETRY)
}

/// What a delivery run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub sent: usize,
    /// Attempts that failed and will be retried.
    pub retrying: usize,
    /// Given up (`email.give_up_after` passed).
    pub failed: usize,
}

pub fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(i64::MAX)
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Deliver the rows due now until none is left or `deadline` passes. A
/// store error ends the run (the rows stay pending); SMTP errors are the
/// rows' own.
pub async fn deliver_due(
    store: &dyn Store,
    cfg: &Config,
    deadline: Instant,
) -> mfasync_store::Result<Delivered> {
    let mut done = Delivered::default();
    let Some(smtp) = &cfg.smtp else {
        return Ok(done);
    };
    let give_up = ms(cfg.email.give_up_duration());
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(done);
        }
        let now = now_ms();
        let Some(row) = store
            .outbox_claim(now, now.saturating_add(ms(CLAIM)))
            .await?
        else {
            return Ok(done);
        };
        match send(smtp, &row, left.min(crate::mail::SMTP_TIMEOUT)).await {
            Ok(()) => {
                store.outbox_sent(row.id, now_ms()).await?;
                tracing::info!(target: "mfasync::outbox", id = row.id, user = %row.username, kind = row.kind.as_str(), "email sent");
                done.sent += 1;
            }
            Err(e) => {
                let error = crate::mail::redact(&format!("{e:#}"), smtp);
                let at = now_ms();
                let retry_at = at.saturating_add(ms(backoff(row.attempts)));
                let gives_up = retry_at.saturating_sub(row.queued_ms) > give_up;
                store
                    .outbox_attempt_failed(row.id, &error, (!gives_up).then_some(retry_at))
                    .await?;
                if gives_up {
                    crate::notify::error(format_args!(
                        "gave up the {} email to {} (outbox #{}) after {} attempts: {error}",
                        row.kind.as_str(),
                        row.recipient,
                        row.id,
                        row.attempts
                    ));
                    done.failed += 1;
                } else {
                    tracing::warn!(target: "mfasync::outbox",
                        id = row.id,
                        attempts = row.attempts,
                        "email not sent, retried later: {error}"
                    );
                    done.retrying += 1;
                }
            }
        }
    }
}

/// The row as a message: text, or text and HTML alternatives.
fn message(smtp: &Smtp, row: &OutboxEmail) -> Result<Message> {
    let to = row
        .recipient
        .parse()
        .map_err(|e| EngineError::Mail(format!("{:?} is not a mailbox: {e}", row.recipient)))?;
    let builder = Message::builder()
        .from(crate::mail::sender(smtp)?)
        .to(to)
        .subject(row.subject.clone());
    let built = match &row.html {
        None => builder
            .header(ContentType::TEXT_PLAIN)
            .body(row.text.clone()),
        Some(html) => builder.multipart(
            MultiPart::alternative()
                .singlepart(SinglePart::plain(row.text.clone()))
                .singlepart(SinglePart::html(html.clone())),
        ),
    };
    built.map_err(|e| EngineError::Mail(format!("cannot build the message: {e}")))
}

async fn send(smtp: &Smtp, row: &OutboxEmail, timeout: Duration) -> Result<()> {
    crate::mail::send(smtp, message(smtp, row)?, timeout).await
}

/// The one-shot commands' delivery (`sync`, `outbox send`): what is due,
/// for at most [`ONE_SHOT_BUDGET`]; problems are warnings, never failures.
pub async fn deliver_before_exit(store: &dyn Store, cfg: &Config) -> Option<Delivered> {
    match deliver_due(store, cfg, Instant::now() + ONE_SHOT_BUDGET).await {
        Ok(d) => Some(d),
        Err(e) => {
            crate::notify::warning(format_args!(
                "emails not delivered now (they stay pending): {e}"
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mfasync_store::OutboxStatus;

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        let secs: Vec<u64> = [1, 2, 3, 4, 7, 8, 50, i64::MAX]
            .into_iter()
            .map(|a| backoff(a).as_secs())
            .collect();
        assert_eq!(secs, vec![30, 60, 120, 240, 1920, 3600, 3600, 3600]);
        assert_eq!(backoff(0), FIRST_RETRY);
        assert_eq!(backoff(-5), FIRST_RETRY);
    }

    #[test]
    fn messages_are_text_or_text_and_html() {
        let smtp = Smtp {
            server: "smtp://127.0.0.1:25".into(),
            from: "mfasync@example.com".into(),
            ..Smtp::default()
        };
        let mut row = OutboxEmail {
            id: 1,
            kind: mfasync_core::email::EmailKind::Welcome,
            username: "jdoe".into(),
            directory_id: None,
            recipient: "jdoe@example.com".into(),
            subject: "Hi".into(),
            text: "plain body".into(),
            html: None,
            status: OutboxStatus::Pending,
            attempts: 1,
            last_error: None,
            created_ms: 0,
            queued_ms: 0,
            due_ms: 0,
            sent_ms: None,
        };
        let text = String::from_utf8(message(&smtp, &row).unwrap().formatted()).unwrap();
        assert!(text.contains("To: jdoe@example.com"), "{text}");
        assert!(text.contains("Content-Type: text/plain"), "{text}");
        row.html = Some("<p>html body</p>".into());
        let both = String::from_utf8(message(&smtp, &row).unwrap().formatted()).unwrap();
        assert!(both.contains("multipart/alternative"), "{both}");
        assert!(
            both.contains("<p>html body</p>") && both.contains("plain body"),
            "{both}"
        );
        row.recipient = "not an address".into();
        assert!(message(&smtp, &row).is_err());
    }
}
