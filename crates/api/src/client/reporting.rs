//! Reporting content (spec: "Reporting content"): events, rooms, users.

use axum::{extract::State, Json};
use ruma::api::client::{
    reporting::report_user,
    room::{report_content, report_room},
};
use serde_json::{json, Value};
use tessera_core::reports::ReportTarget;

use crate::{rate_limit::Class, ruma_route, ApiError, AppState, Routes, Ruma};

pub fn routes(r: Routes) -> Routes {
    let r = ruma_route!(
        r,
        report_content::v3::Request,
        report_event,
        Class::Messages
    );
    let r = ruma_route!(r, report_room::v3::Request, report_room, Class::Messages);
    ruma_route!(r, report_user::v3::Request, report_user, Class::Messages)
}

async fn report_event(
    State(s): State<AppState>,
    req: Ruma<report_content::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let user = req.user()?.user_id.clone();
    let b = req.body;
    let target = ReportTarget::Event(&b.room_id, &b.event_id);
    s.hs.report(&user, target, b.reason.as_deref()).await?;
    Ok(Json(json!({})))
}

async fn report_room(
    State(s): State<AppState>,
    req: Ruma<report_room::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let user = req.user()?.user_id.clone();
    let b = req.body;
    s.hs.report(&user, ReportTarget::Room(&b.room_id), Some(&b.reason))
        .await?;
    Ok(Json(json!({})))
}

async fn report_user(
    State(s): State<AppState>,
    req: Ruma<report_user::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let user = req.user()?.user_id.clone();
    let b = req.body;
    s.hs.report(&user, ReportTarget::User(&b.user_id), Some(&b.reason))
        .await?;
    Ok(Json(json!({})))
}
