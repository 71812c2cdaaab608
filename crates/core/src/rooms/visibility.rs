//! History visibility (spec: client-server API, "History visibility").

use ruma::{events::StateEventType, UserId};

use super::{write::membership_of, Pdu};
use crate::{Homeserver, Result};

impl Homeserver {
    /// Whether `user` may see `pdu`, judged on the state before it and the user's current
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
            // shared, and unknown values (spec: treat as shared)
            _ => then == "join" || current == Some("join"),
        })
    }
}
