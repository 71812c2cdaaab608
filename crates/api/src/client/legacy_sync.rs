//! The deprecated sync endpoints (spec: `GET /initialSync`, `GET /events`,
//! `GET /rooms/{roomId}/initialSync`); the work is in `core/src/sync/legacy.rs`.

use axum::{extract::State, routing::get, Json};
use serde::Deserialize;
use serde_json::Value;
use tessera_core::Error;

use super::Auth;
use crate::{
    extract::{Path, Query},
    ApiError, AppState, Routes,
};

/// Messages per room when the client names no `limit`, and the most it may ask for.
const DEFAULT_LIMIT: u32 = 10;
const MAX_LIMIT: u32 = 100;

pub fn routes(mut r: Routes) -> Routes {
    for v in ["v3", "r0"] {
        let p = |s: &str| format!("/_matrix/client/{v}{s}");
        r = r
            .route(&p("/initialSync"), get(initial_sync))
            .route(&p("/events"), get(events))
            .route(&p("/rooms/{room_id}/initialSync"), get(room_initial_sync));
    }
    r
}

fn limit(given: Option<&str>) -> Result<u32, ApiError> {
    match given {
        None => Ok(DEFAULT_LIMIT),
        Some(l) => l
            .parse::<u32>()
            .map(|l| l.min(MAX_LIMIT))
            .map_err(|_| ApiError(Error::invalid_param("Invalid limit"))),
    }
}

fn flag(given: Option<&str>) -> Result<bool, ApiError> {
    match given {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(ApiError(Error::invalid_param("Expected true or false"))),
    }
}

#[derive(Deserialize)]
struct InitialSyncQuery {
    limit: Option<String>,
    archived: Option<String>,
}

async fn initial_sync(
    State(s): State<AppState>,
    Auth(a): Auth,
    Query(q): Query<InitialSyncQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = limit(q.limit.as_deref())?;
    let archived = flag(q.archived.as_deref())?;
    Ok(Json(
        s.hs.legacy_initial_sync(&a.user_id, &a.device_id, limit, archived)
            .await?,
    ))
}

#[derive(Deserialize)]
struct EventsQuery {
    from: Option<String>,
    timeout: Option<String>,
    room_id: Option<String>,
}

async fn events(
    State(s): State<AppState>,
    Auth(a): Auth,
    Query(q): Query<EventsQuery>,
) -> Result<Json<Value>, ApiError> {
    let timeout = match q.timeout.as_deref() {
        None => 0,
        Some(t) => t
            .parse::<u64>()
            .map_err(|_| Error::invalid_param("Invalid timeout"))?,
    };
    let room = q
        .room_id
        .as_deref()
        .map(ruma::RoomId::parse)
        .transpose()
        .map_err(|_| Error::invalid_param("Invalid room ID"))?;
    Ok(Json(
        s.hs.legacy_events(
            &a.user_id,
            &a.device_id,
            q.from.as_deref(),
            timeout,
            room.as_deref(),
        )
        .await?,
    ))
}

#[derive(Deserialize)]
struct RoomInitialSyncQuery {
    limit: Option<String>,
}

async fn room_initial_sync(
    State(s): State<AppState>,
    Auth(a): Auth,
    Path(room): Path<String>,
    Query(q): Query<RoomInitialSyncQuery>,
) -> Result<Json<Value>, ApiError> {
    let room = ruma::RoomId::parse(&room).map_err(|_| Error::invalid_param("Invalid room ID"))?;
    if !s.hs.room_exists(&room).await? {
        return Err(ApiError(Error::not_found("Unknown room")));
    }
    let limit = limit(q.limit.as_deref())?;
    Ok(Json(
        s.hs.legacy_room_initial_sync(&a.user_id, &room, limit)
            .await?,
    ))
}
