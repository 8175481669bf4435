//! The sync history and the audit trail.

use async_trait::async_trait;

use crate::{AuditEntry, Result, SyncRun};

/// The sync history and the audit trail.
#[async_trait]
pub trait HistoryStore: Send + Sync {
    /// Start a sync-history row; returns its id.
    async fn run_started(&self, mode: &str) -> Result<i64>;
    /// Finish a sync-history row with counts or an error.
    async fn run_finished(&self, run: &SyncRun) -> Result<()>;
    /// Mark every unfinished sync-history row interrupted: called by a process
    /// that has just taken the sync lease, before its first cycle (any such
    /// row was started by an earlier holder, which is gone). How many.
    async fn runs_interrupted(&self) -> Result<u64>;
    /// Newest first.
    async fn runs(&self, limit: i64) -> Result<Vec<SyncRun>>;
    /// The newest `limit` audit entries, newest first.
    async fn audit(&self, limit: i64) -> Result<Vec<AuditEntry>>;
    /// One user's audit rows, newest first, at most `limit`: rows whose
    /// username equals `username` case-insensitively, or whose directory id is
    /// `directory_id` (a renamed user keeps its history). Indexed.
    async fn user_audit(
        &self,
        username: &str,
        directory_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<AuditEntry>>;
    /// Delete the audit entries from before `before` (RFC 3339 UTC) and,
    /// when there were any, record that (action "audit-purged", actor
    /// "retention", `why` in the detail) in the same transaction. How many.
    async fn audit_purge(&self, before: &str, why: &str) -> Result<u64>;
    /// Record an event that changes no user (a notification sent or failed, ...)
    /// in the audit trail.
    async fn audit_event(&self, actor: &str, action: &str, detail: &str) -> Result<()>;
}

/// The `HistoryStore` implementation for `$store` (see `common::impl_store!`, which defines
/// the helpers and imports the methods use).
macro_rules! impl_history_store {
    ($store:ty, $db:ty) => {
        #[async_trait::async_trait]
        impl $crate::HistoryStore for $store {
            async fn run_started(&self, mode: &str) -> Result<i64> {
                let at = now()?;
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO sync_runs (started_at, mode) VALUES ($1, $2) RETURNING id",
                )
                .bind(at.as_str())
                .bind(mode)
                .fetch_one(&self.pool)
                .await?;
                Ok(id)
            }

            async fn run_finished(&self, run: &SyncRun) -> Result<()> {
                let finished = match &run.finished_at {
                    Some(t) => t.clone(),
                    None => now()?,
                };
                let done = sqlx::query(
                    "UPDATE sync_runs SET finished_at = $1, created = $2, updated = $3, \
                     enabled = $4, disabled = $5, removed = $6, unchanged = $7, error = $8, \
                     entries_read = $9, interrupted = FALSE, note = $10 WHERE id = $11",
                )
                .bind(finished.as_str())
                .bind(run.created)
                .bind(run.updated)
                .bind(run.enabled)
                .bind(run.disabled)
                .bind(run.removed)
                .bind(run.unchanged)
                .bind(run.error.as_deref())
                .bind(run.entries_read)
                .bind(run.note.as_deref())
                .bind(run.id)
                .execute(&self.pool)
                .await?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::Conflict(format!("no sync run with id {}", run.id)));
                }
                Ok(())
            }

            async fn runs_interrupted(&self) -> Result<u64> {
                let done = sqlx::query(
                    "UPDATE sync_runs SET interrupted = TRUE WHERE finished_at IS NULL AND NOT interrupted",
                )
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected())
            }

            async fn runs(&self, limit: i64) -> Result<Vec<SyncRun>> {
                let rows = sqlx::query(
                    "SELECT id, started_at, finished_at, mode, created, updated, enabled, \
                     disabled, removed, unchanged, error, entries_read, interrupted, note FROM sync_runs \
                     ORDER BY id DESC LIMIT $1",
                )
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(run_from_row).collect()
            }

            async fn audit(&self, limit: i64) -> Result<Vec<AuditEntry>> {
                let rows = sqlx::query(&self.sql.select_audit)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                audit_entries(&rows)
            }

            async fn user_audit(
                &self,
                username: &str,
                directory_id: Option<&str>,
                limit: i64,
            ) -> Result<Vec<AuditEntry>> {
                let rows = sqlx::query(&self.sql.select_user_audit)
                    .bind(username)
                    .bind(directory_id)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                audit_entries(&rows)
            }

            async fn audit_purge(&self, before: &str, why: &str) -> Result<u64> {
                let at = now()?;
                let mut tx = self.begin().await?;
                let n = sqlx::query("DELETE FROM audit WHERE at < $1")
                    .bind(before)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if n > 0 {
                    let detail = format!("{n} audit entries from before {before} purged ({why})");
                    let row = AuditRow::event("audit-purged", "retention", &detail);
                    self.write_audit(&mut tx, &[row], &at).await?;
                }
                tx.commit().await?;
                Ok(n)
            }

            async fn audit_event(&self, actor: &str, action: &str, detail: &str) -> Result<()> {
                let at = now()?;
                let mut tx = self.begin().await?;
                let row = AuditRow::event(action, actor, detail);
                self.write_audit(&mut tx, &[row], &at).await?;
                tx.commit().await?;
                Ok(())
            }
        }
    };
}
pub(crate) use impl_history_store;
