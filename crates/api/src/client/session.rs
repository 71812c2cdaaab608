//! Login, logout, token refresh, whoami (spec: "Client Authentication").

use axum::{extract::State, routing::get, Json};
use ruma::api::client::{
    session::{get_login_token, login, logout, logout_all, refresh_token},
    uiaa::{AuthType, UserIdentifier},
};
use serde_json::{json, Value};
use tessera_core::{accounts::login::LoginTokens, Error};

use super::Auth;
use crate::{rate_limit::Class, ruma_route, ApiError, AppState, Routes, Ruma};

pub fn routes(r: Routes) -> Routes {
    let r = r
        .route("/_matrix/client/v3/login", get(login_types))
        .route("/_matrix/client/r0/login", get(login_types))
        .route("/_matrix/client/v3/account/whoami", get(whoami))
        .route("/_matrix/client/r0/account/whoami", get(whoami));
    let r = ruma_route!(r, login::v3::Request, login, Class::Login);
    let r = ruma_route!(r, logout::v3::Request, logout);
    let r = ruma_route!(r, logout_all::v3::Request, logout_all);
    let r = ruma_route!(r, get_login_token::v1::Request, get_token, Class::Login);
    ruma_route!(r, refresh_token::v3::Request, refresh)
}

async fn login_types() -> Json<Value> {
    // Spec (v1.7): `get_login_token` says a signed-in client may ask for a login token.
    Json(json!({ "flows": [
        { "type": "m.login.password" },
        { "type": "m.login.token", "get_login_token": true },
    ] }))
}

/// `POST /login/get_token`: a token another device signs in with, after the user proved
/// it is them again (their password, by user-interactive auth).
async fn get_token(
    State(s): State<AppState>,
    req: Ruma<get_login_token::v1::Request>,
) -> Result<Json<Value>, ApiError> {
    let user = req.user()?.user_id.clone();
    s.hs.user_interactive_auth(
        &[vec![AuthType::Password]],
        req.body.auth.as_ref(),
        Some(&user),
        "POST /login/get_token",
    )
    .await?;
    let (token, lifetime_ms) = s.hs.create_login_token(&user).await?;
    Ok(Json(
        json!({ "login_token": token, "expires_in_ms": lifetime_ms }),
    ))
}

/// The JSON a login or registration returns.
pub fn tokens_json(user_id: &ruma::UserId, t: &LoginTokens) -> Value {
    let mut v = json!({
        "user_id": user_id,
        "access_token": t.access_token,
        "device_id": t.device_id,
    });
    if let Some(r) = &t.refresh_token {
        v["refresh_token"] = r.clone().into();
    }
    if let Some(ms) = t.expires_in_ms {
        v["expires_in_ms"] = ms.into();
    }
    v
}

async fn login(
    State(s): State<AppState>,
    req: Ruma<login::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let req = req.body;
    let pw = match &req.login_info {
        login::v3::LoginInfo::Password(pw) => pw,
        login::v3::LoginInfo::Token(t) => {
            let user_id = s.hs.redeem_login_token(&t.token).await?;
            let tokens =
                s.hs.open_device(
                    &user_id,
                    req.device_id,
                    req.initial_device_display_name,
                    req.refresh_token,
                )
                .await?;
            let mut body = tokens_json(&user_id, &tokens);
            body["home_server"] = s.hs.server_name().as_str().into();
            return Ok(Json(body));
        }
        _ => {
            return Err(ApiError(Error::Matrix(
                ruma::api::error::ErrorKind::Unknown,
                "Unsupported login type".into(),
            )))
        }
    };
    let user = match &pw.identifier {
        Some(UserIdentifier::Matrix(id)) => &id.user,
        _ => return Err(ApiError(Error::forbidden("Unsupported identifier type"))),
    };
    let user_id =
        s.hs.parse_user_localpart_or_id(user)
            .map_err(|_| Error::forbidden("Invalid username or password"))?;
    // Wrong passwords for one account are limited wherever they come from; a right one
    // never spends that budget, so guessing cannot lock the owner out for long.
    s.limiter
        .check_failures(Class::LoginAccount, user_id.as_str())?;
    if let Err(e) = s.hs.verify_login(&user_id, &pw.password).await {
        if matches!(&e, Error::Matrix(ruma::api::error::ErrorKind::Forbidden, _)) {
            s.limiter.failed(Class::LoginAccount, user_id.as_str());
        }
        return Err(e.into());
    }
    let tokens =
        s.hs.open_device(
            &user_id,
            req.device_id,
            req.initial_device_display_name,
            req.refresh_token,
        )
        .await?;
    let mut body = tokens_json(&user_id, &tokens);
    body["home_server"] = s.hs.server_name().as_str().into();
    Ok(Json(body))
}

async fn logout(
    State(s): State<AppState>,
    req: Ruma<logout::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let session = req.user()?;
    s.hs.logout(&session.user_id, session.device_id.as_str())
        .await?;
    Ok(Json(json!({})))
}

async fn logout_all(
    State(s): State<AppState>,
    req: Ruma<logout_all::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    s.hs.logout_all(&req.user()?.user_id).await?;
    Ok(Json(json!({})))
}

async fn refresh(
    State(s): State<AppState>,
    req: Ruma<refresh_token::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let t = s.hs.refresh(&req.body.refresh_token).await?;
    let mut v = json!({ "access_token": t.access_token, "refresh_token": t.refresh_token });
    if let Some(ms) = t.expires_in_ms {
        v["expires_in_ms"] = ms.into();
    }
    Ok(Json(v))
}

async fn whoami(Auth(session): Auth) -> Json<Value> {
    Json(json!({ "user_id": session.user_id, "device_id": session.device_id, "is_guest": false }))
}
