//! Starts a server for one test, on its own database.

use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::{json, Value};
use sqlx::Connection;
use tessera_server::{config::Config, RunningServer};

pub struct TestServer {
    pub url: String,
    pub server: Option<RunningServer>,
    pg_db: Option<(String, String)>,
    _dir: tempfile::TempDir,
    pub http: reqwest::Client,
    pub config: Config,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub struct Options {
    pub registration_open: bool,
    pub rate_limits: bool,
    /// Any other setting, applied last.
    pub configure: fn(&mut Config),
}

impl Default for Options {
    fn default() -> Self {
        Self {
            registration_open: true,
            rate_limits: false,
            configure: |_| {},
        }
    }
}

pub async fn start() -> TestServer {
    start_with(Options::default()).await
}

/// A database of its own for one test, dropped by [`TestDb::drop_db`].
pub struct TestDb {
    pub config: Config,
    pg_db: Option<(String, String)>,
    dir: tempfile::TempDir,
}

impl TestDb {
    pub async fn drop_db(self) {
        drop_pg(self.pg_db).await;
    }
}

async fn drop_pg(pg_db: Option<(String, String)>) {
    if let Some((base, name)) = pg_db {
        if let Ok(mut conn) = sqlx::PgConnection::connect(&base).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut conn)
            .await;
        }
    }
}

pub async fn start_with(opts: Options) -> TestServer {
    start_configured(opts, |_| {}).await
}

/// [`start_with`], with a last change to the configuration that may capture values.
pub async fn start_configured(opts: Options, f: impl FnOnce(&mut Config)) -> TestServer {
    let TestDb {
        mut config,
        pg_db,
        dir,
    } = test_db(opts).await;
    f(&mut config);
    let server = tessera_server::start(config.clone())
        .await
        .expect("server starts");
    TestServer {
        url: format!("http://{}", server.addr),
        server: Some(server),
        pg_db,
        _dir: dir,
        http: reqwest::Client::new(),
        config,
    }
}

/// Counts what the server asks of its database: queries, and statements run alone or
/// in batches.
#[derive(Default)]
pub struct Statements {
    pub count: AtomicU32,
    /// While set, the SQL of each statement is kept in `log`.
    pub logging: std::sync::atomic::AtomicBool,
    pub log: std::sync::Mutex<Vec<String>>,
}

impl Statements {
    fn seen(&self, sql: &str) {
        self.count.fetch_add(1, Ordering::SeqCst);
        if self.logging.load(Ordering::SeqCst) {
            let sql: Vec<&str> = sql.split_whitespace().collect();
            self.log.lock().expect("log").push(sql.join(" "));
        }
    }

    /// Runs `f` and returns how many statements ran meanwhile, and their SQL.
    pub async fn during<T>(
        &self,
        f: impl std::future::Future<Output = T>,
    ) -> (u32, Vec<String>, T) {
        self.log.lock().expect("log").clear();
        self.logging.store(true, Ordering::SeqCst);
        let before = self.count.load(Ordering::SeqCst);
        let out = f.await;
        let n = self.count.load(Ordering::SeqCst) - before;
        self.logging.store(false, Ordering::SeqCst);
        (n, std::mem::take(&mut *self.log.lock().expect("log")), out)
    }
}

struct Counted {
    inner: std::sync::Arc<dyn tessera_core::ports::Database>,
    statements: std::sync::Arc<Statements>,
}

#[async_trait::async_trait]
impl tessera_core::ports::Database for Counted {
    fn engine(&self) -> tessera_core::ports::Engine {
        self.inner.engine()
    }
    async fn query(
        &self,
        sql: &str,
        params: Vec<tessera_core::ports::Value>,
    ) -> Result<Vec<tessera_core::ports::Row>, tessera_core::ports::DbError> {
        self.statements.seen(sql);
        self.inner.query(sql, params).await
    }
    async fn execute(
        &self,
        sql: &str,
        params: Vec<tessera_core::ports::Value>,
    ) -> Result<u64, tessera_core::ports::DbError> {
        self.statements.seen(sql);
        self.inner.execute(sql, params).await
    }
    async fn batch(
        &self,
        statements: Vec<tessera_core::ports::Statement>,
    ) -> Result<(), tessera_core::ports::DbError> {
        for st in &statements {
            self.statements.seen(st.sql);
        }
        self.inner.batch(statements).await
    }
    async fn execute_script(&self, sql: &str) -> Result<(), tessera_core::ports::DbError> {
        self.inner.execute_script(sql).await
    }
}

/// A server whose database statements are counted.
pub async fn start_counted(opts: Options) -> (TestServer, std::sync::Arc<Statements>) {
    let TestDb { config, pg_db, dir } = test_db(opts).await;
    let statements = std::sync::Arc::new(Statements::default());
    let counter = statements.clone();
    let server = tessera_server::start_on(config.clone(), move |inner| {
        std::sync::Arc::new(Counted {
            inner,
            statements: counter,
        })
    })
    .await
    .expect("server starts");
    let server = TestServer {
        url: format!("http://{}", server.addr),
        server: Some(server),
        pg_db,
        _dir: dir,
        http: reqwest::Client::new(),
        config,
    };
    (server, statements)
}

