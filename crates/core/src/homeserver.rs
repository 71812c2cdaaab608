//! The homeserver's shared state: configuration, ports, signing key, stream position and
//! the per-room write locks.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc, Mutex,
    },
};

use base64::Engine as _;
use ruma::{signatures::Ed25519KeyPair, OwnedRoomId};

use crate::{
    ports::{Clock, Database, Offload, Value, Wakeups},
    storage, Config, Error, Result,
};

/// The kinds of row the global stream orders. Each remembers its last position, so a
/// sync skips reading a kind that has not moved since its `since`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Events,
    Memberships,
    AccountData,
    Receipts,
    Presence,
    ToDevice,
    DeviceLists,
}

const STREAM_KINDS: usize = 7;

/// Each stream's table, in [`Stream`] order; their largest position seeds the heads.
const STREAM_TABLES: [&str; STREAM_KINDS] = [
    "SELECT MAX(stream_pos) FROM events",
    "SELECT MAX(stream_pos) FROM memberships",
    "SELECT MAX(stream_pos) FROM account_data",
    "SELECT MAX(stream_pos) FROM receipts",
    "SELECT MAX(stream_pos) FROM presence",
    "SELECT MAX(stream_pos) FROM to_device",
    "SELECT MAX(stream_pos) FROM device_list_changes",
];

