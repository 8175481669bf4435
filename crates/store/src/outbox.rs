//! The outbox of user emails (issue 19): rows written in a sync's transaction
//! (through the `Composer` a store handle is given) and delivered afterwards
//! by a sender that claims, marks sent, retries or gives up. A cycle's
//! summary email (issue 22) is a row too, queued by `outbox_enqueue` after
//! the cycle, with username [`SUMMARY_USERNAME`] and no directory_id.

use mfasync_core::email::EmailKind;
use mfasync_core::plan::Change;

/// Renders the emails a batch of changes calls for (the binary's templates);
/// asked by the store inside the transaction that writes the changes. Never
/// fails: an email that cannot be rendered must not fail the sync.
pub trait Composer: Send + Sync {
    fn compose(&self, changes: &[Change]) -> Vec<NewEmail>;
}

/// The username of a summary row (parentheses: no directory username is shown so).
pub const SUMMARY_USERNAME: &str = "(summary)";

/// An email to queue, already rendered (the row is self-contained).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEmail {
    pub kind: EmailKind,
    pub username: String,
    pub directory_id: Option<String>,
    pub recipient: String,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
}

/// Where an outbox row stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutboxStatus {
    Pending,
    Sent,
    /// Given up after `email.give_up_after`.
    Failed,
}

impl OutboxStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxStatus::Pending => "pending",
            OutboxStatus::Sent => "sent",
            OutboxStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(OutboxStatus::Pending),
            "sent" => Some(OutboxStatus::Sent),
            "failed" => Some(OutboxStatus::Failed),
            _ => None,
        }
    }
}

/// One outbox row. Times are Unix epoch milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEmail {
    pub id: i64,
    pub kind: EmailKind,
    pub username: String,
    pub directory_id: Option<String>,
    pub recipient: String,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
    pub status: OutboxStatus,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub created_ms: i64,
    /// When delivery began (created or re-queued): the give-up time counts from it.
    pub queued_ms: i64,
    pub due_ms: i64,
    pub sent_ms: Option<i64>,
}

impl OutboxEmail {
    /// The row as `mfasync outbox list --json` and `GET /api/v1/outbox`
    /// show it: no bodies, times as RFC 3339 UTC.
    pub fn listing_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "kind": self.kind.as_str(),
            "username": self.username,
            "recipient": self.recipient,
            "subject": self.subject,
            "status": self.status.as_str(),
            "attempts": self.attempts,
            "last_error": self.last_error,
            "created_at": time_text(self.created_ms),
            "next_attempt_at": (self.status == OutboxStatus::Pending).then(|| time_text(self.due_ms)),
            "sent_at": self.sent_ms.map(time_text),
        })
    }
}

/// Unix epoch milliseconds as RFC 3339 UTC (the number itself if out of range).
pub fn time_text(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

/// What `Store::outbox_retry` re-queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryTarget {
    Ids(Vec<i64>),
    /// Every failed row.
    Failed,
}

/// The composer a store handle's plan writes ask (`Store::set_composer`).
#[derive(Default)]
pub(crate) struct ComposerSlot(std::sync::Mutex<Option<std::sync::Arc<dyn Composer>>>);

impl ComposerSlot {
    pub(crate) fn set(&self, c: Option<std::sync::Arc<dyn Composer>>) {
        match self.0.lock() {
            Ok(mut g) => *g = c,
            Err(poisoned) => *poisoned.into_inner() = c,
        }
    }

    pub(crate) fn get(&self) -> Option<std::sync::Arc<dyn Composer>> {
        match self.0.lock() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

pub(crate) const COLUMNS: &str = "id, kind, username, directory_id, recipient, subject, \
     text_body, html_body, status, attempts, last_error, created_ms, queued_ms, due_ms, sent_ms";

/// Insert one email unless it is a welcome for a directory user that
/// already had one (any status).
pub(crate) const INSERT: &str = "INSERT INTO outbox (kind, username, directory_id, recipient, \
     subject, text_body, html_body, status, attempts, created_ms, queued_ms, due_ms) \
     SELECT $1, $2, $3, $4, $5, $6, $7, 'pending', 0, $8, $8, $8 \
     WHERE $1 <> 'welcome' OR $3 IS NULL OR NOT EXISTS \
     (SELECT 1 FROM outbox WHERE kind = 'welcome' AND directory_id = $3)";

/// The audit detail of an email event.
pub(crate) fn detail(e: &OutboxEmail, what: &str) -> String {
    format!(
        "{} email to {} (outbox #{}){what}",
        e.kind.as_str(),
        e.recipient,
        e.id
    )
}

/// The audit row of one email's `action` (sent, failed, re-queued), naming
/// its user (a summary row names none: it is in no user's history).
pub(crate) fn audit_row<'a>(
    e: &'a OutboxEmail,
    action: &'a str,
    actor: &'a str,
    detail: &'a str,
) -> crate::common::AuditRow<'a> {
    crate::common::AuditRow {
        username: (e.kind != EmailKind::Summary).then_some(e.username.as_str()),
        directory_id: e.directory_id.as_deref(),
        ..crate::common::AuditRow::event(action, actor, detail)
    }
}

