//! What a full sync reads for many rooms at once rather than room by room: receipts,
//! room account data, summaries, and the first page of each timeline.

use std::collections::HashMap;

use ruma::{OwnedRoomId, RoomId, UserId};
use serde_json::{json, Value as Json};

use super::summary::Summaries;
use crate::{
    homeserver::Stream,
    ports::{Row, Value},
    storage::SizedStatements,
    Error, Homeserver, Result,
};

impl Homeserver {
    /// What a full sync reads for all of the user's rooms at once rather than room by
    /// room: receipts, room account data, summaries (three queries, not three per room).
    pub(super) async fn prefetch(&self, user: &UserId, upto: i64) -> Result<Prefetched> {
        let u = Value::from(user.as_str());
        let receipts = async {
            if !self.stream_moved(Stream::Receipts, None) {
                return Ok(Vec::new());
            }
            self.db
                .query(
                    "SELECT r.room_id, r.user_id, r.receipt_type, r.thread_id, r.event_id, r.ts FROM receipts r
                     JOIN memberships m ON m.room_id = r.room_id AND m.user_id = $1 AND m.membership = 'join'
                     WHERE r.stream_pos <= $2",
                    vec![u.clone(), Value::Int(upto)],
                )
                .await
        };
        let account_data = self.db.query(
            "SELECT room_id, type, content FROM account_data WHERE user_id = $1 AND room_id <> '' AND stream_pos <= $2
             ORDER BY stream_pos",
            vec![u.clone(), Value::Int(upto)],
        );
        // Independent reads, at once (on PostgreSQL each is a round trip).
        let (receipts, account_data, summaries) = futures_util::try_join!(
            async { receipts.await.map_err(Error::from) },
            async { account_data.await.map_err(Error::from) },
            self.joined_summaries(user),
        )?;
        let mut out = Prefetched {
            summaries,
            ..Default::default()
        };
        let mut by_room: HashMap<OwnedRoomId, Vec<Row>> = HashMap::new();
        for r in receipts {
            let room = OwnedRoomId::try_from(r.text(0)?).map_err(Error::internal)?;
            by_room
                .entry(room)
                .or_default()
                .push(Row(r.0[1..].to_vec()));
        }
        for (room, rows) in by_room {
            if let Some(json) = crate::rooms::receipts::receipts_event(&rows, user)? {
                out.receipts.insert(room, json);
            }
        }
        for r in account_data {
            let room = OwnedRoomId::try_from(r.text(0)?).map_err(Error::internal)?;
            let content: Json = serde_json::from_str(&r.text(2)?)?;
            out.account_data
                .entry(room)
                .or_default()
                .push(json!({ "type": r.text(1)?, "content": content }));
        }
        Ok(out)
    }

    /// The first page of `room_id`'s timeline up to `upto` (`limit` + 1 newest events),
    /// read with the next rooms of the full sync's list in one query.
    pub(super) async fn prefetched_timeline(
        &self,
        p: &mut Prefetched,
        room_id: &RoomId,
        upto: i64,
        limit: usize,
    ) -> Result<Option<Vec<Row>>> {
        if let Some(rows) = p.timelines.remove(room_id) {
            return Ok(Some(rows));
        }
        let Some(at) = p.timelines_pending.iter().position(|r| r == room_id) else {
            return Ok(None);
        };
        // This room, then the ones after it, in the largest chunk that fits.
        let mut rooms: Vec<OwnedRoomId> = p.timelines_pending.drain(..=at).skip(at).collect();
        let (n, sql) = timelines_query(p.timelines_pending.len() + 1);
        rooms.extend(p.timelines_pending.drain(..n - 1));
        let mut params = vec![Value::Int(upto), Value::Int(limit as i64 + 1)];
        params.extend(rooms.iter().map(|r| Value::from(r.as_str())));
        let rows = self.db.query(sql, params).await?;
        for room in &rooms {
            p.timelines.insert(room.clone(), Vec::new());
        }
        for r in rows {
            let room = OwnedRoomId::try_from(r.text(0)?).map_err(Error::internal)?;
            if let Some(page) = p.timelines.get_mut(&room) {
                let mut columns = r.0;
                columns.remove(0);
                page.push(Row(columns));
            }
        }
        // Newest first, as the timeline reads them (UNION ALL keeps no order).
        for room in &rooms {
            if let Some(page) = p.timelines.get_mut(room) {
                page.sort_by_key(|r| std::cmp::Reverse(r.int(2).unwrap_or_default()));
            }
        }
        Ok(p.timelines.remove(room_id))
    }
}

/// Per-room data a full sync read in advance; see [`Homeserver::prefetch`].
#[derive(Default)]
pub(super) struct Prefetched {
    pub(super) receipts: HashMap<OwnedRoomId, Json>,
    pub(super) account_data: HashMap<OwnedRoomId, Vec<Json>>,
    pub(super) summaries: Summaries,
    /// Joined rooms whose timeline's first page is not read yet, in the order sent.
    pub(super) timelines_pending: std::collections::VecDeque<OwnedRoomId>,
    /// First pages read and not yet used: rows without the room, newest first.
    pub(super) timelines: HashMap<OwnedRoomId, Vec<Row>>,
}

/// Rooms per timeline query of a full sync, largest first; few distinct statements, and
/// at most one chunk's events in memory at once.
const TIMELINE_ROOMS: [usize; 6] = [32, 16, 8, 4, 2, 1];

/// The largest timeline query for at most `n` (≥ 1) rooms: how many, and its SQL, with
/// the position as `$1`, the rows per room as `$2` and the rooms after them. Rows: room,
/// event ID, JSON, position, transaction device and ID, relations flag.
fn timelines_query(n: usize) -> (usize, &'static str) {
    static SQL: std::sync::LazyLock<SizedStatements> = std::sync::LazyLock::new(|| {
        SizedStatements::new(&TIMELINE_ROOMS, |rooms| {
            (0..rooms)
                .map(|i| {
                    format!(
                        "SELECT * FROM (SELECT room_id, event_id, json, stream_pos, txn_device, txn_id, relations
                         FROM events WHERE room_id = ${} AND stream_pos > 0 AND stream_pos <= $1
                         ORDER BY stream_pos DESC LIMIT $2) AS t{i}",
                        i + 3
                    )
                })
                .collect::<Vec<_>>()
                .join(" UNION ALL ")
        })
    });
    SQL.at_most(n)
}
