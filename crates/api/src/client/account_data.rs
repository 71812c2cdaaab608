//! Account data, tags and filters (spec: "Client Config", "Room Tagging", "Filtering").

use axum::{
    extract::State,
    routing::{get, post, put},
    Json,
};
use ruma::{RoomId, UserId};
use serde_json::{json, Value};
use tessera_core::{accounts::Session, Error};

use super::Auth;
use crate::{
    extract::{Body, Path},
    ApiError, AppState, Routes,
};

pub fn routes(r: Routes) -> Routes {
    let mut r = r;
    for v in ["v3", "r0"] {
        r = r
            .route(
                &format!("/_matrix/client/{v}/user/{{user_id}}/account_data/{{kind}}"),
                get(get_global).put(set_global),
            )
            .route(
                &format!(
                    "/_matrix/client/{v}/user/{{user_id}}/rooms/{{room_id}}/account_data/{{kind}}"
                ),
                get(get_room).put(set_room),
            )
            .route(
                &format!("/_matrix/client/{v}/user/{{user_id}}/rooms/{{room_id}}/tags"),
                get(get_tags),
            )
            .route(
                &format!("/_matrix/client/{v}/user/{{user_id}}/rooms/{{room_id}}/tags/{{tag}}"),
                put(put_tag).delete(delete_tag),
            )
            .route(
                &format!("/_matrix/client/{v}/user/{{user_id}}/filter"),
                post(create_filter),
            )
            .route(
                &format!("/_matrix/client/{v}/user/{{user_id}}/filter/{{filter_id}}"),
                get(get_filter),
            );
    }
    r
}

fn own(session: &Session, user: &str) -> Result<(), ApiError> {
    match UserId::parse(user) {
        Ok(u) if u == session.user_id => Ok(()),
        Ok(_) => Err(ApiError(Error::forbidden(
            "Cannot access another user's data",
        ))),
        Err(_) => Err(ApiError(Error::invalid_param("Invalid user ID"))),
    }
}

fn room(id: &str) -> Result<ruma::OwnedRoomId, ApiError> {
    RoomId::parse(id).map_err(|_| ApiError(Error::invalid_param("Invalid room ID")))
}

/// Spec: `m.fully_read` and `m.push_rules` may not be set through these endpoints.
fn settable(kind: &str) -> Result<(), ApiError> {
    if kind == "m.fully_read" || kind == "m.push_rules" {
        return Err(ApiError(Error::Matrix(
            ruma::api::error::ErrorKind::BadJson,
            format!("Cannot set {kind} here"),
        )));
    }
    Ok(())
}

async fn get_global(
    State(s): State<AppState>,
    Auth(a): Auth,
    Path((user, kind)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    own(&a, &user)?;
    Ok(Json(s.hs.get_account_data(&a.user_id, None, &kind).await?))
}

async fn set_global(
    State(s): State<AppState>,
    Auth(a): Auth,
    Path((user, kind)): Path<(String, String)>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    own(&a, &user)?;
    settable(&kind)?;
    s.hs.set_account_data(&a.user_id, None, &kind, &body.json()?)
        .await?;
    Ok(Json(json!({})))
}

async fn get_room(
    State(s): State<AppState>,
    Auth(a): Auth,
    Path((user, room_id, kind)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    own(&a, &user)?;
    Ok(Json(
        s.hs.get_account_data(&a.user_id, Some(&room(&room_id)?), &kind)
            .await?,
    ))
}

async fn set_room(
    State(s): State<AppState>,
    Auth(a): Auth,
    Path((user, room_id, kind)): Path<(String, String, String)>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    own(&a, &user)?;
    settable(&kind)?;
    s.hs.set_account_data(&a.user_id, Some(&room(&room_id)?), &kind, &body.json()?)
        .await?;
    Ok(Json(json!({})))
}

async fn tags_of(s: &AppState, a: &Session, room_id: &RoomId) -> Result<Value, ApiError> {
    match s
        .hs
        .get_account_data(&a.user_id, Some(room_id), "m.tag")
        .await
    {
        Ok(v) => Ok(v),
        Err(Error::Matrix(ruma::api::error::ErrorKind::NotFound, _)) => Ok(json!({ "tags": {} })),
        Err(e) => Err(e.into()),
    }
}

/// Changes the `tags` object of `m.tag` content, whatever shape the stored content has
/// (clients may also set it as plain account data).
fn edit_tags(content: Value, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    let mut content = match content {
        Value::Object(o) => o,
        _ => serde_json::Map::new(),
    };
    let mut tags = match content.remove("tags") {
        Some(Value::Object(t)) => t,
        _ => serde_json::Map::new(),
    };
    edit(&mut tags);
    content.insert("tags".into(), Value::Object(tags));
    Value::Object(content)
}

async fn get_tags(
    State(s): State<AppState>,
    Auth(a): Auth,
    Path((user, room_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    own(&a, &user)?;
    Ok(Json(tags_of(&s, &a, &room(&room_id)?).await?))
}

async fn put_tag(
    State(s): State<AppState>,
    Auth(a): Auth,
    Path((user, room_id, tag)): Path<(String, String, String)>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    own(&a, &user)?;
    let room_id = room(&room_id)?;
    let info = body.json()?;
    if !info.is_object() {
        return Err(ApiError(Error::bad_json("Tag info must be an object")));
    }
    let tags = edit_tags(tags_of(&s, &a, &room_id).await?, |t| {
        t.insert(tag, info);
    });
    s.hs.set_account_data(&a.user_id, Some(&room_id), "m.tag", &tags)
        .await?;
    Ok(Json(json!({})))
}

async fn delete_tag(
    State(s): State<AppState>,
    Auth(a): Auth,
    Path((user, room_id, tag)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    own(&a, &user)?;
    let room_id = room(&room_id)?;
    let tags = edit_tags(tags_of(&s, &a, &room_id).await?, |t| {
        t.remove(&tag);
    });
    s.hs.set_account_data(&a.user_id, Some(&room_id), "m.tag", &tags)
        .await?;
    Ok(Json(json!({})))
}

async fn create_filter(
    State(s): State<AppState>,
    Auth(a): Auth,
    Path(user): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    own(&a, &user)?;
    let filter = body.json()?;
    let def = serde_json::from_value::<ruma::api::client::filter::FilterDefinition>(filter.clone())
        .map_err(|e| ApiError(Error::bad_json(format!("Invalid filter: {e}"))))?;
    // Refused now rather than by every sync that names it.
    tessera_core::sync::filter::SyncFilter::new(&def)?;
    let id = s.hs.create_filter(&a.user_id, &filter).await?;
    Ok(Json(json!({ "filter_id": id })))
}

async fn get_filter(
    State(s): State<AppState>,
    Auth(a): Auth,
    Path((user, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    own(&a, &user)?;
    Ok(Json(s.hs.get_filter(&a.user_id, &id).await?))
}
