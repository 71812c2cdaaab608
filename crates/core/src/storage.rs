//! The SQL Tessera needs, written once for both engines, and the migrations.

use crate::{
    ports::{Database, DbError, Value},
    Error, Result,
};

/// Versioned migrations; index + 1 is the schema version. An engine may get its own text
/// where the portable subset is not enough.
const MIGRATIONS: &[(&str, &str)] = &[
    (
        include_str!("storage/migrations/0001_init.sql"),
        include_str!("storage/migrations/0001_init.sql"),
    ),
    (
        include_str!("storage/migrations/0002_e2ee.sql"),
        include_str!("storage/migrations/0002_e2ee.sql"),
    ),
    (
        include_str!("storage/migrations/0003_key_backup.sql"),
        include_str!("storage/migrations/0003_key_backup.sql"),
    ),
    (
        include_str!("storage/migrations/0004_events_state_index.sql"),
        include_str!("storage/migrations/0004_events_state_index.sql"),
    ),
    (
        include_str!("storage/migrations/0005_stream_floor.sql"),
        include_str!("storage/migrations/0005_stream_floor.sql"),
    ),
    (
        include_str!("storage/migrations/0006_event_txns_index.sql"),
        include_str!("storage/migrations/0006_event_txns_index.sql"),
    ),
    (
        include_str!("storage/migrations/0007_uia_request.sql"),
        include_str!("storage/migrations/0007_uia_request.sql"),
    ),
    (
        include_str!("storage/migrations/0008_sync_indexes.sql"),
        include_str!("storage/migrations/0008_sync_indexes.sql"),
    ),
    (
        include_str!("storage/migrations/0009_member_summary.sqlite.sql"),
        include_str!("storage/migrations/0009_member_summary.postgres.sql"),
    ),
    (
        include_str!("storage/migrations/0010_media.sql"),
        include_str!("storage/migrations/0010_media.sql"),
    ),
    (
        include_str!("storage/migrations/0011_url_previews.sql"),
        include_str!("storage/migrations/0011_url_previews.sql"),
    ),
    (
        include_str!("storage/migrations/0012_relations.sql"),
        include_str!("storage/migrations/0012_relations.sql"),
    ),
    (
        include_str!("storage/migrations/0013_room_directory.sql"),
        include_str!("storage/migrations/0013_room_directory.sql"),
    ),
    (
        include_str!("storage/migrations/0014_reports_openid.sql"),
        include_str!("storage/migrations/0014_reports_openid.sql"),
    ),
    (
        include_str!("storage/migrations/0015_push.sql"),
        include_str!("storage/migrations/0015_push.sql"),
    ),
    (
        include_str!("storage/migrations/0016_search.sqlite.sql"),
        include_str!("storage/migrations/0016_search.postgres.sql"),
    ),
    (
        include_str!("storage/migrations/0017_login_tokens.sql"),
        include_str!("storage/migrations/0017_login_tokens.sql"),
    ),
    (
        include_str!("storage/migrations/0018_origin_ts.sqlite.sql"),
        include_str!("storage/migrations/0018_origin_ts.postgres.sql"),
    ),
    (
        include_str!("storage/migrations/0019_pushers.sql"),
        include_str!("storage/migrations/0019_pushers.sql"),
    ),
    (
        include_str!("storage/migrations/0020_account_data_type.sql"),
        include_str!("storage/migrations/0020_account_data_type.sql"),
    ),
    (
        include_str!("storage/migrations/0021_account_moderation.sql"),
        include_str!("storage/migrations/0021_account_moderation.sql"),
    ),
    (
        include_str!("storage/migrations/0022_guests.sql"),
        include_str!("storage/migrations/0022_guests.sql"),
    ),
    (
        include_str!("storage/migrations/0023_sliding_sync.sql"),
        include_str!("storage/migrations/0023_sliding_sync.sql"),
    ),
];

/// Attempts at creating the version table when nodes start together.
const CREATE_TRIES: u32 = 3;

/// Applies missing migrations; refuses a database newer than this binary.
pub async fn migrate(db: &dyn Database) -> Result<usize> {
    // When another node creates the table at the same moment, PostgreSQL fails with a
    // unique violation or "type already exists"; a second try sees the table.
    let mut tries = 0;
    loop {
        tries += 1;
        match db
            .execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version BIGINT PRIMARY KEY)",
                vec![],
            )
            .await
        {
            Ok(_) | Err(DbError::UniqueViolation) => break,
            Err(_) if tries < CREATE_TRIES => continue,
            Err(e) => return Err(e.into()),
        }
    }
    let rows = db
        .query("SELECT MAX(version) FROM schema_version", vec![])
        .await?;
    let current = rows
        .first()
        .map(|r| r.opt_int(0))
        .transpose()?
        .flatten()
        .unwrap_or(0) as usize;
    if current > MIGRATIONS.len() {
        return Err(Error::Internal(format!(
            "database schema version {current} is newer than this binary knows ({}); refusing to start",
            MIGRATIONS.len()
        )));
    }
    for (i, (sqlite, postgres)) in MIGRATIONS.iter().enumerate().skip(current) {
        let script = match db.engine() {
            crate::ports::Engine::Sqlite => sqlite,
            crate::ports::Engine::Postgres => postgres,
        };
        let version = (i + 1) as i64;
        // The version row goes first: a second node migrating at the same moment blocks on
        // it, then fails with a unique violation once the first commits, and moves on.
        let full = format!("INSERT INTO schema_version (version) VALUES ({version});\n{script}");
        match db.execute_script(&full).await {
            Ok(()) | Err(DbError::UniqueViolation) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(MIGRATIONS.len() - current)
}

/// Runs a query expected to return at most one row.
pub async fn query_opt(
    db: &dyn Database,
    sql: &str,
    params: Vec<Value>,
) -> Result<Option<crate::ports::Row>, DbError> {
    Ok(db.query(sql, params).await?.into_iter().next())
}

/// One statement per size, for work done in chunks (rows per insert, rooms per query):
/// a variable amount of it reaches the engines' statement caches as a few statements.
pub(crate) struct SizedStatements {
    /// Largest first; the last is 1.
    sizes: &'static [usize],
    sql: Vec<String>,
}

impl SizedStatements {
    /// `build(n)` writes the statement for `n` items, for each of `sizes` (largest first).
    pub(crate) fn new(sizes: &'static [usize], build: impl Fn(usize) -> String) -> Self {
        Self {
            sizes,
            sql: sizes.iter().map(|n| build(*n)).collect(),
        }
    }

    /// The largest statement for at most `n` (≥ 1) items: how many it takes, and its SQL.
    pub(crate) fn at_most(&self, n: usize) -> (usize, &str) {
        let i = self
            .sizes
            .iter()
            .position(|size| *size <= n)
            .unwrap_or(self.sizes.len().saturating_sub(1));
        match (self.sizes.get(i), self.sql.get(i)) {
            (Some(size), Some(sql)) => ((*size).min(n.max(1)), sql.as_str()),
            // No sizes at all (never so for the constants used): all at once, and an empty
            // statement the engine refuses, so a caller's loop still ends.
            _ => (n.max(1), ""),
        }
    }
}
