//! Receipts and read markers (spec: "Receipts", "Fully read markers").

use std::collections::BTreeMap;

use ruma::{EventId, RoomId, UserId};
use serde_json::{json, Map, Value as Json};

use crate::{
    homeserver::{Audience, Stream},
    ports::{Statement, Value},
    Error, Homeserver, Result,
};

impl Homeserver {
    /// Stores a receipt (`m.read` or `m.read.private`), or the `m.fully_read` marker.
    pub async fn set_receipt(
        &self,
        room_id: &RoomId,
        user: &UserId,
        kind: &str,
        event_id: &EventId,
        thread_id: Option<&str>,
    ) -> Result<()> {
        // Spec ("Threaded read receipts"): a thread is `main` or its root's event ID.
        if let Some(t) = thread_id {
            if t != "main" && EventId::parse(t).is_err() {
                return Err(Error::invalid_param(
                    "thread_id must be \"main\" or an event ID",
                ));
            }
        }
        if self.membership(room_id, user).await?.as_deref() != Some("join") {
            return Err(Error::forbidden("You are not in this room"));
        }
        // The receipt must point at an event the user can see.
        self.event_for_user(room_id, user, event_id).await?;
        match kind {
            "m.fully_read" => {
                if thread_id.is_some() {
                    return Err(Error::invalid_param("m.fully_read cannot be threaded"));
                }
                self.set_account_data(
                    user,
                    Some(room_id),
                    "m.fully_read",
                    &json!({ "event_id": event_id }),
                )
                .await
            }
            "m.read" | "m.read.private" => {
                let thread = thread_id.unwrap_or("");
                let now = self.now();
                self.commit(&[Stream::Receipts], Audience::Room(room_id), |pos| {
                    vec![Statement::new(
                        "INSERT INTO receipts (room_id, user_id, receipt_type, thread_id, event_id, ts, stream_pos)
                         VALUES ($1, $2, $3, $4, $5, $6, $7)
                         ON CONFLICT (room_id, user_id, receipt_type, thread_id)
                         DO UPDATE SET event_id = excluded.event_id, ts = excluded.ts, stream_pos = excluded.stream_pos",
                        vec![
                            room_id.as_str().into(),
                            user.as_str().into(),
                            kind.into(),
                            thread.into(),
                            event_id.as_str().into(),
                            Value::Int(now),
                            Value::Int(pos),
                        ],
                    )]
                })
                .await?;
                // The badge may have changed: the push task sends it (woken again, as
                // the commit's wake-up may have come before the mark).
                self.push_queue.mark_badge(user.as_str());
                self.wakeups.notify();
                Ok(())
            }
            _ => Err(Error::invalid_param("Unknown receipt type")),
        }
    }

    /// The `m.receipt` ephemeral event for receipts in `(since, upto]` (all when `since` is
    /// `None`); private receipts only for their owner.
    pub async fn receipts_since(
        &self,
        room_id: &RoomId,
        viewer: &UserId,
        since: Option<i64>,
        upto: i64,
    ) -> Result<Option<Json>> {
        if !self.stream_moved(Stream::Receipts, since) {
            return Ok(None);
        }
        let rows = self
            .db
            .query(
                "SELECT user_id, receipt_type, thread_id, event_id, ts FROM receipts
                 WHERE room_id = $1 AND stream_pos > $2 AND stream_pos <= $3",
                vec![
                    room_id.as_str().into(),
                    Value::Int(since.unwrap_or(0)),
                    Value::Int(upto),
                ],
            )
            .await?;
        receipts_event(&rows, viewer)
    }
}

/// The `m.receipt` event of (user, type, thread, event, ts) rows, as `viewer` may see it
/// (others' private receipts left out); `None` when nothing is left.
pub(crate) fn receipts_event(rows: &[crate::ports::Row], viewer: &UserId) -> Result<Option<Json>> {
    let mut content: BTreeMap<String, Map<String, Json>> = BTreeMap::new();
    for r in rows {
        let (user, kind, thread, event, ts) =
            (r.text(0)?, r.text(1)?, r.text(2)?, r.text(3)?, r.int(4)?);
        if kind == "m.read.private" && user != viewer.as_str() {
            continue;
        }
        let mut receipt = json!({ "ts": ts });
        if !thread.is_empty() {
            receipt["thread_id"] = thread.into();
        }
        let by_type = content.entry(event).or_default();
        let users = by_type.entry(kind).or_insert_with(|| json!({}));
        if let Some(users) = users.as_object_mut() {
            users.insert(user, receipt);
        }
    }
    if content.is_empty() {
        return Ok(None);
    }
    Ok(Some(json!({ "type": "m.receipt", "content": content })))
}
