//! Login tokens (spec: "Login" `m.login.token`, `POST /login/get_token`): a signed-in
//! device lets another one sign in (QR login, a browser session), once, within minutes.

use ruma::{OwnedUserId, UserId};

use super::tokens;
use crate::{
    ports::{DbError, Statement, Value},
    storage::query_opt,
    Error, Homeserver, Result,
};

/// How long a login token is valid, in ms (the spec suggests a short time).
pub const LOGIN_TOKEN_LIFETIME_MS: i64 = 2 * 60 * 1000;
/// Unused tokens one user may hold.
const MAX_PENDING: i64 = 20;

impl Homeserver {
    /// A new login token for the user (after user-interactive auth): (token, lifetime ms).
    pub async fn create_login_token(&self, user: &UserId) -> Result<(String, i64)> {
        let now = self.now();
        let pending = query_opt(
            self.db.as_ref(),
            "SELECT COUNT(*) FROM login_tokens WHERE user_id = $1 AND expires_ts > $2",
            vec![user.as_str().into(), Value::Int(now)],
        )
        .await?
        .map(|r| r.int(0))
        .transpose()?
        .unwrap_or(0);
        if pending >= MAX_PENDING {
            return Err(Error::Matrix(
                ruma::api::error::ErrorKind::LimitExceeded(Default::default()),
                "Too many unused login tokens".into(),
            ));
        }
        let token = tokens::new_token("syl");
        self.db
            .batch(vec![
                Statement::new(
                    "DELETE FROM login_tokens WHERE user_id = $1 AND expires_ts <= $2",
                    vec![user.as_str().into(), Value::Int(now)],
                ),
                Statement::new(
                    "INSERT INTO login_tokens (token_hash, user_id, expires_ts) VALUES ($1, $2, $3)",
                    vec![
                        tokens::hash(&token).into(),
                        user.as_str().into(),
                        Value::Int(now + LOGIN_TOKEN_LIFETIME_MS),
                    ],
                ),
            ])
            .await?;
        Ok((token, LOGIN_TOKEN_LIFETIME_MS))
    }

    /// The user a login token signs in, using it up: of two logins with one token, one
    /// wins (a guarded delete); an unknown, used or expired token is 403 `M_FORBIDDEN`.
    pub async fn redeem_login_token(&self, token: &str) -> Result<OwnedUserId> {
        let refused = || Error::forbidden("Invalid login token");
        let hash = tokens::hash(token);
        let now = self.now();
        let row = query_opt(
            self.db.as_ref(),
            "SELECT t.user_id FROM login_tokens t JOIN users u ON u.user_id = t.user_id
             WHERE t.token_hash = $1 AND t.expires_ts > $2 AND u.deactivated = 0",
            vec![hash.as_str().into(), Value::Int(now)],
        )
        .await?
        .ok_or_else(refused)?;
        let user = OwnedUserId::try_from(row.text(0)?).map_err(Error::internal)?;
        let used = self
            .db
            .batch(vec![Statement::new(
                "DELETE FROM login_tokens WHERE token_hash = $1 AND expires_ts > $2",
                vec![hash.into(), Value::Int(now)],
            )
            .expecting_change()])
            .await;
        match used {
            Ok(()) => Ok(user),
            Err(DbError::Conflict) => Err(refused()),
            Err(e) => Err(e.into()),
        }
    }
}