/// Whose syncs a change concerns.
#[derive(Clone, Copy)]
pub enum Audience<'a> {
    Everyone,
    Users(&'a [ruma::OwnedUserId]),
    /// The room's local members (any membership).
    Room(&'a ruma::RoomId),
    /// These local members of a room, as its writer worked them out (so waking them reads
    /// nothing, however big the room).
    Members(&'a Arc<crate::rooms::head::LocalMembers>),
    /// These users and everyone sharing a joined room with them (presence, device lists).
    RoomMatesOf(&'a [ruma::OwnedUserId]),
}

/// An [`Audience`] kept until the change is published.
pub(crate) enum OwnedAudience {
    Everyone,
    Users(Vec<ruma::OwnedUserId>),
    Room(OwnedRoomId),
    Members(Arc<crate::rooms::head::LocalMembers>),
    RoomMatesOf(Vec<ruma::OwnedUserId>),
}

impl Audience<'_> {
    pub(crate) fn to_owned(self) -> OwnedAudience {
        match self {
            Audience::Everyone => OwnedAudience::Everyone,
            Audience::Users(u) => OwnedAudience::Users(u.to_vec()),
            Audience::Room(r) => OwnedAudience::Room(r.to_owned()),
            Audience::Members(m) => OwnedAudience::Members(m.clone()),
            Audience::RoomMatesOf(u) => OwnedAudience::RoomMatesOf(u.to_vec()),
        }
    }
}

impl OwnedAudience {
    pub(crate) fn borrow(&self) -> Audience<'_> {
        match self {
            OwnedAudience::Everyone => Audience::Everyone,
            OwnedAudience::Users(u) => Audience::Users(u),
            OwnedAudience::Room(r) => Audience::Room(r),
            OwnedAudience::Members(m) => Audience::Members(m),
            OwnedAudience::RoomMatesOf(u) => Audience::RoomMatesOf(u),
        }
    }
}

/// Syncs under way up to which a change for room-mates asks about those users only.
const ROOM_MATE_CANDIDATES: usize = 256;

/// Room-mates woken one by one; past this, everyone re-checks instead.
const MAX_ROOM_MATES_WOKEN: usize = 50_000;

pub struct Homeserver {
    pub config: Config,
    pub db: Arc<dyn Database>,
    pub clock: Arc<dyn Clock>,
    pub wakeups: Arc<dyn Wakeups>,
    pub offload: Arc<dyn Offload>,
    pub signing_key: Ed25519KeyPair,
    /// Highest committed position of the global stream; everything at or below it is visible.
    pub(crate) current_pos: AtomicI64,
    /// The last position written in each [`Stream`].
    pub(crate) stream_heads: [AtomicI64; STREAM_KINDS],
    /// Commits waiting for the writer (see `commit.rs`).
    pub(crate) commit_queue: Mutex<crate::commit::CommitQueue>,
    /// Every position up to this one is published or known to hold nothing; signalled
    /// as it moves.
    pub(crate) settled_upto: AtomicI64,
    pub(crate) settled_event: event_listener::Event,
    /// This homeserver, once shared ([`Homeserver::into_shared`]): background tasks
    /// (the commit writer) hold it.
    pub(crate) me: std::sync::Weak<Homeserver>,
    room_locks: Mutex<HashMap<OwnedRoomId, Arc<crate::rooms::tip::RoomGate>>>,
    /// Media files ([`Homeserver::with_blobs`]); the content repository needs it.
    pub(crate) blobs: Option<Arc<dyn crate::ports::Blobs>>,
    /// One-time-key counts and unused fallback key types per device, as every `/sync`
    /// reports them; dropped when they change. See `e2ee/keys.rs`.
    pub(crate) key_counts: crate::e2ee::keys::KeyCountCache,
    /// Users' stored push rules, parsed (`push/evaluate.rs`).
    pub(crate) rulesets: crate::push::evaluate::Rulesets,
    /// Members' unread counts as last counted (`push/counts.rs`).
    pub(crate) unread: crate::push::counts::CountsCache,
    /// Moves whenever a device's keys change, so a count read across a change is not kept.
    pub(crate) key_counts_epoch: std::sync::atomic::AtomicU64,
    /// Sends notifications to push gateways ([`Homeserver::with_push_gateway`]).
    pub(crate) push_gateway: Option<Arc<dyn crate::ports::PushGateway>>,
    /// Who ignores whom (`ignored_users.rs`).
    pub(crate) ignores: crate::ignored_users::IgnoreIndex,
    /// Suspended accounts (`accounts/moderation.rs`).
    pub(crate) suspensions: crate::accounts::moderation::Suspensions,
    /// Users with pushers and what they have to push (`push/delivery.rs`).
    pub(crate) push_queue: crate::push::delivery::PushQueue,
    /// Fetches pages for URL previews ([`Homeserver::with_fetcher`]).
    pub(crate) fetcher: Option<Arc<dyn crate::ports::UrlFetcher>>,
    /// Where thumbnails are made: apart from password hashing, so neither starves the other.
    pub(crate) media_offload: Option<Arc<dyn Offload>>,
    /// One thumbnail made at a time: the original is read into memory only with it held.
    pub(crate) thumbnailing: async_lock::Semaphore,
    /// Held while a server notice finds or creates its room (`server_notices.rs`).
    pub(crate) notice_lock: async_lock::Mutex<()>,
    /// Thumbnails made since start (tests: made once under concurrent requests).
    pub thumbnails_made: std::sync::atomic::AtomicU64,
    /// Uploads streaming now, per user (bounded: each holds a buffer).
    pub(crate) uploading: Arc<Mutex<HashMap<String, usize>>>,
    /// Signalled when an upload to a reserved media ID lands (downloads wait for it).
    pub(crate) media_landed: event_listener::Event,
    /// Per content or thumbnail: stored, recorded or generated once at a time.
    pub(crate) media_locks: Mutex<HashMap<String, Arc<async_lock::Mutex<()>>>>,
    /// Change ticks: a counter, the last tick meant for everyone, and for each user with
    /// a sync under way, how many and the last tick meant for them.
    ticks: std::sync::atomic::AtomicU64,
    global_tick: std::sync::atomic::AtomicU64,
    syncing: Mutex<HashMap<String, (usize, u64)>>,
    pub(crate) typing: crate::sync::typing::Typing,
    pub(crate) state_cache: crate::rooms::state::GroupCache,
    pub(crate) keyring: crate::rooms::receive::KeyRing,
    pub(crate) pdu_cache: crate::cache::BoundedCache<ruma::OwnedEventId, Arc<crate::rooms::Pdu>>,
    /// State events' client JSON; see `rooms/events.rs`.
    pub(crate) state_json:
        crate::cache::BoundedCache<ruma::OwnedEventId, Arc<serde_json::value::RawValue>>,
    pub(crate) place_cache:
        crate::cache::BoundedCache<ruma::OwnedEventId, crate::rooms::write::EventPlace>,
    pub(crate) version_cache: crate::cache::BoundedCache<OwnedRoomId, ruma::RoomVersionId>,
    pub(crate) heads: crate::cache::BoundedCache<OwnedRoomId, Arc<crate::rooms::head::RoomHead>>,
    /// Counts committed redactions; see `rooms/events.rs`.
    pub(crate) redactions: Mutex<u64>,
    /// Offloaded jobs waiting or running.
    offloaded: std::sync::atomic::AtomicUsize,
    pub(crate) token_cache: crate::accounts::session::TokenCache,
    /// Per device, the position of its last queued to-device message, or 0 once nothing
    /// is queued for it: most syncs then skip the acknowledgement query.
    pub(crate) to_device_pending: crate::cache::BoundedCache<(String, String), i64>,
    /// When users last synced (ms), for presence's `last_active_ago`.
    pub(crate) last_active: crate::cache::BoundedCache<ruma::OwnedUserId, i64>,
    /// Users' last committed presence state, so a sync's `set_presence` that changes
    /// nothing skips the database.
    pub(crate) presence_states: crate::cache::BoundedCache<ruma::OwnedUserId, String>,
    /// Sliding sync connections in use (`sync/sliding/connection.rs`).
    pub(crate) sliding: crate::sync::sliding::connection::ConnCache,
}

/// Offloaded jobs (password hashes, each about 12 MiB and tens of milliseconds) allowed
/// to wait or run at once.
const MAX_OFFLOAD_QUEUE: usize = 32;

/// Devices whose to-device queue state is kept in memory.
const TO_DEVICE_DEVICES: usize = 100_000;

/// Users whose last activity is kept in memory.
const LAST_ACTIVE_USERS: usize = 100_000;

/// Room locks kept before unused ones are dropped.
const ROOM_LOCKS_PRUNE_AT: usize = 4096;

/// Devices whose key counts are kept in memory.
const KEY_COUNT_DEVICES: usize = 16_384;

/// Memory for events kept parsed, by [`crate::rooms::Pdu::estimated_size`].
const PDU_CACHE_BYTES: u64 = 4 << 20;
/// Memory for state events' client JSON: a 10,000-member room's members take about 4 MiB.
const STATE_JSON_BYTES: u64 = 4 << 20;
/// Event places and room versions kept in memory (small entries).
const PLACE_CACHE_SIZE: usize = 16_384;
const VERSION_CACHE_SIZE: usize = 10_000;

impl Homeserver {
    pub async fn new(
        config: Config,
        db: Arc<dyn Database>,
        clock: Arc<dyn Clock>,
        wakeups: Arc<dyn Wakeups>,
        offload: Arc<dyn Offload>,
    ) -> Result<Self> {
        storage::migrate(db.as_ref()).await?;
        let signing_key = load_or_create_key(db.as_ref(), clock.now_ms()).await?;
        let (heads, pos) = load_positions(db.as_ref()).await?;
        let rulesets = crate::push::evaluate::Rulesets::new(&config.server_name);
        let ignores = crate::ignored_users::IgnoreIndex::load(db.as_ref()).await?;
        let suspensions = crate::accounts::moderation::Suspensions::load(db.as_ref()).await?;
        Ok(Self {
            config,
            db,
            clock,
            wakeups,
            offload,
            signing_key,
            current_pos: AtomicI64::new(pos),
            stream_heads: heads.map(AtomicI64::new),
            commit_queue: Mutex::new(crate::commit::CommitQueue::new(pos)),
            settled_upto: AtomicI64::new(pos),
            settled_event: event_listener::Event::new(),
            me: std::sync::Weak::new(),
            room_locks: Mutex::new(HashMap::new()),
            blobs: None,
            media_offload: None,
            fetcher: None,
            push_gateway: None,
            push_queue: Default::default(),
            ignores,
            suspensions,
            key_counts: crate::cache::BoundedCache::new(KEY_COUNT_DEVICES),
            rulesets,
            unread: crate::cache::BoundedCache::new(crate::push::counts::CACHED_COUNTS),
            key_counts_epoch: Default::default(),
            thumbnailing: async_lock::Semaphore::new(1),
            notice_lock: async_lock::Mutex::new(()),
            thumbnails_made: Default::default(),
            uploading: Default::default(),
            media_landed: event_listener::Event::new(),
            media_locks: Mutex::new(HashMap::new()),
            ticks: Default::default(),
            global_tick: Default::default(),
            syncing: Mutex::new(HashMap::new()),
            typing: Default::default(),
            state_cache: Default::default(),
            keyring: Default::default(),
            pdu_cache: crate::cache::BoundedCache::by_bytes(PDU_CACHE_BYTES, 2048, |p| {
                p.estimated_size()
            }),
            state_json: crate::cache::BoundedCache::by_bytes(STATE_JSON_BYTES, 512, |j| {
                j.get().len() as u64 + 64
            }),
            place_cache: crate::cache::BoundedCache::new(PLACE_CACHE_SIZE),
            version_cache: crate::cache::BoundedCache::new(VERSION_CACHE_SIZE),
            heads: crate::rooms::head::heads_cache(),
            redactions: Mutex::new(0),
            offloaded: Default::default(),
            last_active: crate::cache::BoundedCache::new(LAST_ACTIVE_USERS),
            presence_states: crate::cache::BoundedCache::new(LAST_ACTIVE_USERS),
            token_cache: Default::default(),
            to_device_pending: crate::cache::BoundedCache::new(TO_DEVICE_DEVICES),
            sliding: crate::cache::BoundedCache::new(
                crate::sync::sliding::connection::CACHED_CONNECTIONS,
            ),
        })
    }

    /// Gives the homeserver its media store (the content repository), and where its
    /// thumbnails are made.
    pub fn with_blobs(
        mut self,
        blobs: Arc<dyn crate::ports::Blobs>,
        offload: Arc<dyn Offload>,
    ) -> Self {
        self.blobs = Some(blobs);
        self.media_offload = Some(offload);
        self
    }

    /// Gives the homeserver its fetcher of URL previews.
    pub fn with_fetcher(mut self, fetcher: Arc<dyn crate::ports::UrlFetcher>) -> Self {
        self.fetcher = Some(fetcher);
        self
    }

    /// Shares the homeserver, so it can run background tasks (see `commit.rs`); the
    /// host serves it this way.
    pub fn into_shared(self) -> Arc<Self> {
        let mut hs = self;
        Arc::new_cyclic(move |me| {
            hs.me = me.clone();
            hs
        })
    }

    pub fn server_name(&self) -> &ruma::ServerName {
        &self.config.server_name
    }

    pub fn now(&self) -> i64 {
        self.clock.now_ms() as i64
    }

    pub fn current_pos(&self) -> i64 {
        self.current_pos.load(Ordering::Acquire)
    }

    /// The last position written in `stream`.
    pub(crate) fn stream_head(&self, stream: Stream) -> i64 {
        self.stream_heads[stream as usize].load(Ordering::Acquire)
    }

    /// Whether `stream` has rows after `since` (an initial sync, `None`, always reads).
    pub fn stream_moved(&self, stream: Stream, since: Option<i64>) -> bool {
        since.is_none_or(|since| self.stream_heads[stream as usize].load(Ordering::Acquire) > since)
    }

    /// Marks the syncs under way of `members` at `tick`. Whichever of the two is smaller
    /// is walked: a room of 10,000 members with a dozen syncs under way costs a dozen
    /// look-ups.
    fn mark_members(&self, members: &crate::rooms::head::LocalMembers, tick: u64) {
        let mut map = self.syncing.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() <= members.len() {
            for (user, entry) in map.iter_mut() {
                if members.contains(user) {
                    entry.1 = entry.1.max(tick);
                }
            }
        } else {
            for user in members.iter() {
                if let Some(entry) = map.get_mut(user) {
                    entry.1 = entry.1.max(tick);
                }
            }
        }
    }

    /// Marks a change for `audience` and wakes waiting syncs (they re-check only if it is
    /// theirs). Called after the change is visible, so a sync never misses it.
    pub(crate) async fn touch(&self, audience: Audience<'_>) {
        // Only users with a sync under way are marked: any other sync computes afresh
        // when it starts.
        let tick = self.ticks.fetch_add(1, Ordering::AcqRel) + 1;
        match audience {
            Audience::Everyone => {
                self.global_tick.fetch_max(tick, Ordering::AcqRel);
            }
            Audience::Users(users) => {
                let mut map = self.syncing.lock().unwrap_or_else(|e| e.into_inner());
                for u in users {
                    if let Some(entry) = map.get_mut(u.as_str()) {
                        entry.1 = entry.1.max(tick);
                    }
                }
            }
            // Every local user with a member event, whatever its membership. If we cannot
            // tell who is concerned, everyone re-checks.
            Audience::Room(room) => match self.room_head(room).await {
                Ok(head) => self.mark_members(&head.local_members(self.server_name()), tick),
                Err(_) => {
                    self.global_tick.fetch_max(tick, Ordering::AcqRel);
                }
            },
            Audience::Members(members) => self.mark_members(members, tick),
            Audience::RoomMatesOf(users) => {
                // Usually few syncs are under way: ask only whether those users are
                // room-mates, not for every room-mate.
                let candidates: Option<Vec<String>> = {
                    let map = self.syncing.lock().unwrap_or_else(|e| e.into_inner());
                    (map.len() <= ROOM_MATE_CANDIDATES).then(|| map.keys().cloned().collect())
                };
                if let Some(candidates) = candidates {
                    let mut mates: std::collections::BTreeSet<String> =
                        users.iter().map(|u| u.to_string()).collect();
                    let mut known = true;
                    for u in users.iter().filter(|_| !candidates.is_empty()) {
                        match self.users_sharing_rooms_among(u, &candidates).await {
                            Ok(found) => mates.extend(found),
                            Err(_) => known = false,
                        }
                    }
                    if known {
                        let mut map = self.syncing.lock().unwrap_or_else(|e| e.into_inner());
                        for u in &mates {
                            if let Some(entry) = map.get_mut(u) {
                                entry.1 = entry.1.max(tick);
                            }
                        }
                    } else {
                        self.global_tick.fetch_max(tick, Ordering::AcqRel);
                    }
                    self.wakeups.notify();
                    return;
                }
                let mut all: std::collections::BTreeSet<String> =
                    users.iter().map(|u| u.to_string()).collect();
                let mut known = true;
                for u in users {
                    match self.users_sharing_rooms(u).await {
                        Ok(mates) if all.len() + mates.len() <= MAX_ROOM_MATES_WOKEN => {
                            all.extend(mates)
                        }
                        _ => known = false,
                    }
                }
                if known {
                    let mut map = self.syncing.lock().unwrap_or_else(|e| e.into_inner());
                    for u in &all {
                        if let Some(entry) = map.get_mut(u) {
                            entry.1 = entry.1.max(tick);
                        }
                    }
                } else {
                    self.global_tick.fetch_max(tick, Ordering::AcqRel);
                }
            }
        }
        self.wakeups.notify();
    }

    /// Counts a sync of `user` as under way until the guard drops; see `touch`. Taken
    /// before the sync's first look, so no change after it goes unmarked.
    pub(crate) fn start_syncing(&self, user: &ruma::UserId) -> Syncing<'_> {
        let mut map = self.syncing.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(user.to_string()).or_insert((0, 0)).0 += 1;
        Syncing {
            hs: self,
            user: user.to_string(),
        }
    }

    /// The current change tick, to compare with [`Homeserver::changed_since`].
    pub(crate) fn tick(&self) -> u64 {
        self.ticks.load(Ordering::Acquire)
    }

    /// Whether anything concerning `user` (whose sync is under way) was marked after `tick`.
    pub(crate) fn changed_since(&self, user: &ruma::UserId, tick: u64) -> bool {
        if self.global_tick.load(Ordering::Acquire) > tick {
            return true;
        }
        let map = self.syncing.lock().unwrap_or_else(|e| e.into_inner());
        map.get(user.as_str()).is_none_or(|(_, t)| *t > tick)
    }

    /// Runs `job` through the [`Offload`] port and returns its result. Past
    /// `MAX_OFFLOAD_QUEUE` jobs waiting or running, a new one is refused (429): password
    /// guesses from many addresses queue no more than that much argon2 work.
    pub(crate) async fn offload<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        if self.offloaded.fetch_add(1, Ordering::AcqRel) >= MAX_OFFLOAD_QUEUE {
            self.offloaded.fetch_sub(1, Ordering::AcqRel);
            let mut data = ruma::api::error::LimitExceededErrorData::new();
            data.retry_after = Some(ruma::api::error::RetryAfter::Delay(
                std::time::Duration::from_secs(1),
            ));
            return Err(Error::Matrix(
                ruma::api::error::ErrorKind::LimitExceeded(data),
                "The server is busy checking passwords".into(),
            ));
        }
        let _queued = Queued(&self.offloaded);
        let slot = Arc::new(Mutex::new(None));
        let out = slot.clone();
        self.offload
            .run(Box::new(move || {
                let value = job();
                *out.lock().unwrap_or_else(|e| e.into_inner()) = Some(value);
            }))
            .await;
        let value = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        value.ok_or_else(|| Error::Internal("offloaded job did not finish".into()))
    }

    /// Takes the planning lock of one room: one planner per room (design brief, "Write
    /// path"); see `rooms/tip.rs`.
    pub(crate) async fn lock_room(&self, room_id: &ruma::RoomId) -> crate::rooms::tip::RoomLock {
        let gate = {
            let mut locks = self.room_locks.lock().unwrap_or_else(|e| e.into_inner());
            // Gates nobody holds, waits for or has a write queued at go, so the map grows
            // with the rooms being written to, not with every room ever written.
            if locks.len() >= ROOM_LOCKS_PRUNE_AT {
                locks.retain(|_, gate| !gate.idle());
            }
            locks.entry(room_id.to_owned()).or_default().clone()
        };
        gate.lock().await
    }

    pub fn public_key_base64(&self) -> String {
        ruma::serde::Base64::<ruma::serde::base64::Standard, _>::new(
            self.signing_key.public_key().to_vec(),
        )
        .encode()
    }
}

