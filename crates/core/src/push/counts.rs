//! Unread counts (spec: "Receiving notifications", "Threaded read receipts"): the push
//! outcomes of the events after the member's read receipts (`m.read`, `m.read.private`)
//! and their join. An unthreaded receipt reads every thread up to its event; a threaded
//! one only its thread (`main` for the main timeline).

use std::collections::{BTreeMap, HashMap};

use ruma::{RoomId, UserId};

use crate::{ports::Value, Homeserver, Result};

/// Unread events looked at per room and request, newest first: past that many, counts
/// stop growing (clients show "99+" long before).
pub const MAX_COUNTED: i64 = 10_000;

/// (notifications, highlights).
pub type Counts = (u64, u64);

/// A member's unread counts in one room.
#[derive(Debug, Default, PartialEq, Eq)]
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
    /// The member's unread counts in the room as of position `upto`, counting events after
    /// `joined_at` (their join) only.
    pub async fn unread_counts(
        &self,
        room_id: &RoomId,
        user: &UserId,
        joined_at: i64,
        upto: i64,
    ) -> Result<UnreadCounts> {
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
        let mut unthreaded = joined_at;
        let mut threaded: HashMap<String, i64> = HashMap::new();
        for r in &receipts {
            let pos = r.opt_int(1)?.unwrap_or(0);
            match r.text(0)?.as_str() {
                "" => unthreaded = unthreaded.max(pos),
                thread => {
                    threaded.insert(thread.to_owned(), pos);
                }
            }
        }
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
                    Value::Int(unthreaded),
                    Value::Int(upto),
                    Value::Int(MAX_COUNTED),
                ],
            )
            .await?;
        let mut out = UnreadCounts::default();
        for r in &rows {
            let (thread, pos) = (r.text(0)?, r.int(1)?);
            let floor = threaded.get(&thread).copied().unwrap_or(0).max(unthreaded);
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
        Ok(out)
    }
}
