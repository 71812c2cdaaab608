//! Membership endpoints (spec: "Room membership").

use axum::{
    extract::{Path, State},
    routing::{get, post},
    Json, Router,
};
use ruma::{RoomOrAliasId, UserId};
use serde_json::{json, Value};
use tessera_core::Error;

use super::{account_data::json_body, rooms::room_id, Auth};
use crate::{ApiError, AppState};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let mut r = r;
    for v in ["v3", "r0"] {
        let p = |s: &str| format!("/_matrix/client/{v}{s}");
        r = r
            .route(&p("/join/{target}"), post(join))
            .route(&p("/knock/{target}"), post(knock))
            .route(&p("/rooms/{room_id}/join"), post(join))
            .route(&p("/rooms/{room_id}/{action}"), post(action))
            .route(
                &p("/rooms/{room_id}/joined_members_count"),
                get(|| async { crate::error::unrecognized().await }),
            );
    }
    r
}

fn body_json(body: &[u8]) -> Result<Value, ApiError> {
    if body.is_empty() {
        Ok(json!({}))
    } else {
        json_body(body)
    }
}

fn reason(body: &Value) -> Option<String> {
    body.get("reason")
        .and_then(|r| r.as_str())
        .map(str::to_owned)
}

async fn join(
    State(s): State<AppState>,
    Auth(a): Auth,
    Path(target): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let target = <&RoomOrAliasId>::try_from(target.as_str())
        .map_err(|_| Error::invalid_param("Invalid room ID or alias"))?;
    let body = body_json(&body)?;
    let room = s.hs.join_room(&a.user_id, target, reason(&body)).await?;
    Ok(Json(json!({ "room_id": room })))
}

async fn knock(
    State(s): State<AppState>,
    Auth(a): Auth,
    Path(target): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let target = <&RoomOrAliasId>::try_from(target.as_str())
        .map_err(|_| Error::invalid_param("Invalid room ID or alias"))?;
    let body = body_json(&body)?;
    let room = s.hs.knock(&a.user_id, target, reason(&body)).await?;
    Ok(Json(json!({ "room_id": room })))
}

async fn action(
    State(s): State<AppState>,
    Auth(a): Auth,
    Path((room, action)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let room = room_id(&room)?;
    let body = body_json(&body)?;
    let target = || -> Result<ruma::OwnedUserId, ApiError> {
        let id = body
            .get("user_id")
            .and_then(|u| u.as_str())
            .ok_or_else(|| Error::bad_json("user_id required"))?;
        UserId::parse(id).map_err(|_| ApiError(Error::invalid_param("Invalid user ID")))
    };
    let hs = &s.hs;
    match action.as_str() {
        "leave" => hs.leave_room(&a.user_id, &room, reason(&body)).await?,
        "forget" => hs.forget(&a.user_id, &room).await?,
        "invite" => {
            hs.invite(&a.user_id, &room, &target()?, reason(&body))
                .await?
        }
        "kick" => {
            hs.kick(&a.user_id, &room, &target()?, reason(&body))
                .await?
        }
        "ban" => hs.ban(&a.user_id, &room, &target()?, reason(&body)).await?,
        "unban" => {
            hs.unban(&a.user_id, &room, &target()?, reason(&body))
                .await?
        }
        _ => {
            return Err(ApiError(Error::Matrix(
                ruma::api::error::ErrorKind::Unrecognized,
                "Unrecognized request".into(),
            )))
        }
    }
    Ok(Json(json!({})))
}
