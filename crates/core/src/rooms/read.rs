//! Reading rooms: `/messages`, `/event`, `/state`, `/members` (spec: client-server API,
//! "Getting events for a room").

use std::sync::Arc;

use ruma::{events::StateEventType, EventId, RoomId, UserId};
use serde_json::Value as Json;

use super::{state::StateIds, write::membership_of, Pdu};
use crate::{ports::Value, Error, Homeserver, Result};

/// Rows `/messages` may read per event it returns (as `/sync` does), so a filter that
/// matches nothing or hidden history cannot make one request read the whole room.
pub const MAX_SCAN_FACTOR: usize = 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Backward,
    Forward,
}

/// Where a `/messages` page starts, ends and how long it is.
#[derive(Clone, Copy, Debug)]
pub struct PageRequest {
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub dir: Direction,
    pub limit: usize,
}

/// One page of `/messages`.
pub struct Page {
    pub events: Vec<Pdu>,
    pub start: i64,
    pub end: Option<i64>,
}

impl Homeserver {
    /// The user's membership and the stream position it changed at, or `M_FORBIDDEN`.
    pub async fn require_membership(
        &self,
        room_id: &RoomId,
        user: &UserId,
    ) -> Result<(String, i64)> {
        let row = crate::storage::query_opt(
            self.db.as_ref(),
            "SELECT membership, stream_pos FROM memberships WHERE room_id = $1 AND user_id = $2",
            vec![room_id.as_str().into(), user.as_str().into()],
        )
        .await?;
        match row {
            Some(r) => Ok((r.text(0)?, r.int(1)?)),
            None => Err(Error::forbidden("You are not a member of this room")),
        }
    }

    /// The state a user may read (spec: "Getting events for a room"): the current state
    /// while joined or when the room is world-readable, else as of their leaving.
    pub async fn visible_state(&self, room_id: &RoomId, user: &UserId) -> Result<StateIds> {
        let membership = self.membership(room_id, user).await?;
        if membership.as_deref() == Some("join") || self.world_readable(room_id).await? {
            return self.current_state_ids(room_id).await;
        }
        if !matches!(membership.as_deref(), Some("leave" | "ban")) {
            return Err(Error::forbidden("You are not a member of this room"));
        }
        let member = self
            .current_state_event_id(room_id, &StateEventType::RoomMember, user.as_str())
            .await?
            .ok_or_else(|| Error::forbidden("You are not a member of this room"))?;
        let place = self
            .event_place(&member)
            .await?
            .ok_or_else(|| Error::internal("member event missing"))?;
        Ok((*self.state_group(place.state_after).await?.0).clone())
    }

    /// Whether the room's current history visibility is `world_readable`.
    pub async fn world_readable(&self, room_id: &RoomId) -> Result<bool> {
        let Some(id) = self
            .current_state_event_id(room_id, &StateEventType::RoomHistoryVisibility, "")
            .await?
        else {
            return Ok(false);
        };
        Ok(self.get_pdu(&id).await?.is_some_and(|p| {
            content_str(&p, "history_visibility").as_deref() == Some("world_readable")
        }))
    }

    pub async fn state_event(
        &self,
        room_id: &RoomId,
        user: &UserId,
        kind: &StateEventType,
        key: &str,
    ) -> Result<Arc<Pdu>> {
        crate::input::event_type(&kind.to_string())?;
        crate::input::state_key(key)?;
        let state = self.visible_state(room_id, user).await?;
        let id = state
            .get(&(kind.clone(), key.to_owned()))
            .ok_or_else(|| Error::not_found("Event not found"))?;
        self.get_pdu(id)
            .await?
            .ok_or_else(|| Error::not_found("Event not found"))
    }

    pub async fn state_events(&self, room_id: &RoomId, user: &UserId) -> Result<Vec<Arc<Pdu>>> {
        let state = self.visible_state(room_id, user).await?;
        self.load_pdus(state.values()).await
    }

