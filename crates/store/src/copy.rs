//! `mfasync db migrate`: copy an existing SQLite database into PostgreSQL
//! (issue 8: several servers need one shared database), verified by per-table
//! row counts and checksums.
//!
//! Both databases are first migrated to this version's schema. Every table of
//! the schema is copied, except the servers registry and the sync lease
//! (runtime state that the servers rebuild). The tables and columns are read
//! from the target's catalog, so a table added by a later migration is copied
//! without a change here; each value is converted by the target column's type
//! (SQLite keeps booleans as integers). Identity sequences are moved past the
//! copied ids.
//!
//! The source is read in ONE read transaction (a consistent snapshot even
//! while a server writes to it), the target is written in ONE transaction,
//! and the checksums of the target are computed inside that transaction from
//! what it now holds: it commits only when every table's count and checksum
//! equal the source's. A target that holds data is refused unless
//! `overwrite`, which empties it first (in the same transaction).

use std::str::FromStr;

use futures_util::TryStreamExt;
use sha2::{Digest, Sha256};
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, Row};

use crate::{Result, StoreError};

/// Tables that are not copied: the runtime state of `serve` processes.
const NOT_COPIED: [&str; 2] = ["servers", "sync_lease"];

/// One table's outcome.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TableCopy {
    pub table: String,
    pub rows: u64,
    /// Order-independent checksum of the rows (hex), equal on both sides.
    pub checksum: String,
}

/// What `copy_to_postgres` did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CopyReport {
    pub tables: Vec<TableCopy>,
    /// The tables left out (runtime state).
    pub skipped: Vec<String>,
}

/// A column value, as the target's type says it is.
enum Value {
    Null,
    Int(i64),
    Bool(bool),
    Float(f64),
    Text(String),
    Bytes(Vec<u8>),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Type {
    Int,
    Bool,
    Float,
    Text,
    Bytes,
}

struct Column {
    name: String,
    ty: Type,
    identity: bool,
}

fn column_type(table: &str, column: &str, data_type: &str) -> Result<Type> {
    Ok(match data_type {
        "bigint" | "integer" | "smallint" => Type::Int,
        "boolean" => Type::Bool,
        "double precision" | "real" => Type::Float,
        "text" | "character varying" | "character" => Type::Text,
        "bytea" => Type::Bytes,
        other => {
            return Err(StoreError::Conflict(format!(
                "cannot copy {table}.{column}: column type {other} is not supported"
            )))
        }
    })
}

/// The order-independent checksum of a table: the sum (mod 2^128) of the
/// SHA-256 (first 16 bytes) of each row's canonical form.
#[derive(Default)]
struct Checksum {
    rows: u64,
    sum: u128,
}

impl Checksum {
    fn add(&mut self, row: &[Value]) {
        let mut h = Sha256::new();
        for v in row {
            match v {
                Value::Null => h.update(b"N"),
                Value::Int(i) => {
                    h.update(b"I");
                    h.update(i.to_be_bytes());
                }
                Value::Bool(b) => h.update(if *b { b"B1" } else { b"B0" }),
                Value::Float(f) => {
                    h.update(b"F");
                    h.update(f.to_bits().to_be_bytes());
                }
                Value::Text(t) => {
                    h.update(b"T");
                    h.update((t.len() as u64).to_be_bytes());
                    h.update(t.as_bytes());
                }
                Value::Bytes(b) => {
                    h.update(b"X");
                    h.update((b.len() as u64).to_be_bytes());
                    h.update(b);
                }
            }
        }
        let d = h.finalize();
        let mut first = [0u8; 16];
        first.copy_from_slice(&d[..16]);
        self.rows += 1;
        self.sum = self.sum.wrapping_add(u128::from_be_bytes(first));
    }

