//! Rooms' events over raw HTTP: redactions, receipts, `/context`, presence and knocks,
//! `/timestamp_to_event`, and the deprecated `/events/{eventId}`.

use serde_json::json;

use crate::harness;

#[tokio::test]
async fn redaction_receipts_context_presence_knock() {
    let server = harness::start().await;
    let (alice_id, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let room = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    server
        .req(
            "POST",
            &format!("/_matrix/client/v3/join/{room}"),
            Some(&bob),
            Some(json!({})),
        )
        .await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            server
                .send_text(&bob, &room, &format!("b{i}"), &format!("msg {i}"))
                .await,
        );
    }

    // Alice cannot be redacted by Bob (power 0); Bob redacts his own; Alice (creator) redacts Bob's.
    let a_msg = server.send_text(&alice, &room, "a0", "alice's").await;
    let (status, _) = server
        .req(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/redact/{a_msg}/r1"),
            Some(&bob),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 403);
    let (status, body) = server
        .req(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/redact/{}/r2", ids[0]),
            Some(&bob),
            Some(json!({ "reason": "typo" })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = server
        .req(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/redact/{}/r3", ids[1]),
            Some(&alice),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200);
    for id in &ids[..2] {
        let (_, ev) = server
            .req(
                "GET",
                &format!("/_matrix/client/v3/rooms/{room}/event/{id}"),
                Some(&alice),
                None,
            )
            .await;
        assert_eq!(ev["content"], json!({}), "{ev}");
        assert_eq!(
            ev["unsigned"]["redacted_because"]["type"], "m.room.redaction",
            "{ev}"
        );
    }
    let (_, ev) = server
        .req(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/event/{}", ids[2]),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(ev["content"]["body"], "msg 2");

    // /context around the middle message.
    let (status, ctx) = server
        .req(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/context/{}?limit=2", ids[2]),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(status, 200, "{ctx}");
    assert_eq!(ctx["event"]["event_id"], ids[2].as_str());
    assert_eq!(ctx["events_before"][0]["event_id"], ids[1].as_str());
    assert_eq!(ctx["events_after"][0]["event_id"], ids[3].as_str());
    assert!(ctx["state"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["type"] == "m.room.create"));

    // Receipts reach the other member's sync; private ones do not.
    let (_, s0) = server
        .req("GET", "/_matrix/client/v3/sync", Some(&alice), None)
        .await;
    let since = s0["next_batch"].as_str().unwrap();
    let (status, _) = server
        .req(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{}", ids[4]),
            Some(&bob),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = server
        .req(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room}/read_markers"),
            Some(&bob),
            Some(json!({ "m.fully_read": ids[4], "m.read.private": ids[4] })),
        )
        .await;
    assert_eq!(status, 200);
    let (_, s1) = server
        .req(
            "GET",
            &format!("/_matrix/client/v3/sync?since={since}"),
            Some(&alice),
            None,
        )
        .await;
    let eph = s1["rooms"]["join"][&room]["ephemeral"]["events"]
        .as_array()
        .unwrap()
        .clone();
    let receipt = eph
        .iter()
        .find(|e| e["type"] == "m.receipt")
        .expect("receipt");
    assert!(
        receipt["content"][&ids[4]]["m.read"][&bob_id]["ts"].is_number(),
        "{receipt}"
    );
    assert!(
        receipt["content"][&ids[4]].get("m.read.private").is_none(),
        "{receipt}"
    );
    let (_, fr) = server
        .req(
            "GET",
            &format!("/_matrix/client/v3/user/{bob_id}/rooms/{room}/account_data/m.fully_read"),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(fr["event_id"], ids[4].as_str());

    // Presence of a room-mate shows in sync.
    let since = s1["next_batch"].as_str().unwrap();
    let (status, _) = server
        .req(
            "PUT",
            &format!("/_matrix/client/v3/presence/{bob_id}/status"),
            Some(&bob),
            Some(json!({ "presence": "online", "status_msg": "here" })),
        )
        .await;
    assert_eq!(status, 200);
    let (_, s2) = server
        .req(
            "GET",
            &format!("/_matrix/client/v3/sync?since={since}"),
            Some(&alice),
            None,
        )
        .await;
    let p = &s2["presence"]["events"][0];
    assert_eq!(
        (p["sender"].as_str(), p["content"]["status_msg"].as_str()),
        (Some(bob_id.as_str()), Some("here")),
        "{s2}"
    );
    let (status, _) = server
        .req(
            "PUT",
            &format!("/_matrix/client/v3/presence/{alice_id}/status"),
            Some(&bob),
            Some(json!({ "presence": "online" })),
        )
        .await;
    assert_eq!(status, 403);

    // Knocking on a knock room, then being let in.
    let (_, carol) = server.register("carol").await;
    let knock_room = server.create_room(&alice, json!({ "initial_state": [{ "type": "m.room.join_rules", "content": { "join_rule": "knock" } }] })).await;
    let (status, body) = server
        .req(
            "POST",
            &format!("/_matrix/client/v3/knock/{knock_room}"),
            Some(&carol),
            Some(json!({ "reason": "hi" })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, s) = server
        .req("GET", "/_matrix/client/v3/sync", Some(&carol), None)
        .await;
    assert!(s["rooms"]["knock"].get(&knock_room).is_some(), "{s}");
    let (status, _) = server
        .req(
            "POST",
            &format!("/_matrix/client/v3/rooms/{knock_room}/invite"),
            Some(&alice),
            Some(json!({ "user_id": "@carol:localhost" })),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = server
        .req(
            "POST",
            &format!("/_matrix/client/v3/join/{knock_room}"),
            Some(&carol),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200);
    server.stop().await;
}

/// `/timestamp_to_event` (spec, v1.6): the nearest event in either direction that the
/// user may see.
#[tokio::test]
async fn timestamp_to_event_finds_the_nearest_visible_event() {
    let server = crate::harness::start().await;
    let (_, alice) = server.register("alice").await;
    let (_, bob) = server.register("bob").await;
    let room = server
        .create_room(&alice, serde_json::json!({ "preset": "private_chat" }))
        .await;
    let mut sent = Vec::new();
    for i in 0..3 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let id = server
            .send_text(&alice, &room, &format!("t{i}"), "tick")
            .await;
        let path = format!(
            "/_matrix/client/v3/rooms/{room}/event/{}",
            crate::harness::urlencode(&id)
        );
        let ev = server.ok("GET", &path, &alice, None).await;
        sent.push((id, ev["origin_server_ts"].as_i64().unwrap()));
    }
    let ask = |ts: i64, dir: &'static str| {
        let (server, alice, room) = (&server, alice.clone(), room.clone());
        async move {
            server
                .req(
                    "GET",
                    &format!(
                        "/_matrix/client/v1/rooms/{room}/timestamp_to_event?ts={ts}&dir={dir}"
                    ),
                    Some(&alice),
                    None,
                )
                .await
        }
    };
    let (status, body) = ask(sent[1].1, "f").await;
    assert_eq!(
        (status, body["event_id"].as_str()),
        (200, Some(sent[1].0.as_str())),
        "{body}"
    );
    assert_eq!(body["origin_server_ts"], sent[1].1);
    assert_eq!(
        ask(sent[1].1 + 1, "f").await.1["event_id"],
        sent[2].0.as_str()
    );
    assert_eq!(
        ask(sent[2].1 - 1, "b").await.1["event_id"],
        sent[1].0.as_str()
    );
    let (status, body) = ask(sent[2].1 + 60_000, "f").await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (404, Some("M_NOT_FOUND")),
        "{body}"
    );
    assert_eq!(ask(1, "b").await.0, 404);
    let (status, _) = server
        .req(
            "GET",
            &format!("/_matrix/client/v1/rooms/{room}/timestamp_to_event?ts=1&dir=f"),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(status, 403, "not a member of a private room");
}

/// The deprecated `GET /events/{eventId}` answers as `/rooms/{roomId}/event/{eventId}`.
#[tokio::test]
async fn deprecated_event_by_id_is_the_rooms_event() {
    let server = harness::start().await;
    let (_, alice) = server.register("alice").await;
    let (_, carol) = server.register("carol").await;
    let room = server.create_room(&alice, serde_json::json!({})).await;
    let id = server.send_text(&alice, &room, "t1", "hello").await;
    let enc = harness::urlencode(&id);
    let by_room = server
        .ok(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/event/{enc}"),
            &alice,
            None,
        )
        .await;
    let by_id = server
        .ok(
            "GET",
            &format!("/_matrix/client/v3/events/{enc}"),
            &alice,
            None,
        )
        .await;
    assert_eq!(by_id, by_room);
    assert_eq!(by_id["content"]["body"], "hello");
    for (token, path, status) in [
        (&carol, format!("/_matrix/client/v3/events/{enc}"), 404),
        (
            &alice,
            "/_matrix/client/v3/events/%24nope%3Alocalhost".to_owned(),
            404,
        ),
        (
            &alice,
            "/_matrix/client/v3/events/not-an-id".to_owned(),
            400,
        ),
    ] {
        let (s, body) = server.req("GET", &path, Some(token), None).await;
        assert_eq!(s, status, "{path}: {body}");
    }
    server.stop().await;
}
