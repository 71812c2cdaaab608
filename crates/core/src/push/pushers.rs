//! Pushers (spec: "Push Notifications", `GET /pushers`, `POST /pushers/set`): where a
//! user's notifications go. Only `http` pushers are served; an `email` pusher needs an
//! email address bound to the account, which this server does not have (3PIDs are not
//! supported). Delivery is in `delivery.rs`.

use ruma::{api::error::ErrorKind, UserId};
use serde_json::{json, Map, Value as Json};

use crate::{
    accounts::Session,
    ports::{Statement, Value},
    Error, Homeserver, Result,
};

/// Spec: `app_id` is at most 64 characters, `pushkey` at most 512 bytes.
const MAX_APP_ID_CHARS: usize = 64;
const MAX_PUSHKEY_BYTES: usize = 512;
/// Display names, `lang` and `profile_tag`: the spec sets no limit.
const MAX_LABEL_BYTES: usize = 512;
/// The pusher's `data`, as JSON, forwarded with every notification.
const MAX_DATA_BYTES: usize = 4096;
/// Pushers one account may have (a phone or browser each).
pub(crate) const MAX_PUSHERS_PER_USER: usize = 50;
/// The path every HTTP pusher's URL must have (spec v1.13 and later).
pub(crate) const NOTIFY_PATH: &str = "/_matrix/push/v1/notify";

/// A stored pusher, as `GET /pushers` lists it.
fn pusher_json(r: &crate::ports::Row) -> Result<Json> {
    let data: Json = serde_json::from_str(&r.text(6)?).map_err(Error::internal)?;
    let mut p = json!({
        "app_id": r.text(0)?,
        "pushkey": r.text(1)?,
        "kind": r.text(2)?,
        "app_display_name": r.text(3)?,
        "device_display_name": r.text(4)?,
        "lang": r.text(5)?,
        "data": data,
    });
    if let Some(tag) = r.opt_text(7)? {
        p["profile_tag"] = tag.into();
    }
    Ok(p)
}

/// A string field, `None` when absent or null.
fn opt_string<'a>(body: &'a Map<String, Json>, key: &str) -> Result<Option<&'a str>> {
    match body.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => Ok(Some(s)),
        Some(_) => Err(Error::invalid_param(format!("{key} must be a string"))),
    }
}

/// The pusher's `data` for an `http` pusher: an object whose `url` is an http(s) URL
/// with the notify path.
fn check_http_data(data: &Map<String, Json>) -> Result<()> {
    let Some(url) = data.get("url") else {
        return Err(Error::Matrix(
            ErrorKind::MissingParam,
            "data.url is required for an http pusher".into(),
        ));
    };
    let Some(url) = url.as_str() else {
        return Err(Error::invalid_param("data.url must be a string"));
    };
    let parsed = url::Url::parse(url).map_err(|_| Error::invalid_param("data.url is not a URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(Error::invalid_param(
            "data.url must be an http or https URL",
        ));
    }
    if parsed.path() != NOTIFY_PATH {
        return Err(Error::invalid_param(format!(
            "data.url must have the path {NOTIFY_PATH}"
        )));
    }
    if data.get("format").is_some_and(|f| !f.is_string()) {
        return Err(Error::invalid_param("data.format must be a string"));
    }
    Ok(())
}

impl Homeserver {
    /// `GET /pushers`.
    pub async fn pushers(&self, user: &UserId) -> Result<Vec<Json>> {
        let rows = self
            .db
            .query(
                "SELECT app_id, pushkey, kind, app_display_name, device_display_name, lang, data, profile_tag
                 FROM pushers WHERE user_id = $1 ORDER BY updated_ts, app_id, pushkey LIMIT $2",
                vec![user.as_str().into(), Value::Int(MAX_PUSHERS_PER_USER as i64)],
            )
            .await?;
        rows.iter().map(pusher_json).collect()
    }

