//! Each room's head: its forward extremities and current state, kept in memory so that
//! building and appending an event reads neither from the database. Only the write path
//! changes a head, in the follow-up of the commit whose rows it reflects.

use std::sync::Arc;

use ruma::{OwnedEventId, RoomId};

use super::state::StateIds;
use crate::{Error, Homeserver, Result};

/// Memory for heads kept in memory (weighed at about 160 bytes per state entry, though a
/// head shares its state with the room's latest state group); others are reloaded from
/// `forward_extremities` and `current_state` when next used. A 50,000-member room fits.
const CACHED_HEADS_BYTES: u64 = 8 << 20;

/// The cache of room heads, bounded by their estimated size.
pub(crate) fn heads_cache() -> crate::cache::BoundedCache<ruma::OwnedRoomId, Arc<RoomHead>> {
    crate::cache::BoundedCache::by_bytes(CACHED_HEADS_BYTES, 4096, |h| h.estimated_size())
}

impl RoomHead {
    pub(crate) fn estimated_size(&self) -> u64 {
        256 + super::state::estimated_bytes(&self.state) + 64 * self.extremities.len() as u64
    }
}

#[derive(Debug)]
pub struct RoomHead {
    /// Sorted, so `prev_events` come out in a stable order.
    pub extremities: Vec<OwnedEventId>,
    pub state: Arc<StateIds>,
    /// The state group `state` is, when it is one (a single extremity): an event planned
    /// on it changes only its own key, so nobody need compare whole states.
    pub state_group: Option<i64>,
    /// The room's local users with a member event (any membership), worked out once per
    /// state: every event wakes their syncs.
    local_members: std::sync::OnceLock<Arc<LocalMembers>>,
    /// Its joined members (any server), once known: carried from head to head with each
    /// event's change, read from `rooms.joined_members` with a head from the database,
    /// else counted (`Homeserver::joined_count`). Push rules read it.
    pub(crate) joined: std::sync::OnceLock<u64>,
    /// The local members with push rules of their own, as of a rules epoch
    /// (`push/evaluate.rs`): worked out once per state, not once per event.
    pub(crate) ruled_members: std::sync::Mutex<Option<(u64, Arc<Vec<ruma::OwnedUserId>>)>>,
}

impl RoomHead {
    pub(crate) fn new(
        extremities: Vec<OwnedEventId>,
        state: Arc<StateIds>,
        state_group: Option<i64>,
    ) -> Self {
        Self {
            extremities,
            state,
            state_group,
            local_members: Default::default(),
            joined: Default::default(),
            ruled_members: Default::default(),
        }
    }

    /// A head with new extremities and the same state (the list of local members goes
    /// along).
    pub(crate) fn with_extremities(&self, extremities: Vec<OwnedEventId>) -> Self {
        Self {
            extremities,
            state: self.state.clone(),
            state_group: self.state_group,
            local_members: self.local_members.clone(),
            joined: self.joined.clone(),
            ruled_members: std::sync::Mutex::new(
                self.ruled_members
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone(),
            ),
        }
    }

    /// A head after one state event on this one (the linear case): the list of local
    /// members, if worked out, goes along with `key` added when it is a local member's.
    pub(crate) fn after_state_event(
        &self,
        extremities: Vec<OwnedEventId>,
        state: Arc<StateIds>,
        state_group: Option<i64>,
        key: &(ruma::events::StateEventType, String),
        server: &ruma::ServerName,
        joined_delta: i64,
    ) -> Self {
        let head = Self::new(extremities, state, state_group);
        if let Some(n) = self.joined.get() {
            let _ = head.joined.set(n.saturating_add_signed(joined_delta));
        }
        // The event's own member, if it is one, is looked at by the event's push
        // evaluation (`push/evaluate.rs`); everyone else's rules are as they were.
        *head.ruled_members.lock().unwrap_or_else(|e| e.into_inner()) = self
            .ruled_members
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(members) = self.local_members.get() {
            let members = match local_member(key, server) {
                Some(user) if !members.contains(&user) => {
                    let mut more = (**members).clone();
                    more.insert(user);
                    Arc::new(more)
                }
                _ => members.clone(),
            };
            let _ = head.local_members.set(members);
        }
        head
    }

    /// The local users with a member event in the room's current state.
    pub(crate) fn local_members(&self, server: &ruma::ServerName) -> Arc<LocalMembers> {
        self.local_members
            .get_or_init(|| {
                Arc::new(
                    self.state
                        .keys()
                        .filter_map(|key| local_member(key, server))
                        .collect(),
                )
            })
            .clone()
    }
}

/// Local users with a member event; persistent, so a join adds one in O(log n).
pub(crate) type LocalMembers = imbl::HashSet<String>;

/// The local user a state key names, for an `m.room.member` key.
fn local_member(
    (kind, key): &(ruma::events::StateEventType, String),
    server: &ruma::ServerName,
) -> Option<String> {
    if *kind != ruma::events::StateEventType::RoomMember {
        return None;
    }
    let user = ruma::UserId::parse(key.as_str()).ok()?;
    (user.server_name() == server).then(|| user.to_string())
}

