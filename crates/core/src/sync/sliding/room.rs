//! One room of a sliding sync response (MSC4186 "Room results"): whole the first time a
//! connection sends it (`initial`), else only what changed since the connection last
//! sent it; its timeline, `required_state`, name, avatar, heroes, counts, `bump_stamp`.

use std::{collections::HashSet, sync::Arc};

use ruma::{events::StateEventType, DeviceId, OwnedEventId, RoomId, UserId};
use serde_json::{json, value::RawValue, Map, Value as Json};

use super::{
    connection::Sent,
    index::Entry,
    request::{RequiredState, RoomConfig},
};
use crate::{
    rooms::state::StateIds,
    sync::{filter::EventFilter, rooms::TimelineEvent, token::position_token, SyncToken},
    Homeserver, Result,
};

/// What a request knows while it builds rooms.
pub(super) struct Ctx<'a> {
    pub(super) user: &'a UserId,
    pub(super) device: &'a DeviceId,
    pub(super) now: SyncToken,
    /// The position of the connection's previous answer (`None`: a new connection).
    pub(super) since: Option<i64>,
    /// The timeline filter: the user's ignored users.
    pub(super) filter: &'a EventFilter,
}

/// A room's outcome.
pub(super) enum Outcome {
    /// Sent: its JSON, and what the connection now knows of it.
    Sent(Box<RawValue>, Sent),
    /// Looked at, nothing new: the connection knows it up to here (in memory only).
    Quiet(Sent),
    Skip,
}

/// A room's config and the lists it is in.
pub(super) struct Wanted<'a> {
    pub(super) config: std::borrow::Cow<'a, RoomConfig>,
    pub(super) required_state: Arc<RequiredState>,
    pub(super) lists: Vec<&'a str>,
    pub(super) is_dm: bool,
}

fn stripped(m: &str) -> bool {
    matches!(m, "invite" | "knock")
}

