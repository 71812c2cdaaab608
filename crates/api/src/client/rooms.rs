//! Room creation, events, state and reads (spec: "Rooms", "Events", "Room aliases",
//! "Typing Notifications").

use axum::{
    extract::State,
    routing::{get, post, put},
    Json,
};
use ruma::{
    api::{
        client::{
            filter::RoomEventFilter,
            room::{create_room, Visibility},
        },
        error::ErrorKind,
    },
    events::{StateEventType, TimelineEventType},
    serde::Raw,
    RoomAliasId, RoomId, UserId,
};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tessera_core::{
    rooms::{
        create::{CreateRoom, Preset},
        read::{Direction, PageRequest},
        send::NewEvent,
        write::Txn,
    },
    sync::{
        account_data::MAX_FILTER_BYTES,
        filter::EventFilter,
        token::{parse_position, position_token},
    },
    Error,
};

use super::Auth;
use crate::{
    extract::{Body, Path, Query},
    rate_limit::Class,
    ruma_route, ApiError, AppState, Routes, Ruma,
};

pub fn routes(r: Routes) -> Routes {
    let mut r = ruma_route!(r, create_room::v3::Request, create, Class::Messages);
    for v in ["v3", "r0"] {
        let p = |s: &str| format!("/_matrix/client/{v}{s}");
        r = r
            .limited(
                &p("/rooms/{room_id}/send/{kind}/{txn_id}"),
                put(send),
                Class::Messages,
            )
            .route(&p("/rooms/{room_id}/state"), get(all_state))
            .limited(
                &p("/rooms/{room_id}/state/{kind}"),
                get(get_state_empty_key).put(put_state_empty_key),
                Class::Messages,
            )
            .limited(
                &p("/rooms/{room_id}/state/{kind}/"),
                get(get_state_empty_key).put(put_state_empty_key),
                Class::Messages,
            )
            .limited(
                &p("/rooms/{room_id}/state/{kind}/{state_key}"),
                get(get_state).put(put_state),
                Class::Messages,
            )
            .route(&p("/rooms/{room_id}/messages"), get(messages))
            .route(&p("/rooms/{room_id}/event/{event_id}"), get(event))
            .route(&p("/events/{event_id}"), get(event_by_id))
            .route(&p("/rooms/{room_id}/context/{event_id}"), get(context))
            .limited(
                &p("/rooms/{room_id}/redact/{event_id}/{txn_id}"),
                put(redact),
                Class::Messages,
            )
            .limited(
                &p("/rooms/{room_id}/receipt/{kind}/{event_id}"),
                post(receipt),
                Class::Ephemeral,
            )
            .limited(
                &p("/rooms/{room_id}/read_markers"),
                post(read_markers),
                Class::Ephemeral,
            )
            .route(&p("/rooms/{room_id}/members"), get(members))
            .route(&p("/rooms/{room_id}/joined_members"), get(joined_members))
            .limited(
                &p("/rooms/{room_id}/typing/{user_id}"),
                put(typing),
                Class::Ephemeral,
            )
            .route(&p("/joined_rooms"), get(joined_rooms))
            .route(
                &p("/directory/room/{alias}"),
                get(get_alias).put(put_alias).delete(delete_alias),
            );
    }
    r
}

/// A room event filter given inline (`filter=` on `/messages` and `/context`), compiled.
fn event_filter(json: Option<&str>) -> Result<EventFilter, ApiError> {
    let Some(json) = json else {
        return Ok(EventFilter::default());
    };
    if json.len() > MAX_FILTER_BYTES {
        return Err(ApiError(Error::Matrix(
            ErrorKind::TooLarge,
            "Filter too large".into(),
        )));
    }
    let filter: RoomEventFilter = serde_json::from_str(json)
        .map_err(|_| Error::Matrix(ErrorKind::BadJson, "Invalid filter".into()))?;
    Ok(EventFilter::new(&filter)?)
}

pub fn room_id(s: &str) -> Result<ruma::OwnedRoomId, ApiError> {
    RoomId::parse(s).map_err(|_| ApiError(Error::invalid_param("Invalid room ID")))
}

fn object(v: Value) -> Result<Value, ApiError> {
    if v.is_object() {
        Ok(v)
    } else {
        Err(ApiError(Error::bad_json("Content must be a JSON object")))
    }
}

