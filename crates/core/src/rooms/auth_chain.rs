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

/// The auth chain of `id` (excluding itself), from already loaded events.
pub fn auth_chain(id: &EventId, events: &EventMap) -> HashSet<OwnedEventId> {
    let mut seen = HashSet::new();
    let mut todo: Vec<&EventId> = vec![id];
    while let Some(cur) = todo.pop() {
        if let Some(pdu) = events.get(cur) {
            for a in &pdu.auth_events {
                if seen.insert(a.clone()) {
                    todo.push(a);
                }
            }
        }
    }
    seen
}

/// Every event on an `auth_events` path between two events of the conflicted state set,
/// endpoints included (spec: room v12, "Conflicted state subgraph").
pub fn conflicted_subgraph(
    conflicted: &StateMap<Vec<OwnedEventId>>,
    events: &EventMap,
) -> HashSet<OwnedEventId> {
    let targets: HashSet<&EventId> = conflicted.values().flatten().map(|e| e.as_ref()).collect();
    // Memoised: does `id` reach a conflicted event (itself included) through auth events?
    fn reaches<'a>(
        id: &'a EventId,
        targets: &HashSet<&EventId>,
        events: &'a EventMap,
        memo: &mut HashMap<&'a EventId, bool>,
    ) -> bool {
        if let Some(&r) = memo.get(id) {
            return r;
        }
        memo.insert(id, false);
        let r = targets.contains(id)
            || events.get(id).is_some_and(|p| {
                p.auth_events
                    .iter()
                    .any(|a| reaches(a, targets, events, memo))
            });
        memo.insert(id, r);
        r
    }
    let mut memo = HashMap::new();
    let mut out = HashSet::new();
    let mut todo: Vec<&EventId> = targets.iter().copied().collect();
    let mut visited = HashSet::new();
    // Walk the ancestors of every conflicted event; keep those that lead on to one.
    while let Some(id) = todo.pop() {
        if !visited.insert(id) {
            continue;
        }
        if reaches(id, &targets, events, &mut memo) {
            out.insert(id.to_owned());
        }
        if let Some(p) = events.get(id) {
            todo.extend(p.auth_events.iter().map(|a| &**a));
        }
    }
    out
}
