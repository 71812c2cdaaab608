//! VoIP (spec: "Voice over IP"): TURN credentials.

use axum::{extract::State, routing::get, Json};
use serde_json::Value;

use super::Auth;
use crate::{ApiError, AppState, Routes};

pub fn routes(r: Routes) -> Routes {
    let mut r = r;
    for v in ["v3", "r0"] {
        r = r.route(
            &format!("/_matrix/client/{v}/voip/turnServer"),
            get(turn_server),
        );
    }
    r
}

/// `GET /voip/turnServer`.
async fn turn_server(State(s): State<AppState>, Auth(a): Auth) -> Result<Json<Value>, ApiError> {
    Ok(Json(s.hs.turn_server(&a.user_id)?))
}