impl Homeserver {
    pub(super) async fn sliding_room(
        &self,
        ctx: &Ctx<'_>,
        room_id: &RoomId,
        e: &Entry,
        w: &Wanted<'_>,
        sent: Option<&Sent>,
    ) -> Result<Outcome> {
        let membership = e.m.membership.as_str();
        // Sent before with stripped state only (or only with the real thing): anew.
        let initial = sent.is_none_or(|s| {
            stripped(&s.membership) != stripped(membership)
                || (stripped(membership) && s.membership != membership)
        });
        let record = |pos: i64, counts: (u64, u64)| Sent {
            pos,
            membership: membership.to_owned(),
            timeline_limit: w.config.timeline_limit,
            required_state: w.required_state.clone(),
            counts,
            is_dm: w.is_dm,
        };
        let mut out = Map::new();
        if stripped(membership) {
            if !initial && sent.is_some_and(|s| s.pos >= e.m.changed_pos && s.is_dm == w.is_dm) {
                return Ok(Outcome::Skip);
            }
            // Spec ("Ignoring Users"): invites from ignored users are not sent.
            if membership == "invite" && self.invite_ignored(ctx.user, &e.m.event_id).await? {
                return Ok(Outcome::Skip);
            }
            let state = self.stripped_state(room_id, &e.m.event_id).await?;
            if initial {
                out.insert("initial".into(), true.into());
            }
            // matrix-sdk tells invites from knocks by the user's member event in it.
            out.insert("invite_state".into(), Json::Array(state));
            self.common_fields(&mut out, e, w, membership);
            return Ok(Outcome::Sent(
                serde_json::value::to_raw_value(&out)?,
                record(e.m.changed_pos, (0, 0)),
            ));
        }
        let joined = membership == "join";
        // A room the user left is shown as of the leave: nothing later is theirs.
        let upto = if joined { ctx.now.pos } else { e.m.changed_pos };
        let expanded_timeline =
            !initial && sent.is_some_and(|s| w.config.timeline_limit > s.timeline_limit);
        let expanded_state = !initial
            && sent.is_some_and(|s| {
                !Arc::ptr_eq(&w.required_state, &s.required_state)
                    && w.required_state.expands(&s.required_state)
            });
        let since_sent = sent.map_or(0, |s| s.pos);
        // Nothing after a leave is the user's: a room sent with its leave is done.
        if !joined
            && !expanded_timeline
            && !expanded_state
            && sent.is_some_and(|s| {
                s.membership == membership && s.pos >= e.m.changed_pos && s.is_dm == w.is_dm
            })
        {
            return Ok(Outcome::Skip);
        }
        if !initial
            && !expanded_timeline
            && !expanded_state
            && e.touched <= since_sent
            && e.m.changed_pos <= since_sent
            && sent.is_some_and(|s| s.is_dm == w.is_dm)
        {
            return Ok(Outcome::Skip);
        }
        let whole = initial || expanded_timeline;
        let from = if whole { None } else { Some(since_sent) };
        let (timeline, limited) = self
            .sliding_timeline(ctx, room_id, e, w.config.timeline_limit, from, upto)
            .await?;
        // The state the room is shown at, and (for a delta) what changed in it.
        let end: Arc<StateIds> = if joined {
            self.state_at(room_id, upto).await?.unwrap_or_default()
        } else {
            match self.event_place(&e.m.event_id).await? {
                Some(p) => self.state_group(p.state_after).await?.0,
                None => Arc::default(),
            }
        };
        let rs = &w.required_state;
        let mut picked: Vec<OwnedEventId> = Vec::new();
        let mut seen: HashSet<OwnedEventId> = HashSet::new();
        let mut pick = |id: &OwnedEventId, picked: &mut Vec<OwnedEventId>| {
            if seen.insert(id.clone()) {
                picked.push(id.clone());
            }
        };
        // (type, state key) of the state that changed, for name, avatar and members.
        let mut changed_keys: Vec<(StateEventType, String)> = Vec::new();
        if initial || expanded_state {
            for ((kind, key), id) in end.iter() {
                if rs.wants(&kind.to_string(), key, ctx.user) {
                    pick(id, &mut picked);
                }
            }
        } else if !limited && timeline.iter().all(|t| t.pos > since_sent) {
            // Every event since the room was sent is in the timeline: its state events
            // are what changed.
            for t in &timeline {
                if let Some(key) = &t.pdu.state_key {
                    let k = (StateEventType::from(t.pdu.kind.to_string()), key.clone());
                    if end.get(&k) == Some(&t.pdu.event_id) {
                        if rs.wants(&k.0.to_string(), key, ctx.user) {
                            pick(&t.pdu.event_id, &mut picked);
                        }
                        changed_keys.push(k);
                    }
                }
            }
        } else {
            let base = self
                .state_at(room_id, since_sent)
                .await?
                .unwrap_or_default();
            if !Arc::ptr_eq(&base, &end) {
                for (k, id) in end.iter() {
                    if base.get(k) != Some(id) {
                        if rs.wants(&k.0.to_string(), &k.1, ctx.user) {
                            pick(id, &mut picked);
                        }
                        changed_keys.push(k.clone());
                    }
                }
            }
        }
        // Lazy-loaded members (MSC4186): the timeline's senders and member targets.
        if rs.lazy() {
            let mut members: Vec<&str> = Vec::new();
            for t in &timeline {
                members.push(t.pdu.sender.as_str());
                if t.pdu.kind == ruma::events::TimelineEventType::RoomMember {
                    if let Some(k) = &t.pdu.state_key {
                        members.push(k);
                    }
                }
            }
            for m in members {
                if let Some(id) = end.get(&(StateEventType::RoomMember, m.to_owned())) {
                    pick(id, &mut picked);
                }
            }
        }
        // The client learns it left from its own member event (matrix-sdk reads state
        // only from `required_state`).
        if !joined {
            if let Some(id) = end.get(&(StateEventType::RoomMember, ctx.user.to_string())) {
                pick(id, &mut picked);
            }
        }
        let counts = if joined {
            self.unread_counts(room_id, ctx.user, e.m.changed_pos, ctx.now.pos)
                .await?
                .total()
        } else {
            (0, 0)
        };
        let nothing = timeline.is_empty()
            && picked.is_empty()
            && changed_keys.is_empty()
            && sent.is_some_and(|s| {
                s.counts == counts && s.is_dm == w.is_dm && s.membership == membership
            });
        if !initial && !expanded_timeline && !expanded_state && nothing {
            return Ok(Outcome::Quiet(record(upto, counts)));
        }
        if initial {
            out.insert("initial".into(), true.into());
        }
        if expanded_timeline {
            out.insert("expanded_timeline".into(), true.into());
            out.insert("unstable_expanded_timeline".into(), true.into());
        }
        let ids: Vec<&ruma::EventId> = picked.iter().map(|id| id.as_ref()).collect();
        let state_json = self.state_client_json(&ids).await?;
        // Name and avatar: whole the first time, then when they change (null: removed).
        let touched = |kind: &StateEventType| {
            initial || changed_keys.iter().any(|(k, s)| k == kind && s.is_empty())
        };
        let name = self.state_content(&end, StateEventType::RoomName).await?;
        let name = name
            .as_ref()
            .and_then(|c| c["name"].as_str())
            .filter(|n| !n.is_empty())
            .map(str::to_owned);
        if touched(&StateEventType::RoomName) && (name.is_some() || !initial) {
            out.insert("name".into(), name.clone().map_or(Json::Null, Json::from));
        }
        if touched(&StateEventType::RoomAvatar) {
            let avatar = self.state_content(&end, StateEventType::RoomAvatar).await?;
            let url = avatar
                .as_ref()
                .and_then(|c| c["url"].as_str())
                .filter(|u| !u.is_empty())
                .map(str::to_owned);
            if url.is_some() || !initial {
                out.insert("avatar".into(), url.map_or(Json::Null, Json::from));
            }
        }
        let members_moved = initial
            || limited
            || changed_keys
                .iter()
                .any(|(k, _)| *k == StateEventType::RoomMember);
        if joined && members_moved {
            let summary = self.summary(room_id, ctx.user).await?;
            out.insert(
                "joined_count".into(),
                summary["m.joined_member_count"].clone(),
            );
            out.insert(
                "invited_count".into(),
                summary["m.invited_member_count"].clone(),
            );
            if name.is_none() {
                out.insert(
                    "heroes".into(),
                    self.heroes(&end, &summary["m.heroes"]).await?,
                );
            }
        }
        if joined {
            out.insert("notification_count".into(), counts.0.into());
            out.insert("highlight_count".into(), counts.1.into());
        }
        let mut events = Vec::with_capacity(timeline.len());
        for t in &timeline {
            let txn = match &t.txn {
                Some((d, txn)) if t.pdu.sender == ctx.user && d == ctx.device.as_str() => {
                    Some(txn.as_str())
                }
                _ => None,
            };
            events.push(t.pdu.client_raw(None, txn, t.relations.as_deref())?);
        }
        let num_live = match ctx.since {
            Some(s) => timeline.iter().filter(|t| t.pos > s).count(),
            None => 0,
        };
        let prev_batch = timeline.first().map_or(upto, |t| t.pos - 1);
        out.insert("timeline".into(), serde_json::to_value(&events)?);
        out.insert("required_state".into(), serde_json::to_value(&state_json)?);
        out.insert("prev_batch".into(), position_token(prev_batch).into());
        if limited {
            out.insert("limited".into(), true.into());
        }
        out.insert("num_live".into(), num_live.into());
        self.common_fields(&mut out, e, w, membership);
        Ok(Outcome::Sent(
            serde_json::value::to_raw_value(&out)?,
            record(upto, counts),
        ))
    }

