//! `PUT /sendToDevice/{eventType}/{txnId}` (spec: "Send-to-Device messaging").

use std::collections::BTreeMap;

use axum::{extract::State, routing::put, Json};
use serde_json::{json, Value};
use tessera_core::Error;

use super::Auth;
use crate::{
    extract::{Body, Path},
    rate_limit::Class,
    ApiError, AppState, Routes,
};

pub fn routes(r: Routes) -> Routes {
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
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let body = body.json()?;
    let messages: BTreeMap<String, BTreeMap<String, Value>> =
        serde_json::from_value(body["messages"].clone()).map_err(|_| {
            ApiError(Error::bad_json(
                "`messages` must map users to devices to contents",
            ))
        })?;
    // The fan-out is what costs: each message queued for a device (`*` expanded) spends
    // one token.
    let exempt = s.limiter.exempt(Some(&a));
    let charge = |n: usize| {
        if exempt {
            return Ok(());
        }
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        s.limiter
            .check_n(Class::ToDevice, a.user_id.as_str(), n)
            .map_err(|e| e.0)
    };
    s.hs.send_to_device(&a.user_id, &a.device_id, &kind, &txn_id, &messages, &charge)
        .await?;
    Ok(Json(json!({})))
}
