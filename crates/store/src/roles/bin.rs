//! The recycle bin (migration 17): a sync's removal moves the user's complete
//! row, with its sealed OATH secret, into `recycle_bin` in the transaction of
//! the removal; a later create of the same directory_id takes it back out
//! (`Store::apply`); `users restore`/`users purge` and the portal act on one
//! entry; `sync.retention` purges old ones.

use async_trait::async_trait;

use mfasync_core::MfaUser;

use crate::Result;

/// A user in the recycle bin. The sealed OATH secret stays in the store:
/// only whether there is one is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinnedUser {
    /// The row as it was when it was removed.
    pub user: MfaUser,
    /// When it was removed (RFC 3339 UTC).
    pub deleted_at: String,
    /// Why: the removal's reason ("deleted from the directory", "no longer in OU=…").
    pub reason: String,
    /// Whether an OATH secret is kept with it.
    pub otp: bool,
}

impl BinnedUser {
    /// The entry as `users deleted` and the API list it.
    pub fn entry(&self) -> mfasync_core::report::BinEntry {
        mfasync_core::report::BinEntry {
            deleted_at: self.deleted_at.clone(),
            directory_id: self.user.directory_id.clone(),
            reason: self.reason.clone(),
            username: self.user.username.clone(),
        }
    }
}

/// The recycle bin of removed users.
#[async_trait]
pub trait BinStore: Send + Sync {
    /// Every entry, most recently removed first (the newest row first).
    async fn binned(&self) -> Result<Vec<BinnedUser>>;
    /// Put the entry `name` names (its username, case-insensitive, or its
    /// directory_id) back among the live users with its OATH secret, audited
    /// ("restore") by `actor`, in one transaction. None when no entry has that
    /// name; a `Conflict` when several have it or when a live user has its
    /// username or directory_id.
    async fn bin_restore(&self, name: &str, actor: &str) -> Result<Option<BinnedUser>>;
    /// Delete the entry `name` names for good, audited ("purge") by `actor`.
    /// None when no entry has that name; a `Conflict` when several have it.
    async fn bin_purge(&self, name: &str, actor: &str) -> Result<Option<BinnedUser>>;
    /// Delete the entries removed before `before` (RFC 3339 UTC) and, when
    /// there were any, record that (action "bin-purged", actor "retention",
    /// `why` in the detail) in the same transaction. How many.
    async fn bin_purge_before(&self, before: &str, why: &str) -> Result<u64>;
    /// Every binned OATH secret as (bin entry id, sealed): for `db rekey`.
    async fn bin_otp_all(&self) -> Result<Vec<(i64, String)>>;
    /// Replace binned sealed secrets by bin entry id, in one transaction.
    async fn bin_otp_reseal(&self, sealed: &[(i64, String)]) -> Result<()>;
}

/// The columns of a user row, as `users` and `recycle_bin` both name them.
pub(crate) fn user_columns() -> String {
    format!(
        "username, username_lower, {}, enabled, source, updated_at",
        crate::common::text_columns().join(", ")
    )
}

/// The bin entries with one of `n` directory_ids (placeholders after `first`
/// earlier ones when numbered).
pub(crate) fn select_binned(where_clause: &str) -> String {
    format!(
        "SELECT id, {}, otp_sealed IS NOT NULL AS has_otp, deleted_at, reason \
         FROM recycle_bin WHERE {where_clause}",
        user_columns()
    )
}

/// Move the directory users named by `(directory_id, reason, deleted_at)`
/// triples (`rows` of them, placeholders `values`) into the bin with their
/// OATH secrets.
pub(crate) fn move_into_bin(values: &str) -> String {
    let cols = user_columns();
    let from: Vec<String> = cols.split(", ").map(|c| format!("u.{c}")).collect();
    format!(
        "INSERT INTO recycle_bin ({cols}, otp_sealed, otp_last_step, otp_enrolled_at, deleted_at, reason) \
         SELECT {}, o.sealed, o.last_step, o.enrolled_at, v.column3, v.column2 \
         FROM users u JOIN (VALUES {values}) AS v ON u.directory_id = v.column1 \
         LEFT JOIN otp_secrets o ON o.user_id = u.id WHERE u.source = 'directory'",
        from.join(", ")
    )
}

/// The OATH secrets of the bin entries `where_clause` selects (on `b`) given
/// back to the live users with their directory_id.
pub(crate) fn restore_secrets(where_clause: &str) -> String {
    format!(
        "INSERT INTO otp_secrets (user_id, sealed, last_step, enrolled_at) \
         SELECT u.id, b.otp_sealed, b.otp_last_step, b.otp_enrolled_at \
         FROM recycle_bin b JOIN users u ON u.directory_id = b.directory_id \
         WHERE b.otp_sealed IS NOT NULL AND {where_clause}"
    )
}

