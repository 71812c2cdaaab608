//! The sync API `/sync` replaced, still called by older clients and test suites (spec:
//! deprecated `GET /initialSync`, `GET /events` with its peeking form, and
//! `GET /rooms/{roomId}/initialSync`). The first two are `/sync` answers reshaped, so
//! they see exactly what `/sync` sees; the room's is a `/messages` page and the state.

use std::time::Duration;

use ruma::{api::client::filter::FilterDefinition, DeviceId, RoomId, UserId};
use serde_json::{json, Map, Value as Json};

use super::{filter::SyncFilter, SyncRequest, SyncToken};
use crate::{
    rooms::read::{Direction, PageRequest},
    sync::token::position_token,
    Error, Homeserver, Result,
};

/// Events per room an `/events` answer carries at most.
const EVENTS_LIMIT: u32 = 100;
/// Members whose presence a room's initial sync reports at most.
const MAX_ROOM_PRESENCE: usize = 100;

/// `/sync`'s events lack `room_id`; these endpoints' events have it.
fn with_room(events: &Json, room: &str) -> Vec<Json> {
    events
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let mut e = e.clone();
            if let Some(o) = e.as_object_mut() {
                o.insert("room_id".into(), room.into());
            }
            e
        })
        .collect()
}

fn sync_filter(timeline_limit: u32, include_leave: bool) -> Result<SyncFilter> {
    let def: FilterDefinition = serde_json::from_value(json!({
        "room": { "timeline": { "limit": timeline_limit }, "include_leave": include_leave },
    }))?;
    SyncFilter::new(&def)
}

