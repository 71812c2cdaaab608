//! Mutual rooms (spec v1.19: "Mutual Rooms"), also under MSC2666's unstable path, which
//! clients still call.

use std::collections::HashMap;

use axum::{extract::State, routing::get, Json};
use serde_json::{json, Value};

use super::Auth;
use crate::{extract::Query, ApiError, AppState, Routes};

pub fn routes(r: Routes) -> Routes {
    r.route("/_matrix/client/v1/mutual_rooms", get(mutual_rooms))
        .route(
            "/_matrix/client/unstable/uk.half-shot.msc2666/user/mutual_rooms",
            get(mutual_rooms),
        )
}

async fn mutual_rooms(
    State(s): State<AppState>,
    Auth(a): Auth,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let page =
        s.hs.mutual_rooms(
            &a.user_id,
            q.get("user_id").map(String::as_str),
            q.get("from").map(String::as_str),
        )
        .await?;
    let mut body = json!({ "joined": page.joined, "count": page.count });
    if let Some(next) = page.next_batch {
        body["next_batch"] = next.into();
    }
    Ok(Json(body))
}
