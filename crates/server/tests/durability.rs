//! Durability: `kill -9` the real `tessera` binary while messages are being sent, start it
//! again on the same data, and check that every event the server acknowledged with 200 is
//! in the room exactly once and that its transaction ID still maps to it.
//!
//! Runs on SQLite (in a temporary data folder); set `TESSERA_TEST_POSTGRES_URL` to run it
//! on a fresh PostgreSQL database instead.

use std::{
    collections::HashMap,
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use sqlx::Connection;

const SENDERS: usize = 8;
/// Kill once this many sends were acknowledged...
const KILL_AFTER_ACKS: usize = 300;
/// ...or after this long, provided a few were.
const KILL_AFTER: Duration = Duration::from_secs(2);
const MIN_ACKS: usize = 20;

/// The server process; killed (SIGKILL) and reaped when dropped, so a failing test leaves
/// nothing running. Its log is printed when the test is failing.
struct Server {
    child: Option<Child>,
    log: PathBuf,
    base: String,
}

impl Server {
    fn spawn(data_dir: &Path, port: u16, db_url: Option<&str>, log: PathBuf) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
        // Only the settings below: nothing from the caller's environment or a config file.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("TESSERA_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("TESSERA_LISTEN__CLIENT", format!("127.0.0.1:{port}"))
            .env("TESSERA_DATA_DIR", data_dir)
            .env("TESSERA_REGISTRATION__OPEN", "true")
            .env("TESSERA_REGISTRATION__TOKEN_REQUIRED", "false")
            .env("TESSERA_RATE_LIMITS__ENABLED", "false")
            .env("TESSERA_LOG", "warn");
        if let Some(url) = db_url {
            cmd.env("TESSERA_DATABASE__URL", url);
        }
        let child = cmd
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("create log file"))
            .spawn()
            .expect("spawn tessera");
        Self {
            child: Some(child),
            log,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls `/versions` for up to 30 s; fails early if the process exits.
    async fn wait_ready(&mut self, http: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "tessera exited during start-up ({status}); log:\n{}",
                    self.log_text()
                );
            }
            let url = format!("{}/_matrix/client/versions", self.base);
            if let Ok(res) = http.get(url).send().await {
                if res.status() == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "tessera not ready after 30 s; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL (what `Child::kill` sends on Unix), then reap.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- {} ---\n{}", self.log.display(), self.log_text());
        }
    }
}

/// A fresh PostgreSQL database, dropped (from a thread of its own, as `Drop` cannot await)
/// even when the test fails.
struct PgDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl PgDatabase {
    async fn create(admin_url: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let name = format!("tessera_durability_{}_{nanos}", std::process::id());
        let mut conn = sqlx::PgConnection::connect(admin_url)
            .await
            .expect("connect to postgres");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create database");
        let _ = conn.close().await;
        let base = admin_url
            .rsplit_once('/')
            .map(|(b, _)| b.to_owned())
            .unwrap_or_else(|| admin_url.to_owned());
        Self {
            admin_url: admin_url.to_owned(),
            url: format!("{base}/{name}"),
            name,
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let dropper = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                }
            });
        });
        let _ = dropper.join();
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client")
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = http.request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    let text = res.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn send_url(base: &str, room: &str, txn: &str) -> String {
    format!("{base}/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}")
}

fn message(txn: &str) -> Value {
    json!({ "msgtype": "m.text", "body": txn })
}

#[derive(Default)]
struct Record {
    /// (txn, event_id) answered 200 with an event ID.
    acked: Vec<(String, String)>,
    /// Sent, but no complete answer (the server died): may or may not be stored.
    uncertain: Vec<String>,
    /// Any answer other than 200 while the server was up.
    errors: Vec<(String, u16, String)>,
}

