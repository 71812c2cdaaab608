//! Access-token authentication of client requests.

use ruma::{api::error::ErrorKind, OwnedDeviceId, OwnedUserId};

use super::tokens;
use crate::{ports::Value, storage::query_opt, Error, Homeserver, Result};

/// The authenticated user and device behind a request.
#[derive(Clone, Debug)]
pub struct Session {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    pub is_admin: bool,
}

impl Homeserver {
    /// Resolves an access token; an expired one gets `soft_logout` (spec: "Soft logout").
    pub async fn authenticate(&self, token: &str) -> Result<Session> {
        let row = query_opt(
            self.db.as_ref(),
            "SELECT t.user_id, t.device_id, t.expires_at, u.is_admin, u.deactivated
             FROM access_tokens t JOIN users u ON u.user_id = t.user_id WHERE t.token_hash = $1",
            vec![Value::from(tokens::hash(token))],
        )
        .await?;
        let unknown = |soft_logout| {
            Error::Matrix(
                ErrorKind::UnknownToken({
                    let mut data = ruma::api::error::UnknownTokenErrorData::new();
                    data.soft_logout = soft_logout;
                    data
                }),
                "Unknown or expired access token".into(),
            )
        };
        let row = row.ok_or_else(|| unknown(false))?;
        if row.int(4)? != 0 {
            return Err(unknown(false));
        }
        if let Some(expires) = row.opt_int(2)? {
            if expires <= self.now() {
                return Err(unknown(true));
            }
        }
        Ok(Session {
            user_id: OwnedUserId::try_from(row.text(0)?).map_err(Error::internal)?,
            device_id: row.text(1)?.into(),
            is_admin: row.int(3)? != 0,
        })
    }
}
