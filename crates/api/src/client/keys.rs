//! End-to-end encryption key endpoints (spec: "Key management API", "Cross-signing").

use std::collections::BTreeMap;

use axum::{
    extract::State,
    routing::{get, post},
    Json,
};
use ruma::api::client::uiaa::AuthData;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tessera_core::{sync::token::parse_position, Error};

use super::{account::password_auth, Auth};
use crate::{
    extract::{Body, Query},
    ApiError, AppState, Routes,
};

pub fn routes(r: Routes) -> Routes {
    let mut r = r;
    for v in ["v3", "r0"] {
        let p = |s: &str| format!("/_matrix/client/{v}{s}");
        r = r
            .route(&p("/keys/upload"), post(upload))
            .route(&p("/keys/query"), post(query))
            .route(&p("/keys/claim"), post(claim))
            .route(&p("/keys/changes"), get(changes))
            .route(&p("/keys/device_signing/upload"), post(device_signing))
            .route(&p("/keys/signatures/upload"), post(signatures));
    }
    r
}

fn field<T: serde::de::DeserializeOwned + Default>(body: &Value, key: &str) -> Result<T, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(T::default()),
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| ApiError(Error::bad_json(format!("`{key}`: {e}")))),
    }
}

async fn upload(
    State(s): State<AppState>,
    Auth(a): Auth,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let body = body.json()?;
    let otks: Map<String, Value> = field(&body, "one_time_keys")?;
    let fallback: Map<String, Value> = field(&body, "fallback_keys")?;
    let device_keys = body.get("device_keys").filter(|v| !v.is_null());
    let counts =
        s.hs.upload_keys(&a.user_id, &a.device_id, device_keys, &otks, &fallback)
            .await?;
    Ok(Json(json!({ "one_time_key_counts": counts })))
}

async fn query(
    State(s): State<AppState>,
    Auth(a): Auth,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let body = body.json()?;
    let users: BTreeMap<String, Vec<String>> = field(&body, "device_keys")?;
    Ok(Json(s.hs.query_keys(&a.user_id, &users).await?))
}

async fn claim(
    State(s): State<AppState>,
    Auth(_): Auth,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let body = body.json()?;
    let req: BTreeMap<String, BTreeMap<String, String>> = field(&body, "one_time_keys")?;
    Ok(Json(s.hs.claim_keys(&req).await?))
}

#[derive(Deserialize)]
struct ChangesQuery {
    from: String,
    to: String,
}

async fn changes(
    State(s): State<AppState>,
    Auth(a): Auth,
    Query(q): Query<ChangesQuery>,
) -> Result<Json<Value>, ApiError> {
    let from = parse_position(&q.from, false)?;
    let to = parse_position(&q.to, false)?.min(s.hs.current_pos());
    let (changed, left) = s.hs.device_list_updates(&a.user_id, from, to).await?;
    Ok(Json(json!({ "changed": changed, "left": left })))
}

async fn device_signing(
    State(s): State<AppState>,
    Auth(a): Auth,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let body = body.json()?;
    let key = |k: &str| body.get(k).filter(|v| !v.is_null());
    let (master, ssk, usk) = (
        key("master_key"),
        key("self_signing_key"),
        key("user_signing_key"),
    );
    let new = [
        ("master", master),
        ("self_signing", ssk),
        ("user_signing", usk),
    ];
    if s.hs.signing_upload_needs_auth(&a.user_id, &new).await? {
        let auth: Option<AuthData> = match body.get("auth") {
            Some(v) if !v.is_null() => Some(
                serde_json::from_value(v.clone())
                    .map_err(|e| ApiError(Error::bad_json(format!("`auth`: {e}"))))?,
            ),
            _ => None,
        };
        password_auth(&s, auth.as_ref(), &a, "POST /keys/device_signing/upload").await?;
    }
    s.hs.upload_signing_keys(&a.user_id, master, ssk, usk)
        .await?;
    Ok(Json(json!({})))
}

async fn signatures(
    State(s): State<AppState>,
    Auth(a): Auth,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let body = body.json()?;
    let signed: BTreeMap<String, Map<String, Value>> =
        serde_json::from_value(body).map_err(|e| ApiError(Error::bad_json(e.to_string())))?;
    Ok(Json(s.hs.upload_signatures(&a.user_id, &signed).await?))
}
