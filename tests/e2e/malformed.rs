//! Walks every route the router serves (`tessera_api::served_paths`) and sends each one
//! malformed input: no body, `{}`, `[]`, a JSON string, wrong types for every field of a
//! valid body, a 70 KB string, 10,000-deep nesting, invalid UTF-8, NUL and odd Unicode in
//! every path and query parameter, huge and negative numbers, with and without a token.
//! Every answer must be a Matrix error or a success: never a 5xx, a dropped connection, an
//! error without `errcode`, or a request that takes more than a second.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{self, urlencode, Options, TestServer};

/// Longest any one request may take.
const DEADLINE: Duration = Duration::from_secs(1);

/// A valid value for a path parameter, by its name and the route around it.
fn valid_param(name: &str, template: &str, ctx: &Ctx) -> String {
    let name = name.to_lowercase().replace('_', "");
    match name.as_str() {
        "roomid" | "target" | "roomidoralias" => ctx.room.clone(),
        "roomalias" | "alias" => urlencode("#walk:localhost"),
        "eventid" => ctx.event.clone(),
        "userid" => ctx.user.clone(),
        "deviceid" => ctx.device.clone(),
        "filterid" => ctx.filter.clone(),
        "kind" if template.contains("pushrules") => "override".into(),
        "kind" if template.contains("receipt") => "m.read".into(),
        "kind" | "eventtype" | "type" => "m.room.message".into(),
        "scope" => "global".into(),
        "ruleid" => ".m.rule.master".into(),
        "statekey" => "".into(),
        "key" | "keyname" => "displayname".into(),
        "tag" => "u.work".into(),
        "version" => ctx.backup.clone(),
        _ => "x".into(),
    }
}

/// Values no parameter should choke on, percent-encoded as a client would send them.
fn hostile_params() -> Vec<String> {
    vec![
        "%00".into(),
        "a%00b".into(),
        "%FF%FE".into(),                               // invalid UTF-8
        "%ED%A0%80".into(),                            // an encoded UTF-16 surrogate, invalid UTF-8
        "%E2%80%AE%EF%BB%BF%F0%9F%98%80%CC%81".into(), // RTL override, BOM, emoji, combining
        // A URI holds at most 64 KiB (`http::Uri`); 70 KB strings go in bodies.
        "a".repeat(60_000),
        "-1".into(),
        "99999999999999999999999999".into(),
        "%2E%2E".into(),
        "a%2Fb".into(),
        urlencode("!x:localhost"),
        urlencode("@x:localhost"),
        urlencode("$x"),
    ]
}

/// Query strings with hostile values for the parameters endpoints read.
fn hostile_queries() -> Vec<String> {
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let mut q = vec![
        "limit=-1".into(),
        "limit=99999999999999999999999".into(),
        "limit=abc".into(),
        "from=%00".into(),
        "from=s-1_-1".into(),
        "from=-99999999999999999999".into(),
        "to=%FF".into(),
        "dir=x".into(),
        "dir=f&limit=0".into(),
        "filter=%7B".into(),
        format!("filter={}", urlencode(&deep)),
        format!("filter={}", "a".repeat(60_000)),
        format!(
            "filter={}",
            urlencode(&json!({ "types": ["*a*a*a*a*a*a*a*a*b"], "limit": -5 }).to_string())
        ),
        "since=%FF".into(),
        "since=s99999999999999999999_1".into(),
        "timeout=-1".into(),
        "timeout=99999999999999999999".into(),
        "full_state=maybe".into(),
        "set_presence=%00".into(),
        "at=%00".into(),
        "membership=%00&not_membership=%E2%80%AE".into(),
        "format=%00".into(),
        "ts=-1".into(),
        "user_id=%00".into(),
        "username=%00".into(),
        "token=%00".into(),
        "access_token=%00".into(),
        "server_name=%00&via=%00".into(),
        "version=%00".into(),
    ];
    q.push(format!("from={}", "9".repeat(60_000)));
    q
}

