//! History visibility (spec: client-server API, "History visibility").

use ruma::{events::StateEventType, UserId};

use super::{write::membership_of, Pdu};
use crate::{ports::Value, Error, Homeserver, Result};

impl Homeserver {
    /// Whether `user` may see `pdu` (spec: "History visibility", the algorithm in
    /// "Visibility of events"), judged on the state before it and the user's current
    /// membership (`current`).
    pub async fn can_see(&self, user: &UserId, pdu: &Pdu, current: Option<&str>) -> Result<bool> {
        // A user always sees their own membership events.
        if pdu.kind.to_string() == "m.room.member"
            && pdu.state_key.as_deref() == Some(user.as_str())
        {
            return Ok(true);
        }
        let Some(place) = self.event_place(&pdu.event_id).await? else {
            return Ok(false);
        };
        let (state, _) = self.state_group(place.state_before).await?;
        let visibility = match state.get(&(StateEventType::RoomHistoryVisibility, String::new())) {
            Some(id) => match self.get_pdu(id).await? {
                Some(p) => serde_json::from_str::<serde_json::Value>(p.content.get())
                    .ok()
                    .and_then(|c| {
                        c.get("history_visibility")
                            .and_then(|v| v.as_str())
                            .map(str::to_owned)
                    })
                    .unwrap_or_else(|| "shared".into()),
                None => "shared".into(),
            },
            None => "shared".into(),
        };
        if visibility == "world_readable" {
            return Ok(true);
        }
        let then = match state.get(&(StateEventType::RoomMember, user.to_string())) {
            Some(id) => self
                .get_pdu(id)
                .await?
                .as_ref()
                .map(|p| membership_of(p))
                .unwrap_or_default(),
            None => String::new(),
        };
        Ok(match visibility.as_str() {
            "joined" => then == "join",
            "invited" => then == "join" || then == "invite",
            // shared, and unknown values (spec: treat as shared): also when the user joined
            // at any point after the event.
            _ => {
                then == "join"
                    || current == Some("join")
                    || self.joined_after(user, pdu, place.pos).await?
            }
        })
    }

    /// Whether `user` joined the event's room at a stream position after `pos`.
    async fn joined_after(&self, user: &UserId, pdu: &Pdu, pos: i64) -> Result<bool> {
        let room_id = match &pdu.room_id {
            Some(r) => r.clone(),
            // A v12 create event: its room's ID is its own reference hash.
            None => match ruma::RoomId::parse(format!(
                "!{}",
                pdu.event_id.as_str().trim_start_matches('$')
            )) {
                Ok(r) => r,
                Err(_) => return Ok(false),
            },
        };
        let rows = self
            .db
            .query(
                "SELECT event_id FROM events WHERE room_id = $1 AND type = 'm.room.member'
                 AND state_key = $2 AND stream_pos > $3 ORDER BY stream_pos",
                vec![
                    room_id.as_str().into(),
                    user.as_str().into(),
                    Value::Int(pos),
                ],
            )
            .await?;
        for r in rows {
            let id = ruma::EventId::parse(r.text(0)?).map_err(Error::internal)?;
            if let Some(member) = self.get_pdu(&id).await? {
                if membership_of(&member) == "join" {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }
}
