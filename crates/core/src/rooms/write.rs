//! The write path (design brief, "Write path and streams"): every event that enters a room,
//! local or remote, goes through [`Homeserver::append_pdu`] under the room's lock.

use std::{collections::HashSet, sync::Arc};

use rand::Rng;
use ruma::{
    events::{StateEventType, TimelineEventType},
    room_version_rules::RoomVersionRules,
    state_res::{self, StateMap},
    OwnedEventId, RoomId, RoomVersionId,
};

use super::{
    auth_chain::{self, EventMap},
    head::RoomHead,
    state::StateIds,
    Pdu,
};
use crate::{
    homeserver::{Audience, Stream},
    ports::{Statement, Value},
    storage::query_opt,
    Error, Homeserver, Result,
};

/// Where a stored event sits: its stream position and state groups.
#[derive(Clone, Copy, Debug)]
pub struct EventPlace {
    pub pos: i64,
    pub state_before: i64,
    pub state_after: i64,
}

/// The client transaction that produced a local event (spec: "Transaction identifiers").
pub struct Txn<'a> {
    pub user_id: &'a str,
    pub device_id: &'a str,
    pub scope: String,
    pub txn_id: &'a str,
}

fn new_group_id() -> i64 {
    rand::thread_rng().gen_range(1..i64::MAX)
}

impl Homeserver {
    /// An event by ID, shared with the cache.
    pub async fn get_pdu(&self, id: &ruma::EventId) -> Result<Option<Arc<Pdu>>> {
        if let Some(p) = self.pdu_cache.get(&id.to_owned()) {
            return Ok(Some(p));
        }
        let row = query_opt(
            self.db.as_ref(),
            "SELECT json FROM events WHERE event_id = $1",
            vec![id.as_str().into()],
        )
        .await?;
        let pdu = row
            .map(|r| Pdu::from_stored(id.as_str(), &r.text(0)?).map(Arc::new))
            .transpose()?;
        if let Some(p) = &pdu {
            self.pdu_cache.put(id.to_owned(), p.clone());
        }
        Ok(pdu)
    }

    pub async fn event_place(&self, id: &ruma::EventId) -> Result<Option<EventPlace>> {
        // An event's place never changes once stored.
        if let Some(place) = self.place_cache.get(&id.to_owned()) {
            return Ok(Some(place));
        }
        let row = query_opt(
            self.db.as_ref(),
            "SELECT stream_pos, state_before, state_after FROM events WHERE event_id = $1",
            vec![id.as_str().into()],
        )
        .await?;
        let place = row
            .map(|r| {
                Ok::<_, Error>(EventPlace {
                    pos: r.int(0)?,
                    state_before: r.int(1)?,
                    state_after: r.int(2)?,
                })
            })
            .transpose()?;
        if let Some(p) = place {
            self.place_cache.put(id.to_owned(), p);
        }
        Ok(place)
    }

    pub async fn room_version(&self, room_id: &RoomId) -> Result<RoomVersionId> {
        // A room's version never changes.
        if let Some(v) = self.version_cache.get(&room_id.to_owned()) {
            return Ok(v);
        }
        let row = query_opt(
            self.db.as_ref(),
            "SELECT room_version FROM rooms WHERE room_id = $1",
            vec![room_id.as_str().into()],
        )
        .await?
        .ok_or_else(|| Error::not_found("Unknown room"))?;
        let version = RoomVersionId::try_from(row.text(0)?).map_err(Error::internal)?;
        self.version_cache.put(room_id.to_owned(), version.clone());
        Ok(version)
    }

