//! Changes held for an administrator's approval.

use async_trait::async_trait;

use crate::{Approval, ApprovalStatus, HeldChange, Result, UserDecision};

/// Changes held for an administrator's approval.
#[async_trait]
pub trait ApprovalStore: Send + Sync {
    /// Store a new pending approval with `changes`; every other pending
    /// approval becomes `Superseded`. Audited ("approval-requested", and
    /// "approval-superseded" for each older one), in one transaction.
    async fn create_approval(
        &self,
        id: &str,
        fingerprint: &str,
        changes: &[HeldChange],
    ) -> Result<Approval>;
    /// Mark every pending approval `Superseded` with `detail` (a cycle found
    /// them no longer needed); audited. Returns their ids (empty: nothing done).
    async fn supersede_pending(&self, detail: &str) -> Result<Vec<String>>;
    /// One approval by id, whatever its status.
    async fn approval(&self, id: &str) -> Result<Option<Approval>>;
    /// Approvals with `status` (all when None), newest first.
    async fn approvals(&self, status: Option<ApprovalStatus>) -> Result<Vec<Approval>>;
    /// Decide a pending approval (`Approved` or `Rejected`), audited with
    /// `actor` and `detail`. A `Conflict` when it is unknown or not pending.
    async fn decide_approval(
        &self,
        id: &str,
        status: ApprovalStatus,
        actor: &str,
        detail: Option<&str>,
    ) -> Result<Approval>;
    /// Decide `users` (usernames) of a pending approval alone; the others stay
    /// pending and its fingerprint becomes theirs. When none is left
    /// undecided the approval becomes approved (some user approved) or
    /// rejected (none). Audited with `actor`, the users and `detail`. A
    /// `Conflict` when it is unknown or not pending, or a name is not among
    /// its undecided users.
    async fn decide_users(
        &self,
        id: &str,
        decision: UserDecision,
        users: &[String],
        actor: &str,
        detail: Option<&str>,
    ) -> Result<Approval>;
}

