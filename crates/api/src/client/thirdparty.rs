//! Third-party networks (spec: "Third-party Networks"), with no bridge configured.

use axum::{extract::State, Json};
use ruma::api::client::thirdparty::{
    get_location_for_protocol, get_location_for_room_alias, get_protocol, get_protocols,
    get_user_for_protocol, get_user_for_user_id,
};
use serde_json::{json, Value};

use crate::{ruma_route, ApiError, AppState, Routes, Ruma};

pub fn routes(r: Routes) -> Routes {
    let r = ruma_route!(r, get_protocols::v3::Request, protocols);
    let r = ruma_route!(r, get_protocol::v3::Request, protocol);
    let r = ruma_route!(
        r,
        get_location_for_protocol::v3::Request,
        location_for_protocol
    );
    let r = ruma_route!(r, get_user_for_protocol::v3::Request, user_for_protocol);
    let r = ruma_route!(
        r,
        get_location_for_room_alias::v3::Request,
        location_for_alias
    );
    ruma_route!(r, get_user_for_user_id::v3::Request, user_for_user_id)
}

async fn protocols(req: Ruma<get_protocols::v3::Request>) -> Result<Json<Value>, ApiError> {
    req.user()?;
    Ok(Json(json!({})))
}

async fn protocol(
    State(s): State<AppState>,
    req: Ruma<get_protocol::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    req.user()?;
    s.hs.thirdparty_protocol(&req.body.protocol)?;
    Ok(Json(json!({})))
}

async fn location_for_protocol(
    State(s): State<AppState>,
    req: Ruma<get_location_for_protocol::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    req.user()?;
    s.hs.thirdparty_protocol(&req.body.protocol)?;
    Ok(Json(json!([])))
}

async fn user_for_protocol(
    State(s): State<AppState>,
    req: Ruma<get_user_for_protocol::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    req.user()?;
    s.hs.thirdparty_protocol(&req.body.protocol)?;
    Ok(Json(json!([])))
}

async fn location_for_alias(
    State(s): State<AppState>,
    req: Ruma<get_location_for_room_alias::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    req.user()?;
    s.hs.thirdparty_locations_for_alias(&req.body.alias).await?;
    Ok(Json(json!([])))
}

async fn user_for_user_id(
    State(s): State<AppState>,
    req: Ruma<get_user_for_user_id::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    req.user()?;
    s.hs.thirdparty_users_for_user(&req.body.userid).await?;
    Ok(Json(json!([])))
}