/// Write the outbox half of the `Store` implementation for `$store` (whose
/// `impl_store!` defines `Tx`); the trait methods in `impl_store!` call these.
macro_rules! impl_outbox {
    ($store:ty, $db:ty) => {
        fn outbox_from_row(row: &<$db as sqlx::Database>::Row) -> Result<$crate::OutboxEmail> {
            let kind: String = row.try_get("kind")?;
            let status: String = row.try_get("status")?;
            Ok($crate::OutboxEmail {
                id: row.try_get("id")?,
                kind: mfasync_core::email::EmailKind::parse(&kind)
                    .ok_or_else(|| StoreError::Corrupt(format!("outbox kind {kind:?}")))?,
                username: row.try_get("username")?,
                directory_id: row.try_get("directory_id")?,
                recipient: row.try_get("recipient")?,
                subject: row.try_get("subject")?,
                text: row.try_get("text_body")?,
                html: row.try_get("html_body")?,
                status: $crate::OutboxStatus::parse(&status)
                    .ok_or_else(|| StoreError::Corrupt(format!("outbox status {status:?}")))?,
                attempts: row.try_get("attempts")?,
                last_error: row.try_get("last_error")?,
                created_ms: row.try_get("created_ms")?,
                queued_ms: row.try_get("queued_ms")?,
                due_ms: row.try_get("due_ms")?,
                sent_ms: row.try_get("sent_ms")?,
            })
        }

        impl $store {
            /// Insert `emails` in `tx`; how many were queued.
            async fn outbox_insert(&self, tx: &mut Tx, emails: &[$crate::NewEmail]) -> Result<u64> {
                let now = $crate::common::now_ms();
                let mut queued = 0;
                for e in emails {
                    queued += sqlx::query($crate::outbox::INSERT)
                        .bind(e.kind.as_str())
                        .bind(e.username.as_str())
                        .bind(e.directory_id.as_deref())
                        .bind(e.recipient.as_str())
                        .bind(e.subject.as_str())
                        .bind(e.text.as_str())
                        .bind(e.html.as_deref())
                        .bind(now)
                        .execute(&mut **tx)
                        .await?
                        .rows_affected();
                }
                Ok(queued)
            }

            /// The emails the composer renders for `changes`, queued in `tx`.
            async fn outbox_compose(&self, tx: &mut Tx, changes: &[Change]) -> Result<()> {
                if let Some(c) = self.composer.get() {
                    let emails = c.compose(changes);
                    if !emails.is_empty() {
                        self.outbox_insert(tx, &emails).await?;
                    }
                }
                Ok(())
            }

            async fn outbox_one(tx: &mut Tx, id: i64) -> Result<$crate::OutboxEmail> {
                let sql = format!("SELECT {} FROM outbox WHERE id = $1", $crate::outbox::COLUMNS);
                let row = sqlx::query(&sql)
                    .bind(id)
                    .fetch_optional(&mut **tx)
                    .await?
                    .ok_or_else(|| StoreError::Conflict(format!("no outbox email #{id}")))?;
                outbox_from_row(&row)
            }

            async fn outbox_enqueue_impl(&self, emails: &[$crate::NewEmail]) -> Result<u64> {
                let mut tx = self.begin().await?;
                let n = self.outbox_insert(&mut tx, emails).await?;
                tx.commit().await?;
                Ok(n)
            }

            async fn outbox_list_impl(
                &self,
                status: Option<$crate::OutboxStatus>,
                limit: i64,
            ) -> Result<Vec<$crate::OutboxEmail>> {
                let sql = format!(
                    "SELECT {} FROM outbox WHERE ($1 IS NULL OR status = $1) ORDER BY id DESC LIMIT $2",
                    $crate::outbox::COLUMNS
                );
                let rows = sqlx::query(&sql)
                    .bind(status.map(|s| s.as_str()))
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(outbox_from_row).collect()
            }

            async fn outbox_claim_impl(
                &self,
                now_ms: i64,
                claim_until_ms: i64,
            ) -> Result<Option<$crate::OutboxEmail>> {
                // The outer conditions are checked again on the row as it is
                // once locked: a row another sender claimed meanwhile is skipped.
                let sql = format!(
                    "UPDATE outbox SET claimed_until_ms = $1, attempts = attempts + 1 \
                     WHERE id = (SELECT id FROM outbox WHERE status = 'pending' AND due_ms <= $2 \
                     AND (claimed_until_ms IS NULL OR claimed_until_ms <= $2) \
                     ORDER BY due_ms, id LIMIT 1) \
                     AND status = 'pending' AND (claimed_until_ms IS NULL OR claimed_until_ms <= $2) \
                     RETURNING {}",
                    $crate::outbox::COLUMNS
                );
                // Nothing due (the usual case): no write transaction, so
                // polling never waits for a sync's long one (SQLite).
                let due: Option<i64> = sqlx::query_scalar(
                    "SELECT id FROM outbox WHERE status = 'pending' AND due_ms <= $1 \
                     AND (claimed_until_ms IS NULL OR claimed_until_ms <= $1) LIMIT 1",
                )
                .bind(now_ms)
                .fetch_optional(&self.pool)
                .await?;
                if due.is_none() {
                    return Ok(None);
                }
                let mut tx = self.begin().await?;
                let row = sqlx::query(&sql)
                    .bind(claim_until_ms)
                    .bind(now_ms)
                    .fetch_optional(&mut *tx)
                    .await?;
                tx.commit().await?;
                row.as_ref().map(outbox_from_row).transpose()
            }

            async fn outbox_sent_impl(&self, id: i64, now_ms: i64) -> Result<()> {
                let mut tx = self.begin().await?;
                let e = Self::outbox_one(&mut tx, id).await?;
                sqlx::query(
                    "UPDATE outbox SET status = 'sent', sent_ms = $1, claimed_until_ms = NULL, \
                     last_error = NULL WHERE id = $2",
                )
                .bind(now_ms)
                .bind(id)
                .execute(&mut *tx)
                .await?;
                let detail = $crate::outbox::detail(&e, "");
                let row = $crate::outbox::audit_row(&e, "email-sent", "outbox", &detail);
                self.write_audit(&mut tx, &[row], &now()?).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn outbox_attempt_failed_impl(
                &self,
                id: i64,
                error: &str,
                retry_at_ms: Option<i64>,
            ) -> Result<()> {
                let mut tx = self.begin().await?;
                let e = Self::outbox_one(&mut tx, id).await?;
                match retry_at_ms {
                    Some(at) => {
                        sqlx::query(
                            "UPDATE outbox SET due_ms = $1, last_error = $2, claimed_until_ms = NULL \
                             WHERE id = $3",
                        )
                        .bind(at)
                        .bind(error)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    }
                    None => {
                        sqlx::query(
                            "UPDATE outbox SET status = 'failed', last_error = $1, \
                             claimed_until_ms = NULL WHERE id = $2",
                        )
                        .bind(error)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                        let detail = $crate::outbox::detail(&e, &format!(": gave up: {error}"));
                        let row = $crate::outbox::audit_row(&e, "email-failed", "outbox", &detail);
                        self.write_audit(&mut tx, &[row], &now()?).await?;
                    }
                }
                tx.commit().await?;
                Ok(())
            }

            async fn outbox_retry_impl(
                &self,
                target: &$crate::RetryTarget,
                now_ms: i64,
                actor: &str,
            ) -> Result<Vec<i64>> {
                let mut tx = self.begin().await?;
                let rows = match target {
                    $crate::RetryTarget::Failed => {
                        let sql = format!(
                            "SELECT {} FROM outbox WHERE status = 'failed' ORDER BY id",
                            $crate::outbox::COLUMNS
                        );
                        let rows = sqlx::query(&sql).fetch_all(&mut *tx).await?;
                        rows.iter().map(outbox_from_row).collect::<Result<Vec<_>>>()?
                    }
                    $crate::RetryTarget::Ids(ids) => {
                        let mut rows = Vec::with_capacity(ids.len());
                        for id in ids {
                            let e = Self::outbox_one(&mut tx, *id).await?;
                            if e.status == $crate::OutboxStatus::Sent {
                                return Err(StoreError::Conflict(format!(
                                    "outbox email #{id} was already sent: nothing re-queued"
                                )));
                            }
                            rows.push(e);
                        }
                        rows
                    }
                };
                let at = now()?;
                let mut done = Vec::with_capacity(rows.len());
                for e in &rows {
                    sqlx::query(
                        "UPDATE outbox SET status = 'pending', due_ms = $1, queued_ms = $1, \
                         claimed_until_ms = NULL WHERE id = $2",
                    )
                    .bind(now_ms)
                    .bind(e.id)
                    .execute(&mut *tx)
                    .await?;
                    let detail = $crate::outbox::detail(e, "");
                    let row = $crate::outbox::audit_row(&e, "email-requeued", actor, &detail);
                    self.write_audit(&mut tx, &[row], &at).await?;
                    done.push(e.id);
                }
                tx.commit().await?;
                Ok(done)
            }
        }
    };
}
pub(crate) use impl_outbox;