/// The audit detail of a restore.
pub(crate) fn restore_detail(b: &BinnedUser) -> String {
    format!(
        "restored from the recycle bin (removed {}: {})",
        b.deleted_at, b.reason
    )
}

/// The `BinStore` implementation for `$store` (see `common::impl_store!`, which defines
/// the helpers and imports the methods use).
macro_rules! impl_bin_store {
    ($store:ty, $db:ty) => {
        fn binned_from_row(row: &<$db as sqlx::Database>::Row) -> Result<(i64, $crate::BinnedUser)> {
            Ok((
                row.try_get("id")?,
                $crate::BinnedUser {
                    user: user_from_row(row)?,
                    deleted_at: row.try_get("deleted_at")?,
                    reason: row.try_get("reason")?,
                    otp: row.try_get("has_otp")?,
                },
            ))
        }

        impl $store {
            /// Move a run of removes into the bin (before their rows are
            /// deleted): stale entries of the same directory_ids are replaced.
            async fn bin_move(&self, tx: &mut Tx, run: &[Change], keys: &[&str], at: &str) -> Result<()> {
                let sql = format!("DELETE FROM recycle_bin WHERE directory_id IN {}", self.sql.key_list(keys.len()));
                let mut q = sqlx::query(&sql);
                for k in keys {
                    q = q.bind(*k);
                }
                q.execute(&mut **tx).await?;
                let sql = $crate::roles::bin::move_into_bin(&self.sql.values(run.len(), 3));
                let mut q = sqlx::query(&sql);
                for (c, k) in run.iter().zip(keys) {
                    q = q.bind(*k).bind(c.reason.as_deref().unwrap_or("removed by a sync")).bind(at);
                }
                q.execute(&mut **tx).await?;
                Ok(())
            }

            /// The bin entries of a run of creates, taken out of the bin
            /// after the creates are written (`bin_take`): directory_id ->
            /// entry. Usually none.
            async fn bin_find(&self, tx: &mut Tx, creates: &[Change]) -> Result<std::collections::HashMap<String, $crate::BinnedUser>> {
                let mut found = std::collections::HashMap::new();
                let ids: Vec<&str> = creates.iter().filter_map(|c| c.user.directory_id.as_deref()).collect();
                for chunk in ids.chunks(500) {
                    let sql = $crate::roles::bin::select_binned(&format!("directory_id IN {}", self.sql.key_list(chunk.len())));
                    let mut q = sqlx::query(&sql);
                    for id in chunk {
                        q = q.bind(*id);
                    }
                    for row in q.fetch_all(&mut **tx).await? {
                        let (_, b) = binned_from_row(&row)?;
                        if let Some(id) = b.user.directory_id.clone() {
                            found.insert(id, b);
                        }
                    }
                }
                Ok(found)
            }

            /// The created users of `ids` get their binned OATH secrets back and leave the bin.
            async fn bin_take(&self, tx: &mut Tx, ids: &[&str]) -> Result<()> {
                for chunk in ids.chunks(500) {
                    let list = self.sql.key_list(chunk.len());
                    let sql = $crate::roles::bin::restore_secrets(&format!("b.directory_id IN {list}"));
                    let mut q = sqlx::query(&sql);
                    for id in chunk {
                        q = q.bind(*id);
                    }
                    q.execute(&mut **tx).await?;
                    let sql = format!("DELETE FROM recycle_bin WHERE directory_id IN {list}");
                    let mut q = sqlx::query(&sql);
                    for id in chunk {
                        q = q.bind(*id);
                    }
                    q.execute(&mut **tx).await?;
                }
                Ok(())
            }

            /// The one entry `name` names (username or directory_id), locked in `tx`.
            async fn bin_entry(&self, tx: &mut Tx, name: &str) -> Result<Option<(i64, $crate::BinnedUser)>> {
                let sql = $crate::roles::bin::select_binned("username_lower = $1 OR directory_id = $2");
                let rows = sqlx::query(&sql)
                    .bind(name.to_lowercase())
                    .bind(name)
                    .fetch_all(&mut **tx)
                    .await?;
                let mut entries = rows.iter().map(binned_from_row).collect::<Result<Vec<_>>>()?;
                if entries.len() > 1 {
                    let ids: Vec<String> = entries
                        .iter()
                        .map(|(_, b)| b.user.directory_id.clone().unwrap_or_default())
                        .collect();
                    return Err(StoreError::Conflict(format!(
                        "{} users in the recycle bin are named {name}: name one by its directory id ({})",
                        entries.len(),
                        ids.join(", ")
                    )));
                }
                Ok(entries.pop())
            }
        }

        #[async_trait::async_trait]
        impl $crate::BinStore for $store {
            async fn binned(&self) -> Result<Vec<$crate::BinnedUser>> {
                let sql = $crate::roles::bin::select_binned("TRUE ORDER BY id DESC");
                let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
                rows.iter().map(|r| Ok(binned_from_row(r)?.1)).collect()
            }

            async fn bin_restore(&self, name: &str, actor: &str) -> Result<Option<$crate::BinnedUser>> {
                let at = now()?;
                let mut tx = self.begin().await?;
                let Some((id, b)) = self.bin_entry(&mut tx, name).await? else {
                    return Ok(None);
                };
                let lower = b.user.username.to_lowercase();
                let taken: Option<String> = sqlx::query_scalar(
                    "SELECT username FROM users WHERE username_lower = $1 OR directory_id = $2",
                )
                .bind(lower.as_str())
                .bind(b.user.directory_id.as_deref())
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(live) = taken {
                    return Err(StoreError::Conflict(format!(
                        "cannot restore {}: the live user {live} has its username or directory id; rename or remove {live} first",
                        b.user.username
                    )));
                }
                let sql = self.sql.insert_users(1);
                bind_user!(sqlx::query(&sql), &b.user, lower.as_str(), at.as_str(), None)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| map_unique(e, &format!("restore {}", b.user.username)))?;
                // the secret goes to the row just inserted (by username: the directory_id may be empty)
                sqlx::query(
                    "INSERT INTO otp_secrets (user_id, sealed, last_step, enrolled_at) \
                     SELECT u.id, b.otp_sealed, b.otp_last_step, b.otp_enrolled_at \
                     FROM recycle_bin b JOIN users u ON u.username_lower = b.username_lower \
                     WHERE b.otp_sealed IS NOT NULL AND b.id = $1",
                )
                .bind(id)
                .execute(&mut *tx)
                .await?;
                sqlx::query("DELETE FROM recycle_bin WHERE id = $1").bind(id).execute(&mut *tx).await?;
                let detail = $crate::roles::bin::restore_detail(&b);
                let row = AuditRow {
                    action: "restore",
                    actor,
                    username: Some(&b.user.username),
                    directory_id: b.user.directory_id.as_deref(),
                    before: None,
                    after: Some($crate::common::user_json(&b.user)?),
                    detail: Some(&detail),
                };
                self.write_audit(&mut tx, &[row], &at).await?;
                tx.commit().await?;
                Ok(Some(b))
            }

            async fn bin_purge(&self, name: &str, actor: &str) -> Result<Option<$crate::BinnedUser>> {
                let at = now()?;
                let mut tx = self.begin().await?;
                let Some((id, b)) = self.bin_entry(&mut tx, name).await? else {
                    return Ok(None);
                };
                sqlx::query("DELETE FROM recycle_bin WHERE id = $1").bind(id).execute(&mut *tx).await?;
                let detail = format!("purged from the recycle bin (removed {}: {})", b.deleted_at, b.reason);
                let row = AuditRow {
                    action: "purge",
                    actor,
                    username: Some(&b.user.username),
                    directory_id: b.user.directory_id.as_deref(),
                    before: Some($crate::common::user_json(&b.user)?),
                    after: None,
                    detail: Some(&detail),
                };
                self.write_audit(&mut tx, &[row], &at).await?;
                tx.commit().await?;
                Ok(Some(b))
            }

            async fn bin_purge_before(&self, before: &str, why: &str) -> Result<u64> {
                let at = now()?;
                let mut tx = self.begin().await?;
                let n = sqlx::query("DELETE FROM recycle_bin WHERE deleted_at < $1")
                    .bind(before)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if n > 0 {
                    let detail = format!("{n} users removed before {before} purged from the recycle bin ({why})");
                    let row = AuditRow::event("bin-purged", "retention", &detail);
                    self.write_audit(&mut tx, &[row], &at).await?;
                }
                tx.commit().await?;
                Ok(n)
            }

            async fn bin_otp_all(&self) -> Result<Vec<(i64, String)>> {
                Ok(sqlx::query_as(
                    "SELECT id, otp_sealed FROM recycle_bin WHERE otp_sealed IS NOT NULL ORDER BY id",
                )
                .fetch_all(&self.pool)
                .await?)
            }

            async fn bin_otp_reseal(&self, sealed: &[(i64, String)]) -> Result<()> {
                let mut tx = self.begin().await?;
                for (id, s) in sealed {
                    sqlx::query("UPDATE recycle_bin SET otp_sealed = $1 WHERE id = $2")
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
pub(crate) use impl_bin_store;
