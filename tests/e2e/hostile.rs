//! Each input here once crashed, hung or 5xx'd the server (issue 7): now each gets a Matrix
//! error, or works. Both engines.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{json, Value};

use crate::harness::{self, urlencode, TestServer};

/// `errcode` of a response, for compact asserts.
fn code(body: &Value) -> Option<&str> {
    body["errcode"].as_str()
}

async fn user_in_room(server: &TestServer, name: &str) -> (String, String, String) {
    let (user, token) = server.register(name).await;
    let room = server.create_room(&token, json!({})).await;
    (user, token, room)
}

#[tokio::test]
async fn filter_wildcards_cannot_hang_the_server() {
    let server = harness::start().await;
    let (_, token, room) = user_in_room(&server, "glob").await;
    let long_type = "a".repeat(255);
    server
        .ok(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/send/{long_type}/1"),
            &token,
            Some(json!({})),
        )
        .await;
    // Exponential for a backtracking matcher: this ran for minutes and stopped the server.
    let pattern = format!("{}b", "*a".repeat(40));
    let filter = json!({ "types": [pattern] }).to_string();
    let path = format!(
        "/_matrix/client/v3/rooms/{room}/messages?dir=b&filter={}",
        urlencode(&filter)
    );
    let answered = tokio::time::timeout(
        Duration::from_secs(30),
        server.req("GET", &path, Some(&token), None),
    )
    .await
    .expect("the request is answered");
    assert_eq!(answered.0, 200, "{}", answered.1);
    assert_eq!(answered.1["chunk"], json!([]));
    // And in a sync filter.
    let sync = format!(
        "/_matrix/client/v3/sync?filter={}",
        urlencode(
            &json!({ "room": { "timeline": { "types": [format!("{}b", "*a".repeat(40))] } } })
                .to_string()
        )
    );
    let answered = tokio::time::timeout(
        Duration::from_secs(30),
        server.req("GET", &sync, Some(&token), None),
    )
    .await
    .expect("the sync is answered");
    assert_eq!(answered.0, 200, "{}", answered.1);
    server.stop().await;
}

