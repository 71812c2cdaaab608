//! Third-party networks (spec: "Third-party Networks"). Bridges (application services)
//! would name the protocols; none is configured, so no protocol, location or user exists,
//! and lookups answer as the spec says for that.

use ruma::{RoomAliasId, UserId};

use crate::{Error, Homeserver, Result};

impl Homeserver {
    /// `GET /thirdparty/protocol/{protocol}`, `/location/{protocol}`, `/user/{protocol}`:
    /// the protocol is unknown (404).
    pub fn thirdparty_protocol(&self, _protocol: &str) -> Result<()> {
        Err(Error::not_found("Unknown protocol"))
    }

    /// `GET /thirdparty/location?alias=`: no bridged locations; 404 for an unknown alias.
    pub async fn thirdparty_locations_for_alias(&self, alias: &RoomAliasId) -> Result<()> {
        match self.resolve_alias(alias).await? {
            Some(_) => Ok(()),
            None => Err(Error::not_found("Unknown room alias")),
        }
    }

    /// `GET /thirdparty/user?userid=`: no bridged users; 404 for an unknown user.
    pub async fn thirdparty_users_for_user(&self, user: &UserId) -> Result<()> {
        if user.server_name() == self.server_name() && self.user_exists(user).await? {
            Ok(())
        } else {
            Err(Error::not_found("Unknown user"))
        }
    }
}
