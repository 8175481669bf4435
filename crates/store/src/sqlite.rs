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
use crate::sqlite_access::Access;

const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// The MFA user database in a SQLite file.
pub struct SqliteStore {
    pool: SqlitePool,
    sql: Sql,
    /// Checked by every sync write (`Store::set_fence`, issue 8).
    fence: crate::common::FenceSlot,
    /// Asked by every plan write for its emails (`Store::set_composer`).
    composer: crate::outbox::ComposerSlot,
    /// The WAL file (None in memory), for [`SqliteStore::after_write`].
    wal: Option<std::path::PathBuf>,
    /// The database file (None in memory), for [`SqliteStore::read_inline_now`].
    path: Option<String>,
    /// The connection small lookups read on after `Store::read_inline`.
    reader: std::sync::OnceLock<std::sync::Mutex<rusqlite::Connection>>,
}

fn migrator() -> Migrator {
    crate::migrations!("sqlite")
}

impl SqliteStore {
    /// Open (creating it if missing) and migrate the database file at `path`.
    /// `:memory:` gives a private in-memory database (tests).
    pub async fn open(path: &str) -> crate::Result<Self> {
        SqliteStore::open_with(path, false).await
    }

    /// Like [`SqliteStore::open`], for a short command that reads a few rows
    /// (`mfasync auth`): one pooled connection, and when the schema is already
    /// current (every migration of this build applied successfully, no other)
    /// neither the migration run nor the digest fill; otherwise as `open`.
    /// Its connection leaves the WAL files in place (`persist_wal`) when they
    /// belong to the database's owner.
    pub async fn open_current(path: &str) -> crate::Result<Self> {
        SqliteStore::open_with(path, true).await
    }

    async fn open_with(path: &str, short: bool) -> crate::Result<Self> {
        let memory = path == ":memory:";
        if !memory {
            private_database_file(std::path::Path::new(path));
        }
        let access = match memory {
            true => Access::ReadWrite,
            false => crate::sqlite_access::check(path).map_err(crate::StoreError::CannotOpen)?,
        };
        let read_only = access != Access::ReadWrite;
        let options = if memory {
            SqliteConnectOptions::from_str("sqlite::memory:")?
        } else if let Access::ReadOnly { immutable } = access {
            // the commands that only read work; a write fails as read-only
            SqliteConnectOptions::new()
                .filename(path)
                .read_only(true)
                .immutable(immutable)
        } else {
            SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                // 16 KiB pages for a database created now (an existing one keeps its
                // own: the size cannot change in WAL mode): a quarter of a first
                // sync's page reads and writes (BENCHMARKS.md, "History").
                .page_size(16384)
        }
        .foreign_keys(true)
        .busy_timeout(BUSY_TIMEOUT)
        // Statement journals in memory, not in a file under /var/tmp: each
        // multi-row statement of a write transaction needs one (it may fail
        // on a unique index and must undo only itself), and a large write
        // wrote much to them (BENCHMARKS.md, "History"). One statement's
        // journal is its few pages; no query here sorts large results
        // without an index.
        .pragma("temp_store", "memory");
        // (a short command's kept WAL file is truncated to nothing at close)
        let options = match short && !memory && !read_only {
            true => options.pragma("journal_size_limit", "0"),
            false => options,
        };
        let options = crate::common::slow_statements_as_info(options);

        let mut pool_options = SqlitePoolOptions::new();
        if short && !memory && !read_only {
            let db_path = std::path::PathBuf::from(path);
            pool_options = pool_options.after_connect(move |conn, _| {
                let keep = same_owner_as_database(&db_path);
                Box::pin(async move {
                    if keep {
                        persist_wal(conn).await;
                    }
                    Ok(())
                })
            });
        }
        let pool = pool_options
            // An in-memory database lives only as long as its one connection.
            // (A short command: one connection, not one more per query while
            // the previous one is still being handed back to the pool.)
            .max_connections(if memory || short { 1 } else { 4 })
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
            // A connection to a local file does not go stale like a network
            // one: no ping round trip to the worker thread before each use
            // (half the cost of a password check's MFA user lookup).
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(|e| crate::StoreError::CannotOpen(format!("cannot open {path}: {e}")))?;
        let current = (short || read_only) && schema_current(&pool).await;
        if read_only && !current {
            return Err(crate::StoreError::CannotOpen(format!(
                "{path} is read-only for this user and its schema is older than this mfasync's: \
                 run an mfasync command that writes as the database's owner once to upgrade it"
            )));
        }
        if !current {
            migrator().run(&pool).await?;
        }
        let store = SqliteStore {
            pool,
            fence: crate::common::FenceSlot::default(),
            composer: crate::outbox::ComposerSlot::default(),
            sql: Sql::new(false),
            wal: (!memory).then(|| std::path::PathBuf::from(format!("{path}-wal"))),
            path: (!memory).then(|| path.to_string()),
            reader: std::sync::OnceLock::new(),
        };
        if !current {
            store.fill_digests().await?;
        }
        Ok(store)
    }

