//! The write path (design brief, "Write path and streams"): every event that enters a room,
//! local or remote, is planned by [`Homeserver::plan_pdu`] and committed by
//! [`Homeserver::commit_write`], under the room's planning lock (`tip.rs`).
//!
//! A [`RoomWrite`] is one transaction on one room. It may hold several events (a new room's
//! initial events), each planned against the head the previous one left; all of them
//! commit in one batch with consecutive stream positions, or none does.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use rand::Rng;
use ruma::{
    events::{StateEventType, TimelineEventType},
    room_version_rules::RoomVersionRules,
    state_res::{self, StateMap},
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, OwnedRoomId, RoomId, RoomVersionId,
};

mod auth;
mod commit;
mod rows;

use super::{
    auth_chain::{self, EventMap},
    head::RoomHead,
    state::{Group, NewGroup, StateIds},
    tip::{Doomed, Queued, RoomLock, TipRelease, TipView},
    Pdu,
};
use crate::{
    commit::Landed,
    homeserver::{Audience, Stream},
    ports::Statement,
    Error, Homeserver, Result,
};
use rows::step_statements;

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

/// One transaction on a room; see the module documentation. Hold the room lock from
/// [`Homeserver::begin_write`] until [`Homeserver::commit_write`].
pub struct RoomWrite {
    room_id: OwnedRoomId,
    /// The room's planning lock (`tip.rs`): the next write plans on the head this one
    /// leaves, behind it in the queue or after it was published.
    lock: RoomLock,
    /// The writes queued ahead of this one when it began, and their epoch.
    tip: TipView,
    rules: RoomVersionRules,
    /// The head as the planned events leave it.
    head: Arc<RoomHead>,
    /// Statements that go before the events (a new room's `rooms` row).
    prelude: Vec<Statement>,
    steps: Vec<Step>,
    /// Planned events and their state groups, visible to the events planned after them.
    pdus: HashMap<OwnedEventId, Arc<Pdu>>,
    places: HashMap<OwnedEventId, (i64, i64)>,
    groups: Vec<NewGroup>,
}

/// One planned event: what its rows need once its stream position is known.
struct Step {
    pdu: Arc<Pdu>,
    json: String,
    state_before: i64,
    state_after: i64,
    txn: Option<[String; 4]>,
    /// Current-state rows to write, with the membership of member events.
    state_changes: Vec<(StateEventType, String, OwnedEventId, Option<String>)>,
    /// Keys state resolution dropped (every event for them failed auth).
    state_removals: Vec<(StateEventType, String)>,
    member_changes: Vec<(String, OwnedEventId, String)>,
    /// How the room's joined members change (`rooms.joined_members`, for the directory).
    joined_delta: i64,
    /// Its push outcomes, when it notifies anyone.
    push: Option<crate::push::evaluate::PushRows>,
    /// Its row in the search index, when it has text to search.
    search: Option<crate::search::SearchRow>,
    /// A redaction that applies: the events it rewrites (the target, and state events
    /// whose `prev_content` held its content) and the statements that do it.
    redaction: Option<(Vec<OwnedEventId>, Vec<Statement>)>,
    /// The one forward extremity the event replaces, when its only `prev_event` is one
    /// (the usual, linear case): one row changes rather than one goes and one comes.
    replaces: Option<OwnedEventId>,
    /// May be queued behind the room's queued writes (`tip.rs`): a message or other
    /// non-state event, no redaction, following the room's one forward extremity. It
    /// changes no state, and its extremity row moves under a guard.
    queueable: bool,
}

impl RoomWrite {
    pub fn room_id(&self) -> &RoomId {
        &self.room_id
    }

    pub(crate) fn head(&self) -> &RoomHead {
        &self.head
    }

    pub(crate) fn push_prelude(&mut self, statement: Statement) {
        self.prelude.push(statement);
    }

    /// The membership of a member key in the head as planned so far (`None` for other
    /// keys and users without a member event).
    async fn head_membership(
        &self,
        hs: &Homeserver,
        kind: &StateEventType,
        key: &str,
    ) -> Result<Option<String>> {
        if *kind != StateEventType::RoomMember {
            return Ok(None);
        }
        let Some(id) = self.head.state.get(&(kind.clone(), key.to_owned())) else {
            return Ok(None);
        };
        Ok(self.pdu(hs, id).await?.map(|p| membership_of(&p)))
    }

