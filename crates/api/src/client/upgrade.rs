//! Room upgrades (spec: "Room Upgrades"). The policy is in `tessera_core::rooms::upgrade`.

use axum::{extract::State, Json};
use ruma::api::client::room::upgrade_room;
use serde_json::{json, Value};

use crate::{rate_limit::Class, ruma_route, ApiError, AppState, Routes, Ruma};

pub fn routes(r: Routes) -> Routes {
    ruma_route!(r, upgrade_room::v3::Request, upgrade, Class::Messages)
}

async fn upgrade(
    State(s): State<AppState>,
    req: Ruma<upgrade_room::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let user = req.user()?.user_id.clone();
    let b = req.body;
    let new =
        s.hs.upgrade_room(&b.room_id, &user, b.new_version, b.additional_creators)
            .await?;
    Ok(Json(json!({ "replacement_room": new })))
}
