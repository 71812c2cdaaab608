//! Power levels as ruma computes them (creators included from room v12 on).

use ruma::{
    events::{
        room::power_levels::{RoomPowerLevels, RoomPowerLevelsEventContent, RoomPowerLevelsSource},
        StateEventType,
    },
    room_version_rules::RoomVersionRules,
    state_res::events::RoomCreateEvent,
};

use super::state::StateIds;
use crate::{Error, Homeserver, Result};

impl Homeserver {
    /// The power levels in `state`.
    pub async fn power_levels(
        &self,
        state: &StateIds,
        rules: &RoomVersionRules,
    ) -> Result<RoomPowerLevels> {
        let create_id = state
            .get(&(StateEventType::RoomCreate, String::new()))
            .ok_or_else(|| Error::internal("room without create event"))?;
        let create = self
            .get_pdu(create_id)
            .await?
            .ok_or_else(|| Error::internal("create event missing"))?;
        let creators = RoomCreateEvent::new(create)
            .creators(&rules.authorization)
            .map_err(Error::internal)?;
        let content = match state.get(&(StateEventType::RoomPowerLevels, String::new())) {
            Some(id) => match self.get_pdu(id).await? {
                Some(p) => {
                    serde_json::from_str::<RoomPowerLevelsEventContent>(p.content.get()).ok()
                }
                None => None,
            },
            None => None,
        };
        Ok(RoomPowerLevels::new(
            RoomPowerLevelsSource::from(content),
            &rules.authorization,
            creators,
        ))
    }
}
