//! The stored configuration versions.

use async_trait::async_trait;

use crate::{ConfigRewrite, ConfigVersion, Result};

/// The stored configuration versions.
#[async_trait]
pub trait ConfigStore: Send + Sync {
    /// Store a new active configuration version; returns its number.
    async fn put_config(&self, toml: &str) -> Result<i64>;
    /// Store `toml` as the new active version only while version `based_on`
    /// is still the active one (else `None`, nothing stored: somebody stored
    /// a newer one), audited as `config` by `actor` with `detail` after the
    /// version number. For changes the service makes itself (a sync item
    /// that followed a rename), which must never undo an administrator's.
    async fn put_config_if_active(
        &self,
        toml: &str,
        based_on: i64,
        actor: &str,
        detail: &str,
    ) -> Result<Option<i64>>;
    async fn active_config(&self) -> Result<Option<ConfigVersion>>;
    /// All stored versions, newest first.
    async fn config_versions(&self) -> Result<Vec<ConfigVersion>>;
    /// Replace the stored text of configuration versions in place (`db
    /// rekey`: their passwords sealed), all in one transaction with one audit
    /// row (`action`, `actor`, `detail`). Refused with nothing changed
    /// (`Conflict`) when a version's text is no longer the one it replaces.
    async fn rewrite_configs(
        &self,
        changes: &[ConfigRewrite],
        actor: &str,
        action: &str,
        detail: &str,
    ) -> Result<()>;
}

/// The `ConfigStore` implementation for `$store` (see `common::impl_store!`, which defines
/// the helpers and imports the methods use).
macro_rules! impl_config_store {
    ($store:ty, $db:ty) => {
        #[async_trait::async_trait]
        impl $crate::ConfigStore for $store {
            async fn put_config(&self, toml: &str) -> Result<i64> {
                let at = now()?;
                let mut tx = self.begin().await?;
                sqlx::query("UPDATE config_versions SET active = FALSE WHERE active")
                    .execute(&mut *tx)
                    .await?;
                let version = insert_config_version(&mut tx, &at, toml).await?;
                let detail = format!("config version {version}");
                let row = AuditRow::event("config", ACTOR_ADMIN, &detail);
                self.write_audit(&mut tx, &[row], &at).await?;
                tx.commit().await?;
                Ok(version)
            }

            async fn put_config_if_active(
                &self,
                toml: &str,
                based_on: i64,
                actor: &str,
                detail: &str,
            ) -> Result<Option<i64>> {
                let at = now()?;
                let mut tx = self.begin().await?;
                let done = sqlx::query(
                    "UPDATE config_versions SET active = FALSE WHERE active AND version = $1",
                )
                .bind(based_on)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() != 1 {
                    return Ok(None);
                }
                let version = insert_config_version(&mut tx, &at, toml).await?;
                let detail = format!("config version {version}: {detail}");
                let row = AuditRow::event("config", actor, &detail);
                self.write_audit(&mut tx, &[row], &at).await?;
                tx.commit().await?;
                Ok(Some(version))
            }

            async fn active_config(&self) -> Result<Option<ConfigVersion>> {
                let row = sqlx::query(
                    "SELECT version, created_at, toml FROM config_versions WHERE active",
                )
                .fetch_optional(&self.pool)
                .await?;
                row.as_ref().map(config_from_row).transpose()
            }

            async fn config_versions(&self) -> Result<Vec<ConfigVersion>> {
                let rows = sqlx::query(
                    "SELECT version, created_at, toml FROM config_versions ORDER BY version DESC",
                )
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(config_from_row).collect()
            }

            async fn rewrite_configs(
                &self,
                changes: &[$crate::ConfigRewrite],
                actor: &str,
                action: &str,
                detail: &str,
            ) -> Result<()> {
                let at = now()?;
                let mut tx = self.begin().await?;
                for c in changes {
                    let done = sqlx::query(
                        "UPDATE config_versions SET toml = $1 WHERE version = $2 AND toml = $3",
                    )
                    .bind(c.new.as_str())
                    .bind(c.version)
                    .bind(c.old.as_str())
                    .execute(&mut *tx)
                    .await?;
                    if done.rows_affected() != 1 {
                        return Err($crate::StoreError::Conflict(format!(
                            "configuration version {} changed meanwhile: nothing rewritten",
                            c.version
                        )));
                    }
                }
                let row = AuditRow::event(action, actor, detail);
                self.write_audit(&mut tx, &[row], &at).await?;
                tx.commit().await?;
                Ok(())
            }
        }
    };
}
pub(crate) use impl_config_store;