/// The query an endpoint needs to do anything at all; hostile parameters come on top.
fn valid_query(template: &str, ctx: &Ctx) -> String {
    let ends = |s: &str| template.ends_with(s);
    if ends("/messages") {
        "dir=b&limit=5".into()
    } else if ends("/keys/changes") {
        "from=s0_0&to=s9999_0".into()
    } else if ends("/register/available") {
        "username=walkavail".into()
    } else if ends("/validity") {
        "token=abc".into()
    } else if template.contains("/room_keys/keys") {
        format!("version={}", ctx.backup)
    } else if ends("/members") {
        "membership=join".into()
    } else if ends("/timestamp_to_event") {
        "ts=0&dir=f".into()
    } else if ends("/thirdparty/location") {
        format!("alias={}", urlencode("#walk:localhost"))
    } else if ends("/thirdparty/user") {
        format!("userid={}", ctx.user)
    } else if ends("/mutual_rooms") {
        format!("user_id={}", urlencode(&ctx.other_id))
    } else {
        String::new()
    }
}

/// Bodies no endpoint should choke on.
fn hostile_bodies() -> Vec<Vec<u8>> {
    let deep_arrays = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_objects = format!("{}1{}", "{\"a\":".repeat(10_000), "}".repeat(10_000));
    let mut kitchen = serde_json::Map::new();
    for (i, field) in FIELDS.iter().enumerate() {
        kitchen.insert(
            (*field).into(),
            wrong_values()[i % wrong_values().len()].clone(),
        );
    }
    vec![
        b"".to_vec(),
        b"{}".to_vec(),
        b"[]".to_vec(),
        b"\"a string\"".to_vec(),
        b"123".to_vec(),
        b"null".to_vec(),
        b"{".to_vec(),
        b"{\"a\":\"\xff\xfe\"}".to_vec(),
        b"\xff\xfe\xfd".to_vec(),
        deep_arrays.into_bytes(),
        deep_objects.into_bytes(),
        json!({ "a": "x".repeat(70_000) }).to_string().into_bytes(),
        b"{\"limit\": 1e400, \"timeout\": -1e400}".to_vec(),
        b"{\"a\": 18446744073709551616, \"b\": -9223372036854775809}".to_vec(),
        b"{\"a\": \"\\u0000\\ud800\"}".to_vec(),
        Value::Object(kitchen).to_string().into_bytes(),
    ]
}

/// Field names the client API reads somewhere.
const FIELDS: &[&str] = &[
    "type",
    "user_id",
    "room_id",
    "reason",
    "content",
    "messages",
    "device_keys",
    "one_time_keys",
    "fallback_keys",
    "auth",
    "filter",
    "displayname",
    "avatar_url",
    "presence",
    "status_msg",
    "typing",
    "timeout",
    "new_password",
    "logout_devices",
    "devices",
    "username",
    "password",
    "identifier",
    "initial_device_display_name",
    "refresh_token",
    "device_id",
    "invite",
    "initial_state",
    "preset",
    "visibility",
    "room_version",
    "creation_content",
    "power_level_content_override",
    "name",
    "topic",
    "room_alias_name",
    "is_direct",
    "rooms",
    "version",
    "algorithm",
    "auth_data",
    "sessions",
    "master_key",
    "self_signing_key",
    "user_signing_key",
    "actions",
    "conditions",
    "pattern",
    "enabled",
    "m.fully_read",
    "m.read",
    "m.read.private",
    "thread_id",
    "order",
    "event_fields",
    "event_format",
    "account_data",
    "room",
    "limit",
    "display_name",
    "inhibit_login",
    "erase",
    "session",
];

fn wrong_values() -> Vec<Value> {
    vec![
        Value::Null,
        json!(true),
        json!(-1),
        json!(1.5),
        serde_json::from_str("18446744073709551616").unwrap_or(Value::Null),
        json!(i64::MIN),
        json!("s"),
        json!([]),
        json!({}),
        json!([[{}]]),
        json!("x".repeat(70_000)),
        json!("\u{0}"),
    ]
}

