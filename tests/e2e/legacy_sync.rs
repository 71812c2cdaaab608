//! The deprecated sync endpoints over raw HTTP: `/initialSync`, `/events` (with its
//! peeking form) and `/rooms/{roomId}/initialSync`.

use serde_json::{json, Value};

fn room_entry<'a>(body: &'a Value, room: &str) -> &'a Value {
    body["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["room_id"] == room)
        .unwrap_or_else(|| panic!("{room} missing: {body}"))
}

fn bodies(chunk: &Value) -> Vec<String> {
    chunk
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["content"]["body"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn initial_sync_lists_rooms_with_messages_and_state() {
    let server = crate::harness::start().await;
    let (alice_id, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let room = server.create_room(&alice, json!({ "name": "Chat" })).await;
    for i in 0..3 {
        server
            .send_text(&alice, &room, &format!("t{i}"), &format!("m{i}"))
            .await;
    }
    let invited = server.create_room(&bob, json!({})).await;
    server
        .ok(
            "POST",
            &format!("/_matrix/client/v3/rooms/{invited}/invite"),
            &bob,
            Some(json!({ "user_id": alice_id })),
        )
        .await;
    let left = server.create_room(&alice, json!({})).await;
    server
        .send_text(&alice, &left, "l1", "before leaving")
        .await;
    server.membership(&alice, &left, "leave").await;
    server
        .ok(
            "PUT",
            &format!("/_matrix/client/v3/user/{alice_id}/rooms/{room}/account_data/org.example"),
            &alice,
            Some(json!({ "k": 1 })),
        )
        .await;

    let body = server
        .ok(
            "GET",
            "/_matrix/client/v3/initialSync?limit=2",
            &alice,
            None,
        )
        .await;
    assert!(body["end"].is_string(), "{body}");
    assert!(
        body["presence"].is_array() && body["account_data"].is_array(),
        "{body}"
    );
    let r = room_entry(&body, &room);
    assert_eq!(r["membership"], "join");
    assert_eq!(bodies(&r["messages"]["chunk"]), ["m1", "m2"]);
    assert!(r["messages"]["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["room_id"] == room.as_str()));
    assert!(r["messages"]["start"].is_string() && r["messages"]["end"] == body["end"]);
    let state = r["state"].as_array().unwrap();
    assert!(state
        .iter()
        .any(|e| e["type"] == "m.room.create" && e["room_id"] == room.as_str()));
    assert!(state
        .iter()
        .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Chat"));
    // One state event per (type, state_key).
    let mut keys: Vec<_> = state
        .iter()
        .map(|e| (e["type"].to_string(), e["state_key"].to_string()))
        .collect();
    let n = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), n);
    assert_eq!(r["visibility"], "private");
    assert!(r["account_data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["type"] == "org.example"));
    let inv = room_entry(&body, &invited);
    assert_eq!(inv["membership"], "invite");
    assert_eq!(inv["invite"]["sender"], bob_id.as_str());
    // Left rooms only with `archived`.
    assert!(body["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["room_id"] != left.as_str()));
    let archived = server
        .ok(
            "GET",
            "/_matrix/client/v3/initialSync?archived=true",
            &alice,
            None,
        )
        .await;
    let l = room_entry(&archived, &left);
    assert_eq!(l["membership"], "leave");
    assert!(bodies(&l["messages"]["chunk"]).contains(&"before leaving".to_owned()));

    // Bad parameters are 400s.
    for q in ["limit=abc", "archived=maybe", "limit=-1"] {
        let (status, b) = server
            .req(
                "GET",
                &format!("/_matrix/client/v3/initialSync?{q}"),
                Some(&alice),
                None,
            )
            .await;
        assert_eq!(
            (status, b["errcode"].as_str()),
            (400, Some("M_INVALID_PARAM")),
            "{q}: {b}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn events_streams_what_happens_after_from() {
    let server = std::sync::Arc::new(crate::harness::start().await);
    let (_, alice) = server.register("alice").await;
    let (_, bob) = server.register("bob").await;
    let room = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    server.membership(&bob, &room, "join").await;
    let start = server
        .ok("GET", "/_matrix/client/v3/initialSync?limit=1", &bob, None)
        .await["end"]
        .as_str()
        .unwrap()
        .to_owned();

    // Nothing yet: an empty chunk at once with timeout 0.
    let body = server
        .ok(
            "GET",
            &format!("/_matrix/client/v3/events?from={start}&timeout=0"),
            &bob,
            None,
        )
        .await;
    assert_eq!(body["start"], start.as_str());
    assert!(bodies(&body["chunk"]).is_empty(), "{body}");

    // A long poll answered by the next message.
    let poll = {
        let server = server.clone();
        let bob = bob.clone();
        let start = start.clone();
        tokio::spawn(async move {
            server
                .ok(
                    "GET",
                    &format!("/_matrix/client/v3/events?from={start}&timeout=20000"),
                    &bob,
                    None,
                )
                .await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    server.send_text(&alice, &room, "t1", "hello").await;
    let body = poll.await.unwrap();
    assert_eq!(bodies(&body["chunk"]), ["hello"], "{body}");
    let msg = body["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.room.message")
        .unwrap();
    assert_eq!(msg["room_id"], room.as_str());
    let end = body["end"].as_str().unwrap().to_owned();
    assert_ne!(end, start);

    // From `end` on: only what came after.
    server.send_text(&alice, &room, "t2", "again").await;
    let body = server
        .ok(
            "GET",
            &format!("/_matrix/client/v3/events?from={end}&timeout=0"),
            &bob,
            None,
        )
        .await;
    assert_eq!(bodies(&body["chunk"]), ["again"], "{body}");

    // `/events` has no place for to-device messages, so it acknowledges none: `/sync`
    // still delivers them afterwards.
    let bob_device = server
        .ok("GET", "/_matrix/client/v3/account/whoami", &bob, None)
        .await["device_id"]
        .as_str()
        .unwrap()
        .to_owned();
    server
        .ok(
            "PUT",
            "/_matrix/client/v3/sendToDevice/org.example.key/td1",
            &alice,
            Some(json!({ "messages": { "@bob:localhost": { bob_device: { "k": "v" } } } })),
        )
        .await;
    let body = server
        .ok("GET", "/_matrix/client/v3/events?timeout=0", &bob, None)
        .await;
    server
        .ok(
            "GET",
            &format!(
                "/_matrix/client/v3/events?from={}&timeout=0",
                body["end"].as_str().unwrap()
            ),
            &bob,
            None,
        )
        .await;
    server
        .ok("GET", "/_matrix/client/v3/initialSync", &bob, None)
        .await;
    let s = crate::harness::sync(&server, &bob, "").await;
    assert!(
        s["to_device"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "org.example.key"),
        "{s}"
    );

    // Bad tokens and timeouts are 400s.
    for q in ["from=garbage", "timeout=soon"] {
        let (status, b) = server
            .req(
                "GET",
                &format!("/_matrix/client/v3/events?{q}"),
                Some(&bob),
                None,
            )
            .await;
        assert_eq!(
            (status, b["errcode"].as_str()),
            (400, Some("M_INVALID_PARAM")),
            "{q}: {b}"
        );
    }
    match std::sync::Arc::try_unwrap(server) {
        Ok(s) => s.stop().await,
        Err(_) => panic!("server still shared"),
    }
}

#[tokio::test]
async fn room_initial_sync_and_peeking() {
    let server = crate::harness::start().await;
    let (alice_id, alice) = server.register("alice").await;
    let (_, bob) = server.register("bob").await;
    let private = server
        .create_room(&alice, json!({ "preset": "private_chat" }))
        .await;
    let open = server
        .create_room(
            &alice,
            json!({ "preset": "public_chat", "initial_state": [{ "type": "m.room.history_visibility", "content": { "history_visibility": "world_readable" } }] }),
        )
        .await;
    for i in 0..4 {
        server
            .send_text(&alice, &private, &format!("p{i}"), &format!("p{i}"))
            .await;
        server
            .send_text(&alice, &open, &format!("o{i}"), &format!("o{i}"))
            .await;
    }
    server
        .ok(
            "PUT",
            &format!("/_matrix/client/v3/presence/{alice_id}/status"),
            &alice,
            Some(json!({ "presence": "online" })),
        )
        .await;

    let body = server
        .ok(
            "GET",
            &format!("/_matrix/client/v3/rooms/{private}/initialSync?limit=3"),
            &alice,
            None,
        )
        .await;
    assert_eq!(body["room_id"], private.as_str());
    assert_eq!(body["membership"], "join");
    assert_eq!(bodies(&body["messages"]["chunk"]), ["p1", "p2", "p3"]);
    assert!(body["state"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["type"] == "m.room.create"));
    assert!(
        body["presence"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["sender"] == alice_id.as_str() && e["content"]["presence"] == "online"),
        "{body}"
    );
    // Paginating back from `start` gives the earlier messages.
    let start = body["messages"]["start"].as_str().unwrap();
    let older = server
        .ok(
            "GET",
            &format!("/_matrix/client/v3/rooms/{private}/messages?dir=b&from={start}&limit=1"),
            &alice,
            None,
        )
        .await;
    assert_eq!(bodies(&older["chunk"]), ["p0"], "{older}");

    // A stranger: refused for the private room, allowed to read the world-readable one
    // (without room-mates' presence).
    let (status, _) = server
        .req(
            "GET",
            &format!("/_matrix/client/v3/rooms/{private}/initialSync"),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(status, 403);
    let body = server
        .ok(
            "GET",
            &format!("/_matrix/client/v3/rooms/{open}/initialSync?limit=2"),
            &bob,
            None,
        )
        .await;
    assert_eq!(bodies(&body["messages"]["chunk"]), ["o2", "o3"]);
    assert!(body.get("membership").is_none(), "{body}");
    assert_eq!(body["presence"], json!([]));
    let (status, _) = server
        .req(
            "GET",
            "/_matrix/client/v3/rooms/!nowhere:localhost/initialSync",
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(status, 404);

    // Peeking at the world-readable room through `/events`.
    let end = body["messages"]["end"].as_str().unwrap().to_owned();
    server.send_text(&alice, &open, "o9", "fresh").await;
    server.send_text(&alice, &private, "p9", "secret").await;
    let peek = server
        .ok(
            "GET",
            &format!("/_matrix/client/v3/events?room_id={open}&from={end}&timeout=0"),
            &bob,
            None,
        )
        .await;
    assert_eq!(bodies(&peek["chunk"]), ["fresh"], "{peek}");
    let (status, _) = server
        .req(
            "GET",
            &format!("/_matrix/client/v3/events?room_id={private}&timeout=0"),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(status, 403);
    server.stop().await;
}
