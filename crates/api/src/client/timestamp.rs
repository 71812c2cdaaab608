//! `/timestamp_to_event` (spec: "Room timestamp to event"). The policy is in
//! `tessera_core::rooms::read`.

use axum::{extract::State, Json};
use ruma::api::{client::room::get_event_by_timestamp, Direction as RumaDirection};
use serde_json::{json, Value};
use tessera_core::rooms::read::Direction;

use crate::{ruma_route, ApiError, AppState, Routes, Ruma};

pub fn routes(r: Routes) -> Routes {
    ruma_route!(r, get_event_by_timestamp::v1::Request, timestamp_to_event)
}

async fn timestamp_to_event(
    State(s): State<AppState>,
    req: Ruma<get_event_by_timestamp::v1::Request>,
) -> Result<Json<Value>, ApiError> {
    let user = req.user()?.user_id.clone();
    let b = req.body;
    let dir = match b.dir {
        RumaDirection::Forward => Direction::Forward,
        RumaDirection::Backward => Direction::Backward,
    };
    let ts = i64::from(b.ts.get());
    let (event_id, origin_ts) = s.hs.timestamp_to_event(&b.room_id, &user, ts, dir).await?;
    Ok(Json(
        json!({ "event_id": event_id, "origin_server_ts": origin_ts }),
    ))
}
