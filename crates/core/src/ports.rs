//! The small traits a host implements (design brief, "Ports").

use std::time::Duration;

use async_trait::async_trait;

/// A SQL value in the portable subset both engines understand.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Int(v as i64)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_owned())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Text(v.clone())
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// One result row, columns in `SELECT` order.
#[derive(Clone, Debug, Default)]
pub struct Row(pub Vec<Value>);

impl Row {
    pub fn int(&self, i: usize) -> Result<i64, DbError> {
        match self.0.get(i) {
            Some(Value::Int(v)) => Ok(*v),
            other => Err(DbError::Decode(format!(
                "column {i}: expected integer, got {other:?}"
            ))),
        }
    }
    pub fn opt_int(&self, i: usize) -> Result<Option<i64>, DbError> {
        match self.0.get(i) {
            Some(Value::Null) => Ok(None),
            _ => self.int(i).map(Some),
        }
    }
    pub fn text(&self, i: usize) -> Result<String, DbError> {
        match self.0.get(i) {
            Some(Value::Text(v)) => Ok(v.clone()),
            other => Err(DbError::Decode(format!(
                "column {i}: expected text, got {other:?}"
            ))),
        }
    }
    pub fn opt_text(&self, i: usize) -> Result<Option<String>, DbError> {
        match self.0.get(i) {
            Some(Value::Null) => Ok(None),
            _ => self.text(i).map(Some),
        }
    }
}

/// A statement with `$1`-style placeholders; both engines accept them.
#[derive(Clone, Debug)]
pub struct Statement {
    pub sql: &'static str,
    pub params: Vec<Value>,
    /// If set and the statement changes no row, the whole batch rolls back with
    /// [`DbError::Conflict`]: a compare-and-swap that works on every engine.
    pub expect_change: bool,
}

impl Statement {
    pub fn new(sql: &'static str, params: Vec<Value>) -> Self {
        Self {
            sql,
            params,
            expect_change: false,
        }
    }
    pub fn expecting_change(mut self) -> Self {
        self.expect_change = true;
        self
    }
}

/// What a statement or batch can fail with. A failed [`Database::batch`] committed nothing,
/// except with [`DbError::CommitUnknown`].
#[derive(Clone, Debug, thiserror::Error)]
pub enum DbError {
    #[error("unique constraint violated")]
    UniqueViolation,
    #[error("a guarded statement changed nothing")]
    Conflict,
    /// Another integrity constraint (NOT NULL, CHECK, foreign key) refused a row.
    #[error("constraint violated: {0}")]
    Constraint(String),
    /// A value no engine stores faithfully (text with a NUL character: PostgreSQL refuses
    /// it). Refused before anything ran.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The commit was sent and its outcome is not known (the connection or the disk
    /// failed during it).
    #[error("commit outcome unknown: {0}")]
    CommitUnknown(String),
    #[error("decode: {0}")]
    Decode(String),
    #[error("database: {0}")]
    Other(String),
}

/// Refuses parameters that cannot be stored as given; both engines call it before
/// running anything, so they accept exactly the same values.
pub fn check_storable(params: &[Value]) -> Result<(), DbError> {
    for v in params {
        if let Value::Text(s) = v {
            if s.contains('\0') {
                return Err(DbError::InvalidInput(
                    "text may not contain a NUL character".into(),
                ));
            }
        }
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// The storage port: single statements, and atomic batches.
#[async_trait]
pub trait Database: Send + Sync {
    fn engine(&self) -> Engine;
    async fn query(&self, sql: &str, params: Vec<Value>) -> Result<Vec<Row>, DbError>;
    async fn execute(&self, sql: &str, params: Vec<Value>) -> Result<u64, DbError>;
    /// Runs every statement in one transaction; all or nothing. On any error but
    /// [`DbError::CommitUnknown`], nothing was committed.
    async fn batch(&self, statements: Vec<Statement>) -> Result<(), DbError>;
    /// Runs a whole migration script (several statements) in one transaction.
    async fn execute_script(&self, sql: &str) -> Result<(), DbError>;
}

/// Wall clock, in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> u64;
}

/// Runs work off the requests' path: CPU-heavy jobs (password hashing) off the threads
/// that serve requests, and background tasks that must finish whether or not a request
/// still waits (the commit writer). A host may bound how many jobs run at once: each
/// argon2 hash holds its memory for its duration.
#[async_trait]
pub trait Offload: Send + Sync {
    async fn run(&self, job: Box<dyn FnOnce() + Send>);
    /// Runs `task` to completion in the background; gives it back if it cannot (the host
    /// is shutting down), so the caller can run it itself or give up.
    fn spawn(&self, task: Task) -> Option<Task>;
}

/// A background task, for [`Offload::spawn`].
pub type Task = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Tells waiting `/sync` requests that some stream moved.
#[async_trait]
pub trait Wakeups: Send + Sync {
    /// A ticket to pass to [`Wakeups::wait`]; taken before looking, so no change is missed.
    fn ticket(&self) -> u64;
    fn notify(&self);
    /// Returns when a notification came after `ticket`, or after `timeout`.
    async fn wait(&self, ticket: u64, timeout: Duration);
}

/// A failure of the blob store.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("no such blob")]
    NotFound,
    #[error("blob store: {0}")]
    Other(String),
}