/// A sync under way; see [`Homeserver::start_syncing`].
pub(crate) struct Syncing<'a> {
    hs: &'a Homeserver,
    user: String,
}

impl Drop for Syncing<'_> {
    fn drop(&mut self) {
        let mut map = self.hs.syncing.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = map.get_mut(&self.user) {
            entry.0 -= 1;
            if entry.0 == 0 {
                map.remove(&self.user);
            }
        }
    }
}

/// One job counted in `Homeserver::offloaded` while it waits or runs.
struct Queued<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Each stream's last position, and the highest position handed out, from the database.
async fn load_positions(db: &dyn Database) -> Result<([i64; STREAM_KINDS], i64)> {
    let mut heads = [0; STREAM_KINDS];
    for (head, sql) in heads.iter_mut().zip(STREAM_TABLES) {
        if let Some(row) = storage::query_opt(db, sql, vec![]).await? {
            *head = row.opt_int(0)?.unwrap_or(0);
        }
    }
    let floor = storage::query_opt(db, "SELECT pos FROM stream_floor WHERE id = 1", vec![])
        .await?
        .map(|r| r.int(0))
        .transpose()?
        .unwrap_or(0);
    let pos = heads.iter().copied().max().unwrap_or(0).max(floor);
    Ok((heads, pos))
}

async fn load_or_create_key(db: &dyn Database, now: u64) -> Result<Ed25519KeyPair> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let row = storage::query_opt(
        db,
        "SELECT key_id, secret_pkcs8 FROM server_keys ORDER BY created_ts LIMIT 1",
        vec![],
    )
    .await?;
    let (version, der) = match row {
        Some(row) => {
            let id = row.text(0)?;
            let der = b64.decode(row.text(1)?).map_err(Error::internal)?;
            (id.trim_start_matches("ed25519:").to_owned(), der)
        }
        None => {
            let der = Ed25519KeyPair::generate().to_vec();
            let version = crate::accounts::tokens::random_string(6);
            // Another node may have raced us: keep whichever key landed first.
            db.execute(
                "INSERT INTO server_keys (key_id, secret_pkcs8, created_ts) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                vec![
                    Value::from(format!("ed25519:{version}")),
                    Value::from(b64.encode(&der)),
                    Value::Int(now as i64),
                ],
            )
            .await?;
            return Box::pin(load_or_create_key(db, now)).await;
        }
    };
    Ed25519KeyPair::from_der(&der, version).map_err(Error::internal)
}
