//! Server administration and OpenID (spec: "Server Administration", "OpenID").

use axum::{extract::State, Json};
use ruma::api::client::{account::request_openid_token, admin::get_user_info};
use serde_json::{json, Value};

use crate::{rate_limit::Class, ruma_route, ApiError, AppState, Routes, Ruma};

pub fn routes(r: Routes) -> Routes {
    let r = ruma_route!(r, get_user_info::v3::Request, whois);
    ruma_route!(
        r,
        request_openid_token::v3::Request,
        openid_token,
        Class::Messages
    )
}

async fn whois(
    State(s): State<AppState>,
    req: Ruma<get_user_info::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let session = req.user()?.clone();
    Ok(Json(
        s.hs.whois(&session.user_id, session.is_admin, &req.body.user_id)
            .await?,
    ))
}

async fn openid_token(
    State(s): State<AppState>,
    req: Ruma<request_openid_token::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let session = req.user()?.clone();
    let (token, lifetime_ms) =
        s.hs.request_openid_token(&session.user_id, &req.body.user_id)
            .await?;
    Ok(Json(json!({
        "access_token": token,
        "token_type": "Bearer",
        "matrix_server_name": s.hs.server_name(),
        "expires_in": lifetime_ms / 1000,
    })))
}
