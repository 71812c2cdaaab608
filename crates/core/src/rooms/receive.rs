//! PDUs from other servers (spec: server-server API, "Checks performed on receipt of a
//! PDU"): format, event ID, signatures and hashes, then the same write path as local events.

use std::{collections::BTreeMap, sync::RwLock};

use ruma::{
    canonical_json::redact,
    room_version_rules::EventIdFormatVersion,
    serde::Base64,
    signatures::{self, PublicKeyMap, Verified},
    CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId, RoomId, ServerName,
};

use super::Pdu;
use crate::{Error, Homeserver, Result};

/// Verify keys of other servers, as fetched and checked by the federation layer.
#[derive(Default)]
pub struct KeyRing(RwLock<PublicKeyMap>);

impl Homeserver {
    /// Trusts `key` (unpadded base64) as `server`'s verify key `key_id`.
    pub fn add_server_key(&self, server: &ServerName, key_id: &str, key: &str) -> Result<()> {
        let key = Base64::parse(key).map_err(|_| Error::invalid_param("bad base64 key"))?;
        let mut map = self.keyring.0.write().unwrap_or_else(|e| e.into_inner());
        map.entry(server.to_string())
            .or_default()
            .insert(key_id.to_owned(), key);
        Ok(())
    }

    fn key_map(&self) -> PublicKeyMap {
        let mut map = self
            .keyring
            .0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let own = BTreeMap::from([(
            format!("ed25519:{}", self.signing_key.version()),
            Base64::new(self.signing_key.public_key().to_vec()),
        )]);
        map.insert(self.server_name().to_string(), own);
        map
    }

    /// Checks a PDU received from another server and appends it to the room.
    pub async fn receive_pdu(
        &self,
        room_id: &RoomId,
        mut json: CanonicalJsonObject,
    ) -> Result<OwnedEventId> {
        let version = self.room_version(room_id).await?;
        let rules = version
            .rules()
            .ok_or_else(|| Error::internal("room version without rules"))?;
        if json.get("room_id") != Some(&CanonicalJsonValue::String(room_id.to_string())) {
            return Err(Error::bad_json("event is for another room"));
        }
        let event_id = match rules.event_id_format {
            EventIdFormatVersion::V1 => match json.get("event_id") {
                Some(CanonicalJsonValue::String(s)) => {
                    EventId::parse(s).map_err(|_| Error::bad_json("bad event_id"))?
                }
                _ => return Err(Error::bad_json("missing event_id")),
            },
            _ => {
                let hash = signatures::reference_hash(&json, &rules)
                    .map_err(|e| Error::bad_json(e.to_string()))?;
                EventId::parse(format!("${hash}")).map_err(Error::internal)?
            }
        };
        match signatures::verify_event(&self.key_map(), &json, &rules) {
            Ok(Verified::All) => {}
            // Spec: a PDU whose content hash does not match is redacted, then processed.
            Ok(Verified::Signatures) => {
                json = redact(json, &rules.redaction, None)
                    .map_err(|e| Error::bad_json(e.to_string()))?;
            }
            Err(e) => return Err(Error::forbidden(format!("signature check failed: {e}"))),
        }
        let pdu = Pdu::from_json(event_id.clone(), json)?;
        let mut replans = 0;
        loop {
            let lock = self.lock_room(room_id).await;
            match self
                .append_pdu(room_id, &version, pdu.clone(), None, lock)
                .await
            {
                // Planned behind a write that failed (`tip.rs`): planned again.
                Err(Error::Db(crate::ports::DbError::Conflict)) if replans < 4 => replans += 1,
                Err(e) => return Err(e),
                Ok(_) => return Ok(event_id),
            }
        }
    }
}
