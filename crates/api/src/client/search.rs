//! Server-side search (spec: "Server Side Search", `POST /search`). The policy is in
//! `tessera_core::search`.

use std::collections::HashSet;

use axum::{extract::State, routing::post, Json};
use ruma::{api::client::filter::RoomEventFilter, api::error::ErrorKind, OwnedRoomId};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tessera_core::{
    search::{SearchRequest, SearchResults},
    sync::filter::EventFilter,
    Error,
};

use super::Auth;
use crate::{
    extract::{Body, Query},
    rate_limit::Class,
    ApiError, AppState, Routes,
};

pub fn routes(r: Routes) -> Routes {
    let mut r = r;
    for v in ["v3", "r0"] {
        r = r.limited(
            &format!("/_matrix/client/{v}/search"),
            post(search),
            Class::Messages,
        );
    }
    r
}

#[derive(Deserialize)]
struct SearchQuery {
    next_batch: Option<String>,
}

fn bad(msg: &str) -> ApiError {
    ApiError(Error::Matrix(ErrorKind::BadJson, msg.into()))
}

async fn search(
    State(s): State<AppState>,
    Auth(a): Auth,
    Query(q): Query<SearchQuery>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let body = body.object()?;
    let categories = body
        .get("search_categories")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("search_categories is required"))?;
    // Only `room_events` is a category of the spec.
    let Some(criteria) = categories.get("room_events") else {
        return Ok(Json(json!({ "search_categories": {} })));
    };
    let criteria = criteria
        .as_object()
        .ok_or_else(|| bad("room_events must be an object"))?;
    let term = criteria
        .get("search_term")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("search_term is required"))?
        .to_owned();
    let keys = match criteria.get("keys") {
        None | Some(Value::Null) => None,
        Some(Value::Array(k)) => Some(
            k.iter()
                .map(|k| {
                    k.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| bad("keys are strings"))
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(_) => return Err(bad("keys must be a list")),
    };
    let filter: RoomEventFilter = match criteria.get("filter") {
        None | Some(Value::Null) => RoomEventFilter::default(),
        Some(f) => serde_json::from_value(f.clone()).map_err(|_| bad("Invalid filter"))?,
    };
    let rooms: Option<HashSet<OwnedRoomId>> =
        filter.rooms.as_ref().map(|r| r.iter().cloned().collect());
    let not_rooms: HashSet<OwnedRoomId> = filter.not_rooms.iter().cloned().collect();
    let order_recent = match criteria.get("order_by").and_then(Value::as_str) {
        None | Some("rank") => false,
        Some("recent") => true,
        Some(_) => return Err(ApiError(Error::invalid_param("order_by is rank or recent"))),
    };
    let context = match criteria.get("event_context") {
        None | Some(Value::Null) => None,
        Some(Value::Object(c)) => {
            let n = |k: &str| c.get(k).and_then(Value::as_u64).unwrap_or(5) as usize;
            let profiles = c
                .get("include_profile")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            Some((n("before_limit"), n("after_limit"), profiles))
        }
        Some(_) => return Err(bad("event_context must be an object")),
    };
    let group_keys: Vec<String> = criteria
        .get("groupings")
        .and_then(|g| g.get("group_by"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|g| g.get("key").and_then(Value::as_str).map(str::to_owned))
        .collect();
    let results =
        s.hs.search(
            &a.user_id,
            SearchRequest {
                term,
                keys,
                filter: EventFilter::new(&filter)?,
                rooms,
                not_rooms,
                order_recent,
                context,
                include_state: criteria.get("include_state").and_then(Value::as_bool) == Some(true),
                group_by_room: group_keys.iter().any(|k| k == "room_id"),
                group_by_sender: group_keys.iter().any(|k| k == "sender"),
                next_batch: q.next_batch,
            },
        )
        .await?;
    Ok(Json(
        json!({ "search_categories": { "room_events": room_events(&s, &a, results).await? } }),
    ))
}

async fn room_events(
    s: &AppState,
    a: &tessera_core::accounts::session::Session,
    r: SearchResults,
) -> Result<Value, ApiError> {
    let mut results = Vec::with_capacity(r.hits.len());
    for hit in r.hits {
        let mut event = [hit.event.to_client_json(&hit.room_id)];
        s.hs.add_transaction_ids(&a.user_id, &a.device_id, &mut event)
            .await?;
        // Spec ("Aggregations of child events"): search results carry their bundles.
        s.hs.add_relations(&hit.room_id, &a.user_id, &mut event)
            .await?;
        let [event] = event;
        let mut entry = json!({ "rank": hit.rank, "result": event });
        if let Some(ctx) = hit.context {
            entry["context"] = ctx;
        }
        results.push(entry);
    }
    let mut body = json!({
        "count": r.count,
        "highlights": r.highlights,
        "results": results,
    });
    if let Some(n) = r.next_batch {
        body["next_batch"] = n.into();
    }
    if !r.state.is_empty() {
        let state: Map<String, Value> = r
            .state
            .into_iter()
            .map(|(room, events)| (room.to_string(), Value::Array(events)))
            .collect();
        body["state"] = Value::Object(state);
    }
    if r.groups.as_object().is_some_and(|g| !g.is_empty()) {
        body["groups"] = r.groups;
    }
    Ok(body)
}
