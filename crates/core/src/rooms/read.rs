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

    /// The state a user may read: current while joined, else as of their leaving.
    pub async fn visible_state(&self, room_id: &RoomId, user: &UserId) -> Result<StateIds> {
        let (membership, _) = self.require_membership(room_id, user).await?;
        if membership == "join" {
            return self.current_state_ids(room_id).await;
        }
        if membership == "invite" || membership == "knock" {
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
        if pdu.room_id.as_deref().is_some_and(|r| r != room_id) && pdu.room_id.is_some() {
            return Err(Error::not_found("Event not found"));
        }
        if !self.can_see(user, &pdu, membership.as_deref()).await? {
            return Err(Error::not_found("Event not found"));
        }
        Ok(pdu)
    }

    /// `/messages`: events by stream position from `from` (exclusive) in `dir`, stopping at
    /// `to`, keeping those `keep` accepts and the user may see. A user who left sees nothing
    /// after leaving.
    pub async fn messages(
        &self,
        room_id: &RoomId,
        user: &UserId,
        page: PageRequest,
        keep: &(dyn Fn(&Pdu) -> bool + Send + Sync),
    ) -> Result<Page> {
        let PageRequest {
            from,
            to,
            dir,
            limit,
        } = page;
        let (membership, member_pos) = self.require_membership(room_id, user).await?;
        let ceiling = if membership == "join" {
            i64::MAX
        } else {
            member_pos
        };
        let limit = limit.clamp(1, self.config.max_timeline_limit);
        let start = from.unwrap_or(match dir {
            Direction::Backward => self.current_pos() + 1,
            Direction::Forward => 0,
        });
        let mut events = Vec::new();
        let mut cursor = start;
        // Filtered-out or hidden events do not shorten the page, but one request reads at
        // most `MAX_SCAN_FACTOR` rows per event asked for: past that it answers with what
        // it found and a token to go on from (`end`).
        let max_scan = limit * MAX_SCAN_FACTOR;
        let mut scanned = 0;
        // Reads in chunks so filtered-out events do not shorten the page.
        'outer: loop {
            let rows = match dir {
                Direction::Backward => {
                    self.db
                        .query(
                            "SELECT event_id, json, stream_pos FROM events WHERE room_id = $1 AND stream_pos < $2
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
                    (Direction::Backward, Some(t)) => pos < t,
                    (Direction::Forward, Some(t)) => pos >= t,
                    _ => false,
                };
                if past_to {
                    break 'outer;
                }
                if scanned == max_scan {
                    return Ok(Page {
                        events,
                        start,
                        end: Some(cursor),
                    });
                }
                scanned += 1;
                cursor = pos;
                let pdu = Pdu::from_stored(&r.text(0)?, &r.text(1)?)?;
                if keep(&pdu) && self.can_see(user, &pdu, Some(&membership)).await? {
                    events.push(pdu);
                    if events.len() >= limit {
                        return Ok(Page {
                            events,
                            start,
                            end: Some(cursor),
                        });
                    }
                }
            }
        }
        Ok(Page {
            events,
            start,
            end: None,
        })
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

    /// One side of `/context`: a bounded `/messages` page from `pos`, with the token to go
    /// on from: the page's `end`, else (the room's start or end was reached) its last event.
    async fn context_side(
        &self,
        room_id: &RoomId,
        user: &UserId,
        pos: i64,
        dir: Direction,
        limit: usize,
        keep: &(dyn Fn(&Pdu) -> bool + Send + Sync),
    ) -> Result<(Vec<Pdu>, i64)> {
        if limit == 0 {
            return Ok((Vec::new(), pos));
        }
        let req = PageRequest {
            from: Some(pos),
            to: None,
            dir,
            limit,
        };
        let page = self.messages(room_id, user, req, keep).await?;
        let token = match (page.end, page.events.last()) {
            (Some(end), _) => end,
            (None, Some(p)) => self
                .event_place(&p.event_id)
                .await?
                .map_or(pos, |pl| pl.pos),
            (None, None) => pos,
        };
        Ok((page.events, token))
    }
}
