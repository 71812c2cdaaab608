//! Server administration and OpenID (spec: "Server Administration", "Account
//! moderation", "OpenID").

use axum::{extract::State, Json};
use ruma::api::client::{
    account::request_openid_token,
    admin::{get_user_info, is_user_locked, is_user_suspended, lock_user, suspend_user},
};
use serde_json::{json, Value};
use tessera_core::accounts::moderation::Restriction;

use crate::{rate_limit::Class, ruma_route, ApiError, AppState, Routes, Ruma};

pub fn routes(r: Routes) -> Routes {
    let r = ruma_route!(r, get_user_info::v3::Request, whois);
    let r = ruma_route!(r, is_user_locked::v1::Request, is_locked);
    let r = ruma_route!(r, lock_user::v1::Request, lock, Class::Messages);
    let r = ruma_route!(r, is_user_suspended::v1::Request, is_suspended);
    let r = ruma_route!(r, suspend_user::v1::Request, suspend, Class::Messages);
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

async fn is_locked(
    State(s): State<AppState>,
    req: Ruma<is_user_locked::v1::Request>,
) -> Result<Json<Value>, ApiError> {
    let a = req.user()?.clone();
    let locked =
        s.hs.account_restricted(&a.user_id, a.is_admin, &req.body.user_id, Restriction::Lock)
            .await?;
    Ok(Json(json!({ "locked": locked })))
}

async fn lock(
    State(s): State<AppState>,
    req: Ruma<lock_user::v1::Request>,
) -> Result<Json<Value>, ApiError> {
    let a = req.user()?.clone();
    let locked =
        s.hs.set_account_restricted(
            &a.user_id,
            a.is_admin,
            &req.body.user_id,
            Restriction::Lock,
            req.body.locked,
        )
        .await?;
    Ok(Json(json!({ "locked": locked })))
}

async fn is_suspended(
    State(s): State<AppState>,
    req: Ruma<is_user_suspended::v1::Request>,
) -> Result<Json<Value>, ApiError> {
    let a = req.user()?.clone();
    let suspended =
        s.hs.account_restricted(
            &a.user_id,
            a.is_admin,
            &req.body.user_id,
            Restriction::Suspension,
        )
        .await?;
    Ok(Json(json!({ "suspended": suspended })))
}

async fn suspend(
    State(s): State<AppState>,
    req: Ruma<suspend_user::v1::Request>,
) -> Result<Json<Value>, ApiError> {
    let a = req.user()?.clone();
    let suspended =
        s.hs.set_account_restricted(
            &a.user_id,
            a.is_admin,
            &req.body.user_id,
            Restriction::Suspension,
            req.body.suspended,
        )
        .await?;
    Ok(Json(json!({ "suspended": suspended })))
}
