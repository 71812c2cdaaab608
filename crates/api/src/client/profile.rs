//! Profiles, including custom fields (spec: "Profiles", v1.16 "Custom profile fields").

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
        r = r
            .route(
                &format!("/_matrix/client/{v}/profile/{{user_id}}"),
                get(profile),
            )
            .limited(
                &format!("/_matrix/client/{v}/profile/{{user_id}}/{{key}}"),
                get(get_field).put(set_field).delete(delete_field),
                // A name or avatar change sends a member event to every joined room.
                Class::Profile,
            );
    }
    r
}

fn parse_user(s: &str) -> Result<ruma::OwnedUserId, ApiError> {
    UserId::parse(s).map_err(|_| ApiError(Error::invalid_param("Invalid user ID")))
}

async fn profile(
    State(s): State<AppState>,
    Path(user): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(Value::Object(
        s.hs.get_profile(&parse_user(&user)?).await?,
    )))
}

async fn get_field(
    State(s): State<AppState>,
    Path((user, key)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let profile = s.hs.get_profile(&parse_user(&user)?).await?;
    let value = profile
        .get(&key)
        .ok_or_else(|| Error::not_found("Profile field not set"))?;
    Ok(Json(json!({ key: value })))
}

async fn set_field(
    State(s): State<AppState>,
    Auth(session): Auth,
    Path((user, key)): Path<(String, String)>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let user = parse_user(&user)?;
    if user != session.user_id {
        return Err(ApiError(Error::forbidden(
            "You may only change your own profile",
        )));
    }
    let body = body.json()?;
    let value = body
        .get(&key)
        .cloned()
        .ok_or_else(|| Error::bad_json(format!("Body must contain `{key}`")))?;
    if matches!(key.as_str(), "displayname" | "avatar_url")
        && !(value.is_string() || value.is_null())
    {
        return Err(ApiError(Error::bad_json(format!(
            "`{key}` must be a string"
        ))));
    }
    s.hs.set_profile_field(&user, &key, Some(value)).await?;
    Ok(Json(json!({})))
}

async fn delete_field(
    State(s): State<AppState>,
    Auth(session): Auth,
    Path((user, key)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let user = parse_user(&user)?;
    if user != session.user_id {
        return Err(ApiError(Error::forbidden(
            "You may only change your own profile",
        )));
    }
    s.hs.set_profile_field(&user, &key, None).await?;
    Ok(Json(json!({})))
}
