//! Room upgrades (spec: "Room Upgrades", server behaviour): a new room of the asked
//! version with the old one's transferable state, its local aliases and directory entry,
//! a tombstone in the old room, and the old room's power levels raised so that it falls
//! silent.

use ruma::{events::StateEventType, OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UserId};
use serde_json::{json, Map, Value as Json};

use super::{create::CreateRoom, send::NewEvent};
use crate::{ports::Value, Error, Homeserver, Result};

/// State copied into the new room (the spec's recommended list, but power levels, which
/// go in as the new room's own, and the canonical alias, set once the aliases moved).
const TRANSFERRED: [&str; 8] = [
    "m.room.server_acl",
    "m.room.encryption",
    "m.room.name",
    "m.room.avatar",
    "m.room.topic",
    "m.room.guest_access",
    "m.room.history_visibility",
    "m.room.join_rules",
];

impl Homeserver {
    /// `POST /rooms/{roomId}/upgrade`: for members who may send the old room's tombstone.
    pub async fn upgrade_room(
        &self,
        old: &RoomId,
        user: &UserId,
        version: RoomVersionId,
        additional_creators: Vec<OwnedUserId>,
    ) -> Result<OwnedRoomId> {
        self.ensure_not_suspended(user)?;
        if !super::SUPPORTED_VERSIONS.contains(&version.as_str()) {
            return Err(Error::Matrix(
                ruma::api::error::ErrorKind::UnsupportedRoomVersion,
                "Unsupported room version".into(),
            ));
        }
        if self.membership(old, user).await?.as_deref() != Some("join") {
            return Err(Error::forbidden("You are not in this room"));
        }
        let old_rules = self
            .room_version(old)
            .await?
            .rules()
            .ok_or_else(|| Error::internal("room version without rules"))?;
        let state = self.current_state_ids(old).await?;
        let levels = self.power_levels(&state, &old_rules).await?;
        if !levels.user_can_send_state(user, StateEventType::RoomTombstone) {
            return Err(Error::forbidden("You may not upgrade this room"));
        }
        let new_rules = version
            .rules()
            .ok_or_else(|| Error::internal("room version without rules"))?;
        let content_of = |kind: &str| {
            let id = state
                .get(&(StateEventType::from(kind), String::new()))
                .cloned();
            async move {
                Ok::<_, Error>(match id {
                    Some(id) => self
                        .get_pdu(&id)
                        .await?
                        .and_then(|p| serde_json::from_str::<Json>(p.content.get()).ok()),
                    None => None,
                })
            }
        };

        // The new room: predecessor and type (spec, step 2), transferred state (step 3).
        let mut creation = Map::new();
        let mut predecessor = json!({ "room_id": old });
        // Spec (v1.16): towards v12 and later, `event_id` may be left out; before, the
        // last event known in the old room.
        if !new_rules.authorization.room_create_event_id_as_room_id {
            if let Some(last) = self.forward_extremities(old).await?.first() {
                predecessor["event_id"] = last.as_str().into();
            }
        }
        creation.insert("predecessor".into(), predecessor);
        if let Some(kind) = content_of("m.room.create")
            .await?
            .and_then(|c| c.get("type").cloned())
        {
            creation.insert("type".into(), kind);
        }
        if !additional_creators.is_empty() {
            creation.insert("additional_creators".into(), json!(additional_creators));
        }
        let mut initial_state = Vec::new();
        for kind in TRANSFERRED {
            if let Some(content) = content_of(kind).await? {
                initial_state.push(NewEvent::state(StateEventType::from(kind), "", content));
            }
        }
        let mut power = match content_of("m.room.power_levels").await? {
            Some(Json::Object(m)) => m,
            _ => Map::new(),
        };
        // Creators of a v12+ room hold their power by being creators and may not be
        // listed; before v12 the upgrader needs the level to set up the room.
        if let Some(Json::Object(users)) = power.get_mut("users") {
            if new_rules.authorization.explicitly_privilege_room_creators {
                users.remove(user.as_str());
                for c in &additional_creators {
                    users.remove(c.as_str());
                }
            } else {
                users.insert(user.as_str().into(), 100.into());
            }
        } else if !new_rules.authorization.explicitly_privilege_room_creators {
            power.insert("users".into(), json!({ user.as_str(): 100 }));
        }
        let new = self
            .create_room(
                user,
                CreateRoom {
                    room_version: Some(version),
                    creation_content: Some(creation),
                    initial_state,
                    power_level_override: Some(power),
                    ..Default::default()
                },
            )
            .await?;

        // Step 4: the local aliases, the canonical alias and the directory entry move.
        self.db
            .execute(
                "UPDATE room_aliases SET room_id = $2 WHERE room_id = $1",
                vec![old.as_str().into(), new.as_str().into()],
            )
            .await?;
        if let Some(alias) = content_of("m.room.canonical_alias").await? {
            let local = |a: &Json| {
                a.as_str()
                    .and_then(|a| ruma::RoomAliasId::parse(a).ok())
                    .is_some_and(|a| a.server_name() == self.server_name())
            };
            let mut content = Map::new();
            if let Some(a) = alias.get("alias").filter(|a| local(a)) {
                content.insert("alias".into(), a.clone());
            }
            let alt: Vec<Json> = alias["alt_aliases"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|a| local(a))
                .cloned()
                .collect();
            if !alt.is_empty() {
                content.insert("alt_aliases".into(), Json::Array(alt));
            }
            if !content.is_empty() {
                let event = NewEvent::state(
                    StateEventType::RoomCanonicalAlias,
                    "",
                    Json::Object(content),
                );
                self.send_event(&new, user, event, None).await?;
            }
        }
        if self.room_visibility(old).await? {
            for (room, public) in [(&new, 1), (&old.to_owned(), 0)] {
                self.db
                    .execute(
                        "UPDATE rooms SET is_public = $2 WHERE room_id = $1",
                        vec![room.as_str().into(), Value::Int(public)],
                    )
                    .await?;
            }
        }

        // Step 5: the tombstone.
        let tombstone = NewEvent::state(
            StateEventType::RoomTombstone,
            "",
            json!({ "body": "This room has been replaced", "replacement_room": new }),
        );
        self.send_event(old, user, tombstone, None).await?;

        // Step 6: nobody but moderators may speak or invite in the old room any more.
        if let Some(Json::Object(mut old_levels)) = content_of("m.room.power_levels").await? {
            let users_default = old_levels
                .get("users_default")
                .and_then(Json::as_i64)
                .unwrap_or(0);
            let floor = 50.max(users_default.saturating_add(1));
            for key in ["events_default", "invite"] {
                let now = old_levels.get(key).and_then(Json::as_i64).unwrap_or(0);
                old_levels.insert(key.into(), floor.max(now).into());
            }
            let event = NewEvent::state(
                StateEventType::RoomPowerLevels,
                "",
                Json::Object(old_levels),
            );
            // Best effort (spec: "if possible"): the upgrader may lack the level.
            if let Err(e) = self.send_event(old, user, event, None).await {
                tracing::debug!(room = %old, "old room's power levels not raised: {e}");
            }
        }
        Ok(new)
    }
}
