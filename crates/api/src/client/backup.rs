//! Server-side key backups (spec: "Server-side key backups").

use axum::{extract::State, Json};
use ruma::{
    api::{
        client::backup::{
            add_backup_keys, add_backup_keys_for_room, add_backup_keys_for_session,
            create_backup_version, delete_backup_keys, delete_backup_keys_for_room,
            delete_backup_keys_for_session, delete_backup_version, get_backup_info,
            get_backup_keys, get_backup_keys_for_room, get_backup_keys_for_session,
            get_latest_backup_info, update_backup_version, KeyBackupData,
        },
        error::ErrorKind,
    },
    serde::Raw,
    OwnedRoomId,
};
use serde_json::{json, Map, Value};
use tessera_core::{
    e2ee::backup::{BackupKey, BackupKeys, KeyScope, MAX_ROOMS_PER_UPLOAD},
    Error,
};

use crate::{ruma_route, ApiError, AppState, Routes, Ruma};

pub fn routes(r: Routes) -> Routes {
    let r = ruma_route!(r, create_backup_version::v3::Request, create_version);
    let r = ruma_route!(r, get_latest_backup_info::v3::Request, latest_version);
    let r = ruma_route!(r, get_backup_info::v3::Request, get_version);
    let r = ruma_route!(r, update_backup_version::v3::Request, update_version);
    let r = ruma_route!(r, delete_backup_version::v3::Request, delete_version);
    let r = ruma_route!(r, add_backup_keys::v3::Request, put_keys);
    let r = ruma_route!(r, add_backup_keys_for_room::v3::Request, put_room_keys);
    let r = ruma_route!(r, add_backup_keys_for_session::v3::Request, put_session_key);
    let r = ruma_route!(r, get_backup_keys::v3::Request, get_keys);
    let r = ruma_route!(r, get_backup_keys_for_room::v3::Request, get_room_keys);
    let r = ruma_route!(r, get_backup_keys_for_session::v3::Request, get_session_key);
    let r = ruma_route!(r, delete_backup_keys::v3::Request, delete_keys);
    let r = ruma_route!(
        r,
        delete_backup_keys_for_room::v3::Request,
        delete_room_keys
    );
    ruma_route!(
        r,
        delete_backup_keys_for_session::v3::Request,
        delete_session_key
    )
}

type Answer = Result<Json<Value>, ApiError>;

/// The whole request body (`algorithm`, `auth_data`, optional `version`) as JSON.
fn body_object(raw: &Raw<impl Sized>) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_str(raw.json().get()) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(ApiError(Error::bad_json("Body must be a JSON object"))),
    }
}

fn algorithm_and_auth_data(body: &Map<String, Value>) -> Result<(&str, &Value), ApiError> {
    let algorithm = body
        .get("algorithm")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError(Error::bad_json("algorithm must be a string")))?;
    let auth_data = body
        .get("auth_data")
        .ok_or_else(|| ApiError(Error::bad_json("auth_data is required")))?;
    Ok((algorithm, auth_data))
}

fn key(raw: &Raw<KeyBackupData>) -> Result<BackupKey, ApiError> {
    let v: Value = serde_json::from_str(raw.json().get())
        .map_err(|_| ApiError(Error::bad_json("Invalid key data")))?;
    Ok(BackupKey::from_json(&v)?)
}

fn sessions_json(sessions: &std::collections::BTreeMap<String, BackupKey>) -> Value {
    Value::Object(
        sessions
            .iter()
            .map(|(id, k)| (id.clone(), k.to_json()))
            .collect(),
    )
}

fn rooms_json(keys: &BackupKeys) -> Value {
    Value::Object(
        keys.iter()
            .map(|(room, sessions)| (room.clone(), json!({ "sessions": sessions_json(sessions) })))
            .collect(),
    )
}

async fn create_version(
    State(s): State<AppState>,
    req: Ruma<create_backup_version::v3::Request>,
) -> Answer {
    let user = &req.user()?.user_id;
    let body = body_object(&req.body.algorithm)?;
    let (algorithm, auth_data) = algorithm_and_auth_data(&body)?;
    let version =
        s.hs.create_backup_version(user, algorithm, auth_data)
            .await?;
    Ok(Json(json!({ "version": version })))
}

async fn latest_version(
    State(s): State<AppState>,
    req: Ruma<get_latest_backup_info::v3::Request>,
) -> Answer {
    let user = &req.user()?.user_id;
    Ok(Json(s.hs.backup_version(user, None).await?.to_json()))
}

async fn get_version(State(s): State<AppState>, req: Ruma<get_backup_info::v3::Request>) -> Answer {
    let user = &req.user()?.user_id;
    Ok(Json(
        s.hs.backup_version(user, Some(&req.body.version))
            .await?
            .to_json(),
    ))
}

