//! Stored events by ID: the parsed event, its place in the stream and state, and the
//! version of its room. All immutable once stored, so all cached, except that a redaction
//! rewrites its target: see [`Homeserver::forget_redacted`].

use std::sync::Arc;

use ruma::{RoomId, RoomVersionId};

use super::{write::EventPlace, Pdu};
use crate::{storage::query_opt, Error, Homeserver, Result};

/// Most IDs in one `IN (…)` query, and the sizes queries are padded to.
const MAX_IDS_PER_QUERY: usize = 256;
const ID_SIZE_CLASSES: [usize; 4] = [8, 32, 128, MAX_IDS_PER_QUERY];

/// `IN (…)` for at most [`MAX_IDS_PER_QUERY`] IDs, and its parameters, numbered from
/// `$first` on (the query's other parameters come before): padded to a size class
/// (repeating the last ID), so few distinct statements reach the statement cache.
pub(crate) fn in_ids(ids: &[&str], first: usize) -> (String, Vec<crate::ports::Value>) {
    let size = ID_SIZE_CLASSES
        .iter()
        .copied()
        .find(|n| *n >= ids.len())
        .unwrap_or(MAX_IDS_PER_QUERY);
    let mut params: Vec<crate::ports::Value> = ids.iter().map(|i| (*i).into()).collect();
    if let Some(last) = ids.last() {
        while params.len() < size {
            params.push((*last).into());
        }
    }
    let placeholders: Vec<String> = (first..first + params.len())
        .map(|n| format!("${n}"))
        .collect();
    (format!("IN ({})", placeholders.join(", ")), params)
}

/// Most IDs [`in_ids`] takes.
pub(crate) const MAX_IDS: usize = MAX_IDS_PER_QUERY;

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

    /// Events by ID, in the order asked (`None` for unknown ones): those not cached are
    /// read in a few queries rather than one each (a full sync's state is hundreds).
    pub async fn get_pdus(&self, ids: &[&ruma::EventId]) -> Result<Vec<Option<Arc<Pdu>>>> {
        let mut out: Vec<Option<Arc<Pdu>>> = ids
            .iter()
            .map(|id| self.pdu_cache.get(&(*id).to_owned()))
            .collect();
        let missing: Vec<usize> = (0..ids.len()).filter(|i| out[*i].is_none()).collect();
        if missing.len() <= 1 {
            for i in missing {
                out[i] = self.get_pdu(ids[i]).await?;
            }
            return Ok(out);
        }
        let epoch = self.redaction_epoch();
        let mut found: std::collections::HashMap<String, Arc<Pdu>> = Default::default();
        for chunk in missing.chunks(MAX_IDS_PER_QUERY) {
            let chunk: Vec<&str> = chunk.iter().map(|i| ids[*i].as_str()).collect();
            let (list, params) = in_ids(&chunk, 1);
            let sql = format!("SELECT event_id, json FROM events WHERE event_id {list}");
            for r in self.db.query(&sql, params).await? {
                let id = r.text(0)?;
                let pdu = Arc::new(Pdu::from_stored(&id, &r.text(1)?)?);
                found.insert(id, pdu);
            }
        }
        let redactions = self.redactions.lock().unwrap_or_else(|e| e.into_inner());
        for i in missing {
            if let Some(p) = found.get(ids[i].as_str()) {
                // Not when a redaction committed meanwhile: see `get_pdu`.
                if *redactions == epoch {
                    self.pdu_cache.put(ids[i].to_owned(), p.clone());
                }
                out[i] = Some(p.clone());
            }
        }
        Ok(out)
    }

    /// State events in the client format without `room_id`, in the order asked, unknown
    /// ones left out. Every full sync sends its rooms' whole state, so state events keep
    /// this form in a cache of their own, which message traffic does not churn.
    pub(crate) async fn state_client_json(
        &self,
        ids: &[&ruma::EventId],
    ) -> Result<Vec<Box<serde_json::value::RawValue>>> {
        let mut out: Vec<Option<Box<serde_json::value::RawValue>>> = ids
            .iter()
            .map(|id| {
                self.state_json
                    .get(&(*id).to_owned())
                    .map(|j| (*j).to_owned())
            })
            .collect();
        let missing: Vec<&ruma::EventId> = ids
            .iter()
            .zip(&out)
            .filter(|(_, j)| j.is_none())
            .map(|(id, _)| *id)
            .collect();
        if !missing.is_empty() {
            let epoch = self.redaction_epoch();
            let mut found = self.get_pdus(&missing).await?.into_iter();
            for slot in out.iter_mut().filter(|j| j.is_none()) {
                if let Some(Some(pdu)) = found.next() {
                    let json = pdu.client_raw(None, None, None)?;
                    self.remember_state_json(&pdu.event_id, &json, epoch);
                    *slot = Some(json);
                }
            }
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// Keeps a state event's client JSON unless a redaction committed since `epoch`.
    pub(crate) fn remember_state_json(
        &self,
        id: &ruma::EventId,
        json: &serde_json::value::RawValue,
        epoch: u64,
    ) {
        let redactions = self.redactions.lock().unwrap_or_else(|e| e.into_inner());
        if *redactions == epoch {
            self.state_json
                .put(id.to_owned(), Arc::from(json.to_owned()));
        }
    }

    /// Sets `unsigned.transaction_id` on the events `user` sent from `device` (spec:
    /// "Transaction identifiers": clients match their local echo with it). Read from the
    /// events' own rows, a few queries for any page (by `event_txns`, a heavy sender's
    /// lookup walked every transaction of their device).
    pub async fn add_transaction_ids(
        &self,
        user: &ruma::UserId,
        device: &ruma::DeviceId,
        events: &mut [serde_json::Value],
    ) -> Result<()> {
        let own: Vec<String> = events
            .iter()
            .filter(|e| e["sender"].as_str() == Some(user.as_str()))
            .filter_map(|e| e["event_id"].as_str().map(str::to_owned))
            .collect();
        let ids: Vec<&str> = own.iter().map(String::as_str).collect();
        let mut txns: std::collections::HashMap<String, String> = Default::default();
        for chunk in ids.chunks(MAX_IDS_PER_QUERY) {
            let (list, params) = in_ids(chunk, 3);
            let sql = format!(
                "SELECT event_id, txn_id FROM events WHERE sender = $1 AND txn_device = $2 AND event_id {list}"
            );
            let mut all = vec![user.as_str().into(), device.as_str().into()];
            all.extend(params);
            for r in self.db.query(&sql, all).await? {
                if let Some(txn) = r.opt_text(1)? {
                    txns.insert(r.text(0)?, txn);
                }
            }
        }
        if txns.is_empty() {
            return Ok(());
        }
        for event in events.iter_mut() {
            let Some(txn) = event["event_id"].as_str().and_then(|id| txns.get(id)) else {
                continue;
            };
            let txn = txn.clone();
            if !event["unsigned"].is_object() {
                event["unsigned"] = serde_json::json!({});
            }
            event["unsigned"]["transaction_id"] = txn.into();
        }
        Ok(())
    }

    pub(crate) fn redaction_epoch(&self) -> u64 {
        *self.redactions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Called once a redaction of `target` committed. Under the same lock as the cache
    /// fill above, so a read of the unredacted row never lands in the cache afterwards.
    pub(crate) fn forget_redacted(&self, target: &ruma::EventId) {
        let mut redactions = self.redactions.lock().unwrap_or_else(|e| e.into_inner());
        *redactions += 1;
        self.pdu_cache.remove(&target.to_owned());
        self.state_json.remove(&target.to_owned());
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
