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
    /// Locked by an admin: the session may only log out (`moderation.rs`).
    pub locked: bool,
    /// A guest account's (`guests.rs`).
    pub is_guest: bool,
}

/// Access tokens resolved recently: every request needs its session, and reading it from
/// the database was one query per request. An entry goes when its token is deleted
/// (logout, device deletion, refresh, a reused device ID); an entry is only added if no
/// token was deleted while its row was read (the `generation`), so a token read just
/// before its deletion is never kept.
pub(crate) struct TokenCache {
    sessions: crate::cache::BoundedCache<String, (Session, Option<i64>)>,
    generation: std::sync::Mutex<u64>,
}

/// Sessions kept in memory.
const CACHED_SESSIONS: usize = 50_000;

impl Default for TokenCache {
    fn default() -> Self {
        Self {
            sessions: crate::cache::BoundedCache::new(CACHED_SESSIONS),
            generation: std::sync::Mutex::new(0),
        }
    }
}

impl TokenCache {
    fn generation(&self) -> u64 {
        *self.generation.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn put(&self, hash: String, entry: (Session, Option<i64>), read_at: u64) {
        let generation = self.generation.lock().unwrap_or_else(|e| e.into_inner());
        if *generation == read_at {
            self.sessions.put(hash, entry);
        }
    }

    /// Called after tokens of `user` were deleted: those of `devices` (all when `None`).
    pub(crate) fn forget(&self, user: &ruma::UserId, devices: Option<&[String]>) {
        let mut generation = self.generation.lock().unwrap_or_else(|e| e.into_inner());
        self.sessions.retain(|_, (s, _)| {
            s.user_id != user
                || devices.is_some_and(|d| !d.iter().any(|d| d == s.device_id.as_str()))
        });
        *generation += 1;
    }
}

impl Homeserver {
    /// Resolves an access token; an expired one gets `soft_logout` (spec: "Soft logout").
    pub async fn authenticate(&self, token: &str) -> Result<Session> {
        let hash = tokens::hash(token);
        if let Some((session, expires)) = self.token_cache.sessions.get(&hash) {
            if expires.is_some_and(|e| e <= self.now()) {
                return Err(unknown_token(true));
            }
            return Ok(session);
        }
        let read_at = self.token_cache.generation();
        let row = query_opt(
            self.db.as_ref(),
            "SELECT t.user_id, t.device_id, t.expires_at, u.is_admin, u.deactivated, u.locked, u.is_guest
             FROM access_tokens t JOIN users u ON u.user_id = t.user_id WHERE t.token_hash = $1",
            vec![Value::from(hash.as_str())],
        )
        .await?;
        let row = row.ok_or_else(|| unknown_token(false))?;
        if row.int(4)? != 0 {
            return Err(unknown_token(false));
        }
        let expires = row.opt_int(2)?;
        if expires.is_some_and(|e| e <= self.now()) {
            return Err(unknown_token(true));
        }
        let session = Session {
            user_id: OwnedUserId::try_from(row.text(0)?).map_err(Error::internal)?,
            device_id: row.text(1)?.into(),
            is_admin: row.int(3)? != 0,
            locked: row.int(5)? != 0,
            is_guest: row.int(6)? != 0,
        };
        self.token_cache
            .put(hash, (session.clone(), expires), read_at);
        Ok(session)
    }
}

fn unknown_token(soft_logout: bool) -> Error {
    Error::Matrix(
        ErrorKind::UnknownToken({
            let mut data = ruma::api::error::UnknownTokenErrorData::new();
            data.soft_logout = soft_logout;
            data
        }),
        "Unknown or expired access token".into(),
    )
}
