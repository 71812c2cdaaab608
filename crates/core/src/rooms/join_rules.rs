//! Join rules a local join has to satisfy before it is sent (spec: client-server
//! "Restricted rooms", room versions 8+ for `restricted` and 10+ for `knock_restricted`).
//! Event auth checks the `join_authorised_via_users_server` a join carries; which user it
//! names, and whether the joiner is in one of the allowed rooms, is decided here.

use ruma::{events::StateEventType, OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde_json::Value as Json;

use super::state::StateIds;
use crate::{ports::Value, Error, Homeserver, Result};

/// Allowed rooms read from one join rules event, and members tried as the authorising user.
const MAX_ALLOWED: usize = 100;
const MAX_CANDIDATES: usize = 100;

/// The room IDs a `restricted` or `knock_restricted` join rule allows (spec:
/// `m.room_membership` entries of `allow`).
pub(crate) fn allowed_rooms(join_rules: &Json) -> Vec<OwnedRoomId> {
    join_rules["allow"]
        .as_array()
        .into_iter()
        .flatten()
        .take(MAX_ALLOWED)
        .filter(|a| a["type"] == "m.room_membership")
        .filter_map(|a| a["room_id"].as_str())
        .filter_map(|r| RoomId::parse(r).ok())
        .collect()
}

impl Homeserver {
    /// The content of the room's `m.room.join_rules` in `state` (`{}` when there is none).
    pub(crate) async fn join_rules_content(&self, state: &StateIds) -> Result<Json> {
        let Some(id) = state.get(&(StateEventType::RoomJoinRules, String::new())) else {
            return Ok(Json::Object(Default::default()));
        };
        Ok(self
            .get_pdu(id)
            .await?
            .and_then(|p| serde_json::from_str(p.content.get()).ok())
            .unwrap_or_else(|| Json::Object(Default::default())))
    }

    /// Whether `user` is joined to one of the rooms `join_rules` allows.
    pub(crate) async fn in_allowed_room(&self, join_rules: &Json, user: &UserId) -> Result<bool> {
        for room in allowed_rooms(join_rules) {
            if self.membership(&room, user).await?.as_deref() == Some("join") {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The `join_authorised_via_users_server` a join of `user` to `room_id` needs: `None`
    /// when the room is not restricted (or the version has no such rule) or the user is
    /// already invited or joined; a local member who may invite when the user is in an
    /// allowed room; 403 otherwise (a `knock_restricted` room may still be knocked on).
    pub(crate) async fn join_authorisation(
        &self,
        room_id: &RoomId,
        user: &UserId,
    ) -> Result<Option<OwnedUserId>> {
        if matches!(
            self.membership(room_id, user).await?.as_deref(),
            Some("join" | "invite")
        ) {
            return Ok(None);
        }
        let rules = self
            .room_version(room_id)
            .await?
            .rules()
            .ok_or_else(|| Error::internal("room version without rules"))?;
        let state = self.current_state(room_id).await?;
        let join_rules = self.join_rules_content(&state).await?;
        let applies = match join_rules["join_rule"].as_str() {
            Some("restricted") => rules.authorization.restricted_join_rule,
            Some("knock_restricted") => rules.authorization.knock_restricted_join_rule,
            _ => false,
        };
        if !applies {
            return Ok(None);
        }
        if !self.in_allowed_room(&join_rules, user).await? {
            return Err(Error::forbidden(
                "You are not invited to this room, nor in a room it lets members join from",
            ));
        }
        let levels = self.power_levels(&state, &rules).await?;
        // The most powerful first: creators (v12), then the users the levels name.
        let mut candidates: Vec<OwnedUserId> = levels
            .rules
            .privileged_creators
            .iter()
            .flatten()
            .cloned()
            .collect();
        let mut named: Vec<_> = levels.users.iter().collect();
        named.sort_by(|a, b| b.1.cmp(a.1));
        candidates.extend(named.into_iter().map(|(u, _)| u.clone()));
        // Anyone may invite when the default level allows it.
        if levels.users_default >= levels.invite {
            let rows = self
                .db
                .query(
                    "SELECT user_id FROM memberships WHERE room_id = $1 AND membership = 'join' ORDER BY user_id LIMIT 20",
                    vec![Value::from(room_id.as_str())],
                )
                .await?;
            for r in &rows {
                if let Ok(u) = OwnedUserId::try_from(r.text(0)?) {
                    candidates.push(u);
                }
            }
        }
        // Only local members who may invite, and may act at all, are asked about.
        let candidates = candidates.into_iter().filter(|u| {
            u.server_name() == self.server_name()
                && levels.user_can_invite(u)
                && !self.is_suspended(u)
        });
        for u in candidates.take(MAX_CANDIDATES) {
            if self.membership(room_id, &u).await?.as_deref() == Some("join") {
                return Ok(Some(u));
            }
        }
        Err(Error::forbidden(
            "No member of this room on this server may let you in",
        ))
    }
}
