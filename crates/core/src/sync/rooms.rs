//! The `rooms` section of `/sync`: join, invite, knock and leave.

use std::collections::{BTreeMap, HashSet};

use ruma::{events::StateEventType, OwnedRoomId, RoomId, UserId};
use serde_json::{json, Value as Json};

use super::{filter::EventFilter, SyncRequest, SyncToken};
use crate::{
    ports::Value,
    rooms::{state::StateIds, Pdu},
    Error, Homeserver, Result,
};

/// How many events a timeline may look at per event it returns, before giving up on
/// history the user may not see.
const MAX_SCAN_FACTOR: usize = 20;

/// Timeline length when the filter names none (spec leaves it to the server).
const DEFAULT_TIMELINE_LIMIT: usize = 10;

#[derive(Default)]
pub struct RoomsSection {
    join: BTreeMap<OwnedRoomId, Json>,
    invite: BTreeMap<OwnedRoomId, Json>,
    knock: BTreeMap<OwnedRoomId, Json>,
    leave: BTreeMap<OwnedRoomId, Json>,
}

impl RoomsSection {
    pub fn is_empty(&self) -> bool {
        self.join.is_empty()
            && self.invite.is_empty()
            && self.knock.is_empty()
            && self.leave.is_empty()
    }
    pub fn into_json(self) -> Json {
        json!({ "join": self.join, "invite": self.invite, "knock": self.knock, "leave": self.leave })
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
        let rows = self
            .db
            .query(
                "SELECT room_id, membership, event_id, stream_pos FROM memberships WHERE user_id = $1 AND forgotten = 0",
                vec![user.as_str().into()],
            )
            .await?;
        for r in rows {
            let room_id = OwnedRoomId::try_from(r.text(0)?).map_err(Error::internal)?;
            if !req.filter.room_allowed(&room_id) {
                continue;
            }
            let (membership, member_pos) = (r.text(1)?, r.int(3)?);
            // A membership change after `now` is not ours to report yet.
            if member_pos > now.pos {
                continue;
            }
            let changed = since.is_none_or(|s| member_pos > s.pos);
            match membership.as_str() {
                "join" => {
                    if let Some(room) = self
                        .joined_room((user, device), &room_id, req, since, now, member_pos)
                        .await?
                    {
                        out.join.insert(room_id, room);
                    }
                }
                "invite" | "knock" if changed => {
                    let event_id = ruma::EventId::parse(r.text(2)?).map_err(Error::internal)?;
                    let stripped = self.stripped_state(&room_id, &event_id).await?;
                    let (key, section) = if membership == "invite" {
                        ("invite_state", &mut out.invite)
                    } else {
                        ("knock_state", &mut out.knock)
                    };
                    section.insert(room_id, json!({ key: { "events": stripped } }));
                }
                "leave" | "ban" if changed && (since.is_some() || req.filter.include_leave) => {
                    let room = self
                        .left_room(user, &room_id, req, since, member_pos)
                        .await?;
                    out.leave.insert(room_id, room);
                }
                _ => {}
            }
        }
        Ok(out)
    }

