//! Devices' tokens: login, logout, refresh (spec: "Login", "Refreshing access tokens").

use ruma::{api::error::ErrorKind, OwnedDeviceId, UserId};

use super::tokens;
use crate::{
    ports::{DbError, Statement, Value},
    storage::query_opt,
    Error, Homeserver, Result,
};

/// What a successful login or registration hands the client.
#[derive(Debug, Clone)]
pub struct LoginTokens {
    pub device_id: OwnedDeviceId,
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_in_ms: Option<u64>,
}

impl Homeserver {
    /// Checks a password login; wrong credentials and unknown users look the same.
    pub async fn verify_login(&self, user: &UserId, pw: &str) -> Result<()> {
        let row = query_opt(
            self.db.as_ref(),
            "SELECT password_hash, deactivated FROM users WHERE user_id = $1",
            vec![Value::from(user.as_str())],
        )
        .await?;
        let Some(row) = row else {
            // Hash anyway so timing does not reveal whether the account exists.
            let _ = self.hash_password(pw).await;
            return Err(Error::forbidden("Invalid username or password"));
        };
        let ok = match row.opt_text(0)? {
            Some(h) => self.verify_password(pw, &h).await?,
            None => false,
        };
        if !ok {
            return Err(Error::forbidden("Invalid username or password"));
        }
        if row.int(1)? != 0 {
            return Err(Error::Matrix(
                ErrorKind::UserDeactivated,
                "This account has been deactivated".into(),
            ));
        }
        Ok(())
    }

    /// Creates (or takes over) a device and issues its tokens. A reused device ID loses its
    /// earlier tokens (spec: `/login`, `device_id`).
    pub async fn open_device(
        &self,
        user: &UserId,
        device_id: Option<OwnedDeviceId>,
        display_name: Option<String>,
        with_refresh: bool,
    ) -> Result<LoginTokens> {
        if let Some(d) = &device_id {
            crate::input::device_id(d.as_str())?;
        }
        if let Some(name) = &display_name {
            crate::input::display_name(name)?;
        }
        // Spec ("Account locking"): no new token until the lock is lifted.
        self.ensure_not_locked(user).await?;
        let device_id =
            device_id.unwrap_or_else(|| tokens::random_string(10).to_uppercase().into());
        let (count, exists) = match query_opt(
            self.db.as_ref(),
            "SELECT COUNT(*), COUNT(CASE WHEN device_id = $2 THEN 1 END) FROM devices WHERE user_id = $1",
            vec![user.as_str().into(), device_id.as_str().into()],
        )
        .await?
        {
            Some(r) => (r.int(0)?, r.int(1)? > 0),
            None => (0, false),
        };
        if !exists && count >= super::devices::MAX_DEVICES_PER_USER {
            return Err(Error::forbidden(
                "This account has too many devices: log some out first",
            ));
        }
        let access_token = tokens::new_token("syt");
        let refresh_token = with_refresh.then(|| tokens::new_token("syr"));
        let expires_in_ms = with_refresh.then_some(self.config.access_token_lifetime_ms);
        let now = self.now();
        let batch = vec![
            Statement::new(
                "INSERT INTO devices (user_id, device_id, display_name, last_seen_ts) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (user_id, device_id) DO UPDATE SET last_seen_ts = excluded.last_seen_ts",
                vec![user.as_str().into(), device_id.as_str().into(), display_name.into(), now.into()],
            ),
            Statement::new(
                "DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2",
                vec![user.as_str().into(), device_id.as_str().into()],
            ),
            self.insert_token(user, device_id.as_str(), &access_token, refresh_token.as_deref(), now),
        ];
        let done = self.db.batch(batch).await;
        // A reused device ID's earlier tokens are gone.
        self.token_cache
            .forget(user, Some(&[device_id.to_string()]));
        done?;
        Ok(LoginTokens {
            device_id,
            access_token,
            refresh_token,
            expires_in_ms,
        })
    }

    fn insert_token(
        &self,
        user: &UserId,
        device_id: &str,
        access: &str,
        refresh: Option<&str>,
        now: i64,
    ) -> Statement {
        let expires = refresh.map(|_| now + self.config.access_token_lifetime_ms as i64);
        Statement::new(
            "INSERT INTO access_tokens (token_hash, user_id, device_id, expires_at, refresh_hash, created_ts)
             VALUES ($1, $2, $3, $4, $5, $6)",
            vec![
                tokens::hash(access).into(),
                user.as_str().into(),
                device_id.into(),
                expires.into(),
                refresh.map(tokens::hash).into(),
                now.into(),
            ],
        )
    }

    /// Exchanges a refresh token, which works once: the old pair is deleted in the same
    /// transaction, guarded so two concurrent refreshes cannot both succeed.
    pub async fn refresh(&self, refresh_token: &str) -> Result<LoginTokens> {
        let unknown = || {
            Error::Matrix(
                ErrorKind::UnknownToken(ruma::api::error::UnknownTokenErrorData::new()),
                "Unknown refresh token".into(),
            )
        };
        let row = query_opt(
            self.db.as_ref(),
            "SELECT user_id, device_id FROM access_tokens WHERE refresh_hash = $1",
            vec![tokens::hash(refresh_token).into()],
        )
        .await?
        .ok_or_else(unknown)?;
        let user = UserId::parse(row.text(0)?).map_err(Error::internal)?;
        let device_id: OwnedDeviceId = row.text(1)?.into();
        self.ensure_not_locked(&user).await?;
        let access_token = tokens::new_token("syt");
        let new_refresh = tokens::new_token("syr");
        let batch = vec![
            Statement::new(
                "DELETE FROM access_tokens WHERE refresh_hash = $1",
                vec![tokens::hash(refresh_token).into()],
            )
            .expecting_change(),
            self.insert_token(
                &user,
                device_id.as_str(),
                &access_token,
                Some(&new_refresh),
                self.now(),
            ),
        ];
        let done = self.db.batch(batch).await;
        self.token_cache
            .forget(&user, Some(&[device_id.to_string()]));
        match done {
            Ok(()) => Ok(LoginTokens {
                device_id,
                access_token,
                refresh_token: Some(new_refresh),
                expires_in_ms: Some(self.config.access_token_lifetime_ms),
            }),
            Err(DbError::Conflict) => Err(unknown()),
            Err(e) => Err(e.into()),
        }
    }

    /// `/logout`: the device and its tokens go.
    pub async fn logout(&self, user: &UserId, device_id: &str) -> Result<()> {
        self.delete_devices(user, &[device_id.to_owned()]).await
    }

    /// `/logout/all`: every device and token of the user.
    pub async fn logout_all(&self, user: &UserId) -> Result<()> {
        let devices = self.all_device_ids(user).await?;
        self.delete_devices(user, &devices).await
    }
}
