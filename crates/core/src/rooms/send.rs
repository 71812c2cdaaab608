//! Building, hashing and signing local PDUs (spec: server-server API, "PDUs"; room
//! versions' "Event format" and "Event IDs").

use ruma::{
    canonical_json::to_canonical_value,
    events::{StateEventType, TimelineEventType},
    room_version_rules::{EventIdFormatVersion, EventsReferenceFormatVersion},
    signatures, CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId, RoomId,
    RoomVersionId, UserId,
};
use serde_json::Value as Json;

use super::{
    write::{RoomWrite, Txn},
    Pdu,
};
use crate::{
    ports::{DbError, Value},
    storage::query_opt,
    Error, Homeserver, Result,
};

/// Spec ("Size limits"): a PDU, signatures included, is at most 64 KiB in canonical JSON;
/// ruma's hashing and format checks allow 65,535 bytes, so do we.
pub const MAX_PDU_BYTES: usize = 65_535;
/// Most `prev_events` a local event references.
const MAX_PREV_EVENTS: usize = 20;

/// A local event to build.
#[derive(Clone, Debug)]
pub struct NewEvent {
    pub kind: TimelineEventType,
    pub content: Json,
    pub state_key: Option<String>,
    pub redacts: Option<OwnedEventId>,
    /// `origin_server_ts`, when not now (see `create_room`).
    pub origin_server_ts: Option<i64>,
}

impl NewEvent {
    pub fn state(kind: StateEventType, key: impl Into<String>, content: Json) -> Self {
        Self {
            kind: kind.to_string().into(),
            content,
            state_key: Some(key.into()),
            redacts: None,
            origin_server_ts: None,
        }
    }
    pub fn message(kind: TimelineEventType, content: Json) -> Self {
        Self {
            kind,
            content,
            state_key: None,
            redacts: None,
            origin_server_ts: None,
        }
    }
}

fn too_large() -> Error {
    Error::Matrix(
        ruma::api::error::ErrorKind::TooLarge,
        "Event too large".into(),
    )
}

/// Times a local event is planned again after being planned behind a write that failed
/// (and times it waits for a queued copy of its transaction).
const MAX_REPLANS: usize = 4;

/// What one attempt at sending came to.
enum Sent {
    Event(OwnedEventId),
    /// The same client transaction is queued, to be published at this position.
    Queued(i64),
}

impl Homeserver {
    /// Sends a local event through the write path; idempotent per client transaction.
    pub async fn send_event(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        event: NewEvent,
        txn: Option<Txn<'_>>,
    ) -> Result<OwnedEventId> {
        crate::input::event_type(&event.kind.to_string())?;
        if let Some(key) = &event.state_key {
            crate::input::state_key(key)?;
        }
        if let Some(t) = &txn {
            crate::input::txn_id(t.txn_id)?;
        }
        let (mut replans, mut waits) = (0, 0);
        loop {
            let txn = txn.as_ref().map(|t| Txn {
                user_id: t.user_id,
                device_id: t.device_id,
                scope: t.scope.clone(),
                txn_id: t.txn_id,
            });
            match self.send_event_once(room_id, sender, &event, txn).await {
                // Planned behind a write that failed (`tip.rs`): nothing of it was stored,
                // so it is planned again on what the room holds now.
                Err(Error::Db(DbError::Conflict)) if replans < MAX_REPLANS => replans += 1,
                Err(Error::Db(DbError::Conflict)) => {
                    return Err(Error::internal("the room kept changing under the event"))
                }
                // The same transaction is queued: its outcome answers this one too.
                Ok(Sent::Queued(last)) if waits < MAX_REPLANS => {
                    waits += 1;
                    self.published(last).await;
                }
                Ok(Sent::Queued(_)) => {
                    return Err(Error::internal("the transaction did not settle"))
                }
                Ok(Sent::Event(id)) => return Ok(id),
                Err(e) => return Err(e),
            }
        }
    }

    /// What a suspended user may still send (spec: "Account suspension"): leaving a room
    /// or rejecting an invite, and redacting their own events.
    async fn suspended_may_send(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        event: &NewEvent,
    ) -> Result<()> {
        let allowed = match &event.kind {
            TimelineEventType::RoomMember => {
                event.state_key.as_deref() == Some(sender.as_str())
                    && event.content["membership"] == "leave"
            }
            TimelineEventType::RoomRedaction => {
                let target = event.redacts.clone().or_else(|| {
                    event.content["redacts"]
                        .as_str()
                        .and_then(|r| OwnedEventId::try_from(r).ok())
                });
                match target {
                    Some(t) => self.get_pdu(&t).await?.is_some_and(|p| {
                        p.sender == sender && p.room_id.as_deref() == Some(room_id)
                    }),
                    None => false,
                }
            }
            _ => false,
        };
        if allowed {
            Ok(())
        } else {
            Err(crate::accounts::moderation::suspended())
        }
    }