#[tokio::test]
async fn login_bodies_of_any_shape_get_an_answer() {
    let server = harness::start().await;
    for body in [
        &b"{}"[..],
        b"[]",
        b"\"m.login.password\"",
        b"{\"type\": 5}",
        b"{\"type\": null}",
        b"{\"identifier\": {}}",
    ] {
        let (status, _, json) = server
            .req_raw(
                "POST",
                "/_matrix/client/v3/login",
                None,
                Some(body.to_vec()),
            )
            .await;
        assert_eq!(
            (status, code(&json)),
            (400, Some("M_BAD_JSON")),
            "{}: {json}",
            String::from_utf8_lossy(body)
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn oversized_events_and_bodies_are_413_m_too_large() {
    let server = harness::start().await;
    let (_, token) = server.register("big").await;
    let room = server
        .create_room(&token, json!({ "preset": "public_chat" }))
        .await;
    let (bob, bob_token) = server.register("bigbob").await;
    server.membership(&bob_token, &room, "join").await;
    let (carol, _) = server.register("bigcarol").await;
    let huge = "x".repeat(70_000);
    let r = |p: &str| format!("/_matrix/client/v3/rooms/{room}/{p}");
    let cases = [
        (
            "PUT",
            r("send/m.room.message/1"),
            &token,
            json!({ "body": huge }),
        ),
        (
            "PUT",
            r("state/m.room.topic"),
            &token,
            json!({ "topic": huge }),
        ),
        ("PUT", r("state/x.custom/key"), &token, json!({ "v": huge })),
        (
            "POST",
            r("invite"),
            &token,
            json!({ "user_id": carol, "reason": huge }),
        ),
        ("POST", r("join"), &bob_token, json!({ "reason": huge })),
        (
            "POST",
            format!("/_matrix/client/v3/knock/{room}"),
            &bob_token,
            json!({ "reason": huge }),
        ),
        (
            "POST",
            r("kick"),
            &token,
            json!({ "user_id": bob, "reason": huge }),
        ),
        (
            "POST",
            r("ban"),
            &token,
            json!({ "user_id": bob, "reason": huge }),
        ),
        ("POST", r("leave"), &token, json!({ "reason": huge })),
    ];
    for (method, path, t, body) in cases {
        let (status, body) = server.req(method, &path, Some(t), Some(body)).await;
        assert_eq!(
            (status, code(&body)),
            (413, Some("M_TOO_LARGE")),
            "{method} {path}"
        );
    }
    // Nothing was half-written: the room still works, the creator is still in it.
    server.send_text(&token, &room, "after", "still here").await;

    // A body over the configured limit: a Matrix error, not plain text.
    let big = format!("{{\"body\":\"{}\"}}", "x".repeat(9 * 1024 * 1024));
    let (status, headers, body) = server
        .req_raw(
            "PUT",
            &r("send/m.room.message/2"),
            Some(&token),
            Some(big.into_bytes()),
        )
        .await;
    assert_eq!((status, code(&body)), (413, Some("M_TOO_LARGE")), "{body}");
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    server.stop().await;
}

#[tokio::test]
async fn nul_and_overlong_names_are_400_m_invalid_param() {
    let server = harness::start().await;
    let (user, token, room) = user_in_room(&server, "nul").await;
    let r = |p: &str| format!("/_matrix/client/v3/rooms/{room}/{p}");
    let long = "a".repeat(256);
    let cases = [
        ("PUT", r("send/m.room.message%00x/1"), json!({})),
        ("PUT", r("send/m.room.message/t%00x"), json!({})),
        ("PUT", r(&format!("send/{long}/1")), json!({})),
        ("PUT", r("state/m.room.topic%00"), json!({ "topic": "t" })),
        ("PUT", r("state/x.custom/k%00ey"), json!({})),
        ("PUT", r(&format!("state/x.custom/{long}")), json!({})),
        ("GET", r("state/x.custom/k%00ey"), json!(null)),
        (
            "PUT",
            format!("/_matrix/client/v3/user/{user}/account_data/x%00y"),
            json!({}),
        ),
        (
            "GET",
            format!("/_matrix/client/v3/user/{user}/account_data/x%00y"),
            json!(null),
        ),
        (
            "PUT",
            format!("/_matrix/client/v3/user/{user}/rooms/{room}/account_data/x%00y"),
            json!({}),
        ),
        (
            "PUT",
            "/_matrix/client/v3/sendToDevice/m.x%00/1".to_owned(),
            json!({ "messages": {} }),
        ),
        (
            "PUT",
            "/_matrix/client/v3/sendToDevice/m.x/t%00".to_owned(),
            json!({ "messages": {} }),
        ),
        (
            "GET",
            format!("/_matrix/client/v3/user/{user}/filter/a%00b"),
            json!(null),
        ),
        (
            "PUT",
            format!("/_matrix/client/v3/presence/{user}/status"),
            json!({ "presence": "online", "status_msg": "a\u{0}b" }),
        ),
    ];
    for (method, path, body) in cases {
        let body = (!body.is_null()).then_some(body);
        let (status, json) = server.req(method, &path, Some(&token), body).await;
        assert_eq!(
            (status, code(&json)),
            (400, Some("M_INVALID_PARAM")),
            "{method} {path}: {json}"
        );
    }
    // The server goes on as before.
    server.send_text(&token, &room, "ok", "fine").await;
    server.stop().await;
}

#[tokio::test]
async fn messages_and_context_read_a_bounded_part_of_the_room() {
    let server = harness::start().await;
    let (_, token, room) = user_in_room(&server, "scan").await;
    let first = server.send_text(&token, &room, "first", "first").await;
    for i in 0..300 {
        server
            .ok(
                "PUT",
                &format!("/_matrix/client/v3/rooms/{room}/send/x.noise/n{i}"),
                &token,
                Some(json!({})),
            )
            .await;
    }
    // A filter that matches only the oldest message: each page reads a bounded stretch and
    // says where to go on; following `end` reaches it.
    let filter = urlencode(&json!({ "types": ["m.room.message"] }).to_string());
    let mut from = String::new();
    let mut pages = 0;
    let found = loop {
        pages += 1;
        assert!(pages < 100, "pagination does not move on");
        let body = server
            .ok(
                "GET",
                &format!(
                    "/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=5&filter={filter}{from}"
                ),
                &token,
                None,
            )
            .await;
        let chunk = body["chunk"].as_array().unwrap();
        if let Some(e) = chunk.iter().find(|e| e["event_id"] == first.as_str()) {
            break e.clone();
        }
        let end = body["end"]
            .as_str()
            .expect("an end token while events remain");
        from = format!("&from={end}");
    };
    assert_eq!(found["content"]["body"], "first");
    assert!(pages > 1, "one page read the whole room");

    // /context around the newest event with the same filter: bounded too.
    let last = server.send_text(&token, &room, "last", "last").await;
    let body = server
        .ok(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/context/{last}?limit=4&filter={filter}"),
            &token,
            None,
        )
        .await;
    assert_eq!(body["event"]["event_id"], last.as_str());
    assert_eq!(
        body["events_before"],
        json!([]),
        "the first message is out of reach"
    );
    assert!(body["start"].is_string());
    server.stop().await;
}

#[tokio::test]
async fn concurrent_create_room_calls_all_succeed() {
    let server = harness::start().await;
    let (_, token) = server.register("creator").await;
    for round in 0..5 {
        // Identical requests in the same millisecond build identical v12 create events.
        let answers = join_all((0..10).map(|_| {
            server.req(
                "POST",
                "/_matrix/client/v3/createRoom",
                Some(&token),
                Some(json!({})),
            )
        }))
        .await;
        let mut rooms = Vec::new();
        for (status, body) in answers {
            assert_eq!(status, 200, "round {round}: {body}");
            rooms.push(body["room_id"].as_str().unwrap().to_owned());
        }
        rooms.sort();
        rooms.dedup();
        assert_eq!(rooms.len(), 10, "each call made its own room");
    }
    let joined = server
        .ok("GET", "/_matrix/client/v3/joined_rooms", &token, None)
        .await;
    assert_eq!(joined["joined_rooms"].as_array().unwrap().len(), 50);
    server.stop().await;
}

#[tokio::test]
async fn concurrent_to_device_retries_are_one_send() {
    let server = harness::start().await;
    let (alice, alice_token) = server.register("tdalice").await;
    let (_, bob_token) = server.register("tdbob").await;
    let whoami = server
        .ok(
            "GET",
            "/_matrix/client/v3/account/whoami",
            &alice_token,
            None,
        )
        .await;
    let device = whoami["device_id"].as_str().unwrap().to_owned();
    let first = server
        .ok("GET", "/_matrix/client/v3/sync", &alice_token, None)
        .await;
    let since = first["next_batch"].as_str().unwrap().to_owned();
    let body = json!({ "messages": { alice.clone(): { device.clone(): { "n": 1 } } } });
    let answers = join_all((0..20).map(|_| {
        server.req(
            "PUT",
            "/_matrix/client/v3/sendToDevice/org.example.once/same-txn",
            Some(&bob_token),
            Some(body.clone()),
        )
    }))
    .await;
    for (status, body) in answers {
        assert_eq!(status, 200, "{body}");
    }
    let sync = server
        .ok(
            "GET",
            &format!("/_matrix/client/v3/sync?since={since}"),
            &alice_token,
            None,
        )
        .await;
    let events = sync["to_device"]["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    server.stop().await;
}

#[tokio::test]
async fn uia_sessions_belong_to_their_user_and_operation() {
    let server = harness::start().await;
    let (alice, alice_token) = server.register("uiaalice").await;
    let (_, bob_token) = server.register("uiabob").await;
    // Alice starts a password change and gets a session.
    let (status, started) = server
        .req(
            "POST",
            "/_matrix/client/v3/account/password",
            Some(&alice_token),
            Some(json!({ "new_password": "another horse battery" })),
        )
        .await;
    assert_eq!(status, 401);
    let session = started["session"].as_str().unwrap().to_owned();
    let password_auth = json!({
        "type": "m.login.password", "session": session,
        "identifier": { "type": "m.id.user", "user": alice }, "password": "correct horse battery",
    });
    // Not for another operation…
    let (status, body) = server
        .req(
            "POST",
            "/_matrix/client/v3/delete_devices",
            Some(&alice_token),
            Some(json!({ "devices": [], "auth": password_auth })),
        )
        .await;
    assert_eq!((status, code(&body)), (403, Some("M_FORBIDDEN")), "{body}");
    // …nor for another user.
    let (status, body) = server
        .req(
            "POST",
            "/_matrix/client/v3/account/password",
            Some(&bob_token),
            Some(json!({ "new_password": "x-x-x-x-x", "auth": { "type": "m.login.dummy", "session": session } })),
        )
        .await;
    assert_eq!((status, code(&body)), (403, Some("M_FORBIDDEN")), "{body}");
    // A session the server never issued is refused, not adopted.
    let (status, body) = server
        .req(
            "POST",
            "/_matrix/client/v3/account/password",
            Some(&alice_token),
            Some(json!({ "new_password": "x-x-x-x-x", "auth": { "type": "m.login.dummy", "session": "made-up" } })),
        )
        .await;
    assert_eq!((status, code(&body)), (400, Some("M_UNKNOWN")), "{body}");
    // Its own operation still completes.
    server
        .ok(
            "POST",
            "/_matrix/client/v3/account/password",
            &alice_token,
            Some(json!({ "new_password": "another horse battery", "auth": password_auth })),
        )
        .await;
    server.stop().await;
}

#[tokio::test]
async fn tags_survive_odd_m_tag_content() {
    let server = harness::start().await;
    let (user, token, room) = user_in_room(&server, "tagger").await;
    // `m.tag` may be set as plain account data, in any shape (this panicked a worker).
    let base = format!("/_matrix/client/v3/user/{user}/rooms/{room}");
    for content in [json!({ "tags": "x" }), json!({ "tags": [1] }), json!({})] {
        server
            .ok(
                "PUT",
                &format!("{base}/account_data/m.tag"),
                &token,
                Some(content),
            )
            .await;
        server
            .ok(
                "PUT",
                &format!("{base}/tags/u.work"),
                &token,
                Some(json!({ "order": 0.5 })),
            )
            .await;
        let tags = server
            .ok("GET", &format!("{base}/tags"), &token, None)
            .await;
        assert_eq!(tags["tags"]["u.work"]["order"], 0.5, "{tags}");
        server
            .ok("DELETE", &format!("{base}/tags/u.work"), &token, None)
            .await;
    }
    server.stop().await;
}

#[tokio::test]
async fn slow_and_surplus_connections_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = harness::start_with(harness::Options {
        configure: |c| {
            c.limits.max_connections_per_ip = 4;
            c.limits.header_timeout_ms = 300;
        },
        ..Default::default()
    })
    .await;
    let addr = server.url.trim_start_matches("http://").to_owned();
    // Four connections that never finish their headers…
    let mut slow = Vec::new();
    for _ in 0..4 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        slow.push(s);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    // …fill the address's share: a fifth is closed at once.
    let mut extra = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let _ = extra
        .write_all(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut buf))
        .await
        .expect("closed, not left hanging")
        .unwrap_or(0);
    assert_eq!(n, 0, "a connection over the cap was served");
    // The slow ones are cut off once their header time is up.
    for mut s in slow {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("a slow client is cut off")
            .unwrap_or(0);
        let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(n == 0 || answer.starts_with("HTTP/1.1 408"), "{answer}");
    }
    // Then the address may connect again.
    let (status, _) = server
        .req("GET", "/_matrix/client/versions", None, None)
        .await;
    assert_eq!(status, 200);
    server.stop().await;
}

#[tokio::test]
async fn client_strings_that_reach_keys_are_bounded() {
    let server = harness::start().await;
    let (user, token, room) = user_in_room(&server, "keyed").await;
    let event = server.send_text(&token, &room, "k", "hi").await;
    let long = "d".repeat(300);
    let login = json!({
        "type": "m.login.password", "identifier": { "type": "m.id.user", "user": user },
        "password": "correct horse battery", "device_id": long,
    });
    let (status, body) = server
        .req("POST", "/_matrix/client/v3/login", None, Some(login))
        .await;
    assert_eq!(
        (status, code(&body)),
        (400, Some("M_INVALID_PARAM")),
        "{body}"
    );
    let whoami = server
        .ok("GET", "/_matrix/client/v3/account/whoami", &token, None)
        .await;
    let device = whoami["device_id"].as_str().unwrap();
    let cases = [
        (
            "PUT",
            format!("/_matrix/client/v3/devices/{device}"),
            json!({ "display_name": long }),
        ),
        (
            "POST",
            format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{event}"),
            json!({ "thread_id": "not-a-thread" }),
        ),
        (
            "POST",
            "/_matrix/client/v3/keys/upload".to_owned(),
            json!({ "one_time_keys": { format!("signed_curve25519:{long}"): { "key": "k" } } }),
        ),
        (
            "POST",
            "/_matrix/client/v3/keys/upload".to_owned(),
            json!({ "fallback_keys": (0..11).map(|i| (format!("a{i}:k"), json!({ "key": "k" }))).collect::<serde_json::Map<_, _>>() }),
        ),
    ];
    for (method, path, body) in cases {
        let (status, json) = server.req(method, &path, Some(&token), Some(body)).await;
        assert_eq!(
            (status, code(&json)),
            (400, Some("M_INVALID_PARAM")),
            "{method} {path}: {json}"
        );
    }
    // A stored filter that no sync could use is refused when it is stored.
    let types: Vec<String> = (0..101).map(|i| format!("t{i}")).collect();
    let (status, json) = server
        .req(
            "POST",
            &format!("/_matrix/client/v3/user/{user}/filter"),
            Some(&token),
            Some(json!({ "room": { "timeline": { "types": types } } })),
        )
        .await;
    assert_eq!(
        (status, code(&json)),
        (400, Some("M_INVALID_PARAM")),
        "{json}"
    );
    server.stop().await;
}
