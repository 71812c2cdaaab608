//! VoIP (spec: "Voice over IP", `GET /voip/turnServer`): credentials for the TURN servers
//! the config names. With a shared secret they are time-limited, in the form TURN servers
//! check without asking the homeserver (coturn's `use-auth-secret`, the TURN REST API
//! draft): the username is `{expiry in seconds}:{user ID}`, the password the base64 of
//! HMAC-SHA1 of the username under the secret.

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use ruma::UserId;
use serde_json::{json, Value as Json};

use crate::{Error, Homeserver, Result};

/// `voip.*` (README).
#[derive(Clone, Debug, Default)]
pub struct TurnConfig {
    /// `turn:` and `turns:` URIs handed to clients; none: no TURN server.
    pub uris: Vec<String>,
    /// The secret shared with the TURN server, for time-limited credentials.
    pub shared_secret: Option<String>,
    /// Fixed credentials, when there is no shared secret.
    pub username: Option<String>,
    pub password: Option<String>,
    /// How long time-limited credentials last, in ms.
    pub user_lifetime_ms: u64,
}

/// Time-limited credentials for `user`, valid until `expires_s` (Unix seconds).
pub fn turn_credentials(secret: &str, user: &UserId, expires_s: u64) -> Result<(String, String)> {
    let username = format!("{expires_s}:{user}");
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).map_err(Error::internal)?;
    mac.update(username.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    Ok((username, password))
}

impl Homeserver {
    /// `GET /voip/turnServer`. With no TURN server configured the answer is `{}`, as
    /// Synapse gives and clients take as "no TURN server".
    pub fn turn_server(&self, user: &UserId) -> Result<Json> {
        let turn = &self.config.turn;
        if turn.uris.is_empty() {
            return Ok(json!({}));
        }
        let ttl_s = (turn.user_lifetime_ms / 1000).max(1);
        let (username, password) = match (&turn.shared_secret, &turn.username, &turn.password) {
            (Some(secret), _, _) => {
                let expires = (self.now().max(0) as u64) / 1000 + ttl_s;
                turn_credentials(secret, user, expires)?
            }
            (None, Some(u), Some(p)) => (u.clone(), p.clone()),
            _ => return Ok(json!({})),
        };
        Ok(json!({
            "username": username,
            "password": password,
            "uris": turn.uris,
            "ttl": ttl_s,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_hmac_sha1_of_the_username() {
        // Computed independently: printf '1443779631:@user:example.com' |
        // openssl dgst -sha1 -hmac 'secret' -binary | base64
        let (u, p) = turn_credentials("secret", ruma::user_id!("@user:example.com"), 1443779631)
            .expect("credentials");
        assert_eq!(u, "1443779631:@user:example.com");
        assert_eq!(p, "Xm0lErj7sx/fpxQLH9q1I3FF0uw=");
    }
}
