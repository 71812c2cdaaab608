//! Registration, password change, deactivation (spec: "Account registration and
//! management").

use axum::{extract::State, routing::get, Json};
use ruma::api::{
    client::{
        account::{change_password, deactivate, register},
        uiaa::{AuthData, AuthType},
    },
    error::ErrorKind,
};
use serde::Deserialize;
use serde_json::{json, Value};
use tessera_core::{accounts::Session, Error};

use super::session::tokens_json;
use crate::{
    authenticate::ClientIp, extract::Query, rate_limit::Class, ruma_route, ApiError, AppState,
    Routes, Ruma,
};

pub fn routes(r: Routes) -> Routes {
    let r = r
        .route("/_matrix/client/v3/register/available", get(available))
        .route(
            "/_matrix/client/v1/register/m.login.registration_token/validity",
            get(token_validity),
        );
    let r = ruma_route!(r, register::v3::Request, register, Class::Registration);
    let r = ruma_route!(r, change_password::v3::Request, change_password);
    ruma_route!(r, deactivate::v3::Request, deactivate)
}

#[derive(Deserialize)]
struct UsernameQuery {
    username: String,
}

async fn available(
    State(s): State<AppState>,
    Query(q): Query<UsernameQuery>,
) -> Result<Json<Value>, ApiError> {
    let user_id = s.hs.user_id_for_localpart(&q.username)?;
    if s.hs.user_exists(&user_id).await? {
        return Err(ApiError(Error::Matrix(
            ErrorKind::UserInUse,
            "User ID already taken".into(),
        )));
    }
    Ok(Json(json!({ "available": true })))
}

#[derive(Deserialize)]
struct TokenQuery {
    token: String,
}

async fn token_validity(
    State(s): State<AppState>,
    ip: ClientIp,
    Query(q): Query<TokenQuery>,
) -> Result<Json<Value>, ApiError> {
    // Spec: limited like registration, so tokens cannot be guessed here.
    s.limiter.check(Class::Registration, &ip.key())?;
    Ok(Json(
        json!({ "valid": s.hs.registration_token_valid(&q.token).await? }),
    ))
}

/// The flows on offer (see README, `registration.*`).
fn registration_flows(s: &AppState) -> Vec<Vec<AuthType>> {
    let c = &s.hs.config;
    let mut flows = vec![vec![AuthType::RegistrationToken]];
    if c.registration_open && !c.registration_token_required {
        flows.insert(0, vec![AuthType::Dummy]);
    }
    flows
}

async fn register(
    State(s): State<AppState>,
    req: Ruma<register::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let req = req.body;
    if req.kind == register::RegistrationKind::Guest {
        let (user_id, tokens) = s.hs.register_guest(req.initial_device_display_name).await?;
        return Ok(Json(tokens_json(&user_id, &tokens)));
    }
    // Spec ("Guest Access"): a guest becomes a full account by registering with its token,
    // through the same registration rules as anyone.
    let upgrading = match &req.guest_access_token {
        Some(token) => Some(
            s.hs.guest_for_upgrade(token, req.username.as_deref())
                .await?,
        ),
        None => None,
    };
    let user_id = match (&upgrading, &req.username) {
        (Some(guest), _) => guest.clone(),
        (None, Some(name)) => s.hs.user_id_for_localpart(&name.to_lowercase())?,
        (None, None) => s.hs.user_id_for_localpart(
            &tessera_core::accounts::tokens::random_string(12).to_lowercase(),
        )?,
    };
    // Spec: check the username before starting user-interactive auth.
    if upgrading.is_none() && s.hs.user_exists(&user_id).await? {
        return Err(ApiError(Error::Matrix(
            ErrorKind::UserInUse,
            "User ID already taken".into(),
        )));
    }
    let done =
        s.hs.user_interactive_auth(
            &registration_flows(&s),
            req.auth.as_ref(),
            None,
            "POST /register",
        )
        .await?;
    let token = done.registration_token.as_deref();
    if upgrading.is_some() {
        s.hs.upgrade_guest(&user_id, req.password.as_deref(), token)
            .await?;
    } else {
        s.hs.create_user_with(&user_id, req.password.as_deref(), false, token)
            .await?;
    }
    if req.inhibit_login {
        return Ok(Json(json!({ "user_id": user_id })));
    }
    let tokens =
        s.hs.open_device(
            &user_id,
            req.device_id,
            req.initial_device_display_name,
            req.refresh_token,
        )
        .await?;
    Ok(Json(tokens_json(&user_id, &tokens)))
}

/// User-interactive auth by the session's own password, for `request`. Each password
/// tried spends the account's login budget, as a `/login` would.
pub async fn password_auth(
    s: &AppState,
    auth: Option<&AuthData>,
    session: &Session,
    request: &str,
) -> Result<(), ApiError> {
    let password = matches!(auth, Some(AuthData::Password(_))) && !s.limiter.exempt(Some(session));
    let account = session.user_id.as_str();
    if password {
        s.limiter.check_failures(Class::LoginAccount, account)?;
    }
    match s
        .hs
        .user_interactive_auth(
            &[vec![AuthType::Password]],
            auth,
            Some(&session.user_id),
            request,
        )
        .await
    {
        Ok(_) => Ok(()),
        // The stage was tried and refused: a wrong password.
        Err(Error::Uia(info)) if password && info.auth_error.is_some() => {
            s.limiter.failed(Class::LoginAccount, account);
            Err(ApiError(Error::Uia(info)))
        }
        Err(e) => Err(e.into()),
    }
}

async fn change_password(
    State(s): State<AppState>,
    req: Ruma<change_password::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let session = req.user()?.clone();
    let req = req.body;
    password_auth(&s, req.auth.as_ref(), &session, "POST /account/password").await?;
    let keep = if req.logout_devices {
        Some(session.device_id.as_str())
    } else {
        None
    };
    s.hs.change_password(&session.user_id, &req.new_password, keep)
        .await?;
    Ok(Json(json!({})))
}

async fn deactivate(
    State(s): State<AppState>,
    req: Ruma<deactivate::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let session = req.user()?.clone();
    password_auth(
        &s,
        req.body.auth.as_ref(),
        &session,
        "POST /account/deactivate",
    )
    .await?;
    s.hs.deactivate(&session.user_id).await?;
    Ok(Json(json!({ "id_server_unbind_result": "no-support" })))
}
