//! The user's rooms as a sliding sync connection sees them (MSC4186 "Lists"): each
//! room's membership, activity and what its filters look at. Built once per connection,
//! then moved forward from the rooms that changed (the `room_activity` index and the
//! other streams, through `rooms_changed`), so an incremental request costs what changed.

use std::collections::{BTreeSet, HashMap, HashSet};

use ruma::{OwnedRoomId, RoomId, UserId};
use serde_json::Value as Json;

use crate::{
    homeserver::Stream,
    ports::Value,
    sync::{rooms::Membership, SyncToken},
    Homeserver, Result,
};

/// One room of the user's.
#[derive(Clone, Debug)]
pub(super) struct Entry {
    pub(super) m: Membership,
    /// Where the room sorts (see [`Entry::order_of`]).
    pub(super) order: i64,
    /// The member event's sender was the user (a leave of their own, not a kick).
    pub(super) by_self: bool,
    /// The room's last event and last bump event (`room_activity`).
    pub(super) last_pos: i64,
    pub(super) bump_pos: i64,
    /// Where the index last saw something of the room move (events, membership, receipts,
    /// account data, typing): a room sent at or after it has nothing new.
    pub(super) touched: i64,
    /// What the room filters look at; read only when a list filters on them.
    pub(super) attrs: Option<Attrs>,
}

#[derive(Clone, Debug, Default)]
pub(super) struct Attrs {
    pub(super) encrypted: bool,
    pub(super) room_type: Option<String>,
    pub(super) tags: BTreeSet<String>,
}

impl Entry {
    fn new(
        m: Membership,
        by_self: bool,
        (last_pos, bump_pos): (i64, i64),
        touched: i64,
        attrs: Option<Attrs>,
    ) -> Entry {
        let order = Self::order_of(&m, last_pos);
        Entry {
            m,
            order,
            by_self,
            last_pos,
            bump_pos,
            touched,
            attrs,
        }
    }

    /// Where a room sorts: by its last event for a member, by the membership's change
    /// otherwise (nothing later is theirs to see).
    fn order_of(m: &Membership, last_pos: i64) -> i64 {
        match m.membership.as_str() {
            "join" => last_pos.max(m.changed_pos),
            _ => m.changed_pos,
        }
    }

    /// MSC4186 `bump_stamp`: the last bump event of a joined room; the membership
    /// change of any other.
    pub(super) fn bump_stamp(&self) -> i64 {
        match self.m.membership.as_str() {
            "join" => self.bump_pos.max(1),
            _ => self.m.changed_pos,
        }
    }
}

#[derive(Clone, Debug)]
pub(super) struct RoomIndex {
    /// The index is as of this token.
    pub(super) at: SyncToken,
    pub(super) rooms: HashMap<OwnedRoomId, Entry>,
    /// Rooms in the user's `m.direct` account data.
    pub(super) direct: HashSet<OwnedRoomId>,
    /// Where `direct` last changed.
    pub(super) direct_pos: i64,
    /// Whether `attrs` are loaded for every room.
    pub(super) attrs_loaded: bool,
}

impl Homeserver {
    /// The user's rooms as of `now`, read whole.
    pub(super) async fn build_index(&self, user: &UserId, now: SyncToken) -> Result<RoomIndex> {
        let (memberships, activity, direct) = futures_util::try_join!(
            self.all_memberships(user),
            async {
                Ok(self
                    .db
                    .query(
                        "SELECT a.room_id, a.last_pos, a.bump_pos FROM memberships m
                         JOIN room_activity a ON a.room_id = m.room_id
                         WHERE m.user_id = $1 AND m.forgotten = 0",
                        vec![user.as_str().into()],
                    )
                    .await?)
            },
            self.direct_rooms(user),
        )?;
        let mut act: HashMap<String, (i64, i64)> = HashMap::with_capacity(activity.len());
        for r in &activity {
            act.insert(r.text(0)?, (r.int(1)?, r.int(2)?));
        }
        let mut rooms = HashMap::with_capacity(memberships.len());
        for m in memberships {
            let Some(m) = self.membership_as_of(user, m, now.pos).await? else {
                continue;
            };
            let activity = act.get(m.room_id.as_str()).copied().unwrap_or((0, 0));
            let by_self = self.member_event_by(&m, user).await?;
            rooms.insert(
                m.room_id.clone(),
                Entry::new(m, by_self, activity, now.pos, None),
            );
        }
        Ok(RoomIndex {
            at: now,
            rooms,
            direct,
            direct_pos: now.pos,
            attrs_loaded: false,
        })
    }