    async fn begin(&self) -> crate::Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }
}

/// The database holds users' personal data, administrators' password hashes
/// and the configuration's secrets: a new database file is created here with
/// mode 0600 whatever the umask (SQLite would create it 0644 less the umask),
/// and SQLite gives its `-wal` and `-shm` files the database file's mode. An
/// existing database, `-wal` or `-shm` that group or others may read is
/// left as it is (an administrator may have chosen so) with a warning naming
/// the file and its mode.
fn private_database_file(db: &std::path::Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(db);
        if let Ok(file) = created {
            // (0600 also under an unusual umask such as 0277)
            let _ = file.set_permissions(std::fs::Permissions::from_mode(0o600));
            return;
        }
        for suffix in ["", "-wal", "-shm"] {
            let mut name = db.as_os_str().to_owned();
            name.push(suffix);
            let file = std::path::Path::new(&name);
            let Ok(meta) = std::fs::metadata(file) else {
                continue;
            };
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o044 != 0 {
                tracing::warn!(
                    file = %file.display(),
                    mode = format!("{mode:04o}"),
                    "the database file {} has mode {mode:04o}: other users of this host may read \
                     it (users' data, administrators' password hashes, configuration secrets); \
                     chmod 600 it and its -wal/-shm files",
                    file.display()
                );
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = db;
    }
}

// SQLite's C API, from the SQLite library sqlx links (bundled).
extern "C" {
    fn sqlite3_file_control(
        db: *mut std::ffi::c_void,
        db_name: *const std::ffi::c_char,
        op: std::ffi::c_int,
        arg: *mut std::ffi::c_void,
    ) -> std::ffi::c_int;
}

/// `SQLITE_FCNTL_PERSIST_WAL` (sqlite3.h).
const SQLITE_FCNTL_PERSIST_WAL: std::ffi::c_int = 10;

/// A short command's connection (`open_current`) leaves the `-wal` and
/// `-shm` files in place when it is the last one to close (the WAL is still
/// checkpointed into the database first). Otherwise every `mfasync auth`
/// process, when no server holds the database open, would create both files
/// and delete them again, a noticeable part of a password check
/// (BENCHMARKS.md, "History"). The files are those any open
/// connection keeps (the WAL checkpointed into the database and, with the
/// short open's `journal_size_limit` 0, truncated to nothing); the next
/// connection without this setting to close last removes them as before. A
/// failure only costs that time. Only when the `-wal` and `-shm` files have
/// the database file's owner and group ([`same_owner_as_database`]).
async fn persist_wal(conn: &mut sqlx::SqliteConnection) {
    let Ok(mut handle) = conn.lock_handle().await else {
        return;
    };
    let db = handle.as_raw_handle().as_ptr().cast::<std::ffi::c_void>();
    let mut on: std::ffi::c_int = 1;
    // SAFETY: `db` is the open connection, held locked for this call;
    // "main" is NUL-terminated; PERSIST_WAL reads and writes one int.
    let rc = unsafe {
        sqlite3_file_control(
            db,
            c"main".as_ptr(),
            SQLITE_FCNTL_PERSIST_WAL,
            std::ptr::addr_of_mut!(on).cast::<std::ffi::c_void>(),
        )
    };
    if rc != 0 {
        tracing::debug!(rc, "SQLITE_FCNTL_PERSIST_WAL not applied");
    }
}

/// Whether the `-wal` and `-shm` files beside the database at `db` (there
/// once a connection is open) have its owner and group. SQLite creates them
/// with the database's permission bits, as the process's user (as the
/// database's owner when run by root): files of another user (say a RADIUS
/// server calling `mfasync auth` as its own user) are not left behind for
/// the service to stumble on. Not on other systems.
fn same_owner_as_database(db: &std::path::Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let owner = |p: &std::path::Path| std::fs::metadata(p).ok().map(|m| (m.uid(), m.gid()));
        let beside = |suffix: &str| {
            let mut name = db.as_os_str().to_owned();
            name.push(suffix);
            owner(std::path::Path::new(&name))
        };
        let want = owner(db);
        want.is_some() && beside("-wal") == want && beside("-shm") == want
    }
    #[cfg(not(unix))]
    {
        let _ = db;
        false
    }
}

