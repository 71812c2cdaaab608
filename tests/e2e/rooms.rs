//! Rooms over raw HTTP: creation, events, state, membership, visibility, concurrency.

use std::collections::HashSet;

use serde_json::{json, Value};

use crate::harness;

#[tokio::test]
async fn create_state_send_and_read() {
    let server = harness::start().await;
    let (alice, token) = server.register("alice").await;
    let room = server.create_room(&token, json!({ "name": "Plans", "topic": "t", "room_alias_name": "plans", "preset": "public_chat" })).await;
    // Room v12: the ID is the create event's reference hash, with no server part.
    assert!(!room.contains(':'), "{room}");

    let (status, body) = server
        .req(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!((status, body["name"].as_str()), (200, Some("Plans")));
    let (status, body) = server
        .req(
            "GET",
            "/_matrix/client/v3/directory/room/%23plans:localhost",
            None,
            None,
        )
        .await;
    assert_eq!(
        (status, body["room_id"].as_str()),
        (200, Some(room.as_str())),
        "{body}"
    );

    // Same transaction ID: same event, sent once.
    let e1 = server.send_text(&token, &room, "t1", "hi").await;
    let e2 = server.send_text(&token, &room, "t1", "hi").await;
    assert_eq!(e1, e2);
    let (_, body) = server
        .req(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50"),
            Some(&token),
            None,
        )
        .await;
    let texts: Vec<_> = body["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .collect();
    assert_eq!(texts.len(), 1);

    let (status, body) = server
        .req(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/event/{e1}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(
        (status, body["content"]["body"].as_str()),
        (200, Some("hi")),
        "{body}"
    );
    assert_eq!(body["sender"].as_str(), Some(alice.as_str()));

    // Topic change through the state API, read back.
    let (status, _) = server
        .req(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.topic"),
            Some(&token),
            Some(json!({ "topic": "new" })),
        )
        .await;
    assert_eq!(status, 200);
    let (_, body) = server
        .req(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/state"),
            Some(&token),
            None,
        )
        .await;
    let topics: Vec<_> = body
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.topic")
        .collect();
    assert_eq!(topics.len(), 1);
    assert_eq!(topics[0]["content"]["topic"], "new");

    // A public room: Bob joins by alias, and is in /joined_members.
    let (_, before_bob) = server
        .req("GET", "/_matrix/client/v3/sync", Some(&token), None)
        .await;
    let before_bob = before_bob["next_batch"].as_str().unwrap().to_owned();
    let (_, bob_token) = server.register("bob").await;
    let (status, body) = server
        .req(
            "POST",
            "/_matrix/client/v3/join/%23plans:localhost",
            Some(&bob_token),
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (status, body["room_id"].as_str()),
        (200, Some(room.as_str())),
        "{body}"
    );
    let (_, body) = server
        .req(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/joined_members"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(body["joined"].as_object().unwrap().len(), 2, "{body}");
    // `/members?at=` a token from before Bob joined lists Alice only.
    let (_, body) = server
        .req(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/members?at={before_bob}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(body["chunk"].as_array().unwrap().len(), 1, "{body}");
    let (_, body) = server
        .req(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/members"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(body["chunk"].as_array().unwrap().len(), 2, "{body}");
    server.stop().await;
}

#[tokio::test]
async fn membership_power_and_visibility() {
    let server = harness::start().await;
    let (_, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let room = server
        .create_room(&alice, json!({ "preset": "private_chat" }))
        .await;

    // Private: Bob cannot join uninvited.
    let (status, _) = server
        .req(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room}/join"),
            Some(&bob),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 403);

    // History visible only from joining.
    let (status, _) = server
        .req(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.history_visibility/"),
            Some(&alice),
            Some(json!({ "history_visibility": "joined" })),
        )
        .await;
    assert_eq!(status, 200);
    server
        .send_text(&alice, &room, "a1", "secret before bob")
        .await;
    let (status, _) = server
        .req(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            Some(&alice),
            Some(json!({ "user_id": bob_id })),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = server
        .req(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room}/join"),
            Some(&bob),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200);
    server.send_text(&alice, &room, "a2", "welcome bob").await;
    let (_, body) = server
        .req(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50"),
            Some(&bob),
            None,
        )
        .await;
    let texts: Vec<_> = body["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert_eq!(texts, vec!["welcome bob"], "{body}");
    // Nor does /sync show it.
    let (_, body) = server
        .req("GET", "/_matrix/client/v3/sync", Some(&bob), None)
        .await;
    let timeline = body["rooms"]["join"][&room]["timeline"]["events"].to_string();
    assert!(
        timeline.contains("welcome bob") && !timeline.contains("secret before bob"),
        "{timeline}"
    );

    // Bob (power 0) may not change the name or kick; Alice can kick, then ban.
    let (status, _) = server
        .req(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"),
            Some(&bob),
            Some(json!({ "name": "x" })),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = server
        .req(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room}/kick"),
            Some(&alice),
            Some(json!({ "user_id": bob_id })),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = server
        .req(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/b1"),
            Some(&bob),
            Some(json!({ "body": "x" })),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = server
        .req(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room}/ban"),
            Some(&alice),
            Some(json!({ "user_id": bob_id, "reason": "bye" })),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = server
        .req(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            Some(&alice),
            Some(json!({ "user_id": bob_id })),
        )
        .await;
    assert_eq!(status, 403);
    // Forgetting is allowed once out; the room then leaves /sync.
    let (status, _) = server
        .req(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room}/forget"),
            Some(&bob),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = server
        .req(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room}/forget"),
            Some(&alice),
            Some(json!({})),
        )
        .await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_UNKNOWN")));
    server.stop().await;
}

#[tokio::test]
async fn older_room_versions_are_created_and_used() {
    let server = harness::start().await;
    let (_, token) = server.register("vera").await;
    for version in ["1", "3", "6", "10", "11", "12"] {
        let room = server
            .create_room(
                &token,
                json!({ "room_version": version, "name": format!("v{version}") }),
            )
            .await;
        server
            .send_text(&token, &room, &format!("t{version}"), "hi")
            .await;
        let (_, body) = server
            .req(
                "GET",
                &format!("/_matrix/client/v3/rooms/{room}/state/m.room.create/"),
                Some(&token),
                None,
            )
            .await;
        assert_eq!(body["room_version"].as_str(), Some(version), "{body}");
    }
    server.stop().await;
}

/// History visibility "shared" (spec: "Visibility of events", rule 3): a member who has
/// left still reads what was sent before they joined, and what was sent while they were
/// in the room, but nothing after they left.
#[tokio::test]
async fn shared_history_stays_readable_after_leaving() {
    let server = harness::start().await;
    let (_, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let room = server
        .create_room(
            &alice,
            json!({ "preset": "public_chat", "initial_state": [{ "type": "m.room.history_visibility", "content": { "history_visibility": "shared" } }] }),
        )
        .await;
    server.send_text(&alice, &room, "s1", "before bob").await;
    server.membership(&bob, &room, "join").await;
    server.send_text(&alice, &room, "s2", "with bob").await;
    server.membership(&bob, &room, "leave").await;
    server.send_text(&alice, &room, "s3", "after bob").await;
    assert_eq!(
        server.message_bodies(&bob, &room).await,
        vec!["with bob", "before bob"]
    );
    // The left room in Bob's sync shows the same history, up to his leave.
    let body = server
        .ok(
            "GET",
            "/_matrix/client/v3/sync?filter=%7B%22room%22%3A%7B%22include_leave%22%3Atrue%7D%7D",
            &bob,
            None,
        )
        .await;
    let timeline = body["rooms"]["leave"][&room]["timeline"]["events"].to_string();
    assert!(
        timeline.contains("before bob")
            && timeline.contains("with bob")
            && !timeline.contains("after bob"),
        "{body}"
    );
    assert!(timeline.contains(&bob_id), "{timeline}");
    server.stop().await;
}

/// Several senders into shared rooms while others long-poll: every member receives every
/// event exactly once, all in the same order.
#[tokio::test]
async fn concurrent_senders_and_long_polls() {
    let server = harness::start().await;
    let (_, owner) = server.register("owner").await;
    let room = server
        .create_room(&owner, json!({ "preset": "public_chat" }))
        .await;
    let mut tokens = vec![owner.clone()];
    for i in 0..5 {
        let (_, t) = server.register(&format!("u{i}")).await;
        let (status, _) = server
            .req(
                "POST",
                &format!("/_matrix/client/v3/join/{room}"),
                Some(&t),
                Some(json!({})),
            )
            .await;
        assert_eq!(status, 200);
        tokens.push(t);
    }
    let (_, start) = server
        .req(
            "GET",
            "/_matrix/client/v3/sync?timeout=0",
            Some(&owner),
            None,
        )
        .await;
    let since0 = start["next_batch"].as_str().unwrap().to_owned();
    const PER_SENDER: usize = 20;
    let total = tokens.len() * PER_SENDER;

    // Readers: long-poll from the same starting token until they have seen `total` messages.
    let mut readers = Vec::new();
    for t in tokens.clone() {
        let url = server.url.clone();
        let room = room.clone();
        let since0 = since0.clone();
        readers.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut since = since0;
            let mut seen = Vec::new();
            while seen.len() < total {
                let body: Value = http
                    .get(format!("{url}/_matrix/client/v3/sync?timeout=5000&since={since}&filter=%7B%22room%22%3A%7B%22timeline%22%3A%7B%22limit%22%3A1000%7D%7D%7D"))
                    .bearer_auth(&t)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                since = body["next_batch"].as_str().unwrap().to_owned();
                let timeline = &body["rooms"]["join"][&room]["timeline"];
                assert_ne!(timeline["limited"], true);
                for e in timeline["events"].as_array().into_iter().flatten() {
                    if e["type"] == "m.room.message" {
                        seen.push(e["event_id"].as_str().unwrap().to_owned());
                    }
                }
            }
            seen
        }));
    }
    let mut senders = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        let (url, room, t) = (server.url.clone(), room.clone(), t.clone());
        senders.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            for n in 0..PER_SENDER {
                let res = http
                    .put(format!(
                        "{url}/_matrix/client/v3/rooms/{room}/send/m.room.message/{i}-{n}"
                    ))
                    .bearer_auth(&t)
                    .json(&json!({ "msgtype": "m.text", "body": format!("{i}-{n}") }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status().as_u16(), 200);
            }
        }));
    }
    for s in senders {
        s.await.unwrap();
    }
    let mut orders = Vec::new();
    for r in readers {
        orders.push(r.await.unwrap());
    }
    let first = &orders[0];
    assert_eq!(first.len(), total);
    assert_eq!(
        first.iter().collect::<HashSet<_>>().len(),
        total,
        "no duplicates"
    );
    for o in &orders {
        assert_eq!(o, first, "every member sees the same order");
    }
    server.stop().await;
}