    /// `bump_stamp`, `membership`, `is_dm` and `lists`, on every room sent.
    fn common_fields(
        &self,
        out: &mut Map<String, Json>,
        e: &Entry,
        w: &Wanted<'_>,
        membership: &str,
    ) {
        out.insert("bump_stamp".into(), e.bump_stamp().into());
        out.insert("membership".into(), membership.into());
        out.insert("is_dm".into(), w.is_dm.into());
        if !w.lists.is_empty() {
            out.insert("lists".into(), w.lists.clone().into());
        }
    }

    /// The timeline: events in `(from, upto]` the user may see, newest `limit`.
    async fn sliding_timeline(
        &self,
        ctx: &Ctx<'_>,
        room_id: &RoomId,
        e: &Entry,
        limit: usize,
        from: Option<i64>,
        upto: i64,
    ) -> Result<(Vec<TimelineEvent>, bool)> {
        if limit == 0 {
            // No events asked for: limited when there were some.
            let newest = e.last_pos.min(upto);
            return Ok((Vec::new(), newest > from.unwrap_or(0)));
        }
        let mut f = ctx.filter.clone();
        f.limit = Some(limit);
        self.timeline(
            room_id,
            &f,
            from,
            upto,
            (ctx.user, &e.m.membership, e.m.changed_pos),
            None,
        )
        .await
    }

    /// The content of a state event (empty state key) in `state`.
    async fn state_content(&self, state: &StateIds, kind: StateEventType) -> Result<Option<Json>> {
        let Some(id) = state.get(&(kind, String::new())) else {
            return Ok(None);
        };
        Ok(self
            .get_pdu(id)
            .await?
            .and_then(|p| serde_json::from_str(p.content.get()).ok()))
    }

    /// MSC4186 `heroes`: the summary's heroes with their display names and avatars.
    async fn heroes(&self, state: &StateIds, ids: &Json) -> Result<Json> {
        let mut out = Vec::new();
        for id in ids
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Json::as_str)
        {
            let mut hero = json!({ "user_id": id });
            if let Some(ev) = state.get(&(StateEventType::RoomMember, id.to_owned())) {
                if let Some(p) = self.get_pdu(ev).await? {
                    let c: Json = serde_json::from_str(p.content.get()).unwrap_or_default();
                    if let Some(n) = c["displayname"].as_str() {
                        hero["displayname"] = n.into();
                    }
                    if let Some(a) = c["avatar_url"].as_str() {
                        hero["avatar_url"] = a.into();
                    }
                }
            }
            out.push(hero);
        }
        Ok(Json::Array(out))
    }
}
