//! The two SQL engines behind [`tessera_core::ports::Database`].

use std::sync::Arc;

use anyhow::{bail, Context};
use tessera_core::ports::{Database, DbError};

pub mod postgres;
pub mod sqlite;

/// Opens the database named by `url`: `sqlite://PATH`, `sqlite::memory:` or `postgres://…`.
pub async fn connect(
    url: &str,
    sqlite_sync: sqlite::Synchronous,
) -> anyhow::Result<Arc<dyn Database>> {
    if let Some(rest) = url.strip_prefix("sqlite:") {
        let path = rest.strip_prefix("//").unwrap_or(rest);
        let db = sqlite::SqliteDb::open(path, sqlite_sync)
            .await
            .with_context(|| format!("opening SQLite database {path:?}"))?;
        Ok(Arc::new(db))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        // The URL may hold a password: keep it out of the message.
        let db = postgres::PgDb::connect(url)
            .await
            .context("connecting to PostgreSQL")?;
        Ok(Arc::new(db))
    } else {
        let scheme = url.split(':').next().unwrap_or_default();
        bail!("unsupported database URL scheme {scheme:?}: use sqlite://PATH or postgres://…")
    }
}

/// Maps an engine error; unique violations get their own variant because the core
/// relies on them for races (e.g. two registrations of one name).
fn map_err(e: sqlx::Error) -> DbError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => DbError::UniqueViolation,
        // SQLSTATE class 23: integrity constraint violations (NOT NULL, CHECK, foreign key).
        sqlx::Error::Database(d) if d.code().is_some_and(|c| c.starts_with("23")) => {
            DbError::Constraint(e.to_string())
        }
        _ => DbError::Other(e.to_string()),
    }
}

fn decode_err(col: usize, e: impl std::fmt::Display) -> DbError {
    DbError::Decode(format!("column {col}: {e}"))
}

/// A float result (e.g. `AVG`) is accepted only when it is a whole number.
fn whole(col: usize, f: f64) -> Result<i64, DbError> {
    if f.fract() == 0.0 && f >= i64::MIN as f64 && f < i64::MAX as f64 {
        Ok(f as i64)
    } else {
        Err(decode_err(col, format!("non-integral number {f}")))
    }
}

#[cfg(test)]
mod tests;