    async fn send_event_once(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        event: &NewEvent,
        txn: Option<Txn<'_>>,
    ) -> Result<Sent> {
        let lock = self.lock_room(room_id).await;
        if let Some(t) = &txn {
            let key = [t.user_id, t.device_id, t.scope.as_str(), t.txn_id];
            if let Some(last) = lock.gate.queued_txn(&key) {
                return Ok(Sent::Queued(last));
            }
            if let Some(row) = query_opt(
                self.db.as_ref(),
                "SELECT event_id FROM event_txns WHERE user_id = $1 AND device_id = $2 AND scope = $3 AND txn_id = $4",
                vec![t.user_id.into(), t.device_id.into(), t.scope.as_str().into(), t.txn_id.into()],
            )
            .await?
            {
                return OwnedEventId::try_from(row.text(0)?)
                    .map(Sent::Event)
                    .map_err(Error::internal);
            }
        }
        // After the transaction check: a retried request whose event was sent before the
        // suspension gets its event; a retried annotation is no duplicate.
        if self.is_suspended(sender) {
            self.suspended_may_send(room_id, sender, event).await?;
        }
        self.check_new_relation(room_id, sender, &event.kind.to_string(), &event.content)
            .await?;
        let version = self.room_version(room_id).await?;
        let mut w = self.begin_write(room_id, &version, lock).await?;
        if let Some(key) = &event.state_key {
            // Spec ("Sending state events"): state identical to the current one is not
            // sent again; the existing event answers.
            let k = (StateEventType::from(event.kind.to_string()), key.clone());
            if let Some(id) = w.head().state.get(&k) {
                if let Some(current) = w.pdu(self, id).await? {
                    let same = current.sender == sender
                        && serde_json::from_str::<Json>(current.content.get()).ok()
                            == Some(event.content.clone());
                    if same {
                        return Ok(Sent::Event(id.clone()));
                    }
                }
            }
            if event.kind == TimelineEventType::RoomCanonicalAlias {
                self.check_canonical_alias(room_id, &event.content).await?;
            }
        }
        let pdu = self
            .build_pdu(Some(&w), &version, sender, event.clone())
            .await?;
        let id = pdu.event_id.clone();
        self.plan_pdu(&mut w, pdu, txn).await?;
        self.commit_write(w).await?;
        Ok(Sent::Event(id))
    }