async fn create(
    State(s): State<AppState>,
    req: Ruma<create_room::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let session = req.user()?.clone();
    let user = session.user_id.clone();
    let b = req.body;
    // Invites made with the room spend the invite budget, and initial state events the
    // message budget (up to all of either): one request must not do many requests' work.
    if !s.limiter.exempt(Some(&session)) {
        for (class, n) in [
            (Class::Invites, b.invite.len()),
            (Class::Messages, b.initial_state.len()),
        ] {
            if n > 0 {
                let n = u32::try_from(n).unwrap_or(u32::MAX);
                s.limiter.check_up_to(class, user.as_str(), n)?;
            }
        }
    }
    fn parse_raw<T>(raw: &Raw<T>) -> Result<Map<String, Value>, ApiError> {
        serde_json::from_str(raw.json().get())
            .map_err(|_| ApiError(Error::bad_json("Expected a JSON object")))
    }
    let mut initial_state = Vec::new();
    for raw in &b.initial_state {
        let v: Value = serde_json::from_str(raw.json().get())
            .map_err(|_| Error::bad_json("Bad initial_state event"))?;
        let kind = v["type"]
            .as_str()
            .ok_or_else(|| Error::bad_json("initial_state event without type"))?;
        let key = v["state_key"].as_str().unwrap_or("");
        initial_state.push(NewEvent::state(
            StateEventType::from(kind),
            key,
            object(v["content"].clone())?,
        ));
    }
    let preset = match b.preset.as_ref().map(|p| p.as_str()) {
        None => None,
        Some("trusted_private_chat") => Some(Preset::TrustedPrivateChat),
        Some("public_chat") => Some(Preset::PublicChat),
        Some("private_chat") => Some(Preset::PrivateChat),
        Some(_) => return Err(ApiError(Error::invalid_param("Unknown preset"))),
    };
    let room =
        s.hs.create_room(
            &user,
            CreateRoom {
                preset,
                public: b.visibility == Visibility::Public,
                room_version: b.room_version,
                creation_content: b.creation_content.as_ref().map(parse_raw).transpose()?,
                initial_state,
                invite: b.invite,
                is_direct: b.is_direct,
                name: b.name,
                topic: b.topic,
                alias_localpart: b.room_alias_name,
                power_level_override: b
                    .power_level_content_override
                    .as_ref()
                    .map(parse_raw)
                    .transpose()?,
            },
        )
        .await?;
    Ok(Json(json!({ "room_id": room })))
}

async fn send(
    State(s): State<AppState>,
    Auth(a): Auth,
    Path((room, kind, txn_id)): Path<(String, String, String)>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let room = room_id(&room)?;
    let content = Value::Object(body.object()?);
    let event = NewEvent::message(TimelineEventType::from(kind.as_str()), content);
    let txn = Txn {
        user_id: a.user_id.as_str(),
        device_id: a.device_id.as_str(),
        scope: format!("send/{room}/{kind}"),
        txn_id: &txn_id,
    };
    require_room(&s, &room).await?;
    let id = s.hs.send_event(&room, &a.user_id, event, Some(txn)).await?;
    Ok(Json(json!({ "event_id": id })))
}

/// Unknown rooms are 404; membership itself is judged by the auth rules.
async fn require_room(s: &AppState, room: &RoomId) -> Result<(), ApiError> {
    if !s.hs.room_exists(room).await? {
        return Err(ApiError(Error::not_found("Unknown room")));
    }
    Ok(())
}

async fn all_state(
    State(s): State<AppState>,
    Auth(a): Auth,
    Path(room): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let room = room_id(&room)?;
    let events = s.hs.state_events(&room, &a.user_id).await?;
    Ok(Json(Value::Array(
        events.iter().map(|p| p.to_client_json(&room)).collect(),
    )))
}

#[derive(Deserialize)]
struct FormatQuery {
    format: Option<String>,
}

async fn get_state_inner(
    s: &AppState,
    a: &tessera_core::accounts::Session,
    room: &str,
    kind: &str,
    key: &str,
    format: Option<String>,
) -> Result<Json<Value>, ApiError> {
    let room = room_id(room)?;
    let pdu =
        s.hs.state_event(&room, &a.user_id, &StateEventType::from(kind), key)
            .await?;
    let event = pdu.to_client_json(&room);
    Ok(Json(if format.as_deref() == Some("event") {
        event
    } else {
        event["content"].clone()
    }))
}

