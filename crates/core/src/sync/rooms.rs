//! The `rooms` section of `/sync`: join, invite, knock and leave.
//!
//! A sync is assembled as of one position (`now`): the user's memberships are read as they
//! were there, and an incremental sync looks only at the rooms that moved since `since`
//! (the `room_activity` index, membership, receipt and account-data changes, typing), so
//! its cost follows what changed, not the size of the account.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
};

use ruma::{events::StateEventType, OwnedEventId, OwnedRoomId, RoomId, UserId};
use serde_json::{json, value::RawValue, Value as Json};

mod prefetch;
mod summary;
mod timeline;

use self::{
    prefetch::Prefetched,
    timeline::{timeline_block, TimelineEvent},
};
use super::{SyncRequest, SyncToken};
use crate::{
    homeserver::Stream,
    ports::{Row, Value},
    rooms::{state::StateIds, write::membership_of, Pdu},
    Error, Homeserver, Result,
};

/// Each room's JSON is serialized as soon as it is built: a sync of a thousand rooms never
/// holds a thousand rooms' JSON trees at once. Joined rooms (most of a big sync) are
/// written straight into the response's buffer, which is never copied.
pub struct RoomsSection {
    /// `{"rooms":{"join":{` then each joined room as `"id":{…}`, comma-separated.
    body: Vec<u8>,
    joined: usize,
    invite: BTreeMap<OwnedRoomId, Box<RawValue>>,
    knock: BTreeMap<OwnedRoomId, Box<RawValue>>,
    leave: BTreeMap<OwnedRoomId, Box<RawValue>>,
}

/// The response's start, which the joined rooms follow.
const BODY_START: &[u8] = br#"{"rooms":{"join":{"#;

impl Default for RoomsSection {
    fn default() -> Self {
        Self {
            body: BODY_START.to_vec(),
            joined: 0,
            invite: BTreeMap::new(),
            knock: BTreeMap::new(),
            leave: BTreeMap::new(),
        }
    }
}

impl RoomsSection {
    pub fn is_empty(&self) -> bool {
        self.joined == 0 && self.invite.is_empty() && self.knock.is_empty() && self.leave.is_empty()
    }

    fn add_joined<T: serde::Serialize>(&mut self, room: &RoomId, json: &T) -> Result<()> {
        if self.joined > 0 {
            self.body.push(b',');
        }
        serde_json::to_writer(&mut self.body, room.as_str())?;
        self.body.push(b':');
        serde_json::to_writer(&mut self.body, json)?;
        self.joined += 1;
        Ok(())
    }

    /// The whole response: these rooms, then the fields of `rest` (a JSON object).
    pub fn into_body<T: serde::Serialize>(self, rest: &T) -> Result<String> {
        let mut body = self.body;
        for (name, rooms) in [
            ("invite", &self.invite),
            ("knock", &self.knock),
            ("leave", &self.leave),
        ] {
            body.extend_from_slice(format!("}},\"{name}\":{{").as_bytes());
            for (i, (id, json)) in rooms.iter().enumerate() {
                if i > 0 {
                    body.push(b',');
                }
                serde_json::to_writer(&mut body, id.as_str())?;
                body.push(b':');
                body.extend_from_slice(json.get().as_bytes());
            }
        }
        body.extend_from_slice(b"}}");
        let rest = serde_json::to_vec(rest)?;
        // `rest`'s fields after the rooms, and its closing brace closes the response.
        match rest.as_slice() {
            [b'{', b'}'] => body.push(b'}'),
            [b'{', fields @ ..] => {
                body.push(b',');
                body.extend_from_slice(fields);
            }
            _ => return Err(Error::internal("the sync body is not an object")),
        }
        String::from_utf8(body).map_err(Error::internal)
    }
}

#[derive(serde::Serialize)]
struct Events<T> {
    events: T,
}

#[derive(serde::Serialize)]
struct TimelineBlock {
    events: Vec<Box<RawValue>>,
    limited: bool,
    prev_batch: String,
}

type StateBlock = Option<Events<Vec<Box<RawValue>>>>;

