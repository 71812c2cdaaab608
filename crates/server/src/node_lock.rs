//! One serving process per database. Stream positions, room heads and wake-ups live in
//! the process (ARCHITECTURE.md, "Not yet there"), so a second node on the same database
//! would hand out clashing positions; it is refused at start-up instead. The CLI's
//! one-off commands write no stream rows and take no lock.

use std::{fs::File, path::Path, time::Duration};

use anyhow::{bail, Context};
use sqlx::Connection;

/// How long a starting node waits for the lock: a killed predecessor's PostgreSQL
/// session may take a moment to be noticed.
const WAIT: Duration = Duration::from_secs(5);
const RETRY: Duration = Duration::from_millis(200);
/// The advisory lock key (PostgreSQL scopes it to the database): "tessera" in ASCII.
const PG_KEY: i64 = 0x0074_6573_7365_7261;

/// Held for as long as the node serves; dropping it releases the lock.
pub enum NodeLock {
    File {
        _file: File,
    },
    Postgres {
        _session: sqlx::PgConnection,
    },
    /// An in-memory database belongs to its process anyway.
    Memory,
}

const TAKEN: &str = "another Tessera process is serving this database; running several \
                     nodes on one database is not supported yet";

pub async fn acquire(url: &str) -> anyhow::Result<NodeLock> {
    if let Some(rest) = url.strip_prefix("sqlite:") {
        let path = rest.strip_prefix("//").unwrap_or(rest);
        let path = path.split('?').next().unwrap_or_default();
        if path == ":memory:" {
            return Ok(NodeLock::Memory);
        }
        let lock_path = format!("{path}.lock");
        if let Some(parent) = Path::new(&lock_path)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent)?;
        }
        let file = File::create(&lock_path).with_context(|| format!("creating {lock_path}"))?;
        // The kernel drops the lock when the process dies, however it dies.
        return match file.try_lock() {
            Ok(()) => Ok(NodeLock::File { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => bail!("{TAKEN} ({lock_path} is locked)"),
            Err(std::fs::TryLockError::Error(e)) => Err(e).context(format!("locking {lock_path}")),
        };
    }
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .context("connecting to PostgreSQL for the node lock")?;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(PG_KEY)
            .fetch_one(&mut conn)
            .await?;
        if got {
            return Ok(NodeLock::Postgres { _session: conn });
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("{TAKEN}");
        }
        tokio::time::sleep(RETRY).await;
    }
}
