//! Unread counts (spec: "Receiving notifications", "Threaded read receipts"): the push
//! outcomes of the events after the member's read receipts (`m.read`, `m.read.private`)
//! and their join. An unthreaded receipt reads every thread up to its event; a threaded
//! one only its thread (`main` for the main timeline).

use std::collections::BTreeMap;

use ruma::{RoomId, UserId};

use crate::{ports::Value, Homeserver, Result};

/// Unread events looked at per room and request, newest first: past that many, counts
/// stop growing (clients show "99+" long before).
pub const MAX_COUNTED: i64 = 10_000;

/// (notifications, highlights).
pub type Counts = (u64, u64);

/// Members' counts kept in memory, by (room, user).
pub(crate) const CACHED_COUNTS: usize = 50_000;

/// Where a member has read up to: the unthreaded receipt (or their join), and each
/// thread's own receipt.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Floors {
    pub(crate) unthreaded: i64,
    pub(crate) threaded: BTreeMap<String, i64>,
}

/// Counts as of a position, with the floors they were counted from. Push outcomes never
/// change once written and positions are published in order, so while the floors stay,
/// the counts at a later position are these plus the outcomes in between.
#[derive(Clone, Debug)]
pub(crate) struct CountsAt {
    upto: i64,
    floors: Floors,
    counts: UnreadCounts,
}

pub(crate) type CountsCache =
    crate::cache::BoundedCache<(ruma::OwnedRoomId, ruma::OwnedUserId), std::sync::Arc<CountsAt>>;

/// A member's unread counts in one room.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnreadCounts {
    /// The main timeline's (thread roots included).
    pub main: Counts,
    /// Each thread's, by root, only those with something unread.
    pub threads: BTreeMap<String, Counts>,
}

impl UnreadCounts {
    /// Everything together, for clients that do not ask for threads apart.
    pub fn total(&self) -> Counts {
        self.threads
            .values()
            .fold(self.main, |(n, h), (tn, th)| (n + tn, h + th))
    }
}

impl Homeserver {
    /// The member's floors: their receipts' events' positions, none below their join.
    pub(crate) async fn read_floors(
        &self,
        room_id: &RoomId,
        user: &UserId,
        joined_at: i64,
        upto: i64,
    ) -> Result<Floors> {
        let receipts = self
            .db
            .query(
                "SELECT r.thread_id, MAX(e.stream_pos) FROM receipts r JOIN events e ON e.event_id = r.event_id
                 WHERE r.room_id = $1 AND r.user_id = $2 AND r.receipt_type IN ('m.read', 'm.read.private')
                   AND r.stream_pos <= $3
                 GROUP BY r.thread_id",
                vec![room_id.as_str().into(), user.as_str().into(), Value::Int(upto)],
            )
            .await?;
        let mut floors = Floors {
            unthreaded: joined_at,
            threaded: BTreeMap::new(),
        };
        for r in &receipts {
            let pos = r.opt_int(1)?.unwrap_or(0);
            match r.text(0)?.as_str() {
                "" => floors.unthreaded = floors.unthreaded.max(pos),
                thread => {
                    floors.threaded.insert(thread.to_owned(), pos);
                }
            }
        }
        Ok(floors)
    }

    /// The member's unread counts in the room as of position `upto`, counting events after
    /// `joined_at` (their join) only.
    pub async fn unread_counts(
        &self,
        room_id: &RoomId,
        user: &UserId,
        joined_at: i64,
        upto: i64,
    ) -> Result<UnreadCounts> {
        let floors = self.read_floors(room_id, user, joined_at, upto).await?;
        let key = (room_id.to_owned(), user.to_owned());
        // Counted before from the same floors: only what came since is read.
        let (mut out, from) = match self.unread.get(&key) {
            Some(c) if c.floors == floors && c.upto <= upto => (c.counts.clone(), c.upto),
            _ => (UnreadCounts::default(), floors.unthreaded),
        };
        let rows = self
            .db
            .query(
                "SELECT e.thread_id, e.stream_pos, COALESCE(x.notify, e.notify), COALESCE(x.highlight, e.highlight)
                 FROM push_events e LEFT JOIN push_exceptions x
                   ON x.room_id = e.room_id AND x.user_id = $2 AND x.stream_pos = e.stream_pos
                 WHERE e.room_id = $1 AND e.stream_pos > $3 AND e.stream_pos <= $4 AND e.sender <> $2
                 ORDER BY e.stream_pos DESC LIMIT $5",
                vec![
                    room_id.as_str().into(),
                    user.as_str().into(),
                    Value::Int(from.max(floors.unthreaded)),
                    Value::Int(upto),
                    Value::Int(MAX_COUNTED),
                ],
            )
            .await?;
        for r in &rows {
            let (thread, pos) = (r.text(0)?, r.int(1)?);
            let floor = floors
                .threaded
                .get(&thread)
                .copied()
                .unwrap_or(0)
                .max(floors.unthreaded);
            if pos <= floor || r.int(2)? == 0 {
                continue;
            }
            let highlight = u64::from(r.int(3)? != 0);
            let counts = if thread == "main" {
                &mut out.main
            } else {
                out.threads.entry(thread).or_default()
            };
            counts.0 += 1;
            counts.1 += highlight;
        }
        if self.unread.get(&key).is_none_or(|c| c.upto <= upto) {
            let at = CountsAt {
                upto,
                floors,
                counts: out.clone(),
            };
            self.unread.put(key, std::sync::Arc::new(at));
        }
        Ok(out)
    }
}

impl Homeserver {
    /// The user's unread notifications across the rooms they are joined to, as push
    /// gateways show on the app's badge (spec: `counts.unread`): the same outcomes as
    /// [`Homeserver::unread_counts`] (after their join and their read receipts, a
    /// thread's own receipt for its thread), counted in one query up to [`MAX_COUNTED`].
    pub(crate) async fn unread_badge(&self, user: &UserId) -> Result<u64> {
        let rows = self
            .db
            .query(
                "SELECT COUNT(*) FROM (
                   SELECT 1 FROM memberships m
                   JOIN push_events e ON e.room_id = m.room_id AND e.stream_pos > m.stream_pos
                   LEFT JOIN push_exceptions x
                     ON x.room_id = e.room_id AND x.user_id = $1 AND x.stream_pos = e.stream_pos
                   WHERE m.user_id = $1 AND m.membership = 'join' AND e.sender <> $1
                     AND COALESCE(x.notify, e.notify) = 1
                     AND NOT EXISTS (
                       SELECT 1 FROM receipts r JOIN events re ON re.event_id = r.event_id
                       WHERE r.room_id = e.room_id AND r.user_id = $1
                         AND r.receipt_type IN ('m.read', 'm.read.private')
                         AND (r.thread_id = '' OR r.thread_id = e.thread_id)
                         AND re.stream_pos >= e.stream_pos)
                   LIMIT $2) t",
                vec![user.as_str().into(), Value::Int(MAX_COUNTED)],
            )
            .await?;
        Ok(rows
            .first()
            .map(|r| r.int(0))
            .transpose()?
            .unwrap_or(0)
            .max(0) as u64)
    }
}
