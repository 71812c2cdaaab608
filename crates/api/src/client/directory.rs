//! The public room directory and a room's aliases (spec: "Room discovery", "Room
//! aliases"). The policy is in `tessera_core::rooms::directory`.

use axum::{extract::State, Json};
use ruma::{
    api::client::{
        directory::{
            get_public_rooms, get_public_rooms_filtered, get_room_visibility, set_room_visibility,
        },
        room::{aliases, Visibility},
    },
    directory::{Filter, RoomNetwork},
    OwnedServerName,
};
use serde_json::{json, Value};
use tessera_core::{
    rooms::directory::{PublicRoomsPage, PublicRoomsRequest},
    Error,
};

use crate::{ruma_route, ApiError, AppState, Routes, Ruma};

pub fn routes(r: Routes) -> Routes {
    let r = ruma_route!(r, get_public_rooms::v3::Request, public_rooms);
    let r = ruma_route!(
        r,
        get_public_rooms_filtered::v3::Request,
        public_rooms_filtered
    );
    let r = ruma_route!(r, get_room_visibility::v3::Request, get_visibility);
    let r = ruma_route!(r, set_room_visibility::v3::Request, set_visibility);
    ruma_route!(r, aliases::v3::Request, room_aliases)
}

/// Another server's directory would be asked over federation, which is not here yet.
fn local_only(s: &AppState, server: Option<&OwnedServerName>) -> Result<(), ApiError> {
    match server {
        Some(name) if name != s.hs.server_name() => Err(ApiError(Error::invalid_param(
            "Other servers' directories need federation, which this server does not have yet",
        ))),
        _ => Ok(()),
    }
}

fn page_json(page: PublicRoomsPage) -> Value {
    let mut body = json!({
        "chunk": page.chunk,
        "total_room_count_estimate": page.total,
    });
    if let Some(n) = page.next_batch {
        body["next_batch"] = n.into();
    }
    if let Some(p) = page.prev_batch {
        body["prev_batch"] = p.into();
    }
    body
}

async fn public_rooms(
    State(s): State<AppState>,
    req: Ruma<get_public_rooms::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let b = req.body;
    local_only(&s, b.server.as_ref())?;
    let page =
        s.hs.public_rooms(PublicRoomsRequest {
            limit: crate::extract::count(b.limit),
            since: b.since,
            ..Default::default()
        })
        .await?;
    Ok(Json(page_json(page)))
}

async fn public_rooms_filtered(
    State(s): State<AppState>,
    req: Ruma<get_public_rooms_filtered::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let b = req.body;
    local_only(&s, b.server.as_ref())?;
    // No third-party networks are configured: a named one has no rooms, and "all"
    // networks are the Matrix one.
    if let RoomNetwork::ThirdParty(_) = b.room_network {
        return Ok(Json(json!({ "chunk": [], "total_room_count_estimate": 0 })));
    }
    let Filter {
        generic_search_term,
        room_types,
        ..
    } = b.filter;
    // Spec: an empty `room_types` includes every type.
    let room_types = (!room_types.is_empty()).then(|| {
        room_types
            .iter()
            .map(|t| t.as_str().map(str::to_owned))
            .collect()
    });
    let page =
        s.hs.public_rooms(PublicRoomsRequest {
            limit: crate::extract::count(b.limit),
            since: b.since,
            search: generic_search_term,
            room_types,
        })
        .await?;
    Ok(Json(page_json(page)))
}

async fn get_visibility(
    State(s): State<AppState>,
    req: Ruma<get_room_visibility::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let public = s.hs.room_visibility(&req.body.room_id).await?;
    Ok(Json(
        json!({ "visibility": if public { "public" } else { "private" } }),
    ))
}

async fn set_visibility(
    State(s): State<AppState>,
    req: Ruma<set_room_visibility::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let session = req.user()?.clone();
    let public = match req.body.visibility {
        Visibility::Public => true,
        Visibility::Private => false,
        _ => return Err(ApiError(Error::invalid_param("Unknown visibility"))),
    };
    s.hs.set_room_visibility(
        &req.body.room_id,
        &session.user_id,
        session.is_admin,
        public,
    )
    .await?;
    Ok(Json(json!({})))
}

async fn room_aliases(
    State(s): State<AppState>,
    req: Ruma<aliases::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let session = req.user()?.clone();
    let aliases =
        s.hs.room_aliases(&req.body.room_id, &session.user_id)
            .await?;
    Ok(Json(json!({ "aliases": aliases })))
}
