//! Server-side key backups (spec: "Server-side key backups").
//!
//! A user's backup versions are numbered 1, 2, … and never reused; the current version is
//! the highest one not deleted. Keys are written only to the current version. Every write
//! to a version's keys runs in one batch that starts with a guarded update of the version
//! row, so it fails (and is answered 403/404) if the version was deleted or replaced in
//! the meantime, and on PostgreSQL that row lock also orders concurrent writers. Whether a
//! stored key is replaced is decided inside the `INSERT … ON CONFLICT DO UPDATE … WHERE`,
//! so two uploads of the same session always end with the better key.

use std::collections::BTreeMap;

use ruma::{
    api::error::{ErrorKind, WrongRoomKeysVersionErrorData},
    OwnedRoomId, RoomId, UserId,
};
use serde_json::{json, Value as Json};

use crate::{
    accounts::tokens::random_string,
    ports::{DbError, Statement, Value},
    storage::query_opt,
    Error, Homeserver, Result,
};

/// Most sessions one upload may carry (clients upload in batches of a few hundred).
pub const MAX_SESSIONS_PER_UPLOAD: usize = 1000;
/// Most rooms one upload may name.
pub const MAX_ROOMS_PER_UPLOAD: usize = 1000;
/// Largest `auth_data`, serialized.
pub const MAX_AUTH_DATA_BYTES: usize = 64 * 1024;
/// Largest `session_data` of one key, serialized (a megolm key is well under 1 KiB).
pub const MAX_SESSION_DATA_BYTES: usize = 16 * 1024;
/// Longest algorithm name and session ID.
pub const MAX_NAME_BYTES: usize = 255;
/// Attempts to allocate a version number when several creations race.
const CREATE_ATTEMPTS: usize = 8;
/// Attempts at an upload whose version guard failed because the version changed between
/// our check and our write.
const UPLOAD_ATTEMPTS: usize = 3;

fn unknown_version() -> Error {
    Error::not_found("Unknown backup version")
}

fn no_current_version() -> Error {
    Error::not_found("No current backup version")
}

fn wrong_version(current: i64) -> Error {
    Error::Matrix(
        ErrorKind::WrongRoomKeysVersion(WrongRoomKeysVersionErrorData::new(current.to_string())),
        "Wrong backup version".into(),
    )
}

/// Versions are decimal numbers we handed out; anything else names no backup.
fn parse_version(v: &str) -> Option<i64> {
    let n: i64 = v.parse().ok()?;
    (n > 0 && n.to_string() == v).then_some(n)
}

fn check_algorithm(algorithm: &str) -> Result<()> {
    if algorithm.is_empty() || algorithm.len() > MAX_NAME_BYTES {
        return Err(Error::invalid_param("Invalid backup algorithm"));
    }
    Ok(())
}

fn auth_data_text(auth_data: &Json) -> Result<String> {
    if !auth_data.is_object() {
        return Err(Error::bad_json("auth_data must be an object"));
    }
    let text = serde_json::to_string(auth_data)?;
    if text.len() > MAX_AUTH_DATA_BYTES {
        return Err(Error::Matrix(
            ErrorKind::TooLarge,
            "auth_data too large".into(),
        ));
    }
    Ok(text)
}

/// One backed-up session key (`KeyBackupData`).
#[derive(Clone, Debug, PartialEq)]
pub struct BackupKey {
    pub first_message_index: i64,
    pub forwarded_count: i64,
    pub is_verified: bool,
    /// Algorithm-dependent and encrypted; stored as given.
    pub session_data: Json,
}

impl BackupKey {
    pub fn from_json(v: &Json) -> Result<Self> {
        let count = |name: &str| {
            v.get(name)
                .and_then(Json::as_i64)
                .filter(|n| *n >= 0)
                .ok_or_else(|| Error::bad_json(format!("{name} must be a non-negative integer")))
        };
        let is_verified = v
            .get("is_verified")
            .and_then(Json::as_bool)
            .ok_or_else(|| Error::bad_json("is_verified must be a boolean"))?;
        let session_data = v
            .get("session_data")
            .filter(|d| d.is_object())
            .ok_or_else(|| Error::bad_json("session_data must be an object"))?
            .clone();
        Ok(Self {
            first_message_index: count("first_message_index")?,
            forwarded_count: count("forwarded_count")?,
            is_verified,
            session_data,
        })
    }

    pub fn to_json(&self) -> Json {
        json!({
            "first_message_index": self.first_message_index,
            "forwarded_count": self.forwarded_count,
            "is_verified": self.is_verified,
            "session_data": self.session_data,
        })
    }

