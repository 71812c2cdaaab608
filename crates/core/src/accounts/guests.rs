//! Guest accounts (spec: client-server module "Guest Access"): registered with
//! `kind=guest` where the config allows it, joining only rooms whose `m.room.guest_access`
//! is `can_join`, setting no profile field but their display name, and upgraded to a full
//! account through `/register` with `guest_access_token`. Which endpoints a guest reaches
//! at all is decided where requests are authenticated (`api/src/guests.rs`).

use ruma::{api::error::ErrorKind, events::StateEventType, OwnedUserId, RoomId, UserId};

use super::login::LoginTokens;
use crate::{
    ports::{DbError, Statement, Value},
    storage::query_opt,
    Error, Homeserver, Result,
};

/// Guests read per round when a room stops letting guests in.
const GUESTS_PER_ROUND: i64 = 500;

pub fn forbidden(message: &str) -> Error {
    Error::Matrix(ErrorKind::GuestAccessForbidden, message.into())
}

impl Homeserver {
    /// `POST /register?kind=guest`: a new guest account with one device.
    pub async fn register_guest(
        &self,
        display_name: Option<String>,
    ) -> Result<(OwnedUserId, LoginTokens)> {
        if !self.config.guest_access {
            return Err(forbidden("Guest access is disabled"));
        }
        let user_id =
            self.user_id_for_localpart(&super::tokens::random_string(16).to_lowercase())?;
        let done = self
            .db
            .batch(vec![Statement::new(
                "INSERT INTO users (user_id, password_hash, is_admin, is_guest, profile, created_ts)
                 VALUES ($1, NULL, 0, 1, '{}', $2)",
                vec![Value::from(user_id.as_str()), Value::Int(self.now())],
            )])
            .await;
        match done {
            Ok(()) => {}
            Err(DbError::UniqueViolation) => {
                return Err(Error::internal("random guest ID already taken"))
            }
            Err(e) => return Err(e.into()),
        }
        let tokens = self
            .open_device(&user_id, None, display_name, false)
            .await?;
        Ok((user_id, tokens))
    }

    pub async fn is_guest(&self, user: &UserId) -> Result<bool> {
        let row = query_opt(
            self.db.as_ref(),
            "SELECT is_guest FROM users WHERE user_id = $1",
            vec![Value::from(user.as_str())],
        )
        .await?;
        Ok(match row {
            Some(r) => r.int(0)? != 0,
            None => false,
        })
    }

    /// Whether the room lets guests in: `m.room.guest_access` is `can_join`.
    async fn guests_can_join(&self, room_id: &RoomId) -> Result<bool> {
        let state = self.current_state(room_id).await?;
        let Some(id) = state.get(&(StateEventType::RoomGuestAccess, String::new())) else {
            return Ok(false);
        };
        Ok(self.get_pdu(id).await?.is_some_and(|p| {
            crate::rooms::read::content_str(&p, "guest_access").as_deref() == Some("can_join")
        }))
    }

    /// Spec ("Server behaviour"): a guest joins only a room whose guest access is
    /// `can_join`. Tells whether `user` is a guest, for [`Self::guest_joined`].
    pub(crate) async fn ensure_guest_may_join(
        &self,
        room_id: &RoomId,
        user: &UserId,
    ) -> Result<bool> {
        let guest = self.is_guest(user).await?;
        if guest && !self.guests_can_join(room_id).await? {
            return Err(forbidden("Guests may not join this room"));
        }
        Ok(guest)
    }

    /// Spec ("Server behaviour"): once a room's guest access is no longer `can_join`, its
    /// guests' membership becomes `leave`. They leave themselves, so no member's power to
    /// kick is needed; in rounds, each read again, until none is left.
    pub(crate) async fn remove_guests(&self, room_id: &RoomId) -> Result<()> {
        loop {
            if self.guests_can_join(room_id).await? {
                return Ok(());
            }
            let rows = self
                .db
                .query(
                    "SELECT m.user_id FROM memberships m JOIN users u ON u.user_id = m.user_id
                     WHERE m.room_id = $1 AND m.membership = 'join' AND u.is_guest <> 0
                     ORDER BY m.user_id LIMIT $2",
                    vec![Value::from(room_id.as_str()), Value::from(GUESTS_PER_ROUND)],
                )
                .await?;
            let mut left = 0;
            for r in &rows {
                let Ok(guest) = OwnedUserId::try_from(r.text(0)?) else {
                    continue;
                };
                match self.leave_room(&guest, room_id, None).await {
                    Ok(()) => left += 1,
                    // Gone meanwhile.
                    Err(Error::Matrix(ErrorKind::Forbidden, _)) => {}
                    Err(e) => return Err(e),
                }
            }
            // A short round, or one that moved nobody, ends it.
            if (rows.len() as i64) < GUESTS_PER_ROUND || left == 0 {
                return Ok(());
            }
        }
    }

    /// After a join of the guest `user`: if their room stopped letting guests in while the
    /// join was on its way, they leave again (the removal may have looked before the join
    /// landed).
    pub(crate) async fn guest_joined(&self, room_id: &RoomId, user: &UserId) {
        let check = async {
            if !self.guests_can_join(room_id).await? {
                self.leave_room(user, room_id, None).await?;
            }
            Ok::<_, Error>(())
        };
        if let Err(e) = check.await {
            tracing::warn!(%room_id, %user, "re-checking a guest's join failed: {e}");
        }
    }

    /// The guest a `/register` with `guest_access_token` upgrades, checked before any
    /// user-interactive auth: the token is a guest's, not locked, and `localpart` is the
    /// guest's own (spec: "Guest Access": the username must be given and be theirs).
    pub async fn guest_for_upgrade(
        &self,
        guest_token: &str,
        localpart: Option<&str>,
    ) -> Result<OwnedUserId> {
        let session = self.authenticate(guest_token).await?;
        if session.locked {
            return Err(Error::Matrix(
                ErrorKind::UserLocked,
                super::moderation::LOCKED_MESSAGE.into(),
            ));
        }
        if !session.is_guest {
            return Err(forbidden("This access token is not a guest's"));
        }
        if localpart.map(str::to_lowercase).as_deref() != Some(session.user_id.localpart()) {
            return Err(Error::Matrix(
                ErrorKind::InvalidUsername,
                "A guest upgrades to their own user ID".into(),
            ));
        }
        Ok(session.user_id)
    }

    /// The guest `user` (from [`Self::guest_for_upgrade`]) becomes a full account with
    /// `password`, once the registration rules were passed; its tokens keep working.
    pub async fn upgrade_guest(
        &self,
        user: &UserId,
        password: Option<&str>,
        registration_token: Option<&str>,
    ) -> Result<()> {
        let hash = match password {
            Some(pw) => Some(self.hash_password(pw).await?),
            None => None,
        };
        let mut batch = Vec::new();
        // One use of the registration token, as a registration spends.
        if let Some(token) = registration_token {
            batch.push(self.spend_registration_token(token));
        }
        batch.push(
            Statement::new(
                "UPDATE users SET is_guest = 0, password_hash = $2 WHERE user_id = $1 AND is_guest <> 0",
                vec![Value::from(user.as_str()), Value::from(hash)],
            )
            .expecting_change(),
        );
        self.db.batch(batch).await.map_err(|e| match e {
            DbError::Conflict => {
                forbidden("The guest was upgraded already, or the registration token is used up")
            }
            e => e.into(),
        })?;
        // Sessions remember that they were a guest's.
        self.token_cache.forget(user, None);
        Ok(())
    }
}
