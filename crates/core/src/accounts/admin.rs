//! Server administration (spec: client-server "Server Administration": `/admin/whois`).

use ruma::UserId;
use serde_json::{json, Map, Value as Json};

use crate::{Error, Homeserver, Result};

impl Homeserver {
    /// `GET /admin/whois/{userId}`: a user's devices and where they were last seen, for
    /// server admins and for the user themselves (as Synapse allows).
    pub async fn whois(&self, requester: &UserId, is_admin: bool, user: &UserId) -> Result<Json> {
        if requester != user && !is_admin {
            return Err(Error::forbidden(
                "Only server admins may look up other users",
            ));
        }
        if user.server_name() != self.server_name() || !self.user_exists(user).await? {
            return Err(Error::not_found("User not found"));
        }
        let mut devices = Map::new();
        for d in self.list_devices(user).await? {
            let mut connection = Map::new();
            if let Some(ip) = d.last_seen_ip {
                connection.insert("ip".into(), ip.into());
            }
            if let Some(ts) = d.last_seen_ts {
                connection.insert("last_seen".into(), ts.into());
            }
            let connections = if connection.is_empty() {
                vec![]
            } else {
                vec![Json::Object(connection)]
            };
            devices.insert(
                d.device_id,
                json!({ "sessions": [{ "connections": connections }] }),
            );
        }
        Ok(json!({ "user_id": user, "devices": devices }))
    }
}