impl Homeserver {
    /// The room's head, from memory or else read from the database. Only a writer holding
    /// the room's lock puts a head read from the database into memory
    /// ([`Homeserver::room_head_locked`]): a reader's two reads could straddle a commit.
    pub(crate) async fn room_head(&self, room_id: &RoomId) -> Result<Arc<RoomHead>> {
        match self.heads.get(&room_id.to_owned()) {
            Some(head) => Ok(head),
            None => self.room_head_from_db(room_id).await,
        }
    }

    /// [`Homeserver::room_head`] for the holder of the room's lock, which keeps it in memory.
    pub(crate) async fn room_head_locked(&self, room_id: &RoomId) -> Result<Arc<RoomHead>> {
        if let Some(head) = self.heads.get(&room_id.to_owned()) {
            return Ok(head);
        }
        // No write to the room that will land is queued (the tip would be the head
        // otherwise, see `tip.rs`), so the database is up to date for this room.
        let head = self.room_head_from_db(room_id).await?;
        self.heads.put(room_id.to_owned(), head.clone());
        Ok(head)
    }

    async fn room_head_from_db(&self, room_id: &RoomId) -> Result<Arc<RoomHead>> {
        let rows = self
            .db
            .query(
                "SELECT event_id FROM forward_extremities WHERE room_id = $1 ORDER BY event_id",
                vec![room_id.as_str().into()],
            )
            .await?;
        let extremities = rows
            .iter()
            .map(|r| OwnedEventId::try_from(r.text(0)?).map_err(Error::internal))
            .collect::<Result<_>>()?;
        let state = Arc::new(self.current_state_from_db(room_id).await?);
        let head = RoomHead::new(extremities, state, None);
        let joined = crate::storage::query_opt(
            self.db.as_ref(),
            "SELECT joined_members FROM rooms WHERE room_id = $1",
            vec![room_id.as_str().into()],
        )
        .await?;
        if let Some(n) = joined.map(|r| r.int(0)).transpose()? {
            let _ = head.joined.set(n.max(0) as u64);
        }
        Ok(Arc::new(head))
    }

    /// Called by the write path once its batch committed, before the position is published.
    pub(crate) fn set_room_head(&self, room_id: &RoomId, head: Arc<RoomHead>) {
        self.heads.put(room_id.to_owned(), head);
    }

    /// Called when a commit failed: whatever the database holds now is reloaded.
    pub(crate) fn forget_room_head(&self, room_id: &RoomId) {
        self.heads.remove(&room_id.to_owned());
    }

    pub async fn forward_extremities(&self, room_id: &RoomId) -> Result<Vec<OwnedEventId>> {
        Ok(self.room_head(room_id).await?.extremities.clone())
    }

    /// The room's current state, as resolved after its forward extremities.
    pub async fn current_state(&self, room_id: &RoomId) -> Result<Arc<StateIds>> {
        Ok(self.room_head(room_id).await?.state.clone())
    }

    /// Like [`Homeserver::current_state`], as an owned map.
    pub async fn current_state_ids(&self, room_id: &RoomId) -> Result<StateIds> {
        Ok((*self.current_state(room_id).await?).clone())
    }
}

#[cfg(test)]
mod tests {
    use ruma::{events::StateEventType, owned_event_id, server_name};

    use super::*;

    fn member(user: &str) -> (StateEventType, String) {
        (StateEventType::RoomMember, user.to_owned())
    }

    #[test]
    fn local_members_follow_a_linear_state_change() {
        let here = server_name!("here.test");
        let mut state = StateIds::new();
        state.insert(member("@a:here.test"), owned_event_id!("$a"));
        state.insert(member("@r:there.test"), owned_event_id!("$r"));
        let head = RoomHead::new(
            vec![owned_event_id!("$a")],
            Arc::new(state.clone()),
            Some(1),
        );
        assert_eq!(head.local_members(here).len(), 1);

        // A local join adds its user; a remote join and other state leave the list as is.
        for (key, local) in [
            (member("@b:here.test"), Some("@b:here.test")),
            (member("@s:there.test"), None),
            ((StateEventType::RoomTopic, String::new()), None),
        ] {
            let mut after = state.clone();
            after.insert(key.clone(), owned_event_id!("$new"));
            let next = head.after_state_event(
                vec![owned_event_id!("$new")],
                Arc::new(after.clone()),
                Some(2),
                &key,
                here,
                0,
            );
            let carried = next.local_members(here);
            assert!(carried.contains("@a:here.test"));
            assert_eq!(carried.len(), 1 + usize::from(local.is_some()));
            if let Some(user) = local {
                assert!(carried.contains(user));
            }
            // The same list as worked out from scratch.
            let fresh = RoomHead::new(Vec::new(), Arc::new(after), None);
            assert_eq!(*fresh.local_members(here), *carried);
        }
    }

    /// A 50,000-member room's head stays in memory, so its writes do not reload it.
    #[test]
    fn a_50000_member_rooms_head_fits_in_the_cache() {
        let state: StateIds = (0..50_000)
            .map(|i| {
                let key = (StateEventType::RoomMember, format!("@user{i}:example.org"));
                let id = ruma::OwnedEventId::try_from(format!("$event{i:040}")).expect("id");
                (key, id)
            })
            .collect();
        let cache = heads_cache();
        let room = ruma::owned_room_id!("!big:example.org");
        let head = RoomHead::new(vec![owned_event_id!("$a")], Arc::new(state), Some(1));
        cache.put(room.clone(), Arc::new(head));
        assert!(cache.get(&room).is_some(), "the head was refused");
    }
}
