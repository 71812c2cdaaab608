//! The group commit (`core/src/commit.rs`): commits queued behind a writer go to the
//! database as one transaction; a batch the engine refuses fails alone; a commit whose
//! request is dropped while queued neither blocks nor loses the others; positions are
//! published in order. SQLite, and PostgreSQL with TESSERA_TEST_POSTGRES_URL.

mod common;

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use async_trait::async_trait;
use tessera_core::{
    homeserver::{Audience, Stream},
    ports::{Database, DbError, Engine, Row, Statement, Value},
    Config, Homeserver,
};
use tessera_server::{BlockingOffload, SystemClock, WatchWakeups};

/// Holds the first batch after `armed` is set until the test opens the gate; records the
/// size of every batch.
struct Gated {
    inner: Arc<dyn Database>,
    armed: AtomicBool,
    gate: tokio::sync::Semaphore,
    batches: Mutex<Vec<usize>>,
}

#[async_trait]
impl Database for Gated {
    fn engine(&self) -> Engine {
        self.inner.engine()
    }
    async fn query(&self, sql: &str, params: Vec<Value>) -> Result<Vec<Row>, DbError> {
        self.inner.query(sql, params).await
    }
    async fn execute(&self, sql: &str, params: Vec<Value>) -> Result<u64, DbError> {
        self.inner.execute(sql, params).await
    }
    async fn batch(&self, statements: Vec<Statement>) -> Result<(), DbError> {
        if self.armed.swap(false, Ordering::SeqCst) {
            self.gate.acquire().await.expect("gate").forget();
        }
        self.batches.lock().unwrap().push(statements.len());
        self.inner.batch(statements).await
    }
    async fn execute_script(&self, sql: &str) -> Result<(), DbError> {
        self.inner.execute_script(sql).await
    }
}

fn presence(user: &str, state: Option<&str>, pos: i64) -> Vec<Statement> {
    vec![Statement::new(
        "INSERT INTO presence (user_id, state, status_msg, last_active_ts, stream_pos) VALUES ($1, $2, $3, $4, $5)",
        vec![user.into(), state.into(), "".into(), Value::Int(0), Value::Int(pos)],
    )]
}

async fn homeserver(url: &str) -> (Arc<Homeserver>, Arc<Gated>) {
    let inner = tessera_server::db::connect(url, Default::default())
        .await
        .expect("database");
    let db = Arc::new(Gated {
        inner,
        armed: AtomicBool::new(false),
        gate: tokio::sync::Semaphore::new(0),
        batches: Mutex::new(Vec::new()),
    });
    let hs = Homeserver::new(
        Config::new(ruma::server_name!("localhost").to_owned()),
        db.clone(),
        Arc::new(SystemClock),
        Arc::new(WatchWakeups::new()),
        Arc::new(BlockingOffload::new(1)),
    )
    .await
    .expect("homeserver");
    (hs.into_shared(), db)
}

/// Commits `@{name}:localhost`'s presence (`None` state: refused by NOT NULL).
fn spawn_commit(
    hs: &Arc<Homeserver>,
    name: String,
    state: Option<&'static str>,
) -> tokio::task::JoinHandle<tessera_core::Result<i64>> {
    let hs = hs.clone();
    tokio::spawn(async move {
        hs.commit(&[Stream::Presence], Audience::Everyone, |pos| {
            presence(&format!("@{name}:localhost"), state, pos)
        })
        .await
    })
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting until {what}");
}

async fn rows(hs: &Homeserver) -> i64 {
    hs.db
        .query("SELECT COUNT(*) FROM presence", vec![])
        .await
        .expect("count")[0]
        .int(0)
        .expect("int")
}

async fn check(url: &str) {
    let (hs, db) = homeserver(url).await;
    db.batches.lock().unwrap().clear();

    // A writer is held in its commit while 20 more commits queue behind it.
    db.armed.store(true, Ordering::SeqCst);
    let leader = spawn_commit(&hs, "leader".into(), Some("online"));
    until("the leader writes", || !db.armed.load(Ordering::SeqCst)).await;
    let queued: Vec<_> = (0..20)
        .map(|i| {
            // One refused by the engine, one whose request goes away while it waits.
            let state = if i == 10 { None } else { Some("online") };
            spawn_commit(&hs, format!("u{i}"), state)
        })
        .collect();
    until("20 commits queue", || hs.queued_commits() == 20).await;
    queued[15].abort();
    db.gate.add_permits(1);

    let first = leader.await.expect("task").expect("the leader commits");
    let mut positions = vec![first];
    for (i, task) in queued.into_iter().enumerate() {
        match (i, task.await) {
            (15, Err(e)) => assert!(e.is_cancelled()),
            (10, Ok(r)) => assert!(r.is_err(), "the refused batch fails: {r:?}"),
            (_, Ok(r)) => positions.push(r.expect("a good batch commits")),
            (_, Err(e)) => panic!("task {i}: {e}"),
        }
    }
    // The 20 went as one transaction, which the refused one failed, then in halves until
    // it was alone: two halves per level, five levels for 20 (one by one would be 20).
    let batches = db.batches.lock().unwrap().clone();
    assert_eq!(batches[..2], [1, 20], "{batches:?}");
    assert!(batches.len() <= 2 + 2 * 5, "{batches:?}");
    // The dropped one still committed (its batch was queued): 20 rows of 21 commits.
    assert_eq!(rows(&hs).await, 20);
    let mut unique = positions.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), positions.len(), "a position handed out twice");
    // Everything settled: the last good commit is published, and the next one follows.
    let last = *unique.last().expect("positions");
    until("the last commit is published", || hs.current_pos() >= last).await;
    let next = spawn_commit(&hs, "after".into(), Some("online"))
        .await
        .expect("task")
        .expect("a commit after them");
    assert!(next > last);
    assert_eq!(hs.current_pos(), next);

    // Without a refused batch, a queue of commits costs one transaction.
    db.batches.lock().unwrap().clear();
    db.armed.store(true, Ordering::SeqCst);
    let leader = spawn_commit(&hs, "leader2".into(), Some("online"));
    until("the leader writes", || !db.armed.load(Ordering::SeqCst)).await;
    let queued: Vec<_> = (0..10)
        .map(|i| spawn_commit(&hs, format!("v{i}"), Some("online")))
        .collect();
    until("10 commits queue", || hs.queued_commits() == 10).await;
    db.gate.add_permits(1);
    leader.await.expect("task").expect("commit");
    for task in queued {
        task.await.expect("task").expect("commit");
    }
    assert_eq!(*db.batches.lock().unwrap(), [1, 10]);
    assert_eq!(rows(&hs).await, 21 + 1 + 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_commits_share_a_transaction_and_fail_alone() {
    common::on_both_engines("group", |url| async move { check(&url).await }).await;
}
