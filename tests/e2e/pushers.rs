//! Pushers and HTTP push gateways (spec: "Push Notifications", Push Gateway API): the
//! pushers API, and notifications delivered to a gateway this test runs on loopback,
//! which checks every request against the spec.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{extract::State, http::StatusCode, routing::post, Json, Router};
use serde_json::{json, Value};

use crate::harness::{self, TestServer};

/// What the gateway was sent and how it answers.
#[derive(Default)]
struct GatewayState {
    /// Requests it accepted, in order.
    taken: Vec<Value>,
    /// Requests it answered with an error.
    failed: usize,
    /// Requests that broke the spec, with why.
    invalid: Vec<String>,
    /// Answer 500 to this many more requests.
    fail_next: usize,
    /// Answer 500 to everything while set.
    down: bool,
    /// Pushkeys answered as rejected.
    reject: HashSet<String>,
}

struct Gateway {
    port: u16,
    state: Arc<Mutex<GatewayState>>,
    task: tokio::task::JoinHandle<()>,
}

/// Checks a `/notify` body against the Push Gateway API; `Err` says what is wrong.
fn check_notification(body: &Value) -> Result<(), String> {
    let n = body["notification"]
        .as_object()
        .ok_or("no notification object")?;
    let devices = n
        .get("devices")
        .and_then(Value::as_array)
        .ok_or("devices must be an array")?;
    if devices.is_empty() {
        return Err("devices is empty".into());
    }
    for d in devices {
        for k in ["app_id", "pushkey"] {
            if !d[k].is_string() {
                return Err(format!("device {k} must be a string: {d}"));
            }
        }
        if !d["pushkey_ts"].is_i64() {
            return Err(format!("pushkey_ts must be an integer: {d}"));
        }
        let data = d["data"]
            .as_object()
            .ok_or("device data must be an object")?;
        if data.contains_key("url") {
            return Err("device data must not carry url".into());
        }
        if !d["tweaks"].is_object() {
            return Err("tweaks must be an object".into());
        }
    }
    if let Some(counts) = n.get("counts") {
        let counts = counts.as_object().ok_or("counts must be an object")?;
        // A notification of an event leaves zero counts out; a badge update (no event)
        // sends the zero that clears the badge, as Synapse does for Sygnal.
        let badge_only = !n.contains_key("event_id");
        for (k, v) in counts {
            if v.as_u64().is_none_or(|c| c == 0 && !badge_only) {
                return Err(format!(
                    "count {k} must be a positive integer (zero is left out)"
                ));
            }
        }
    }
    if let Some(p) = n.get("prio") {
        if p != "high" && p != "low" {
            return Err(format!("prio {p}"));
        }
    }
    if n.contains_key("event_id") && !n["room_id"].is_string() {
        return Err("room_id is required with event_id".into());
    }
    for k in [
        "event_id",
        "room_id",
        "type",
        "sender",
        "sender_display_name",
        "room_name",
        "room_alias",
    ] {
        if n.get(k).is_some_and(|v| !v.is_string()) {
            return Err(format!("{k} must be a string"));
        }
    }
    if n.get("user_is_target").is_some_and(|v| !v.is_boolean()) {
        return Err("user_is_target must be a boolean".into());
    }
    if n.get("content").is_some_and(|v| !v.is_object()) {
        return Err("content must be an object".into());
    }
    Ok(())
}

async fn notify(
    State(state): State<Arc<Mutex<GatewayState>>>,
    body: String,
) -> (StatusCode, Json<Value>) {
    let mut s = state.lock().unwrap();
    let parsed: Value = match serde_json::from_str(&body) {
        Ok(v) => v,
        Err(e) => {
            s.invalid.push(format!("not JSON: {e}"));
            return (StatusCode::BAD_REQUEST, Json(json!({})));
        }
    };
    if let Err(why) = check_notification(&parsed) {
        s.invalid.push(format!("{why}: {parsed}"));
    }
    if s.down || s.fail_next > 0 {
        s.fail_next = s.fail_next.saturating_sub(1);
        s.failed += 1;
        return (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({})));
    }
    let rejected: Vec<String> = parsed["notification"]["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["pushkey"].as_str())
        .filter(|k| s.reject.contains(*k))
        .map(str::to_owned)
        .collect();
    s.taken.push(parsed);
    (StatusCode::OK, Json(json!({ "rejected": rejected })))
}

