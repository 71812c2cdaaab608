//! Relations and threads (spec: "Forming relationships between events", "Threading":
//! `/relations`, `/threads`). The policy is in `tessera_core::rooms::relations`.

use axum::{extract::State, Json};
use ruma::{
    api::{
        client::{
            relations::{
                get_relating_events, get_relating_events_with_rel_type,
                get_relating_events_with_rel_type_and_event_type,
            },
            threads::get_threads,
        },
        Direction as RumaDirection,
    },
    events::{relation::RelationType, TimelineEventType},
    OwnedEventId, OwnedRoomId,
};
use serde_json::{json, Value};
use tessera_core::{
    rooms::{
        read::Direction,
        relations::{RelationsPage, RelationsRequest},
    },
    sync::token::{parse_position, position_token},
};

use crate::{ruma_route, ApiError, AppState, Routes, Ruma};

pub fn routes(r: Routes) -> Routes {
    let r = ruma_route!(r, get_relating_events::v1::Request, relations);
    let r = ruma_route!(
        r,
        get_relating_events_with_rel_type::v1::Request,
        relations_of_type
    );
    let r = ruma_route!(
        r,
        get_relating_events_with_rel_type_and_event_type::v1::Request,
        relations_of_type_and_event_type
    );
    ruma_route!(r, get_threads::v1::Request, threads)
}

/// The query every `/relations` variant takes.
struct Query {
    room_id: OwnedRoomId,
    event_id: OwnedEventId,
    rel_type: Option<RelationType>,
    event_type: Option<TimelineEventType>,
    from: Option<String>,
    to: Option<String>,
    dir: RumaDirection,
    limit: Option<ruma::UInt>,
    recurse: bool,
}

async fn relations(
    State(s): State<AppState>,
    req: Ruma<get_relating_events::v1::Request>,
) -> Result<Json<Value>, ApiError> {
    let session = req.user()?.clone();
    let b = req.body;
    let q = Query {
        room_id: b.room_id,
        event_id: b.event_id,
        rel_type: None,
        event_type: None,
        from: b.from,
        to: b.to,
        dir: b.dir,
        limit: b.limit,
        recurse: b.recurse,
    };
    answer(&s, &session, q).await
}

async fn relations_of_type(
    State(s): State<AppState>,
    req: Ruma<get_relating_events_with_rel_type::v1::Request>,
) -> Result<Json<Value>, ApiError> {
    let session = req.user()?.clone();
    let b = req.body;
    let q = Query {
        room_id: b.room_id,
        event_id: b.event_id,
        rel_type: Some(b.rel_type),
        event_type: None,
        from: b.from,
        to: b.to,
        dir: b.dir,
        limit: b.limit,
        recurse: b.recurse,
    };
    answer(&s, &session, q).await
}

async fn relations_of_type_and_event_type(
    State(s): State<AppState>,
    req: Ruma<get_relating_events_with_rel_type_and_event_type::v1::Request>,
) -> Result<Json<Value>, ApiError> {
    let session = req.user()?.clone();
    let b = req.body;
    let q = Query {
        room_id: b.room_id,
        event_id: b.event_id,
        rel_type: Some(b.rel_type),
        event_type: Some(b.event_type),
        from: b.from,
        to: b.to,
        dir: b.dir,
        limit: b.limit,
        recurse: b.recurse,
    };
    answer(&s, &session, q).await
}

async fn answer(
    s: &AppState,
    session: &tessera_core::accounts::session::Session,
    q: Query,
) -> Result<Json<Value>, ApiError> {
    let dir = match q.dir {
        RumaDirection::Backward => Direction::Backward,
        RumaDirection::Forward => Direction::Forward,
    };
    let backward = dir == Direction::Backward;
    let from = q
        .from
        .as_deref()
        .map(|t| parse_position(t, backward))
        .transpose()?;
    let to =
        q.to.as_deref()
            .map(|t| parse_position(t, backward))
            .transpose()?;
    let rel_type = q.rel_type.as_ref().map(|t| t.to_string());
    let event_type = q.event_type.as_ref().map(|t| t.to_string());
    let RelationsPage {
        events,
        next,
        recursion_depth,
    } =
        s.hs.relations(
            &q.room_id,
            &session.user_id,
            &q.event_id,
            RelationsRequest {
                rel_type: rel_type.as_deref(),
                event_type: event_type.as_deref(),
                from,
                to,
                dir,
                limit: crate::extract::count(q.limit),
                recurse: q.recurse,
            },
        )
        .await?;
    let mut chunk: Vec<Value> = events
        .iter()
        .map(|p| p.to_client_json(&q.room_id))
        .collect();
    s.hs.add_transaction_ids(&session.user_id, &session.device_id, &mut chunk)
        .await?;
    s.hs.add_relations(&q.room_id, &session.user_id, &mut chunk)
        .await?;
    let mut body = json!({ "chunk": chunk });
    if let Some(next) = next {
        body["next_batch"] = position_token(next).into();
    }
    // Spec: `prev_batch` is absent on the first page, which is the one without `from`.
    if let Some(from) = q.from {
        body["prev_batch"] = from.into();
    }
    if let Some(depth) = recursion_depth {
        body["recursion_depth"] = depth.into();
    }
    Ok(Json(body))
}

async fn threads(
    State(s): State<AppState>,
    req: Ruma<get_threads::v1::Request>,
) -> Result<Json<Value>, ApiError> {
    let session = req.user()?.clone();
    let b = req.body;
    let from = b
        .from
        .as_deref()
        .map(|t| parse_position(t, true))
        .transpose()?;
    let participated = b.include == get_threads::v1::IncludeThreads::Participated;
    let page =
        s.hs.threads(
            &b.room_id,
            &session.user_id,
            participated,
            from,
            crate::extract::count(b.limit),
        )
        .await?;
    let mut chunk: Vec<Value> = page
        .roots
        .iter()
        .map(|p| p.to_client_json(&b.room_id))
        .collect();
    s.hs.add_transaction_ids(&session.user_id, &session.device_id, &mut chunk)
        .await?;
    s.hs.add_relations(&b.room_id, &session.user_id, &mut chunk)
        .await?;
    let mut body = json!({ "chunk": chunk });
    if let Some(next) = page.next {
        body["next_batch"] = position_token(next).into();
    }
    Ok(Json(body))
}