/// A joined or left room (spec: `JoinedRoom`, `LeftRoom`), with `state` or `state_after`.
#[derive(serde::Serialize)]
struct RoomJson {
    timeline: TimelineBlock,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: StateBlock,
    #[serde(skip_serializing_if = "Option::is_none")]
    state_after: StateBlock,
    #[serde(skip_serializing_if = "Option::is_none")]
    ephemeral: Option<Events<Vec<Json>>>,
    account_data: Events<Vec<Json>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    summary: Option<Json>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unread_notifications: Option<Json>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unread_thread_notifications: Option<Json>,
}

/// `{ notification_count, highlight_count }`.
fn counts_json((notifications, highlights): crate::push::counts::Counts) -> Json {
    json!({ "notification_count": notifications, "highlight_count": highlights })
}

/// `(state, state_after)`: one of them holds `events`.
fn state_blocks(events: Vec<Box<RawValue>>, after: bool) -> (StateBlock, StateBlock) {
    if after {
        (None, Some(Events { events }))
    } else {
        (Some(Events { events }), None)
    }
}

/// Stripped state shown with invites and knocks (spec: "Stripped state").
const STRIPPED: &[&str] = &[
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
    "m.room.topic",
];

/// The user's membership of one room.
#[derive(Clone, Debug)]
struct Membership {
    room_id: OwnedRoomId,
    membership: String,
    /// Where the membership last changed (not where the member event last changed).
    changed_pos: i64,
    /// The member event that set it.
    event_id: OwnedEventId,
}

impl Membership {
    fn from_row(r: &Row) -> Result<Self> {
        Ok(Self {
            room_id: OwnedRoomId::try_from(r.text(0)?).map_err(Error::internal)?,
            membership: r.text(1)?,
            event_id: OwnedEventId::try_from(r.text(2)?).map_err(Error::internal)?,
            changed_pos: r.int(3)?,
        })
    }
}

/// Which state a room's `state` (or `state_after`) block holds.
struct StateQuery<'a> {
    /// The sync's `since`, when the client already has the room's state as of it.
    baseline: Option<i64>,
    timeline: &'a [TimelineEvent],
    /// The timeline does not show every event after `baseline` (it is limited, or a
    /// filter dropped some).
    gapped: bool,
    /// The room's state at the end of the timeline's window.
    end: End,
}

/// The state at the end of a timeline's window, or where to find it.
enum End {
    /// After the room's last event at or before this position.
    At(i64),
    State(Arc<StateIds>),
}

const MEMBERSHIP_COLUMNS: &str =
    "SELECT room_id, membership, event_id, stream_pos FROM memberships";

impl Homeserver {
    pub(super) async fn sync_rooms(
        &self,
        user: &UserId,
        device: &ruma::DeviceId,
        req: &SyncRequest,
        since: Option<SyncToken>,
        now: SyncToken,
    ) -> Result<RoomsSection> {
        let mut out = RoomsSection::default();
        let (memberships, mut pre) = match since {
            Some(s) if !req.full_state => (self.rooms_changed(user, s, now).await?, None),
            Some(_) => (self.all_memberships(user).await?, None),
            None => {
                // At once: on PostgreSQL each read is a round trip.
                let (memberships, mut p) = futures_util::try_join!(
                    self.all_memberships(user),
                    self.prefetch(user, now.pos)
                )?;
                // Timelines are read a chunk of rooms at a time, in the order they are sent.
                p.timelines_pending = memberships
                    .iter()
                    .filter(|m| m.membership == "join" && req.filter.room_allowed(&m.room_id))
                    .map(|m| m.room_id.clone())
                    .collect();
                (memberships, Some(p))
            }
        };
        for m in memberships {
            if !req.filter.room_allowed(&m.room_id) {
                continue;
            }
            let Some(m) = self.membership_as_of(user, m, now.pos).await? else {
                continue;
            };
            let changed = since.is_none_or(|s| m.changed_pos > s.pos);
            match m.membership.as_str() {
                "join" => {
                    let room = self
                        .joined_room((user, device), &m, req, since, now, pre.as_mut())
                        .await?;
                    if let Some(room) = room {
                        out.add_joined(&m.room_id, &room)?;
                    }
                }
                "invite" | "knock" if changed => {
                    let stripped = self.stripped_state(&m.room_id, &m.event_id).await?;
                    let (key, section) = if m.membership == "invite" {
                        ("invite_state", &mut out.invite)
                    } else {
                        ("knock_state", &mut out.knock)
                    };
                    section.insert(m.room_id, raw(&json!({ key: { "events": stripped } }))?);
                }
                "leave" | "ban" if changed && (since.is_some() || req.filter.include_leave) => {
                    let room = self.left_room((user, device), &m, req, since).await?;
                    out.leave.insert(m.room_id, raw(&room)?);
                }
                _ => {}
            }
        }
        Ok(out)
    }

