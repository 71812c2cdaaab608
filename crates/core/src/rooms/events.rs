//! Stored events by ID: the parsed event, its place in the stream and state, and the
//! version of its room. All immutable once stored, so all cached, except that a redaction
//! rewrites its target: see [`Homeserver::forget_redacted`].

use std::sync::Arc;

use ruma::{RoomId, RoomVersionId};

use super::{write::EventPlace, Pdu};
use crate::{storage::query_opt, Error, Homeserver, Result};

impl Homeserver {
    /// An event by ID, shared with the cache.
    pub async fn get_pdu(&self, id: &ruma::EventId) -> Result<Option<Arc<Pdu>>> {
        if let Some(p) = self.pdu_cache.get(&id.to_owned()) {
            return Ok(Some(p));
        }
        let epoch = self.redaction_epoch();
        let row = query_opt(
            self.db.as_ref(),
            "SELECT json FROM events WHERE event_id = $1",
            vec![id.as_str().into()],
        )
        .await?;
        let pdu = row
            .map(|r| Pdu::from_stored(id.as_str(), &r.text(0)?).map(Arc::new))
            .transpose()?;
        if let Some(p) = &pdu {
            // Not when a redaction committed meanwhile: this may be the unredacted form.
            let redactions = self.redactions.lock().unwrap_or_else(|e| e.into_inner());
            if *redactions == epoch {
                self.pdu_cache.put(id.to_owned(), p.clone());
            }
        }
        Ok(pdu)
    }

    /// Sets `unsigned.transaction_id` on the events `user` sent from `device` (spec:
    /// "Transaction identifiers": clients match their local echo with it).
    pub async fn add_transaction_ids(
        &self,
        user: &ruma::UserId,
        device: &ruma::DeviceId,
        events: &mut [serde_json::Value],
    ) -> Result<()> {
        for event in events.iter_mut() {
            if event["sender"].as_str() != Some(user.as_str()) {
                continue;
            }
            let Some(id) = event["event_id"].as_str() else {
                continue;
            };
            let row = query_opt(
                self.db.as_ref(),
                "SELECT txn_id FROM event_txns WHERE event_id = $1 AND user_id = $2 AND device_id = $3",
                vec![id.into(), user.as_str().into(), device.as_str().into()],
            )
            .await?;
            if let Some(row) = row {
                if !event["unsigned"].is_object() {
                    event["unsigned"] = serde_json::json!({});
                }
                event["unsigned"]["transaction_id"] = row.text(0)?.into();
            }
        }
        Ok(())
    }

    fn redaction_epoch(&self) -> u64 {
        *self.redactions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Called once a redaction of `target` committed. Under the same lock as the cache
    /// fill above, so a read of the unredacted row never lands in the cache afterwards.
    pub(crate) fn forget_redacted(&self, target: &ruma::EventId) {
        let mut redactions = self.redactions.lock().unwrap_or_else(|e| e.into_inner());
        *redactions += 1;
        self.pdu_cache.remove(&target.to_owned());
    }

    pub async fn event_place(&self, id: &ruma::EventId) -> Result<Option<EventPlace>> {
        // An event's place never changes once stored.
        if let Some(place) = self.place_cache.get(&id.to_owned()) {
            return Ok(Some(place));
        }
        let row = query_opt(
            self.db.as_ref(),
            "SELECT stream_pos, state_before, state_after FROM events WHERE event_id = $1",
            vec![id.as_str().into()],
        )
        .await?;
        let place = row
            .map(|r| {
                Ok::<_, Error>(EventPlace {
                    pos: r.int(0)?,
                    state_before: r.int(1)?,
                    state_after: r.int(2)?,
                })
            })
            .transpose()?;
        if let Some(p) = place {
            self.place_cache.put(id.to_owned(), p);
        }
        Ok(place)
    }

    pub async fn room_version(&self, room_id: &RoomId) -> Result<RoomVersionId> {
        // A room's version never changes.
        if let Some(v) = self.version_cache.get(&room_id.to_owned()) {
            return Ok(v);
        }
        let row = query_opt(
            self.db.as_ref(),
            "SELECT room_version FROM rooms WHERE room_id = $1",
            vec![room_id.as_str().into()],
        )
        .await?
        .ok_or_else(|| Error::not_found("Unknown room"))?;
        let version = RoomVersionId::try_from(row.text(0)?).map_err(Error::internal)?;
        self.version_cache.put(room_id.to_owned(), version.clone());
        Ok(version)
    }
}