    /// Moves the index to `now`: only the rooms that changed since it are read again.
    pub(super) async fn advance_index(
        &self,
        user: &UserId,
        index: &mut RoomIndex,
        now: SyncToken,
    ) -> Result<()> {
        let since = index.at;
        if since.pos >= now.pos && since.typing >= now.typing {
            return Ok(());
        }
        let changed = self.rooms_changed(user, since, now).await?;
        for m in changed {
            let Some(m) = self.membership_as_of(user, m, now.pos).await? else {
                continue;
            };
            let row = crate::storage::query_opt(
                self.db.as_ref(),
                "SELECT last_pos, bump_pos FROM room_activity WHERE room_id = $1",
                vec![m.room_id.as_str().into()],
            )
            .await?;
            let activity = match row {
                Some(r) => (r.int(0)?, r.int(1)?),
                None => (0, 0),
            };
            let by_self = self.member_event_by(&m, user).await?;
            let attrs = match index.attrs_loaded {
                true => Some(self.room_attrs(user, &m.room_id).await?),
                false => None,
            };
            index.rooms.insert(
                m.room_id.clone(),
                Entry::new(m, by_self, activity, now.pos, attrs),
            );
        }
        if self.stream_moved(Stream::AccountData, Some(since.pos)) {
            let moved = crate::storage::query_opt(
                self.db.as_ref(),
                "SELECT 1 FROM account_data WHERE user_id = $1 AND room_id = '' AND type = 'm.direct'
                 AND stream_pos > $2 AND stream_pos <= $3",
                vec![user.as_str().into(), Value::Int(since.pos), Value::Int(now.pos)],
            )
            .await?;
            if moved.is_some() {
                index.direct = self.direct_rooms(user).await?;
                index.direct_pos = now.pos;
            }
        }
        index.at = now;
        Ok(())
    }

    /// Reads what the filters look at for every room that lacks it: three queries.
    pub(super) async fn load_attrs(&self, user: &UserId, index: &mut RoomIndex) -> Result<()> {
        if index.attrs_loaded {
            return Ok(());
        }
        let u = Value::from(user.as_str());
        let (state, tags) = futures_util::try_join!(
            self.db.query(
                "SELECT c.room_id, c.type, e.json FROM memberships m
                 JOIN current_state c ON c.room_id = m.room_id
                 JOIN events e ON e.event_id = c.event_id
                 WHERE m.user_id = $1 AND m.forgotten = 0 AND c.state_key = ''
                   AND c.type IN ('m.room.create', 'm.room.encryption')",
                vec![u.clone()],
            ),
            self.db.query(
                "SELECT room_id, content FROM account_data WHERE user_id = $1 AND type = 'm.tag' AND room_id <> ''",
                vec![u.clone()],
            ),
        )?;
        for e in index.rooms.values_mut() {
            e.attrs = Some(Attrs::default());
        }
        for r in &state {
            let Some(Some(attrs)) = RoomId::parse(r.text(0)?)
                .ok()
                .and_then(|id| index.rooms.get_mut(&id))
                .map(|e| e.attrs.as_mut())
            else {
                continue;
            };
            apply_state(attrs, &r.text(1)?, &r.text(2)?);
        }
        for r in &tags {
            let Some(Some(attrs)) = RoomId::parse(r.text(0)?)
                .ok()
                .and_then(|id| index.rooms.get_mut(&id))
                .map(|e| e.attrs.as_mut())
            else {
                continue;
            };
            attrs.tags = tag_names(&r.text(1)?);
        }
        index.attrs_loaded = true;
        Ok(())
    }

    async fn room_attrs(&self, user: &UserId, room: &RoomId) -> Result<Attrs> {
        let mut attrs = Attrs::default();
        let (state, tags) = futures_util::try_join!(
            self.db.query(
                "SELECT c.type, e.json FROM current_state c JOIN events e ON e.event_id = c.event_id
                 WHERE c.room_id = $1 AND c.state_key = '' AND c.type IN ('m.room.create', 'm.room.encryption')",
                vec![room.as_str().into()],
            ),
            crate::storage::query_opt(
                self.db.as_ref(),
                "SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND type = 'm.tag'",
                vec![user.as_str().into(), room.as_str().into()],
            ),
        )?;
        for r in &state {
            apply_state(&mut attrs, &r.text(0)?, &r.text(1)?);
        }
        if let Some(r) = tags {
            attrs.tags = tag_names(&r.text(0)?);
        }
        Ok(attrs)
    }

    /// The rooms of the user's `m.direct` (spec: "Direct Messaging").
    async fn direct_rooms(&self, user: &UserId) -> Result<HashSet<OwnedRoomId>> {
        let row = crate::storage::query_opt(
            self.db.as_ref(),
            "SELECT content FROM account_data WHERE user_id = $1 AND room_id = '' AND type = 'm.direct'",
            vec![user.as_str().into()],
        )
        .await?;
        let mut out = HashSet::new();
        if let Some(r) = row {
            if let Ok(Json::Object(users)) = serde_json::from_str::<Json>(&r.text(0)?) {
                for rooms in users.values() {
                    for id in rooms.as_array().into_iter().flatten() {
                        if let Some(id) = id.as_str().and_then(|s| OwnedRoomId::try_from(s).ok()) {
                            out.insert(id);
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Whether the user sent their own member event (a leave, not a kick).
    async fn member_event_by(&self, m: &Membership, user: &UserId) -> Result<bool> {
        if m.membership != "leave" && m.membership != "ban" {
            return Ok(true);
        }
        Ok(self
            .get_pdu(&m.event_id)
            .await?
            .is_some_and(|p| p.sender == user))
    }
}

fn apply_state(attrs: &mut Attrs, kind: &str, json: &str) {
    match kind {
        "m.room.encryption" => attrs.encrypted = true,
        "m.room.create" => {
            attrs.room_type = serde_json::from_str::<Json>(json)
                .ok()
                .and_then(|j| j["content"]["type"].as_str().map(str::to_owned));
        }
        _ => {}
    }
}

fn tag_names(content: &str) -> BTreeSet<String> {
    serde_json::from_str::<Json>(content)
        .ok()
        .and_then(|j| {
            j.get("tags")
                .and_then(Json::as_object)
                .map(|t| t.keys().cloned().collect())
        })
        .unwrap_or_default()
}
