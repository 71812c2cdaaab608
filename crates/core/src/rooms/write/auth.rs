//! The checks an event passes while planned: ruma's auth against its auth events and the
//! state before it, and state resolution where the room's extremities fork.

use super::*;

impl Homeserver {
    /// Resolves several state maps with state resolution v2 (v2.1 from room v12 on).
    pub async fn resolve_states(
        &self,
        rules: &RoomVersionRules,
        states: &[Arc<StateIds>],
    ) -> Result<StateIds> {
        let Some(first) = states.first() else {
            return Ok(StateIds::new());
        };
        if states.iter().all(|s| Arc::ptr_eq(s, first) || s == first) {
            return Ok((**first).clone());
        }
        let v2 = rules
            .state_res
            .v2_rules()
            .ok_or_else(|| Error::Internal("state resolution v1 is not supported".into()))?;
        let mut events = EventMap::new();
        self.load_auth_closure(states.iter().flat_map(|s| s.values().cloned()), &mut events)
            .await?;
        // Each state set's events with their auth chains, walked once per set.
        let auth_chains = states
            .iter()
            .map(|s| {
                auth_chain::auth_closure(s.values(), &events)
                    .into_iter()
                    .collect()
            })
            .collect();
        // ruma resolves std maps: copied only here, when the room's DAG forked.
        let owned: Vec<StateMap<OwnedEventId>> = states
            .iter()
            .map(|s| s.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .collect();
        state_res::resolve(
            &rules.authorization,
            v2,
            owned.iter(),
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
        .map(|resolved| resolved.into_iter().collect())
        .map_err(|e| Error::forbidden(format!("state resolution failed: {e}")))
    }

    /// Auth checks against the event's own auth events and the state before it.
    pub(super) async fn authorize(
        &self,
        w: &RoomWrite,
        pdu: &Pdu,
        before: &StateIds,
    ) -> Result<()> {
        let rules = &w.rules;
        let mut auth = EventMap::new();
        for id in &pdu.auth_events {
            if let Some(p) = w.pdu(self, id).await? {
                auth.insert(id.clone(), p);
            }
        }
        // v12: the create event is referenced by the room ID, not in auth_events.
        if let Some(room_id) = &pdu.room_id {
            if let Some(create_id) = create_event_id_of(room_id) {
                if let Some(p) = w.pdu(self, &create_id).await? {
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
                if let Some(p) = w.pdu(self, id).await? {
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