    /// `POST /pushers/set`: creates or replaces the pusher `(app_id, pushkey)` of the user,
    /// or deletes it when `kind` is null. Unless `append`, the same pusher of other users
    /// goes (a pushkey names a device; it has one user at a time).
    pub async fn set_pusher(&self, session: &Session, body: &Map<String, Json>) -> Result<()> {
        let user = session.user_id.as_str();
        let mut missing = Vec::new();
        let (app_id, pushkey) = (opt_string(body, "app_id")?, opt_string(body, "pushkey")?);
        let kind = match body.get("kind") {
            None => None,
            Some(Json::Null) => Some(None),
            Some(Json::String(k)) => Some(Some(k.as_str())),
            Some(_) => return Err(Error::invalid_param("kind must be a string or null")),
        };
        let (Some(app_id), Some(pushkey), Some(kind)) = (app_id, pushkey, kind) else {
            let absent: Vec<&str> = [
                ("kind", body.contains_key("kind")),
                ("app_id", app_id.is_some()),
                ("pushkey", pushkey.is_some()),
            ]
            .into_iter()
            .filter_map(|(k, present)| (!present).then_some(k))
            .collect();
            return Err(Error::Matrix(
                ErrorKind::MissingParam,
                format!("Missing parameters: {}", absent.join(", ")),
            ));
        };
        crate::input::name("app_id", app_id, MAX_APP_ID_CHARS * 4)?;
        if app_id.chars().count() > MAX_APP_ID_CHARS {
            return Err(Error::invalid_param(format!(
                "app_id is longer than {MAX_APP_ID_CHARS} characters"
            )));
        }
        crate::input::name("pushkey", pushkey, MAX_PUSHKEY_BYTES)?;
        let Some(kind) = kind else {
            self.db
                .execute(
                    "DELETE FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3",
                    vec![user.into(), app_id.into(), pushkey.into()],
                )
                .await?;
            return Ok(());
        };
        match kind {
            "http" => {}
            "email" => return Err(Error::invalid_param(
                "Email pushers need an email address bound to the account; this server has none",
            )),
            other => {
                return Err(Error::invalid_param(format!(
                    "Unknown pusher kind {other:?}; this server has http pushers"
                )))
            }
        }
        let mut required = |key: &'static str| {
            let v = opt_string(body, key)?;
            if v.is_none() {
                missing.push(key);
            }
            Ok::<_, Error>(v)
        };
        let app_name = required("app_display_name")?;
        let device_name = required("device_display_name")?;
        let lang = required("lang")?;
        let data = match body.get("data") {
            None | Some(Json::Null) => {
                missing.push("data");
                None
            }
            Some(Json::Object(d)) => Some(d),
            Some(_) => return Err(Error::invalid_param("data must be an object")),
        };
        let (Some(app_name), Some(device_name), Some(lang), Some(data)) =
            (app_name, device_name, lang, data)
        else {
            return Err(Error::Matrix(
                ErrorKind::MissingParam,
                format!("Missing parameters: {}", missing.join(", ")),
            ));
        };
        for (what, v) in [
            ("app_display_name", app_name),
            ("device_display_name", device_name),
            ("lang", lang),
        ] {
            crate::input::text(what, v, MAX_LABEL_BYTES)?;
        }
        let profile_tag = opt_string(body, "profile_tag")?;
        crate::input::text("profile_tag", profile_tag.unwrap_or(""), MAX_LABEL_BYTES)?;
        let append = match body.get("append") {
            None | Some(Json::Null) => false,
            Some(Json::Bool(b)) => *b,
            Some(_) => return Err(Error::invalid_param("append must be a boolean")),
        };
        check_http_data(data)?;
        let data_json = serde_json::to_string(data)?;
        if data_json.len() > MAX_DATA_BYTES {
            return Err(Error::invalid_param(format!(
                "data is larger than {MAX_DATA_BYTES} bytes"
            )));
        }
        crate::ports::check_storable(&[Value::Text(data_json.clone())])
            .map_err(|_| Error::invalid_param("data may not contain a NUL character"))?;
        let existing = self
            .db
            .query(
                "SELECT app_id, pushkey FROM pushers WHERE user_id = $1 LIMIT $2",
                vec![user.into(), Value::Int(MAX_PUSHERS_PER_USER as i64 + 1)],
            )
            .await?;
        let replaces = existing
            .iter()
            .any(|r| r.text(0).is_ok_and(|a| a == app_id) && r.text(1).is_ok_and(|k| k == pushkey));
        if !replaces && existing.len() >= MAX_PUSHERS_PER_USER {
            return Err(Error::invalid_param(format!(
                "An account may have at most {MAX_PUSHERS_PER_USER} pushers; remove one first"
            )));
        }
        let now = self.now();
        let mut batch = Vec::new();
        if !append {
            batch.push(Statement::new(
                "DELETE FROM pushers WHERE app_id = $1 AND pushkey = $2 AND user_id <> $3",
                vec![app_id.into(), pushkey.into(), user.into()],
            ));
        }
        // A new pusher pushes what comes after it; one set again keeps its place, so a
        // client refreshing its pusher loses nothing, and fails afresh.
        batch.push(Statement::new(
            "INSERT INTO pushers (user_id, app_id, pushkey, device_id, kind, app_display_name,
                 device_display_name, profile_tag, lang, data, updated_ts, pushed_upto)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (user_id, app_id, pushkey) DO UPDATE SET
                 device_id = excluded.device_id, kind = excluded.kind,
                 app_display_name = excluded.app_display_name,
                 device_display_name = excluded.device_display_name,
                 profile_tag = excluded.profile_tag, lang = excluded.lang, data = excluded.data,
                 updated_ts = excluded.updated_ts, failures = 0, failing_since = NULL, retry_at = NULL",
            vec![
                user.into(),
                app_id.into(),
                pushkey.into(),
                session.device_id.as_str().into(),
                kind.into(),
                app_name.into(),
                device_name.into(),
                profile_tag.into(),
                lang.into(),
                data_json.into(),
                Value::Int(now),
                Value::Int(self.current_pos()),
            ],
        ));
        self.db.batch(batch).await?;
        self.push_queue.note_user(user);
        // The delivery task looks at once (its catch-up starts at the new position).
        self.wakeups.notify();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_data_needs_the_notify_url() {
        let obj = |v: Json| v.as_object().cloned().unwrap_or_default();
        assert!(check_http_data(&obj(
            json!({"url": "https://push.example/_matrix/push/v1/notify"})
        ))
        .is_ok());
        assert!(check_http_data(&obj(json!({"url": "http://127.0.0.1:9/_matrix/push/v1/notify", "format": "event_id_only", "x": 1}))).is_ok());
        for bad in [
            json!({}),
            json!({"url": 5}),
            json!({"url": "not a url"}),
            json!({"url": "ftp://push.example/_matrix/push/v1/notify"}),
            json!({"url": "https://push.example/notify"}),
            json!({"url": "https://push.example/_matrix/push/v1/notify", "format": 1}),
        ] {
            assert!(check_http_data(&obj(bad.clone())).is_err(), "{bad}");
        }
    }
}
