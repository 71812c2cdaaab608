//! The server admin API that admin tools already speak (Synapse's `/_synapse/admin`), for
//! what the Matrix spec leaves to servers: sending server notices (spec: "Server
//! Notices", "How servers send notices … is left as an implementation detail").

use axum::{
    extract::State,
    routing::{post, put},
    Json,
};
use serde_json::{json, Value};
use tessera_core::{rooms::write::Txn, Error};

use crate::{
    client::Auth,
    extract::{Body, Path},
    rate_limit::Class,
    ApiError, AppState, Routes,
};

pub fn routes(r: Routes) -> Routes {
    r.limited(
        "/_synapse/admin/v1/send_server_notice",
        post(send_server_notice),
        Class::Messages,
    )
    .limited(
        "/_synapse/admin/v1/send_server_notice/{txn_id}",
        put(send_server_notice_txn),
        Class::Messages,
    )
}

/// `{ "user_id": …, "content": { "body": …, … } }`; `type`, if given, must be
/// `m.room.message` (the only kind of notice the spec has).
fn parse(body: &Body) -> Result<(ruma::OwnedUserId, serde_json::Map<String, Value>), ApiError> {
    let mut body = body.object()?;
    if body.get("type").is_some_and(|t| t != "m.room.message") {
        return Err(ApiError(Error::invalid_param(
            "Server notices are m.room.message events",
        )));
    }
    let user = body
        .get("user_id")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::bad_json("user_id must be a string"))?;
    let user = ruma::UserId::parse(user).map_err(|_| Error::invalid_param("Invalid user ID"))?;
    let content = match body.remove("content") {
        Some(Value::Object(c)) => c,
        _ => return Err(ApiError(Error::bad_json("content must be an object"))),
    };
    Ok((user, content))
}

async fn send_server_notice(
    State(s): State<AppState>,
    Auth(a): Auth,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let (user, content) = parse(&body)?;
    let id =
        s.hs.send_server_notice(a.is_admin, &user, content, None)
            .await?;
    Ok(Json(json!({ "event_id": id })))
}

async fn send_server_notice_txn(
    State(s): State<AppState>,
    Auth(a): Auth,
    Path(txn_id): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let (user, content) = parse(&body)?;
    let txn = Txn {
        user_id: a.user_id.as_str(),
        device_id: a.device_id.as_str(),
        scope: format!("server_notice/{user}"),
        txn_id: &txn_id,
    };
    let id =
        s.hs.send_server_notice(a.is_admin, &user, content, Some(txn))
            .await?;
    Ok(Json(json!({ "event_id": id })))
}
