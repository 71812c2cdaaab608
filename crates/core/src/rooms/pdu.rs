//! The PDU as stored and as handed to ruma's auth and state resolution.

use ruma::{
    events::TimelineEventType, CanonicalJsonObject, CanonicalJsonValue, EventId,
    MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UInt, UserId,
};
use serde_json::value::RawValue;

use crate::{Error, Result};

/// An event in a room, with the fields auth and state resolution read, and its full JSON.
#[derive(Clone, Debug)]
pub struct Pdu {
    pub event_id: OwnedEventId,
    /// Absent from the JSON of a v12 `m.room.create` event.
    pub room_id: Option<OwnedRoomId>,
    pub sender: OwnedUserId,
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
    pub kind: TimelineEventType,
    pub content: Box<RawValue>,
    pub state_key: Option<String>,
    pub prev_events: Vec<OwnedEventId>,
    pub auth_events: Vec<OwnedEventId>,
    pub redacts: Option<OwnedEventId>,
    pub depth: u64,
    /// The signed event as it travels between servers (no `event_id` from v3 on).
    pub json: CanonicalJsonObject,
}

fn field<'a>(obj: &'a CanonicalJsonObject, key: &str) -> Result<&'a CanonicalJsonValue> {
    obj.get(key)
        .ok_or_else(|| Error::bad_json(format!("event has no `{key}`")))
}

fn string(obj: &CanonicalJsonObject, key: &str) -> Result<String> {
    match field(obj, key)? {
        CanonicalJsonValue::String(s) => Ok(s.clone()),
        _ => Err(Error::bad_json(format!("`{key}` is not a string"))),
    }
}

fn id_list(obj: &CanonicalJsonObject, key: &str) -> Result<Vec<OwnedEventId>> {
    let CanonicalJsonValue::Array(items) = field(obj, key)? else {
        return Err(Error::bad_json(format!("`{key}` is not an array")));
    };
    items
        .iter()
        .map(|v| match v {
            CanonicalJsonValue::String(s) => {
                EventId::parse(s).map_err(|_| Error::bad_json(format!("bad event ID in `{key}`")))
            }
            // Room v1/v2 reference events as [id, hashes].
            CanonicalJsonValue::Array(pair) => match pair.first() {
                Some(CanonicalJsonValue::String(s)) => EventId::parse(s)
                    .map_err(|_| Error::bad_json(format!("bad event ID in `{key}`"))),
                _ => Err(Error::bad_json(format!("bad entry in `{key}`"))),
            },
            _ => Err(Error::bad_json(format!("bad entry in `{key}`"))),
        })
        .collect()
}

impl Pdu {
    /// Reads a PDU from its JSON; `event_id` is computed by the caller for v3+ rooms.
    pub fn from_json(event_id: OwnedEventId, json: CanonicalJsonObject) -> Result<Self> {
        let room_id = match json.get("room_id") {
            Some(CanonicalJsonValue::String(s)) => {
                Some(RoomId::parse(s).map_err(|_| Error::bad_json("bad room_id"))?)
            }
            _ => None,
        };
        let sender =
            UserId::parse(string(&json, "sender")?).map_err(|_| Error::bad_json("bad sender"))?;
        let ts = match field(&json, "origin_server_ts")? {
            CanonicalJsonValue::Integer(i) => UInt::try_from(i64::from(*i))
                .map_err(|_| Error::bad_json("bad origin_server_ts"))?,
            _ => return Err(Error::bad_json("bad origin_server_ts")),
        };
        let depth = match field(&json, "depth")? {
            CanonicalJsonValue::Integer(i) => {
                u64::try_from(i64::from(*i)).map_err(|_| Error::bad_json("bad depth"))?
            }
            _ => return Err(Error::bad_json("bad depth")),
        };
        let content = match field(&json, "content")? {
            v @ CanonicalJsonValue::Object(_) => serde_json::value::to_raw_value(v)?,
            _ => return Err(Error::bad_json("content is not an object")),
        };
        let state_key = match json.get("state_key") {
            Some(CanonicalJsonValue::String(s)) => Some(s.clone()),
            None => None,
            _ => return Err(Error::bad_json("state_key is not a string")),
        };
        // v11+ carry `redacts` in content; earlier versions at the top level.
        let redacts = match json.get("redacts").or_else(|| match json.get("content") {
            Some(CanonicalJsonValue::Object(c)) => c.get("redacts"),
            _ => None,
        }) {
            Some(CanonicalJsonValue::String(s)) => EventId::parse(s).ok(),
            _ => None,
        };
        Ok(Self {
            event_id,
            room_id,
            sender,
            origin_server_ts: MilliSecondsSinceUnixEpoch(ts),
            kind: string(&json, "type")?.into(),
            content,
            state_key,
            prev_events: id_list(&json, "prev_events")?,
            auth_events: id_list(&json, "auth_events")?,
            redacts,
            depth,
            json,
        })
    }

    /// Roughly the heap this event holds, for bounding caches: the content twice (raw and
    /// in the JSON map) plus the parsed map's IDs, hashes and signatures.
    pub fn estimated_size(&self) -> u64 {
        const BASE: u64 = 1536;
        const PER_REF: u64 = 160;
        let refs = (self.prev_events.len() + self.auth_events.len()) as u64;
        BASE + 2 * self.content.get().len() as u64 + PER_REF * refs
    }

    /// Parses a stored event (`json` column).
    pub fn from_stored(event_id: &str, json: &str) -> Result<Self> {
        let obj: CanonicalJsonObject = serde_json::from_str(json)?;
        Self::from_json(EventId::parse(event_id).map_err(Error::internal)?, obj)
    }

