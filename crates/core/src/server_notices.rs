//! Server notices (spec: client-server module "Server Notices"): one room per user,
//! created by the notices user with the user's first notice, tagged `m.server_notice`, into
//! which the user is invited (and invited again after leaving). Only the notices user may
//! post there, and an invite to it cannot be rejected
//! (`M_CANNOT_LEAVE_SERVER_NOTICE_ROOM`). Admins send notices through
//! `POST /_synapse/admin/v1/send_server_notice`, the API admin tools know.
//!
//! The notices user joins no room but the ones it creates, one per user, so a user's
//! notices room is the room they have a membership in that the notices user joined:
//! found from the memberships alone, whatever a crash interrupted.

use ruma::{
    api::error::ErrorKind, events::TimelineEventType, OwnedEventId, OwnedRoomId, OwnedUserId,
    RoomId, UserId,
};
use serde_json::{json, Map, Value as Json};

use crate::{
    ports::Value,
    rooms::{
        create::{CreateRoom, Preset},
        send::NewEvent,
        write::Txn,
    },
    storage::query_opt,
    Error, Homeserver, Result,
};

/// `server_notices.*` in the config.
#[derive(Clone, Debug)]
pub struct ServerNoticesConfig {
    pub user_id: OwnedUserId,
    pub display_name: String,
    pub room_name: String,
}

/// The tag that marks the room to clients.
const TAG: &str = "m.server_notice";

impl Homeserver {
    fn notices(&self) -> Result<&ServerNoticesConfig> {
        self.config.server_notices.as_ref().ok_or_else(|| {
            Error::Matrix(
                ErrorKind::Unrecognized,
                "Server notices are not enabled".into(),
            )
        })
    }

    /// Whether `room_id` is a server notices room.
    pub(crate) async fn is_server_notice_room(&self, room_id: &RoomId) -> Result<bool> {
        match &self.config.server_notices {
            None => Ok(false),
            Some(n) => Ok(self.membership(room_id, &n.user_id).await?.as_deref() == Some("join")),
        }
    }

    /// Sends `content` (an `m.room.message`; `msgtype` defaults to `m.server_notice`) to
    /// `user`'s server notices room, for a server admin. `txn` makes a retry idempotent.
    pub async fn send_server_notice(
        &self,
        requester_is_admin: bool,
        user: &UserId,
        mut content: Map<String, Json>,
        txn: Option<Txn<'_>>,
    ) -> Result<OwnedEventId> {
        if !requester_is_admin {
            return Err(Error::forbidden(
                "Only server admins may send server notices",
            ));
        }
        let notices = self.notices()?.clone();
        if user.server_name() != self.server_name() {
            return Err(Error::invalid_param(
                "Server notices go to local users only",
            ));
        }
        if user == notices.user_id || !self.user_exists(user).await? {
            return Err(Error::not_found("Unknown user"));
        }
        if !content.get("body").is_some_and(Json::is_string) {
            return Err(Error::bad_json("content.body must be a string"));
        }
        content
            .entry("msgtype")
            .or_insert_with(|| Json::from("m.server_notice"));
        // One room per user: its creation is not raced by a second notice.
        let _guard = self.notice_lock.lock().await;
        let room = self.notice_room(&notices, user).await?;
        self.send_event(
            &room,
            &notices.user_id,
            NewEvent::message(TimelineEventType::RoomMessage, Json::Object(content)),
            txn,
        )
        .await
    }

    /// The user's notices room, created (or the user invited back) as needed.
    async fn notice_room(
        &self,
        notices: &ServerNoticesConfig,
        user: &UserId,
    ) -> Result<OwnedRoomId> {
        self.ensure_notices_user(notices).await?;
        // The user's rooms, each looked up for the notices user: as many as they are in.
        let existing = query_opt(
            self.db.as_ref(),
            "SELECT u.room_id FROM memberships u JOIN memberships n
               ON n.room_id = u.room_id AND n.user_id = $2 AND n.membership = 'join'
             WHERE u.user_id = $1 ORDER BY u.room_id LIMIT 1",
            vec![
                Value::from(user.as_str()),
                Value::from(notices.user_id.as_str()),
            ],
        )
        .await?;
        if let Some(row) = existing {
            let room = OwnedRoomId::try_from(row.text(0)?).map_err(Error::internal)?;
            match self.membership(&room, user).await?.as_deref() {
                Some("join" | "invite") => {}
                _ => self.invite(&notices.user_id, &room, user, None).await?,
            }
            self.tag_notice_room(user, &room).await?;
            return Ok(room);
        }
        let mut levels = Map::new();
        // Only the notices user (the creator) posts, invites or changes anything.
        levels.insert("events_default".into(), 100.into());
        levels.insert("state_default".into(), 100.into());
        levels.insert("invite".into(), 100.into());
        let room = self
            .create_room(
                &notices.user_id,
                CreateRoom {
                    preset: Some(Preset::PrivateChat),
                    public: false,
                    room_version: None,
                    creation_content: None,
                    initial_state: vec![],
                    invite: vec![user.to_owned()],
                    is_direct: false,
                    name: Some(notices.room_name.clone()),
                    topic: None,
                    alias_localpart: None,
                    power_level_override: Some(levels),
                },
            )
            .await?;
        self.tag_notice_room(user, &room).await?;
        Ok(room)
    }

    /// Spec: the room is known to clients by the `m.server_notice` tag, in the user's own
    /// tags (set again whenever it is missing).
    async fn tag_notice_room(&self, user: &UserId, room: &RoomId) -> Result<()> {
        let mut tags = match self.get_account_data(user, Some(room), "m.tag").await {
            Ok(t) if t["tags"].is_object() => t,
            Ok(_) | Err(Error::Matrix(ErrorKind::NotFound, _)) => json!({ "tags": {} }),
            Err(e) => return Err(e),
        };
        if tags["tags"].get(TAG).is_some() {
            return Ok(());
        }
        tags["tags"][TAG] = json!({});
        self.set_account_data(user, Some(room), "m.tag", &tags)
            .await
    }

    /// The notices user exists from the first notice on; it has no password, so nobody
    /// logs in as it.
    async fn ensure_notices_user(&self, notices: &ServerNoticesConfig) -> Result<()> {
        if self.user_exists(&notices.user_id).await? {
            return Ok(());
        }
        match self
            .create_user_with(&notices.user_id, None, false, None)
            .await
        {
            Ok(()) | Err(Error::Matrix(ErrorKind::UserInUse, _)) => {}
            Err(e) => return Err(e),
        }
        self.set_profile_field(
            &notices.user_id,
            "displayname",
            Some(Json::from(notices.display_name.as_str())),
        )
        .await
    }
}
