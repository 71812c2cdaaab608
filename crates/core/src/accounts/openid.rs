//! OpenID tokens (spec: client-server "OpenID"): a user proves their identity to a third
//! party, which checks the token with the federation API's `/openid/userinfo`.

use ruma::{OwnedUserId, UserId};

use super::tokens;
use crate::{ports::Value, storage::query_opt, Error, Homeserver, Result};

/// How long an OpenID token is valid, in ms.
pub const OPENID_TOKEN_LIFETIME_MS: i64 = 3600 * 1000;

impl Homeserver {
    /// `POST /user/{userId}/openid/request_token`: for one's own account only. Returns the
    /// token and its lifetime in ms; only its hash is kept, with the user's expired ones
    /// deleted.
    pub async fn request_openid_token(
        &self,
        requester: &UserId,
        user: &UserId,
    ) -> Result<(String, i64)> {
        if requester != user {
            return Err(Error::forbidden(
                "You may only ask for your own OpenID token",
            ));
        }
        let token = tokens::random_string(32);
        let now = self.now();
        self.db
            .batch(vec![
                crate::ports::Statement::new(
                    "DELETE FROM openid_tokens WHERE user_id = $1 AND expires_ts <= $2",
                    vec![user.as_str().into(), Value::Int(now)],
                ),
                crate::ports::Statement::new(
                    "INSERT INTO openid_tokens (token_hash, user_id, expires_ts) VALUES ($1, $2, $3)",
                    vec![
                        tokens::hash(&token).into(),
                        user.as_str().into(),
                        Value::Int(now + OPENID_TOKEN_LIFETIME_MS),
                    ],
                ),
            ])
            .await?;
        Ok((token, OPENID_TOKEN_LIFETIME_MS))
    }

    /// The user an unexpired OpenID token was issued to (for `/openid/userinfo`).
    pub async fn openid_user(&self, token: &str) -> Result<Option<OwnedUserId>> {
        let row = query_opt(
            self.db.as_ref(),
            "SELECT user_id FROM openid_tokens WHERE token_hash = $1 AND expires_ts > $2",
            vec![tokens::hash(token).into(), Value::Int(self.now())],
        )
        .await?;
        row.map(|r| OwnedUserId::try_from(r.text(0)?).map_err(Error::internal))
            .transpose()
    }
}