    /// Resolves several state maps with state resolution v2 (v2.1 from room v12 on).
    pub async fn resolve_states(
        &self,
        rules: &RoomVersionRules,
        states: &[Arc<StateIds>],
    ) -> Result<StateIds> {
        let Some(first) = states.first() else {
            return Ok(StateIds::new());
        };
        if states.iter().all(|s| s == first) {
            return Ok((**first).clone());
        }
        let v2 = rules
            .state_res
            .v2_rules()
            .ok_or_else(|| Error::Internal("state resolution v1 is not supported".into()))?;
        let mut events = EventMap::new();
        self.load_auth_closure(states.iter().flat_map(|s| s.values().cloned()), &mut events)
            .await?;
        let auth_chains = states
            .iter()
            .map(|s| {
                s.values()
                    .flat_map(|id| {
                        let mut chain = auth_chain::auth_chain(id, &events);
                        chain.insert(id.clone());
                        chain
                    })
                    .collect()
            })
            .collect();
        let maps: Vec<&StateMap<OwnedEventId>> = states.iter().map(|s| &**s).collect();
        state_res::resolve(
            &rules.authorization,
            v2,
            maps,
            auth_chains,
            |id| events.get(id).cloned(),
            |conflicted| {
                Some(
                    auth_chain::conflicted_subgraph(conflicted, &events)
                        .into_iter()
                        .collect(),
                )
            },
        )
        .map_err(|e| Error::forbidden(format!("state resolution failed: {e}")))
    }

    /// The state after an event, from its stored group: (state, group id, chain length).
    async fn state_after(&self, id: &ruma::EventId) -> Result<(Arc<StateIds>, i64, i64)> {
        let place = self
            .event_place(id)
            .await?
            .ok_or_else(|| Error::Internal(format!("unknown prev event {id}")))?;
        let (state, chain) = self.state_group(place.state_after).await?;
        Ok((state, place.state_after, chain))
    }

