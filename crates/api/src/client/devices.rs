//! Device management (spec: "Device management").

use axum::{extract::State, Json};
use ruma::api::client::device::{
    delete_device, delete_devices, get_device, get_devices, update_device,
};
use serde_json::{json, Value};
use tessera_core::{accounts::devices::DeviceInfo, Error};

use super::account::password_auth;
use crate::{ruma_route, ApiError, AppState, Routes, Ruma};

pub fn routes(r: Routes) -> Routes {
    let r = ruma_route!(r, get_devices::v3::Request, list);
    let r = ruma_route!(r, get_device::v3::Request, get);
    let r = ruma_route!(r, update_device::v3::Request, update);
    let r = ruma_route!(r, delete_device::v3::Request, delete);
    ruma_route!(r, delete_devices::v3::Request, delete_many)
}

fn device_json(d: &DeviceInfo) -> Value {
    json!({
        "device_id": d.device_id,
        "display_name": d.display_name,
        "last_seen_ts": d.last_seen_ts,
        "last_seen_ip": d.last_seen_ip,
    })
}

async fn list(
    State(s): State<AppState>,
    req: Ruma<get_devices::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let devices = s.hs.list_devices(&req.user()?.user_id).await?;
    Ok(Json(
        json!({ "devices": devices.iter().map(device_json).collect::<Vec<_>>() }),
    ))
}

async fn get(
    State(s): State<AppState>,
    req: Ruma<get_device::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let d =
        s.hs.get_device(&req.user()?.user_id, req.body.device_id.as_str())
            .await?;
    Ok(Json(device_json(&d)))
}

async fn update(
    State(s): State<AppState>,
    req: Ruma<update_device::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let user = req.user()?.user_id.clone();
    s.hs.rename_device(&user, req.body.device_id.as_str(), req.body.display_name)
        .await?;
    Ok(Json(json!({})))
}

async fn delete(
    State(s): State<AppState>,
    req: Ruma<delete_device::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let user = req.user()?.user_id.clone();
    // Unknown devices are 404 before any auth is asked for.
    s.hs.get_device(&user, req.body.device_id.as_str()).await?;
    let operation = format!("DELETE /devices/{}", req.body.device_id);
    password_auth(&s, req.body.auth.as_ref(), req.user()?, &operation).await?;
    s.hs.delete_devices(&user, &[req.body.device_id.to_string()])
        .await?;
    Ok(Json(json!({})))
}

async fn delete_many(
    State(s): State<AppState>,
    req: Ruma<delete_devices::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let user = req.user()?.user_id.clone();
    let mut ids: Vec<String> = req.body.devices.iter().map(|d| d.to_string()).collect();
    ids.sort();
    ids.dedup();
    // The session is for deleting exactly these devices.
    let operation = format!(
        "POST /delete_devices {}",
        serde_json::to_string(&ids).map_err(Error::internal)?
    );
    password_auth(&s, req.body.auth.as_ref(), req.user()?, &operation).await?;
    s.hs.delete_devices(&user, &ids).await?;
    Ok(Json(json!({})))
}