    async fn all_memberships(&self, user: &UserId) -> Result<Vec<Membership>> {
        let sql = "SELECT room_id, membership, event_id, stream_pos FROM memberships WHERE user_id = $1 AND forgotten = 0";
        debug_assert!(sql.starts_with(MEMBERSHIP_COLUMNS));
        self.db
            .query(sql, vec![user.as_str().into()])
            .await?
            .iter()
            .map(Membership::from_row)
            .collect()
    }

    /// The rooms an incremental sync from `since` must look at, each with the user's
    /// membership row: a constant number of queries, each reading only what moved.
    async fn rooms_changed(
        &self,
        user: &UserId,
        since: SyncToken,
        now: SyncToken,
    ) -> Result<Vec<Membership>> {
        let mut rooms: HashMap<OwnedRoomId, Membership> = HashMap::new();
        let u = Value::from(user.as_str());
        let s = Value::Int(since.pos);
        let mut add = |rows: Vec<Row>| -> Result<()> {
            for r in &rows {
                let m = Membership::from_row(r)?;
                rooms.insert(m.room_id.clone(), m);
            }
            Ok(())
        };
        if self.stream_moved(Stream::Events, Some(since.pos)) {
            // Rooms that moved since `since` and are the user's. Few positions since:
            // walk the rooms that moved (at most one per position); many: the user's rooms.
            // Either way the smaller side, not the account's size nor the server's.
            let sql = if now.pos - since.pos <= ACTIVITY_SCAN_MAX {
                "SELECT m.room_id, m.membership, m.event_id, m.stream_pos FROM room_activity a
                 CROSS JOIN memberships m
                 WHERE m.room_id = a.room_id AND m.user_id = $1 AND a.last_pos > $2 AND m.forgotten = 0"
            } else {
                "SELECT m.room_id, m.membership, m.event_id, m.stream_pos FROM memberships m
                 CROSS JOIN room_activity a
                 WHERE a.room_id = m.room_id AND m.user_id = $1 AND a.last_pos > $2 AND m.forgotten = 0"
            };
            add(self.db.query(sql, vec![u.clone(), s.clone()]).await?)?;
        }
        if self.stream_moved(Stream::Memberships, Some(since.pos)) {
            add(self
                .db
                .query(
                    "SELECT room_id, membership, event_id, stream_pos FROM memberships
                     WHERE user_id = $1 AND stream_pos > $2 AND forgotten = 0",
                    vec![u.clone(), s.clone()],
                )
                .await?)?;
        }
        if self.stream_moved(Stream::Receipts, Some(since.pos)) {
            add(self
                .db
                .query(
                    "SELECT room_id, membership, event_id, stream_pos FROM memberships
                     WHERE user_id = $1 AND forgotten = 0 AND room_id IN
                       (SELECT room_id FROM receipts WHERE stream_pos > $2 AND stream_pos <= $3)",
                    vec![u.clone(), s.clone(), Value::Int(now.pos)],
                )
                .await?)?;
        }
        if self.stream_moved(Stream::AccountData, Some(since.pos)) {
            add(self
                .db
                .query(
                    "SELECT room_id, membership, event_id, stream_pos FROM memberships
                     WHERE user_id = $1 AND forgotten = 0 AND room_id IN
                       (SELECT room_id FROM account_data WHERE user_id = $1 AND stream_pos > $2 AND room_id <> '')",
                    vec![u.clone(), s.clone()],
                )
                .await?)?;
        }
        for room in self.typing_rooms_since(since.typing) {
            if rooms.contains_key(&room) {
                continue;
            }
            if let Some(r) = crate::storage::query_opt(
                self.db.as_ref(),
                "SELECT room_id, membership, event_id, stream_pos FROM memberships
                 WHERE room_id = $1 AND user_id = $2 AND forgotten = 0",
                vec![room.as_str().into(), u.clone()],
            )
            .await?
            {
                let m = Membership::from_row(&r)?;
                rooms.insert(m.room_id.clone(), m);
            }
        }
        Ok(rooms.into_values().collect())
    }

