//! The PostgreSQL store, for installations that keep the MFA user database on a
//! shared server. Same schema and behaviour as SQLite (migrations/postgres),
//! the audit's before/after JSON kept as TEXT (measured faster than JSONB for
//! large plans; cast with `::jsonb` to query it). The `Store` implementation is
//! shared (see `common.rs`).

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::common::Sql;

/// How long to wait for a connection, and for a lock held by another session.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// The MFA user database in PostgreSQL.
pub struct PgStore {
    pool: PgPool,
    sql: Sql,
}

fn migrator() -> Migrator {
    crate::migrations!("postgres")
}

impl PgStore {
    /// Connect to `url` (postgres://...) and migrate the database.
    pub async fn open(url: &str) -> crate::Result<Self> {
        let timeout_ms = BUSY_TIMEOUT.as_millis().to_string();
        let options =
            PgConnectOptions::from_str(url)?.options([("lock_timeout", timeout_ms.as_str())]);
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(BUSY_TIMEOUT)
            .connect_with(options)
            .await?;
        migrator().run(&pool).await?;
        Ok(PgStore {
            pool,
            sql: Sql::new(true),
        })
    }

    async fn begin(&self) -> crate::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        Ok(self.pool.begin().await?)
    }
}

crate::common::impl_store!(PgStore, sqlx::Postgres);
