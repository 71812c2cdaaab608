//! `GET /notifications` (spec: "Listing Notifications"): the events that notified the
//! user in the rooms they are in, newest first, with whether each is read.

use std::collections::HashMap;

use ruma::{OwnedRoomId, UserId};
use serde_json::{json, Value as Json};

use crate::{ports::Value, Error, Homeserver, Result};

/// Page sizes.
const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 100;
/// Stream positions one query looks back over, and queries per request: a request reads
/// at most this much history, and says where to go on from.
const WINDOW: i64 = 10_000;
const MAX_WINDOWS: usize = 10;

impl Homeserver {
    /// (notifications, next token).
    pub async fn notifications(
        &self,
        user: &UserId,
        from: Option<&str>,
        limit: Option<usize>,
        highlights_only: bool,
    ) -> Result<(Vec<Json>, Option<String>)> {
        let limit = limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
        // Tokens are positions: everything below the one given.
        let mut hi = match from {
            None => self.current_pos(),
            Some(t) => crate::sync::token::parse_position(t, true)?,
        };
        let mut rows = Vec::new();
        for _ in 0..MAX_WINDOWS {
            if hi <= 0 || rows.len() > limit {
                break;
            }
            // (lo, hi] this time.
            let lo = (hi - WINDOW).max(0);
            let found = self
                .db
                .query(
                    "SELECT e.room_id, e.stream_pos, e.event_id, e.thread_id, COALESCE(x.highlight, e.highlight), m.stream_pos
                     FROM memberships m
                     JOIN push_events e ON e.room_id = m.room_id AND e.stream_pos > m.stream_pos
                     LEFT JOIN push_exceptions x ON x.room_id = e.room_id AND x.user_id = $1 AND x.stream_pos = e.stream_pos
                     WHERE m.user_id = $1 AND m.membership = 'join' AND e.sender <> $1
                       AND e.stream_pos > $2 AND e.stream_pos <= $3 AND COALESCE(x.notify, e.notify) = 1
                       AND ($5 = 0 OR COALESCE(x.highlight, e.highlight) = 1)
                     ORDER BY e.stream_pos DESC LIMIT $4",
                    vec![
                        user.as_str().into(),
                        Value::Int(lo),
                        Value::Int(hi),
                        Value::Int((limit + 1 - rows.len()) as i64),
                        Value::Int(i64::from(highlights_only)),
                    ],
                )
                .await?;
            rows.extend(found);
            if rows.len() <= limit {
                hi = lo;
            }
        }
        // More below the last one shown, or history not looked at yet.
        let next = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|r| r.int(1)).transpose()?.map(|p| p - 1)
        } else {
            (hi > 0).then_some(hi)
        };
        let mut floors: HashMap<OwnedRoomId, (i64, HashMap<String, i64>)> = HashMap::new();
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let room = OwnedRoomId::try_from(r.text(0)?).map_err(Error::internal)?;
            let (pos, thread, highlight) = (r.int(1)?, r.text(3)?, r.int(4)? != 0);
            if !floors.contains_key(&room) {
                let f = self.read_floors(&room, user, r.int(5)?, i64::MAX).await?;
                floors.insert(
                    room.clone(),
                    (f.unthreaded, f.threaded.into_iter().collect()),
                );
            }
            let read = floors.get(&room).is_some_and(|(all, threads)| {
                pos <= *all || threads.get(&thread).is_some_and(|t| pos <= *t)
            });
            let Ok(id) = ruma::EventId::parse(r.text(2)?) else {
                continue;
            };
            let Some(pdu) = self.get_pdu(&id).await? else {
                continue;
            };
            // The outcome is stored, not the rule's actions: what it did is given.
            let actions = if highlight {
                json!(["notify", { "set_tweak": "highlight" }])
            } else {
                json!(["notify"])
            };
            out.push(json!({
                "actions": actions,
                "event": pdu.to_client_json(&room),
                "read": read,
                "room_id": room,
                "ts": pdu.origin_server_ts,
            }));
        }
        Ok((out, next.map(crate::sync::token::position_token)))
    }
}
