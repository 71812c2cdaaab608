//! `/.well-known/matrix/client` (spec: "Server Discovery").

use axum::{extract::State, routing::get, Json};
use serde_json::{json, Value};

use crate::{AppState, Routes};

pub fn routes(r: Routes) -> Routes {
    r.route("/.well-known/matrix/client", get(client))
}

async fn client(State(s): State<AppState>) -> Json<Value> {
    let base =
        s.hs.config
            .public_base_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", s.hs.server_name()));
    Json(json!({ "m.homeserver": { "base_url": base } }))
}
