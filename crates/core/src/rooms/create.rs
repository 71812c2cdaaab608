//! `POST /createRoom` (spec: client-server API, "Creation").

use ruma::{
    events::{StateEventType, TimelineEventType},
    OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UserId,
};
use serde_json::{json, Map, Value as Json};

use super::send::NewEvent;
use crate::{
    ports::{DbError, Statement, Value},
    Error, Homeserver, Result,
};

/// Most invitees and initial state events one request may carry.
pub const MAX_INITIAL_EVENTS: usize = 100;
/// Room IDs tried before giving up (each try is a new millisecond or random ID).
const MAX_ID_ATTEMPTS: u32 = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    PrivateChat,
    TrustedPrivateChat,
    PublicChat,
}

/// The parts of a `createRoom` request, already parsed.
#[derive(Default)]
pub struct CreateRoom {
    pub preset: Option<Preset>,
    pub public: bool,
    pub room_version: Option<RoomVersionId>,
    pub creation_content: Option<Map<String, Json>>,
    pub initial_state: Vec<NewEvent>,
    pub invite: Vec<OwnedUserId>,
    pub is_direct: bool,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub alias_localpart: Option<String>,
    pub power_level_override: Option<Map<String, Json>>,
}

impl Homeserver {
    pub async fn create_room(&self, creator: &UserId, req: CreateRoom) -> Result<OwnedRoomId> {
        self.ensure_not_suspended(creator)?;
        let version = req.room_version.clone().unwrap_or(RoomVersionId::V12);
        if !super::SUPPORTED_VERSIONS.contains(&version.as_str()) {
            return Err(Error::Matrix(
                ruma::api::error::ErrorKind::UnsupportedRoomVersion,
                "Unsupported room version".into(),
            ));
        }
        if req.invite.len() + req.initial_state.len() > MAX_INITIAL_EVENTS {
            return Err(Error::invalid_param(
                "Too many invites or initial state events",
            ));
        }
        let rules = version
            .rules()
            .ok_or_else(|| Error::internal("room version without rules"))?;
        let alias = match &req.alias_localpart {
            Some(local) => {
                let alias = ruma::RoomAliasId::parse(format!("#{local}:{}", self.server_name()))
                    .map_err(|_| {
                        Error::Matrix(
                            ruma::api::error::ErrorKind::InvalidParam,
                            "Invalid alias".into(),
                        )
                    })?;
                if self.resolve_alias(&alias).await?.is_some() {
                    return Err(Error::Matrix(
                        ruma::api::error::ErrorKind::RoomInUse,
                        "Alias already taken".into(),
                    ));
                }
                Some(alias)
            }
            None => None,
        };

        // 1. m.room.create
        let mut create = req.creation_content.clone().unwrap_or_default();
        create.insert("room_version".into(), version.as_str().into());
        if !rules.authorization.use_room_create_sender {
            create.insert("creator".into(), creator.as_str().into());
        }
        let trusted = req.preset == Some(Preset::TrustedPrivateChat);
        // Spec (createRoom, v12+): a trusted private chat's invitees become additional
        // creators, as powerful as the creator; earlier versions give them level 100.
        let invitees_create = trusted && rules.authorization.explicitly_privilege_room_creators;
        if invitees_create && !req.invite.is_empty() {
            let mut extra: Vec<Json> = match create.get("additional_creators") {
                Some(Json::Array(a)) => a.clone(),
                _ => Vec::new(),
            };
            for u in &req.invite {
                let u = Json::from(u.as_str());
                if !extra.contains(&u) {
                    extra.push(u);
                }
            }
            create.insert("additional_creators".into(), Json::Array(extra));
        }
        let mut create_event =
            NewEvent::state(StateEventType::RoomCreate, "", Json::Object(create));
        // The room's ID, held locked until the room is committed. From room v12 on it is
        // the create event's reference hash, so two identical requests in one millisecond
        // would name one room: the later one takes the next millisecond.
        let mut ts = self.now();
        let mut attempt = 0;
        let (room_id, create_pdu, guard) = loop {
            let (room_id, pdu) = if rules.authorization.room_create_event_id_as_room_id {
                create_event.origin_server_ts = Some(ts);
                let pdu = self
                    .build_pdu(None, &version, creator, create_event.clone())
                    .await?;
                let id = RoomId::parse(format!(
                    "!{}",
                    pdu.event_id.as_str().trim_start_matches('$')
                ))
                .map_err(Error::internal)?;
                (id, Some(pdu))
            } else {
                let local = crate::accounts::tokens::random_string(18);
                (
                    RoomId::parse(format!("!{local}:{}", self.server_name()))
                        .map_err(Error::internal)?,
                    None,
                )
            };
            let guard = self.lock_room(&room_id).await;
            if !self.room_exists(&room_id).await? {
                break (room_id, pdu, guard);
            }
            attempt += 1;
            if attempt >= MAX_ID_ATTEMPTS {
                return Err(Error::internal("no free room ID"));
            }
            ts += 1;
        };
        // Spec (createRoom `visibility`): publishing passes the server's rules too.
        if req.public {
            let aliases: Vec<String> = alias.iter().map(|a| a.to_string()).collect();
            if !super::directory::rules_allow(
                &self.config.publication_rules,
                creator,
                &room_id,
                &aliases,
            ) {
                return Err(Error::forbidden(
                    "The server's rules do not let you publish this room",
                ));
            }
        }
        // Every row of the new room commits in one batch: a failure or a crash part-way
        // leaves no room behind.
        let mut w = self.begin_write(&room_id, &version, guard).await?;
        w.push_prelude(Statement::new(
            "INSERT INTO rooms (room_id, room_version, creator, is_public, created_ts) VALUES ($1, $2, $3, $4, $5)",
            vec![
                room_id.as_str().into(),
                version.as_str().into(),
                creator.as_str().into(),
                Value::from(req.public),
                Value::Int(self.now()),
            ],
        ));
        if let Some(alias) = &alias {
            w.push_prelude(Statement::new(
                "INSERT INTO room_aliases (alias, room_id, creator) VALUES ($1, $2, $3)",
                vec![
                    alias.as_str().into(),
                    room_id.as_str().into(),
                    creator.as_str().into(),
                ],
            ));
        }
        let create_pdu = match create_pdu {
            Some(p) => p,
            None => {
                self.build_pdu(Some(&w), &version, creator, create_event)
                    .await?
            }
        };
        self.plan_pdu(&mut w, create_pdu, None)
            .await
            .map_err(invalid_room_state)?;

        let mut events = Vec::new();
        // 2. the creator joins
        let profile = self.get_profile(creator).await.unwrap_or_default();
        events.push(NewEvent::state(
            StateEventType::RoomMember,
            creator.as_str(),
            member_content("join", &profile),
        ));

        // 3. power levels, with the trusted preset's invitees as admins
        let mut users = Map::new();
        if !rules.authorization.explicitly_privilege_room_creators {
            users.insert(creator.to_string(), 100.into());
        }
        if trusted && !invitees_create {
            for u in &req.invite {
                users.insert(u.to_string(), 100.into());
            }
        }
        let mut pl = json!({
            "users": users,
            "users_default": 0,
            "events": {
                "m.room.name": 50, "m.room.power_levels": 100, "m.room.history_visibility": 100,
                "m.room.canonical_alias": 50, "m.room.avatar": 50, "m.room.tombstone": 100,
                "m.room.server_acl": 100, "m.room.encryption": 100,
            },
            "events_default": 0, "state_default": 50, "ban": 50, "kick": 50, "redact": 50, "invite": 0,
        });
        if let (Some(over), Some(obj)) = (&req.power_level_override, pl.as_object_mut()) {
            for (k, v) in over {
                obj.insert(k.clone(), v.clone());
            }
        }
        events.push(NewEvent::state(StateEventType::RoomPowerLevels, "", pl));

        // 4. canonical alias
        if let Some(alias) = &alias {
            events.push(NewEvent::state(
                StateEventType::RoomCanonicalAlias,
                "",
                json!({ "alias": alias }),
            ));
        }

        // 5. preset
        let preset = req.preset.unwrap_or(if req.public {
            Preset::PublicChat
        } else {
            Preset::PrivateChat
        });
        let (join_rule, guest) = match preset {
            Preset::PublicChat => ("public", "forbidden"),
            _ => ("invite", "can_join"),
        };
        events.push(NewEvent::state(
            StateEventType::RoomJoinRules,
            "",
            json!({ "join_rule": join_rule }),
        ));
        events.push(NewEvent::state(
            StateEventType::RoomHistoryVisibility,
            "",
            json!({ "history_visibility": "shared" }),
        ));
        events.push(NewEvent::state(
            StateEventType::RoomGuestAccess,
            "",
            json!({ "guest_access": guest }),
        ));

        // 6. initial_state, then 7. name and topic. Who authorised a join is the
        // server's word, never the client's (`join_rules.rs`).
        events.extend(req.initial_state.into_iter().map(|mut e| {
            if e.kind == ruma::events::TimelineEventType::RoomMember {
                if let Some(c) = e.content.as_object_mut() {
                    c.remove("join_authorised_via_users_server");
                }
            }
            e
        }));
        if let Some(name) = req.name {
            events.push(NewEvent::state(
                StateEventType::RoomName,
                "",
                json!({ "name": name }),
            ));
        }
        if let Some(topic) = req.topic {
            events.push(NewEvent::state(
                StateEventType::RoomTopic,
                "",
                json!({ "topic": topic }),
            ));
        }
        // 8. invites
        for invitee in &req.invite {
            let profile = self.get_profile(invitee).await.unwrap_or_default();
            let mut content = member_content("invite", &profile);
            if req.is_direct {
                content["is_direct"] = true.into();
            }
            events.push(NewEvent::state(
                StateEventType::RoomMember,
                invitee.as_str(),
                content,
            ));
        }

        for event in events {
            if event.kind == TimelineEventType::RoomCreate {
                return Err(Error::bad_json("initial_state may not hold m.room.create"));
            }
            let pdu = self.build_pdu(Some(&w), &version, creator, event).await?;
            self.plan_pdu(&mut w, pdu, None)
                .await
                .map_err(invalid_room_state)?;
        }
        match self.commit_write(w).await {
            Ok(_) => Ok(room_id),
            Err(e @ Error::Db(DbError::UniqueViolation)) => match &alias {
                // Taken between the check above and the commit.
                Some(alias) if self.resolve_alias(alias).await?.is_some() => Err(Error::Matrix(
                    ruma::api::error::ErrorKind::RoomInUse,
                    "Alias already taken".into(),
                )),
                _ => Err(e),
            },
            Err(e) => Err(e),
        }
    }
}

/// Spec (`createRoom`): initial state the request implies but the auth rules refuse is
/// 400 `M_INVALID_ROOM_STATE`.
fn invalid_room_state(e: Error) -> Error {
    match e {
        Error::Matrix(ruma::api::error::ErrorKind::Forbidden, msg) => Error::Matrix(
            ruma::api::error::ErrorKind::InvalidRoomState,
            format!("Invalid initial state: {msg}"),
        ),
        other => other,
    }
}

/// A member event's content with the user's profile (spec: `m.room.member`).
pub fn member_content(membership: &str, profile: &Map<String, Json>) -> Json {
    let mut c = json!({ "membership": membership });
    for key in ["displayname", "avatar_url"] {
        if let Some(v) = profile.get(key) {
            c[key] = v.clone();
        }
    }
    c
}
