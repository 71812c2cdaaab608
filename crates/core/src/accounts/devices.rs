//! Device management (spec: "Device management").

use ruma::UserId;

use crate::{
    homeserver::{Audience, Stream},
    ports::{Statement, Value},
    storage::query_opt,
    Error, Homeserver, Result,
};

/// Most device IDs `/delete_devices` takes at once.
pub const MAX_DELETE_DEVICES: usize = 1000;
/// Most devices one account may have; logging in again needs one logged out first.
pub const MAX_DEVICES_PER_USER: i64 = 10_000;

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
        crate::input::device_id(device_id)?;
        if let Some(name) = &name {
            crate::input::display_name(name)?;
        }
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

    /// Statements deleting devices with their tokens, to-device queue and keys.
    fn device_deletion(user: &UserId, device_ids: &[String]) -> Vec<Statement> {
        let mut batch = Vec::new();
        for d in device_ids {
            for sql in [
                "DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2",
                "DELETE FROM devices WHERE user_id = $1 AND device_id = $2",
                "DELETE FROM to_device WHERE user_id = $1 AND device_id = $2",
                // Spec ("Pushers"): a pusher belongs to the session that set it.
                "DELETE FROM pushers WHERE user_id = $1 AND device_id = $2",
                // Sliding sync connections are the device's (MSC4186).
                "DELETE FROM sliding_connections WHERE user_id = $1 AND device_id = $2",
                "DELETE FROM sliding_rooms WHERE user_id = $1 AND device_id = $2",
            ] {
                batch.push(Statement::new(sql, vec![user.as_str().into(), d.into()]));
            }
            batch.extend(Homeserver::delete_device_keys_statements(user, d));
        }
        batch
    }

    /// Deletes devices and everything that hangs off them in one transaction, and tells
    /// room-mates' clients through the device list (spec: "Device management").
    pub async fn delete_devices(&self, user: &UserId, device_ids: &[String]) -> Result<()> {
        if device_ids.len() > MAX_DELETE_DEVICES {
            return Err(Error::invalid_param("Too many devices"));
        }
        self.delete_devices_with(user, device_ids, Vec::new(), false)
            .await
    }

    /// Also for every device of the account at once (password change, deactivation):
    /// at most `MAX_DEVICES_PER_USER`.
    /// `all_sessions` forgets every cached session of the user, not only these devices'.
    async fn delete_devices_with(
        &self,
        user: &UserId,
        device_ids: &[String],
        mut batch: Vec<Statement>,
        all_sessions: bool,
    ) -> Result<()> {
        batch.extend(Self::device_deletion(user, device_ids));
        let u = user.to_string();
        let audience = [user.to_owned()];
        let (owner, devices) = (user.to_owned(), device_ids.to_vec());
        // Run by the writer once the rows are gone (or may be), whether or not this
        // request still waits: no cached session of these devices outlives them.
        let forget: crate::commit::AfterCommit = Box::new(move |hs, _| {
            let only = (!all_sessions).then_some(devices.as_slice());
            hs.token_cache.forget(&owner, only);
            for d in &devices {
                hs.forget_key_counts(&owner, d.as_str().into());
            }
        });
        self.commit_then(
            &[Stream::DeviceLists],
            Audience::RoomMatesOf(&audience),
            1,
            |pos| {
                batch.extend(crate::e2ee::device_lists::device_list_change(&u, pos));
                batch
            },
            Some(forget),
        )
        .await?;
        Ok(())
    }

    /// Every device of the user.
    pub(crate) async fn all_device_ids(&self, user: &UserId) -> Result<Vec<String>> {
        Ok(self
            .list_devices(user)
            .await?
            .into_iter()
            .map(|d| d.device_id)
            .collect())
    }

    /// `/account/password`; other devices are logged out unless `keep_device` says otherwise.
    pub async fn change_password(
        &self,
        user: &UserId,
        new: &str,
        keep_device: Option<&str>,
    ) -> Result<()> {
        let hash = self.hash_password(new).await?;
        let set = vec![Statement::new(
            "UPDATE users SET password_hash = $2 WHERE user_id = $1",
            vec![user.as_str().into(), hash.into()],
        )];
        let others: Vec<String> = match keep_device {
            Some(keep) => self
                .all_device_ids(user)
                .await?
                .into_iter()
                .filter(|d| d != keep)
                .collect(),
            None => vec![],
        };
        self.delete_devices_with(user, &others, set, false).await
    }

    /// `/account/deactivate`: tokens stop working at once; rooms are left afterwards.
    pub async fn deactivate(&self, user: &UserId) -> Result<()> {
        let set = vec![Statement::new(
            "UPDATE users SET deactivated = 1, password_hash = NULL WHERE user_id = $1",
            vec![user.as_str().into()],
        )];
        // Tokens of devices created while this runs die with the flag: authenticate()
        // refuses deactivated users.
        let devices = self.all_device_ids(user).await?;
        // Sessions of devices created meanwhile go too.
        self.delete_devices_with(user, &devices, set, true).await?;
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