    /// The membership as it was at `pos`: the row, unless it changed after `pos` (the
    /// sync started before that commit); then the member event in the state at `pos`.
    async fn membership_as_of(
        &self,
        user: &UserId,
        m: Membership,
        pos: i64,
    ) -> Result<Option<Membership>> {
        if m.changed_pos <= pos {
            return Ok(Some(m));
        }
        let Some(state) = self.state_at(&m.room_id, pos).await? else {
            return Ok(None);
        };
        let Some(id) = state.get(&(StateEventType::RoomMember, user.to_string())) else {
            return Ok(None);
        };
        let (Some(pdu), Some(place)) = (self.get_pdu(id).await?, self.event_place(id).await?)
        else {
            return Ok(None);
        };
        Ok(Some(Membership {
            membership: membership_of(&pdu),
            changed_pos: place.pos,
            event_id: id.clone(),
            room_id: m.room_id,
        }))
    }

    /// The user's membership in the room at `pos`, from the room's state there.
    async fn membership_at(
        &self,
        room_id: &RoomId,
        user: &UserId,
        pos: i64,
    ) -> Result<Option<String>> {
        let Some(state) = self.state_at(room_id, pos).await? else {
            return Ok(None);
        };
        Ok(
            match state.get(&(StateEventType::RoomMember, user.to_string())) {
                Some(id) => self.get_pdu(id).await?.map(|p| membership_of(&p)),
                None => None,
            },
        )
    }

    /// The room's state after its last event at or before `pos`, if it had one.
    pub(crate) async fn state_at(
        &self,
        room_id: &RoomId,
        pos: i64,
    ) -> Result<Option<Arc<StateIds>>> {
        let row = crate::storage::query_opt(
            self.db.as_ref(),
            "SELECT state_after FROM events WHERE room_id = $1 AND stream_pos <= $2 ORDER BY stream_pos DESC LIMIT 1",
            vec![room_id.as_str().into(), Value::Int(pos)],
        )
        .await?;
        match row {
            Some(r) => Ok(Some(self.state_group(r.int(0)?).await?.0)),
            None => Ok(None),
        }
    }

