//! Room summaries (spec: "Room summary"): member counts and heroes, of one room or of all
//! of a user's joined rooms at once, read from the `current_state_members` index.

use std::collections::HashMap;

use ruma::{OwnedRoomId, RoomId, UserId};
use serde_json::{json, Value as Json};

use crate::{
    ports::{Row, Value},
    Error, Homeserver, Result,
};

impl Homeserver {
    /// `m.heroes` and member counts (spec: "Room summary") of one room: two index reads,
    /// whatever the room's size (member counts aside, which count index entries).
    pub(in crate::sync) async fn summary(&self, room_id: &RoomId, user: &UserId) -> Result<Json> {
        let counts = self
            .db
            .query(
                "SELECT room_id, membership, COUNT(*) FROM current_state
                 WHERE room_id = $1 AND type = 'm.room.member' AND membership IN ('join', 'invite')
                 GROUP BY room_id, membership",
                vec![room_id.as_str().into()],
            )
            .await?;
        let heroes = self
            .db
            .query(
                &hero_parts(
                    "SELECT room_id, state_key, membership, stream_pos FROM current_state
                     WHERE room_id = $1 AND type = 'm.room.member' AND membership = '{m}' AND state_key <> $2
                     ORDER BY stream_pos LIMIT 5",
                ),
                vec![room_id.as_str().into(), user.as_str().into()],
            )
            .await?;
        let mut all = Summaries::default();
        all.add_counts(&counts)?;
        all.add_heroes(&heroes)?;
        Ok(all.take(room_id))
    }

    /// The summaries of every room `user` is joined to, in two queries.
    pub(super) async fn joined_summaries(&self, user: &UserId) -> Result<Summaries> {
        let u = Value::from(user.as_str());
        let counts = self.db.query(
            "SELECT c.room_id, c.membership, COUNT(*) FROM memberships m
             JOIN current_state c ON c.room_id = m.room_id AND c.type = 'm.room.member'
               AND c.membership IN ('join', 'invite')
             WHERE m.user_id = $1 AND m.membership = 'join' GROUP BY c.room_id, c.membership",
            vec![u.clone()],
        );
        // The first few members of each room in stream order, of each membership: for each
        // room and membership, the fifth one's position bounds an index range (no room is
        // read whole). The bounds are worked out first, once each (MATERIALIZED): inlined,
        // PostgreSQL ran the bound's subquery once per member.
        let heroes = self.db.query(
                "WITH b AS MATERIALIZED (
                   SELECT m.room_id, p.membership, COALESCE((
                     SELECT y.stream_pos FROM current_state y
                     WHERE y.room_id = m.room_id AND y.type = 'm.room.member'
                       AND y.membership = p.membership AND y.state_key <> $1
                     ORDER BY y.stream_pos LIMIT 1 OFFSET 4), 9223372036854775807) AS bound
                   FROM memberships m CROSS JOIN (SELECT 'join' AS membership UNION ALL
                     SELECT 'invite' UNION ALL SELECT 'leave' UNION ALL SELECT 'ban') p
                   WHERE m.user_id = $1 AND m.membership = 'join')
                 SELECT x.room_id, x.state_key, x.membership, x.stream_pos FROM b
                 JOIN current_state x ON x.room_id = b.room_id AND x.type = 'm.room.member'
                   AND x.membership = b.membership AND x.state_key <> $1 AND x.stream_pos <= b.bound",
                vec![u.clone()],
            );
        // Both at once (on PostgreSQL each is a round trip).
        let (counts, heroes) = futures_util::try_join!(counts, heroes)?;
        let mut all = Summaries::default();
        all.add_counts(&counts)?;
        all.add_heroes(&heroes)?;
        Ok(all)
    }
}

/// Spec ("Room summary"): up to five heroes.
const HEROES: usize = 5;

/// `part` (with `{m}` for a membership) once for each membership heroes come from,
/// as one `UNION ALL` query. Rows: room, member, membership, stream position.
fn hero_parts(part: &str) -> String {
    ["join", "invite", "leave", "ban"]
        .iter()
        .map(|m| format!("SELECT * FROM ({}) AS {m}_part", part.replace("{m}", m)))
        .collect::<Vec<_>>()
        .join(" UNION ALL ")
}

/// Room summaries being put together from (room, membership, count) and (room, member,
/// membership, stream position) rows.
#[derive(Default)]
pub(super) struct Summaries(HashMap<OwnedRoomId, SummaryParts>);

#[derive(Default)]
struct SummaryParts {
    joined: i64,
    invited: i64,
    /// (stream position, member) of members joined or invited, and of those gone.
    present: Vec<(i64, String)>,
    gone: Vec<(i64, String)>,
}

impl Summaries {
    fn add_counts(&mut self, rows: &[Row]) -> Result<()> {
        for r in rows {
            let room = OwnedRoomId::try_from(r.text(0)?).map_err(Error::internal)?;
            let parts = self.0.entry(room).or_default();
            match r.opt_text(1)?.as_deref() {
                Some("join") => parts.joined += r.int(2)?,
                Some("invite") => parts.invited += r.int(2)?,
                _ => {}
            }
        }
        Ok(())
    }

    fn add_heroes(&mut self, rows: &[Row]) -> Result<()> {
        for r in rows {
            let room = OwnedRoomId::try_from(r.text(0)?).map_err(Error::internal)?;
            let parts = self.0.entry(room).or_default();
            let list = match r.opt_text(2)?.as_deref() {
                Some("join" | "invite") => &mut parts.present,
                Some("leave" | "ban") => &mut parts.gone,
                _ => continue,
            };
            list.push((r.opt_int(3)?.unwrap_or(i64::MAX), r.text(1)?));
        }
        Ok(())
    }

    /// Heroes are the first members present in stream order, else (nobody else is) the
    /// first of those who left.
    pub(super) fn take(&mut self, room: &RoomId) -> Json {
        let p = self.0.remove(room).unwrap_or_default();
        let mut heroes = if p.present.is_empty() {
            p.gone
        } else {
            p.present
        };
        heroes.sort();
        let heroes: Vec<String> = heroes.into_iter().take(HEROES).map(|(_, m)| m).collect();
        json!({ "m.heroes": heroes, "m.joined_member_count": p.joined, "m.invited_member_count": p.invited })
    }
}