    /// The spec's rule for a session already stored: the new key replaces the old one only
    /// if it is verified and the old is not; or, verification equal, it has a lower
    /// `first_message_index`; or, both equal, a lower `forwarded_count`. The SQL in
    /// [`Homeserver::put_backup_keys`] applies the same rule.
    pub fn replaces(&self, old: &BackupKey) -> bool {
        if self.is_verified != old.is_verified {
            return self.is_verified;
        }
        if self.first_message_index != old.first_message_index {
            return self.first_message_index < old.first_message_index;
        }
        self.forwarded_count < old.forwarded_count
    }
}

/// A backup version as `GET /room_keys/version` describes it.
#[derive(Clone, Debug)]
pub struct BackupVersion {
    pub version: String,
    pub algorithm: String,
    pub auth_data: Json,
    pub count: i64,
    pub etag: String,
}

impl BackupVersion {
    pub fn to_json(&self) -> Json {
        json!({
            "algorithm": self.algorithm,
            "auth_data": self.auth_data,
            "count": self.count,
            "etag": self.etag,
            "version": self.version,
        })
    }
}

/// The answer to a change of keys: the version's new etag and key count.
#[derive(Clone, Debug, PartialEq)]
pub struct KeysUpdate {
    pub etag: String,
    pub count: i64,
}

impl KeysUpdate {
    pub fn to_json(&self) -> Json {
        json!({ "etag": self.etag, "count": self.count })
    }
}

/// Which keys of a version a request is about.
#[derive(Clone, Copy, Debug)]
pub enum KeyScope<'a> {
    All,
    Room(&'a RoomId),
    Session(&'a RoomId, &'a str),
}

impl KeyScope<'_> {
    /// (room, session) filters; empty means any, so an empty session ID names nothing.
    fn filters(&self) -> Result<(String, String)> {
        match self {
            KeyScope::All => Ok((String::new(), String::new())),
            KeyScope::Room(r) => Ok((r.as_str().to_owned(), String::new())),
            KeyScope::Session(_, "") => Err(Error::not_found("Key not found")),
            KeyScope::Session(r, s) => Ok((r.as_str().to_owned(), (*s).to_owned())),
        }
    }
}

/// Keys by room, then session.
pub type BackupKeys = BTreeMap<String, BTreeMap<String, BackupKey>>;

/// Sets the version's etag forward if a statement of this batch wrote a key with `$3`.
const BUMP_ETAG: &str = "UPDATE backup_versions SET etag = etag + 1 WHERE user_id = $1 AND version = $2
     AND EXISTS (SELECT 1 FROM backup_keys WHERE user_id = $1 AND version = $2 AND write_token = $3)";