    pub async fn load_pdus<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a ruma::OwnedEventId>,
    ) -> Result<Vec<Arc<Pdu>>> {
        let mut out = Vec::new();
        for id in ids {
            if let Some(p) = self.get_pdu(id).await? {
                out.push(p);
            }
        }
        Ok(out)
    }

    /// `/members`, optionally filtered by membership.
    pub async fn members(
        &self,
        room_id: &RoomId,
        user: &UserId,
        at: Option<i64>,
        membership: Option<&str>,
        not_membership: Option<&str>,
    ) -> Result<Vec<Arc<Pdu>>> {
        let mut state = self.visible_state(room_id, user).await?;
        // `at`: the members as of a sync or pagination token, no later than what the user
        // may see.
        if let Some(pos) = at {
            let (current, member_pos) = self.require_membership(room_id, user).await?;
            let pos = if current == "join" {
                pos
            } else {
                pos.min(member_pos)
            };
            state = self.state_at_pos(room_id, pos).await?;
        }
        let ids: Vec<ruma::OwnedEventId> = state
            .iter()
            .filter(|((k, _), _)| *k == StateEventType::RoomMember)
            .map(|(_, v)| v.clone())
            .collect();
        Ok(self
            .load_pdus(&ids)
            .await?
            .into_iter()
            .filter(|p| {
                let m = membership_of(p);
                // Spec (`/members`): given both, the two filters are an "or".
                match (membership, not_membership) {
                    (Some(x), Some(y)) => m == x || m != y,
                    (Some(x), None) => m == x,
                    (None, Some(y)) => m != y,
                    (None, None) => true,
                }
            })
            .collect())
    }

    /// The room state after the last event at or before `pos`.
    pub async fn state_at_pos(&self, room_id: &RoomId, pos: i64) -> Result<StateIds> {
        let row = crate::storage::query_opt(
            self.db.as_ref(),
            "SELECT state_after FROM events WHERE room_id = $1 AND stream_pos <= $2 ORDER BY stream_pos DESC LIMIT 1",
            vec![room_id.as_str().into(), Value::Int(pos)],
        )
        .await?;
        match row {
            Some(r) => Ok((*self.state_group(r.int(0)?).await?.0).clone()),
            None => Ok(StateIds::new()),
        }
    }

    /// `/event/{eventId}`, subject to history visibility.
    /// The room an event was stored in, for endpoints that name no room (the deprecated
    /// `GET /events/{eventId}`).
    pub async fn room_of_event(&self, id: &EventId) -> Result<Option<ruma::OwnedRoomId>> {
        let row = crate::storage::query_opt(
            self.db.as_ref(),
            "SELECT room_id FROM events WHERE event_id = $1",
            vec![id.as_str().into()],
        )
        .await?;
        Ok(row
            .map(|r| r.text(0))
            .transpose()?
            .and_then(|r| ruma::OwnedRoomId::try_from(r).ok()))
    }

    pub async fn event_for_user(
        &self,
        room_id: &RoomId,
        user: &UserId,
        id: &EventId,
    ) -> Result<Arc<Pdu>> {
        // Spec: 404 when the event is missing or the user may not read it; a non-member
        // may read a world-readable room's events.
        let membership = self.membership(room_id, user).await?;
        let pdu = self
            .get_pdu(id)
            .await?
            .ok_or_else(|| Error::not_found("Event not found"))?;
        // A v12 create event carries no room ID: its room's ID is its own reference hash.
        let in_room = match &pdu.room_id {
            Some(r) => r == room_id,
            None => super::write::create_event_id_of(room_id).as_deref() == Some(&*pdu.event_id),
        };
        if !in_room {
            return Err(Error::not_found("Event not found"));
        }
        if !self.can_see(user, &pdu, membership.as_deref()).await? {
            return Err(Error::not_found("Event not found"));
        }
        Ok(pdu)
    }

    /// The user's membership and the last position whose events they may read: none
    /// past their leaving, unless the room is world-readable; `M_FORBIDDEN` for one who
    /// was never in a room that is not.
    pub(crate) async fn reading_ceiling(
        &self,
        room_id: &RoomId,
        user: &UserId,
    ) -> Result<(Option<String>, i64)> {
        let row = crate::storage::query_opt(
            self.db.as_ref(),
            "SELECT membership, stream_pos FROM memberships WHERE room_id = $1 AND user_id = $2",
            vec![room_id.as_str().into(), user.as_str().into()],
        )
        .await?;
        let membership = row.as_ref().map(|r| r.text(0)).transpose()?;
        let ceiling = match (membership.as_deref(), &row) {
            (Some("join"), _) => i64::MAX,
            _ if self.world_readable(room_id).await? => i64::MAX,
            (Some("leave" | "ban"), Some(r)) => r.int(1)?,
            _ => return Err(Error::forbidden("You are not a member of this room")),
        };
        Ok((membership, ceiling))
    }

    /// `/messages`: from the place `from` names (tokens are places between events) in
    /// `dir`, up to the place `to`, the events `keep` accepts and the user may see. A user
    /// who left sees nothing after leaving, unless the room is world-readable; so does a
    /// non-member of a world-readable room.
    pub async fn messages(
        &self,
        room_id: &RoomId,
        user: &UserId,
        page: PageRequest,
        keep: &(dyn Fn(&Pdu) -> bool + Send + Sync),
    ) -> Result<Page> {
        // Spec ("Ignoring Users"): no non-state event of an ignored user.
        let ignored = self.ignored_users(user);
        let keep_given = keep;
        let keep: &(dyn Fn(&Pdu) -> bool + Send + Sync) =
            &|p| keep_given(p) && !crate::ignored_users::hidden(&ignored, p);
        let PageRequest {
            from,
            to,
            dir,
            limit,
        } = page;
        let (membership, ceiling) = self.reading_ceiling(room_id, user).await?;
        let limit = limit.clamp(1, self.config.max_timeline_limit);
        let start = from.unwrap_or(match dir {
            Direction::Backward => self.current_pos(),
            Direction::Forward => 0,
        });
        let mut events = Vec::new();
        // Backward: events at or below `cursor`; forward: events above it.
        let mut cursor = start;
        let end = |cursor: i64| Some(cursor);
        // Filtered-out or hidden events do not shorten the page, but one request reads at
        // most `MAX_SCAN_FACTOR` rows per event asked for: past that it answers with what
        // it found and a token to go on from (`end`).
        let max_scan = limit * MAX_SCAN_FACTOR;
        let mut scanned = 0;
        loop {
            let rows = match dir {
                Direction::Backward => {
                    self.db
                        .query(
                            "SELECT event_id, json, stream_pos FROM events WHERE room_id = $1 AND stream_pos <= $2
                             AND stream_pos <= $3 ORDER BY stream_pos DESC LIMIT $4",
                            vec![room_id.as_str().into(), Value::Int(cursor), Value::Int(ceiling), Value::Int(limit as i64 * 2)],
                        )
                        .await?
                }
                Direction::Forward => {
                    self.db
                        .query(
                            "SELECT event_id, json, stream_pos FROM events WHERE room_id = $1 AND stream_pos > $2
                             AND stream_pos <= $3 ORDER BY stream_pos ASC LIMIT $4",
                            vec![room_id.as_str().into(), Value::Int(cursor), Value::Int(ceiling), Value::Int(limit as i64 * 2)],
                        )
                        .await?
                }
            };
            if rows.is_empty() {
                return Ok(Page {
                    events,
                    start,
                    end: None,
                });
            }
            for r in &rows {
                let pos = r.int(2)?;
                let past_to = match (dir, to) {
                    (Direction::Backward, Some(t)) => pos <= t,
                    (Direction::Forward, Some(t)) => pos > t,
                    _ => false,
                };
                if past_to {
                    return Ok(Page {
                        events,
                        start,
                        end: None,
                    });
                }
                if scanned == max_scan {
                    return Ok(Page {
                        events,
                        start,
                        end: end(cursor),
                    });
                }
                scanned += 1;
                cursor = match dir {
                    Direction::Backward => pos - 1,
                    Direction::Forward => pos,
                };
                let pdu = Pdu::from_stored(&r.text(0)?, &r.text(1)?)?;
                if keep(&pdu) && self.can_see(user, &pdu, membership.as_deref()).await? {
                    events.push(pdu);
                    if events.len() >= limit {
                        return Ok(Page {
                            events,
                            start,
                            end: end(cursor),
                        });
                    }
                }
            }
        }
    }
}

