//! Which rooms a sync looks at, and the user's membership of each as of the sync's own
//! position (never newer: a leave committed while the sync is assembled waits for the
//! next one).

use super::*;

/// The user's membership of one room.
#[derive(Clone, Debug)]
pub(in crate::sync) struct Membership {
    pub(in crate::sync) room_id: OwnedRoomId,
    pub(in crate::sync) membership: String,
    /// Where the membership last changed (not where the member event last changed).
    pub(in crate::sync) changed_pos: i64,
    /// The member event that set it.
    pub(in crate::sync) event_id: OwnedEventId,
}

impl Membership {
    pub(super) fn from_row(r: &Row) -> Result<Self> {
        Ok(Self {
            room_id: OwnedRoomId::try_from(r.text(0)?).map_err(Error::internal)?,
            membership: r.text(1)?,
            event_id: OwnedEventId::try_from(r.text(2)?).map_err(Error::internal)?,
            changed_pos: r.int(3)?,
        })
    }
}

const MEMBERSHIP_COLUMNS: &str =
    "SELECT room_id, membership, event_id, stream_pos FROM memberships";

/// Positions since `since` up to which an incremental sync walks the rooms that moved
/// rather than the user's rooms.
const ACTIVITY_SCAN_MAX: i64 = 256;

impl Homeserver {
    pub(in crate::sync) async fn all_memberships(&self, user: &UserId) -> Result<Vec<Membership>> {
        let sql = "SELECT room_id, membership, event_id, stream_pos FROM memberships WHERE user_id = $1 AND forgotten = 0";
        debug_assert!(sql.starts_with(MEMBERSHIP_COLUMNS));
        self.db
            .query(sql, vec![user.as_str().into()])
            .await?
            .iter()
            .map(Membership::from_row)
            .collect()
    }

    /// The rooms an incremental sync from `since` must look at, each with the user's
    /// membership row: a constant number of queries, each reading only what moved.
    pub(in crate::sync) async fn rooms_changed(
        &self,
        user: &UserId,
        since: SyncToken,
        now: SyncToken,
    ) -> Result<Vec<Membership>> {
        let mut rooms: HashMap<OwnedRoomId, Membership> = HashMap::new();
        let u = Value::from(user.as_str());
        let s = Value::Int(since.pos);
        let mut add = |rows: Vec<Row>| -> Result<()> {
            for r in &rows {
                let m = Membership::from_row(r)?;
                rooms.insert(m.room_id.clone(), m);
            }
            Ok(())
        };
        if self.stream_moved(Stream::Events, Some(since.pos)) {
            // Rooms that moved since `since` and are the user's. Few positions since:
            // walk the rooms that moved (at most one per position); many: the user's rooms.
            // Either way the smaller side, not the account's size nor the server's.
            let sql = if now.pos - since.pos <= ACTIVITY_SCAN_MAX {
                "SELECT m.room_id, m.membership, m.event_id, m.stream_pos FROM room_activity a
                 CROSS JOIN memberships m
                 WHERE m.room_id = a.room_id AND m.user_id = $1 AND a.last_pos > $2 AND m.forgotten = 0"
            } else {
                "SELECT m.room_id, m.membership, m.event_id, m.stream_pos FROM memberships m
                 CROSS JOIN room_activity a
                 WHERE a.room_id = m.room_id AND m.user_id = $1 AND a.last_pos > $2 AND m.forgotten = 0"
            };
            add(self.db.query(sql, vec![u.clone(), s.clone()]).await?)?;
        }
        if self.stream_moved(Stream::Memberships, Some(since.pos)) {
            add(self
                .db
                .query(
                    "SELECT room_id, membership, event_id, stream_pos FROM memberships
                     WHERE user_id = $1 AND stream_pos > $2 AND forgotten = 0",
                    vec![u.clone(), s.clone()],
                )
                .await?)?;
        }
        if self.stream_moved(Stream::Receipts, Some(since.pos)) {
            add(self
                .db
                .query(
                    "SELECT room_id, membership, event_id, stream_pos FROM memberships
                     WHERE user_id = $1 AND forgotten = 0 AND room_id IN
                       (SELECT room_id FROM receipts WHERE stream_pos > $2 AND stream_pos <= $3)",
                    vec![u.clone(), s.clone(), Value::Int(now.pos)],
                )
                .await?)?;
        }
        if self.stream_moved(Stream::AccountData, Some(since.pos)) {
            add(self
                .db
                .query(
                    "SELECT room_id, membership, event_id, stream_pos FROM memberships
                     WHERE user_id = $1 AND forgotten = 0 AND room_id IN
                       (SELECT room_id FROM account_data WHERE user_id = $1 AND stream_pos > $2 AND room_id <> '')",
                    vec![u.clone(), s.clone()],
                )
                .await?)?;
        }
        for room in self.typing_rooms_since(since.typing) {
            if rooms.contains_key(&room) {
                continue;
            }
            if let Some(r) = crate::storage::query_opt(
                self.db.as_ref(),
                "SELECT room_id, membership, event_id, stream_pos FROM memberships
                 WHERE room_id = $1 AND user_id = $2 AND forgotten = 0",
                vec![room.as_str().into(), u.clone()],
            )
            .await?
            {
                let m = Membership::from_row(&r)?;
                rooms.insert(m.room_id.clone(), m);
            }
        }
        Ok(rooms.into_values().collect())
    }

    /// The membership as it was at `pos`: the row, unless it changed after `pos` (the
    /// sync started before that commit); then the member event in the state at `pos`.
    pub(in crate::sync) async fn membership_as_of(
        &self,
        user: &UserId,
        m: Membership,
        pos: i64,
    ) -> Result<Option<Membership>> {
        if m.changed_pos <= pos {
            return Ok(Some(m));
        }
        let Some(state) = self.state_at(&m.room_id, pos).await? else {
            return Ok(None);
        };
        let Some(id) = state.get(&(StateEventType::RoomMember, user.to_string())) else {
            return Ok(None);
        };
        let (Some(pdu), Some(place)) = (self.get_pdu(id).await?, self.event_place(id).await?)
        else {
            return Ok(None);
        };
        Ok(Some(Membership {
            membership: membership_of(&pdu),
            changed_pos: place.pos,
            event_id: id.clone(),
            room_id: m.room_id,
        }))
    }

    /// The user's membership in the room at `pos`, from the room's state there.
    pub(super) async fn membership_at(
        &self,
        room_id: &RoomId,
        user: &UserId,
        pos: i64,
    ) -> Result<Option<String>> {
        let Some(state) = self.state_at(room_id, pos).await? else {
            return Ok(None);
        };
        Ok(
            match state.get(&(StateEventType::RoomMember, user.to_string())) {
                Some(id) => self.get_pdu(id).await?.map(|p| membership_of(&p)),
                None => None,
            },
        )
    }

    /// The room's state after its last event at or before `pos`, if it had one.
    pub(crate) async fn state_at(
        &self,
        room_id: &RoomId,
        pos: i64,
    ) -> Result<Option<Arc<StateIds>>> {
        let row = crate::storage::query_opt(
            self.db.as_ref(),
            "SELECT state_after FROM events WHERE room_id = $1 AND stream_pos <= $2 ORDER BY stream_pos DESC LIMIT 1",
            vec![room_id.as_str().into(), Value::Int(pos)],
        )
        .await?;
        match row {
            Some(r) => Ok(Some(self.state_group(r.int(0)?).await?.0)),
            None => Ok(None),
        }
    }
}
