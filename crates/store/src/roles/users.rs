//! The MFA users and the sync's writes of them (with the watermark).

use async_trait::async_trait;

use mfasync_core::plan::Change;
use mfasync_core::MfaUser;

use crate::{Applying, Result, UserKey, Watermark};

/// The MFA users and the sync's writes of them (with the watermark).
#[async_trait]
pub trait UserStore: Send + Sync {
    /// A long-running service's password checks: from now on, a lookup of a
    /// few users (`users_by` with at most [`INLINE_LOOKUP`] values) reads on
    /// a connection of its own, on the calling thread, instead of handing the
    /// query to a pooled connection's worker thread and back (SQLite; a
    /// no-op for PostgreSQL, whose queries cross the network anyway). A
    /// failure to open that connection leaves lookups as they were.
    fn read_inline(&self);
    /// All MFA users (directory and manual), ordered by username (case-insensitively,
    /// ties by exact username).
    async fn users(&self) -> Result<Vec<MfaUser>>;
    /// Every user, in [`UserStore::users`]'s order, handed to `each` one at a
    /// time as it is read (memory: one row); `each` returns false to stop.
    /// `users export` writes each row as it comes, whatever the user count.
    async fn users_each(&self, each: &mut (dyn FnMut(MfaUser) -> bool + Send)) -> Result<()>;
    /// The users (directory and manual) whose `key` equals one of `values`,
    /// in no particular order: the lookups of an incremental cycle, without
    /// loading every user.
    async fn users_by(&self, key: UserKey, values: &[String]) -> Result<Vec<MfaUser>>;
    /// Insert a user by hand (source manual or directory); fails on a username taken.
    async fn insert_user(&self, user: &MfaUser) -> Result<()>;
    /// Apply a plan and set the watermark, in ONE transaction. `Create` inserts,
    /// `Update`/`Enable`/`Disable` replace the row with the same directory_id,
    /// `Remove` deletes the row with that directory_id. Manual users are never
    /// touched: a change aimed at one is an error and nothing is committed.
    async fn apply(&self, changes: &[Change], watermark: Option<&Watermark>) -> Result<()>;
    /// Every user (directory and manual) as a full sync first needs it:
    /// identity, departure inputs and the digest of the stored row
    /// (`core::plan::digest`), without decoding the rows, handed to `each`
    /// a page at a time (memory: one page). No order.
    async fn user_digests(
        &self,
        each: &mut (dyn FnMut(mfasync_core::plan::StoredDigest) + Send),
    ) -> Result<()>;
    /// How many directory users (source directory) are stored: what a
    /// percentage threshold is of, and room for a full sync's index.
    async fn directory_user_count(&self) -> Result<usize>;
    /// Write the raw stamps (`core::plan::raw_stamp`) of directory users a
    /// full sync found unchanged while their stamp was missing or stale: per
    /// directory_id, the entry's hash and the digest of the row it maps to.
    /// Only a row that still has that digest gets its stamp (a row changed
    /// since keeps what it has; one already stamped so is not written again).
    /// In directory_id order, one short transaction per chunk of 1,000: a
    /// cache of the full sync, never a change of a user.
    async fn restamp(&self, stamps: &[(String, mfasync_core::plan::RawMark)]) -> Result<()>;
    /// Begin ONE write transaction that a full sync fills a chunk at a time
    /// (`Applying::write`) and commits with its watermark
    /// (`Applying::commit`): the same checks and the same single transaction
    /// as `apply`, without the whole plan in memory at once. Dropped without
    /// `commit`, nothing is written. On SQLite it holds the write lock until
    /// it ends, so other writers of the same database wait (busy timeout).
    async fn begin_apply(&self) -> Result<Box<dyn Applying + '_>>;
    async fn watermark(&self) -> Result<Option<Watermark>>;
}