/// A valid body for the endpoints that take one, as the starting point of mutations.
fn sample_body(template: &str, ctx: &Ctx) -> Option<Value> {
    let ends = |s: &str| template.ends_with(s);
    let has = |s: &str| template.contains(s);
    let user = ctx.user_id.as_str();
    Some(if ends("/pushers/set") {
        json!({ "kind": "http", "app_id": "org.example.walk", "pushkey": "walk", "app_display_name": "w",
                "device_display_name": "w", "lang": "en", "profile_tag": "t", "append": false,
                "data": { "url": "https://push.example.org/_matrix/push/v1/notify", "format": "event_id_only" } })
    } else if has("/send_server_notice") {
        json!({ "user_id": ctx.other_id, "content": { "body": "walk" } })
    } else if ends("/report") {
        json!({ "reason": "walk" })
    } else if ends("/search") && !has("user_directory") {
        json!({ "search_categories": { "room_events": { "search_term": "walk", "keys": ["content.body"] } } })
    } else if ends("/user_directory/search") {
        json!({ "search_term": "walk", "limit": 5 })
    } else if ends("/createRoom") {
        json!({
            "name": "n", "topic": "t", "preset": "private_chat", "invite": [user], "is_direct": false,
            "initial_state": [{ "type": "m.room.topic", "state_key": "", "content": { "topic": "x" } }],
            "power_level_content_override": { "users_default": 0 },
            "creation_content": { "m.federate": true }, "visibility": "private", "room_version": "12",
        })
    } else if ends("/login") {
        json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "nobody" },
                "password": "wrong", "device_id": "D", "initial_device_display_name": "x" })
    } else if ends("/register") {
        json!({ "username": "walker", "password": "pw-pw-pw-pw", "auth": { "type": "m.login.dummy" },
                "inhibit_login": true, "device_id": "D" })
    } else if has("/send/") {
        json!({ "msgtype": "m.text", "body": "x", "m.relates_to": { "rel_type": "m.thread", "event_id": ctx.event_id } })
    } else if has("/state/") {
        json!({ "topic": "x", "membership": "join" })
    } else if ends("/invite") || ends("/kick") || ends("/ban") || ends("/unban") {
        json!({ "user_id": ctx.other_id, "reason": "r" })
    } else if ends("/join") || ends("/leave") || has("/join/") || has("/knock/") || ends("/forget")
    {
        json!({ "reason": "r" })
    } else if has("/receipt/") {
        json!({ "thread_id": "main" })
    } else if ends("/read_markers") {
        json!({ "m.fully_read": ctx.event_id, "m.read": ctx.event_id, "m.read.private": ctx.event_id })
    } else if has("/typing/") {
        json!({ "typing": true, "timeout": 1000 })
    } else if has("/presence/") {
        json!({ "presence": "online", "status_msg": "x" })
    } else if has("/profile/") {
        json!({ "displayname": "x", "avatar_url": "mxc://x/y" })
    } else if has("/tags/") {
        json!({ "order": 0.5 })
    } else if has("/account_data/") {
        json!({ "a": 1 })
    } else if ends("/filter") {
        json!({ "room": { "timeline": { "limit": 5, "types": ["m.*"] }, "rooms": [ctx.room_id] },
                "presence": { "not_types": ["*"] }, "event_fields": ["content.body"] })
    } else if ends("/keys/upload") {
        json!({ "one_time_keys": { "signed_curve25519:AAAA": { "key": "k", "signatures": {} } },
                "fallback_keys": { "signed_curve25519:BBBB": { "key": "k", "fallback": true } } })
    } else if ends("/keys/query") {
        json!({ "device_keys": { user: [] }, "timeout": 1000 })
    } else if ends("/keys/claim") {
        json!({ "one_time_keys": { user: { ctx.device_id.as_str(): "signed_curve25519" } } })
    } else if ends("/keys/device_signing/upload") {
        json!({ "master_key": { "user_id": user, "usage": ["master"], "keys": { "ed25519:x": "x" } } })
    } else if ends("/keys/signatures/upload") {
        json!({ user: { ctx.device_id.as_str(): { "user_id": user, "keys": {} } } })
    } else if has("/sendToDevice/") {
        json!({ "messages": { user: { "*": { "a": 1 }, ctx.device_id.as_str(): { "b": 2 } } } })
    } else if has("/room_keys/version") {
        json!({ "algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": { "public_key": "x" }, "version": "1" })
    } else if has("/room_keys/keys") {
        json!({ "rooms": { ctx.room_id.as_str(): { "sessions": { "s": { "first_message_index": 0, "forwarded_count": 0, "is_verified": false, "session_data": { "ephemeral": "e", "ciphertext": "c", "mac": "m" } } } } } })
    } else if has("/pushrules/") {
        json!({ "actions": ["notify"], "pattern": "x", "conditions": [{ "kind": "event_match", "key": "type", "pattern": "m.*" }], "enabled": true })
    } else if has("/devices/") {
        json!({ "display_name": "x" })
    } else if ends("/delete_devices") {
        json!({ "devices": ["NOPE"] })
    } else if ends("/account/password") {
        json!({ "new_password": "pw-pw-pw-pw", "logout_devices": false })
    } else if ends("/account/deactivate") {
        json!({ "erase": false })
    } else if ends("/refresh") {
        json!({ "refresh_token": "x" })
    } else if has("/directory/room/") {
        json!({ "room_id": ctx.room_id })
    } else if has("/redact/") {
        json!({ "reason": "x" })
    } else {
        return None;
    })
}

