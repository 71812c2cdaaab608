//! Account locking and suspension (spec: client-server "Account moderation",
//! `/admin/lock/{userId}` and `/admin/suspend/{userId}`, v1.18). A locked account can only
//! log out: every other request answers 401 `M_USER_LOCKED` (in `api/authenticate.rs`,
//! from [`super::Session::locked`]). A suspended account can read, manage its devices and
//! keys, send receipts and typing, leave rooms and redact its own events; it may not join,
//! knock, invite, send events, change its profile, create or upgrade rooms, set aliases or
//! directory entries, upload media or redact others' events (spec's recommended list, and
//! what else others would see).

use std::collections::HashSet;

use ruma::{api::error::ErrorKind, OwnedUserId, UserId};

use crate::{
    ports::{Database, Value},
    storage::query_opt,
    Error, Homeserver, Result,
};

/// Which of the two an admin sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restriction {
    Lock,
    Suspension,
}

impl Restriction {
    fn column(self) -> &'static str {
        match self {
            Restriction::Lock => "locked",
            Restriction::Suspension => "suspended",
        }
    }
}

/// Suspended accounts read at start-up at most (admins suspend a handful).
const MAX_SUSPENDED: i64 = 100_000;

/// The suspended accounts, checked by every write a user makes, so kept in memory; this
/// node's copy moves with every change made through it. `changing` is held across a
/// change's database write and its memory update, so the two never disagree.
#[derive(Default)]
pub(crate) struct Suspensions {
    set: std::sync::RwLock<HashSet<OwnedUserId>>,
    changing: async_lock::Mutex<()>,
}

impl Suspensions {
    pub(crate) async fn load(db: &dyn Database) -> Result<Self> {
        let rows = db
            .query(
                "SELECT user_id FROM users WHERE suspended <> 0 LIMIT $1",
                vec![Value::from(MAX_SUSPENDED)],
            )
            .await?;
        if rows.len() as i64 >= MAX_SUSPENDED {
            tracing::warn!(
                "more than {MAX_SUSPENDED} suspended accounts: only that many are enforced"
            );
        }
        let set = rows
            .iter()
            .filter_map(|r| r.text(0).ok())
            .filter_map(|u| OwnedUserId::try_from(u).ok())
            .collect();
        Ok(Self {
            set: std::sync::RwLock::new(set),
            changing: async_lock::Mutex::new(()),
        })
    }

    fn contains(&self, user: &UserId) -> bool {
        self.set
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(user)
    }

    fn set(&self, user: &UserId, on: bool) {
        let mut set = self.set.write().unwrap_or_else(|e| e.into_inner());
        if on {
            set.insert(user.to_owned());
        } else {
            set.remove(user);
        }
    }
}

/// The spec's error for what a suspended account may not do.
pub fn suspended() -> Error {
    Error::Matrix(
        ErrorKind::UserSuspended,
        "You cannot perform this action while suspended.".into(),
    )
}

/// What a locked account is told (401 `M_USER_LOCKED`, with `soft_logout`).
pub const LOCKED_MESSAGE: &str = "This account has been locked";

fn locked() -> Error {
    Error::Matrix(ErrorKind::UserLocked, LOCKED_MESSAGE.into())
}

impl Homeserver {
    /// 403 `M_USER_SUSPENDED` for a suspended user.
    pub fn ensure_not_suspended(&self, user: &UserId) -> Result<()> {
        if self.suspensions.contains(user) {
            return Err(suspended());
        }
        Ok(())
    }

    /// Whether `user` is suspended.
    pub fn is_suspended(&self, user: &UserId) -> bool {
        self.suspensions.contains(user)
    }

    /// 401 `M_USER_LOCKED` for a locked user: they may not get a new token.
    pub(crate) async fn ensure_not_locked(&self, user: &UserId) -> Result<()> {
        let row = query_opt(
            self.db.as_ref(),
            "SELECT locked FROM users WHERE user_id = $1",
            vec![Value::from(user.as_str())],
        )
        .await?;
        match row {
            Some(r) if r.int(0)? != 0 => Err(locked()),
            _ => Ok(()),
        }
    }

    /// The checks both endpoints make, in the spec's order: the requester is an admin
    /// (before any look-up, so accounts cannot be enumerated), the target is local (400
    /// `M_INVALID_PARAM`), exists and is not deactivated (404), and is not another admin.
    async fn moderation_target(
        &self,
        requester: &UserId,
        requester_is_admin: bool,
        target: &UserId,
        which: Restriction,
    ) -> Result<bool> {
        if !requester_is_admin {
            return Err(Error::forbidden(
                "Requesting user is not a server administrator",
            ));
        }
        if target.server_name() != self.server_name() {
            return Err(Error::invalid_param(
                "User does not belong to the local server",
            ));
        }
        let row = query_opt(
            self.db.as_ref(),
            &format!(
                "SELECT is_admin, deactivated, {} FROM users WHERE user_id = $1",
                which.column()
            ),
            vec![Value::from(target.as_str())],
        )
        .await?;
        let Some(row) = row.filter(|r| r.int(1).is_ok_and(|d| d == 0)) else {
            return Err(Error::not_found("User not found"));
        };
        if target != requester && row.int(0)? != 0 {
            return Err(Error::forbidden(
                "Server administrators cannot be locked or suspended",
            ));
        }
        Ok(row.int(2)? != 0)
    }

    /// `GET /admin/lock/{userId}` and `GET /admin/suspend/{userId}`.
    pub async fn account_restricted(
        &self,
        requester: &UserId,
        requester_is_admin: bool,
        target: &UserId,
        which: Restriction,
    ) -> Result<bool> {
        self.moderation_target(requester, requester_is_admin, target, which)
            .await
    }

    /// `PUT /admin/lock/{userId}` and `PUT /admin/suspend/{userId}`: stored before the
    /// answer; the target's sessions are read again, so a lock takes effect on their next
    /// request. An admin cannot restrict themselves.
    pub async fn set_account_restricted(
        &self,
        requester: &UserId,
        requester_is_admin: bool,
        target: &UserId,
        which: Restriction,
        on: bool,
    ) -> Result<bool> {
        self.moderation_target(requester, requester_is_admin, target, which)
            .await?;
        if target == requester {
            return Err(Error::forbidden("You cannot lock or suspend yourself"));
        }
        let _changing = self.suspensions.changing.lock().await;
        self.db
            .execute(
                &format!(
                    "UPDATE users SET {} = $2 WHERE user_id = $1",
                    which.column()
                ),
                vec![Value::from(target.as_str()), Value::from(i64::from(on))],
            )
            .await?;
        match which {
            Restriction::Lock => self.token_cache.forget(target, None),
            Restriction::Suspension => self.suspensions.set(target, on),
        }
        Ok(on)
    }
}
