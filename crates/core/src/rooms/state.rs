//! State snapshots ("state groups"): each is a delta on an earlier group, with chains kept
//! short. Groups never change once written.
//!
//! Two levels of deltas: a chain of small deltas starts at a full copy (its root); after
//! `MAX_CHAIN` steps the next group is a delta on the root itself (everything that differs
//! from it), which starts a new chain of small ones. Only when that delta grows large is a
//! new full copy written: a room of n members growing by joins writes O(√n) rows per join
//! rather than n / `MAX_CHAIN`.

use std::sync::Arc;

use ruma::{events::StateEventType, OwnedEventId, RoomId};

use crate::{
    ports::{Statement, Value},
    storage::{query_opt, SizedStatements},
    Error, Homeserver, Result,
};

/// Longest delta chain before a group is written in full.
const MAX_CHAIN: i64 = 32;
/// Memory for cached groups, each weighed as a full map (about 160 bytes per entry) though
/// groups of one chain share most of it: a 50,000-member room's state (8 MB, and its
/// difference from its root) fits.
const CACHE_GROUPS_BYTES: u64 = 17 << 19;
const BYTES_PER_ENTRY: u64 = 160;
/// A map's root node: 32 slots, copied whole by an insert, however few entries it holds.
const ROOT_NODE_BYTES: u64 = 2560;

/// A state map's estimated memory, counted as if it shared nothing.
pub(crate) fn estimated_bytes(state: &StateIds) -> u64 {
    ROOT_NODE_BYTES + state.len() as u64 * BYTES_PER_ENTRY
}

/// A room state's event IDs by (type, state key). Persistent: cloning one is O(1) and an
/// insert copies O(log n), so the state after an event in a 50,000-member room, and every
/// cached group of its chain, share all but their own changes.
pub type StateIds = imbl::HashMap<(StateEventType, String), OwnedEventId>;

/// Rows per `state_group_entries` insert, largest first; few distinct statements.
const ENTRY_ROWS: [usize; 3] = [64, 8, 1];

/// The largest insert of at most `n` (≥ 1) entry rows: how many, and its SQL, with the
/// group as `$1` and each row's type, state key and event ID after it.
fn entry_insert(n: usize) -> (usize, &'static str) {
    static SQL: std::sync::LazyLock<SizedStatements> = std::sync::LazyLock::new(|| {
        SizedStatements::new(&ENTRY_ROWS, |rows| {
            let values: Vec<String> = (0..rows)
                .map(|r| format!("($1, ${}, ${}, ${})", 3 * r + 2, 3 * r + 3, 3 * r + 4))
                .collect();
            format!(
                "INSERT INTO state_group_entries (group_id, type, state_key, event_id) VALUES {}",
                values.join(", ")
            )
        })
    });
    SQL.at_most(n)
}

/// Entries by (type, state key), as a plain map.
pub type RootDelta = std::collections::HashMap<(StateEventType, String), OwnedEventId>;

/// A loaded state group, with what planning a delta on it needs.
#[derive(Clone, Debug)]
pub struct Group {
    pub state: Arc<StateIds>,
    /// Steps back to the chain's root (0 for a full copy).
    pub chain: i64,
    /// The full group the chain starts from.
    pub root: i64,
    /// The entries in which `state` differs from the root's. A plain map: it is small
    /// (at most 8·√n entries), and a persistent map's 32-slot root node would weigh more
    /// than most of them.
    pub since_root: Arc<RootDelta>,
}

impl Group {
    fn full(id: i64, state: Arc<StateIds>) -> Self {
        Self {
            state,
            chain: 0,
            root: id,
            since_root: Arc::new(RootDelta::new()),
        }
    }

    /// This group's view after a delta of `entries` on it.
    fn after(
        &self,
        state: Arc<StateIds>,
        entries: &[(&(StateEventType, String), &OwnedEventId)],
    ) -> Self {
        let mut since_root = (*self.since_root).clone();
        for (k, v) in entries {
            since_root.insert((*k).clone(), (*v).clone());
        }
        Self {
            state,
            chain: self.chain + 1,
            root: self.root,
            since_root: Arc::new(since_root),
        }
    }
}

/// Loaded state groups.
pub struct GroupCache(pub(crate) crate::cache::BoundedCache<i64, Group>);

