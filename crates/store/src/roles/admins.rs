//! Local administrators, their sessions and API tokens.

use async_trait::async_trait;

use crate::{AuthToken, Result, TokenKind};

/// Local administrators, their sessions and API tokens.
#[async_trait]
pub trait AdminStore: Send + Sync {
    /// Set (create or replace) a local administrator's password hash (a PHC
    /// string; the store never sees the password) and end that
    /// administrator's sessions, in one transaction. Audited ("admin-password").
    async fn admin_set_password(&self, username: &str, password_hash: &str) -> Result<()>;
    /// The local administrators' usernames, sorted.
    async fn admins(&self) -> Result<Vec<String>>;
    /// Remove a local administrator with every session and API token acting
    /// for that name, audited ("admin-removed") by `actor`, in one
    /// transaction: (sessions ended, API tokens revoked), None when unknown.
    async fn admin_remove(&self, username: &str, actor: &str) -> Result<Option<(u64, u64)>>;
    /// The stored password hash of a local administrator, None when unknown.
    async fn admin_password_hash(&self, username: &str) -> Result<Option<String>>;
    /// Store a session or API token; a `Conflict` when its hash is already
    /// stored. API tokens are audited ("token-created"), sessions are not.
    async fn token_create(&self, token: &AuthToken) -> Result<()>;
    /// One token by the hash of its secret, whether expired or not.
    async fn token_get(&self, token_hash: &str) -> Result<Option<AuthToken>>;
    /// The tokens of `kind` ("session" or "api"), newest first.
    async fn tokens(&self, kind: TokenKind) -> Result<Vec<AuthToken>>;
    /// Delete one token (sign-out, revocation); whether it existed. Deleting
    /// an API token is audited ("token-revoked").
    async fn token_delete(&self, token_hash: &str) -> Result<bool>;
    /// Delete every token whose `expires_at` is before `now` (RFC 3339 UTC);
    /// how many.
    async fn tokens_delete_expired(&self, now: &str) -> Result<u64>;
}

/// The `AdminStore` implementation for `$store` (see `common::impl_store!`, which defines
/// the helpers and imports the methods use).
macro_rules! impl_admin_store {
    ($store:ty, $db:ty) => {
        #[async_trait::async_trait]
        impl $crate::AdminStore for $store {
            async fn admin_set_password(&self, username: &str, password_hash: &str) -> Result<()> {
                let at = now()?;
                let mut tx = self.begin().await?;
                sqlx::query(
                    "INSERT INTO admins (username, password_hash, updated_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (username) DO UPDATE SET password_hash = excluded.password_hash, \
                     updated_at = excluded.updated_at",
                )
                .bind(username)
                .bind(password_hash)
                .bind(at.as_str())
                .execute(&mut *tx)
                .await?;
                // whoever signed in with the old password is signed out
                let ended = sqlx::query("DELETE FROM auth_tokens WHERE kind = 'session' AND username = $1")
                    .bind(username)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                let detail = match ended {
                    0 => format!("password of administrator {username} set"),
                    n => format!("password of administrator {username} set; {n} session(s) ended"),
                };
                let row = AuditRow::event("admin-password", ACTOR_ADMIN, &detail);
                self.write_audit(&mut tx, &[row], &at).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn admins(&self) -> Result<Vec<String>> {
                Ok(sqlx::query_scalar("SELECT username FROM admins ORDER BY username")
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn admin_remove(&self, username: &str, actor: &str) -> Result<Option<(u64, u64)>> {
                let at = now()?;
                let mut tx = self.begin().await?;
                let gone = sqlx::query("DELETE FROM admins WHERE username = $1")
                    .bind(username)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if gone == 0 {
                    return Ok(None);
                }
                let kinds: Vec<String> =
                    sqlx::query_scalar("DELETE FROM auth_tokens WHERE username = $1 RETURNING kind")
                        .bind(username)
                        .fetch_all(&mut *tx)
                        .await?;
                let sessions = kinds.iter().filter(|k| *k == "session").count() as u64;
                let tokens = kinds.len() as u64 - sessions;
                let detail = format!(
                    "administrator {username} removed; {sessions} session(s) ended, {tokens} API token(s) revoked"
                );
                let row = AuditRow::event("admin-removed", actor, &detail);
                self.write_audit(&mut tx, &[row], &at).await?;
                tx.commit().await?;
                Ok(Some((sessions, tokens)))
            }

            async fn admin_password_hash(&self, username: &str) -> Result<Option<String>> {
                Ok(
                    sqlx::query_scalar("SELECT password_hash FROM admins WHERE username = $1")
                        .bind(username)
                        .fetch_optional(&self.pool)
                        .await?,
                )
            }

            async fn token_create(&self, token: &$crate::AuthToken) -> Result<()> {
                let mut tx = self.begin().await?;
                sqlx::query(
                    "INSERT INTO auth_tokens (token_hash, kind, username, label, csrf, created_at, \
                     expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(token.token_hash.as_str())
                .bind(token.kind.as_str())
                .bind(token.username.as_str())
                .bind(token.label.as_deref())
                .bind(token.csrf.as_deref())
                .bind(token.created_at.as_str())
                .bind(token.expires_at.as_deref())
                .execute(&mut *tx)
                .await
                .map_err(|e| map_unique(e, "store token"))?;
                if token.kind == $crate::TokenKind::Api {
                    let detail = format!(
                        "API token {} ({}) created for {}, expires {}",
                        $crate::common::short_hash(&token.token_hash),
                        token.label.as_deref().unwrap_or(""),
                        token.username,
                        token.expires_at.as_deref().unwrap_or("never")
                    );
                    let row = AuditRow::event("token-created", ACTOR_ADMIN, &detail);
                    self.write_audit(&mut tx, &[row], &token.created_at).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn token_get(&self, token_hash: &str) -> Result<Option<$crate::AuthToken>> {
                let sql = format!("{} WHERE token_hash = $1", $crate::common::SELECT_TOKENS);
                let row = sqlx::query(&sql).bind(token_hash).fetch_optional(&self.pool).await?;
                row.as_ref().map(token_from_row).transpose()
            }

            async fn tokens(&self, kind: $crate::TokenKind) -> Result<Vec<$crate::AuthToken>> {
                let sql = format!(
                    "{} WHERE kind = $1 ORDER BY created_at DESC, token_hash",
                    $crate::common::SELECT_TOKENS
                );
                let rows = sqlx::query(&sql).bind(kind.as_str()).fetch_all(&self.pool).await?;
                rows.iter().map(token_from_row).collect()
            }

            async fn token_delete(&self, token_hash: &str) -> Result<bool> {
                let at = now()?;
                let mut tx = self.begin().await?;
                let kind: Option<String> =
                    sqlx::query_scalar("DELETE FROM auth_tokens WHERE token_hash = $1 RETURNING kind")
                        .bind(token_hash)
                        .fetch_optional(&mut *tx)
                        .await?;
                if kind.as_deref() == Some($crate::TokenKind::Api.as_str()) {
                    let detail = format!(
                        "API token {} revoked",
                        $crate::common::short_hash(token_hash)
                    );
                    let row = AuditRow::event("token-revoked", ACTOR_ADMIN, &detail);
                    self.write_audit(&mut tx, &[row], &at).await?;
                }
                tx.commit().await?;
                Ok(kind.is_some())
            }

            async fn tokens_delete_expired(&self, now: &str) -> Result<u64> {
                let done = sqlx::query(
                    "DELETE FROM auth_tokens WHERE expires_at IS NOT NULL AND expires_at < $1",
                )
                .bind(now)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected())
            }
        }
    };
}
pub(crate) use impl_admin_store;