    fn hex(&self) -> String {
        format!("{:032x}", self.sum)
    }
}

/// Column `i` of a SQLite or PostgreSQL row as a `Value` of type `ty`.
fn row_value<R: Row>(row: &R, i: usize, ty: Type) -> Result<Value>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> f64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(match ty {
        Type::Int => row
            .try_get::<Option<i64>, _>(i)?
            .map_or(Value::Null, Value::Int),
        Type::Bool => row
            .try_get::<Option<bool>, _>(i)?
            .map_or(Value::Null, Value::Bool),
        Type::Float => row
            .try_get::<Option<f64>, _>(i)?
            .map_or(Value::Null, Value::Float),
        Type::Text => row
            .try_get::<Option<String>, _>(i)?
            .map_or(Value::Null, Value::Text),
        Type::Bytes => row
            .try_get::<Option<Vec<u8>>, _>(i)?
            .map_or(Value::Null, Value::Bytes),
    })
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Insert `rows` into `table` with one multi-row statement.
async fn insert_rows(
    tx: &mut sqlx::PgConnection,
    table: &str,
    cols: &[Column],
    rows: &[Vec<Value>],
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = cols.iter().map(|c| quote(&c.name)).collect();
    let mut sql = format!("INSERT INTO {} ({})", quote(table), names.join(", "));
    if cols.iter().any(|c| c.identity) {
        sql.push_str(" OVERRIDING SYSTEM VALUE");
    }
    sql.push_str(" VALUES ");
    let mut n = 0;
    for (r, _) in rows.iter().enumerate() {
        if r > 0 {
            sql.push(',');
        }
        sql.push('(');
        for c in 0..cols.len() {
            n += 1;
            if c > 0 {
                sql.push(',');
            }
            sql.push_str(&format!("${n}"));
        }
        sql.push(')');
    }
    let mut q = sqlx::query(&sql);
    for row in rows {
        for (v, c) in row.iter().zip(cols) {
            // a NULL is bound with its column's type
            q = match v {
                Value::Null => match c.ty {
                    Type::Int => q.bind(None::<i64>),
                    Type::Bool => q.bind(None::<bool>),
                    Type::Float => q.bind(None::<f64>),
                    Type::Text => q.bind(None::<String>),
                    Type::Bytes => q.bind(None::<Vec<u8>>),
                },
                Value::Int(i) => q.bind(*i),
                Value::Bool(b) => q.bind(*b),
                Value::Float(f) => q.bind(*f),
                Value::Text(t) => q.bind(t.as_str()),
                Value::Bytes(b) => q.bind(b.as_slice()),
            };
        }
    }
    q.execute(&mut *tx)
        .await
        .map_err(|e| StoreError::Conflict(format!("cannot copy rows into {table}: {e}")))?;
    Ok(())
}

/// Copy the SQLite database `from` (`sqlite://PATH`) into the PostgreSQL
/// database `to` (`postgres://...`); see the module documentation.
pub async fn copy_to_postgres(from: &str, to: &str, overwrite: bool) -> Result<CopyReport> {
    let Some(path) = from.strip_prefix("sqlite://") else {
        return Err(StoreError::Conflict(format!(
            "db migrate copies a SQLite database (--database sqlite://PATH), not {}",
            from.split("://").next().unwrap_or("this")
        )));
    };
    if path == ":memory:" || !std::path::Path::new(path).exists() {
        return Err(StoreError::Conflict(format!(
            "the source database {path} does not exist"
        )));
    }
    if !(to.starts_with("postgres://") || to.starts_with("postgresql://")) {
        return Err(StoreError::BadUrl(
            "--to must be a PostgreSQL database: postgres://...".into(),
        ));
    }
    // Both at this version's schema.
    drop(crate::SqliteStore::open(path).await?);
    drop(crate::PgStore::open(to).await?);

    let mut src = sqlx::SqliteConnection::connect_with(&crate::common::slow_statements_as_info(
        SqliteConnectOptions::new()
            .filename(path)
            .read_only(true)
            .busy_timeout(std::time::Duration::from_secs(30)),
    ))
    .await?;
    let mut dst = sqlx::PgConnection::connect_with(&crate::common::slow_statements_as_info(
        PgConnectOptions::from_str(to)?,
    ))
    .await?;

    let mut src_tx = src.begin().await?;
    let mut tx = dst.begin().await?;

    let target_tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema() \
         AND table_type = 'BASE TABLE' AND table_name NOT LIKE '\\_sqlx%' ORDER BY table_name",
    )
    .fetch_all(&mut *tx)
    .await?;
    let source_tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
         AND name NOT LIKE '\\_sqlx%' ESCAPE '\\' ORDER BY name",
    )
    .fetch_all(&mut *src_tx)
    .await?;
    let skipped: Vec<String> = target_tables
        .iter()
        .filter(|t| NOT_COPIED.contains(&t.as_str()))
        .cloned()
        .collect();
    let tables: Vec<String> = target_tables
        .iter()
        .filter(|t| !NOT_COPIED.contains(&t.as_str()))
        .cloned()
        .collect();
    for t in &source_tables {
        if !target_tables.contains(t) {
            return Err(StoreError::Conflict(format!(
                "the source has a table {t} that the target schema does not: is the target's mfasync newer or older?"
            )));
        }
    }

    // Refuse a target that holds data, unless asked to replace it.
    let mut holding = Vec::new();
    for t in &tables {
        let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {}", quote(t)))
            .fetch_one(&mut *tx)
            .await?;
        if n > 0 {
            holding.push(format!("{t} ({n} rows)"));
        }
    }
    if !holding.is_empty() {
        if !overwrite {
            return Err(StoreError::Conflict(format!(
                "the target database is not empty: {}; nothing copied (--overwrite replaces its contents)",
                holding.join(", ")
            )));
        }
        let list: Vec<String> = tables.iter().map(|t| quote(t)).collect();
        sqlx::query(&format!("TRUNCATE {} RESTART IDENTITY", list.join(", ")))
            .execute(&mut *tx)
            .await?;
    }

    let mut report = Vec::new();
    for t in &tables {
        let cols: Vec<Column> = sqlx::query(
            "SELECT column_name::text AS name, data_type::text AS ty, is_identity::text AS ident \
             FROM information_schema.columns WHERE table_schema = current_schema() \
             AND table_name = $1 ORDER BY ordinal_position",
        )
        .bind(t)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| {
            let name: String = r.try_get("name")?;
            let ty: String = r.try_get("ty")?;
            let ident: String = r.try_get("ident")?;
            Ok(Column {
                ty: column_type(t, &name, &ty)?,
                identity: ident == "YES",
                name,
            })
        })
        .collect::<Result<_>>()?;
        let names: Vec<String> = cols.iter().map(|c| quote(&c.name)).collect();
        let select = format!("SELECT {} FROM {}", names.join(", "), quote(t));

        let mut source = Checksum::default();
        let per_statement = (60_000 / cols.len().max(1)).clamp(1, 1000);
        let mut batch: Vec<Vec<Value>> = Vec::with_capacity(per_statement);
        if source_tables.contains(t) {
            let mut rows = sqlx::query(&select).fetch(&mut *src_tx);
            while let Some(row) = rows.try_next().await? {
                let values = cols
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        row_value(&row, i, c.ty)
                            .map_err(|e| StoreError::Corrupt(format!("source {t}.{}: {e}", c.name)))
                    })
                    .collect::<Result<Vec<_>>>()?;
                source.add(&values);
                batch.push(values);
                if batch.len() == per_statement {
                    insert_rows(&mut tx, t, &cols, &batch).await?;
                    batch.clear();
                }
            }
        }
        insert_rows(&mut tx, t, &cols, &batch).await?;
        for c in cols.iter().filter(|c| c.identity) {
            sqlx::query(&format!(
                "SELECT setval(pg_get_serial_sequence($1, $2), COALESCE(MAX({col}), 0) + 1, false) FROM {tab}",
                col = quote(&c.name),
                tab = quote(t)
            ))
            .bind(t)
            .bind(&c.name)
            .execute(&mut *tx)
            .await?;
        }

        // What the target holds now, inside the transaction.
        let mut target = Checksum::default();
        {
            let mut rows = sqlx::query(&select).fetch(&mut *tx);
            while let Some(row) = rows.try_next().await? {
                let values = cols
                    .iter()
                    .enumerate()
                    .map(|(i, c)| row_value(&row, i, c.ty))
                    .collect::<Result<Vec<_>>>()?;
                target.add(&values);
            }
        }
        if (source.rows, source.sum) != (target.rows, target.sum) {
            return Err(StoreError::Conflict(format!(
                "table {t}: the source has {} rows (checksum {}) but the copy {} rows (checksum {}); nothing committed",
                source.rows,
                source.hex(),
                target.rows,
                target.hex()
            )));
        }
        report.push(TableCopy {
            table: t.clone(),
            rows: source.rows,
            checksum: source.hex(),
        });
    }
    tx.commit().await?;
    src_tx.rollback().await?;
    Ok(CopyReport {
        tables: report,
        skipped,
    })
}