    /// Authorises and persists one PDU. The caller holds the room lock. Checks (spec:
    /// server-server API, "Checks performed on receipt of a PDU"): format, auth events,
    /// state before the event (resolved over its `prev_events`), then the new forward
    /// extremities and current state are derived and everything lands in one batch.
    pub async fn append_pdu(
        &self,
        room_id: &RoomId,
        version: &RoomVersionId,
        pdu: Pdu,
        txn: Option<Txn<'_>>,
    ) -> Result<EventPlace> {
        let rules = version
            .rules()
            .ok_or_else(|| Error::Internal(format!("unknown room version {version}")))?;
        if let Some(place) = self.event_place(&pdu.event_id).await? {
            return Ok(place);
        }
        state_res::check_pdu_format(&pdu.json, &rules.event_format).map_err(Error::bad_json)?;
        let is_create = pdu.kind == TimelineEventType::RoomCreate;
        if is_create != pdu.prev_events.is_empty() {
            return Err(Error::bad_json("only m.room.create has no prev_events"));
        }

        // State before the event.
        let mut prev_states = Vec::with_capacity(pdu.prev_events.len());
        for prev in &pdu.prev_events {
            prev_states.push(self.state_after(prev).await?);
        }
        let mut groups = Vec::new();
        let (before, before_id, before_chain) = match prev_states.as_slice() {
            [] => {
                let g = self.plan_group(room_id, new_group_id(), None, StateIds::new());
                let planned = (g.state.clone(), g.id, g.chain);
                groups.push(g);
                planned
            }
            [(state, id, chain)] => (state.clone(), *id, *chain),
            many => {
                let states: Vec<_> = many.iter().map(|(s, _, _)| s.clone()).collect();
                let resolved = self.resolve_states(&rules, &states).await?;
                let (s0, id0, c0) = &many[0];
                let g = self.plan_group(
                    room_id,
                    new_group_id(),
                    Some((*id0, s0.clone(), *c0)),
                    resolved,
                );
                let planned = (g.state.clone(), g.id, g.chain);
                groups.push(g);
                planned
            }
        };

        self.authorize(&rules, &pdu, &before).await?;
        let redaction = self.apply_redaction(&pdu, &before, &rules).await?;
        let redaction_target = redaction.as_ref().and(pdu.redacts.clone());

        // State after the event.
        let (after, after_id) = match &pdu.state_key {
            Some(key) => {
                let mut state = (*before).clone();
                state.insert(
                    (StateEventType::from(pdu.kind.to_string()), key.clone()),
                    pdu.event_id.clone(),
                );
                let g = self.plan_group(
                    room_id,
                    new_group_id(),
                    Some((before_id, before.clone(), before_chain)),
                    state,
                );
                let planned = (g.state.clone(), g.id);
                groups.push(g);
                planned
            }
            None => (before.clone(), before_id),
        };

        // New forward extremities and the room's current state.
        let head = self.room_head(room_id).await?;
        let prevs: HashSet<_> = pdu.prev_events.iter().collect();
        let mut new_ext: Vec<OwnedEventId> = head
            .extremities
            .iter()
            .filter(|e| !prevs.contains(e))
            .cloned()
            .collect();
        new_ext.push(pdu.event_id.clone());
        new_ext.sort();
        let current = if new_ext.len() == 1 {
            after.clone()
        } else {
            let mut states = vec![after.clone()];
            for e in new_ext.iter().filter(|e| **e != pdu.event_id) {
                states.push(self.state_after(e).await?.0);
            }
            Arc::new(self.resolve_states(&rules, &states).await?)
        };
        let old_current = head.state.clone();
        let changed: Vec<_> = current
            .iter()
            .filter(|(k, v)| old_current.get(*k) != Some(*v))
            .collect();
        let mut member_changes = Vec::new();
        for ((kind, key), id) in &changed {
            if *kind == StateEventType::RoomMember {
                if let Ok(user) = ruma::UserId::parse(key.as_str()) {
                    if user.server_name() == self.server_name() {
                        let membership = if *id == &pdu.event_id {
                            membership_of(&pdu)
                        } else {
                            self.get_pdu(id)
                                .await?
                                .as_ref()
                                .map(|p| membership_of(p))
                                .unwrap_or_default()
                        };
                        member_changes.push((key.clone(), (*id).clone(), membership));
                    }
                }
            }
        }

        let json = serde_json::to_string(&pdu.json)?;
        let state_stmts: Vec<Statement> = changed
            .iter()
            .map(|((kind, key), id)| {
                Statement::new(
                    "INSERT INTO current_state (room_id, type, state_key, event_id) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (room_id, type, state_key) DO UPDATE SET event_id = excluded.event_id",
                    vec![room_id.as_str().into(), kind.to_string().into(), key.as_str().into(), id.as_str().into()],
                )
            })
            .collect();
        let group_stmts: Vec<Statement> =
            groups.iter().flat_map(|g| g.statements.clone()).collect();
        let event_id = pdu.event_id.clone();
        let streams: &[Stream] = if member_changes.is_empty() {
            &[Stream::Events]
        } else {
            &[Stream::Events, Stream::Memberships]
        };
        let new_head = RoomHead {
            extremities: new_ext,
            state: current.clone(),
        };
        let committed = |pos| {
            self.set_room_head(room_id, new_head);
            for g in &groups {
                self.cache_group(g);
            }
            if let Some(target) = &redaction_target {
                self.pdu_cache.remove(target);
            }
            self.pdu_cache
                .put(pdu.event_id.clone(), Arc::new(pdu.clone()));
            self.place_cache.put(
                pdu.event_id.clone(),
                EventPlace {
                    pos,
                    state_before: before_id,
                    state_after: after_id,
                },
            );
        };
        let pos = self
            .commit_then(streams, Audience::Room(room_id), |pos| {
                let mut b = group_stmts;
                b.push(Statement::new(
                    "INSERT INTO events (event_id, room_id, stream_pos, depth, sender, type, state_key, json, state_before, state_after)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                    vec![
                        event_id.as_str().into(),
                        room_id.as_str().into(),
                        Value::Int(pos),
                        Value::Int(pdu.depth.min(i64::MAX as u64) as i64),
                        pdu.sender.as_str().into(),
                        pdu.kind.to_string().into(),
                        pdu.state_key.clone().into(),
                        json.into(),
                        Value::Int(before_id),
                        Value::Int(after_id),
                    ],
                ));
                if let Some(t) = &txn {
                    b.push(Statement::new(
                        "INSERT INTO event_txns (user_id, device_id, scope, txn_id, event_id) VALUES ($1, $2, $3, $4, $5)",
                        vec![t.user_id.into(), t.device_id.into(), t.scope.as_str().into(), t.txn_id.into(), event_id.as_str().into()],
                    ));
                }
                for prev in &pdu.prev_events {
                    b.push(Statement::new(
                        "DELETE FROM forward_extremities WHERE room_id = $1 AND event_id = $2",
                        vec![room_id.as_str().into(), prev.as_str().into()],
                    ));
                }
                b.push(Statement::new(
                    "INSERT INTO forward_extremities (room_id, event_id) VALUES ($1, $2)",
                    vec![room_id.as_str().into(), event_id.as_str().into()],
                ));
                b.extend(state_stmts);
                b.extend(redaction);
                for (user, id, membership) in member_changes {
                    b.push(Statement::new(
                        "INSERT INTO memberships (room_id, user_id, membership, event_id, stream_pos, forgotten)
                         VALUES ($1, $2, $3, $4, $5, 0)
                         ON CONFLICT (room_id, user_id) DO UPDATE SET membership = excluded.membership,
                           event_id = excluded.event_id, stream_pos = excluded.stream_pos, forgotten = 0",
                        vec![room_id.as_str().into(), user.into(), membership.into(), id.as_str().into(), Value::Int(pos)],
                    ));
                }
                b
            }, committed)
            .await
            .inspect_err(|_| self.forget_room_head(room_id))?;
        Ok(EventPlace {
            pos,
            state_before: before_id,
            state_after: after_id,
        })
    }

    /// Auth checks against the event's own auth events and the state before it.
    async fn authorize(
        &self,
        rules: &RoomVersionRules,
        pdu: &Pdu,
        before: &StateIds,
    ) -> Result<()> {
        let mut auth = EventMap::new();
        for id in &pdu.auth_events {
            if let Some(p) = self.get_pdu(id).await? {
                auth.insert(id.clone(), p);
            }
        }
        // v12: the create event is referenced by the room ID, not in auth_events.
        if let Some(room_id) = &pdu.room_id {
            if let Some(create_id) = create_event_id_of(room_id) {
                if let Some(p) = self.get_pdu(&create_id).await? {
                    auth.insert(create_id, p);
                }
            }
        }
        state_res::check_state_independent_auth_rules(&rules.authorization, pdu, |id| auth.get(id))
            .map_err(|e| Error::forbidden(format!("event not authorised: {e}")))?;

        let needed = state_res::auth_types_for_event(
            &pdu.kind,
            &pdu.sender,
            pdu.state_key.as_deref(),
            &pdu.content,
            &rules.authorization,
        )
        .map_err(Error::bad_json)?;
        let mut state_events = StateMap::new();
        let create_key = (StateEventType::RoomCreate, String::new());
        for key in needed.into_iter().chain(std::iter::once(create_key)) {
            if let Some(id) = before.get(&key) {
                if let Some(p) = self.get_pdu(id).await? {
                    state_events.insert(key, p);
                }
            }
        }
        state_res::check_state_dependent_auth_rules(&rules.authorization, pdu, |kind, key| {
            state_events.get(&(kind.clone(), key.to_owned()))
        })
        .map_err(|e| Error::forbidden(format!("event not authorised: {e}")))
    }
}

/// `content.membership` of a member event.
pub fn membership_of(pdu: &Pdu) -> String {
    serde_json::from_str::<serde_json::Value>(pdu.content.get())
        .ok()
        .and_then(|c| {
            c.get("membership")
                .and_then(|m| m.as_str())
                .map(str::to_owned)
        })
        .unwrap_or_default()
}

/// From room v12 on, a room ID is the create event's reference hash (spec: room v12,
/// "Room IDs"); earlier room IDs carry a server name and say nothing about the event.
pub fn create_event_id_of(room_id: &RoomId) -> Option<OwnedEventId> {
    if room_id.server_name().is_some() {
        return None;
    }
    ruma::EventId::parse(format!("${}", room_id.as_str().trim_start_matches('!'))).ok()
}
