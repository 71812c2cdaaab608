//! Spaces and room summaries (spec: "Spaces", "Room summaries"). The policy is in
//! `tessera_core::rooms::spaces`.

use axum::{extract::State, Json};
use ruma::{
    api::client::{room::get_summary, space::get_hierarchy},
    UInt,
};
use serde_json::{json, Value};
use tessera_core::{rooms::spaces::HierarchyRequest, Error};

use crate::{ruma_route, ApiError, AppState, Routes, Ruma};

pub fn routes(r: Routes) -> Routes {
    let r = ruma_route!(r, get_hierarchy::v1::Request, hierarchy);
    ruma_route!(r, get_summary::v1::Request, summary)
}

async fn hierarchy(
    State(s): State<AppState>,
    req: Ruma<get_hierarchy::v1::Request>,
) -> Result<Json<Value>, ApiError> {
    let user = req.user()?.user_id.clone();
    let b = req.body;
    // Spec: `limit` must be greater than zero.
    if b.limit.is_some_and(|l| l == UInt::MIN) {
        return Err(ApiError(Error::invalid_param("limit must be positive")));
    }
    let page =
        s.hs.hierarchy(
            &user,
            &b.room_id,
            HierarchyRequest {
                from: b.from,
                limit: crate::extract::count(b.limit),
                max_depth: crate::extract::count(b.max_depth),
                suggested_only: b.suggested_only,
            },
        )
        .await?;
    let mut body = json!({ "rooms": page.rooms });
    if let Some(n) = page.next_batch {
        body["next_batch"] = n.into();
    }
    Ok(Json(body))
}

async fn summary(
    State(s): State<AppState>,
    req: Ruma<get_summary::v1::Request>,
) -> Result<Json<Value>, ApiError> {
    let user = req.session.as_ref().map(|u| u.user_id.clone());
    let target = &req.body.room_id_or_alias;
    let room = match <&ruma::RoomId>::try_from(&**target) {
        Ok(id) => id.to_owned(),
        Err(alias) => {
            s.hs.resolve_alias(alias)
                .await?
                .ok_or_else(|| ApiError(Error::not_found("Room not found")))?
        }
    };
    Ok(Json(s.hs.room_summary(&room, user.as_deref()).await?))
}