/// The `ApprovalStore` implementation for `$store` (see `common::impl_store!`, which defines
/// the helpers and imports the methods use).
macro_rules! impl_approval_store {
    ($store:ty, $db:ty) => {
        #[async_trait::async_trait]
        impl $crate::ApprovalStore for $store {
            async fn create_approval(
                &self,
                id: &str,
                fingerprint: &str,
                changes: &[$crate::HeldChange],
            ) -> Result<$crate::Approval> {
                let at = now()?;
                let json = $crate::common::held_json(changes)?;
                let mut tx = self.begin().await?;
                let older: Vec<String> =
                    sqlx::query_scalar("SELECT id FROM approvals WHERE status = 'pending' ORDER BY seq")
                        .fetch_all(&mut *tx)
                        .await?;
                sqlx::query(
                    "UPDATE approvals SET status = 'superseded', decided_at = $1, decided_by = $2, \
                     detail = $3 WHERE status = 'pending'",
                )
                .bind(at.as_str())
                .bind($crate::common::ACTOR_SYNC)
                .bind(format!("superseded by {id}"))
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO approvals (id, created_at, status, fingerprint, changes_json) \
                     VALUES ($1, $2, 'pending', $3, $4)",
                )
                .bind(id)
                .bind(at.as_str())
                .bind(fingerprint)
                .bind(json.as_str())
                .execute(&mut *tx)
                .await
                .map_err(|e| map_unique(e, &format!("create approval {id}")))?;
                let disable = changes.iter().filter(|c| c.action == "disable").count();
                let remove = changes.iter().filter(|c| c.action == "remove").count();
                let requested = format!(
                    "approval {id}: {disable} to disable, {remove} to remove, held for approval"
                );
                let superseded: Vec<String> = older
                    .iter()
                    .map(|o| format!("approval {o}: superseded by {id}"))
                    .collect();
                let mut rows: Vec<AuditRow<'_>> = superseded
                    .iter()
                    .map(|d| AuditRow::event("approval-superseded", $crate::common::ACTOR_SYNC, d.as_str()))
                    .collect();
                rows.push(AuditRow::event("approval-requested", $crate::common::ACTOR_SYNC, &requested));
                self.write_audit(&mut tx, &rows, &at).await?;
                self.check_fence(&mut tx).await?;
                tx.commit().await?;
                Ok($crate::Approval {
                    id: id.to_string(),
                    created_at: at,
                    status: $crate::ApprovalStatus::Pending,
                    fingerprint: fingerprint.to_string(),
                    changes: changes.to_vec(),
                    decided_at: None,
                    decided_by: None,
                    detail: None,
                })
            }

            async fn supersede_pending(&self, detail: &str) -> Result<Vec<String>> {
                let at = now()?;
                let mut tx = self.begin().await?;
                let ids: Vec<String> = sqlx::query_scalar(
                    "SELECT id FROM approvals WHERE status = 'pending' ORDER BY seq",
                )
                .fetch_all(&mut *tx)
                .await?;
                if ids.is_empty() {
                    return Ok(ids);
                }
                sqlx::query(
                    "UPDATE approvals SET status = 'superseded', decided_at = $1, decided_by = $2, \
                     detail = $3 WHERE status = 'pending'",
                )
                .bind(at.as_str())
                .bind($crate::common::ACTOR_SYNC)
                .bind(detail)
                .execute(&mut *tx)
                .await?;
                let texts: Vec<String> =
                    ids.iter().map(|id| format!("approval {id}: {detail}")).collect();
                let rows: Vec<AuditRow<'_>> = texts
                    .iter()
                    .map(|d| AuditRow::event("approval-superseded", $crate::common::ACTOR_SYNC, d.as_str()))
                    .collect();
                self.write_audit(&mut tx, &rows, &at).await?;
                self.check_fence(&mut tx).await?;
                tx.commit().await?;
                Ok(ids)
            }

            async fn approval(&self, id: &str) -> Result<Option<$crate::Approval>> {
                let sql = format!("{} WHERE id = $1", $crate::common::SELECT_APPROVALS);
                let row = sqlx::query(&sql).bind(id).fetch_optional(&self.pool).await?;
                row.as_ref().map(approval_from_row).transpose()
            }

            async fn approvals(
                &self,
                status: Option<$crate::ApprovalStatus>,
            ) -> Result<Vec<$crate::Approval>> {
                let rows = match status {
                    Some(st) => {
                        let sql = format!(
                            "{} WHERE status = $1 ORDER BY seq DESC",
                            $crate::common::SELECT_APPROVALS
                        );
                        sqlx::query(&sql).bind(st.as_str()).fetch_all(&self.pool).await?
                    }
                    None => {
                        let sql = format!(
                            "{} ORDER BY seq DESC",
                            $crate::common::SELECT_APPROVALS
                        );
                        sqlx::query(&sql).fetch_all(&self.pool).await?
                    }
                };
                rows.iter().map(approval_from_row).collect()
            }

            async fn decide_approval(
                &self,
                id: &str,
                status: $crate::ApprovalStatus,
                actor: &str,
                detail: Option<&str>,
            ) -> Result<$crate::Approval> {
                use $crate::ApprovalStatus as S;
                if !matches!(status, S::Approved | S::Rejected) {
                    return Err(StoreError::Conflict(format!(
                        "approval {id}: can only be approved or rejected, not {}",
                        status.as_str()
                    )));
                }
                let at = now()?;
                let mut tx = self.begin().await?;
                let sql = format!("{} WHERE id = $1", $crate::common::SELECT_APPROVALS);
                let row = sqlx::query(&sql).bind(id).fetch_optional(&mut *tx).await?;
                let Some(mut a) = row.as_ref().map(approval_from_row).transpose()? else {
                    return Err(StoreError::Conflict(format!("no approval with id {id:?}")));
                };
                if a.status != S::Pending {
                    return Err(StoreError::Conflict(format!(
                        "approval {id} is {}, not pending{}",
                        a.status.as_str(),
                        a.detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default()
                    )));
                }
                sqlx::query(
                    "UPDATE approvals SET status = $1, decided_at = $2, decided_by = $3, detail = $4 \
                     WHERE id = $5 AND status = 'pending'",
                )
                .bind(status.as_str())
                .bind(at.as_str())
                .bind(actor)
                .bind(detail)
                .bind(id)
                .execute(&mut *tx)
                .await?;
                let text = format!(
                    "approval {id}: {}{}",
                    status.as_str(),
                    detail.map(|d| format!(" ({d})")).unwrap_or_default()
                );
                let row = AuditRow::event(if status == S::Approved { "approval-approved" } else { "approval-rejected" }, actor, &text);
                self.write_audit(&mut tx, &[row], &at).await?;
                tx.commit().await?;
                a.status = status;
                a.decided_at = Some(at);
                a.decided_by = Some(actor.to_string());
                a.detail = detail.map(str::to_string);
                Ok(a)
            }

            async fn decide_users(
                &self,
                id: &str,
                decision: $crate::UserDecision,
                users: &[String],
                actor: &str,
                detail: Option<&str>,
            ) -> Result<$crate::Approval> {
                let at = now()?;
                let mut tx = self.begin().await?;
                let sql = format!("{} WHERE id = $1", $crate::common::SELECT_APPROVALS);
                let row = sqlx::query(&sql).bind(id).fetch_optional(&mut *tx).await?;
                let Some(mut a) = row.as_ref().map(approval_from_row).transpose()? else {
                    return Err(StoreError::Conflict(format!("no approval with id {id:?}")));
                };
                $crate::common::mark_users(&mut a, decision, users)?;
                let settled = $crate::common::settle(&a);
                if let Some((status, _)) = &settled {
                    a.status = *status;
                    a.decided_at = Some(at.clone());
                    a.decided_by = Some(actor.to_string());
                } else {
                    a.fingerprint = $crate::held_fingerprint(a.undecided());
                }
                a.detail = settled.map(|(_, d)| d);
                sqlx::query(
                    "UPDATE approvals SET status = $1, fingerprint = $2, changes_json = $3, \
                     decided_at = $4, decided_by = $5, detail = $6 WHERE id = $7 AND status = 'pending'",
                )
                .bind(a.status.as_str())
                .bind(a.fingerprint.as_str())
                .bind($crate::common::held_json(&a.changes)?)
                .bind(a.decided_at.as_deref())
                .bind(a.decided_by.as_deref())
                .bind(a.detail.as_deref())
                .bind(id)
                .execute(&mut *tx)
                .await?;
                let text = $crate::common::user_decision_text(&a, decision, users, detail);
                let action = match decision {
                    $crate::UserDecision::Approved => "approval-approved",
                    $crate::UserDecision::Rejected => "approval-rejected",
                };
                self.write_audit(&mut tx, &[AuditRow::event(action, actor, &text)], &at).await?;
                tx.commit().await?;
                Ok(a)
            }
        }
    };
}
pub(crate) use impl_approval_store;