/// The state at the end of a `/sync` room's timeline: its `state` with the timeline's
/// state events applied in order (these endpoints give the state as of `end`).
fn state_at_end(room: &Json, room_id: &str) -> Vec<Json> {
    let mut state: Vec<Json> = Vec::new();
    let mut index: std::collections::HashMap<(String, String), usize> = Default::default();
    let timeline_state = room["timeline"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e.get("state_key").is_some());
    let events = room["state"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(timeline_state);
    for e in events {
        let key = (
            e["type"].as_str().unwrap_or_default().to_owned(),
            e["state_key"].as_str().unwrap_or_default().to_owned(),
        );
        let mut e = e.clone();
        if let Some(o) = e.as_object_mut() {
            o.insert("room_id".into(), room_id.into());
        }
        match index.get(&key) {
            Some(&i) => {
                if let Some(slot) = state.get_mut(i) {
                    *slot = e;
                }
            }
            None => {
                index.insert(key, state.len());
                state.push(e);
            }
        }
    }
    state
}

impl Homeserver {
    async fn sync_json(&self, user: &UserId, device: &DeviceId, req: SyncRequest) -> Result<Json> {
        let body = self.sync(user, device, req).await?;
        Ok(serde_json::from_str(&body)?)
    }

    /// `GET /initialSync`: every room the user is in or invited to (and has left, with
    /// `archived`), each with its last `limit` events and its state.
    pub async fn legacy_initial_sync(
        &self,
        user: &UserId,
        device: &DeviceId,
        limit: u32,
        archived: bool,
    ) -> Result<Json> {
        let req = SyncRequest {
            since: None,
            full_state: false,
            timeout_ms: 0,
            filter: sync_filter(limit, archived)?,
            use_state_after: false,
            set_presence: None,
            to_device: false,
        };
        let s = self.sync_json(user, device, req).await?;
        let end = s["next_batch"].clone();
        let mut rooms = Vec::new();
        for section in ["join", "leave"] {
            let Some(entries) = s["rooms"][section].as_object() else {
                continue;
            };
            for (room_id, room) in entries {
                let state = state_at_end(room, room_id);
                let membership = state
                    .iter()
                    .find(|e| e["type"] == "m.room.member" && e["state_key"] == user.as_str())
                    .and_then(|e| e["content"]["membership"].as_str())
                    .unwrap_or(section)
                    .to_owned();
                let visibility = match RoomId::parse(room_id) {
                    Ok(r) if self.room_visibility(&r).await? => "public",
                    _ => "private",
                };
                rooms.push(json!({
                    "room_id": room_id,
                    "membership": membership,
                    "messages": {
                        "chunk": with_room(&room["timeline"]["events"], room_id),
                        "start": room["timeline"]["prev_batch"],
                        "end": end,
                    },
                    "state": state,
                    "visibility": visibility,
                    "account_data": room["account_data"]["events"],
                }));
            }
        }
        if let Some(invites) = s["rooms"]["invite"].as_object() {
            for (room_id, room) in invites {
                let invite = room["invite_state"]["events"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|e| e["type"] == "m.room.member" && e["state_key"] == user.as_str());
                let mut entry = json!({
                    "room_id": room_id,
                    "membership": "invite",
                    "state": with_room(&room["invite_state"]["events"], room_id),
                });
                if let Some(invite) = invite {
                    let mut invite = invite.clone();
                    invite["room_id"] = room_id.as_str().into();
                    entry["invite"] = invite;
                }
                rooms.push(entry);
            }
        }
        Ok(json!({
            "end": end,
            "rooms": rooms,
            "presence": s["presence"]["events"],
            "account_data": s["account_data"]["events"],
        }))
    }

    /// `GET /events`: what happened after `from` (now when absent) in the user's rooms,
    /// waiting up to `timeout_ms` for something. With `room`, a peek at one room the user
    /// may read without being in it (spec: "Room previews", world-readable rooms).
    pub async fn legacy_events(
        &self,
        user: &UserId,
        device: &DeviceId,
        from: Option<&str>,
        timeout_ms: u64,
        room: Option<&RoomId>,
    ) -> Result<Json> {
        let now = SyncToken {
            pos: self.current_pos(),
            typing: self.typing.serial(),
        };
        // A sync token, or a pagination token (the `start` of a room's initial sync).
        let since = match from {
            Some(t) => match t.parse::<SyncToken>() {
                Ok(t) => t,
                Err(_) => SyncToken {
                    pos: super::token::parse_position(t, false)?,
                    typing: 0,
                },
            },
            None => now,
        }
        .clamp_to(now);
        if let Some(room) = room {
            return self.peek_events(user, room, since, timeout_ms).await;
        }
        let req = SyncRequest {
            since: Some(since),
            full_state: false,
            timeout_ms,
            filter: sync_filter(EVENTS_LIMIT, false)?,
            use_state_after: false,
            set_presence: None,
            to_device: false,
        };
        let s = self.sync_json(user, device, req).await?;
        let mut chunk = Vec::new();
        for section in ["join", "leave"] {
            for (room_id, r) in s["rooms"][section].as_object().into_iter().flatten() {
                chunk.extend(with_room(&r["timeline"]["events"], room_id));
                chunk.extend(with_room(&r["ephemeral"]["events"], room_id));
            }
        }
        chunk.extend(
            s["presence"]["events"]
                .as_array()
                .into_iter()
                .flatten()
                .cloned(),
        );
        Ok(json!({
            "start": since.to_string(),
            "end": s["next_batch"],
            "chunk": chunk,
        }))
    }

    async fn peek_events(
        &self,
        user: &UserId,
        room: &RoomId,
        since: SyncToken,
        timeout_ms: u64,
    ) -> Result<Json> {
        if !self.world_readable(room).await?
            && self.membership(room, user).await?.as_deref() != Some("join")
        {
            return Err(Error::forbidden("You may not peek into this room"));
        }
        let timeout = timeout_ms.min(self.config.max_sync_timeout_ms);
        let deadline = self.clock.now_ms() + timeout;
        let keep = |_: &crate::rooms::Pdu| true;
        // Where the next pass starts: rows a pass read and found nothing to show in are
        // not read again.
        let mut from = since.pos;
        loop {
            let ticket = self.wakeups.ticket();
            let now = self.current_pos();
            let page = self
                .messages(
                    room,
                    user,
                    PageRequest {
                        from: Some(from),
                        to: Some(now),
                        dir: Direction::Forward,
                        limit: EVENTS_LIMIT as usize,
                    },
                    &keep,
                )
                .await?;
            let remaining = deadline.saturating_sub(self.clock.now_ms());
            if !page.events.is_empty() || remaining == 0 {
                let end = SyncToken {
                    pos: page.end.unwrap_or(now),
                    typing: since.typing,
                };
                let chunk: Vec<Json> = page.events.iter().map(|p| p.to_client_json(room)).collect();
                return Ok(json!({
                    "start": since.to_string(),
                    "end": end.to_string(),
                    "chunk": chunk,
                }));
            }
            from = page.end.unwrap_or(now);
            self.wakeups
                .wait(ticket, Duration::from_millis(remaining))
                .await;
        }
    }

    /// `GET /rooms/{roomId}/initialSync`: the room's last `limit` events, its state and
    /// its members' presence, for a member (as of their leave, for one who left) or anyone
    /// when the room is world-readable.
    pub async fn legacy_room_initial_sync(
        &self,
        user: &UserId,
        room: &RoomId,
        limit: u32,
    ) -> Result<Json> {
        let membership = self.membership(room, user).await?;
        if membership.is_none() && !self.world_readable(room).await? {
            return Err(Error::forbidden("You are not in this room"));
        }
        let now = SyncToken {
            pos: self.current_pos(),
            typing: self.typing.serial(),
        };
        let keep = |_: &crate::rooms::Pdu| true;
        let page = self
            .messages(
                room,
                user,
                PageRequest {
                    from: Some(now.pos),
                    to: None,
                    dir: Direction::Backward,
                    limit: limit as usize,
                },
                &keep,
            )
            .await?;
        let chunk: Vec<Json> = page
            .events
            .iter()
            .rev()
            .map(|p| p.to_client_json(room))
            .collect();
        let state = self.state_events(room, user).await?;
        // Presence is for room-mates (spec: "Presence"), not for those peeking in.
        let mut presence = Vec::new();
        let joined = state.iter().filter(|p| {
            membership.as_deref() == Some("join")
                && p.kind == ruma::events::TimelineEventType::RoomMember
                && crate::rooms::read::content_str(p, "membership").as_deref() == Some("join")
        });
        for member in joined.take(MAX_ROOM_PRESENCE) {
            let Some(Ok(id)) = member.state_key.as_deref().map(UserId::parse) else {
                continue;
            };
            if let Some(content) = self.get_presence(&id).await? {
                presence.push(json!({ "type": "m.presence", "sender": id, "content": content }));
            }
        }
        let visibility = if self.room_visibility(room).await? {
            "public"
        } else {
            "private"
        };
        let account_data = self
            .account_data_since(user, Some(room), None, now.pos)
            .await?;
        let mut body = Map::new();
        body.insert("room_id".into(), room.as_str().into());
        if let Some(m) = membership {
            body.insert("membership".into(), m.into());
        }
        body.insert(
            "messages".into(),
            json!({
                "chunk": chunk,
                "start": position_token(page.end.unwrap_or(0)),
                "end": now.to_string(),
            }),
        );
        body.insert(
            "state".into(),
            state.iter().map(|p| p.to_client_json(room)).collect(),
        );
        body.insert("presence".into(), presence.into());
        body.insert("visibility".into(), visibility.into());
        body.insert("account_data".into(), account_data.into());
        Ok(Json::Object(body))
    }
}