    async fn joined_room(
        &self,
        (user, device): (&UserId, &ruma::DeviceId),
        m: &Membership,
        req: &SyncRequest,
        since: Option<SyncToken>,
        now: SyncToken,
        mut pre: Option<&mut Prefetched>,
    ) -> Result<Option<RoomJson>> {
        let room_id = &m.room_id;
        // A room joined after `since` is sent whole, as in an initial sync.
        let newly_joined = since.is_none_or(|s| m.changed_pos > s.pos);
        let from = if newly_joined {
            None
        } else {
            since.map(|s| s.pos)
        };
        // A full sync's first page of each timeline comes from a query for many rooms.
        let first_page = match (from, pre.as_deref_mut()) {
            (None, Some(p)) => {
                let limit = self.timeline_limit(&req.filter.timeline);
                self.prefetched_timeline(p, room_id, now.pos, limit).await?
            }
            _ => None,
        };
        let (timeline, limited) = self
            .timeline(
                room_id,
                &req.filter.timeline,
                from,
                now.pos,
                (user, "join", m.changed_pos),
                first_page,
            )
            .await?;
        // The client has nothing of a room it joined since its last sync: as Synapse does,
        // say so, whether or not the room's whole history fits.
        let limited = limited || (newly_joined && since.is_some());
        let f = &req.filter;
        let typing = match f.ephemeral.allows_type("m.typing") {
            true => self.typing_since(room_id, from.and(since.map(|s| s.typing))),
            false => None,
        };
        let mut account_data = match pre.as_deref_mut() {
            Some(p) => p.account_data.remove(room_id).unwrap_or_default(),
            None => {
                self.account_data_since(user, Some(room_id), from, now.pos)
                    .await?
            }
        };
        account_data.retain(|e| f.room_account_data.allows_json(e));
        let receipts = match (f.ephemeral.allows_type("m.receipt"), pre.as_deref_mut()) {
            (false, _) => None,
            (true, Some(p)) => p.receipts.remove(room_id),
            (true, None) => self.receipts_since(room_id, user, from, now.pos).await?,
        };
        if from.is_some()
            && timeline.is_empty()
            && typing.is_none()
            && receipts.is_none()
            && account_data.is_empty()
            && !req.full_state
        {
            return Ok(None);
        }
        let state = self
            .sync_state(
                room_id,
                req,
                user,
                StateQuery {
                    baseline: from.filter(|_| !req.full_state),
                    timeline: &timeline,
                    gapped: limited || !f.timeline.is_everything(),
                    end: End::At(now.pos),
                },
            )
            .await?;
        let mut ephemeral = Vec::new();
        if let Some(users) = typing {
            ephemeral.push(json!({ "type": "m.typing", "content": { "user_ids": users } }));
        }
        if let Some(receipts) = receipts {
            ephemeral.push(receipts);
        }
        // Spec ("Room summary"): unchanged fields may be left out of an incremental sync,
        // and only member events change them. The timeline shows every event since `from`
        // unless it is limited or filtered; otherwise look in the room.
        let timeline_whole = !limited && f.timeline.is_everything();
        let members_moved = match from {
            None => true,
            Some(_) if req.full_state => true,
            Some(_)
                if timeline
                    .iter()
                    .any(|t| t.pdu.kind == ruma::events::TimelineEventType::RoomMember) =>
            {
                true
            }
            Some(_) if timeline_whole => false,
            Some(from) => self.member_event_between(room_id, from, now.pos).await?,
        };
        let summary = match (members_moved, pre) {
            (false, _) => json!({}),
            (true, Some(p)) => p.summaries.take(room_id),
            (true, None) => self.summary(room_id, user).await?,
        };
        let (state, state_after) = state_blocks(state, req.use_state_after);
        // Spec ("Receiving notifications"): with `unread_thread_notifications`, threads
        // are counted apart, and only those with something unread are listed.
        let counts = self
            .unread_counts(room_id, user, m.changed_pos, now.pos)
            .await?;
        let (main, threads) = if req.filter.timeline.unread_threads {
            let threads: serde_json::Map<String, Json> = counts
                .threads
                .iter()
                .map(|(root, c)| (root.clone(), counts_json(*c)))
                .collect();
            (counts.main, Some(Json::Object(threads)))
        } else {
            (counts.total(), None)
        };
        Ok(Some(RoomJson {
            timeline: timeline_block(&timeline, (user, device), limited, now.pos)?,
            state,
            state_after,
            ephemeral: Some(Events { events: ephemeral }),
            account_data: Events {
                events: account_data,
            },
            summary: Some(summary),
            unread_notifications: Some(counts_json(main)),
            unread_thread_notifications: threads,
        }))
    }

