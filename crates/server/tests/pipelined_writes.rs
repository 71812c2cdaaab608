//! One room's writes queue behind each other (`core/src/rooms/tip.rs`): while one event
//! waits for its commit, the next ones are planned on the head it leaves and share its
//! transaction. When one of them is refused, those planned behind it are not stored on a
//! missing prev event: they are planned again and land, and the room stays one chain.
//! SQLite, and PostgreSQL with TESSERA_TEST_POSTGRES_URL.

mod common;

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use async_trait::async_trait;
use ruma::{
    events::{StateEventType, TimelineEventType},
    user_id, OwnedEventId, RoomId,
};
use serde_json::json;
use tessera_core::{
    ports::{Database, DbError, Engine, Row, Statement, Value},
    rooms::{create::CreateRoom, send::NewEvent, write::Txn},
    Config, Homeserver,
};
use tessera_server::{BlockingOffload, SystemClock, WatchWakeups};

const POISON: &str = "refused by the engine";

/// Holds the first batch after `armed` is set until the gate opens; refuses any batch
/// that stores an event whose JSON holds [`POISON`]; records each batch's statements.
struct Faulty {
    inner: Arc<dyn Database>,
    armed: AtomicBool,
    gate: tokio::sync::Semaphore,
    batches: Mutex<Vec<usize>>,
    /// The next batch commits, then reports its outcome as unknown.
    unknown: AtomicBool,
}

#[async_trait]
impl Database for Faulty {
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
        let poisoned = statements.iter().any(|s| {
            s.sql.starts_with("INSERT INTO events")
                && s.params
                    .iter()
                    .any(|p| matches!(p, Value::Text(t) if t.contains(POISON)))
        });
        if poisoned {
            return Err(DbError::Constraint("poisoned".into()));
        }
        self.inner.batch(statements).await?;
        if self.unknown.swap(false, Ordering::SeqCst) {
            return Err(DbError::CommitUnknown("the connection went".into()));
        }
        Ok(())
    }
    async fn execute_script(&self, sql: &str) -> Result<(), DbError> {
        self.inner.execute_script(sql).await
    }
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

fn send(
    hs: &Arc<Homeserver>,
    room: &RoomId,
    body: String,
) -> tokio::task::JoinHandle<tessera_core::Result<OwnedEventId>> {
    send_txn(hs, room, body, None)
}

/// Sends as alice's device `D`, in client transaction `txn` if given.
fn send_txn(
    hs: &Arc<Homeserver>,
    room: &RoomId,
    body: String,
    txn: Option<&'static str>,
) -> tokio::task::JoinHandle<tessera_core::Result<OwnedEventId>> {
    let hs = hs.clone();
    let room = room.to_owned();
    tokio::spawn(async move {
        let content = json!({ "msgtype": "m.text", "body": body });
        let txn = txn.map(|txn_id| Txn {
            user_id: "@alice:localhost",
            device_id: "D",
            scope: format!("send:{room}"),
            txn_id,
        });
        hs.send_event(
            &room,
            user_id!("@alice:localhost"),
            NewEvent::message(TimelineEventType::RoomMessage, content),
            txn,
        )
        .await
    })
}

