//! Several servers on one database: registration, the sync lease and its fence,
//! Synchronize Now requests.

use async_trait::async_trait;

use crate::{Fence, Lease, Result, ServerInfo, SyncRequest};

/// Several servers on one database: registration, the sync lease and its fence,
/// Synchronize Now requests.
#[async_trait]
pub trait ClusterStore: Send + Sync {
    /// From now on, every sync write of this store handle (`apply`,
    /// `create_approval`, `supersede_pending`) first checks, under a lock of
    /// the lease row and INSIDE its transaction, that `fence` still holds the
    /// sync lease (same holder, instance and token, not expired); otherwise
    /// it fails with `Fenced` and commits nothing. None (the default): no
    /// check (the one-shot CLI commands).
    fn set_fence(&self, fence: Option<Fence>);
    /// Register a server or record its heartbeat (insert or replace by name).
    async fn server_heartbeat(&self, server: &ServerInfo) -> Result<()>;
    /// Every registered server, by name.
    async fn servers(&self) -> Result<Vec<ServerInfo>>;
    /// Forget a registered server (audited); whether it was registered.
    async fn server_forget(&self, name: &str) -> Result<bool>;
    /// The sync lease as stored.
    async fn lease(&self) -> Result<Lease>;
    /// Take or renew the sync lease for (`name`, `instance`) at `now_ms` for
    /// `period_ms`, in one transaction; returns the lease as it is afterwards
    /// (see [`Lease::held_by`]). Renewing keeps the token; taking it adds one.
    /// It is taken when free, expired, or held by an earlier process of the
    /// same server name (a restart). When another server is pinned, a holder
    /// gives it up instead and nobody else takes it.
    async fn lease_acquire(
        &self,
        name: &str,
        instance: &str,
        now_ms: i64,
        period_ms: i64,
    ) -> Result<Lease>;
    /// Give the lease up (a clean shutdown) when (`name`, `instance`) holds it;
    /// whether it did.
    async fn lease_release(&self, name: &str, instance: &str) -> Result<bool>;
    /// Pin synchronization to one server (None: automatic), audited by `actor`.
    async fn lease_pin(&self, name: Option<&str>, actor: &str) -> Result<Lease>;
    /// Queue a Synchronize Now for the runner (it takes it with
    /// `sync_request_take` at its next heartbeat): ONE pending request, a
    /// second one before it is taken joins it (full when either is).
    /// Audited ("sync-requested") by `by`. Returns the lease (who will run it).
    async fn sync_request(&self, full: bool, by: &str, on: &str, now_ms: i64) -> Result<Lease>;
    /// Take (and clear) the pending request, if any.
    async fn sync_request_take(&self) -> Result<Option<SyncRequest>>;
}