/// A content field as a string, for filters and summaries.
pub fn content_str(pdu: &Pdu, key: &str) -> Option<String> {
    serde_json::from_str::<Json>(pdu.content.get())
        .ok()?
        .get(key)?
        .as_str()
        .map(str::to_owned)
}

/// `/context`: an event with the events around it.
pub struct Context {
    pub event: Arc<Pdu>,
    pub before: Vec<Pdu>,
    pub after: Vec<Pdu>,
    /// Tokens to paginate on backwards from `before` and forwards from `after`.
    pub start: i64,
    pub end: i64,
    /// The state at the last event returned.
    pub state: Vec<Arc<Pdu>>,
}

impl Homeserver {
    pub async fn context(
        &self,
        room_id: &RoomId,
        user: &UserId,
        id: &EventId,
        limit: usize,
        keep: &(dyn Fn(&Pdu) -> bool + Send + Sync),
        lazy_members: bool,
    ) -> Result<Context> {
        let ignored = self.ignored_users(user);
        let keep_given = keep;
        let keep: &(dyn Fn(&Pdu) -> bool + Send + Sync) =
            &|p| keep_given(p) && !crate::ignored_users::hidden(&ignored, p);
        let event = self.event_for_user(room_id, user, id).await?;
        let place = self
            .event_place(id)
            .await?
            .ok_or_else(|| Error::not_found("Event not found"))?;
        let limit = limit.min(self.config.max_timeline_limit);
        let (n_before, n_after) = (limit / 2, limit - limit / 2);
        let (before, start) = self
            .context_side(
                room_id,
                user,
                place.pos,
                Direction::Backward,
                n_before,
                keep,
            )
            .await?;
        let (after, end) = self
            .context_side(room_id, user, place.pos, Direction::Forward, n_after, keep)
            .await?;
        let last = after
            .last()
            .map_or_else(|| event.event_id.clone(), |p| p.event_id.clone());
        let last_place = self
            .event_place(&last)
            .await?
            .ok_or_else(|| Error::internal("event missing"))?;
        let state_ids = self.state_group(last_place.state_after).await?.0;
        // Spec ("Lazy-loading room members"): with lazy loading, of the members only the
        // senders of the returned events; otherwise the whole state.
        let ids: Vec<_> = if lazy_members {
            let senders: std::collections::HashSet<&str> = before
                .iter()
                .chain(&after)
                .map(|p| p.sender.as_str())
                .chain([event.sender.as_str()])
                .collect();
            state_ids
                .iter()
                .filter(|((kind, key), _)| {
                    *kind != StateEventType::RoomMember || senders.contains(key.as_str())
                })
                .map(|(_, id)| id.clone())
                .collect()
        } else {
            state_ids.values().cloned().collect()
        };
        let state = self.load_pdus(&ids).await?;
        Ok(Context {
            event,
            before,
            after,
            start,
            end,
            state,
        })
    }

