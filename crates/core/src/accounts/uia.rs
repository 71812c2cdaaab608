//! User-interactive authentication (spec: client-server API, "User-Interactive Authentication
//! API"). Sessions are stored so a flow survives restarts and spans nodes.

use ruma::api::{
    client::uiaa::{AuthData, AuthFlow, AuthType, UiaaInfo, UserIdentifier},
    error::{ErrorKind, StandardErrorBody},
};
use serde::{Deserialize, Serialize};

use super::tokens;
use crate::{
    ports::{DbError, Statement, Value},
    storage::query_opt,
    Error, Homeserver, Result,
};

/// Sessions older than this are forgotten.
const SESSION_LIFETIME_MS: i64 = 30 * 60 * 1000;

#[derive(Default, Serialize, Deserialize)]
struct Progress {
    stages: Vec<String>,
    /// The registration token a completed `m.login.registration_token` stage used.
    registration_token: Option<String>,
}

/// A completed flow.
pub struct UiaDone {
    pub session: String,
    pub registration_token: Option<String>,
}

impl Homeserver {
    /// Advances the UIA session in `auth` against `flows`. Returns `Error::Uia` (401) until a
    /// flow is complete. `user` is whose password `m.login.password` must match; `request`
    /// names the operation (method and path). A session belongs to the user and the
    /// operation it was started for, and lives `SESSION_LIFETIME_MS`.
    pub async fn user_interactive_auth(
        &self,
        flows: &[Vec<AuthType>],
        auth: Option<&AuthData>,
        user: Option<&ruma::UserId>,
        request: &str,
    ) -> Result<UiaDone> {
        let now = self.now();
        let owner = user.map(|u| u.to_string()).unwrap_or_default();
        // Stored as a digest: an operation may name many devices.
        let request = &tokens::hash(request);
        let (session, mut progress, new) = match auth.and_then(|a| a.session()) {
            Some(id) => {
                crate::input::name("UIA session", id, crate::input::MAX_NAME_BYTES)?;
                let (progress, stored_owner, stored_request) =
                    self.load_session(id, now).await?.ok_or_else(|| {
                        Error::Matrix(ErrorKind::Unknown, "Unknown session ID".into())
                    })?;
                if stored_owner != owner || stored_request != *request {
                    return Err(Error::forbidden(
                        "This session was started for another user or operation",
                    ));
                }
                (id.to_owned(), progress, false)
            }
            None => (tokens::random_string(24), Progress::default(), true),
        };
        let mut auth_error = None;

        if let Some(auth) = auth {
            match self.check_stage(auth, user).await {
                // Spec: a flow's stages are completed in order.
                Ok((stage, _)) if !extends_a_flow(flows, &progress.stages, &stage) => {
                    auth_error = Some(StandardErrorBody::new(
                        ErrorKind::Unauthorized,
                        format!("{stage} is not the next stage of any flow"),
                    ));
                }
                Ok((stage, token)) => {
                    if !progress.stages.contains(&stage) {
                        progress.stages.push(stage);
                    }
                    if token.is_some() {
                        progress.registration_token = token;
                    }
                }
                Err(Error::Matrix(kind, message)) => {
                    auth_error = Some(StandardErrorBody::new(kind, message));
                }
                Err(e) => return Err(e),
            }
        }

        let done = flows.iter().any(|flow| {
            flow.iter()
                .all(|s| progress.stages.iter().any(|d| d == s.as_str()))
        });
        if done {
            // A stored session completes once: of two requests finishing it at the same
            // time, one deletes it and goes on.
            if !new {
                match self
                    .db
                    .batch(vec![Statement::new(
                        "DELETE FROM uia_sessions WHERE session_id = $1",
                        vec![Value::from(&session)],
                    )
                    .expecting_change()])
                    .await
                {
                    Ok(()) => {}
                    Err(DbError::Conflict) => {
                        return Err(Error::forbidden("This session was already completed"))
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            return Ok(UiaDone {
                session,
                registration_token: progress.registration_token,
            });
        }

        let completed = Value::from(serde_json::to_string(&progress)?);
        if new {
            // Expired sessions go as new ones come, so the table stays small.
            self.db
                .batch(vec![
                    Statement::new(
                        "DELETE FROM uia_sessions WHERE created_ts <= $1",
                        vec![Value::Int(now - SESSION_LIFETIME_MS)],
                    ),
                    Statement::new(
                        "INSERT INTO uia_sessions (session_id, completed, user_id, request, created_ts)
                         VALUES ($1, $2, $3, $4, $5)",
                        vec![
                            Value::from(&session),
                            completed,
                            Value::from(owner),
                            Value::from(request),
                            Value::Int(now),
                        ],
                    ),
                ])
                .await?;
        } else {
            self.db
                .execute(
                    "UPDATE uia_sessions SET completed = $2 WHERE session_id = $1",
                    vec![Value::from(&session), completed],
                )
                .await?;
        }
        let mut info = UiaaInfo::new(flows.iter().map(|f| AuthFlow::new(f.clone())).collect());
        info.completed = progress
            .stages
            .iter()
            .map(|s| AuthType::from(s.as_str()))
            .collect();
        info.session = Some(session);
        info.params = Some(serde_json::value::to_raw_value(&serde_json::json!({}))?);
        info.auth_error = auth_error.map(Box::new);
        Err(Error::Uia(Box::new(info)))
    }

    /// A live session's progress, owner (`""` when none) and operation.
    async fn load_session(
        &self,
        session: &str,
        now: i64,
    ) -> Result<Option<(Progress, String, String)>> {
        let row = query_opt(
            self.db.as_ref(),
            "SELECT completed, user_id, request FROM uia_sessions WHERE session_id = $1 AND created_ts > $2",
            vec![Value::from(session), Value::Int(now - SESSION_LIFETIME_MS)],
        )
        .await?;
        row.map(|row| {
            Ok((
                serde_json::from_str(&row.text(0)?)?,
                row.opt_text(1)?.unwrap_or_default(),
                row.text(2)?,
            ))
        })
        .transpose()
    }

    /// Checks one stage; returns its type and, for registration tokens, the token.
    async fn check_stage(
        &self,
        auth: &AuthData,
        user: Option<&ruma::UserId>,
    ) -> Result<(String, Option<String>)> {
        match auth {
            AuthData::Dummy(_) => Ok((AuthType::Dummy.to_string(), None)),
            AuthData::RegistrationToken(t) => {
                if !self.registration_token_valid(&t.token).await? {
                    return Err(Error::Matrix(
                        ErrorKind::Unauthorized,
                        "Invalid registration token".into(),
                    ));
                }
                Ok((
                    AuthType::RegistrationToken.to_string(),
                    Some(t.token.clone()),
                ))
            }
            AuthData::Password(p) => {
                let user =
                    user.ok_or_else(|| Error::forbidden("No user to check a password for"))?;
                let UserIdentifier::Matrix(id) = &p.identifier else {
                    return Err(Error::Matrix(
                        ErrorKind::Unauthorized,
                        "Unsupported identifier".into(),
                    ));
                };
                let named = self.parse_user_localpart_or_id(&id.user)?;
                if named != user || !self.check_password(user, &p.password).await? {
                    return Err(Error::forbidden("Invalid password"));
                }
                Ok((AuthType::Password.to_string(), None))
            }
            _ => Err(Error::Matrix(
                ErrorKind::Unrecognized,
                "Unsupported authentication type".into(),
            )),
        }
    }

    pub(crate) async fn check_password(&self, user: &ruma::UserId, pw: &str) -> Result<bool> {
        let row = query_opt(
            self.db.as_ref(),
            "SELECT password_hash FROM users WHERE user_id = $1 AND deactivated = 0",
            vec![Value::from(user.as_str())],
        )
        .await?;
        Ok(match row.map(|r| r.opt_text(0)).transpose()?.flatten() {
            Some(hash) => self.verify_password(pw, &hash).await?,
            None => false,
        })
    }
}

/// Whether `stage`, after `done`, follows the order of some flow (spec: "the flow's stages
/// must be completed in order"). A stage already done may be repeated.
fn extends_a_flow(flows: &[Vec<AuthType>], done: &[String], stage: &str) -> bool {
    flows.iter().any(|flow| {
        let names: Vec<&str> = flow.iter().map(AuthType::as_str).collect();
        names.starts_with(&done.iter().map(String::as_str).collect::<Vec<_>>())
            && (done.iter().any(|d| d == stage) || names.get(done.len()) == Some(&stage))
    })
}