/// Whether the database holds exactly the migrations of this build, all
/// applied successfully (one cheap read; any error: not current).
async fn schema_current(pool: &SqlitePool) -> bool {
    let m = migrator();
    let latest = m.iter().map(|m| m.version).max();
    let applied: std::result::Result<(i64, Option<i64>, Option<i64>), sqlx::Error> =
        sqlx::query_as("SELECT COUNT(*), MAX(version), MIN(success) FROM _sqlx_migrations")
            .fetch_one(pool)
            .await;
    match applied {
        Ok((count, max, Some(1))) => count == m.iter().count() as i64 && max == latest,
        _ => false,
    }
}

crate::common::impl_store!(SqliteStore, sqlx::Sqlite);
crate::roles::impl_roles!(SqliteStore, sqlx::Sqlite);
crate::outbox::impl_outbox!(SqliteStore, sqlx::Sqlite);

/// What SQLite does its own way (see common.rs). A sync's bulk writes: one
/// prepared single-row INSERT per row, stepped by this thread on the
/// transaction's own connection (rusqlite over the handle sqlx lends while
/// it is locked, [`direct`]). Through sqlx, each
/// 500-row INSERT was bound into an argument list here, handed to the
/// connection's worker thread, bound again there and run with a statement
/// journal (a multi-row statement that may fail half-way needs one) inside
/// a savepoint; a single-row INSERT that fails leaves nothing behind.
impl SqliteStore {
    /// Before the pool closes (`Store::close`): checkpoint the WAL into the
    /// database and truncate it to nothing, so that no large WAL is left
    /// for the next process whatever order the connections close in (the
    /// last one to close would remove it, but a process could end first).
    /// It waits for at most a moment for another process's readers; when
    /// they do not let it, the WAL stays (that process's last connection
    /// cleans up).
    async fn wind_down(&self) {
        let Ok(mut conn) = self.pool.acquire().await else {
            return;
        };
        let done = async {
            sqlx::query("PRAGMA busy_timeout = 200")
                .execute(&mut *conn)
                .await?;
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&mut *conn)
                .await
        }
        .await;
        if let Err(e) = done {
            tracing::debug!("WAL not truncated at close: {e}");
        }
    }

    /// After each write of a sync's transaction (`Applying::write`; `writes`
    /// counts them): every 8th (~8,000 creates, ~10 MB of WAL), ask the
    /// kernel to start writing the WAL to disk (`sync_file_range`, which
    /// does not wait). The commit's checkpoint begins with an fsync of the
    /// whole WAL; without this, a first sync of 100,000 users waited
    /// ~0.09 s there for 129 MB, after the read, with nothing else to do.
    /// Only a hint: what is durable when is decided by SQLite's own syncs.
    fn after_write(&self, writes: u64) {
        #[cfg(target_os = "linux")]
        if writes.is_multiple_of(8) {
            if let Some(f) = self.wal.as_ref().and_then(|p| std::fs::File::open(p).ok()) {
                use std::os::fd::AsRawFd;
                // SAFETY: a valid open descriptor; the call only starts
                // writeback of its dirty pages.
                unsafe {
                    libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
                }
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = writes;
    }

    /// `Store::read_inline`: open the connection small lookups read on
    /// (read-only queries: `query_only`; the pool's busy timeout). A
    /// password check's MFA user lookup took ~80 µs through sqlx, most of it
    /// handing the query to the connection's worker thread and the rows back
    /// (`perf`: futex wake-ups and task switches); inline it is one indexed
    /// read. Not for an in-memory database (another connection would see
    /// another database).
    fn read_inline_now(&self) {
        let Some(path) = &self.path else { return };
        if self.reader.get().is_some() {
            return;
        }
        let opened = rusqlite::Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .and_then(|conn| {
            conn.busy_timeout(BUSY_TIMEOUT)?;
            conn.pragma_update(None, "query_only", true)?;
            Ok(conn)
        });
        match opened {
            Ok(conn) => {
                let _ = self.reader.set(std::sync::Mutex::new(conn));
            }
            Err(e) => {
                tracing::warn!("lookups stay on the pool: cannot open a reading connection: {e}")
            }
        }
    }

    /// A lookup of at most `INLINE_LOOKUP` users on the inline connection,
    /// once `Store::read_inline` opened it; None otherwise.
    fn users_by_inline(
        &self,
        key: crate::UserKey,
        values: &[String],
    ) -> Option<Result<Vec<MfaUser>>> {
        if values.is_empty() || values.len() > crate::INLINE_LOOKUP {
            return None;
        }
        let reader = self.reader.get()?;
        let conn = match reader.lock() {
            Ok(conn) => conn,
            Err(poisoned) => poisoned.into_inner(),
        };
        let sql = self.sql.select_users_by(key, values.len());
        let read = || -> Result<Vec<MfaUser>> {
            let mut st = conn.prepare_cached(&sql)?;
            let mut rows = st.query(rusqlite::params_from_iter(values.iter()))?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                out.push(user_from_rusqlite(row)?);
            }
            Ok(out)
        };
        Some(read())
    }

    /// A sync's creates. A create that breaks a unique index is reported as
    /// the stored user it clashes with (as with PostgreSQL), nothing of it
    /// written; the rows written before it stay in the transaction, which
    /// the caller must drop (`StoreApplying` refuses to go on).
    async fn create_users(&self, tx: &mut Tx, creates: &[Change], at: &str) -> Result<()> {
        let sql = self.sql.insert_users(1);
        let failed = {
            let mut handle = (**tx).lock_handle().await?;
            direct(&mut handle, |conn| insert_creates(conn, &sql, creates, at))?
        };
        let Some((i, message)) = failed else {
            return Ok(());
        };
        let Some(create) = creates.get(i) else {
            return Err(StoreError::Conflict(message));
        };
        let lower = create.user.username.to_lowercase();
        let one = std::slice::from_ref(create);
        if let Some(clash) = self
            .find_clash(tx, one, std::slice::from_ref(&lower))
            .await?
        {
            return Err(clash);
        }
        Err(StoreError::Conflict(format!(
            "create {}: {message}",
            create.user.username
        )))
    }

    /// Audit rows.
    async fn write_audit(&self, tx: &mut Tx, rows: &[AuditRow<'_>], at: &str) -> Result<()> {
        let sql = self.sql.insert_audit(1);
        let mut handle = (**tx).lock_handle().await?;
        direct(&mut handle, |conn| {
            let mut st = conn.prepare(&sql)?;
            for r in rows {
                st.execute(rusqlite::params![
                    at,
                    r.actor,
                    r.action,
                    r.username,
                    r.directory_id,
                    r.before.as_deref(),
                    r.after.as_deref(),
                    r.detail
                ])?;
            }
            Ok(())
        })
    }
}

/// Run `f` with sqlx's connection behind `handle` as a rusqlite connection
/// (which neither closes it nor touches its transaction; its statements are
/// finalized before this returns).
fn direct<T>(
    handle: &mut sqlx::sqlite::LockedSqliteHandle<'_>,
    f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>,
) -> Result<T> {
    // SAFETY: the pointer is sqlx's open connection, which stays open and is
    // used by nobody else while `handle` is held (its worker thread waits for
    // the lock); `from_handle` does not take ownership (no close on drop), and
    // the rusqlite connection is dropped before `handle`.
    let conn = unsafe { rusqlite::Connection::from_handle(handle.as_raw_handle().as_ptr()) }?;
    let done = f(&conn);
    drop(conn);
    Ok(done?)
}

/// A user from a row of `Sql::select_users`, as `user_from_row` reads it
/// from sqlx.
fn user_from_rusqlite(row: &rusqlite::Row<'_>) -> Result<MfaUser> {
    crate::common::user_from_columns(
        row.get("username")?,
        row.get("enabled")?,
        &row.get::<_, String>("source")?,
        |name| row.get(name),
    )
}

/// Insert `creates` with the single-row `sql` (the columns of `bind_user!`).
/// `Ok(Some((i, message)))`: create `i` broke a constraint and was not written.
fn insert_creates(
    conn: &rusqlite::Connection,
    sql: &str,
    creates: &[Change],
    at: &str,
) -> rusqlite::Result<Option<(usize, String)>> {
    let mut st = conn.prepare(sql)?;
    for (i, c) in creates.iter().enumerate() {
        let user = &c.user;
        let (digest, stamp) = crate::common::digest_and_stamp(user, c.raw);
        st.raw_bind_parameter(1, user.username.as_str())?;
        st.raw_bind_parameter(2, user.username.to_lowercase())?;
        let mut n = 3;
        for (_, value) in user.text_fields() {
            st.raw_bind_parameter(n, value.as_deref())?;
            n += 1;
        }
        st.raw_bind_parameter(n, user.enabled)?;
        st.raw_bind_parameter(n + 1, user.source.as_str())?;
        st.raw_bind_parameter(n + 2, at)?;
        st.raw_bind_parameter(n + 3, digest)?;
        st.raw_bind_parameter(n + 4, stamp)?;
        match st.raw_execute() {
            Ok(_) => {}
            Err(rusqlite::Error::SqliteFailure(e, message))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                return Ok(Some((i, message.unwrap_or_else(|| e.to_string()))));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A database this store creates, and the `-wal` and `-shm` files SQLite
    /// makes beside it, are 0600 under the usual umask 022.
    #[cfg(unix)]
    #[tokio::test]
    async fn a_new_database_and_its_wal_and_shm_are_private() {
        use crate::Store;
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        for umask in [0o022] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("t.db");
            // SAFETY: umask only sets the process's file creation mask.
            let before = unsafe { libc::umask(umask) };
            let store = SqliteStore::open(path.to_str().unwrap()).await.unwrap();
            // SAFETY: as above.
            unsafe { libc::umask(before) };
            store.put_config("a = 1\n").await.unwrap();
            for suffix in ["", "-wal", "-shm"] {
                let file = dir.path().join(format!("t.db{suffix}"));
                assert_eq!(mode(&file), 0o600, "{suffix} under umask {umask:o}");
            }
            store.close().await;
        }
    }

    /// After `Store::read_inline`, small lookups read on their own
    /// connection: they answer with the pool closed; larger ones still go
    /// through the pool.
    #[tokio::test]
    async fn small_lookups_read_inline_once_asked() {
        use crate::{UserKey, UserStore};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = SqliteStore::open(path.to_str().unwrap()).await.unwrap();
        let user = MfaUser {
            username: "Ina".into(),
            enabled: true,
            ..MfaUser::default()
        };
        store.insert_user(&user).await.unwrap();
        let key = vec!["ina".to_string()];
        assert!(store
            .users_by_inline(UserKey::UsernameLower, &key)
            .is_none());
        store.read_inline();
        store.pool.close().await;
        let found = store.users_by(UserKey::UsernameLower, &key).await.unwrap();
        assert_eq!(found, [user]);
        let many = vec!["ina".to_string(); crate::INLINE_LOOKUP + 1];
        assert!(store.users_by(UserKey::UsernameLower, &many).await.is_err());
        // not for an in-memory database
        let memory = SqliteStore::open(":memory:").await.unwrap();
        memory.read_inline();
        assert!(memory.reader.get().is_none());
    }

    /// Every pooled connection keeps its statement journals in memory (no
    /// temporary files for a sync's multi-row statements).
    #[tokio::test]
    async fn connections_keep_temporary_data_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        for short in [false, true] {
            let store = SqliteStore::open_with(path.to_str().unwrap(), short)
                .await
                .unwrap();
            let mode: i64 = sqlx::query_scalar("PRAGMA temp_store")
                .fetch_one(&store.pool)
                .await
                .unwrap();
            assert_eq!(mode, 2, "temp_store = MEMORY (short open: {short})");
        }
    }

    /// A sync ends with `Store::close`: the WAL is checkpointed and emptied
    /// even while another process (here another store on the same file, as
    /// `serve` would be) keeps the database open, so its last close does not
    /// remove the WAL.
    #[tokio::test]
    async fn close_empties_the_wal_while_others_keep_the_database_open() {
        use crate::Store;
        use mfasync_core::plan::{Action, Change};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let path = path.to_str().unwrap();
        let other = SqliteStore::open(path).await.unwrap();
        assert!(other.users().await.unwrap().is_empty());
        let store = SqliteStore::open(path).await.unwrap();
        let creates: Vec<Change> = (0..300)
            .map(|i| Change {
                action: Action::Create,
                user: mfasync_core::MfaUser {
                    username: format!("user{i}"),
                    directory_id: Some(format!("id-{i}")),
                    ..Default::default()
                },
                before: None,
                fields: vec![],
                reason: None,
                raw: None,
            })
            .collect();
        store.apply(&creates, None).await.unwrap();
        let wal = || {
            std::fs::metadata(format!("{path}-wal"))
                .map(|m| m.len())
                .unwrap_or(0)
        };
        assert!(wal() > 0, "the write went to the WAL");
        store.close().await;
        assert_eq!(wal(), 0);
        // the other store reads everything from the database itself
        assert_eq!(other.users().await.unwrap().len(), 300);
    }

    async fn page_size(store: &SqliteStore) -> i64 {
        sqlx::query_scalar("PRAGMA page_size")
            .fetch_one(&store.pool)
            .await
            .unwrap()
    }

    /// A new database gets 16 KiB pages; an existing one keeps its own and
    /// works as before.
    #[tokio::test]
    async fn new_databases_have_16_kib_pages_and_old_ones_keep_theirs() {
        let dir = tempfile::tempdir().unwrap();
        let new = dir.path().join("new.db");
        let store = SqliteStore::open(new.to_str().unwrap()).await.unwrap();
        assert_eq!(page_size(&store).await, 16384);
        drop(store);
        let store = SqliteStore::open(new.to_str().unwrap()).await.unwrap();
        assert_eq!(page_size(&store).await, 16384);

        // a database made by an earlier version (4 KiB pages, WAL)
        let old = dir.path().join("old.db");
        {
            use sqlx::{ConnectOptions, Connection};
            let mut c = SqliteConnectOptions::new()
                .filename(&old)
                .create_if_missing(true)
                .page_size(4096)
                .journal_mode(SqliteJournalMode::Wal)
                .connect()
                .await
                .unwrap();
            sqlx::query("CREATE TABLE earlier (x INTEGER)")
                .execute(&mut c)
                .await
                .unwrap();
            c.close().await.unwrap();
        }
        let store = SqliteStore::open(old.to_str().unwrap()).await.unwrap();
        assert_eq!(page_size(&store).await, 4096);
        use crate::UserStore;
        assert!(store.users().await.unwrap().is_empty());
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM earlier")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(n, 0);
    }
}
