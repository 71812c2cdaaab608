//! `/versions` and `/capabilities` (spec: "Capabilities negotiation").

use axum::{extract::State, routing::get, Json};
use serde_json::{json, Value};
use tessera_core::rooms::{DEFAULT_VERSION, SUPPORTED_VERSIONS};

use super::Auth;
use crate::{AppState, Routes};

pub fn routes(r: Routes) -> Routes {
    r.route("/_matrix/client/versions", get(versions))
        .route("/_matrix/client/v3/capabilities", get(capabilities))
        .route("/_matrix/client/r0/capabilities", get(capabilities))
}

/// Only versions whose mandatory parts we serve are listed.
async fn versions() -> Json<Value> {
    Json(json!({
        "versions": ["r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10", "v1.11"],
        // MSC4186, simplified sliding sync (`client/sliding_sync.rs`).
        "unstable_features": { "org.matrix.simplified_msc3575": true },
    }))
}

async fn capabilities(State(s): State<AppState>, Auth(a): Auth) -> Json<Value> {
    // What this user may change: guests only their display name (spec: "Guest Access"),
    // suspended users nothing of their profile ("Account suspension").
    let suspended = s.hs.is_suspended(&a.user_id);
    let available: serde_json::Map<String, Value> = SUPPORTED_VERSIONS
        .iter()
        .map(|v| (v.to_string(), Value::from("stable")))
        .collect();
    let mut caps = json!({
        "capabilities": {
            "m.room_versions": { "default": DEFAULT_VERSION, "available": available },
            "m.change_password": { "enabled": !a.is_guest },
            "m.set_displayname": { "enabled": !suspended },
            "m.set_avatar_url": { "enabled": !a.is_guest && !suspended },
            "m.3pid_changes": { "enabled": false },
            "m.get_login_token": { "enabled": !a.is_guest },
            "m.profile_fields": { "enabled": !a.is_guest && !suspended },
        }
    });
    // Spec (v1.18): present only for those who may moderate accounts.
    if a.is_admin {
        caps["capabilities"]["m.account_moderation"] = json!({ "suspend": true, "lock": true });
    }
    Json(caps)
}
