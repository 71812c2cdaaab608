//! Joining, leaving, inviting, kicking, banning, knocking, forgetting; room aliases
//! (spec: client-server API, "Room membership" and "Room aliases").

use ruma::{events::StateEventType, OwnedRoomId, RoomAliasId, RoomId, RoomOrAliasId, UserId};
use serde_json::{Map, Value as Json};

use super::{create::member_content, send::NewEvent};
use crate::{
    ports::{DbError, Value},
    storage::query_opt,
    Error, Homeserver, Result,
};

impl Homeserver {
    pub async fn resolve_alias(&self, alias: &RoomAliasId) -> Result<Option<OwnedRoomId>> {
        let row = query_opt(
            self.db.as_ref(),
            "SELECT room_id FROM room_aliases WHERE alias = $1",
            vec![alias.as_str().into()],
        )
        .await?;
        row.map(|r| OwnedRoomId::try_from(r.text(0)?).map_err(Error::internal))
            .transpose()
    }

    pub async fn set_alias(
        &self,
        alias: &RoomAliasId,
        room_id: &RoomId,
        creator: &UserId,
    ) -> Result<()> {
        self.ensure_not_suspended(creator)?;
        if alias.server_name() != self.server_name() {
            return Err(Error::invalid_param("Alias must be on this server"));
        }
        match self
            .db
            .execute(
                "INSERT INTO room_aliases (alias, room_id, creator) VALUES ($1, $2, $3)",
                vec![
                    alias.as_str().into(),
                    room_id.as_str().into(),
                    creator.as_str().into(),
                ],
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(DbError::UniqueViolation) => Err(Error::Matrix(
                ruma::api::error::ErrorKind::Unknown,
                "Alias already exists".into(),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes an alias; its creator or a room admin may.
    pub async fn delete_alias(
        &self,
        alias: &RoomAliasId,
        user: &UserId,
        is_admin: bool,
    ) -> Result<()> {
        let row = query_opt(
            self.db.as_ref(),
            "SELECT creator FROM room_aliases WHERE alias = $1",
            vec![alias.as_str().into()],
        )
        .await?
        .ok_or_else(|| Error::not_found("Unknown alias"))?;
        if row.text(0)? != user.as_str() && !is_admin {
            return Err(Error::forbidden("Only the alias creator may delete it"));
        }
        self.db
            .execute(
                "DELETE FROM room_aliases WHERE alias = $1",
                vec![alias.as_str().into()],
            )
            .await?;
        Ok(())
    }

    /// Spec (`PUT /state`, `m.room.canonical_alias`): every alias must be well-formed
    /// (else `M_INVALID_PARAM`) and point to this room (else `M_BAD_ALIAS`). Aliases of
    /// other servers cannot be checked without federation, so they are refused too.
    pub(crate) async fn check_canonical_alias(
        &self,
        room_id: &RoomId,
        content: &Json,
    ) -> Result<()> {
        let bad_syntax = |what: &str| Error::invalid_param(format!("{what} is not a room alias"));
        let mut aliases = Vec::new();
        match content.get("alias") {
            None | Some(Json::Null) => {}
            Some(Json::String(a)) => {
                aliases.push(RoomAliasId::parse(a.as_str()).map_err(|_| bad_syntax("alias"))?)
            }
            Some(_) => return Err(bad_syntax("alias")),
        }
        match content.get("alt_aliases") {
            None | Some(Json::Null) => {}
            Some(Json::Array(list)) => {
                for a in list {
                    let a = a
                        .as_str()
                        .ok_or_else(|| bad_syntax("an alt_aliases entry"))?;
                    aliases.push(
                        RoomAliasId::parse(a).map_err(|_| bad_syntax("an alt_aliases entry"))?,
                    );
                }
            }
            Some(_) => return Err(Error::invalid_param("alt_aliases must be a list")),
        }
        for alias in aliases {
            let here = alias.server_name() == self.server_name()
                && self.resolve_alias(&alias).await?.as_deref() == Some(room_id);
            if !here {
                return Err(Error::Matrix(
                    ruma::api::error::ErrorKind::BadAlias,
                    format!("The alias {alias} does not point to this room"),
                ));
            }
        }
        Ok(())
    }

    pub async fn room_exists(&self, room_id: &RoomId) -> Result<bool> {
        match self.room_version(room_id).await {
            Ok(_) => Ok(true),
            Err(Error::Matrix(ruma::api::error::ErrorKind::NotFound, _)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn resolve_room(&self, target: &RoomOrAliasId) -> Result<OwnedRoomId> {
        let room_id = match <&RoomId>::try_from(target) {
            Ok(id) => id.to_owned(),
            Err(alias) => self
                .resolve_alias(alias)
                .await?
                .ok_or_else(|| Error::not_found("Unknown alias"))?,
        };
        if !self.room_exists(&room_id).await? {
            // Joining over federation is not implemented yet.
            return Err(Error::not_found("No known server can join this room"));
        }
        Ok(room_id)
    }

    async fn set_membership(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        target: &UserId,
        membership: &str,
        reason: Option<String>,
        extra: Option<Map<String, Json>>,
    ) -> Result<()> {
        let profile = if target.server_name() == self.server_name() {
            self.get_profile(target).await.unwrap_or_default()
        } else {
            Map::new()
        };
        let mut content = member_content(membership, &profile);
        if let Some(r) = reason {
            content["reason"] = r.into();
        }
        for (k, v) in extra.unwrap_or_default() {
            content[k] = v;
        }
        self.send_event(
            room_id,
            sender,
            NewEvent::state(StateEventType::RoomMember, target.as_str(), content),
            None,
        )
        .await?;
        Ok(())
    }

    /// `/join`: idempotent for a member whose profile has not changed.
    pub async fn join_room(
        &self,
        user: &UserId,
        target: &RoomOrAliasId,
        reason: Option<String>,
    ) -> Result<OwnedRoomId> {
        let room_id = self.resolve_room(target).await?;
        if self.membership(&room_id, user).await?.as_deref() == Some("join") && reason.is_none() {
            return Ok(room_id);
        }
        self.ensure_not_suspended(user)?;
        let guest = self.ensure_guest_may_join(&room_id, user).await?;
        let extra = self.join_authorisation(&room_id, user).await?.map(|via| {
            Map::from_iter([(
                "join_authorised_via_users_server".to_owned(),
                Json::from(via.as_str()),
            )])
        });
        self.set_membership(&room_id, user, user, "join", reason, extra)
            .await?;
        if guest {
            self.guest_joined(&room_id, user).await;
        }
        Ok(room_id)
    }

    /// A state event from the client's state API. A member event's
    /// `join_authorised_via_users_server` is the server's word, never the client's: it is
    /// dropped, and a join of oneself gets the one `/join` would give. A suspended user may
    /// only leave (with no profile riding along), a guest only join or leave.
    pub async fn put_state(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        kind: StateEventType,
        state_key: &str,
        mut content: Json,
    ) -> Result<ruma::OwnedEventId> {
        let member = kind == StateEventType::RoomMember;
        let own = member && state_key == sender.as_str();
        let membership = content["membership"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if self.is_suspended(sender) {
            if !(own && membership == "leave") {
                return Err(crate::accounts::moderation::suspended());
            }
            let mut bare = Map::new();
            bare.insert("membership".into(), "leave".into());
            if let Some(r) = content.get("reason").filter(|r| r.is_string()) {
                bare.insert("reason".into(), r.clone());
            }
            content = Json::Object(bare);
        }
        let joining = own && membership == "join";
        let mut guest = false;
        if member {
            if !(own && matches!(membership.as_str(), "join" | "leave"))
                && self.is_guest(sender).await?
            {
                return Err(crate::accounts::guests::forbidden(
                    "Guests may only join or leave",
                ));
            }
            if let Some(c) = content.as_object_mut() {
                c.remove("join_authorised_via_users_server");
            }
            if joining {
                guest = self.ensure_guest_may_join(room_id, sender).await?;
                if let Some(via) = self.join_authorisation(room_id, sender).await? {
                    content["join_authorised_via_users_server"] = via.as_str().into();
                }
            }
        }
        let guest_access = kind == StateEventType::RoomGuestAccess;
        let id = self
            .send_event(
                room_id,
                sender,
                NewEvent::state(kind, state_key, content),
                None,
            )
            .await?;
        if guest {
            self.guest_joined(room_id, sender).await;
        }
        if guest_access {
            // The change is made; guests leaving after it is the server's follow-up.
            if let Err(e) = self.remove_guests(room_id).await {
                tracing::warn!(%room_id, "removing guests failed: {e}");
            }
        }
        Ok(id)
    }

    pub async fn knock(
        &self,
        user: &UserId,
        target: &RoomOrAliasId,
        reason: Option<String>,
    ) -> Result<OwnedRoomId> {
        self.ensure_not_suspended(user)?;
        let room_id = self.resolve_room(target).await?;
        self.set_membership(&room_id, user, user, "knock", reason, None)
            .await?;
        Ok(room_id)
    }

    /// `/leave`: also rejects an invite or withdraws a knock.
    pub async fn leave_room(
        &self,
        user: &UserId,
        room_id: &RoomId,
        reason: Option<String>,
    ) -> Result<()> {
        match self.membership(room_id, user).await?.as_deref() {
            Some("invite") if self.is_server_notice_room(room_id).await? => {
                // Spec ("Server Notices"): the invite cannot be rejected.
                return Err(Error::WithStatus {
                    status: 403,
                    kind: ruma::api::error::ErrorKind::CannotLeaveServerNoticeRoom,
                    message: "The server notices room cannot be rejected".into(),
                });
            }
            Some("join" | "invite" | "knock") => {}
            Some("leave") => return Ok(()),
            _ => return Err(Error::forbidden("You are not in this room")),
        }
        self.set_membership(room_id, user, user, "leave", reason, None)
            .await
    }

    pub async fn invite(
        &self,
        sender: &UserId,
        room_id: &RoomId,
        target: &UserId,
        reason: Option<String>,
    ) -> Result<()> {
        self.ensure_not_suspended(sender)?;
        if target.server_name() == self.server_name() && !self.user_exists(target).await? {
            return Err(Error::not_found("Unknown user"));
        }
        if target.server_name() != self.server_name() {
            return Err(Error::forbidden(
                "Inviting remote users needs federation, which is not available yet",
            ));
        }
        match self.membership(room_id, target).await?.as_deref() {
            Some("join") => return Err(Error::forbidden("User is already in the room")),
            Some("ban") => return Err(Error::forbidden("User is banned from the room")),
            _ => {}
        }
        self.set_membership(room_id, sender, target, "invite", reason, None)
            .await
    }

    pub async fn kick(
        &self,
        sender: &UserId,
        room_id: &RoomId,
        target: &UserId,
        reason: Option<String>,
    ) -> Result<()> {
        match self.membership(room_id, target).await?.as_deref() {
            Some("join" | "invite" | "knock") => {}
            _ => return Err(Error::forbidden("User is not in the room")),
        }
        self.set_membership(room_id, sender, target, "leave", reason, None)
            .await
    }

    pub async fn ban(
        &self,
        sender: &UserId,
        room_id: &RoomId,
        target: &UserId,
        reason: Option<String>,
    ) -> Result<()> {
        self.set_membership(room_id, sender, target, "ban", reason, None)
            .await
    }

    pub async fn unban(
        &self,
        sender: &UserId,
        room_id: &RoomId,
        target: &UserId,
        reason: Option<String>,
    ) -> Result<()> {
        if self.membership(room_id, target).await?.as_deref() != Some("ban") {
            return Err(Error::forbidden("User is not banned"));
        }
        self.set_membership(room_id, sender, target, "leave", reason, None)
            .await
    }

    /// `/forget`: only once the user has left (spec: 400 `M_UNKNOWN` while still joined).
    pub async fn forget(&self, user: &UserId, room_id: &RoomId) -> Result<()> {
        match self.membership(room_id, user).await?.as_deref() {
            Some("join" | "invite" | "knock") => Err(Error::Matrix(
                ruma::api::error::ErrorKind::Unknown,
                "Leave the room before forgetting it".into(),
            )),
            None => Err(Error::not_found("Unknown room")),
            _ => {
                self.db
                    .execute(
                        "UPDATE memberships SET forgotten = 1 WHERE room_id = $1 AND user_id = $2",
                        vec![room_id.as_str().into(), user.as_str().into()],
                    )
                    .await?;
                Ok(())
            }
        }
    }

    pub async fn joined_rooms(&self, user: &UserId) -> Result<Vec<OwnedRoomId>> {
        let rows = self
            .db
            .query(
                "SELECT room_id FROM memberships WHERE user_id = $1 AND membership = 'join' ORDER BY room_id",
                vec![Value::from(user.as_str())],
            )
            .await?;
        rows.iter()
            .map(|r| OwnedRoomId::try_from(r.text(0)?).map_err(Error::internal))
            .collect()
    }

    /// Re-sends the member event after a profile change.
    pub(crate) async fn refresh_member_profile(
        &self,
        user: &UserId,
        room_id: &RoomId,
        profile: &Map<String, Json>,
    ) -> Result<()> {
        let content = member_content("join", profile);
        self.send_event(
            room_id,
            user,
            NewEvent::state(StateEventType::RoomMember, user.as_str(), content),
            None,
        )
        .await?;
        Ok(())
    }
}
