//! Profiles (spec: "Profiles", custom fields since v1.16), propagated to joined rooms as
//! member events.

use ruma::UserId;
use serde_json::{Map, Value as Json};

use crate::{ports::Value, storage::query_opt, Error, Homeserver, Result};

/// Spec: the whole profile must stay within 64 KiB.
pub const MAX_PROFILE_BYTES: usize = 64 * 1024;

impl Homeserver {
    pub async fn get_profile(&self, user: &UserId) -> Result<Map<String, Json>> {
        let row = query_opt(
            self.db.as_ref(),
            "SELECT profile FROM users WHERE user_id = $1 AND deactivated = 0",
            vec![Value::from(user.as_str())],
        )
        .await?
        .ok_or_else(|| Error::not_found("Profile not found"))?;
        Ok(serde_json::from_str(&row.text(0)?)?)
    }

    /// Sets (`Some`) or removes (`None`) one field; `displayname` and `avatar_url` changes
    /// update the member event in every joined room.
    pub async fn set_profile_field(
        &self,
        user: &UserId,
        key: &str,
        value: Option<Json>,
    ) -> Result<()> {
        if key.is_empty() || key.len() > 255 {
            return Err(Error::invalid_param("Invalid profile key"));
        }
        self.ensure_not_suspended(user)?;
        // Spec ("Guest Access"): a guest may change their display name, nothing else.
        if key != "displayname" && self.is_guest(user).await? {
            return Err(super::guests::forbidden(
                "Guests may only set a display name",
            ));
        }
        let mut profile = self.get_profile(user).await?;
        match value {
            Some(Json::Null) | None => profile.remove(key),
            Some(v) => profile.insert(key.to_owned(), v),
        };
        let text = serde_json::to_string(&profile)?;
        if text.len() > MAX_PROFILE_BYTES {
            return Err(Error::Matrix(
                ruma::api::error::ErrorKind::ProfileTooLarge,
                "Profile too large".into(),
            ));
        }
        self.db
            .execute(
                "UPDATE users SET profile = $2 WHERE user_id = $1",
                vec![user.as_str().into(), text.into()],
            )
            .await?;
        if key == "displayname" || key == "avatar_url" {
            for room in self.joined_rooms(user).await? {
                if let Err(e) = self.refresh_member_profile(user, &room, &profile).await {
                    tracing::warn!(%room, "profile propagation failed: {e}");
                }
            }
        }
        Ok(())
    }
}
