//! Account creation: `/register`, the admin command, registration tokens.

use ruma::{api::error::ErrorKind, OwnedUserId, UserId};

use super::tokens;
use crate::{
    ports::{DbError, Statement, Value},
    storage::query_opt,
    Error, Homeserver, Result,
};

/// Longest localpart we accept; the full ID must stay within 255 bytes (spec: "User Identifiers").
const MAX_LOCALPART_LEN: usize = 200;

impl Homeserver {
    /// Validates a requested localpart (spec: user identifiers, historical characters excluded
    /// for new accounts).
    pub fn user_id_for_localpart(&self, localpart: &str) -> Result<OwnedUserId> {
        let valid = !localpart.is_empty()
            && localpart.len() <= MAX_LOCALPART_LEN
            && localpart
                .bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'=' | b'-' | b'/' | b'+'));
        if !valid {
            return Err(Error::Matrix(
                ErrorKind::InvalidUsername,
                "Invalid username".into(),
            ));
        }
        UserId::parse(format!("@{localpart}:{}", self.server_name()))
            .map_err(|_| Error::Matrix(ErrorKind::InvalidUsername, "Invalid username".into()))
    }

    /// Accepts `alice` or `@alice:server`; the user must be local.
    pub fn parse_user_localpart_or_id(&self, s: &str) -> Result<OwnedUserId> {
        let id = if s.starts_with('@') {
            UserId::parse(s).map_err(|_| Error::invalid_param("Invalid user ID"))?
        } else {
            UserId::parse(format!("@{}:{}", s.to_lowercase(), self.server_name()))
                .map_err(|_| Error::invalid_param("Invalid user ID"))?
        };
        if id.server_name() != self.server_name() {
            return Err(Error::invalid_param("Not a local user"));
        }
        Ok(id)
    }

    pub async fn user_exists(&self, user: &UserId) -> Result<bool> {
        Ok(query_opt(
            self.db.as_ref(),
            "SELECT 1 FROM users WHERE user_id = $1",
            vec![Value::from(user.as_str())],
        )
        .await?
        .is_some())
    }

    /// One use of a registration token, if it has one left; a conflict otherwise.
    pub(crate) fn spend_registration_token(&self, token: &str) -> Statement {
        Statement::new(
            "UPDATE registration_tokens SET completed = completed + 1
             WHERE token = $1 AND (uses_allowed IS NULL OR completed < uses_allowed)
               AND (expiry_ts IS NULL OR expiry_ts > $2)",
            vec![Value::from(token), Value::Int(self.now())],
        )
        .expecting_change()
    }

    /// Creates an account. With `registration_token`, one use of it is consumed in the same
    /// transaction, so a token's use limit holds under concurrency.
    pub async fn create_user_with(
        &self,
        user_id: &UserId,
        password: Option<&str>,
        admin: bool,
        registration_token: Option<&str>,
    ) -> Result<()> {
        let hash = match password {
            Some(pw) => Some(self.hash_password(pw).await?),
            None => None,
        };
        let mut batch = Vec::new();
        if let Some(token) = registration_token {
            batch.push(self.spend_registration_token(token));
        }
        let displayname = serde_json::json!({ "displayname": user_id.localpart() }).to_string();
        batch.push(Statement::new(
            "INSERT INTO users (user_id, password_hash, is_admin, profile, created_ts) VALUES ($1, $2, $3, $4, $5)",
            vec![
                Value::from(user_id.as_str()),
                Value::from(hash),
                Value::from(admin),
                Value::from(displayname),
                Value::Int(self.now()),
            ],
        ));
        match self.db.batch(batch).await {
            Ok(()) => Ok(()),
            Err(DbError::UniqueViolation) => Err(Error::Matrix(
                ErrorKind::UserInUse,
                "User ID already taken".into(),
            )),
            Err(DbError::Conflict) => Err(Error::Matrix(
                ErrorKind::Unauthorized,
                "Registration token no longer valid".into(),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// The admin command's entry point.
    pub async fn create_user(
        &self,
        localpart: &str,
        password: Option<&str>,
        admin: bool,
    ) -> Result<OwnedUserId> {
        let user_id = self.user_id_for_localpart(localpart)?;
        self.create_user_with(&user_id, password, admin, None)
            .await?;
        Ok(user_id)
    }

    pub async fn create_registration_token(&self, uses: Option<i64>) -> Result<String> {
        if uses.is_some_and(|u| u < 0) {
            return Err(Error::invalid_param("uses must not be negative"));
        }
        let token = tokens::random_string(16);
        self.db
            .execute(
                "INSERT INTO registration_tokens (token, uses_allowed, created_ts) VALUES ($1, $2, $3)",
                vec![Value::from(&token), Value::from(uses), Value::Int(self.now())],
            )
            .await?;
        Ok(token)
    }

    /// Spec: `GET /register/m.login.registration_token/validity`.
    pub async fn registration_token_valid(&self, token: &str) -> Result<bool> {
        Ok(query_opt(
            self.db.as_ref(),
            "SELECT 1 FROM registration_tokens WHERE token = $1
             AND (uses_allowed IS NULL OR completed < uses_allowed) AND (expiry_ts IS NULL OR expiry_ts > $2)",
            vec![Value::from(token), Value::Int(self.now())],
        )
        .await?
        .is_some())
    }
}