/// Every variant of `body` with one field (top level, or one level down) of a wrong type.
fn mutations(body: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    let Value::Object(map) = body else {
        return out;
    };
    for (key, value) in map {
        for wrong in wrong_values() {
            let mut m = map.clone();
            m.insert(key.clone(), wrong);
            out.push(Value::Object(m));
        }
        if let Value::Object(inner) = value {
            for inner_key in inner.keys() {
                for wrong in wrong_values() {
                    let mut i = inner.clone();
                    i.insert(inner_key.clone(), wrong);
                    let mut m = map.clone();
                    m.insert(key.clone(), Value::Object(i));
                    out.push(Value::Object(m));
                }
            }
        }
    }
    out
}

struct Ctx {
    user_id: String,
    /// A second member, the target of kicks, bans and invites.
    other_id: String,
    filter: String,
    backup: String,
    room_id: String,
    event_id: String,
    device_id: String,
    // Percent-encoded, for paths.
    user: String,
    room: String,
    event: String,
    device: String,
    token: String,
}

struct Walker<'a> {
    server: &'a TestServer,
    current: String,
    statuses: std::collections::BTreeMap<(String, u16), usize>,
    sent: usize,
    slowest: (Duration, String),
}

impl Walker<'_> {
    async fn send(&mut self, method: &str, path: &str, token: Option<&str>, body: Option<&[u8]>) {
        let url = format!("{}{}", self.server.url, path);
        let what = || {
            let body = body.map(|b| String::from_utf8_lossy(&b[..b.len().min(120)]).into_owned());
            format!(
                "{method} {} {body:?} token={}",
                short(path),
                token.is_some()
            )
        };
        let mut r = self
            .server
            .http
            .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r
                .header("Content-Type", "application/json")
                .body(b.to_vec());
        }
        let started = Instant::now();
        let res = tokio::time::timeout(DEADLINE * 10, r.send())
            .await
            .unwrap_or_else(|_| panic!("no answer within {:?}: {}", DEADLINE * 10, what()))
            .unwrap_or_else(|e| {
                panic!("connection failed ({}): {}", short(&e.to_string()), what())
            });
        let status = res.status();
        *self
            .statuses
            .entry((self.current.clone(), status.as_u16()))
            .or_default() += 1;
        let text = res
            .text()
            .await
            .unwrap_or_else(|e| panic!("body cut off ({e}): {}", what()));
        let took = started.elapsed();
        self.sent += 1;
        if took > self.slowest.0 {
            self.slowest = (took, what());
        }
        assert!(took <= DEADLINE, "took {took:?}: {}", what());
        assert!(
            !status.is_server_error(),
            "{status}: {}: {}",
            short(&text),
            what()
        );
        if status.is_client_error() {
            let json: Value = serde_json::from_str(&text).unwrap_or_else(|_| {
                panic!("{status} without JSON ({:?}): {}", short(&text), what())
            });
            // User-interactive auth answers 401 with its flows (and no errcode at first).
            let uia = status == 401 && json["flows"].is_array();
            assert!(
                json["errcode"].is_string() || uia,
                "{status} without errcode ({}): {}",
                short(&text),
                what()
            );
        }
    }

    /// Keeps the walker signed in: a walked `/logout` must not end the walk.
    async fn token(&self, ctx: &mut Ctx) {
        let (status, _) = self
            .server
            .req(
                "GET",
                "/_matrix/client/v3/account/whoami",
                Some(&ctx.token),
                None,
            )
            .await;
        if status != 200 {
            let (status, body) = self
                .server
                .req(
                    "POST",
                    "/_matrix/client/v3/login",
                    None,
                    Some(json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "walkuser" }, "password": "correct horse battery" })),
                )
                .await;
            assert_eq!(status, 200, "{body}");
            ctx.token = body["access_token"].as_str().unwrap().to_owned();
        }
        // And in the room: a walked `/leave` must not shut the walker out of the rest.
        let (status, body) = self
            .server
            .req(
                "POST",
                &format!("/_matrix/client/v3/join/{}", ctx.room),
                Some(&ctx.token),
                Some(json!({})),
            )
            .await;
        assert_eq!(status, 200, "rejoining: {body}");
        // And with a key backup: a walked `DELETE /room_keys/version` removes it.
        let (status, _) = self
            .server
            .req(
                "GET",
                "/_matrix/client/v3/room_keys/version",
                Some(&ctx.token),
                None,
            )
            .await;
        if status == 404 {
            ctx.backup = new_backup(self.server, &ctx.token).await;
        }
    }
}

