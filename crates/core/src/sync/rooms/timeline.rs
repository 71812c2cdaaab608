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
pub(in crate::sync) struct TimelineEvent {
    pub(in crate::sync) pos: i64,
    pub(in crate::sync) pdu: Arc<Pdu>,
    /// (device, transaction ID) of a local event sent with one.
    pub(in crate::sync) txn: Option<(String, String)>,
    /// Its bundled aggregations (`unsigned.m.relations`), if it has any.
    pub(in crate::sync) relations: Option<Box<serde_json::value::RawValue>>,
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
    pub(in crate::sync) async fn timeline(
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
        // Events some aggregated child points at (`rooms/relations.rs`).
        let mut related = Vec::new();
        let mut cursor = upto + 1;
        let floor = from.unwrap_or(0);
        loop {
            let rows = match first_page.take() {
                Some(rows) => rows,
                None => {
                    self.db
                        .query(
                            "SELECT event_id, json, stream_pos, txn_device, txn_id, relations FROM events
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
                    return self
                        .finish_timeline(room_id, viewer, upto, out, related, true)
                        .await;
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
                        return self
                            .finish_timeline(room_id, viewer, upto, out, related, true)
                            .await;
                    }
                    if r.int(5)? != 0 {
                        related.push(out.len());
                    }
                    let txn = match (r.opt_text(3)?, r.opt_text(4)?) {
                        (Some(d), Some(t)) => Some((d, t)),
                        _ => None,
                    };
                    out.push(TimelineEvent {
                        pos: cursor,
                        pdu,
                        txn,
                        relations: None,
                    });
                }
            }
            // Fewer rows than asked for: the range holds no more.
            if rows.len() <= limit {
                break;
            }
        }
        self.finish_timeline(room_id, viewer, upto, out, related, false)
            .await
    }

    /// The timeline oldest first, with the bundled aggregations of the events at
    /// `related` (indices into `out`) as of `upto`.
    async fn finish_timeline(
        &self,
        room_id: &RoomId,
        (user, membership, _): (&UserId, &str, i64),
        upto: i64,
        mut out: Vec<TimelineEvent>,
        related: Vec<usize>,
        limited: bool,
    ) -> Result<(Vec<TimelineEvent>, bool)> {
        if !related.is_empty() {
            let parents: Vec<&Pdu> = related
                .iter()
                .filter_map(|i| out.get(*i))
                .map(|t| &*t.pdu)
                .collect();
            let reader = crate::rooms::relations::Reader {
                user,
                membership: Some(membership),
                upto,
            };
            let mut bundles = self.bundles(room_id, reader, &parents, false).await?;
            for t in &mut out {
                t.relations = bundles.remove(&t.pdu.event_id);
            }
        }
        out.reverse();
        Ok((out, limited))
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
        events.push(t.pdu.client_raw(None, txn, t.relations.as_deref())?);
    }
    let prev_batch = timeline.first().map_or(end, |t| t.pos - 1);
    Ok(TimelineBlock {
        events,
        limited,
        prev_batch: position_token(prev_batch),
    })
}
