//! Simplified sliding sync (MSC4186), the sync Element X uses.

use axum::{extract::State, http::header, response::IntoResponse, routing::post};
use serde::Deserialize;
use tessera_core::{sync::sliding::Request, Error};

use super::Auth;
use crate::{
    extract::{Body, Query},
    ApiError, AppState, Routes,
};

pub fn routes(r: Routes) -> Routes {
    r.route(
        "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync",
        post(sliding_sync),
    )
}

/// The query string ruma's request puts `pos`, `timeout` and `set_presence` in (the
/// MSC's current form has them in the body).
#[derive(Deserialize)]
struct Params {
    pos: Option<String>,
    timeout: Option<u64>,
    set_presence: Option<String>,
}

async fn sliding_sync(
    State(s): State<AppState>,
    Auth(a): Auth,
    Query(q): Query<Params>,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let req = Request::parse(&body.0, q.pos, q.timeout, s.hs.config.max_timeline_limit)?;
    // Spec (`/sync`): syncing marks the user online unless it says otherwise; an unknown
    // value is 400 `M_INVALID_PARAM` (MSC4186).
    let presence = match q.set_presence.as_deref() {
        None | Some("online") => Some("online"),
        Some("unavailable") => Some("unavailable"),
        Some("offline") => None,
        Some(_) => return Err(ApiError(Error::invalid_param("Unknown set_presence"))),
    };
    let body =
        s.hs.sliding_sync(&a.user_id, &a.device_id, req, presence)
            .await?;
    // Already JSON text: handed to the connection as it is.
    Ok(([(header::CONTENT_TYPE, "application/json")], body))
}
