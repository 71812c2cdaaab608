//! State snapshots ("state groups"): each is a delta on an earlier group, with chains kept
//! short by writing a full copy every `MAX_CHAIN` steps. Groups never change once written.

use std::sync::Arc;

use ruma::{events::StateEventType, OwnedEventId, RoomId};

use crate::{
    ports::{Statement, Value},
    storage::query_opt,
    Error, Homeserver, Result,
};

/// Longest delta chain before a group is written in full.
const MAX_CHAIN: i64 = 32;
/// Memory for cached groups, each weighed as a full map (about 160 bytes per entry) though
/// groups of one chain share most of it: a 50,000-member room's state (8 MB) fits.
const CACHE_GROUPS_BYTES: u64 = 8 << 20;
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
    static SQL: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
        ENTRY_ROWS
            .iter()
            .map(|rows| {
                let values: Vec<String> = (0..*rows)
                    .map(|r| format!("($1, ${}, ${}, ${})", 3 * r + 2, 3 * r + 3, 3 * r + 4))
                    .collect();
                format!(
                    "INSERT INTO state_group_entries (group_id, type, state_key, event_id) VALUES {}",
                    values.join(", ")
                )
            })
            .collect()
    });
    let i = ENTRY_ROWS
        .iter()
        .position(|rows| *rows <= n)
        .unwrap_or(ENTRY_ROWS.len() - 1);
    (ENTRY_ROWS[i].min(n.max(1)), SQL[i].as_str())
}

/// Loaded state groups with their chain length.
pub struct GroupCache(pub(crate) crate::cache::BoundedCache<i64, (Arc<StateIds>, i64)>);

impl Default for GroupCache {
    fn default() -> Self {
        Self(crate::cache::BoundedCache::by_bytes(
            CACHE_GROUPS_BYTES,
            ROOT_NODE_BYTES + 16 * BYTES_PER_ENTRY,
            |(state, _)| estimated_bytes(state),
        ))
    }
}

/// A group about to be written: its id, the statements, and its content for the cache.
pub struct NewGroup {
    pub id: i64,
    pub statements: Vec<Statement>,
    pub state: Arc<StateIds>,
    pub chain: i64,
}

impl Homeserver {
    /// Loads a state group with its chain length: walks the deltas back to a cached or
    /// full group (at most `MAX_CHAIN` steps), then applies them forwards.
    pub async fn state_group(&self, id: i64) -> Result<(Arc<StateIds>, i64)> {
        if let Some(hit) = self.state_cache.0.get(&id) {
            return Ok(hit);
        }
        // (group, chain length) from `id` back towards the base.
        let mut deltas: Vec<(i64, i64)> = Vec::new();
        let mut cursor = Some(id);
        let mut state = StateIds::new();
        while let Some(group) = cursor {
            if let Some((cached, _)) = self.state_cache.0.get(&group) {
                state = (*cached).clone();
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
            deltas.push((group, row.int(1)?));
            cursor = row.opt_int(0)?;
        }
        let mut out = None;
        for (group, chain) in deltas.into_iter().rev() {
            for r in self
                .db
                .query(
                    "SELECT type, state_key, event_id FROM state_group_entries WHERE group_id = $1",
                    vec![Value::Int(group)],
                )
                .await?
            {
                let event_id = OwnedEventId::try_from(r.text(2)?).map_err(Error::internal)?;
                state.insert((StateEventType::from(r.text(0)?), r.text(1)?), event_id);
            }
            let shared = Arc::new(state.clone());
            self.state_cache.0.put(group, (shared.clone(), chain));
            out = Some((shared, chain));
        }
        out.ok_or_else(|| Error::Internal(format!("state group {id} missing")))
    }

    /// Plans a new group `id` equal to `state`, as a delta on `base` (id, state, chain
    /// length) where that chain is short. The base may itself be planned in the same batch.
    /// `only` says `state` is the base with just that key set (one state event), so the
    /// states need not be compared.
    pub fn plan_group(
        &self,
        room_id: &RoomId,
        id: i64,
        base: Option<(i64, Arc<StateIds>, i64)>,
        state: StateIds,
        only: Option<&(StateEventType, String)>,
    ) -> NewGroup {
        // A delta records changed and added entries only: a state that lost a key (state
        // resolution can drop one) is written in full.
        let base = base.filter(|(_, base_state, chain)| {
            *chain < MAX_CHAIN
                && (only.is_some() || base_state.keys().all(|k| state.contains_key(k)))
        });
        let (prev, entries, chain): (Option<i64>, Vec<_>, i64) = match (&base, only) {
            (Some((b, _, chain)), Some(key)) => (
                Some(*b),
                state.get_key_value(key).into_iter().collect(),
                chain + 1,
            ),
            (Some((b, base_state, chain)), None) => {
                // Delta: entries that differ from the base.
                let delta = state
                    .iter()
                    .filter(|(k, v)| base_state.get(*k) != Some(*v))
                    .collect();
                (Some(*b), delta, chain + 1)
            }
            (None, _) => (None, state.iter().collect(), 0),
        };
        let mut statements = vec![Statement::new(
            "INSERT INTO state_groups (group_id, room_id, prev_group, chain_len) VALUES ($1, $2, $3, $4)",
            vec![Value::Int(id), room_id.as_str().into(), prev.into(), Value::Int(chain)],
        )];
        // Many rows per statement: a full copy of a big room's state is thousands of rows.
        let mut rest = entries.as_slice();
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
            state: Arc::new(state),
            chain,
        }
    }

    pub(crate) fn cache_group(&self, group: &NewGroup) {
        self.state_cache
            .0
            .put(group.id, (group.state.clone(), group.chain));
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
