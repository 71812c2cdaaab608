//! `/.well-known/matrix/client` (spec: "Server Discovery") and
//! `/.well-known/matrix/support` (spec: "Support information").

use axum::{extract::State, routing::get, Json};
use serde_json::{json, Value};

use crate::{AppState, Routes};

pub fn routes(r: Routes) -> Routes {
    r.route("/.well-known/matrix/client", get(client))
        .route("/.well-known/matrix/support", get(support))
}

/// 404 when the config names no contact and no page (spec).
async fn support(State(s): State<AppState>) -> Result<Json<Value>, crate::ApiError> {
    match &s.hs.config.support {
        Some(body) => Ok(Json(body.clone())),
        None => Err(crate::ApiError(tessera_core::Error::not_found(
            "No support information is configured",
        ))),
    }
}

async fn client(State(s): State<AppState>) -> Json<Value> {
    let base =
        s.hs.config
            .public_base_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", s.hs.server_name()));
    Json(json!({ "m.homeserver": { "base_url": base } }))
}