    /// Builds and signs a PDU on top of the forward extremities `w` has planned so far.
    /// `w` is `None` only for a v12 `m.room.create`, whose room ID is derived from the event.
    pub(crate) async fn build_pdu(
        &self,
        w: Option<&RoomWrite>,
        version: &RoomVersionId,
        sender: &UserId,
        event: NewEvent,
    ) -> Result<Pdu> {
        let rules = version
            .rules()
            .ok_or_else(|| Error::Internal(format!("unknown room version {version}")))?;
        let content = match to_canonical_value(&event.content) {
            Ok(v @ CanonicalJsonValue::Object(_)) => v,
            _ => {
                return Err(Error::bad_json(
                    "content must be a JSON object with integers in range",
                ))
            }
        };
        let room_id = w.map(|w| w.room_id());
        let (prev, auth, depth) = match w {
            Some(w) => {
                let head = w.head();
                let mut prev = head.extremities.clone();
                prev.truncate(MAX_PREV_EVENTS);
                let mut depth = 0u64;
                let mut prev_pdus = Vec::new();
                for id in &prev {
                    let p = w
                        .pdu(self, id)
                        .await?
                        .ok_or_else(|| Error::internal("missing extremity"))?;
                    depth = depth.max(p.depth);
                    prev_pdus.push(p);
                }
                let state = &head.state;
                let content_raw = serde_json::value::to_raw_value(&content)?;
                let auth_types = ruma::state_res::auth_types_for_event(
                    &event.kind,
                    sender,
                    event.state_key.as_deref(),
                    &content_raw,
                    &rules.authorization,
                )
                .map_err(Error::bad_json)?;
                let mut auth = Vec::new();
                for key in auth_types {
                    if let Some(id) = state.get(&key) {
                        if !auth.contains(id) {
                            auth.push(id.clone());
                        }
                    }
                }
                (prev, auth, depth.saturating_add(1).min(i64::MAX as u64))
            }
            None => (vec![], vec![], 1),
        };

        let mut obj = CanonicalJsonObject::new();
        obj.insert("type".into(), event.kind.to_string().into());
        obj.insert("sender".into(), sender.as_str().into());
        obj.insert(
            "origin_server_ts".into(),
            CanonicalJsonValue::Integer(
                ruma::Int::try_from(event.origin_server_ts.unwrap_or_else(|| self.now()))
                    .unwrap_or_default(),
            ),
        );
        obj.insert("content".into(), content);
        obj.insert(
            "depth".into(),
            CanonicalJsonValue::Integer(ruma::Int::try_from(depth).unwrap_or(ruma::Int::MAX)),
        );
        if let Some(room_id) = room_id {
            obj.insert("room_id".into(), room_id.as_str().into());
        }
        if let Some(key) = &event.state_key {
            obj.insert("state_key".into(), key.as_str().into());
        }
        if let Some(r) = &event.redacts {
            if !rules.redaction.content_field_redacts {
                obj.insert("redacts".into(), r.as_str().into());
            }
        }
        if version == &RoomVersionId::V1 || version == &RoomVersionId::V2 {
            obj.insert("origin".into(), self.server_name().as_str().into());
        }
        let refs = |ids: &[OwnedEventId]| -> Result<CanonicalJsonValue> {
            Ok(CanonicalJsonValue::Array(
                ids.iter().map(|id| id.as_str().into()).collect(),
            ))
        };
        let (prev_v, auth_v) = match rules.events_reference_format {
            EventsReferenceFormatVersion::V1 => {
                let w = w.ok_or_else(|| Error::internal("v1 references without a room"))?;
                (self.v1_refs(w, &prev).await?, self.v1_refs(w, &auth).await?)
            }
            _ => (refs(&prev)?, refs(&auth)?),
        };
        obj.insert("prev_events".into(), prev_v);
        obj.insert("auth_events".into(), auth_v);
        if rules.event_id_format == EventIdFormatVersion::V1 {
            let id = format!(
                "${}:{}",
                crate::accounts::tokens::random_string(18),
                self.server_name()
            );
            obj.insert("event_id".into(), id.into());
        }

        signatures::hash_and_sign_event(
            self.server_name().as_str(),
            &self.signing_key,
            &mut obj,
            &rules.redaction,
        )
        .map_err(|e| match e {
            signatures::JsonError::PduTooLarge => too_large(),
            other => Error::internal(other),
        })?;
        if serde_json::to_string(&obj)?.len() > MAX_PDU_BYTES {
            return Err(too_large());
        }
        let event_id = match obj.get("event_id") {
            Some(CanonicalJsonValue::String(s)) => EventId::parse(s).map_err(Error::internal)?,
            _ => {
                let hash = signatures::reference_hash(&obj, &rules).map_err(|_| too_large())?;
                EventId::parse(format!("${hash}")).map_err(Error::internal)?
            }
        };
        Pdu::from_json(event_id, obj)
    }

    /// Room v1/v2 event references: `[event_id, {"sha256": hash}]`.
    async fn v1_refs(&self, w: &RoomWrite, ids: &[OwnedEventId]) -> Result<CanonicalJsonValue> {
        let mut out = Vec::new();
        for id in ids {
            let p = w
                .pdu(self, id)
                .await?
                .ok_or_else(|| Error::internal("missing referenced event"))?;
            let hashes = p
                .json
                .get("hashes")
                .cloned()
                .unwrap_or(CanonicalJsonValue::Object(Default::default()));
            out.push(CanonicalJsonValue::Array(vec![id.as_str().into(), hashes]));
        }
        Ok(CanonicalJsonValue::Array(out))
    }

    /// The user's membership in a room (`join`, `invite`, `leave`, `ban`, `knock`), if any.
    pub async fn membership(&self, room_id: &RoomId, user: &UserId) -> Result<Option<String>> {
        let row = query_opt(
            self.db.as_ref(),
            "SELECT membership FROM memberships WHERE room_id = $1 AND user_id = $2",
            vec![Value::from(room_id.as_str()), Value::from(user.as_str())],
        )
        .await?;
        row.map(|r| r.text(0)).transpose().map_err(Into::into)
    }
}