/// A configuration on a fresh database: SQLite in a temp folder, or a new PostgreSQL
/// database when `TESSERA_TEST_POSTGRES_URL` is set.
pub async fn test_db(opts: Options) -> TestDb {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::default();
    config.listen.client = "127.0.0.1:0".into();
    config.data_dir = dir.path().to_owned();
    config.registration.open = opts.registration_open;
    config.registration.token_required = false;
    config.rate_limits.enabled = opts.rate_limits;
    config.rate_limits.per_second = 1.0;
    config.rate_limits.burst = 5;
    (opts.configure)(&mut config);
    let mut pg_db = None;
    if let Ok(base) = std::env::var("TESSERA_TEST_POSTGRES_URL") {
        let name = format!(
            "tessera_test_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let mut conn = sqlx::PgConnection::connect(&base)
            .await
            .expect("connect to postgres");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create database");
        let base_no_db = base
            .rsplit_once('/')
            .map(|(b, _)| b.to_owned())
            .unwrap_or(base.clone());
        config.database.url = Some(format!("{base_no_db}/{name}"));
        pg_db = Some((base, name));
    }
    TestDb { config, pg_db, dir }
}

impl TestServer {
    /// Stops the server and drops its database.
    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
        drop_pg(self.pg_db.take()).await;
    }

    /// Stops the server and starts it again on the same database and address, as after
    /// an operator's restart.
    pub async fn restart(&mut self) {
        let old = self.server.take().expect("running");
        self.config.listen.client = old.addr.to_string();
        old.shutdown().await;
        self.server = Some(
            tessera_server::start(self.config.clone())
                .await
                .expect("server restarts"),
        );
    }

    pub fn hs(&self) -> &tessera_server::Homeserver {
        &self.server.as_ref().expect("running").hs
    }

    /// Raw request; returns status and JSON body (Null when not JSON).
    pub async fn req(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut r = self.http.request(method, format!("{}{}", self.url, path));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let res = r.send().await.expect("request");
        let status = res.status().as_u16();
        let text = res.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Raw request with a raw body; returns status, headers and the JSON body (Null when
    /// not JSON). Panics if the server drops the connection without an answer.
    pub async fn req_raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut r = self
            .http
            .request(method.clone(), format!("{}{}", self.url, path));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.header("Content-Type", "application/json").body(b);
        }
        let res = r
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: no answer: {e}"));
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let text = res.text().await.unwrap_or_default();
        (
            status,
            headers,
            serde_json::from_str(&text).unwrap_or(Value::Null),
        )
    }

    /// A request that must succeed; returns the body.
    pub async fn ok(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> Value {
        let (status, body) = self.req(method, path, Some(token), body).await;
        assert_eq!(status, 200, "{method} {path}: {body}");
        body
    }

    /// `createRoom`; returns the room ID.
    pub async fn create_room(&self, token: &str, body: Value) -> String {
        let body = self
            .ok("POST", "/_matrix/client/v3/createRoom", token, Some(body))
            .await;
        body["room_id"].as_str().expect("room_id").to_owned()
    }

    /// Joins, leaves, forgets…: `POST /rooms/{room}/{action}` with an empty body.
    pub async fn membership(&self, token: &str, room: &str, action: &str) {
        self.ok(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room}/{action}"),
            token,
            Some(json!({})),
        )
        .await;
    }

    /// Sends an `m.text` message; returns its event ID.
    pub async fn send_text(&self, token: &str, room: &str, txn: &str, text: &str) -> String {
        let body = self
            .ok(
                "PUT",
                &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}"),
                token,
                Some(json!({ "msgtype": "m.text", "body": text })),
            )
            .await;
        body["event_id"].as_str().expect("event_id").to_owned()
    }

    /// The message bodies `/messages` shows the user, newest first (up to 50).
    pub async fn message_bodies(&self, token: &str, room: &str) -> Vec<String> {
        let body = self
            .ok(
                "GET",
                &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50"),
                token,
                None,
            )
            .await;
        body["chunk"]
            .as_array()
            .expect("chunk")
            .iter()
            .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
            .collect()
    }

    /// Registers with `m.login.dummy`; returns (user_id, access_token).
    pub async fn register(&self, name: &str) -> (String, String) {
        let (status, body) = self
            .req(
                "POST",
                "/_matrix/client/v3/register",
                None,
                Some(json!({ "username": name, "password": "correct horse battery", "auth": { "type": "m.login.dummy" } })),
            )
            .await;
        assert_eq!(status, 200, "register {name}: {body}");
        (
            body["user_id"].as_str().unwrap().to_owned(),
            body["access_token"].as_str().unwrap().to_owned(),
        )
    }

    /// Logs in with the password `register` uses; returns the access token.
    pub async fn login(&self, name: &str) -> String {
        let (status, body) = self
            .req(
                "POST",
                "/_matrix/client/v3/login",
                None,
                Some(json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": name }, "password": "correct horse battery" })),
            )
            .await;
        assert_eq!(status, 200, "login {name}: {body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    pub async fn sdk_client(&self, name: &str) -> matrix_sdk::Client {
        let client = matrix_sdk::Client::builder()
            .homeserver_url(&self.url)
            .build()
            .await
            .expect("client");
        client
            .matrix_auth()
            .login_username(name, "correct horse battery")
            .send()
            .await
            .expect("login");
        client
    }
}

/// Percent-encodes everything but unreserved characters (for query values and path parts).
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `GET /sync?{query}` as `token`, which must succeed.
pub async fn sync(server: &TestServer, token: &str, query: &str) -> Value {
    server
        .ok(
            "GET",
            &format!("/_matrix/client/v3/sync?{query}"),
            token,
            None,
        )
        .await
}

/// A sync response's `next_batch`.
pub fn next_batch(body: &Value) -> String {
    body["next_batch"].as_str().expect("next_batch").to_owned()
}
