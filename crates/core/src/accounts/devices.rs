//! Device management (spec: "Device management").

use ruma::UserId;

use super::password;
use crate::{
    ports::{Statement, Value},
    storage::query_opt,
    Error, Homeserver, Result,
};

/// Most device IDs `/delete_devices` takes at once.
pub const MAX_DELETE_DEVICES: usize = 1000;

#[derive(Debug, Clone)]
pub struct DeviceInfo {
    pub device_id: String,
    pub display_name: Option<String>,
    pub last_seen_ts: Option<i64>,
    pub last_seen_ip: Option<String>,
}

impl Homeserver {
    pub async fn list_devices(&self, user: &UserId) -> Result<Vec<DeviceInfo>> {
        let rows = self
            .db
            .query(
                "SELECT device_id, display_name, last_seen_ts, last_seen_ip FROM devices WHERE user_id = $1 ORDER BY device_id",
                vec![user.as_str().into()],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(DeviceInfo {
                    device_id: r.text(0)?,
                    display_name: r.opt_text(1)?,
                    last_seen_ts: r.opt_int(2)?,
                    last_seen_ip: r.opt_text(3)?,
                })
            })
            .collect()
    }

    pub async fn get_device(&self, user: &UserId, device_id: &str) -> Result<DeviceInfo> {
        self.list_devices(user)
            .await?
            .into_iter()
            .find(|d| d.device_id == device_id)
            .ok_or_else(|| Error::not_found("Unknown device"))
    }

    pub async fn rename_device(
        &self,
        user: &UserId,
        device_id: &str,
        name: Option<String>,
    ) -> Result<()> {
        let changed = self
            .db
            .execute(
                "UPDATE devices SET display_name = $3 WHERE user_id = $1 AND device_id = $2",
                vec![user.as_str().into(), device_id.into(), name.into()],
            )
            .await?;
        if changed == 0 {
            return Err(Error::not_found("Unknown device"));
        }
        Ok(())
    }

    /// Deletes devices and, in the same transaction, their tokens.
    pub async fn delete_devices(&self, user: &UserId, device_ids: &[String]) -> Result<()> {
        if device_ids.len() > MAX_DELETE_DEVICES {
            return Err(Error::invalid_param("Too many devices"));
        }
        let mut batch = Vec::new();
        for d in device_ids {
            batch.push(Statement::new(
                "DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2",
                vec![user.as_str().into(), d.into()],
            ));
            batch.push(Statement::new(
                "DELETE FROM devices WHERE user_id = $1 AND device_id = $2",
                vec![user.as_str().into(), d.into()],
            ));
            batch.push(Statement::new(
                "DELETE FROM to_device WHERE user_id = $1 AND device_id = $2",
                vec![user.as_str().into(), d.into()],
            ));
        }
        self.db.batch(batch).await?;
        Ok(())
    }

    /// `/account/password`; other devices are logged out unless `keep_device` says otherwise.
    pub async fn change_password(
        &self,
        user: &UserId,
        new: &str,
        keep_device: Option<&str>,
    ) -> Result<()> {
        let hash = password::hash(new)?;
        let mut batch = vec![Statement::new(
            "UPDATE users SET password_hash = $2 WHERE user_id = $1",
            vec![user.as_str().into(), hash.into()],
        )];
        if let Some(keep) = keep_device {
            batch.push(Statement::new(
                "DELETE FROM access_tokens WHERE user_id = $1 AND device_id <> $2",
                vec![user.as_str().into(), keep.into()],
            ));
            batch.push(Statement::new(
                "DELETE FROM devices WHERE user_id = $1 AND device_id <> $2",
                vec![user.as_str().into(), keep.into()],
            ));
        }
        self.db.batch(batch).await?;
        Ok(())
    }

    /// `/account/deactivate`: tokens stop working at once; rooms are left afterwards.
    pub async fn deactivate(&self, user: &UserId) -> Result<()> {
        self.db
            .batch(vec![
                Statement::new(
                    "UPDATE users SET deactivated = 1, password_hash = NULL WHERE user_id = $1",
                    vec![user.as_str().into()],
                ),
                Statement::new(
                    "DELETE FROM access_tokens WHERE user_id = $1",
                    vec![user.as_str().into()],
                ),
                Statement::new(
                    "DELETE FROM devices WHERE user_id = $1",
                    vec![user.as_str().into()],
                ),
                Statement::new(
                    "DELETE FROM to_device WHERE user_id = $1",
                    vec![user.as_str().into()],
                ),
            ])
            .await?;
        for room in self.joined_rooms(user).await? {
            // Best effort per room: the account is already unusable.
            if let Err(e) = self.leave_room(user, &room, None).await {
                tracing::warn!(%room, "leaving room on deactivation failed: {e}");
            }
        }
        Ok(())
    }

    pub async fn is_admin(&self, user: &UserId) -> Result<bool> {
        let row = query_opt(
            self.db.as_ref(),
            "SELECT is_admin FROM users WHERE user_id = $1",
            vec![Value::from(user.as_str())],
        )
        .await?;
        Ok(row.map(|r| r.int(0)).transpose()?.unwrap_or(0) != 0)
    }
}