async fn get_state(
    State(s): State<AppState>,
    Auth(a): Auth,
    Path((room, kind, key)): Path<(String, String, String)>,
    Query(q): Query<FormatQuery>,
) -> Result<Json<Value>, ApiError> {
    get_state_inner(&s, &a, &room, &kind, &key, q.format).await
}

async fn get_state_empty_key(
    State(s): State<AppState>,
    Auth(a): Auth,
    Path((room, kind)): Path<(String, String)>,
    Query(q): Query<FormatQuery>,
) -> Result<Json<Value>, ApiError> {
    get_state_inner(&s, &a, &room, &kind, "", q.format).await
}

async fn put_state_inner(
    s: &AppState,
    a: &tessera_core::accounts::Session,
    room: &str,
    kind: &str,
    key: &str,
    body: &Body,
) -> Result<Json<Value>, ApiError> {
    let room = room_id(room)?;
    let content = Value::Object(body.object()?);
    require_room(s, &room).await?;
    let id =
        s.hs.put_state(&room, &a.user_id, StateEventType::from(kind), key, content)
            .await?;
    Ok(Json(json!({ "event_id": id })))
}

async fn put_state(
    State(s): State<AppState>,
    Auth(a): Auth,
    Path((room, kind, key)): Path<(String, String, String)>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    put_state_inner(&s, &a, &room, &kind, &key, &body).await
}

async fn put_state_empty_key(
    State(s): State<AppState>,
    Auth(a): Auth,
    Path((room, kind)): Path<(String, String)>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    put_state_inner(&s, &a, &room, &kind, "", &body).await
}

#[derive(Deserialize)]
struct MessagesQuery {
    from: Option<String>,
    to: Option<String>,
    dir: Option<String>,
    limit: Option<String>,
    filter: Option<String>,
}

async fn messages(
    State(s): State<AppState>,
    Auth(a): Auth,
    Path(room): Path<String>,
    Query(q): Query<MessagesQuery>,
) -> Result<Json<Value>, ApiError> {
    let room = room_id(&room)?;
    let dir = match q.dir.as_deref() {
        Some("b") => Direction::Backward,
        Some("f") => Direction::Forward,
        _ => return Err(ApiError(Error::invalid_param("dir must be b or f"))),
    };
    let limit = match q.limit {
        Some(l) => l
            .parse::<usize>()
            .map_err(|_| Error::invalid_param("Invalid limit"))?,
        None => 10,
    };
    let filter = event_filter(q.filter.as_deref())?;
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
    let lazy = filter.lazy_members;
    let keep = move |p: &tessera_core::rooms::Pdu| filter.allows(p);
    let page =
        s.hs.messages(
            &room,
            &a.user_id,
            PageRequest {
                from,
                to,
                dir,
                limit,
            },
            &keep,
        )
        .await?;
    let mut chunk: Vec<Value> = page
        .events
        .iter()
        .map(|p| p.to_client_json(&room))
        .collect();
    s.hs.add_transaction_ids(&a.user_id, &a.device_id, &mut chunk)
        .await?;
    s.hs.add_relations(&room, &a.user_id, &mut chunk).await?;
    // Spec: `start` is the `from` given.
    let start = q.from.clone().unwrap_or_else(|| position_token(page.start));
    let mut body = json!({ "start": start, "chunk": chunk });
    if let Some(end) = page.end {
        body["end"] = position_token(end).into();
    }
    // Spec: with lazy_load_members, `state` carries the senders' member events.
    if lazy {
        let mut senders: Vec<_> = page.events.iter().map(|p| p.sender.clone()).collect();
        senders.sort();
        senders.dedup();
        let mut state = Vec::new();
        for sender in senders {
            let kind = StateEventType::RoomMember;
            if let Ok(m) =
                s.hs.state_event(&room, &a.user_id, &kind, sender.as_str())
                    .await
            {
                state.push(m.to_client_json(&room));
            }
        }
        body["state"] = Value::Array(state);
    }
    Ok(Json(body))
}

