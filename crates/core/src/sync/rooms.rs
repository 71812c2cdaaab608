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

mod memberships;
mod prefetch;
mod state;
mod summary;
mod timeline;

pub(in crate::sync) use memberships::Membership;
use state::{End, StateQuery};
pub(in crate::sync) use timeline::TimelineEvent;

use self::{prefetch::Prefetched, timeline::timeline_block};
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
                    // Spec ("Ignoring Users"): invites from ignored users are not sent.
                    if m.membership == "invite" && self.invite_ignored(user, &m.event_id).await? {
                        continue;
                    }
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

    pub(in crate::sync) async fn stripped_state(
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
}

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
