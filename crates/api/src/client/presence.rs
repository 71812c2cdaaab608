//! `/presence/{userId}/status` (spec: "Presence").

use axum::{extract::State, routing::get, Json};
use ruma::UserId;
use serde_json::{json, Value};
use tessera_core::Error;

use super::Auth;
use crate::{
    extract::{Body, Path},
    rate_limit::Class,
    ApiError, AppState, Routes,
};

pub fn routes(r: Routes) -> Routes {
    let mut r = r;
    for v in ["v3", "r0"] {
        r = r.limited(
            &format!("/_matrix/client/{v}/presence/{{user_id}}/status"),
            get(get_status).put(put_status),
            Class::Ephemeral,
        );
    }
    r
}

fn user(s: &str) -> Result<ruma::OwnedUserId, ApiError> {
    UserId::parse(s).map_err(|_| ApiError(Error::invalid_param("Invalid user ID")))
}

async fn get_status(
    State(s): State<AppState>,
    Auth(a): Auth,
    Path(u): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let u = user(&u)?;
    if !s.hs.user_exists(&u).await? {
        return Err(ApiError(Error::not_found("Unknown user")));
    }
    match s.hs.presence_for(&a.user_id, &u).await? {
        Some(c) => Ok(Json(c)),
        None if s.hs.user_exists(&u).await? => Ok(Json(json!({ "presence": "offline" }))),
        None => Err(ApiError(Error::not_found("Unknown user"))),
    }
}

async fn put_status(
    State(s): State<AppState>,
    Auth(a): Auth,
    Path(u): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    if user(&u)? != a.user_id {
        return Err(ApiError(Error::forbidden(
            "You may only set your own presence",
        )));
    }
    let body = body.json()?;
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
