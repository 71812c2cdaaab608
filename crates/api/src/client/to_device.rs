//! `PUT /sendToDevice/{eventType}/{txnId}` (spec: "Send-to-Device messaging").

use std::collections::BTreeMap;

use axum::{
    extract::{Path, State},
    routing::put,
    Json, Router,
};
use serde_json::{json, Value};
use tessera_core::Error;

use super::{account_data::json_body, Auth};
use crate::{ApiError, AppState};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let mut r = r;
    for v in ["v3", "r0"] {
        r = r.route(
            &format!("/_matrix/client/{v}/sendToDevice/{{kind}}/{{txn_id}}"),
            put(send),
        );
    }
    r
}

async fn send(
    State(s): State<AppState>,
    Auth(a): Auth,
    Path((kind, txn_id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let body = json_body(&body)?;
    let messages: BTreeMap<String, BTreeMap<String, Value>> =
        serde_json::from_value(body["messages"].clone()).map_err(|_| {
            ApiError(Error::bad_json(
                "`messages` must map users to devices to contents",
            ))
        })?;
    s.hs.send_to_device(&a.user_id, &a.device_id, &kind, &txn_id, &messages)
        .await?;
    Ok(Json(json!({})))
}