    async fn left_room(
        &self,
        (user, device): (&UserId, &ruma::DeviceId),
        m: &Membership,
        req: &SyncRequest,
        since: Option<SyncToken>,
    ) -> Result<RoomJson> {
        let room_id = &m.room_id;
        let leave_pos = m.changed_pos;
        // Incremental only for a room the client had: one the user was in at `since`.
        let joined_at_since = match since {
            Some(s) => self.membership_at(room_id, user, s.pos).await?.as_deref() == Some("join"),
            None => false,
        };
        let from = since.filter(|_| joined_at_since).map(|s| s.pos);
        let (timeline, limited) = self
            .timeline(
                room_id,
                &req.filter.timeline,
                from,
                leave_pos,
                (user, &m.membership, leave_pos),
                None,
            )
            .await?;
        let limited = limited || (since.is_some() && !joined_at_since);
        // Everything is as of the leave: nothing set afterwards reaches the user.
        let end = match self.event_place(&m.event_id).await? {
            Some(place) => End::State(self.state_group(place.state_after).await?.0),
            None => End::State(Arc::default()),
        };
        let state = self
            .sync_state(
                room_id,
                req,
                user,
                StateQuery {
                    baseline: from.filter(|_| !req.full_state),
                    timeline: &timeline,
                    gapped: limited || !req.filter.timeline.is_everything(),
                    end,
                },
            )
            .await?;
        let (state, state_after) = state_blocks(state, req.use_state_after);
        Ok(RoomJson {
            timeline: timeline_block(&timeline, (user, device), limited, leave_pos)?,
            state,
            state_after,
            ephemeral: None,
            account_data: Events { events: Vec::new() },
            summary: None,
            unread_notifications: None,
            unread_thread_notifications: None,
        })
    }

    /// The `state` block (or `state_after`, with `use_state_after`; MSC4222): without a
    /// baseline, all of the state at the start of the timeline (at its end for
    /// `state_after`); with one, what changed since it. Events the timeline shows are left
    /// out of `state`. With lazy-loaded members, of the member events only the timeline's
    /// senders' (and, when sent whole, the user's own); those always, whether the client
    /// may have them or not (spec: "Lazy-loading room members").
    async fn sync_state(
        &self,
        room_id: &RoomId,
        req: &SyncRequest,
        user: &UserId,
        q: StateQuery<'_>,
    ) -> Result<Vec<Box<RawValue>>> {
        let lazy = req.filter.state.lazy_members;
        let after = req.use_state_after;
        let senders: HashSet<&str> = q.timeline.iter().map(|t| t.pdu.sender.as_str()).collect();
        // Nothing changed and no members to add: the common incremental sync reads no state.
        if q.baseline.is_some() && !q.gapped && !after && !lazy {
            return Ok(Vec::new());
        }
        // The state the block describes.
        let target: Arc<StateIds> = match (after, q.timeline.first(), &q.end) {
            (false, Some(first), _) => {
                let place = self
                    .event_place(&first.pdu.event_id)
                    .await?
                    .ok_or_else(|| Error::internal("event missing"))?;
                self.state_group(place.state_before).await?.0
            }
            (_, _, End::State(state)) => state.clone(),
            (_, _, End::At(pos)) => self.state_at(room_id, *pos).await?.unwrap_or_default(),
        };
        // Changed since the baseline, or everything.
        let end_state: Option<Arc<StateIds>>;
        let changed: Vec<(&(StateEventType, String), &OwnedEventId)> = match q.baseline {
            None => target.iter().collect(),
            // Without a gap, the state at the start of the timeline is the baseline, and
            // the state at its end is the baseline and the timeline's state events.
            Some(_) if !q.gapped && !after => Vec::new(),
            Some(_) if !q.gapped => {
                let in_timeline: HashSet<&OwnedEventId> = q
                    .timeline
                    .iter()
                    .filter(|t| t.pdu.state_key.is_some())
                    .map(|t| &t.pdu.event_id)
                    .collect();
                target
                    .iter()
                    .filter(|(_, id)| in_timeline.contains(id))
                    .collect()
            }
            // As Synapse computes it: the state at the start and at the end of the
            // timeline, less what the client had and what the timeline shows, so state a
            // filter kept out of the timeline is not lost either.
            Some(pos) => {
                let base = self.state_at(room_id, pos).await?.unwrap_or_default();
                let end = match (&q.end, after) {
                    (_, true) => None,
                    (End::State(state), false) => Some(state.clone()),
                    (End::At(p), false) => self.state_at(room_id, *p).await?,
                };
                end_state = end;
                let mut changed: Vec<(&(StateEventType, String), &OwnedEventId)> = target
                    .iter()
                    .filter(|(k, id)| base.get(*k) != Some(*id))
                    .collect();
                if let Some(end) = &end_state {
                    if !Arc::ptr_eq(end, &target) {
                        changed.extend(end.iter().filter(|(k, id)| {
                            base.get(*k) != Some(*id) && target.get(*k) != Some(*id)
                        }));
                    }
                }
                changed
            }
        };
        let in_timeline: HashSet<&OwnedEventId> =
            q.timeline.iter().map(|t| &t.pdu.event_id).collect();
        let mut picked: Vec<&OwnedEventId> = Vec::new();
        let mut seen: HashSet<&OwnedEventId> = HashSet::new();
        for ((kind, key), id) in changed {
            if !after && in_timeline.contains(id) {
                continue;
            }
            if lazy
                && *kind == StateEventType::RoomMember
                && !senders.contains(key.as_str())
                && !(q.baseline.is_none() && key == user.as_str())
            {
                continue;
            }
            if seen.insert(id) {
                picked.push(id);
            }
        }
        // Lazy loading: the senders' member events even when unchanged.
        if lazy && q.baseline.is_some() {
            for sender in &senders {
                let key = (StateEventType::RoomMember, (*sender).to_owned());
                if let Some(id) = target.get(&key) {
                    if (after || !in_timeline.contains(id)) && seen.insert(id) {
                        picked.push(id);
                    }
                }
            }
        }
        let ids: Vec<&ruma::EventId> = picked.iter().map(|id| id.as_ref()).collect();
        if req.filter.state.is_everything() {
            return self.state_client_json(&ids).await;
        }
        let mut out = Vec::with_capacity(picked.len());
        for p in self.get_pdus(&ids).await?.into_iter().flatten() {
            if req.filter.state.allows(&p) {
                out.push(p.client_raw(None, None, None)?);
            }
        }
        Ok(out)
    }