/// Bytes read from the blob store, a chunk at a time.
pub type ByteStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<bytes::Bytes, BlobError>> + Send>>;

/// Where media files live (design brief, "Ports"): a folder, or an S3-compatible bucket.
/// Keys are `/`-separated names the core chooses; a blob, once kept, never changes.
#[async_trait]
pub trait Blobs: Send + Sync {
    /// Starts a blob whose bytes go to a temporary place until [`BlobWriter::keep`].
    async fn create(&self) -> Result<Box<dyn BlobWriter>, BlobError>;
    /// Reads a blob, whole or the byte range `range` (end exclusive, within its size).
    async fn read(
        &self,
        key: &str,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<ByteStream, BlobError>;
    async fn delete(&self, key: &str) -> Result<(), BlobError>;
}

/// A blob being written. Dropped without [`BlobWriter::keep`], it leaves nothing behind.
#[async_trait]
pub trait BlobWriter: Send {
    async fn write(&mut self, chunk: bytes::Bytes) -> Result<(), BlobError>;
    /// Stores what was written under `key`, replacing a blob there (the same content:
    /// keys name contents).
    async fn keep(self: Box<Self>, key: &str) -> Result<(), BlobError>;
}

/// Why a URL could not be fetched (URL previews).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The address (at resolution or after a redirect) or the scheme is not allowed.
    #[error("refused: {0}")]
    Refused(String),
    #[error("larger than allowed")]
    TooLarge,
    #[error("{0}")]
    Failed(String),
}

/// A page fetched for a URL preview.
pub struct Fetched {
    /// Where it was fetched from in the end (after redirects).
    pub url: String,
    pub content_type: Option<String>,
    pub body: bytes::Bytes,
}

/// Fetches URLs for previews (design brief, "no open proxying"): `GET` with a bounded size
/// and time, following a few redirects, each hop's addresses checked with
/// [`crate::outbound::address_allowed`] at resolution, IP literals included.
#[async_trait]
pub trait UrlFetcher: Send + Sync {
    async fn get(&self, url: &str, max_bytes: u64) -> Result<Fetched, FetchError>;
}

/// Why a push gateway did not take a notification.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// It will never be taken as sent: the address is refused by policy, or the gateway
    /// answered a 4xx other than 429. The notification is dropped, the pusher kept.
    #[error("refused: {0}")]
    Refused(String),
    /// Worth trying again later (a network failure, a 5xx or 429, a timeout).
    #[error("{0}")]
    Failed(String),
}

/// Sends notifications to push gateways (spec: Push Gateway API, `POST
/// /_matrix/push/v1/notify`), under the same address policy as other outbound requests
/// ([`crate::outbound::address_allowed`]); redirects are not followed.
#[async_trait]
pub trait PushGateway: Send + Sync {
    /// POSTs `body` (JSON) to `url`; gives the pushkeys the gateway rejected.
    async fn notify(&self, url: &str, body: Vec<u8>) -> Result<Vec<String>, PushError>;
}
