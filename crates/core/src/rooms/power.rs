//! Power levels as ruma computes them (creators included from room v12 on).

use ruma::{
    events::{
        room::power_levels::{RoomPowerLevels, RoomPowerLevelsEventContent, RoomPowerLevelsSource},
        StateEventType,
    },
    room_version_rules::RoomVersionRules,
    state_res::events::RoomCreateEvent,
};

use super::{state::StateIds, Pdu};
use crate::{Error, Homeserver, Result};

impl Homeserver {
    /// The power levels in `state`.
    pub async fn power_levels(
        &self,
        state: &StateIds,
        rules: &RoomVersionRules,
    ) -> Result<RoomPowerLevels> {
        let create = match state.get(&(StateEventType::RoomCreate, String::new())) {
            Some(id) => self.get_pdu(id).await?,
            None => return Err(Error::internal("room without create event")),
        };
        let levels = match state.get(&(StateEventType::RoomPowerLevels, String::new())) {
            Some(id) => self.get_pdu(id).await?,
            None => None,
        };
        power_levels_of(create.as_deref(), levels.as_deref(), rules)
    }
}

/// The power levels a create event and a power levels event (if any) make.
pub(crate) fn power_levels_of(
    create: Option<&Pdu>,
    levels: Option<&Pdu>,
    rules: &RoomVersionRules,
) -> Result<RoomPowerLevels> {
    let create = create.ok_or_else(|| Error::internal("create event missing"))?;
    let creators = RoomCreateEvent::new(create)
        .creators(&rules.authorization)
        .map_err(Error::internal)?;
    let content = levels
        .and_then(|p| serde_json::from_str::<RoomPowerLevelsEventContent>(p.content.get()).ok());
    Ok(RoomPowerLevels::new(
        RoomPowerLevelsSource::from(content),
        &rules.authorization,
        creators,
    ))
}