impl Default for GroupCache {
    fn default() -> Self {
        Self(crate::cache::BoundedCache::by_bytes(
            CACHE_GROUPS_BYTES,
            ROOT_NODE_BYTES + 16 * BYTES_PER_ENTRY,
            |g| estimated_bytes(&g.state) + g.since_root.len() as u64 * BYTES_PER_ENTRY,
        ))
    }
}

/// A group about to be written: its id, the statements, and its content for the cache.
pub struct NewGroup {
    pub id: i64,
    pub statements: Vec<Statement>,
    pub group: Group,
}

/// Whether a delta of `delta` entries on the root of a state of `n` entries is worth
/// writing rather than a full copy: at most half the state, and at most 8·√n (the size
/// at which the root-deltas written every `MAX_CHAIN` steps cost about what full copies
/// every 8·√n steps would).
fn root_delta_fits(delta: usize, n: usize) -> bool {
    let (d, n) = (delta as u64, n as u64);
    2 * d <= n && d * d <= 64 * n
}

impl Homeserver {
    /// Loads a state group with its chain length; see [`Homeserver::state_group_info`].
    pub async fn state_group(&self, id: i64) -> Result<(Arc<StateIds>, i64)> {
        let g = self.state_group_info(id).await?;
        Ok((g.state, g.chain))
    }

    /// Loads a state group: walks the deltas back to a cached or full group (at most
    /// `MAX_CHAIN` steps), then applies them forwards.
    pub async fn state_group_info(&self, id: i64) -> Result<Group> {
        if let Some(hit) = self.state_cache.0.get(&id) {
            return Ok(hit);
        }
        // Groups from `id` back towards the root.
        let mut deltas: Vec<i64> = Vec::new();
        let mut cursor = Some(id);
        let mut from: Option<Group> = None;
        while let Some(group) = cursor {
            if let Some(cached) = self.state_cache.0.get(&group) {
                from = Some(cached);
                break;
            }
            if deltas.len() as i64 > MAX_CHAIN {
                return Err(Error::Internal(format!("state group {id}: chain too long")));
            }
            let row = query_opt(
                self.db.as_ref(),
                "SELECT prev_group, chain_len FROM state_groups WHERE group_id = $1",
                vec![Value::Int(group)],
            )
            .await?
            .ok_or_else(|| Error::Internal(format!("state group {group} missing")))?;
            deltas.push(group);
            cursor = row.opt_int(0)?;
        }
        let mut out = from;
        for group in deltas.into_iter().rev() {
            let mut entries = Vec::new();
            for r in self
                .db
                .query(
                    "SELECT type, state_key, event_id FROM state_group_entries WHERE group_id = $1",
                    vec![Value::Int(group)],
                )
                .await?
            {
                let event_id = OwnedEventId::try_from(r.text(2)?).map_err(Error::internal)?;
                entries.push(((StateEventType::from(r.text(0)?), r.text(1)?), event_id));
            }
            let g = match &out {
                // The walk ended on a full copy: this is it.
                None => Group::full(group, Arc::new(entries.into_iter().collect())),
                Some(base) => {
                    let mut state = (*base.state).clone();
                    for (k, v) in &entries {
                        state.insert(k.clone(), v.clone());
                    }
                    let refs: Vec<_> = entries.iter().map(|(k, v)| (k, v)).collect();
                    base.after(Arc::new(state), &refs)
                }
            };
            self.state_cache.0.put(group, g.clone());
            out = Some(g);
        }
        out.ok_or_else(|| Error::Internal(format!("state group {id} missing")))
    }

