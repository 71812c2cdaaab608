//! `/presence/{userId}/status` (spec: "Presence").

use axum::{
    extract::{Path, State},
    routing::get,
    Json, Router,
};
use ruma::UserId;
use serde_json::{json, Value};
use tessera_core::Error;

use super::{account_data::json_body, Auth};
use crate::{ApiError, AppState};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let mut r = r;
    for v in ["v3", "r0"] {
        r = r.route(
            &format!("/_matrix/client/{v}/presence/{{user_id}}/status"),
            get(get_status).put(put_status),
        );
    }
    r
}

fn user(s: &str) -> Result<ruma::OwnedUserId, ApiError> {
    UserId::parse(s).map_err(|_| ApiError(Error::invalid_param("Invalid user ID")))
}

async fn get_status(
    State(s): State<AppState>,
    Auth(_): Auth,
    Path(u): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let u = user(&u)?;
    match s.hs.get_presence(&u).await? {
        Some(c) => Ok(Json(c)),
        None if s.hs.user_exists(&u).await? => Ok(Json(json!({ "presence": "offline" }))),
        None => Err(ApiError(Error::not_found("Unknown user"))),
    }
}

async fn put_status(
    State(s): State<AppState>,
    Auth(a): Auth,
    Path(u): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    if user(&u)? != a.user_id {
        return Err(ApiError(Error::forbidden(
            "You may only set your own presence",
        )));
    }
    let body = json_body(&body)?;
    let state = body["presence"]
        .as_str()
        .ok_or_else(|| Error::bad_json("`presence` is required"))?;
    s.hs.set_presence(
        &a.user_id,
        state,
        body.get("status_msg").and_then(|m| m.as_str()),
    )
    .await?;
    Ok(Json(json!({})))
}
