//! OATH TOTP secrets of MFA users, sealed by the caller (the store never sees one in
//! clear), with the last time step accepted (a code is accepted once, whichever server
//! checks it).

use async_trait::async_trait;

use crate::Result;

/// A user's enrolled secret.
#[derive(Clone, PartialEq, Eq)]
pub struct OtpSecret {
    /// The secret, sealed with the service's key.
    pub sealed: String,
    /// The time step of the last code accepted.
    pub last_step: Option<i64>,
    pub enrolled_at: String,
}

/// Never shows the sealed secret.
impl std::fmt::Debug for OtpSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtpSecret")
            .field("last_step", &self.last_step)
            .field("enrolled_at", &self.enrolled_at)
            .finish_non_exhaustive()
    }
}

/// OATH TOTP secrets, one per MFA user, found by the user's username (case-insensitive).
#[async_trait]
pub trait OtpStore: Send + Sync {
    /// Enroll (or re-enroll) the user named `username` with a sealed secret, audited
    /// ("otp-enrolled") by `actor`, in one transaction; false when no such user.
    async fn otp_enroll(&self, username: &str, sealed: &str, actor: &str) -> Result<bool>;
    /// The user's secret, None when not enrolled (or no such user).
    async fn otp_secret(&self, username: &str) -> Result<Option<OtpSecret>>;
    /// Accept the code of time step `step` for the user: true when no code of this step
    /// or a later one was accepted before (compare-and-set: a replay is refused even
    /// when two servers check it at once).
    async fn otp_accept_step(&self, username: &str, step: i64) -> Result<bool>;
    /// Remove the user's secret, audited ("otp-removed") by `actor`; whether there was one.
    async fn otp_remove(&self, username: &str, actor: &str) -> Result<bool>;
    /// Every secret as (user row id, sealed): for re-sealing with a new key.
    async fn otp_all(&self) -> Result<Vec<(i64, String)>>;
    /// Replace sealed secrets by user row id, in one transaction.
    async fn otp_reseal(&self, sealed: &[(i64, String)]) -> Result<()>;
}

/// The `OtpStore` implementation for `$store` (see `common::impl_store!`, which defines
/// the helpers and imports the methods use).
macro_rules! impl_otp_store {
    ($store:ty, $db:ty) => {
        impl $store {
            /// The row id and stored username of the user `username` names (case-insensitive).
            async fn otp_user_row(&self, tx: &mut Tx, username: &str) -> Result<Option<(i64, String)>> {
                Ok(
                    sqlx::query_as("SELECT id, username FROM users WHERE username_lower = $1")
                        .bind(username.to_lowercase())
                        .fetch_optional(&mut **tx)
                        .await?,
                )
            }
        }

        #[async_trait::async_trait]
        impl $crate::OtpStore for $store {
            async fn otp_enroll(&self, username: &str, sealed: &str, actor: &str) -> Result<bool> {
                let at = now()?;
                let mut tx = self.begin().await?;
                let found = self.otp_user_row(&mut tx, username).await?;
                let Some((id, name)) = found else {
                    return Ok(false);
                };
                sqlx::query(
                    "INSERT INTO otp_secrets (user_id, sealed, last_step, enrolled_at) \
                     VALUES ($1, $2, NULL, $3) ON CONFLICT (user_id) DO UPDATE SET \
                     sealed = excluded.sealed, last_step = NULL, enrolled_at = excluded.enrolled_at",
                )
                .bind(id)
                .bind(sealed)
                .bind(at.as_str())
                .execute(&mut *tx)
                .await?;
                let detail = format!("OATH token secret of {name} enrolled");
                let row = AuditRow {
                    username: Some(name.as_str()),
                    ..AuditRow::event("otp-enrolled", actor, &detail)
                };
                self.write_audit(&mut tx, &[row], &at).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn otp_secret(&self, username: &str) -> Result<Option<$crate::OtpSecret>> {
                let row: Option<(String, Option<i64>, String)> = sqlx::query_as(
                    "SELECT o.sealed, o.last_step, o.enrolled_at FROM otp_secrets o \
                     JOIN users u ON u.id = o.user_id WHERE u.username_lower = $1",
                )
                .bind(username.to_lowercase())
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(|(sealed, last_step, enrolled_at)| $crate::OtpSecret {
                    sealed,
                    last_step,
                    enrolled_at,
                }))
            }

            async fn otp_accept_step(&self, username: &str, step: i64) -> Result<bool> {
                let done = sqlx::query(
                    "UPDATE otp_secrets SET last_step = $1 WHERE user_id = \
                     (SELECT id FROM users WHERE username_lower = $2) \
                     AND (last_step IS NULL OR last_step < $1)",
                )
                .bind(step)
                .bind(username.to_lowercase())
                .execute(&self.pool)
                .await?
                .rows_affected();
                Ok(done == 1)
            }

            async fn otp_remove(&self, username: &str, actor: &str) -> Result<bool> {
                let at = now()?;
                let mut tx = self.begin().await?;
                let found = self.otp_user_row(&mut tx, username).await?;
                let Some((id, name)) = found else {
                    return Ok(false);
                };
                let gone = sqlx::query("DELETE FROM otp_secrets WHERE user_id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if gone == 0 {
                    return Ok(false);
                }
                let detail = format!("OATH token secret of {name} removed");
                let row = AuditRow {
                    username: Some(name.as_str()),
                    ..AuditRow::event("otp-removed", actor, &detail)
                };
                self.write_audit(&mut tx, &[row], &at).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn otp_all(&self) -> Result<Vec<(i64, String)>> {
                Ok(
                    sqlx::query_as("SELECT user_id, sealed FROM otp_secrets ORDER BY user_id")
                        .fetch_all(&self.pool)
                        .await?,
                )
            }

            async fn otp_reseal(&self, sealed: &[(i64, String)]) -> Result<()> {
                let mut tx = self.begin().await?;
                for (id, s) in sealed {
                    sqlx::query("UPDATE otp_secrets SET sealed = $1 WHERE user_id = $2")
                        .bind(s)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(())
            }
        }
    };
}
pub(crate) use impl_otp_store;