impl Gateway {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(Mutex::new(GatewayState::default()));
        let app = Router::new()
            .route("/_matrix/push/v1/notify", post(notify))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { port, state, task }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/_matrix/push/v1/notify", self.port)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, GatewayState> {
        self.state.lock().unwrap()
    }

    /// The notifications taken so far for `event_id`.
    fn taken_for(&self, event_id: &str) -> Vec<Value> {
        self.state()
            .taken
            .iter()
            .filter(|b| b["notification"]["event_id"] == event_id)
            .cloned()
            .collect()
    }

    /// Waits (up to 30 s) until a badge update (no event) with `unread` was taken for
    /// `pushkey`.
    async fn wait_for_badge(&self, pushkey: &str, unread: u64) -> Value {
        for _ in 0..300 {
            let found = self
                .state()
                .taken
                .iter()
                .rev()
                .find(|b| {
                    let n = &b["notification"];
                    n.get("event_id").is_none()
                        && n["devices"][0]["pushkey"] == pushkey
                        && n["counts"]["unread"] == unread
                })
                .cloned();
            if let Some(b) = found {
                return b;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "no badge {unread} for {pushkey}; taken: {:?}",
            self.state().taken
        );
    }

    /// Waits (up to 30 s) until a notification for `event_id` was taken.
    async fn wait_for(&self, event_id: &str) -> Value {
        for _ in 0..300 {
            if let Some(b) = self.taken_for(event_id).pop() {
                return b;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "no notification for {event_id}; taken: {:?}",
            self.state().taken
        );
    }

    fn assert_valid(&self) {
        let invalid = self.state().invalid.clone();
        assert!(invalid.is_empty(), "requests against the spec: {invalid:?}");
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A server that may push to loopback, where the test's gateway listens.
async fn server() -> TestServer {
    harness::start_with(harness::Options {
        configure: |c| c.push.ip_range_whitelist = vec!["127.0.0.1/32".into()],
        ..Default::default()
    })
    .await
}

fn pusher(app_id: &str, pushkey: &str, url: &str) -> Value {
    json!({
        "kind": "http",
        "app_id": app_id,
        "pushkey": pushkey,
        "app_display_name": "Tessera test",
        "device_display_name": "Phone",
        "lang": "en",
        "data": { "url": url, "custom": "kept" },
    })
}

async fn set_pusher(server: &TestServer, token: &str, body: Value) -> (u16, Value) {
    server
        .req(
            "POST",
            "/_matrix/client/v3/pushers/set",
            Some(token),
            Some(body),
        )
        .await
}

async fn pushkeys(server: &TestServer, token: &str) -> Vec<String> {
    let body = server
        .ok("GET", "/_matrix/client/v3/pushers", token, None)
        .await;
    body["pushers"]
        .as_array()
        .expect("pushers")
        .iter()
        .map(|p| p["pushkey"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The pushers API: listing, replacing, `append`, deletion, the device's logout, and
/// the spec's errors.
#[tokio::test]
async fn pushers_are_set_listed_replaced_and_deleted() {
    let server = server().await;
    let (_, alice) = server.register("alice").await;
    let (_, bob) = server.register("bob").await;
    let url = "https://push.example.org/_matrix/push/v1/notify";

    let (status, body) = set_pusher(&server, &alice, pusher("org.example.app", "key-1", url)).await;
    assert_eq!((status, body.clone()), (200, json!({})), "{body}");
    let list = server
        .ok("GET", "/_matrix/client/v3/pushers", &alice, None)
        .await;
    assert_eq!(
        list["pushers"],
        json!([{
            "kind": "http", "app_id": "org.example.app", "pushkey": "key-1",
            "app_display_name": "Tessera test", "device_display_name": "Phone", "lang": "en",
            "data": { "url": url, "custom": "kept" },
        }]),
        "{list}"
    );
    // The same (app_id, pushkey) again replaces it.
    let mut again = pusher("org.example.app", "key-1", url);
    again["device_display_name"] = "Renamed".into();
    again["profile_tag"] = "tag".into();
    assert_eq!(set_pusher(&server, &alice, again).await.0, 200);
    let list = server
        .ok("GET", "/_matrix/client/v3/pushers", &alice, None)
        .await;
    assert_eq!(list["pushers"].as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list["pushers"][0]["device_display_name"], "Renamed");
    assert_eq!(list["pushers"][0]["profile_tag"], "tag");

    // Another user's pusher with the same key takes it over unless it appends.
    let mut appended = pusher("org.example.app", "key-1", url);
    appended["append"] = true.into();
    assert_eq!(set_pusher(&server, &bob, appended).await.0, 200);
    assert_eq!(pushkeys(&server, &alice).await, ["key-1"]);
    assert_eq!(
        set_pusher(&server, &bob, pusher("org.example.app", "key-1", url))
            .await
            .0,
        200
    );
    assert!(pushkeys(&server, &alice).await.is_empty());
    assert_eq!(pushkeys(&server, &bob).await, ["key-1"]);

    // `kind: null` deletes.
    let (status, _) = set_pusher(
        &server,
        &bob,
        json!({ "kind": null, "app_id": "org.example.app", "pushkey": "key-1" }),
    )
    .await;
    assert_eq!(status, 200);
    assert!(pushkeys(&server, &bob).await.is_empty());

    // Errors, as the spec gives them.
    let mut missing = pusher("a.b", "k", url);
    missing.as_object_mut().unwrap().remove("lang");
    missing.as_object_mut().unwrap().remove("data");
    let (status, body) = set_pusher(&server, &alice, missing).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (400, Some("M_MISSING_PARAM")),
        "{body}"
    );
    assert!(
        body["error"].as_str().unwrap_or_default().contains("lang"),
        "{body}"
    );
    let (status, body) =
        set_pusher(&server, &alice, json!({ "app_id": "a.b", "pushkey": "k" })).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (400, Some("M_MISSING_PARAM")),
        "{body}"
    );
    let bad = [
        pusher("a.b", "k", "https://push.example.org/notify"),
        pusher("a.b", "k", "not a url"),
        pusher(&"a".repeat(65), "k", url),
        pusher("a.b", &"k".repeat(513), url),
        json!({ "kind": "email", "app_id": "m.email", "pushkey": "a@example.org",
                "app_display_name": "x", "device_display_name": "x", "lang": "en", "data": {} }),
        json!({ "kind": "carrier-pigeon", "app_id": "a.b", "pushkey": "k",
                "app_display_name": "x", "device_display_name": "x", "lang": "en", "data": { "url": url } }),
        json!({ "kind": "http", "app_id": "a.b", "pushkey": "k",
                "app_display_name": "x", "device_display_name": "x", "lang": "en", "data": "url" }),
        json!({ "kind": "http", "app_id": 5, "pushkey": "k" }),
        json!({ "kind": 1, "app_id": "a.b", "pushkey": "k" }),
        {
            let mut p = pusher("a.b", "k", url);
            p["append"] = "yes".into();
            p
        },
    ];
    for body in bad {
        let (status, answer) = set_pusher(&server, &alice, body.clone()).await;
        assert_eq!(
            (status, answer["errcode"].as_str()),
            (400, Some("M_INVALID_PARAM")),
            "{body}: {answer}"
        );
    }
    assert!(pushkeys(&server, &alice).await.is_empty());

    // A pusher goes with the device that set it.
    let phone = server.login("alice").await;
    assert_eq!(
        set_pusher(&server, &phone, pusher("a.b", "phone", url))
            .await
            .0,
        200
    );
    assert_eq!(
        set_pusher(&server, &alice, pusher("a.b", "laptop", url))
            .await
            .0,
        200
    );
    server
        .ok("POST", "/_matrix/client/v3/logout", &phone, Some(json!({})))
        .await;
    assert_eq!(pushkeys(&server, &alice).await, ["laptop"]);
    server.stop().await;
}

/// Notifications reach the gateway with the fields the spec lists: the event, the
/// sender's name, the room's name, the badge count, the rule's tweaks and `prio`;
/// `event_id_only` sends only the IDs; an invite notifies its target.
#[tokio::test]
async fn notifications_reach_the_push_gateway_as_the_spec_says() {
    let gateway = Gateway::start().await;
    let server = server().await;
    let (alice_id, alice) = server.register("alice").await;
    let (_, bob) = server.register("bob").await;
    let (carol_id, carol) = server.register("carol").await;
    server
        .ok(
            "PUT",
            &format!(
                "/_matrix/client/v3/profile/{}/displayname",
                harness::urlencode("@bob:localhost")
            ),
            &bob,
            Some(json!({ "displayname": "Bob B." })),
        )
        .await;
    assert_eq!(
        set_pusher(
            &server,
            &alice,
            pusher("org.example.app", "alice-key", &gateway.url())
        )
        .await
        .0,
        200
    );
    let mut ids_only = pusher("org.example.app", "carol-key", &gateway.url());
    ids_only["data"]["format"] = "event_id_only".into();
    assert_eq!(set_pusher(&server, &carol, ids_only).await.0, 200);

    // A one-to-one room: every message notifies, with a sound.
    let room = server
        .create_room(&bob, json!({ "name": "Launch", "invite": [alice_id] }))
        .await;
    server.membership(&alice, &room, "join").await;
    let first = server.send_text(&bob, &room, "t1", "hello alice").await;
    let body = gateway.wait_for(&first).await;
    let n = &body["notification"];
    assert_eq!(n["room_id"], room.as_str(), "{body}");
    assert_eq!(n["type"], "m.room.message");
    assert_eq!(n["sender"], "@bob:localhost");
    assert_eq!(n["sender_display_name"], "Bob B.");
    assert_eq!(n["room_name"], "Launch");
    assert_eq!(n["content"]["body"], "hello alice");
    assert_eq!(n["counts"], json!({ "unread": 1 }), "{body}");
    assert_eq!(n["prio"], "high");
    assert_eq!(
        n["devices"],
        json!([{ "app_id": "org.example.app", "pushkey": "alice-key",
                 "pushkey_ts": n["devices"][0]["pushkey_ts"], "data": { "custom": "kept" },
                 "tweaks": { "sound": "default" } }]),
        "{body}"
    );
    let second = server.send_text(&bob, &room, "t2", "still there?").await;
    let body = gateway.wait_for(&second).await;
    assert_eq!(
        body["notification"]["counts"],
        json!({ "unread": 2 }),
        "{body}"
    );
    // Reading clears the badge: the phone is told at once, with the count alone.
    server
        .ok(
            "POST",
            &format!(
                "/_matrix/client/v3/rooms/{room}/receipt/m.read/{}",
                harness::urlencode(&second)
            ),
            &alice,
            Some(json!({})),
        )
        .await;
    let badge = gateway.wait_for_badge("alice-key", 0).await;
    assert_eq!(badge["notification"]["prio"], "low", "{badge}");
    assert_eq!(
        badge["notification"]["devices"][0]["app_id"],
        "org.example.app"
    );
    // Reading again changes nothing, so nothing is sent again.
    server
        .ok(
            "POST",
            &format!(
                "/_matrix/client/v3/rooms/{room}/receipt/m.read.private/{}",
                harness::urlencode(&second)
            ),
            &alice,
            Some(json!({})),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let badges = gateway
        .state()
        .taken
        .iter()
        .filter(|b| {
            b["notification"].get("event_id").is_none()
                && b["notification"]["devices"][0]["pushkey"] == "alice-key"
        })
        .count();
    assert_eq!(badges, 1, "an unchanged badge is not sent again");
    let third = server
        .send_text(&bob, &room, "t3", "alice: a mention")
        .await;
    let body = gateway.wait_for(&third).await;
    assert_eq!(
        body["notification"]["counts"],
        json!({ "unread": 1 }),
        "{body}"
    );

    // An invite notifies the invited user; event_id_only sends the IDs, counts, device.
    server
        .ok(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            &bob,
            Some(json!({ "user_id": carol_id })),
        )
        .await;
    let state = server
        .ok(
            "GET",
            &format!(
                "/_matrix/client/v3/rooms/{room}/state/m.room.member/{}",
                harness::urlencode(&carol_id)
            ),
            &bob,
            None,
        )
        .await;
    assert_eq!(state["membership"], "invite");
    let invite = {
        let mut found = None;
        for _ in 0..300 {
            found = gateway
                .state()
                .taken
                .iter()
                .find(|b| b["notification"]["devices"][0]["pushkey"] == "carol-key")
                .cloned();
            if found.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        found.expect("carol is pushed her invite")
    };
    let keys: HashSet<&str> = invite["notification"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        HashSet::from(["event_id", "room_id", "counts", "devices", "prio"]),
        "{invite}"
    );
    assert_eq!(
        invite["notification"]["devices"][0]["data"],
        json!({ "format": "event_id_only", "custom": "kept" })
    );
    // Bob's own messages never reach his... he has no pusher; alice is never pushed her own.
    let own = server.send_text(&alice, &room, "a1", "from alice").await;
    let later = server.send_text(&bob, &room, "t4", "after alice").await;
    gateway.wait_for(&later).await;
    assert!(
        gateway.taken_for(&own).is_empty(),
        "the sender is not notified"
    );
    // Each notification went once.
    for id in [&first, &second, &third, &later] {
        assert_eq!(gateway.taken_for(id).len(), 1, "{id}");
    }
    gateway.assert_valid();
    server.stop().await;
}

/// A failing gateway is retried with back-off, across a restart of the server; a
/// rejected pushkey loses its pusher.
#[tokio::test]
async fn a_failing_gateway_is_retried_across_restarts_and_rejections_remove_the_pusher() {
    let gateway = Gateway::start().await;
    let mut server = server().await;
    let (alice_id, alice) = server.register("alice").await;
    let (_, bob) = server.register("bob").await;
    assert_eq!(
        set_pusher(
            &server,
            &alice,
            pusher("org.example.app", "k1", &gateway.url())
        )
        .await
        .0,
        200
    );
    let room = server
        .create_room(&bob, json!({ "invite": [alice_id] }))
        .await;
    server.membership(&alice, &room, "join").await;

    // Two failures, then it is taken: retried after 1 s, then 2 s.
    gateway.state().fail_next = 2;
    let first = server.send_text(&bob, &room, "t1", "one").await;
    gateway.wait_for(&first).await;
    assert_eq!(gateway.state().failed, 2);
    assert_eq!(gateway.taken_for(&first).len(), 1);

    // Down while the server restarts: what was not taken goes once it is back.
    gateway.state().down = true;
    let second = server.send_text(&bob, &room, "t2", "two").await;
    for _ in 0..100 {
        if gateway.state().failed > 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        gateway.state().failed > 2,
        "the server tried while the gateway was down"
    );
    server.restart().await;
    let third = server.send_text(&bob, &room, "t3", "three").await;
    gateway.state().down = false;
    gateway.wait_for(&second).await;
    gateway.wait_for(&third).await;
    assert_eq!(gateway.taken_for(&second).len(), 1);

    // The gateway rejects the pushkey: the pusher goes, and nothing more is sent to it.
    gateway.state().reject.insert("k1".into());
    let fourth = server.send_text(&bob, &room, "t4", "four").await;
    gateway.wait_for(&fourth).await;
    for _ in 0..100 {
        if pushkeys(&server, &alice).await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        pushkeys(&server, &alice).await.is_empty(),
        "a rejected pushkey's pusher is removed"
    );
    let taken = gateway.state().taken.len();
    server.send_text(&bob, &room, "t5", "five").await;
    // A sync that shows the message is past its commit; delivery would have started.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        gateway.state().taken.len(),
        taken,
        "nothing is pushed to a removed pusher"
    );
    gateway.assert_valid();
    server.stop().await;
}

/// Without `push.ip_range_whitelist`, a gateway on a private address is never reached.
#[tokio::test]
async fn push_gateways_on_private_addresses_are_refused() {
    let gateway = Gateway::start().await;
    let server = harness::start().await;
    let (alice_id, alice) = server.register("alice").await;
    let (_, bob) = server.register("bob").await;
    assert_eq!(
        set_pusher(
            &server,
            &alice,
            pusher("org.example.app", "k", &gateway.url())
        )
        .await
        .0,
        200
    );
    let room = server
        .create_room(&bob, json!({ "invite": [alice_id] }))
        .await;
    server.membership(&alice, &room, "join").await;
    server.send_text(&bob, &room, "t1", "hello").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let seen = {
        let s = gateway.state();
        (s.taken.len(), s.failed)
    };
    assert_eq!(seen, (0, 0), "loopback is refused by default");
    // The pusher stays: the refusal is the server's policy, not the gateway's answer.
    assert_eq!(pushkeys(&server, &alice).await, ["k"]);
    server.stop().await;
}
