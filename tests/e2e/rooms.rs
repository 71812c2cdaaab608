//! Rooms over raw HTTP: creation, events, state, membership, visibility, concurrency.

use std::collections::HashSet;

use serde_json::{json, Value};

use crate::harness::{self, TestServer};

async fn create(server: &TestServer, token: &str, body: Value) -> String {
    let (status, body) = server
        .req(
            "POST",
            "/_matrix/client/v3/createRoom",
            Some(token),
            Some(body),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["room_id"].as_str().unwrap().to_owned()
}

async fn send(server: &TestServer, token: &str, room: &str, txn: &str, text: &str) -> String {
    let (status, body) = server
        .req(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}"),
            Some(token),
            Some(json!({ "msgtype": "m.text", "body": text })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["event_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn create_state_send_and_read() {
    let server = harness::start().await;
    let (alice, token) = server.register("alice").await;
    let room = create(&server, &token, json!({ "name": "Plans", "topic": "t", "room_alias_name": "plans", "preset": "public_chat" })).await;
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
    let e1 = send(&server, &token, &room, "t1", "hi").await;
    let e2 = send(&server, &token, &room, "t1", "hi").await;
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
    server.stop().await;
}

#[tokio::test]
async fn membership_power_and_visibility() {
    let server = harness::start().await;
    let (_, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let room = create(&server, &alice, json!({ "preset": "private_chat" })).await;

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
    send(&server, &alice, &room, "a1", "secret before bob").await;
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
    send(&server, &alice, &room, "a2", "welcome bob").await;
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
        let room = create(
            &server,
            &token,
            json!({ "room_version": version, "name": format!("v{version}") }),
        )
        .await;
        send(&server, &token, &room, &format!("t{version}"), "hi").await;
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

/// Several senders into shared rooms while others long-poll: every member receives every
/// event exactly once, all in the same order.
#[tokio::test]
async fn concurrent_senders_and_long_polls() {
    let server = harness::start().await;
    let (_, owner) = server.register("owner").await;
    let room = create(&server, &owner, json!({ "preset": "public_chat" })).await;
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