/// Every stored event of the room, with its `prev_events`, in stream order.
async fn chain(hs: &Homeserver, room: &RoomId) -> Vec<(String, Vec<String>, String)> {
    let rows = hs
        .db
        .query(
            "SELECT event_id, json FROM events WHERE room_id = $1 ORDER BY stream_pos",
            vec![room.as_str().into()],
        )
        .await
        .expect("events");
    rows.iter()
        .map(|r| {
            let json: serde_json::Value =
                serde_json::from_str(&r.text(1).expect("json")).expect("json");
            let prev = json["prev_events"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            let body = json["content"]["body"].as_str().unwrap_or("").to_owned();
            (r.text(0).expect("id"), prev, body)
        })
        .collect()
}

async fn check(url: &str) {
    let inner = tessera_server::db::connect(url, Default::default())
        .await
        .expect("database");
    let db = Arc::new(Faulty {
        inner,
        armed: AtomicBool::new(false),
        gate: tokio::sync::Semaphore::new(0),
        batches: Mutex::new(Vec::new()),
        unknown: AtomicBool::new(false),
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
    let room = hs
        .create_room(user_id!("@alice:localhost"), CreateRoom::default())
        .await
        .expect("room");

    // The first message is held in its commit; ten more are planned behind it meanwhile,
    // the fifth of which the engine will refuse.
    db.batches.lock().unwrap().clear();
    db.armed.store(true, Ordering::SeqCst);
    let leader = send(&hs, &room, "leader".into());
    until("the leader writes", || !db.armed.load(Ordering::SeqCst)).await;
    let mut queued = Vec::new();
    for i in 0..10 {
        let body = if i == 4 {
            format!("m{i} {POISON}")
        } else {
            format!("m{i}")
        };
        // m1 in a client transaction, which its retry below repeats.
        let txn = (i == 1).then_some("t1");
        queued.push(send_txn(&hs, &room, body, txn));
        // Queued one after another while the room's first write has not landed.
        until("the message queues", || hs.queued_commits() == i + 1).await;
    }
    // The client retries m1's transaction while m1 is queued: no second event.
    let retry = send_txn(&hs, &room, "m1".into(), Some("t1"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    // A state event is not queued behind others: it waits for them to land.
    let topic = {
        let (hs, room) = (hs.clone(), room.clone());
        tokio::spawn(async move {
            let content = json!({ "topic": "after the queue" });
            hs.send_event(
                &room,
                user_id!("@alice:localhost"),
                NewEvent::state(StateEventType::RoomTopic, "", content),
                None,
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(hs.queued_commits(), 10, "the retry or the topic was queued");
    db.gate.add_permits(1);
    leader.await.expect("task").expect("the leader lands");
    let mut landed = Vec::new();
    for (i, task) in queued.into_iter().enumerate() {
        let r = task.await.expect("task");
        if i == 4 {
            assert!(r.is_err(), "the refused one fails: {r:?}");
        } else {
            landed.push(r.unwrap_or_else(|e| panic!("m{i} lands: {e}")));
        }
    }
    let retried = retry.await.expect("task").expect("the retry is answered");
    let topic = topic.await.expect("task").expect("the topic lands");
    let current = hs
        .db
        .query(
            "SELECT event_id FROM current_state WHERE room_id = $1 AND type = 'm.room.topic'",
            vec![room.as_str().into()],
        )
        .await
        .expect("current state");
    assert_eq!(current[0].text(0).expect("id"), topic.as_str());
    assert_eq!(retried, landed[1], "the retry answers m1's event");
    let batches = db.batches.lock().unwrap().clone();
    // The ten queued went as one transaction (m1's transaction ID is one row more).
    assert_eq!(batches.get(1), Some(&(10 * batches[0] + 1)), "{batches:?}");

    // One chain: every event's prev events are stored and come before it, each event
    // follows the one before, and one forward extremity is left.
    let events = chain(&hs, &room).await;
    let mut seen = HashSet::new();
    for (i, (id, prev, _)) in events.iter().enumerate() {
        if i > 0 {
            assert_eq!(prev, &vec![events[i - 1].0.clone()], "{id} forks");
        }
        assert!(
            prev.iter().all(|p| seen.contains(p)),
            "{id} has a missing prev event"
        );
        seen.insert(id.clone());
    }
    let bodies: Vec<&str> = events.iter().map(|(_, _, b)| b.as_str()).collect();
    assert!(!bodies.iter().any(|b| b.contains(POISON)));
    let mut sent: Vec<&str> = bodies
        .iter()
        .copied()
        .filter(|b| b.starts_with('m') && b.len() == 2)
        .collect();
    // Those queued ahead of the refused one land in order; those behind it after them.
    assert_eq!(sent[..4], ["m0", "m1", "m2", "m3"], "{bodies:?}");
    sent.sort();
    assert_eq!(sent, ["m0", "m1", "m2", "m3", "m5", "m6", "m7", "m8", "m9"]);
    for id in &landed {
        assert!(
            seen.contains(id.as_str()),
            "{id} was answered but is not stored"
        );
    }
    let fe = hs
        .db
        .query(
            "SELECT event_id FROM forward_extremities WHERE room_id = $1",
            vec![room.as_str().into()],
        )
        .await
        .expect("extremities");
    assert_eq!(fe.len(), 1);
    assert_eq!(
        fe[0].text(0).expect("id"),
        events.last().expect("events").0.as_str()
    );

    // A transaction that committed but whose outcome the engine could not tell: the
    // writes in it fail to their clients, and the room goes on from what the database holds.
    db.armed.store(true, Ordering::SeqCst);
    let leader = send(&hs, &room, "leader 2".into());
    until("the leader writes", || !db.armed.load(Ordering::SeqCst)).await;
    let mut queued = Vec::new();
    for i in 0..5 {
        queued.push(send(&hs, &room, format!("u{i}")));
        until("the message queues", || hs.queued_commits() == i + 1).await;
    }
    db.unknown.store(true, Ordering::SeqCst);
    db.gate.add_permits(1);
    let _ = leader.await.expect("task");
    for task in queued {
        let _ = task.await.expect("task");
    }
    let events = chain(&hs, &room).await;
    for (i, (id, prev, _)) in events.iter().enumerate().skip(1) {
        assert_eq!(prev, &vec![events[i - 1].0.clone()], "{id} forks");
    }

    // The room goes on from there.
    let next = send(&hs, &room, "after".into())
        .await
        .expect("task")
        .expect("a send after them");
    let events = chain(&hs, &room).await;
    let last = events.last().expect("events");
    assert_eq!(last.0, next.as_str());
    assert_eq!(last.1, vec![events[events.len() - 2].0.clone()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_writes_of_one_room_share_a_commit_and_survive_a_refusal() {
    common::on_both_engines("pipelined", |url| async move { check(&url).await }).await;
}
