//! A room's `state` (or `state_after`) block in a sync: all of it, or what changed since
//! `since`, without what the timeline shows, lazy-loaded members as the spec says.

use super::*;

/// Which state a room's `state` (or `state_after`) block holds.
pub(super) struct StateQuery<'a> {
    /// The sync's `since`, when the client already has the room's state as of it.
    pub(super) baseline: Option<i64>,
    pub(super) timeline: &'a [TimelineEvent],
    /// The timeline does not show every event after `baseline` (it is limited, or a
    /// filter dropped some).
    pub(super) gapped: bool,
    /// The room's state at the end of the timeline's window.
    pub(super) end: End,
}

/// The state at the end of a timeline's window, or where to find it.
pub(super) enum End {
    /// After the room's last event at or before this position.
    At(i64),
    State(Arc<StateIds>),
}

impl Homeserver {
    /// The `state` block (or `state_after`, with `use_state_after`; MSC4222): without a
    /// baseline, all of the state at the start of the timeline (at its end for
    /// `state_after`); with one, what changed since it. Events the timeline shows are left
    /// out of `state`. With lazy-loaded members, of the member events only the timeline's
    /// senders' (and, when sent whole, the user's own); those always, whether the client
    /// may have them or not (spec: "Lazy-loading room members").
    pub(super) async fn sync_state(
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

    /// Whether a member event was sent in `(from, upto]`.
    pub(super) async fn member_event_between(
        &self,
        room_id: &RoomId,
        from: i64,
        upto: i64,
    ) -> Result<bool> {
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