/// The `ClusterStore` implementation for `$store` (see `common::impl_store!`, which defines
/// the helpers and imports the methods use).
macro_rules! impl_cluster_store {
    ($store:ty, $db:ty) => {
        #[async_trait::async_trait]
        impl $crate::ClusterStore for $store {
            fn set_fence(&self, fence: Option<$crate::Fence>) {
                self.fence.set(fence);
            }

            async fn server_heartbeat(&self, server: &$crate::ServerInfo) -> Result<()> {
                sqlx::query(
                    "INSERT INTO servers (name, instance, address, version, started_ms, heartbeat_ms, \
                     lease_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (name) DO UPDATE SET \
                     instance = excluded.instance, address = excluded.address, \
                     version = excluded.version, started_ms = excluded.started_ms, \
                     heartbeat_ms = excluded.heartbeat_ms, lease_ms = excluded.lease_ms",
                )
                .bind(server.name.as_str())
                .bind(server.instance.as_str())
                .bind(server.address.as_str())
                .bind(server.version.as_str())
                .bind(server.started_ms)
                .bind(server.heartbeat_ms)
                .bind(server.lease_ms)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn servers(&self) -> Result<Vec<$crate::ServerInfo>> {
                let sql = format!("{} ORDER BY name", $crate::common::SELECT_SERVERS);
                let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
                rows.iter().map(server_from_row).collect()
            }

            async fn server_forget(&self, name: &str) -> Result<bool> {
                let at = now()?;
                let mut tx = self.begin().await?;
                let done = sqlx::query("DELETE FROM servers WHERE name = $1")
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
                let found = done.rows_affected() > 0;
                if found {
                    let detail = format!("server {name} forgotten");
                    let row = AuditRow::event("server-forgotten", ACTOR_ADMIN, &detail);
                    self.write_audit(&mut tx, &[row], &at).await?;
                }
                tx.commit().await?;
                Ok(found)
            }

            async fn lease(&self) -> Result<$crate::Lease> {
                let row = sqlx::query($crate::common::SELECT_LEASE)
                    .fetch_optional(&self.pool)
                    .await?
                    .ok_or_else(|| StoreError::Corrupt("the sync_lease row is missing".into()))?;
                lease_from_row(&row)
            }

            async fn lease_acquire(
                &self,
                name: &str,
                instance: &str,
                now_ms: i64,
                period_ms: i64,
            ) -> Result<$crate::Lease> {
                let mut tx = self.begin().await?;
                let mut l = self.lease_locked(&mut tx).await?;
                let mine = l.holder.as_deref() == Some(name) && l.instance.as_deref() == Some(instance);
                let allowed = l.pinned.as_deref().map_or(true, |p| p == name);
                let expires = now_ms.saturating_add(period_ms);
                let mut event = None;
                if !allowed {
                    if mine {
                        event = Some(format!(
                            "server {name} gave the sync lease up: synchronization is pinned to server {}",
                            l.pinned.as_deref().unwrap_or_default()
                        ));
                        l.holder = None;
                        l.instance = None;
                        l.expires_ms = 0;
                    }
                } else if mine {
                    l.expires_ms = expires;
                } else if l.holder.is_none() || l.expires_ms <= now_ms || l.holder.as_deref() == Some(name) {
                    let was = match (&l.holder, l.expires_ms <= now_ms) {
                        (None, _) => "it was free".to_string(),
                        (Some(h), _) if h == name => "a restart of the same server".to_string(),
                        (Some(h), true) => format!("the lease of server {h} had expired"),
                        (Some(h), false) => format!("held by server {h}"),
                    };
                    l.holder = Some(name.to_string());
                    l.instance = Some(instance.to_string());
                    l.token += 1;
                    l.expires_ms = expires;
                    event = Some(format!(
                        "server {name} took the sync lease, fencing token {} ({was})",
                        l.token
                    ));
                }
                if let Some(detail) = event {
                    sqlx::query(
                        "UPDATE sync_lease SET holder = $1, instance = $2, token = $3, expires_ms = $4 \
                         WHERE id = 1",
                    )
                    .bind(l.holder.as_deref())
                    .bind(l.instance.as_deref())
                    .bind(l.token)
                    .bind(l.expires_ms)
                    .execute(&mut *tx)
                    .await?;
                    let at = now()?;
                    let row = AuditRow::event("sync-lease", name, &detail);
                    self.write_audit(&mut tx, &[row], &at).await?;
                } else if mine && allowed {
                    sqlx::query("UPDATE sync_lease SET expires_ms = $1 WHERE id = 1")
                        .bind(l.expires_ms)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(l)
            }

            async fn lease_release(&self, name: &str, instance: &str) -> Result<bool> {
                let done = sqlx::query(
                    "UPDATE sync_lease SET holder = NULL, instance = NULL, expires_ms = 0 \
                     WHERE id = 1 AND holder = $1 AND instance = $2",
                )
                .bind(name)
                .bind(instance)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn lease_pin(&self, name: Option<&str>, actor: &str) -> Result<$crate::Lease> {
                let at = now()?;
                let mut tx = self.begin().await?;
                let mut l = self.lease_locked(&mut tx).await?;
                sqlx::query("UPDATE sync_lease SET pinned = $1 WHERE id = 1")
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
                l.pinned = name.map(str::to_string);
                let detail = match name {
                    Some(n) => format!("synchronization pinned to server {n}"),
                    None => "synchronization no longer pinned: any server may run it".to_string(),
                };
                let row = AuditRow::event("servers-pin", actor, &detail);
                self.write_audit(&mut tx, &[row], &at).await?;
                tx.commit().await?;
                Ok(l)
            }

            async fn sync_request(
                &self,
                full: bool,
                by: &str,
                on: &str,
                now_ms: i64,
            ) -> Result<$crate::Lease> {
                let at = now()?;
                let mut tx = self.begin().await?;
                let l = self.lease_locked(&mut tx).await?;
                sqlx::query(
                    "UPDATE sync_lease SET request_mode = CASE WHEN request_mode = 1 OR $1 = 1 \
                     THEN 1 ELSE 0 END, request_by = $2, request_on = $3, request_ms = $4 WHERE id = 1",
                )
                .bind(i64::from(full))
                .bind(by)
                .bind(on)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
                let runner = match &l.holder {
                    Some(h) if l.expires_ms > now_ms => format!("server {h}"),
                    _ => "the next server to run synchronization".to_string(),
                };
                let detail = format!(
                    "{} requested on server {on}, handed to {runner}",
                    if full { "full synchronization" } else { "synchronization" }
                );
                let row = AuditRow::event("sync-requested", by, &detail);
                self.write_audit(&mut tx, &[row], &at).await?;
                tx.commit().await?;
                Ok(l)
            }

            async fn sync_request_take(&self) -> Result<Option<$crate::SyncRequest>> {
                let mut tx = self.begin().await?;
                self.lease_locked(&mut tx).await?;
                let row = sqlx::query(
                    "SELECT request_mode, request_by, request_on, request_ms FROM sync_lease \
                     WHERE id = 1 AND request_mode IS NOT NULL",
                )
                .fetch_optional(&mut *tx)
                .await?;
                let Some(row) = row else {
                    return Ok(None);
                };
                let mode: i64 = row.try_get("request_mode")?;
                let req = $crate::SyncRequest {
                    full: mode == 1,
                    by: row.try_get::<Option<String>, _>("request_by")?.unwrap_or_default(),
                    on: row.try_get::<Option<String>, _>("request_on")?.unwrap_or_default(),
                    at_ms: row.try_get::<Option<i64>, _>("request_ms")?.unwrap_or_default(),
                };
                sqlx::query(
                    "UPDATE sync_lease SET request_mode = NULL, request_by = NULL, \
                     request_on = NULL, request_ms = NULL WHERE id = 1",
                )
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(Some(req))
            }
        }
    };
}
pub(crate) use impl_cluster_store;