    /// Plans a new group `id` equal to `state`, as a delta on `base` (its id and group)
    /// where that chain is short, else on the chain's root, else in full. The base may
    /// itself be planned in the same batch. `only` says `state` is the base with just that
    /// key set (one state event), so the states need not be compared.
    pub fn plan_group(
        &self,
        room_id: &RoomId,
        id: i64,
        base: Option<(i64, Group)>,
        state: StateIds,
        only: Option<&(StateEventType, String)>,
    ) -> NewGroup {
        // A delta records changed and added entries only: a state that lost a key (state
        // resolution can drop one) is written in full. Deltas never remove, so the base's
        // keys include its root's.
        let base =
            base.filter(|(_, b)| only.is_some() || b.state.keys().all(|k| state.contains_key(k)));
        let state = Arc::new(state);
        let (prev, entries, group): (Option<i64>, Vec<_>, Group) = match &base {
            Some((b, base)) => {
                let delta: Vec<_> = match only {
                    Some(key) => state.get_key_value(key).into_iter().collect(),
                    None => state
                        .iter()
                        .filter(|(k, v)| base.state.get(*k) != Some(*v))
                        .collect(),
                };
                let after = base.after(state.clone(), &delta);
                if base.chain < MAX_CHAIN {
                    (Some(*b), delta, after)
                } else if root_delta_fits(after.since_root.len(), state.len()) {
                    // A new chain, on the root: everything that differs from it.
                    let entries: Vec<_> = after.since_root.iter().collect();
                    let group = Group {
                        chain: 1,
                        ..after.clone()
                    };
                    return self.group_statements(room_id, id, Some(base.root), &entries, group);
                } else {
                    (None, state.iter().collect(), Group::full(id, state.clone()))
                }
            }
            None => (None, state.iter().collect(), Group::full(id, state.clone())),
        };
        self.group_statements(room_id, id, prev, &entries, group)
    }

    /// The rows of group `id`: its `state_groups` row and its entries.
    fn group_statements(
        &self,
        room_id: &RoomId,
        id: i64,
        prev: Option<i64>,
        entries: &[(&(StateEventType, String), &OwnedEventId)],
        group: Group,
    ) -> NewGroup {
        let chain = group.chain;
        let mut statements = vec![Statement::new(
            "INSERT INTO state_groups (group_id, room_id, prev_group, chain_len) VALUES ($1, $2, $3, $4)",
            vec![Value::Int(id), room_id.as_str().into(), prev.into(), Value::Int(chain)],
        )];
        // Many rows per statement: a full copy of a big room's state is thousands of rows.
        let mut rest = entries;
        while !rest.is_empty() {
            let (rows, sql) = entry_insert(rest.len());
            let (now, later) = rest.split_at(rows);
            let mut params = Vec::with_capacity(1 + 3 * rows);
            params.push(Value::Int(id));
            for ((kind, key), event_id) in now {
                params.push(kind.to_string().into());
                params.push(key.as_str().into());
                params.push(event_id.as_str().into());
            }
            statements.push(Statement::new(sql, params));
            rest = later;
        }
        NewGroup {
            id,
            statements,
            group,
        }
    }

    pub(crate) fn cache_group(&self, group: &NewGroup) {
        self.state_cache.0.put(group.id, group.group.clone());
    }

    /// The `current_state` rows; [`Homeserver::current_state`] serves them from memory.
    pub(crate) async fn current_state_from_db(&self, room_id: &RoomId) -> Result<StateIds> {
        let rows = self
            .db
            .query(
                "SELECT type, state_key, event_id FROM current_state WHERE room_id = $1",
                vec![room_id.as_str().into()],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    (StateEventType::from(r.text(0)?), r.text(1)?),
                    OwnedEventId::try_from(r.text(2)?).map_err(Error::internal)?,
                ))
            })
            .collect()
    }

    /// The current state event ID for one key.
    pub async fn current_state_event_id(
        &self,
        room_id: &RoomId,
        kind: &StateEventType,
        state_key: &str,
    ) -> Result<Option<OwnedEventId>> {
        let state = self.current_state(room_id).await?;
        Ok(state.get(&(kind.clone(), state_key.to_owned())).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member_state(n: usize) -> StateIds {
        (0..n)
            .map(|i| {
                let key = (StateEventType::RoomMember, format!("@user{i}:example.org"));
                let id = OwnedEventId::try_from(format!("$event{i:040}")).expect("event ID");
                (key, id)
            })
            .collect()
    }

    /// Spec-sized rooms only work if their state stays in memory: the group cache admits a
    /// 50,000-member room's state with the largest difference from its root it can carry.
    #[test]
    fn a_50000_member_rooms_state_fits_in_the_group_cache() {
        const MEMBERS: usize = 50_000;
        let state = Arc::new(member_state(MEMBERS));
        let widest = (1..MEMBERS)
            .take_while(|d| root_delta_fits(*d, MEMBERS))
            .last();
        let since_root = Arc::new(member_state(widest.unwrap_or(0)).into_iter().collect());
        let cache = GroupCache::default();
        let group = Group {
            state,
            chain: MAX_CHAIN,
            root: 1,
            since_root,
        };
        cache.0.put(2, group);
        assert!(cache.0.get(&2).is_some(), "the group was refused");
    }
}
