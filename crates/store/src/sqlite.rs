//! The embedded default store: one SQLite file in WAL mode (foreign keys on, a
//! busy timeout, write transactions begun IMMEDIATE so concurrent writers wait
//! instead of failing). The `Store` implementation itself is shared with
//! PostgreSQL (see `common.rs`).

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::common::Sql;

/// How long a statement waits for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// The MFA user database in a SQLite file.
pub struct SqliteStore {
    pool: SqlitePool,
    sql: Sql,
    /// Checked by every sync write (`Store::set_fence`, issue 8).
    fence: crate::common::FenceSlot,
}

fn migrator() -> Migrator {
    crate::migrations!("sqlite")
}

impl SqliteStore {
    /// Open (creating it if missing) and migrate the database file at `path`.
    /// `:memory:` gives a private in-memory database (tests).
    pub async fn open(path: &str) -> crate::Result<Self> {
        let memory = path == ":memory:";
        let options = if memory {
            SqliteConnectOptions::from_str("sqlite::memory:")?
        } else {
            SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
        }
        .foreign_keys(true)
        .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            // An in-memory database lives only as long as its one connection.
            .max_connections(if memory { 1 } else { 4 })
            .min_connections(if memory { 1 } else { 0 })
            .idle_timeout(if memory {
                None
            } else {
                Some(Duration::from_secs(600))
            })
            .max_lifetime(if memory {
                None
            } else {
                Some(Duration::from_secs(3600))
            })
            .acquire_timeout(BUSY_TIMEOUT)
            .connect_with(options)
            .await?;
        migrator().run(&pool).await?;
        let store = SqliteStore {
            pool,
            fence: crate::common::FenceSlot::default(),
            sql: Sql::new(false),
        };
        store.fill_digests().await?;
        Ok(store)
    }

    async fn begin(&self) -> crate::Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }
}

crate::common::impl_store!(SqliteStore, sqlx::Sqlite);