async fn update_version(
    State(s): State<AppState>,
    req: Ruma<update_backup_version::v3::Request>,
) -> Answer {
    let user = &req.user()?.user_id;
    let body = body_object(&req.body.algorithm)?;
    let (algorithm, auth_data) = algorithm_and_auth_data(&body)?;
    let body_version = match body.get("version") {
        None => None,
        Some(Value::String(v)) => Some(v.as_str()),
        Some(_) => return Err(ApiError(Error::bad_json("version must be a string"))),
    };
    s.hs.update_backup_version(user, &req.body.version, algorithm, auth_data, body_version)
        .await?;
    Ok(Json(json!({})))
}

async fn delete_version(
    State(s): State<AppState>,
    req: Ruma<delete_backup_version::v3::Request>,
) -> Answer {
    let user = &req.user()?.user_id;
    s.hs.delete_backup_version(user, &req.body.version).await?;
    Ok(Json(json!({})))
}

async fn put_keys(State(s): State<AppState>, req: Ruma<add_backup_keys::v3::Request>) -> Answer {
    let user = &req.user()?.user_id;
    if req.body.rooms.len() > MAX_ROOMS_PER_UPLOAD {
        return Err(ApiError(Error::Matrix(
            ErrorKind::TooLarge,
            format!("At most {MAX_ROOMS_PER_UPLOAD} rooms per request"),
        )));
    }
    let mut keys = Vec::new();
    for (room, backup) in &req.body.rooms {
        for (session, data) in &backup.sessions {
            keys.push((room.clone(), session.clone(), key(data)?));
        }
    }
    Ok(Json(
        s.hs.put_backup_keys(user, &req.body.version, keys)
            .await?
            .to_json(),
    ))
}

async fn put_room_keys(
    State(s): State<AppState>,
    req: Ruma<add_backup_keys_for_room::v3::Request>,
) -> Answer {
    let user = &req.user()?.user_id;
    let room: &OwnedRoomId = &req.body.room_id;
    let keys = req
        .body
        .sessions
        .iter()
        .map(|(session, data)| Ok((room.clone(), session.clone(), key(data)?)))
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(Json(
        s.hs.put_backup_keys(user, &req.body.version, keys)
            .await?
            .to_json(),
    ))
}

async fn put_session_key(
    State(s): State<AppState>,
    req: Ruma<add_backup_keys_for_session::v3::Request>,
) -> Answer {
    let user = &req.user()?.user_id;
    let b = &req.body;
    let keys = vec![(
        b.room_id.clone(),
        b.session_id.clone(),
        key(&b.session_data)?,
    )];
    Ok(Json(
        s.hs.put_backup_keys(user, &b.version, keys)
            .await?
            .to_json(),
    ))
}

async fn get_keys(State(s): State<AppState>, req: Ruma<get_backup_keys::v3::Request>) -> Answer {
    let user = &req.user()?.user_id;
    let keys =
        s.hs.get_backup_keys(user, &req.body.version, KeyScope::All)
            .await?;
    Ok(Json(json!({ "rooms": rooms_json(&keys) })))
}

async fn get_room_keys(
    State(s): State<AppState>,
    req: Ruma<get_backup_keys_for_room::v3::Request>,
) -> Answer {
    let user = &req.user()?.user_id;
    let b = &req.body;
    let keys =
        s.hs.get_backup_keys(user, &b.version, KeyScope::Room(&b.room_id))
            .await?;
    let sessions = keys
        .get(b.room_id.as_str())
        .map(sessions_json)
        .unwrap_or_else(|| json!({}));
    Ok(Json(json!({ "sessions": sessions })))
}

async fn get_session_key(
    State(s): State<AppState>,
    req: Ruma<get_backup_keys_for_session::v3::Request>,
) -> Answer {
    let user = &req.user()?.user_id;
    let b = &req.body;
    Ok(Json(
        s.hs.get_backup_key(user, &b.version, &b.room_id, &b.session_id)
            .await?
            .to_json(),
    ))
}

async fn delete_keys(
    State(s): State<AppState>,
    req: Ruma<delete_backup_keys::v3::Request>,
) -> Answer {
    let user = &req.user()?.user_id;
    Ok(Json(
        s.hs.delete_backup_keys(user, &req.body.version, KeyScope::All)
            .await?
            .to_json(),
    ))
}

async fn delete_room_keys(
    State(s): State<AppState>,
    req: Ruma<delete_backup_keys_for_room::v3::Request>,
) -> Answer {
    let user = &req.user()?.user_id;
    let b = &req.body;
    Ok(Json(
        s.hs.delete_backup_keys(user, &b.version, KeyScope::Room(&b.room_id))
            .await?
            .to_json(),
    ))
}

async fn delete_session_key(
    State(s): State<AppState>,
    req: Ruma<delete_backup_keys_for_session::v3::Request>,
) -> Answer {
    let user = &req.user()?.user_id;
    let b = &req.body;
    Ok(Json(
        s.hs.delete_backup_keys(
            user,
            &b.version,
            KeyScope::Session(&b.room_id, &b.session_id),
        )
        .await?
        .to_json(),
    ))
}
