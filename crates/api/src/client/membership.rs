//! Membership endpoints (spec: "Room membership").

use axum::{extract::State, routing::post, Json};
use ruma::{RoomOrAliasId, UserId};
use serde_json::{json, Map, Value};
use tessera_core::Error;

use super::{rooms::room_id, Auth};
use crate::{
    extract::{Body, Path},
    rate_limit::Class,
    ApiError, AppState, Routes,
};

pub fn routes(r: Routes) -> Routes {
    let mut r = r;
    for v in ["v3", "r0"] {
        let p = |s: &str| format!("/_matrix/client/{v}{s}");
        r = r
            .limited(&p("/join/{target}"), post(join), Class::Joins)
            .limited(&p("/knock/{target}"), post(knock), Class::Joins)
            .limited(&p("/rooms/{room_id}/join"), post(join), Class::Joins)
            .limited(&p("/rooms/{room_id}/invite"), post(invite), Class::Invites)
            .limited(&p("/rooms/{room_id}/leave"), post(leave), Class::Messages)
            .limited(&p("/rooms/{room_id}/kick"), post(kick), Class::Messages)
            .limited(&p("/rooms/{room_id}/ban"), post(ban), Class::Messages)
            .limited(&p("/rooms/{room_id}/unban"), post(unban), Class::Messages)
            .route(&p("/rooms/{room_id}/forget"), post(forget));
    }
    r
}

fn reason(body: &Map<String, Value>) -> Option<String> {
    body.get("reason")
        .and_then(|r| r.as_str())
        .map(str::to_owned)
}

fn target(body: &Map<String, Value>) -> Result<ruma::OwnedUserId, ApiError> {
    let id = body
        .get("user_id")
        .and_then(|u| u.as_str())
        .ok_or_else(|| Error::bad_json("user_id required"))?;
    UserId::parse(id).map_err(|_| ApiError(Error::invalid_param("Invalid user ID")))
}

fn room_or_alias(target: &str) -> Result<&RoomOrAliasId, ApiError> {
    <&RoomOrAliasId>::try_from(target)
        .map_err(|_| ApiError(Error::invalid_param("Invalid room ID or alias")))
}

async fn join(
    State(s): State<AppState>,
    Auth(a): Auth,
    Path(target): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let target = room_or_alias(&target)?;
    let body = body.object_or_empty()?;
    let room = s.hs.join_room(&a.user_id, target, reason(&body)).await?;
    Ok(Json(json!({ "room_id": room })))
}

async fn knock(
    State(s): State<AppState>,
    Auth(a): Auth,
    Path(target): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let target = room_or_alias(&target)?;
    let body = body.object_or_empty()?;
    let room = s.hs.knock(&a.user_id, target, reason(&body)).await?;
    Ok(Json(json!({ "room_id": room })))
}

async fn leave(
    State(s): State<AppState>,
    Auth(a): Auth,
    Path(room): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let body = body.object_or_empty()?;
    s.hs.leave_room(&a.user_id, &room_id(&room)?, reason(&body))
        .await?;
    Ok(Json(json!({})))
}

async fn forget(
    State(s): State<AppState>,
    Auth(a): Auth,
    Path(room): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    body.object_or_empty()?;
    s.hs.forget(&a.user_id, &room_id(&room)?).await?;
    Ok(Json(json!({})))
}

async fn invite(
    State(s): State<AppState>,
    Auth(a): Auth,
    Path(room): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let body = body.object()?;
    s.hs.invite(&a.user_id, &room_id(&room)?, &target(&body)?, reason(&body))
        .await?;
    Ok(Json(json!({})))
}

async fn kick(
    State(s): State<AppState>,
    Auth(a): Auth,
    Path(room): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let body = body.object()?;
    s.hs.kick(&a.user_id, &room_id(&room)?, &target(&body)?, reason(&body))
        .await?;
    Ok(Json(json!({})))
}

async fn ban(
    State(s): State<AppState>,
    Auth(a): Auth,
    Path(room): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let body = body.object()?;
    s.hs.ban(&a.user_id, &room_id(&room)?, &target(&body)?, reason(&body))
        .await?;
    Ok(Json(json!({})))
}

async fn unban(
    State(s): State<AppState>,
    Auth(a): Auth,
    Path(room): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let body = body.object()?;
    s.hs.unban(&a.user_id, &room_id(&room)?, &target(&body)?, reason(&body))
        .await?;
    Ok(Json(json!({})))
}
