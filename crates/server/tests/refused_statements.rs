//! A batch the engine refuses (bad input, a constraint) rolled back for sure: the next
//! commit must not reload every stream position from the database (full scans of every
//! stream table), and positions go on without a repeat. Only a commit whose
//! outcome is unknown may cost that. SQLite, and PostgreSQL with TESSERA_TEST_POSTGRES_URL.

mod common;

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use async_trait::async_trait;
use tessera_core::{
    homeserver::{Audience, Stream},
    ports::{Database, DbError, Engine, Row, Statement, Value},
    Config, Error, Homeserver,
};
use tessera_server::{BlockingOffload, SystemClock, WatchWakeups};

/// Passes everything through, counting the queries that reload stream positions.
struct Counting {
    inner: Arc<dyn Database>,
    reloads: AtomicUsize,
}

#[async_trait]
impl Database for Counting {
    fn engine(&self) -> Engine {
        self.inner.engine()
    }
    async fn query(&self, sql: &str, params: Vec<Value>) -> Result<Vec<Row>, DbError> {
        if sql.starts_with("SELECT MAX(stream_pos)") {
            self.reloads.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.query(sql, params).await
    }
    async fn execute(&self, sql: &str, params: Vec<Value>) -> Result<u64, DbError> {
        self.inner.execute(sql, params).await
    }
    async fn batch(&self, statements: Vec<Statement>) -> Result<(), DbError> {
        self.inner.batch(statements).await
    }
    async fn execute_script(&self, sql: &str) -> Result<(), DbError> {
        self.inner.execute_script(sql).await
    }
}

fn presence(user: &str, state: Option<&str>, msg: &str, pos: i64) -> Vec<Statement> {
    vec![Statement::new(
        "INSERT INTO presence (user_id, state, status_msg, last_active_ts, stream_pos) VALUES ($1, $2, $3, $4, $5)",
        vec![user.into(), state.into(), msg.into(), Value::Int(0), Value::Int(pos)],
    )]
}

async fn check(url: &str) {
    let inner = tessera_server::db::connect(url, Default::default())
        .await
        .expect("database");
    let db = Arc::new(Counting {
        inner,
        reloads: AtomicUsize::new(0),
    });
    let hs = Homeserver::new(
        Config::new(ruma::server_name!("localhost").to_owned()),
        db.clone(),
        Arc::new(SystemClock),
        Arc::new(WatchWakeups::new()),
        Arc::new(BlockingOffload::new(1)),
    )
    .await
    .expect("homeserver")
    .into_shared();
    let first = hs
        .commit(&[Stream::Presence], Audience::Everyone, |pos| {
            presence("@a:localhost", Some("online"), "", pos)
        })
        .await
        .expect("a good commit");
    db.reloads.store(0, Ordering::SeqCst);

    // Refused before it runs: text no engine stores.
    let nul = hs
        .commit(&[Stream::Presence], Audience::Everyone, |pos| {
            presence("@b:localhost", Some("online"), "a\0b", pos)
        })
        .await;
    assert!(
        matches!(nul, Err(Error::Db(DbError::InvalidInput(_)))),
        "{nul:?}"
    );
    // Refused inside the transaction: a NOT NULL column left empty, a duplicate key.
    let null = hs
        .commit(&[Stream::Presence], Audience::Everyone, |pos| {
            presence("@c:localhost", None, "", pos)
        })
        .await;
    assert!(matches!(null, Err(Error::Db(_))), "{null:?}");
    let duplicate = hs
        .commit(&[Stream::Presence], Audience::Everyone, |pos| {
            presence("@a:localhost", Some("online"), "", pos)
        })
        .await;
    assert!(
        matches!(duplicate, Err(Error::Db(DbError::UniqueViolation))),
        "{duplicate:?}"
    );

    let next = hs
        .commit(&[Stream::Presence], Audience::Everyone, |pos| {
            presence("@d:localhost", Some("online"), "", pos)
        })
        .await
        .expect("a good commit after the refused ones");
    // The refused batches' positions are skipped, never published nor handed out again.
    assert!(next > first, "no position repeated");
    assert_eq!(
        hs.current_pos(),
        next,
        "the refused positions were never published"
    );
    assert_eq!(
        db.reloads.load(Ordering::SeqCst),
        0,
        "a refused statement made a later commit reload the positions"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_statements_cost_later_commits_nothing() {
    common::on_both_engines("refused", |url| async move { check(&url).await }).await;
}