    async fn joined_room(
        &self,
        (user, device): (&UserId, &ruma::DeviceId),
        room_id: &RoomId,
        req: &SyncRequest,
        since: Option<SyncToken>,
        now: SyncToken,
        member_pos: i64,
    ) -> Result<Option<Json>> {
        let newly_joined = since.is_none_or(|s| member_pos > s.pos);
        // A room the user just joined is sent whole, as in an initial sync.
        let from = if newly_joined {
            None
        } else {
            since.map(|s| s.pos)
        };
        let (timeline, limited) = self
            .timeline(
                room_id,
                &req.filter.timeline,
                from,
                now.pos,
                (user, "join", member_pos),
            )
            .await?;
        let f = &req.filter;
        let typing = match f.ephemeral.allows_type("m.typing") {
            true => self.typing_since(room_id, since.map(|s| s.typing)),
            false => None,
        };
        let mut account_data = self
            .account_data_since(user, Some(room_id), since.map(|s| s.pos), now.pos)
            .await?;
        account_data.retain(|e| f.room_account_data.allows_json(e));
        let receipts = match f.ephemeral.allows_type("m.receipt") {
            true => {
                self.receipts_since(room_id, user, since.map(|s| s.pos), now.pos)
                    .await?
            }
            false => None,
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
            .sync_state(room_id, req, from, &timeline, limited, user)
            .await?;
        let prev_batch = timeline.first().map(|(pos, _)| pos.to_string());
        let mut ephemeral = Vec::new();
        if let Some(users) = typing {
            ephemeral.push(json!({ "type": "m.typing", "content": { "user_ids": users } }));
        }
        if let Some(receipts) = receipts {
            ephemeral.push(receipts);
        }
        let mut events: Vec<Json> = timeline.iter().map(|(_, p)| sync_event(p)).collect();
        self.add_transaction_ids(user, device, &mut events).await?;
        // Spec ("Room summary"): unchanged fields may be left out of an incremental sync,
        // and only member events change them. The timeline shows every event since `from`
        // unless it is limited or filtered; otherwise look in the room.
        let timeline_whole = !limited && req.filter.timeline.is_everything();
        let members_moved = match from {
            None => true,
            Some(_) if req.full_state => true,
            Some(_)
                if timeline
                    .iter()
                    .any(|(_, p)| p.kind == ruma::events::TimelineEventType::RoomMember) =>
            {
                true
            }
            Some(_) if timeline_whole => false,
            Some(from) => self.member_event_between(room_id, from, now.pos).await?,
        };
        let summary = if members_moved {
            self.summary(room_id, user).await?
        } else {
            json!({})
        };
        let state_key = if req.use_state_after {
            "state_after"
        } else {
            "state"
        };
        Ok(Some(json!({
            "timeline": { "events": events, "limited": limited, "prev_batch": prev_batch },
            state_key: { "events": state },
            "ephemeral": { "events": ephemeral },
            "account_data": { "events": account_data },
            "summary": summary,
            "unread_notifications": { "highlight_count": 0, "notification_count": 0 },
        })))
    }

    /// Timeline events in `(from, upto]`, newest `limit` of them, oldest first.
    async fn timeline(
        &self,
        room_id: &RoomId,
        f: &EventFilter,
        from: Option<i64>,
        upto: i64,
        viewer: (&UserId, &str, i64),
    ) -> Result<(Vec<(i64, Pdu)>, bool)> {
        let (user, membership, member_pos) = viewer;
        let mut scanned = 0usize;
        let limit = f
            .limit
            .unwrap_or(DEFAULT_TIMELINE_LIMIT)
            .clamp(1, self.config.max_timeline_limit);
        let mut out = Vec::new();
        let mut cursor = upto + 1;
        let floor = from.unwrap_or(0);
        loop {
            let rows = self
                .db
                .query(
                    "SELECT event_id, json, stream_pos FROM events WHERE room_id = $1 AND stream_pos > $2 AND stream_pos < $3
                     ORDER BY stream_pos DESC LIMIT $4",
                    vec![room_id.as_str().into(), Value::Int(floor), Value::Int(cursor), Value::Int(limit as i64 + 1)],
                )
                .await?;
            if rows.is_empty() {
                break;
            }
            for r in &rows {
                cursor = r.int(2)?;
                scanned += 1;
                // Hidden history could make us scan the whole room: stop and say limited.
                if scanned > limit * MAX_SCAN_FACTOR {
                    out.reverse();
                    return Ok((out, true));
                }
                let pdu = Pdu::from_stored(&r.text(0)?, &r.text(1)?)?;
                // Events after the user joined are theirs to see; earlier ones depend on
                // the room's history visibility.
                let visible = (membership == "join" && cursor > member_pos)
                    || self.can_see(user, &pdu, Some(membership)).await?;
                if visible && f.allows(&pdu) {
                    if out.len() == limit {
                        out.reverse();
                        return Ok((out, true));
                    }
                    out.push((cursor, pdu));
                }
            }
        }
        out.reverse();
        // An initial sync that did not reach the room's start is limited too.
        Ok((out, false))
    }

    /// The state block: for a full sync, the state at the start of the timeline; for an
    /// incremental one, the state changes the timeline does not show.
    async fn sync_state(
        &self,
        room_id: &RoomId,
        req: &SyncRequest,
        from: Option<i64>,
        timeline: &[(i64, Pdu)],
        limited: bool,
        user: &UserId,
    ) -> Result<Vec<Json>> {
        let lazy = req.filter.state.lazy_members;
        // An incremental, unlimited timeline shows every state change itself. With lazy
        // loading the client may still lack the senders' member events (spec: "Lazy-loading
        // room members"; sending ones it has is allowed).
        if from.is_some() && !req.full_state && !limited && !req.use_state_after {
            return match timeline.first() {
                Some((_, first)) if lazy => self.lazy_members(first, timeline, req).await,
                _ => Ok(vec![]),
            };
        }
        let at_start: StateIds = match timeline.first() {
            Some((_, first)) if !req.use_state_after => {
                let place = self
                    .event_place(&first.event_id)
                    .await?
                    .ok_or_else(|| Error::internal("event missing"))?;
                (*self.state_group(place.state_before).await?.0).clone()
            }
            _ => self.current_state_ids(room_id).await?,
        };
        let baseline: StateIds = match from {
            Some(pos) if !req.full_state => self.state_at_pos(room_id, pos).await?,
            _ => StateIds::new(),
        };
        let in_timeline: HashSet<_> = timeline.iter().map(|(_, p)| p.event_id.clone()).collect();
        let senders: HashSet<String> = timeline.iter().map(|(_, p)| p.sender.to_string()).collect();
        let mut out = Vec::new();
        for ((kind, key), id) in &at_start {
            if baseline.get(&(kind.clone(), key.clone())) == Some(id)
                || (!req.use_state_after && in_timeline.contains(id))
            {
                continue;
            }
            if lazy
                && *kind == StateEventType::RoomMember
                && key != user.as_str()
                && !senders.contains(key)
            {
                continue;
            }
            if let Some(p) = self.get_pdu(id).await? {
                if req.filter.state.allows(&p) {
                    out.push(sync_event(&p));
                }
            }
        }
        Ok(out)
    }

    /// The member events of the timeline's senders, as at the start of the timeline.
    async fn lazy_members(
        &self,
        first: &Pdu,
        timeline: &[(i64, Pdu)],
        req: &SyncRequest,
    ) -> Result<Vec<Json>> {
        let place = self
            .event_place(&first.event_id)
            .await?
            .ok_or_else(|| Error::internal("event missing"))?;
        let (state, _) = self.state_group(place.state_before).await?;
        let mut senders: Vec<&str> = timeline.iter().map(|(_, p)| p.sender.as_str()).collect();
        senders.sort_unstable();
        senders.dedup();
        let mut out = Vec::new();
        for sender in senders {
            let key = (StateEventType::RoomMember, sender.to_owned());
            if let Some(id) = state.get(&key) {
                if let Some(p) = self.get_pdu(id).await? {
                    if req.filter.state.allows(&p) {
                        out.push(sync_event(&p));
                    }
                }
            }
        }
        Ok(out)
    }

    async fn left_room(
        &self,
        user: &UserId,
        room_id: &RoomId,
        req: &SyncRequest,
        since: Option<SyncToken>,
        leave_pos: i64,
    ) -> Result<Json> {
        let (timeline, limited) = self
            .timeline(
                room_id,
                &req.filter.timeline,
                since.map(|s| s.pos),
                leave_pos,
                (user, "leave", leave_pos),
            )
            .await?;
        let state = self
            .sync_state(room_id, req, since.map(|s| s.pos), &timeline, limited, user)
            .await?;
        let events: Vec<Json> = timeline.iter().map(|(_, p)| sync_event(p)).collect();
        let prev_batch = timeline.first().map(|(pos, _)| pos.to_string());
        Ok(json!({
            "timeline": { "events": events, "limited": limited, "prev_batch": prev_batch },
            "state": { "events": state },
            "account_data": { "events": [] },
        }))
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

    /// `m.heroes` and member counts (spec: "Room summary"): the first members other than
    /// the user in stream order, joined or invited, else those who left or were banned.
    async fn summary(&self, room_id: &RoomId, user: &UserId) -> Result<Json> {
        const HEROES: usize = 5;
        let rows = self
            .db
            .query(
                "SELECT e.state_key, e.json FROM current_state c JOIN events e ON e.event_id = c.event_id
                 WHERE c.room_id = $1 AND c.type = 'm.room.member' ORDER BY e.stream_pos",
                vec![room_id.as_str().into()],
            )
            .await?;
        let (mut joined, mut invited, mut heroes, mut gone) = (0, 0, Vec::new(), Vec::new());
        for r in rows {
            let key = r.text(0)?;
            let json: Json = serde_json::from_str(&r.text(1)?)?;
            let present = match json["content"]["membership"].as_str() {
                Some("join") => {
                    joined += 1;
                    true
                }
                Some("invite") => {
                    invited += 1;
                    true
                }
                Some("leave" | "ban") => false,
                _ => continue,
            };
            if key == user.as_str() {
                continue;
            }
            match present {
                true if heroes.len() < HEROES => heroes.push(key),
                false if gone.len() < HEROES => gone.push(key),
                _ => {}
            }
        }
        if heroes.is_empty() {
            heroes = gone;
        }
        Ok(
            json!({ "m.heroes": heroes, "m.joined_member_count": joined, "m.invited_member_count": invited }),
        )
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