    pub fn is_state(&self) -> bool {
        self.state_key.is_some()
    }

    /// The client-format event (spec: client-server API, "Room Event Format").
    pub fn to_client_json(&self, room_id: &RoomId) -> serde_json::Value {
        let mut v = self.to_sync_json();
        v["room_id"] = room_id.as_str().into();
        v
    }

    /// The client format without `room_id`, as `/sync` sends it ("ClientEventWithoutRoomID").
    pub fn to_sync_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "event_id": self.event_id,
            "sender": self.sender,
            "origin_server_ts": self.origin_server_ts,
            "type": self.kind.to_string(),
            "content": serde_json::from_str::<serde_json::Value>(self.content.get()).unwrap_or_default(),
        });
        if let Some(sk) = &self.state_key {
            v["state_key"] = sk.clone().into();
        }
        if let Some(r) = &self.redacts {
            v["redacts"] = r.to_string().into();
        }
        if let Some(CanonicalJsonValue::Object(u)) = self.json.get("unsigned") {
            // Aggregations are the server's own, added when served (`relations.rs`).
            let mut u = u.clone();
            u.remove("m.relations");
            v["unsigned"] = serde_json::to_value(u).unwrap_or_default();
        }
        v
    }
}

/// A client-format event, serialized straight from a [`Pdu`] (no intermediate JSON tree:
/// a sync carries thousands of them).
#[derive(serde::Serialize)]
struct ClientEvent<'a> {
    content: &'a RawValue,
    event_id: &'a EventId,
    origin_server_ts: MilliSecondsSinceUnixEpoch,
    #[serde(skip_serializing_if = "Option::is_none")]
    redacts: Option<&'a EventId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    room_id: Option<&'a RoomId>,
    sender: &'a UserId,
    #[serde(skip_serializing_if = "Option::is_none")]
    state_key: Option<&'a str>,
    #[serde(rename = "type")]
    kind: &'a TimelineEventType,
    #[serde(skip_serializing_if = "Unsigned::is_empty")]
    unsigned: Unsigned<'a>,
}

/// `unsigned` as stored, plus the `transaction_id` of the device that sent the event and
/// the bundled aggregations (`m.relations`).
struct Unsigned<'a> {
    stored: Option<&'a CanonicalJsonObject>,
    transaction_id: Option<&'a str>,
    relations: Option<&'a RawValue>,
}

impl Unsigned<'_> {
    fn is_empty(&self) -> bool {
        self.stored.is_none_or(|u| u.is_empty())
            && self.transaction_id.is_none()
            && self.relations.is_none()
    }
}

impl serde::Serialize for Unsigned<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        for (k, v) in self.stored.into_iter().flatten() {
            if k != "transaction_id" && k != "m.relations" {
                map.serialize_entry(k, v)?;
            }
        }
        if let Some(t) = self.transaction_id {
            map.serialize_entry("transaction_id", t)?;
        }
        if let Some(r) = self.relations {
            map.serialize_entry("m.relations", r)?;
        }
        map.end()
    }
}

impl Pdu {
    /// The client format (with `room_id` when given; "ClientEventWithoutRoomID" otherwise)
    /// as JSON text, with `unsigned.transaction_id` and `unsigned.m.relations` when given.
    pub fn client_raw(
        &self,
        room_id: Option<&RoomId>,
        transaction_id: Option<&str>,
        relations: Option<&RawValue>,
    ) -> Result<Box<RawValue>> {
        let stored = match self.json.get("unsigned") {
            Some(CanonicalJsonValue::Object(u)) => Some(u),
            _ => None,
        };
        let event = ClientEvent {
            content: &self.content,
            event_id: &self.event_id,
            origin_server_ts: self.origin_server_ts,
            redacts: self.redacts.as_deref(),
            room_id,
            sender: &self.sender,
            state_key: self.state_key.as_deref(),
            kind: &self.kind,
            unsigned: Unsigned {
                stored,
                transaction_id,
                relations,
            },
        };
        Ok(serde_json::value::to_raw_value(&event)?)
    }
}

impl ruma::state_res::Event for Pdu {
    type Id = OwnedEventId;

    fn event_id(&self) -> &Self::Id {
        &self.event_id
    }
    fn room_id(&self) -> Option<&RoomId> {
        self.room_id.as_deref()
    }
    fn sender(&self) -> &UserId {
        &self.sender
    }
    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.origin_server_ts
    }
    fn event_type(&self) -> &TimelineEventType {
        &self.kind
    }
    fn content(&self) -> &RawValue {
        &self.content
    }
    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }
    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.prev_events.iter())
    }
    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.auth_events.iter())
    }
    fn redacts(&self) -> Option<&Self::Id> {
        self.redacts.as_ref()
    }
    fn rejected(&self) -> bool {
        // Rejected events are never stored, so every event we hand out was accepted.
        false
    }
}

/// A bare PDU for graph tests: only its ID and auth events matter.
#[cfg(test)]
pub(crate) fn test_pdu(id: &EventId, auth_events: Vec<OwnedEventId>) -> Pdu {
    Pdu {
        event_id: id.to_owned(),
        room_id: None,
        sender: ruma::owned_user_id!("@t:example.org"),
        origin_server_ts: MilliSecondsSinceUnixEpoch(UInt::MIN),
        kind: TimelineEventType::RoomMessage,
        content: RawValue::from_string("{}".to_owned()).expect("valid JSON"),
        state_key: None,
        prev_events: Vec::new(),
        auth_events,
        redacts: None,
        depth: 0,
        json: CanonicalJsonObject::new(),
    }
}