/// The `UserStore` implementation for `$store` (see `common::impl_store!`, which defines
/// the helpers and imports the methods use).
macro_rules! impl_user_store {
    ($store:ty, $db:ty) => {
        #[async_trait::async_trait]
        impl $crate::UserStore for $store {
            fn read_inline(&self) {
                self.read_inline_now();
            }

            async fn users_each(&self, each: &mut (dyn FnMut(MfaUser) -> bool + Send)) -> Result<()> {
                use futures_util::TryStreamExt;
                let mut rows = sqlx::query(&self.sql.select_users_ordered).fetch(&self.pool);
                while let Some(row) = rows.try_next().await? {
                    if !each(user_from_row(&row)?) {
                        break;
                    }
                }
                Ok(())
            }

            async fn users(&self) -> Result<Vec<MfaUser>> {
                use futures_util::TryStreamExt;
                // Stream the rows: at most one row is held undecoded at a time.
                let mut rows = sqlx::query(&self.sql.select_users).fetch(&self.pool);
                let mut keyed: Vec<(String, MfaUser)> = Vec::new();
                while let Some(row) = rows.try_next().await? {
                    let u = user_from_row(&row)?;
                    keyed.push((u.username.to_lowercase(), u));
                }
                keyed.sort_by(|(la, a), (lb, b)| la.cmp(lb).then_with(|| a.username.cmp(&b.username)));
                Ok(keyed.into_iter().map(|(_, u)| u).collect())
            }

            async fn users_by(&self, key: $crate::UserKey, values: &[String]) -> Result<Vec<MfaUser>> {
                if let Some(found) = self.users_by_inline(key, values) {
                    return found;
                }
                let mut out = Vec::new();
                for chunk in values.chunks(500) {
                    let sql = self.sql.select_users_by(key, chunk.len());
                    let mut q = sqlx::query(&sql);
                    for v in chunk {
                        q = q.bind(v.as_str());
                    }
                    for row in q.fetch_all(&self.pool).await? {
                        out.push(user_from_row(&row)?);
                    }
                }
                Ok(out)
            }

            async fn insert_user(&self, user: &MfaUser) -> Result<()> {
                let at = now()?;
                let lower = user.username.to_lowercase();
                let sql = self.sql.insert_users(1);
                let mut tx = self.begin().await?;
                bind_user!(sqlx::query(&sql), user, lower.as_str(), at.as_str(), None)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| map_unique(e, &format!("insert {}", user.username)))?;
                let row = AuditRow {
                    action: "insert",
                    actor: ACTOR_ADMIN,
                    username: Some(&user.username),
                    directory_id: user.directory_id.as_deref(),
                    before: None,
                    after: Some($crate::common::user_json(user)?),
                    detail: None,
                };
                self.write_audit(&mut tx, &[row], &at).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn apply(&self, changes: &[Change], watermark: Option<&Watermark>) -> Result<()> {
                validate(changes)?; // before the transaction begins
                let mut w = self.begin_apply().await?;
                w.write(changes).await?;
                w.commit(watermark).await
            }

            async fn user_digests(
                &self,
                each: &mut (dyn FnMut(mfasync_core::plan::StoredDigest) + Send),
            ) -> Result<()> {
                let mut after: i64 = 0;
                loop {
                    let row = sqlx::query(&self.sql.select_digests)
                        .bind(after)
                        .bind($crate::common::DIGEST_PAGE)
                        .fetch_one(&self.pool)
                        .await?;
                    // borrowed from the row: the page's text is not copied again
                    let text: &str = sqlx::Row::try_get(&row, 0)?;
                    let page = $crate::common::parse_digests(text)?;
                    let n = page.len();
                    for (id, d) in page {
                        after = after.max(id);
                        each(d);
                    }
                    if n < $crate::common::DIGEST_PAGE as usize {
                        return Ok(());
                    }
                }
            }

            async fn directory_user_count(&self) -> Result<usize> {
                let n: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM users WHERE source = 'directory'",
                )
                .fetch_one(&self.pool)
                .await?;
                Ok(usize::try_from(n).unwrap_or(0))
            }

            async fn restamp(&self, stamps: &[(String, mfasync_core::plan::RawMark)]) -> Result<()> {
                // In directory_id order (rows locked in one order by any
                // writer doing the same), one short transaction per chunk:
                // other writers wait for a chunk, not for all of them.
                let mut sorted: Vec<&(String, mfasync_core::plan::RawMark)> = stamps.iter().collect();
                sorted.sort_by(|a, b| a.0.cmp(&b.0));
                for chunk in sorted.chunks($crate::common::RESTAMP_CHUNK) {
                    let sql = self.sql.restamp_users(chunk.len());
                    let mut q = sqlx::query(&sql);
                    for (id, m) in chunk.iter().copied() {
                        q = q
                            .bind(id.as_str())
                            .bind(mfasync_core::plan::digest_text(m.digest))
                            .bind(mfasync_core::plan::raw_stamp(m.raw, m.digest));
                    }
                    let mut tx = self.begin().await?;
                    q.execute(&mut *tx).await?;
                    tx.commit().await?;
                }
                Ok(())
            }

            async fn begin_apply(&self) -> Result<Box<dyn $crate::Applying + '_>> {
                Ok(Box::new(StoreApplying {
                    store: self,
                    tx: self.begin().await?,
                    at: now()?,
                    failed: false,
                    writes: 0,
                    restored: 0,
                }))
            }

            async fn watermark(&self) -> Result<Option<Watermark>> {
                // both tables in one read transaction (committed together)
                let mut tx = self.pool.begin().await?;
                let row = sqlx::query(
                    "SELECT kind, server, value, items_fingerprint, mapping_fingerprint FROM watermark WHERE id = 1",
                )
                .fetch_optional(&mut *tx)
                .await?;
                let Some(r) = row else { return Ok(None) };
                let domains = sqlx::query(
                    "SELECT domain, kind, server, value FROM domain_watermarks ORDER BY domain",
                )
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .map(|d| {
                    Ok(DomainWatermark {
                        domain: d.try_get("domain")?,
                        kind: MarkKind::from_stored(d.try_get("kind")?),
                        server: d.try_get("server")?,
                        value: d.try_get("value")?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
                Ok(Some(Watermark {
                    kind: MarkKind::from_stored(r.try_get("kind")?),
                    server: r.try_get("server")?,
                    value: r.try_get("value")?,
                    items_fingerprint: r.try_get("items_fingerprint")?,
                    mapping_fingerprint: r.try_get("mapping_fingerprint")?,
                    domains,
                }))
            }
        }
    };
}
pub(crate) use impl_user_store;
