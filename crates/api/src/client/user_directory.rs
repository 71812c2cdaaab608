//! The user directory (spec: "User directory"). The policy is in
//! `tessera_core::user_directory`.

use axum::{extract::State, Json};
use ruma::api::client::user_directory::search_users;
use serde_json::{json, Value};

use crate::{ruma_route, ApiError, AppState, Routes, Ruma};

pub fn routes(r: Routes) -> Routes {
    ruma_route!(r, search_users::v3::Request, search)
}

async fn search(
    State(s): State<AppState>,
    req: Ruma<search_users::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let user = req.user()?.user_id.clone();
    let b = req.body;
    let limit = crate::extract::count(Some(b.limit));
    let (results, limited) = s.hs.search_users(&user, &b.search_term, limit).await?;
    Ok(Json(json!({ "results": results, "limited": limited })))
}
