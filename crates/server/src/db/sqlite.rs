//! SQLite: the zero-setup default. WAL, one writer connection, a few reader connections.
//!
//! Statements run inline on the calling task rather than on a worker thread: on a local
//! file they take microseconds, less than a thread hand-off costs (measured with the
//! benchmark in `bench/`). A task never awaits while it holds a connection.

use std::{path::Path, sync::Mutex, time::Duration};

use async_trait::async_trait;
use rusqlite::{
    ffi, types::ValueRef, Connection, ErrorCode, OpenFlags, ToSql, TransactionBehavior,
};
use tessera_core::ports::{check_storable, Database, DbError, Engine, Row, Statement, Value};
use tokio::sync::Semaphore;

use super::{decode_err, whole};

/// Prepared statements kept per connection; the code has fewer distinct statements.
const STATEMENT_CACHE: usize = 512;
/// How long a connection waits for another process (the CLI) holding the write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Page cache per connection, in KiB (SQLite's `cache_size` takes negative KiB).
const CACHE_KIB: i64 = 1024;

/// `PRAGMA synchronous` (see the README's `database.sqlite_synchronous`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// The log is synced at every commit: nothing acknowledged is lost on power loss.
    #[default]
    Full,
    /// Synced at checkpoints only: survives a process crash, not a power loss.
    Normal,
}

pub struct SqliteDb {
    /// SQLite allows one writer: queueing writers here is fairer and cheaper than letting
    /// them spin in SQLite's busy handler.
    writer: tokio::sync::Mutex<Connection>,
    readers: Option<Readers>,
}

/// Read connections. In WAL mode they read a consistent snapshot while the writer writes.
struct Readers {
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
    path: String,
    sync: Synchronous,
}

impl SqliteDb {
    /// `path` is a file (created with its parent folders if missing) or `:memory:`.
    pub async fn open(path: &str, sync: Synchronous) -> anyhow::Result<Self> {
        let path = path.split('?').next().unwrap_or_default();
        if path == ":memory:" {
            // An in-memory database lives exactly as long as its single connection.
            let conn = Connection::open_in_memory()?;
            configure(&conn, sync)?;
            return Ok(Self {
                writer: tokio::sync::Mutex::new(conn),
                readers: None,
            });
        }
        if let Some(parent) = Path::new(path)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent)?;
        }
        let conn = Connection::open(path)?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            anyhow::bail!("SQLite refused WAL mode (got {mode})");
        }
        configure(&conn, sync)?;
        // Inline statements never outnumber the threads running them.
        let readers = std::thread::available_parallelism().map_or(2, |n| n.get()) + 1;
        Ok(Self {
            writer: tokio::sync::Mutex::new(conn),
            readers: Some(Readers {
                idle: Mutex::new(Vec::new()),
                permits: Semaphore::new(readers),
                path: path.to_owned(),
                sync,
            }),
        })
    }

    /// Runs `f` on a reader connection (the writer for an in-memory database).
    async fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let Some(readers) = &self.readers else {
            return f(&*self.writer.lock().await);
        };
        let _permit = readers
            .permits
            .acquire()
            .await
            .map_err(|e| DbError::Other(e.to_string()))?;
        let pooled = readers.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match pooled {
            Some(c) => c,
            None => open_reader(&readers.path, readers.sync)?,
        };
        let out = f(&conn);
        readers
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(conn);
        out
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction on the writer; all or nothing.
    async fn write<T>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let mut conn = self.writer.lock().await;
        let run = move || {
            // IMMEDIATE takes the write lock up front, so a read-then-write batch cannot
            // fail half-way with SQLITE_BUSY against another process.
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_err)?;
            let out = f(&tx)?; // dropping `tx` on error rolls back
            tx.commit()
                .map_err(|e| DbError::CommitUnknown(e.to_string()))?;
            Ok(out)
        };
        // A commit waits for the disk (`synchronous = FULL`): on a multi-threaded runtime
        // the worker's other tasks move to another thread meanwhile.
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(run),
            _ => run(),
        }
    }
}

fn configure(conn: &Connection, sync: Synchronous) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // Without the query planner stability guarantee, a cached statement whose bound
    // `LIMIT` changed is compiled again on its next step (measured: most sync reads).
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    let sync = match sync {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    conn.execute_batch(&format!(
        "PRAGMA foreign_keys = ON; PRAGMA synchronous = {sync}; PRAGMA cache_size = -{CACHE_KIB};"
    ))
}

fn open_reader(path: &str, sync: Synchronous) -> Result<Connection, DbError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(map_err)?;
    configure(&conn, sync).map_err(map_err)?;
    Ok(conn)
}