/// Sends messages until the server stops answering.
async fn sender(
    http: reqwest::Client,
    base: String,
    token: String,
    room: String,
    n: usize,
    record: Arc<Mutex<Record>>,
    in_flight: Arc<AtomicUsize>,
) {
    for i in 0.. {
        let txn = format!("s{n}-{i}");
        in_flight.fetch_add(1, Ordering::SeqCst);
        let res = http
            .put(send_url(&base, &room, &txn))
            .bearer_auth(&token)
            .json(&message(&txn))
            .send()
            .await;
        let outcome = match res {
            Ok(res) => {
                let status = res.status().as_u16();
                match res.text().await {
                    Ok(text) => Some((status, text)),
                    Err(_) => None,
                }
            }
            Err(_) => None,
        };
        in_flight.fetch_sub(1, Ordering::SeqCst);
        let mut rec = record.lock().unwrap();
        match outcome {
            Some((200, text)) => {
                let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                match body["event_id"].as_str() {
                    Some(id) => rec.acked.push((txn, id.to_owned())),
                    None => rec.errors.push((txn, 200, text)),
                }
            }
            Some((status, text)) => rec.errors.push((txn, status, text)),
            None => {
                rec.uncertain.push(txn);
                return;
            }
        }
    }
}

/// Pages `/messages` backwards from the newest event to the oldest: every event ID with how
/// often it came back, and the events.
async fn all_events(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    room: &str,
) -> (HashMap<String, usize>, Vec<Value>) {
    let mut counts = HashMap::new();
    let mut events = Vec::new();
    let mut from: Option<String> = None;
    for _ in 0..10_000 {
        let mut req = http
            .get(format!("{base}/_matrix/client/v3/rooms/{room}/messages"))
            .bearer_auth(token)
            .query(&[("dir", "b"), ("limit", "100")]);
        if let Some(f) = &from {
            req = req.query(&[("from", f.as_str())]);
        }
        let res = req.send().await.expect("GET /messages");
        let status = res.status().as_u16();
        let body: Value = res.json().await.expect("/messages JSON");
        assert_eq!(status, 200, "/messages: {body}");
        for ev in body["chunk"].as_array().expect("chunk") {
            let id = ev["event_id"].as_str().expect("event_id").to_owned();
            *counts.entry(id).or_insert(0) += 1;
            events.push(ev.clone());
        }
        match body["end"].as_str() {
            Some(end) => from = Some(end.to_owned()),
            None => return (counts, events),
        }
    }
    panic!("/messages still had an `end` after 10000 pages");
}

