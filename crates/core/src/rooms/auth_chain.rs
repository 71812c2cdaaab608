//! Auth chains and the v2.1 conflicted state subgraph (spec: room v12, "State resolution").

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use ruma::{state_res::StateMap, EventId, OwnedEventId};

use super::Pdu;
use crate::{Homeserver, Result};

/// Most events one resolution may load; beyond that the room is refused rather than
/// letting a remote server make us walk an unbounded graph.
pub const MAX_AUTH_EVENTS: usize = 100_000;

/// Events loaded for one resolution, keyed by ID.
pub type EventMap = HashMap<OwnedEventId, Arc<Pdu>>;

impl Homeserver {
    /// Loads `roots` and everything reachable through `auth_events` into `events`.
    pub(crate) async fn load_auth_closure(
        &self,
        roots: impl IntoIterator<Item = OwnedEventId>,
        events: &mut EventMap,
    ) -> Result<()> {
        let mut todo: Vec<OwnedEventId> = roots.into_iter().collect();
        while let Some(id) = todo.pop() {
            if events.contains_key(&id) {
                continue;
            }
            if events.len() >= MAX_AUTH_EVENTS {
                return Err(crate::Error::forbidden("auth chain too large"));
            }
            let Some(pdu) = self.get_pdu(&id).await? else {
                continue;
            };
            todo.extend(pdu.auth_events.iter().cloned());
            events.insert(id, pdu);
        }
        Ok(())
    }
}

/// The events of `ids` and everything reachable from them through `auth_events`, from
/// already loaded events: one walk for the whole set, each event visited once.
pub fn auth_closure<'a>(
    ids: impl IntoIterator<Item = &'a OwnedEventId>,
    events: &'a EventMap,
) -> HashSet<OwnedEventId> {
    let mut seen: HashSet<&EventId> = HashSet::new();
    let mut todo: Vec<&EventId> = Vec::new();
    for id in ids {
        if seen.insert(id) {
            todo.push(id);
        }
    }
    while let Some(cur) = todo.pop() {
        if let Some(pdu) = events.get(cur) {
            for a in &pdu.auth_events {
                if seen.insert(a) {
                    todo.push(a);
                }
            }
        }
    }
    seen.into_iter().map(ToOwned::to_owned).collect()
}

/// Every event on an `auth_events` path between two events of the conflicted state set,
/// endpoints included (spec: room v12, "Conflicted state subgraph"): the ancestors of
/// conflicted events from which a conflicted event can be reached. Linear in the events
/// walked, without recursion.
pub fn conflicted_subgraph(
    conflicted: &StateMap<Vec<OwnedEventId>>,
    events: &EventMap,
) -> HashSet<OwnedEventId> {
    let targets: Vec<&EventId> = conflicted.values().flatten().map(|e| e.as_ref()).collect();
    // The ancestors (targets included), with the auth edges reversed among them.
    let mut ancestors: HashSet<&EventId> = targets.iter().copied().collect();
    let mut children: HashMap<&EventId, Vec<&EventId>> = HashMap::new();
    let mut todo: Vec<&EventId> = ancestors.iter().copied().collect();
    while let Some(id) = todo.pop() {
        let Some(pdu) = events.get(id) else {
            continue;
        };
        for a in &pdu.auth_events {
            children.entry(a).or_default().push(id);
            if ancestors.insert(a) {
                todo.push(a);
            }
        }
    }
    // Those that reach a target: walk the reversed edges from the targets.
    let mut out: HashSet<&EventId> = targets.iter().copied().collect();
    let mut todo: Vec<&EventId> = out.iter().copied().collect();
    while let Some(id) = todo.pop() {
        for child in children.get(id).into_iter().flatten() {
            if out.insert(child) {
                todo.push(child);
            }
        }
    }
    out.into_iter().map(ToOwned::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ruma::{events::StateEventType, owned_event_id, OwnedEventId};

    use super::*;

    /// A chain of `n` events, each authorised by the one before (as a long room history).
    fn chain(n: usize) -> (EventMap, Vec<OwnedEventId>) {
        let mut events = EventMap::new();
        let mut ids = Vec::new();
        for i in 0..n {
            let id: OwnedEventId = format!("$e{i}").try_into().unwrap();
            let auth: Vec<_> = ids.last().cloned().into_iter().collect();
            events.insert(id.clone(), Arc::new(crate::rooms::pdu::test_pdu(&id, auth)));
            ids.push(id);
        }
        (events, ids)
    }

    #[test]
    fn long_chains_do_not_recurse() {
        // Deep enough to overflow any thread's stack if walked recursively.
        let (events, ids) = chain(200_000);
        let last = ids.last().unwrap();
        assert_eq!(auth_closure([last], &events).len(), ids.len());
        let mut conflicted = StateMap::new();
        conflicted.insert(
            (StateEventType::RoomPowerLevels, String::new()),
            vec![ids[10].clone(), last.clone()],
        );
        // Every event between the two conflicted ones, and nothing older.
        let sub = conflicted_subgraph(&conflicted, &events);
        assert_eq!(sub.len(), ids.len() - 10);
        assert!(sub.contains(&ids[10]) && !sub.contains(&ids[9]));
    }

    #[test]
    fn subgraph_is_between_conflicted_events() {
        // a <- b <- c, a <- d: conflicted {a, c} gives {a, b, c}; d reaches a but is no
        // ancestor of a conflicted event.
        let mut events = EventMap::new();
        let add = |events: &mut EventMap, id: OwnedEventId, auth: Vec<OwnedEventId>| {
            events.insert(id.clone(), Arc::new(crate::rooms::pdu::test_pdu(&id, auth)));
        };
        let (a, b, c, d) = (
            owned_event_id!("$a"),
            owned_event_id!("$b"),
            owned_event_id!("$c"),
            owned_event_id!("$d"),
        );
        add(&mut events, a.clone(), vec![]);
        add(&mut events, b.clone(), vec![a.clone()]);
        add(&mut events, c.clone(), vec![b.clone()]);
        add(&mut events, d.clone(), vec![a.clone()]);
        let mut conflicted = StateMap::new();
        conflicted.insert(
            (StateEventType::RoomTopic, String::new()),
            vec![a.clone(), c.clone()],
        );
        let sub = conflicted_subgraph(&conflicted, &events);
        assert_eq!(sub, [a, b, c].into_iter().collect());
    }
}
