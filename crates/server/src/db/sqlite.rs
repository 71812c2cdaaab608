//! SQLite: the zero-setup default. WAL, one in-process writer at a time.

use std::{path::Path, str::FromStr, time::Duration};

use async_trait::async_trait;
use sqlx::{
    sqlite::{
        SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
        SqliteRow, SqliteSynchronous,
    },
    Arguments, AssertSqlSafe, Decode, Row as _, Sqlite, SqliteConnection, TypeInfo, ValueRef,
};
use tessera_core::ports::{Database, DbError, Engine, Row, Statement, Value};
use tokio::sync::Mutex;

use super::{decode_err, map_err, whole};

pub struct SqliteDb {
    pool: SqlitePool,
    /// SQLite allows one writer; queueing writers here is fairer and cheaper than letting
    /// them spin in SQLite's busy handler. Other processes (the CLI) still get busy_timeout.
    write: Mutex<()>,
}

impl SqliteDb {
    /// `path` is a file (created with its parent folders if missing) or `:memory:`.
    pub async fn open(path: &str) -> anyhow::Result<Self> {
        let path = path.split('?').next().unwrap_or_default();
        let memory = path == ":memory:";
        let opts = if memory {
            SqliteConnectOptions::from_str("sqlite::memory:")?
        } else {
            if let Some(parent) = Path::new(path)
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
            {
                std::fs::create_dir_all(parent)?;
            }
            SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
        };
        let opts = opts
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            .synchronous(SqliteSynchronous::Normal);
        // An in-memory database lives exactly as long as its single connection.
        let pool_opts = if memory {
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            SqlitePoolOptions::new().max_connections(4)
        };
        let pool = pool_opts
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts)
            .await?;
        Ok(Self {
            pool,
            write: Mutex::new(()),
        })
    }
}

fn args(params: Vec<Value>) -> Result<SqliteArguments, DbError> {
    let mut args = SqliteArguments::default();
    for p in params {
        let r = match p {
            Value::Null => args.add(None::<i64>),
            Value::Int(i) => args.add(i),
            Value::Text(s) => args.add(s),
        };
        r.map_err(|e| DbError::Other(format!("bind: {e}")))?;
    }
    Ok(args)
}

/// Decodes by each value's storage class, not the declared column type.
fn decode_row(row: &SqliteRow) -> Result<Row, DbError> {
    let mut out = Vec::with_capacity(row.len());
    for i in 0..row.len() {
        let v = row.try_get_raw(i).map_err(|e| decode_err(i, e))?;
        if v.is_null() {
            out.push(Value::Null);
            continue;
        }
        let value = match v.type_info().name() {
            "INTEGER" => {
                Value::Int(<i64 as Decode<Sqlite>>::decode(v).map_err(|e| decode_err(i, e))?)
            }
            "TEXT" => {
                Value::Text(<String as Decode<Sqlite>>::decode(v).map_err(|e| decode_err(i, e))?)
            }
            "REAL" => Value::Int(whole(
                i,
                <f64 as Decode<Sqlite>>::decode(v).map_err(|e| decode_err(i, e))?,
            )?),
            "BLOB" => {
                let bytes = <Vec<u8> as Decode<Sqlite>>::decode(v).map_err(|e| decode_err(i, e))?;
                Value::Text(String::from_utf8(bytes).map_err(|e| decode_err(i, e))?)
            }
            other => return Err(decode_err(i, format!("unsupported type {other}"))),
        };
        out.push(value);
    }
    Ok(Row(out))
}

async fn run_query(
    conn: &mut SqliteConnection,
    sql: &str,
    params: Vec<Value>,
) -> Result<Vec<Row>, DbError> {
    let rows = sqlx::query_with(AssertSqlSafe(sql.to_owned()), args(params)?)
        .fetch_all(conn)
        .await
        .map_err(map_err)?;
    rows.iter().map(decode_row).collect()
}

async fn run_execute(
    conn: &mut SqliteConnection,
    sql: &str,
    params: Vec<Value>,
) -> Result<u64, DbError> {
    let done = sqlx::query_with(AssertSqlSafe(sql.to_owned()), args(params)?)
        .execute(conn)
        .await
        .map_err(map_err)?;
    Ok(done.rows_affected())
}

/// Only a plain `SELECT` may skip the writer queue; anything else may write
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
        let _guard = if is_read_only(sql) {
            None
        } else {
            Some(self.write.lock().await)
        };
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        run_query(&mut conn, sql, params).await
    }

    async fn execute(&self, sql: &str, params: Vec<Value>) -> Result<u64, DbError> {
        let _guard = self.write.lock().await;
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        run_execute(&mut conn, sql, params).await
    }

    async fn batch(&self, statements: Vec<Statement>) -> Result<(), DbError> {
        let _guard = self.write.lock().await;
        // IMMEDIATE takes the write lock up front, so a read-then-write batch cannot fail
        // half-way with SQLITE_BUSY against another process.
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)?;
        for st in statements {
            let changed = run_execute(&mut tx, st.sql, st.params).await?;
            if st.expect_change && changed == 0 {
                tx.rollback().await.map_err(map_err)?;
                return Err(DbError::Conflict);
            }
        }
        tx.commit().await.map_err(map_err)
    }

    async fn execute_script(&self, sql: &str) -> Result<(), DbError> {
        let _guard = self.write.lock().await;
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)?;
        sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)
    }
}