impl Homeserver {
    /// Creates a backup version, which becomes the current one; returns its version.
    pub async fn create_backup_version(
        &self,
        user: &UserId,
        algorithm: &str,
        auth_data: &Json,
    ) -> Result<String> {
        check_algorithm(algorithm)?;
        let auth_data = auth_data_text(auth_data)?;
        for _ in 0..CREATE_ATTEMPTS {
            let last = query_opt(
                self.db.as_ref(),
                "SELECT MAX(version) FROM backup_versions WHERE user_id = $1",
                vec![user.as_str().into()],
            )
            .await?
            .map(|r| r.opt_int(0))
            .transpose()?
            .flatten()
            .unwrap_or(0);
            let version = last + 1;
            // A concurrent creation that took the same number makes this fail; try the next.
            match self
                .db
                .execute(
                    "INSERT INTO backup_versions (user_id, version, algorithm, auth_data, etag, deleted)
                     VALUES ($1, $2, $3, $4, 0, 0)",
                    vec![
                        user.as_str().into(),
                        Value::Int(version),
                        algorithm.into(),
                        auth_data.as_str().into(),
                    ],
                )
                .await
            {
                Ok(_) => return Ok(version.to_string()),
                Err(DbError::UniqueViolation) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::internal("could not allocate a backup version"))
    }

    /// The current version, if any.
    async fn current_backup_version(&self, user: &UserId) -> Result<Option<i64>> {
        Ok(query_opt(
            self.db.as_ref(),
            "SELECT MAX(version) FROM backup_versions WHERE user_id = $1 AND deleted = 0",
            vec![user.as_str().into()],
        )
        .await?
        .map(|r| r.opt_int(0))
        .transpose()?
        .flatten())
    }

    /// The named version, or the current one when `version` is `None`; 404 if it does not
    /// exist or was deleted.
    pub async fn backup_version(
        &self,
        user: &UserId,
        version: Option<&str>,
    ) -> Result<BackupVersion> {
        let row = match version {
            None => query_opt(
                self.db.as_ref(),
                "SELECT v.version, v.algorithm, v.auth_data, v.etag,
                        (SELECT COUNT(*) FROM backup_keys k WHERE k.user_id = v.user_id AND k.version = v.version)
                 FROM backup_versions v WHERE v.user_id = $1 AND v.deleted = 0
                 ORDER BY v.version DESC LIMIT 1",
                vec![user.as_str().into()],
            )
            .await?
            .ok_or_else(no_current_version)?,
            Some(v) => {
                let v = parse_version(v).ok_or_else(unknown_version)?;
                query_opt(
                    self.db.as_ref(),
                    "SELECT v.version, v.algorithm, v.auth_data, v.etag,
                            (SELECT COUNT(*) FROM backup_keys k WHERE k.user_id = v.user_id AND k.version = v.version)
                     FROM backup_versions v WHERE v.user_id = $1 AND v.version = $2 AND v.deleted = 0",
                    vec![user.as_str().into(), Value::Int(v)],
                )
                .await?
                .ok_or_else(unknown_version)?
            }
        };
        Ok(BackupVersion {
            version: row.int(0)?.to_string(),
            algorithm: row.text(1)?,
            auth_data: serde_json::from_str(&row.text(2)?)?,
            etag: row.int(3)?.to_string(),
            count: row.int(4)?,
        })
    }

    /// Replaces a version's `auth_data`; the algorithm cannot change, and a `version` in
    /// the body must name the same version as the path.
    pub async fn update_backup_version(
        &self,
        user: &UserId,
        version: &str,
        algorithm: &str,
        auth_data: &Json,
        body_version: Option<&str>,
    ) -> Result<()> {
        if body_version.is_some_and(|b| b != version) {
            return Err(Error::invalid_param(
                "Version in body does not match the path",
            ));
        }
        let auth_data = auth_data_text(auth_data)?;
        let current = self.backup_version(user, Some(version)).await?;
        if current.algorithm != algorithm {
            return Err(Error::invalid_param("Algorithm does not match"));
        }
        let v = parse_version(version).ok_or_else(unknown_version)?;
        match self
            .db
            .batch(vec![Statement::new(
                "UPDATE backup_versions SET auth_data = $3 WHERE user_id = $1 AND version = $2 AND deleted = 0",
                vec![user.as_str().into(), Value::Int(v), auth_data.into()],
            )
            .expecting_change()])
            .await
        {
            Ok(()) => Ok(()),
            Err(DbError::Conflict) => Err(unknown_version()),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes a version and all its keys; deleting it again succeeds.
    pub async fn delete_backup_version(&self, user: &UserId, version: &str) -> Result<()> {
        let v = parse_version(version).ok_or_else(unknown_version)?;
        let params = vec![user.as_str().into(), Value::Int(v)];
        match self
            .db
            .batch(vec![
                Statement::new(
                    "UPDATE backup_versions SET deleted = 1, auth_data = '{}' WHERE user_id = $1 AND version = $2",
                    params.clone(),
                )
                .expecting_change(),
                Statement::new(
                    "DELETE FROM backup_keys WHERE user_id = $1 AND version = $2",
                    params,
                ),
            ])
            .await
        {
            Ok(()) => Ok(()),
            Err(DbError::Conflict) => Err(unknown_version()),
            Err(e) => Err(e.into()),
        }
    }

    /// Stores keys in the current version, each unless the key already stored for its
    /// session is at least as good. 404 without a current version, 403
    /// `M_WRONG_ROOM_KEYS_VERSION` when `version` is not the current one.
    pub async fn put_backup_keys(
        &self,
        user: &UserId,
        version: &str,
        mut keys: Vec<(OwnedRoomId, String, BackupKey)>,
    ) -> Result<KeysUpdate> {
        if keys.len() > MAX_SESSIONS_PER_UPLOAD {
            return Err(Error::Matrix(
                ErrorKind::TooLarge,
                format!("At most {MAX_SESSIONS_PER_UPLOAD} sessions per request"),
            ));
        }
        for (_, session, key) in &keys {
            if session.is_empty() || session.len() > MAX_NAME_BYTES {
                return Err(Error::invalid_param("Invalid session ID"));
            }
            if serde_json::to_string(&key.session_data)?.len() > MAX_SESSION_DATA_BYTES {
                return Err(Error::Matrix(
                    ErrorKind::TooLarge,
                    "session_data too large".into(),
                ));
            }
        }
        // One order for every writer.
        keys.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        let requested = parse_version(version);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let current = self
                .current_backup_version(user)
                .await?
                .ok_or_else(no_current_version)?;
            let v = match requested {
                Some(v) if v == current => v,
                _ => return Err(wrong_version(current)),
            };
            let token = random_string(24);
            let mut batch = Vec::with_capacity(keys.len() + 2);
            // Still the current version, and locked until commit.
            batch.push(
                Statement::new(
                    "UPDATE backup_versions SET etag = etag WHERE user_id = $1 AND version = $2 AND deleted = 0
                     AND version = (SELECT MAX(version) FROM backup_versions WHERE user_id = $1 AND deleted = 0)",
                    vec![user.as_str().into(), Value::Int(v)],
                )
                .expecting_change(),
            );
            for (room, session, key) in &keys {
                batch.push(Statement::new(
                    "INSERT INTO backup_keys (user_id, version, room_id, session_id, first_message_index,
                         forwarded_count, is_verified, session_data, write_token)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                     ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET
                         first_message_index = excluded.first_message_index,
                         forwarded_count = excluded.forwarded_count,
                         is_verified = excluded.is_verified,
                         session_data = excluded.session_data,
                         write_token = excluded.write_token
                     WHERE excluded.is_verified > backup_keys.is_verified
                        OR (excluded.is_verified = backup_keys.is_verified
                            AND excluded.first_message_index < backup_keys.first_message_index)
                        OR (excluded.is_verified = backup_keys.is_verified
                            AND excluded.first_message_index = backup_keys.first_message_index
                            AND excluded.forwarded_count < backup_keys.forwarded_count)",
                    vec![
                        user.as_str().into(),
                        Value::Int(v),
                        room.as_str().into(),
                        session.as_str().into(),
                        Value::Int(key.first_message_index),
                        Value::Int(key.forwarded_count),
                        key.is_verified.into(),
                        serde_json::to_string(&key.session_data)?.into(),
                        token.as_str().into(),
                    ],
                ));
            }
            batch.push(Statement::new(
                BUMP_ETAG,
                vec![user.as_str().into(), Value::Int(v), token.into()],
            ));
            match self.db.batch(batch).await {
                Ok(()) => return self.keys_update(user, v).await,
                // The version was deleted or replaced after we looked: look again.
                Err(DbError::Conflict) if attempt < UPLOAD_ATTEMPTS => continue,
                Err(DbError::Conflict) => {
                    return Err(match self.current_backup_version(user).await? {
                        Some(c) => wrong_version(c),
                        None => no_current_version(),
                    })
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Keys of a version (which need not be the current one); 404 if it does not exist.
    pub async fn get_backup_keys(
        &self,
        user: &UserId,
        version: &str,
        scope: KeyScope<'_>,
    ) -> Result<BackupKeys> {
        let v = self.existing_version(user, version).await?;
        let (room, session) = scope.filters()?;
        let rows = self
            .db
            .query(
                "SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, session_data
                 FROM backup_keys WHERE user_id = $1 AND version = $2
                 AND (room_id = $3 OR $3 = '') AND (session_id = $4 OR $4 = '')
                 ORDER BY room_id, session_id",
                vec![user.as_str().into(), Value::Int(v), room.into(), session.into()],
            )
            .await?;
        let mut out = BackupKeys::new();
        for r in rows {
            out.entry(r.text(0)?).or_default().insert(
                r.text(1)?,
                BackupKey {
                    first_message_index: r.int(2)?,
                    forwarded_count: r.int(3)?,
                    is_verified: r.int(4)? != 0,
                    session_data: serde_json::from_str(&r.text(5)?)?,
                },
            );
        }
        Ok(out)
    }

    /// One session's key; 404 if the version or the key does not exist.
    pub async fn get_backup_key(
        &self,
        user: &UserId,
        version: &str,
        room: &RoomId,
        session: &str,
    ) -> Result<BackupKey> {
        self.get_backup_keys(user, version, KeyScope::Session(room, session))
            .await?
            .remove(room.as_str())
            .and_then(|mut s| s.remove(session))
            .ok_or_else(|| Error::not_found("Key not found"))
    }

    /// Deletes keys of a version (which need not be the current one); 404 if it does not
    /// exist.
    pub async fn delete_backup_keys(
        &self,
        user: &UserId,
        version: &str,
        scope: KeyScope<'_>,
    ) -> Result<KeysUpdate> {
        let v = parse_version(version).ok_or_else(unknown_version)?;
        let (room, session) = scope.filters()?;
        let token = random_string(24);
        let base = || vec![Value::from(user.as_str()), Value::Int(v)];
        let with_token = || {
            let mut p = base();
            p.push(token.as_str().into());
            p
        };
        let mut mark = with_token();
        mark.extend([room.into(), session.into()]);
        let batch = vec![
            Statement::new(
                "UPDATE backup_versions SET etag = etag WHERE user_id = $1 AND version = $2 AND deleted = 0",
                base(),
            )
            .expecting_change(),
            // Mark what goes, so the etag moves only if something does.
            Statement::new(
                "UPDATE backup_keys SET write_token = $3 WHERE user_id = $1 AND version = $2
                 AND (room_id = $4 OR $4 = '') AND (session_id = $5 OR $5 = '')",
                mark,
            ),
            Statement::new(BUMP_ETAG, with_token()),
            Statement::new(
                "DELETE FROM backup_keys WHERE user_id = $1 AND version = $2 AND write_token = $3",
                with_token(),
            ),
        ];
        match self.db.batch(batch).await {
            Ok(()) => self.keys_update(user, v).await,
            Err(DbError::Conflict) => Err(unknown_version()),
            Err(e) => Err(e.into()),
        }
    }

    /// The number of a version that exists and is not deleted.
    async fn existing_version(&self, user: &UserId, version: &str) -> Result<i64> {
        let v = parse_version(version).ok_or_else(unknown_version)?;
        query_opt(
            self.db.as_ref(),
            "SELECT version FROM backup_versions WHERE user_id = $1 AND version = $2 AND deleted = 0",
            vec![user.as_str().into(), Value::Int(v)],
        )
        .await?
        .ok_or_else(unknown_version)?;
        Ok(v)
    }

    async fn keys_update(&self, user: &UserId, v: i64) -> Result<KeysUpdate> {
        let row = query_opt(
            self.db.as_ref(),
            "SELECT v.etag, (SELECT COUNT(*) FROM backup_keys k WHERE k.user_id = v.user_id AND k.version = v.version)
             FROM backup_versions v WHERE v.user_id = $1 AND v.version = $2",
            vec![user.as_str().into(), Value::Int(v)],
        )
        .await?
        .ok_or_else(unknown_version)?;
        Ok(KeysUpdate {
            etag: row.int(0)?.to_string(),
            count: row.int(1)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(is_verified: bool, first_message_index: i64, forwarded_count: i64) -> BackupKey {
        BackupKey {
            first_message_index,
            forwarded_count,
            is_verified,
            session_data: json!({}),
        }
    }

    #[test]
    fn replacement_order() {
        // Verification first, even against a lower index.
        assert!(key(true, 5, 3).replaces(&key(false, 0, 0)));
        assert!(!key(false, 0, 0).replaces(&key(true, 5, 3)));
        // Then the lower first message index, even against fewer forwards.
        assert!(key(false, 1, 9).replaces(&key(false, 2, 0)));
        assert!(!key(false, 2, 0).replaces(&key(false, 1, 9)));
        // Then fewer forwards.
        assert!(key(true, 1, 0).replaces(&key(true, 1, 1)));
        assert!(!key(true, 1, 1).replaces(&key(true, 1, 0)));
        // An equal key keeps the stored one.
        assert!(!key(true, 1, 1).replaces(&key(true, 1, 1)));
    }

    #[test]
    fn versions_are_canonical_numbers() {
        assert_eq!(parse_version("1"), Some(1));
        assert_eq!(parse_version("42"), Some(42));
        for bad in [
            "",
            "0",
            "-1",
            "01",
            "+1",
            "1.0",
            "abc",
            "99999999999999999999",
        ] {
            assert_eq!(parse_version(bad), None, "{bad}");
        }
    }

    #[test]
    fn key_json_round_trip_and_validation() {
        let j = json!({ "first_message_index": 3, "forwarded_count": 1, "is_verified": true,
                        "session_data": { "ciphertext": "c", "ephemeral": "e", "mac": "m" } });
        let k = BackupKey::from_json(&j).unwrap();
        assert_eq!(k.to_json(), j);
        for bad in [
            json!({ "first_message_index": -1, "forwarded_count": 0, "is_verified": true, "session_data": {} }),
            json!({ "first_message_index": 0, "forwarded_count": 0, "is_verified": "yes", "session_data": {} }),
            json!({ "first_message_index": 0, "forwarded_count": 0, "is_verified": true, "session_data": "x" }),
            json!({ "forwarded_count": 0, "is_verified": true, "session_data": {} }),
        ] {
            assert!(BackupKey::from_json(&bad).is_err(), "{bad}");
        }
    }
}