    async fn stripped_state(
        &self,
        room_id: &RoomId,
        member_event: &ruma::EventId,
    ) -> Result<Vec<Json>> {
        let mut out = Vec::new();
        let state = self.current_state_ids(room_id).await?;
        for kind in STRIPPED {
            if let Some(id) = state.get(&(StateEventType::from(*kind), String::new())) {
                if let Some(p) = self.get_pdu(id).await? {
                    out.push(stripped(&p));
                }
            }
        }
        if let Some(p) = self.get_pdu(member_event).await? {
            if let Some(sender_member) =
                state.get(&(StateEventType::RoomMember, p.sender.to_string()))
            {
                if let Some(s) = self.get_pdu(sender_member).await? {
                    out.push(stripped(&s));
                }
            }
            out.push(stripped(&p));
        }
        Ok(out)
    }

    /// Whether a member event was sent in `(from, upto]`.
    async fn member_event_between(&self, room_id: &RoomId, from: i64, upto: i64) -> Result<bool> {
        let rows = self
            .db
            .query(
                "SELECT 1 FROM events WHERE room_id = $1 AND type = 'm.room.member'
                 AND stream_pos > $2 AND stream_pos <= $3 LIMIT 1",
                vec![room_id.as_str().into(), Value::Int(from), Value::Int(upto)],
            )
            .await?;
        Ok(!rows.is_empty())
    }
}

/// Positions since `since` up to which an incremental sync walks the rooms that moved
/// rather than the user's rooms.
const ACTIVITY_SCAN_MAX: i64 = 256;

/// Client format without `room_id` (spec: "ClientEventWithoutRoomID").
pub fn sync_event(p: &Pdu) -> Json {
    p.to_sync_json()
}

fn stripped(p: &Pdu) -> Json {
    json!({
        "type": p.kind.to_string(),
        "state_key": p.state_key,
        "sender": p.sender,
        "content": serde_json::from_str::<Json>(p.content.get()).unwrap_or_default(),
    })
}

fn raw<T: serde::Serialize>(value: &T) -> Result<Box<RawValue>> {
    Ok(serde_json::value::to_raw_value(value)?)
}