    /// One side of `/context`: a bounded `/messages` page from the event at `pos`, and the
    /// place to go on from: the page's `end`, else (the room's start or end was reached)
    /// the place beyond its last event.
    async fn context_side(
        &self,
        room_id: &RoomId,
        user: &UserId,
        pos: i64,
        dir: Direction,
        limit: usize,
        keep: &(dyn Fn(&Pdu) -> bool + Send + Sync),
    ) -> Result<(Vec<Pdu>, i64)> {
        // The place just before the event going back, just after it going forward.
        let from = match dir {
            Direction::Backward => pos - 1,
            Direction::Forward => pos,
        };
        if limit == 0 {
            return Ok((Vec::new(), from));
        }
        let req = PageRequest {
            from: Some(from),
            to: None,
            dir,
            limit,
        };
        let page = self.messages(room_id, user, req, keep).await?;
        let token = match (page.end, page.events.last()) {
            (Some(end), _) => end,
            (None, Some(p)) => match self.event_place(&p.event_id).await? {
                Some(pl) if dir == Direction::Backward => pl.pos - 1,
                Some(pl) => pl.pos,
                None => from,
            },
            (None, None) => from,
        };
        Ok((page.events, token))
    }
}

/// Events `/timestamp_to_event` looks at before it says none is there.
const MAX_TIMESTAMP_SCAN: i64 = 200;

impl Homeserver {
    /// `GET /rooms/{roomId}/timestamp_to_event` (spec, v1.6): the event closest to `ts`
    /// at or after it (`Forward`) or at or before it (`Backward`) that the user may see,
    /// with its `origin_server_ts`; 404 when there is none.
    pub async fn timestamp_to_event(
        &self,
        room_id: &RoomId,
        user: &UserId,
        ts: i64,
        dir: Direction,
    ) -> Result<(ruma::OwnedEventId, i64)> {
        let (membership, ceiling) = self.reading_ceiling(room_id, user).await?;
        let sql = match dir {
            Direction::Forward => {
                "SELECT event_id, json, origin_ts FROM events WHERE room_id = $1 AND origin_ts >= $2
                 AND stream_pos <= $3 ORDER BY origin_ts ASC, stream_pos ASC LIMIT $4"
            }
            Direction::Backward => {
                "SELECT event_id, json, origin_ts FROM events WHERE room_id = $1 AND origin_ts <= $2
                 AND stream_pos <= $3 ORDER BY origin_ts DESC, stream_pos DESC LIMIT $4"
            }
        };
        let rows = self
            .db
            .query(
                sql,
                vec![
                    room_id.as_str().into(),
                    Value::Int(ts),
                    Value::Int(ceiling),
                    Value::Int(MAX_TIMESTAMP_SCAN),
                ],
            )
            .await?;
        for r in &rows {
            let pdu = Pdu::from_stored(&r.text(0)?, &r.text(1)?)?;
            if self.can_see(user, &pdu, membership.as_deref()).await? {
                return Ok((pdu.event_id.clone(), r.int(2)?));
            }
        }
        Err(Error::not_found("No event found in that direction"))
    }
}