    /// An event planned here or by a write queued ahead, else a stored one.
    pub(crate) async fn pdu(
        &self,
        hs: &Homeserver,
        id: &ruma::EventId,
    ) -> Result<Option<Arc<Pdu>>> {
        match self.pdus.get(id).or_else(|| self.tip.pdu(id)) {
            Some(p) => Ok(Some(p.clone())),
            None => hs.get_pdu(id).await,
        }
    }

    async fn group(&self, hs: &Homeserver, id: i64) -> Result<Group> {
        match self.groups.iter().find(|g| g.id == id) {
            Some(g) => Ok(g.group.clone()),
            None => match self.tip.group(id) {
                Some(g) => Ok(g.clone()),
                None => hs.state_group_info(id).await,
            },
        }
    }

    /// Whether an event is planned here or queued ahead. Whether it is stored is asked
    /// before (`append_pdu`), or needs no asking: a local event is new, its ID a hash of
    /// its fresh content (one read less per message).
    fn known(&self, id: &ruma::EventId) -> bool {
        self.places.contains_key(id) || self.tip.place(id).is_some()
    }

    /// The state after an event: its group and the group's id.
    async fn state_after(&self, hs: &Homeserver, id: &ruma::EventId) -> Result<(Group, i64)> {
        let after = match self.places.get(id).copied().or_else(|| self.tip.place(id)) {
            Some((_, after)) => after,
            None => {
                hs.event_place(id)
                    .await?
                    .ok_or_else(|| Error::Internal(format!("unknown prev event {id}")))?
                    .state_after
            }
        };
        Ok((self.group(hs, after).await?, after))
    }
}

impl Homeserver {
    /// Starts a transaction on `room_id`, whose lock the caller took (`lock`), on the
    /// head the writes queued ahead leave, else the committed one.
    pub(crate) async fn begin_write(
        &self,
        room_id: &RoomId,
        version: &RoomVersionId,
        lock: RoomLock,
    ) -> Result<RoomWrite> {
        let rules = version
            .rules()
            .ok_or_else(|| Error::Internal(format!("unknown room version {version}")))?;
        let mut tip = lock.gate.view();
        // No tip, yet writes queued: ones planned behind a write that failed, or, after an
        // outcome unknown, ones that may land. The database is up to date once they are out.
        while tip.head.is_none() {
            match lock.gate.last_queued() {
                Some(last) => self.published(last).await,
                None => break,
            }
            tip = lock.gate.view();
        }
        let head = match &tip.head {
            Some(head) => head.clone(),
            None => self.room_head_locked(room_id).await?,
        };
        Ok(RoomWrite {
            room_id: room_id.to_owned(),
            lock,
            tip,
            rules,
            head,
            prelude: Vec::new(),
            steps: Vec::new(),
            pdus: HashMap::new(),
            places: HashMap::new(),
            groups: Vec::new(),
        })
    }

    /// Authorises and persists one PDU: [`Homeserver::plan_pdu`] then
    /// [`Homeserver::commit_write`], under the room's lock (`lock`).
    pub(crate) async fn append_pdu(
        &self,
        room_id: &RoomId,
        version: &RoomVersionId,
        pdu: Pdu,
        txn: Option<Txn<'_>>,
        lock: RoomLock,
    ) -> Result<EventPlace> {
        if let Some(place) = self.event_place(&pdu.event_id).await? {
            return Ok(place);
        }
        let mut w = self.begin_write(room_id, version, lock).await?;
        if w.tip.place(&pdu.event_id).is_some() {
            // Queued already (a copy received twice): its place once it is published.
            self.settle_queued(&w.lock, &w.tip).await?;
            return self
                .event_place(&pdu.event_id)
                .await?
                .ok_or_else(|| Error::internal("a queued event did not land"));
        }
        self.plan_pdu(&mut w, pdu, txn).await?;
        self.commit_write(w)
            .await?
            .pop()
            .ok_or_else(|| Error::internal("nothing was written"))
    }

