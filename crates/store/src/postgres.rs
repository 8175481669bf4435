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
/// How long a session may sit idle inside a transaction (its statements come
/// back to back: only a frozen or cut-off client waits this long).
const IDLE_IN_TRANSACTION: Duration = Duration::from_secs(20);

/// The MFA user database in PostgreSQL.
pub struct PgStore {
    pool: PgPool,
    sql: Sql,
    /// Checked by every sync write (`Store::set_fence`, issue 8).
    fence: crate::common::FenceSlot,
    /// Asked by every plan write for its emails (`Store::set_composer`).
    composer: crate::outbox::ComposerSlot,
}

fn migrator() -> Migrator {
    crate::migrations!("postgres")
}

impl PgStore {
    /// Connect to `url` (postgres://...) and migrate the database, giving up
    /// after [`crate::DEFAULT_CONNECT_TIMEOUT`] when the server does not answer.
    pub async fn open(url: &str) -> crate::Result<Self> {
        PgStore::open_with(url, crate::DEFAULT_CONNECT_TIMEOUT).await
    }

    /// Like [`PgStore::open`]: a server that has not accepted and answered
    /// a connection within `connect_timeout` (nothing listening and the
    /// packets dropped, or a listener that never speaks) is `Unreachable`.
    pub async fn open_with(url: &str, connect_timeout: Duration) -> crate::Result<Self> {
        let timeout_ms = BUSY_TIMEOUT.as_millis().to_string();
        // A client frozen or cut off inside a transaction (SIGSTOP, a network
        // partition) must not keep its locks, the sync lease row's included:
        // its session ends after IDLE_IN_TRANSACTION and the transaction rolls back.
        let idle_ms = IDLE_IN_TRANSACTION.as_millis().to_string();
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| crate::StoreError::CannotOpen(format!("bad PostgreSQL URL: {e}")))?
            .options([
                ("lock_timeout", timeout_ms.as_str()),
                ("idle_in_transaction_session_timeout", idle_ms.as_str()),
            ]);
        let options = crate::common::slow_statements_as_info(options);
        let server = format!("{}:{}", options.get_host(), options.get_port());
        let unreachable = |why: String| {
            crate::StoreError::Unreachable(format!(
                "cannot connect to PostgreSQL at {server}: {why}"
            ))
        };
        // One connection first, bounded: its error is the server's own
        // (the pool would retry it until its acquire timeout).
        let first = tokio::time::timeout(connect_timeout, {
            use sqlx::ConnectOptions;
            options.connect()
        })
        .await
        .map_err(|_| {
            unreachable(format!(
                "no answer within {} s (--connect-timeout)",
                connect_timeout.as_secs_f64()
            ))
        })?
        .map_err(|e| unreachable(e.to_string()))?;
        let _ = sqlx::Connection::close(first).await;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(BUSY_TIMEOUT)
            .connect_with(options)
            .await?;
        migrator().run(&pool).await?;
        let store = PgStore {
            pool,
            fence: crate::common::FenceSlot::default(),
            composer: crate::outbox::ComposerSlot::default(),
            sql: Sql::new(true),
        };
        store.fill_digests().await?;
        Ok(store)
    }

    async fn begin(&self) -> crate::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        Ok(self.pool.begin().await?)
    }
}

crate::common::impl_store!(PgStore, sqlx::Postgres);
crate::roles::impl_roles!(PgStore, sqlx::Postgres);
crate::outbox::impl_outbox!(PgStore, sqlx::Postgres);

impl PgStore {
    /// Before the pool closes (`Store::close`): nothing to do.
    async fn wind_down(&self) {}

    /// After each write of a sync's transaction: nothing to do.
    fn after_write(&self, _writes: u64) {}

    /// `Store::read_inline`: nothing to do (queries cross the network anyway).
    fn read_inline_now(&self) {}

    /// Lookups always go through the pool.
    fn users_by_inline(
        &self,
        _key: crate::UserKey,
        _values: &[String],
    ) -> Option<Result<Vec<MfaUser>>> {
        None
    }

    /// A sync's creates: multi-row INSERTs (`impl_store!`).
    async fn create_users(&self, tx: &mut Tx, creates: &[Change], at: &str) -> Result<()> {
        self.create_users_multirow(tx, creates, at).await
    }

    /// Audit rows: multi-row INSERTs (`impl_store!`).
    async fn write_audit(&self, tx: &mut Tx, rows: &[AuditRow<'_>], at: &str) -> Result<()> {
        self.write_audit_multirow(tx, rows, at).await
    }
}