/// How many stored `m.room.message` events carry each body (= txn ID).
fn bodies(events: &[Value]) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for ev in events {
        if ev["type"] == "m.room.message" {
            if let Some(b) = ev["content"]["body"].as_str() {
                *out.entry(b.to_owned()).or_insert(0) += 1;
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    // Declared before the servers, so it is dropped after they are killed.
    let pg = match std::env::var("TESSERA_TEST_POSTGRES_URL") {
        Ok(admin) => Some(PgDatabase::create(&admin).await),
        Err(_) => None,
    };
    let db_url = pg.as_ref().map(|p| p.url.as_str());
    let port = free_port();

    // First run: register, create a room, send under load, SIGKILL.
    let mut server = Server::spawn(&data_dir, port, db_url, dir.path().join("run1.log"));
    let base = server.base.clone();
    let http = client();
    server.wait_ready(&http).await;

    let (status, body) = call(
        &http,
        reqwest::Method::POST,
        format!("{base}/_matrix/client/v3/register"),
        None,
        Some(json!({ "username": "u", "password": "pw-pw-pw-pw", "auth": { "type": "m.login.dummy" } })),
    )
    .await;
    assert_eq!(status, 200, "register: {body}");
    let token = body["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned();
    let (status, body) = call(
        &http,
        reqwest::Method::POST,
        format!("{base}/_matrix/client/v3/createRoom"),
        Some(&token),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 200, "createRoom: {body}");
    let room = body["room_id"].as_str().expect("room_id").to_owned();

    let record = Arc::new(Mutex::new(Record::default()));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..SENDERS)
        .map(|n| {
            tokio::spawn(sender(
                http.clone(),
                base.clone(),
                token.clone(),
                room.clone(),
                n,
                record.clone(),
                in_flight.clone(),
            ))
        })
        .collect();
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let acked = record.lock().unwrap().acked.len();
        if acked >= KILL_AFTER_ACKS || (started.elapsed() >= KILL_AFTER && acked >= MIN_ACKS) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "only {acked} sends acknowledged in 120 s"
        );
        assert!(
            !senders.iter().all(|s| s.is_finished()),
            "every sender stopped before the kill"
        );
    }
    let in_flight_at_kill = in_flight.load(Ordering::SeqCst);
    server.kill();
    for s in senders {
        s.await.expect("sender task");
    }
    drop(http);
    let record = std::mem::take(&mut *record.lock().unwrap());
    eprintln!(
        "killed after {:?}: {} acknowledged, {} in flight at the kill, {} without an answer",
        started.elapsed(),
        record.acked.len(),
        in_flight_at_kill,
        record.uncertain.len(),
    );
    assert!(
        record.errors.is_empty(),
        "non-200 answers while the server was up (first 5): {:?}",
        &record.errors[..record.errors.len().min(5)]
    );

    // Second run on the same data, same port.
    let mut server = Server::spawn(&data_dir, port, db_url, dir.path().join("run2.log"));
    let http = client();
    server.wait_ready(&http).await;

    // The access token survived too.
    let (counts, events) = all_events(&http, &base, &token, &room).await;
    let stored = bodies(&events);
    eprintln!(
        "after restart: {} of the {} unanswered sends were stored",
        record
            .uncertain
            .iter()
            .filter(|t| stored.contains_key(*t))
            .count(),
        record.uncertain.len(),
    );
    let by_id: HashMap<&str, &Value> = events
        .iter()
        .filter_map(|e| Some((e["event_id"].as_str()?, e)))
        .collect();
    let mut missing = Vec::new();
    let mut duplicated = Vec::new();
    let mut wrong = Vec::new();
    for (txn, id) in &record.acked {
        match counts.get(id.as_str()).copied().unwrap_or(0) {
            0 => missing.push((txn, id)),
            1 => {
                let ev = by_id[id.as_str()];
                if ev["type"] != "m.room.message" || ev["content"]["body"] != txn.as_str() {
                    wrong.push((txn, ev.clone()));
                }
            }
            n => duplicated.push((txn, id, n)),
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged events lost after kill -9 (first 10): {:?}",
        missing.len(),
        record.acked.len(),
        &missing[..missing.len().min(10)]
    );
    assert!(
        duplicated.is_empty(),
        "acknowledged events returned more than once: {duplicated:?}"
    );
    assert!(
        wrong.is_empty(),
        "acknowledged event IDs with other content: {wrong:?}"
    );

    // Transaction idempotency survived: the same txn ID gives the same event.
    for (txn, id) in &record.acked {
        let (status, body) = call(
            &http,
            reqwest::Method::PUT,
            send_url(&base, &room, txn),
            Some(&token),
            Some(message(txn)),
        )
        .await;
        assert_eq!(status, 200, "re-send {txn}: {body}");
        assert_eq!(
            body["event_id"].as_str(),
            Some(id.as_str()),
            "re-sending txn {txn} gave another event"
        );
    }
    // Sends cut off by the kill may or may not have been stored; retrying them must not
    // store a second copy either way.
    for txn in &record.uncertain {
        let (status, body) = call(
            &http,
            reqwest::Method::PUT,
            send_url(&base, &room, txn),
            Some(&token),
            Some(message(txn)),
        )
        .await;
        assert_eq!(status, 200, "retry {txn}: {body}");
    }
    let (_, events) = all_events(&http, &base, &token, &room).await;
    let bodies = bodies(&events);
    let twice: Vec<_> = bodies.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "transactions stored more than once: {twice:?}"
    );
    for txn in record.acked.iter().map(|(t, _)| t).chain(&record.uncertain) {
        assert_eq!(bodies.get(txn), Some(&1), "txn {txn} after retries");
    }

    // The server still syncs, and the room is there.
    let (status, body) = call(
        &http,
        reqwest::Method::GET,
        format!("{base}/_matrix/client/v3/sync?timeout=0"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, 200, "/sync after restart: {body}");
    assert!(
        body["rooms"]["join"].get(&room).is_some(),
        "room missing from /sync after restart: {body}"
    );

    drop(server);
    drop(pg);
}