    /// Checks one PDU and plans its rows (spec: server-server API, "Checks performed on
    /// receipt of a PDU"): format, auth events, the state before it (resolved over its
    /// `prev_events`), auth against that state; then the new forward extremities and the
    /// room's current state. An event already stored or planned is skipped.
    pub(crate) async fn plan_pdu(
        &self,
        w: &mut RoomWrite,
        pdu: Pdu,
        txn: Option<Txn<'_>>,
    ) -> Result<()> {
        if w.known(&pdu.event_id) {
            return Ok(());
        }
        // Not queued behind others (see `Step::queueable`): a redaction's target must be
        // stored for its rows to be rewritten, and a state event is planned on what landed.
        if pdu.kind == TimelineEventType::RoomRedaction || pdu.state_key.is_some() {
            self.settle_queued(&w.lock, &w.tip).await?;
        }
        let rules = w.rules.clone();
        let room_id = w.room_id.clone();
        state_res::check_pdu_format(&pdu.json, &rules.event_format).map_err(Error::bad_json)?;
        let is_create = pdu.kind == TimelineEventType::RoomCreate;
        if is_create != pdu.prev_events.is_empty() {
            return Err(Error::bad_json("only m.room.create has no prev_events"));
        }

        // State before the event.
        let mut prev_states = Vec::with_capacity(pdu.prev_events.len());
        for prev in &pdu.prev_events {
            prev_states.push(w.state_after(self, prev).await?);
        }
        let mut groups = Vec::new();
        let (before_group, before_id) = match prev_states.as_slice() {
            [] => {
                let g = self.plan_group(&room_id, new_group_id(), None, StateIds::new(), None);
                let planned = (g.group.clone(), g.id);
                groups.push(g);
                planned
            }
            [(group, id)] => (group.clone(), *id),
            many => {
                let states: Vec<_> = many.iter().map(|(g, _)| g.state.clone()).collect();
                let resolved = self.resolve_states(&rules, &states).await?;
                let (g0, id0) = &many[0];
                let g = self.plan_group(
                    &room_id,
                    new_group_id(),
                    Some((*id0, g0.clone())),
                    resolved,
                    None,
                );
                let planned = (g.group.clone(), g.id);
                groups.push(g);
                planned
            }
        };
        let before = before_group.state.clone();

        self.authorize(w, &pdu, &before).await?;
        let redaction = self.apply_redaction(&pdu, &before, &rules).await?;

        // State after the event.
        let (after, after_id) = match &pdu.state_key {
            Some(key) => {
                let mut state = (*before).clone();
                let key = (StateEventType::from(pdu.kind.to_string()), key.clone());
                state.insert(key.clone(), pdu.event_id.clone());
                let g = self.plan_group(
                    &room_id,
                    new_group_id(),
                    Some((before_id, before_group.clone())),
                    state,
                    Some(&key),
                );
                let planned = (g.group.state.clone(), g.id);
                groups.push(g);
                planned
            }
            None => (before.clone(), before_id),
        };

        // New forward extremities and the room's current state.
        let prevs: HashSet<_> = pdu.prev_events.iter().collect();
        let replaces = match pdu.prev_events.as_slice() {
            [prev] if w.head.extremities.contains(prev) => Some(prev.clone()),
            _ => None,
        };
        let queueable = replaces.is_some()
            && w.head.extremities.len() == 1
            && pdu.state_key.is_none()
            && pdu.kind != TimelineEventType::RoomRedaction;
        let mut new_ext: Vec<OwnedEventId> = w
            .head
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
                states.push(w.state_after(self, e).await?.0.state);
            }
            Arc::new(self.resolve_states(&rules, &states).await?)
        };
        let mut state_changes = Vec::new();
        let mut member_changes = Vec::new();
        let mut joined_delta = 0;
        // On a head that is the state before the event (the usual, linear case), only the
        // event's own key can change: no need to compare whole states, whatever their size.
        let linear = new_ext.len() == 1 && w.head.state_group == Some(before_id);
        let candidates: Vec<(&(StateEventType, String), &OwnedEventId)> =
            match (&pdu.state_key, linear) {
                (None, true) => Vec::new(),
                (Some(key), true) => {
                    let k = (StateEventType::from(pdu.kind.to_string()), key.clone());
                    current.get_key_value(&k).into_iter().collect()
                }
                (_, false) => current.iter().collect(),
            };
        for ((kind, key), id) in candidates {
            if w.head.state.get(&(kind.clone(), key.clone())) == Some(id) {
                continue;
            }
            if *kind != StateEventType::RoomMember {
                state_changes.push((kind.clone(), key.clone(), id.clone(), None));
                continue;
            }
            let membership = if *id == pdu.event_id {
                membership_of(&pdu)
            } else {
                w.pdu(self, id)
                    .await?
                    .map(|p| membership_of(&p))
                    .unwrap_or_default()
            };
            let was_joined = w.head_membership(self, kind, key).await?.as_deref() == Some("join");
            joined_delta += i64::from(membership == "join") - i64::from(was_joined);
            state_changes.push((
                kind.clone(),
                key.clone(),
                id.clone(),
                Some(membership.clone()),
            ));
            let local = ruma::UserId::parse(key.as_str())
                .is_ok_and(|user| user.server_name() == self.server_name());
            if local {
                member_changes.push((key.clone(), id.clone(), membership));
            }
        }

        let state_removals: Vec<_> = if linear {
            Vec::new()
        } else {
            w.head
                .state
                .keys()
                .filter(|k| !current.contains_key(*k))
                .cloned()
                .collect()
        };
        for (kind, key) in &state_removals {
            if w.head_membership(self, kind, key).await?.as_deref() == Some("join") {
                joined_delta -= 1;
            }
        }

        let mut pdu = pdu;
        if pdu.state_key.is_some() {
            self.note_replaced_state(w, &mut pdu, &before).await?;
        }
        let json = serde_json::to_string(&pdu.json)?;
        let pdu = Arc::new(pdu);
        let group = (new_ext.len() == 1).then_some(after_id);
        // The state did not change: the head keeps its state (and what was worked out of it).
        let unchanged = (linear && pdu.state_key.is_none()) || Arc::ptr_eq(&current, &w.head.state);
        let server = self.server_name();
        w.head = Arc::new(match (&pdu.state_key, unchanged, linear) {
            (_, true, _) => w.head.with_extremities(new_ext),
            (Some(key), false, true) => {
                let key = (StateEventType::from(pdu.kind.to_string()), key.clone());
                w.head
                    .after_state_event(new_ext, current, group, &key, server, joined_delta)
            }
            _ => RoomHead::new(new_ext, current, group),
        });
        // Who the event notifies, in its own batch (`push/evaluate.rs`).
        let push = self.push_rows(w, &rules, &pdu, &json).await?;
        let search = crate::search::search_row(self.db.engine(), &pdu);
        w.pdus.insert(pdu.event_id.clone(), pdu.clone());
        w.places.insert(pdu.event_id.clone(), (before_id, after_id));
        w.groups.extend(groups);
        w.steps.push(Step {
            pdu,
            json,
            state_before: before_id,
            state_after: after_id,
            txn: txn.map(|t| {
                [
                    t.user_id.to_owned(),
                    t.device_id.to_owned(),
                    t.scope,
                    t.txn_id.to_owned(),
                ]
            }),
            state_changes,
            state_removals,
            member_changes,
            joined_delta,
            push,
            search,
            redaction,
            replaces,
            queueable,
        });
        Ok(())
    }

    /// The room's joined members as the write's head has it (counted from its state when
    /// no count came along, as after a fork's state resolution).
    pub(crate) async fn joined_count(&self, w: &RoomWrite) -> Result<u64> {
        if let Some(n) = w.head.joined.get() {
            return Ok(*n);
        }
        let mut n = 0;
        for ((kind, _), id) in w.head.state.iter() {
            if *kind == StateEventType::RoomMember
                && w.pdu(self, id)
                    .await?
                    .is_some_and(|p| membership_of(&p) == "join")
            {
                n += 1;
            }
        }
        let _ = w.head.joined.set(n);
        Ok(n)
    }

    /// Records in a state event's `unsigned` the event it replaces (spec: "ClientEvent",
    /// `unsigned.replaces_state`, `prev_content`), so every endpoint serves them.
    /// `unsigned` is covered by neither hashes nor signatures.
    async fn note_replaced_state(
        &self,
        w: &RoomWrite,
        pdu: &mut Pdu,
        before: &StateIds,
    ) -> Result<()> {
        let Some(key) = &pdu.state_key else {
            return Ok(());
        };
        let Some(prev_id) = before.get(&(StateEventType::from(pdu.kind.to_string()), key.clone()))
        else {
            return Ok(());
        };
        let Some(prev) = w.pdu(self, prev_id).await? else {
            return Ok(());
        };
        let mut unsigned = match pdu.json.remove("unsigned") {
            Some(CanonicalJsonValue::Object(u)) => u,
            _ => CanonicalJsonObject::new(),
        };
        unsigned.insert("replaces_state".into(), prev_id.as_str().into());
        unsigned.insert("prev_sender".into(), prev.sender.as_str().into());
        if let Ok(content) = serde_json::from_str::<CanonicalJsonValue>(prev.content.get()) {
            unsigned.insert("prev_content".into(), content);
        }
        pdu.json
            .insert("unsigned".into(), CanonicalJsonValue::Object(unsigned));
        Ok(())
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