fn map_err(e: rusqlite::Error) -> DbError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == ErrorCode::ConstraintViolation
                && matches!(
                    f.extended_code,
                    ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                ) =>
        {
            DbError::UniqueViolation
        }
        rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::ConstraintViolation => {
            DbError::Constraint(e.to_string())
        }
        _ => DbError::Other(e.to_string()),
    }
}

/// Binds `$n` placeholders by number. SQLite numbers named parameters by first
/// appearance, so `$2 … $1` or a repeated `$1` must be mapped by name.
fn bind(stmt: &mut rusqlite::Statement<'_>, params: &[Value]) -> Result<(), DbError> {
    for index in 1..=stmt.parameter_count() {
        let n = stmt
            .parameter_name(index)
            .and_then(|name| name.strip_prefix('$'))
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| DbError::Other(format!("parameter {index} is not $n")))?;
        let value = params
            .get(n.wrapping_sub(1))
            .ok_or_else(|| DbError::Other(format!("no value for ${n}")))?;
        let r = match value {
            Value::Null => stmt.raw_bind_parameter(index, None::<i64>),
            Value::Int(i) => stmt.raw_bind_parameter(index, i),
            Value::Text(s) => stmt.raw_bind_parameter(index, s as &dyn ToSql),
        };
        r.map_err(map_err)?;
    }
    Ok(())
}

/// Decodes by each value's storage class, not the declared column type.
fn decode_row(row: &rusqlite::Row<'_>, columns: usize) -> Result<Row, DbError> {
    let mut out = Vec::with_capacity(columns);
    for i in 0..columns {
        let v = row.get_ref(i).map_err(|e| decode_err(i, e))?;
        out.push(match v {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(n) => Value::Int(n),
            ValueRef::Real(f) => Value::Int(whole(i, f)?),
            ValueRef::Text(t) | ValueRef::Blob(t) => Value::Text(
                std::str::from_utf8(t)
                    .map_err(|e| decode_err(i, e))?
                    .to_owned(),
            ),
        });
    }
    Ok(Row(out))
}

fn run_query(conn: &Connection, sql: &str, params: &[Value]) -> Result<Vec<Row>, DbError> {
    check_storable(params)?;
    let mut stmt = conn.prepare_cached(sql).map_err(map_err)?;
    bind(&mut stmt, params)?;
    let columns = stmt.column_count();
    let mut rows = stmt.raw_query();
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(map_err)? {
        out.push(decode_row(row, columns)?);
    }
    Ok(out)
}

/// Runs a statement to completion (it may have `RETURNING` rows) and counts changed rows.
fn run_execute(conn: &Connection, sql: &str, params: &[Value]) -> Result<u64, DbError> {
    check_storable(params)?;
    let mut stmt = conn.prepare_cached(sql).map_err(map_err)?;
    bind(&mut stmt, params)?;
    let mut rows = stmt.raw_query();
    while rows.next().map_err(map_err)?.is_some() {}
    drop(rows);
    Ok(conn.changes())
}

/// Only a plain `SELECT` may use a reader; anything else may write
/// (`INSERT … RETURNING`, `DELETE … RETURNING`, CTEs).
fn is_read_only(sql: &str) -> bool {
    sql.trim_start()
        .get(..6)
        .is_some_and(|p| p.eq_ignore_ascii_case("select"))
}

#[async_trait]
impl Database for SqliteDb {
    fn engine(&self) -> Engine {
        Engine::Sqlite
    }

    async fn query(&self, sql: &str, params: Vec<Value>) -> Result<Vec<Row>, DbError> {
        if is_read_only(sql) {
            self.read(|c| run_query(c, sql, &params)).await
        } else {
            self.write(|tx| run_query(tx, sql, &params)).await
        }
    }

    async fn execute(&self, sql: &str, params: Vec<Value>) -> Result<u64, DbError> {
        self.write(|tx| run_execute(tx, sql, &params)).await
    }

    async fn batch(&self, statements: Vec<Statement>) -> Result<(), DbError> {
        self.write(|tx| {
            for st in &statements {
                let changed = run_execute(tx, st.sql, &st.params)?;
                if st.expect_change && changed == 0 {
                    return Err(DbError::Conflict);
                }
            }
            Ok(())
        })
        .await
    }

    async fn execute_script(&self, sql: &str) -> Result<(), DbError> {
        self.write(|tx| tx.execute_batch(sql).map_err(map_err))
            .await
    }
}

impl Drop for SqliteDb {
    fn drop(&mut self) {
        // Readers close first so the writer's close can checkpoint and remove the WAL.
        if let Some(r) = &self.readers {
            r.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
    }
}