async fn new_backup(server: &TestServer, token: &str) -> String {
    server
        .ok(
            "POST",
            "/_matrix/client/v3/room_keys/version",
            token,
            Some(json!({ "algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": { "public_key": "x" } })),
        )
        .await["version"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// At most 200 characters of `s`, for messages.
fn short(s: &str) -> String {
    s.chars().take(200).collect()
}

/// The template's `{name}` parameters.
fn params(template: &str) -> Vec<String> {
    template
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|s| s.trim_start_matches('*').to_owned())
        .collect()
}

fn fill(template: &str, values: &[(String, String)]) -> String {
    let mut out = template.to_owned();
    for (name, value) in values {
        out = out
            .replace(&format!("{{{name}}}"), value)
            .replace(&format!("{{*{name}}}"), value);
    }
    out
}

#[tokio::test]
async fn every_route_answers_malformed_input_with_a_matrix_error() {
    let server = harness::start_with(Options {
        configure: |c| {
            // Long-polls end fast whatever `timeout` says; commits need not wait for fsync.
            c.sync.max_timeout_ms = 100;
            c.database.sqlite_synchronous = tessera_server::db::sqlite::Synchronous::Normal;
            c.server_notices.localpart = Some("walknotices".into());
        },
        ..Default::default()
    })
    .await;
    // A server admin, so the admin endpoints are walked past their permission check.
    let user_id = server
        .hs()
        .create_user("walkuser", Some("correct horse battery"), true)
        .await
        .expect("walker")
        .to_string();
    let token = server.login("walkuser").await;
    let (other_id, other_token) = server.register("walkother").await;
    let room_id = server
        .create_room(&token, json!({ "preset": "public_chat" }))
        .await;
    server.membership(&other_token, &room_id, "join").await;
    let event_id = server.send_text(&token, &room_id, "w", "hello").await;
    let filter = server
        .ok(
            "POST",
            &format!("/_matrix/client/v3/user/{user_id}/filter"),
            &token,
            Some(json!({})),
        )
        .await["filter_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let backup = new_backup(&server, &token).await;
    let whoami = server
        .ok("GET", "/_matrix/client/v3/account/whoami", &token, None)
        .await;
    let device_id = whoami["device_id"].as_str().unwrap().to_owned();
    let mut ctx = Ctx {
        user: urlencode(&user_id),
        room: urlencode(&room_id),
        event: urlencode(&event_id),
        device: urlencode(&device_id),
        user_id,
        other_id,
        filter,
        backup,
        room_id,
        event_id,
        device_id,
        token,
    };
    let mut walker = Walker {
        server: &server,
        sent: 0,
        current: String::new(),
        statuses: Default::default(),
        slowest: (Duration::ZERO, String::new()),
    };

    let mut templates = tessera_api::served_paths();
    templates.sort();
    templates.dedup();
    // Sessions end last, so every other route is walked signed in.
    templates.sort_by_key(|t| t.contains("logout") || t.contains("deactivate"));
    assert!(
        templates.len() > 50,
        "the router serves {} paths",
        templates.len()
    );
    const METHODS: [&str; 4] = ["GET", "PUT", "POST", "DELETE"];

    for template in &templates {
        walker.current = template.clone();
        walker.token(&mut ctx).await;
        let names = params(template);
        let valid: Vec<(String, String)> = names
            .iter()
            .map(|n| (n.clone(), valid_param(n, template, &ctx)))
            .collect();
        let query = valid_query(template, &ctx);
        let path = match query.as_str() {
            "" => fill(template, &valid),
            q => format!("{}?{q}", fill(template, &valid)),
        };
        let sep = if query.is_empty() { '?' } else { '&' };
        let token = ctx.token.clone();

        // Each parameter hostile in turn, the others valid.
        for (i, name) in names.iter().enumerate() {
            for bad in hostile_params() {
                let mut values = valid.clone();
                values[i] = (name.clone(), bad);
                let p = fill(template, &values);
                for method in METHODS {
                    walker.send(method, &p, Some(&token), Some(b"{}")).await;
                }
                walker.send("GET", &p, None, None).await;
            }
        }
        // Hostile bodies, with and without a token.
        for body in hostile_bodies() {
            for method in ["PUT", "POST"] {
                walker.send(method, &path, Some(&token), Some(&body)).await;
            }
            walker.send("POST", &path, None, Some(&body)).await;
        }
        for method in ["GET", "DELETE"] {
            walker.send(method, &path, Some(&token), None).await;
            walker.send(method, &path, None, None).await;
            walker
                .send(method, &path, Some("syt_not_a_token"), None)
                .await;
        }
        // Hostile query parameters.
        for q in hostile_queries() {
            walker
                .send("GET", &format!("{path}{sep}{q}"), Some(&token), None)
                .await;
        }
        // Wrong types for every field of a valid body (v3 only: r0 shares the handlers).
        if template.starts_with("/_matrix/client/v3/") {
            if let Some(sample) = sample_body(template, &ctx) {
                for method in ["PUT", "POST"] {
                    walker
                        .send(
                            method,
                            &path,
                            Some(&token),
                            Some(sample.to_string().as_bytes()),
                        )
                        .await;
                }
                for body in mutations(&sample) {
                    let bytes = body.to_string().into_bytes();
                    for method in ["PUT", "POST"] {
                        walker.send(method, &path, Some(&token), Some(&bytes)).await;
                    }
                }
            }
        }
    }
    // Routes no request got through to a success (most need credentials or data the
    // walker lacks); printed so that a walk that stops reaching handlers shows.
    let reached: std::collections::BTreeSet<&String> = walker
        .statuses
        .keys()
        .filter(|(_, status)| *status < 300)
        .map(|(t, _)| t)
        .collect();
    let unreached: Vec<&String> = templates.iter().filter(|t| !reached.contains(t)).collect();
    eprintln!("paths without a success: {unreached:?}");
    assert!(
        reached.len() * 4 >= templates.len() * 3,
        "only {} of {} paths reached a handler's success",
        reached.len(),
        templates.len()
    );
    eprintln!(
        "{} requests over {} paths; slowest {:?}: {}",
        walker.sent,
        templates.len(),
        walker.slowest.0,
        walker.slowest.1
    );
    server.stop().await;
}
