//! Push rules (spec: "Push Rules: API"), pushers (`/pushers`, `/pushers/set`) and the
//! list of notifications.

use axum::{
    extract::State,
    routing::{get, post},
    Json,
};
use ruma::{
    api::client::push::{
        delete_pushrule, get_notifications, get_pushrule, get_pushrule_actions,
        get_pushrule_enabled, get_pushrules_all, get_pushrules_global_scope, set_pushrule,
        set_pushrule_actions, set_pushrule_enabled,
    },
    push::{AnyPushRuleRef, RuleKind, Ruleset},
};
use serde_json::{json, Value};
use tessera_core::Error;

use super::Auth;
use crate::{extract::Body, ruma_route, ApiError, AppState, Routes, Ruma};

pub fn routes(r: Routes) -> Routes {
    let r = ruma_route!(r, get_pushrules_all::v3::Request, all);
    let r = ruma_route!(r, get_pushrules_global_scope::v3::Request, global);
    let r = ruma_route!(r, get_pushrule::v3::Request, get_rule);
    let r = ruma_route!(r, set_pushrule::v3::Request, set_rule);
    let r = ruma_route!(r, delete_pushrule::v3::Request, delete_rule);
    let r = ruma_route!(r, get_pushrule_enabled::v3::Request, get_enabled);
    let r = ruma_route!(r, set_pushrule_enabled::v3::Request, set_enabled);
    let r = ruma_route!(r, get_pushrule_actions::v3::Request, get_actions);
    let r = ruma_route!(r, set_pushrule_actions::v3::Request, set_actions);
    let mut r = ruma_route!(r, get_notifications::v3::Request, notifications);
    for v in ["v3", "r0"] {
        r = r
            .route(&format!("/_matrix/client/{v}/pushers"), get(pushers))
            .route(
                &format!("/_matrix/client/{v}/pushers/set"),
                post(set_pusher),
            );
    }
    r
}

/// `GET /pushers`.
async fn pushers(State(s): State<AppState>, Auth(a): Auth) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "pushers": s.hs.pushers(&a.user_id).await? })))
}

/// `POST /pushers/set`: the body is read field by field in the core, so a missing field
/// is `M_MISSING_PARAM` and a wrong one `M_INVALID_PARAM`, as the spec's examples show.
async fn set_pusher(
    State(s): State<AppState>,
    Auth(a): Auth,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    s.hs.set_pusher(&a, &body.object()?).await?;
    Ok(Json(json!({})))
}

/// `GET /notifications`; `only=highlight` for highlights only.
async fn notifications(
    State(s): State<AppState>,
    req: Ruma<get_notifications::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let user = req.user()?.user_id.clone();
    let b = req.body;
    let highlights = match b.only.as_deref() {
        None => false,
        Some("highlight") => true,
        Some(_) => return Err(ApiError(Error::invalid_param("only may be \"highlight\""))),
    };
    let limit = crate::extract::count(b.limit);
    let (list, next) =
        s.hs.notifications(&user, b.from.as_deref(), limit, highlights)
            .await?;
    let mut body = json!({ "notifications": list });
    if let Some(n) = next {
        body["next_token"] = n.into();
    }
    Ok(Json(body))
}

fn rule_json(rule: AnyPushRuleRef<'_>) -> Value {
    let v = match rule {
        AnyPushRuleRef::Override(r) | AnyPushRuleRef::Underride(r) => serde_json::to_value(r),
        AnyPushRuleRef::Content(r) => serde_json::to_value(r),
        AnyPushRuleRef::Room(r) => serde_json::to_value(r),
        AnyPushRuleRef::Sender(r) => serde_json::to_value(r),
        _ => Ok(Value::Null),
    };
    v.unwrap_or(Value::Null)
}

fn find<'a>(rules: &'a Ruleset, kind: &RuleKind, id: &str) -> Result<AnyPushRuleRef<'a>, ApiError> {
    rules
        .get(kind.clone(), id)
        .ok_or_else(|| ApiError(Error::not_found("Unknown push rule")))
}

async fn all(
    State(s): State<AppState>,
    req: Ruma<get_pushrules_all::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(s.hs.push_rules_content(&req.user()?.user_id).await?))
}

async fn global(
    State(s): State<AppState>,
    req: Ruma<get_pushrules_global_scope::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        serde_json::to_value(s.hs.push_rules(&req.user()?.user_id).await?)
            .map_err(Error::internal)?,
    ))
}

async fn get_rule(
    State(s): State<AppState>,
    req: Ruma<get_pushrule::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let rules = s.hs.push_rules(&req.user()?.user_id).await?;
    Ok(Json(rule_json(find(
        &rules,
        &req.body.kind,
        &req.body.rule_id,
    )?)))
}

async fn set_rule(
    State(s): State<AppState>,
    req: Ruma<set_pushrule::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let user = req.user()?.user_id.clone();
    let b = req.body;
    s.hs.update_push_rules(&user, |rules| {
        rules
            .insert(b.rule, b.after.as_deref(), b.before.as_deref())
            .map_err(|e| Error::Matrix(ruma::api::error::ErrorKind::BadJson, e.to_string()))
    })
    .await?;
    Ok(Json(json!({})))
}

async fn delete_rule(
    State(s): State<AppState>,
    req: Ruma<delete_pushrule::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let user = req.user()?.user_id.clone();
    let b = req.body;
    s.hs.update_push_rules(&user, |rules| {
        rules
            .remove(b.kind, &b.rule_id)
            .map_err(|e| Error::not_found(e.to_string()))
    })
    .await?;
    Ok(Json(json!({})))
}

async fn get_enabled(
    State(s): State<AppState>,
    req: Ruma<get_pushrule_enabled::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let rules = s.hs.push_rules(&req.user()?.user_id).await?;
    Ok(Json(
        json!({ "enabled": find(&rules, &req.body.kind, &req.body.rule_id)?.enabled() }),
    ))
}

async fn set_enabled(
    State(s): State<AppState>,
    req: Ruma<set_pushrule_enabled::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let user = req.user()?.user_id.clone();
    let b = req.body;
    s.hs.update_push_rules(&user, |rules| {
        rules
            .set_enabled(b.kind, &b.rule_id, b.enabled)
            .map_err(|e| Error::not_found(e.to_string()))
    })
    .await?;
    Ok(Json(json!({})))
}

async fn get_actions(
    State(s): State<AppState>,
    req: Ruma<get_pushrule_actions::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let rules = s.hs.push_rules(&req.user()?.user_id).await?;
    let rule = find(&rules, &req.body.kind, &req.body.rule_id)?;
    Ok(Json(json!({ "actions": rule.actions() })))
}

async fn set_actions(
    State(s): State<AppState>,
    req: Ruma<set_pushrule_actions::v3::Request>,
) -> Result<Json<Value>, ApiError> {
    let user = req.user()?.user_id.clone();
    let b = req.body;
    s.hs.update_push_rules(&user, |rules| {
        rules
            .set_actions(b.kind, &b.rule_id, b.actions)
            .map_err(|e| Error::not_found(e.to_string()))
    })
    .await?;
    Ok(Json(json!({})))
}