async fn event(
    State(s): State<AppState>,
    Auth(a): Auth,
    Path((room, event_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let room = room_id(&room)?;
    let id =
        ruma::EventId::parse(&event_id).map_err(|_| Error::invalid_param("Invalid event ID"))?;
    let pdu = s.hs.event_for_user(&room, &a.user_id, &id).await?;
    let mut event = [pdu.to_client_json(&room)];
    s.hs.add_transaction_ids(&a.user_id, &a.device_id, &mut event)
        .await?;
    s.hs.add_relations(&room, &a.user_id, &mut event).await?;
    let [event] = event;
    Ok(Json(event))
}

/// The deprecated `GET /events/{eventId}`: as `/rooms/{roomId}/event/{eventId}` for the
/// room the event is in (404 alike when it is unknown or not visible).
async fn event_by_id(
    State(s): State<AppState>,
    auth: Auth,
    Path(event_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id =
        ruma::EventId::parse(&event_id).map_err(|_| Error::invalid_param("Invalid event ID"))?;
    let room =
        s.hs.room_of_event(&id)
            .await?
            .ok_or_else(|| Error::not_found("Event not found"))?;
    event(State(s), auth, Path((room.to_string(), event_id))).await
}

#[derive(Deserialize)]
struct MembersQuery {
    at: Option<String>,
    membership: Option<String>,
    not_membership: Option<String>,
}

async fn members(
    State(s): State<AppState>,
    Auth(a): Auth,
    Path(room): Path<String>,
    Query(q): Query<MembersQuery>,
) -> Result<Json<Value>, ApiError> {
    let room = room_id(&room)?;
    let events =
        s.hs.members(
            &room,
            &a.user_id,
            q.at.as_deref()
                .map(|t| parse_position(t, false))
                .transpose()?,
            q.membership.as_deref(),
            q.not_membership.as_deref(),
        )
        .await?;
    Ok(Json(
        json!({ "chunk": events.iter().map(|p| p.to_client_json(&room)).collect::<Vec<_>>() }),
    ))
}

async fn joined_members(
    State(s): State<AppState>,
    Auth(a): Auth,
    Path(room): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let room = room_id(&room)?;
    // Spec: the requester must be in the room now.
    if s.hs.membership(&room, &a.user_id).await?.as_deref() != Some("join") {
        return Err(ApiError(Error::forbidden(
            "You aren't a member of the room",
        )));
    }
    let events =
        s.hs.members(&room, &a.user_id, None, Some("join"), None)
            .await?;
    let mut joined = Map::new();
    for p in events {
        let c: Value = serde_json::from_str(p.content.get()).unwrap_or_default();
        if let Some(key) = &p.state_key {
            // Both fields are strings when present, and left out otherwise.
            let mut member = Map::new();
            for (from, to) in [
                ("displayname", "display_name"),
                ("avatar_url", "avatar_url"),
            ] {
                if let Some(v) = c.get(from).filter(|v| v.is_string()) {
                    member.insert(to.into(), v.clone());
                }
            }
            joined.insert(key.clone(), Value::Object(member));
        }
    }
    Ok(Json(json!({ "joined": joined })))
}

async fn joined_rooms(State(s): State<AppState>, Auth(a): Auth) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        json!({ "joined_rooms": s.hs.joined_rooms(&a.user_id).await? }),
    ))
}

async fn typing(
    State(s): State<AppState>,
    Auth(a): Auth,
    Path((room, user)): Path<(String, String)>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let room = room_id(&room)?;
    if UserId::parse(&user).ok().as_deref() != Some(&*a.user_id) {
        return Err(ApiError(Error::forbidden(
            "Cannot set typing for another user",
        )));
    }
    let body = body.json()?;
    let typing = body["typing"]
        .as_bool()
        .ok_or_else(|| Error::bad_json("`typing` must be a boolean"))?;
    let timeout = body["timeout"].as_u64().unwrap_or(30_000);
    if s.hs.membership(&room, &a.user_id).await?.as_deref() != Some("join") {
        return Err(ApiError(Error::forbidden("You are not in this room")));
    }
    s.hs.set_typing(&room, &a.user_id, typing, timeout).await;
    Ok(Json(json!({})))
}

fn alias(s: &str) -> Result<ruma::OwnedRoomAliasId, ApiError> {
    RoomAliasId::parse(s).map_err(|_| ApiError(Error::invalid_param("Invalid room alias")))
}

async fn get_alias(
    State(s): State<AppState>,
    Path(a): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let a = alias(&a)?;
    let room =
        s.hs.resolve_alias(&a)
            .await?
            .ok_or_else(|| Error::not_found("Unknown alias"))?;
    Ok(Json(
        json!({ "room_id": room, "servers": [s.hs.server_name()] }),
    ))
}

