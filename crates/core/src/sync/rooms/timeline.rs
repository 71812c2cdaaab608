//! A room's timeline in `/sync`: the newest events the user may see, and the block that
//! carries them.

use std::sync::Arc;

use ruma::{RoomId, UserId};

use super::TimelineBlock;
use crate::{
    ports::{Row, Value},
    rooms::Pdu,
    sync::{filter::EventFilter, token::position_token},
    Homeserver, Result,
};

/// How many events a timeline may look at per event it returns, before giving up on
/// history the user may not see.
const MAX_SCAN_FACTOR: usize = 20;

/// Timeline length when the filter names none (spec leaves it to the server).
const DEFAULT_TIMELINE_LIMIT: usize = 10;

/// An event of a timeline, with the client transaction that sent it, if any.
pub(super) struct TimelineEvent {
    pub(super) pos: i64,
    pub(super) pdu: Arc<Pdu>,
    /// (device, transaction ID) of a local event sent with one.
    pub(super) txn: Option<(String, String)>,
}

impl Homeserver {
    /// The number of timeline events a sync sends per room.
    pub(super) fn timeline_limit(&self, f: &EventFilter) -> usize {
        f.limit
            .unwrap_or(DEFAULT_TIMELINE_LIMIT)
            .clamp(1, self.config.max_timeline_limit)
    }

    /// Timeline events in `(from, upto]`, newest `limit` of them, oldest first; with the
    /// first page's rows (the newest `limit` + 1 up to `upto`) when they were read already.
    pub(super) async fn timeline(
        &self,
        room_id: &RoomId,
        f: &EventFilter,
        from: Option<i64>,
        upto: i64,
        viewer: (&UserId, &str, i64),
        mut first_page: Option<Vec<Row>>,
    ) -> Result<(Vec<TimelineEvent>, bool)> {
        let (user, membership, member_pos) = viewer;
        let mut scanned = 0usize;
        let limit = self.timeline_limit(f);
        let mut out = Vec::new();
        let mut cursor = upto + 1;
        let floor = from.unwrap_or(0);
        loop {
            let rows = match first_page.take() {
                Some(rows) => rows,
                None => {
                    self.db
                        .query(
                            "SELECT event_id, json, stream_pos, txn_device, txn_id FROM events
                             WHERE room_id = $1 AND stream_pos > $2 AND stream_pos < $3
                             ORDER BY stream_pos DESC LIMIT $4",
                            vec![
                                room_id.as_str().into(),
                                Value::Int(floor),
                                Value::Int(cursor),
                                Value::Int(limit as i64 + 1),
                            ],
                        )
                        .await?
                }
            };
            if rows.is_empty() {
                break;
            }
            for r in &rows {
                cursor = r.int(2)?;
                scanned += 1;
                // Hidden history could make us scan the whole room: stop and say limited.
                if scanned > limit * MAX_SCAN_FACTOR {
                    out.reverse();
                    return Ok((out, true));
                }
                let id = r.text(0)?;
                let pdu = match ruma::EventId::parse(&id)
                    .ok()
                    .and_then(|e| self.pdu_cache.get(&e))
                {
                    Some(p) => p,
                    None => Arc::new(Pdu::from_stored(&id, &r.text(1)?)?),
                };
                // Events after the user joined are theirs to see; earlier ones depend on
                // the room's history visibility.
                let visible = (membership == "join" && cursor > member_pos)
                    || self.can_see(user, &pdu, Some(membership)).await?;
                if visible && f.allows(&pdu) {
                    if out.len() == limit {
                        out.reverse();
                        return Ok((out, true));
                    }
                    let txn = match (r.opt_text(3)?, r.opt_text(4)?) {
                        (Some(d), Some(t)) => Some((d, t)),
                        _ => None,
                    };
                    out.push(TimelineEvent {
                        pos: cursor,
                        pdu,
                        txn,
                    });
                }
            }
            // Fewer rows than asked for: the range holds no more.
            if rows.len() <= limit {
                break;
            }
        }
        out.reverse();
        Ok((out, false))
    }
}

/// A timeline block: events (with `unsigned.transaction_id` for the device that sent them),
/// `limited`, and `prev_batch`, the place just before the first event (or, for an empty
/// timeline, the sync's own place).
pub(super) fn timeline_block(
    timeline: &[TimelineEvent],
    (user, device): (&UserId, &ruma::DeviceId),
    limited: bool,
    end: i64,
) -> Result<TimelineBlock> {
    let mut events = Vec::with_capacity(timeline.len());
    for t in timeline {
        let txn = match &t.txn {
            Some((d, txn)) if t.pdu.sender == user && d == device.as_str() => Some(txn.as_str()),
            _ => None,
        };
        events.push(t.pdu.client_raw(None, txn)?);
    }
    let prev_batch = timeline.first().map_or(end, |t| t.pos - 1);
    Ok(TimelineBlock {
        events,
        limited,
        prev_batch: position_token(prev_batch),
    })
}