async fn put_alias(
    State(s): State<AppState>,
    Auth(u): Auth,
    Path(a): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let a = alias(&a)?;
    let body = body.json()?;
    let room = room_id(
        body["room_id"]
            .as_str()
            .ok_or_else(|| Error::bad_json("room_id required"))?,
    )?;
    if !s.hs.room_exists(&room).await? {
        return Err(ApiError(Error::not_found("Unknown room")));
    }
    s.hs.set_alias(&a, &room, &u.user_id).await?;
    Ok(Json(json!({})))
}

async fn delete_alias(
    State(s): State<AppState>,
    Auth(u): Auth,
    Path(a): Path<String>,
) -> Result<Json<Value>, ApiError> {
    s.hs.delete_alias(&alias(&a)?, &u.user_id, u.is_admin)
        .await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct ContextQuery {
    limit: Option<usize>,
    filter: Option<String>,
}

async fn context(
    State(s): State<AppState>,
    Auth(a): Auth,
    Path((room, event_id)): Path<(String, String)>,
    Query(q): Query<ContextQuery>,
) -> Result<Json<Value>, ApiError> {
    let room = room_id(&room)?;
    let id =
        ruma::EventId::parse(&event_id).map_err(|_| Error::invalid_param("Invalid event ID"))?;
    let filter = event_filter(q.filter.as_deref())?;
    let lazy = filter.lazy_members;
    let keep = move |p: &tessera_core::rooms::Pdu| filter.allows(p);
    let ctx =
        s.hs.context(&room, &a.user_id, &id, q.limit.unwrap_or(10), &keep, lazy)
            .await?;
    let mut event = [ctx.event.to_client_json(&room)];
    let mut before: Vec<Value> = ctx.before.iter().map(|p| p.to_client_json(&room)).collect();
    let mut after: Vec<Value> = ctx.after.iter().map(|p| p.to_client_json(&room)).collect();
    for events in [&mut event[..], &mut before, &mut after] {
        s.hs.add_transaction_ids(&a.user_id, &a.device_id, events)
            .await?;
        s.hs.add_relations(&room, &a.user_id, events).await?;
    }
    let [event] = event;
    Ok(Json(json!({
        "event": event,
        "events_before": before,
        "events_after": after,
        "start": position_token(ctx.start),
        "end": position_token(ctx.end),
        "state": ctx.state.iter().map(|p| p.to_client_json(&room)).collect::<Vec<_>>(),
    })))
}

async fn redact(
    State(s): State<AppState>,
    Auth(a): Auth,
    Path((room, event_id, txn_id)): Path<(String, String, String)>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let room = room_id(&room)?;
    let target =
        ruma::EventId::parse(&event_id).map_err(|_| Error::invalid_param("Invalid event ID"))?;
    let body = body.object_or_empty()?;
    let reason = body
        .get("reason")
        .and_then(|r| r.as_str())
        .map(str::to_owned);
    let txn = Txn {
        user_id: a.user_id.as_str(),
        device_id: a.device_id.as_str(),
        scope: format!("redact/{room}"),
        txn_id: &txn_id,
    };
    let id =
        s.hs.redact_event(&room, &a.user_id, &target, reason, txn)
            .await?;
    Ok(Json(json!({ "event_id": id })))
}

#[derive(Deserialize)]
struct ReceiptBody {
    thread_id: Option<String>,
}

async fn receipt(
    State(s): State<AppState>,
    Auth(a): Auth,
    Path((room, kind, event_id)): Path<(String, String, String)>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let room = room_id(&room)?;
    let id =
        ruma::EventId::parse(&event_id).map_err(|_| Error::invalid_param("Invalid event ID"))?;
    let body: ReceiptBody = serde_json::from_value(Value::Object(body.object_or_empty()?))
        .map_err(|e| Error::bad_json(e.to_string()))?;
    s.hs.set_receipt(&room, &a.user_id, &kind, &id, body.thread_id.as_deref())
        .await?;
    Ok(Json(json!({})))
}

async fn read_markers(
    State(s): State<AppState>,
    Auth(a): Auth,
    Path(room): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let room = room_id(&room)?;
    let body = body.object()?;
    for kind in ["m.fully_read", "m.read", "m.read.private"] {
        if let Some(v) = body.get(kind) {
            let id = v
                .as_str()
                .and_then(|s| ruma::EventId::parse(s).ok())
                .ok_or_else(|| Error::bad_json(format!("{kind} must be an event ID")))?;
            s.hs.set_receipt(&room, &a.user_id, kind, &id, None).await?;
        }
    }
    Ok(Json(json!({})))
}
