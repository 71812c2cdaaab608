//! `/sync` behaviour: long-poll wake-ups, typing, account data, filters, invites and leaves.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness;

#[tokio::test]
async fn long_poll_wakes_on_message_typing_and_account_data() {
    let server = harness::start().await;
    let (_, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let (_, room) = server
        .req(
            "POST",
            "/_matrix/client/v3/createRoom",
            Some(&alice),
            Some(json!({ "invite": [bob_id] })),
        )
        .await;
    let room = room["room_id"].as_str().unwrap().to_owned();

    // Bob's initial sync shows the invite with stripped state.
    let (_, body) = server
        .req("GET", "/_matrix/client/v3/sync", Some(&bob), None)
        .await;
    let invite = &body["rooms"]["invite"][&room]["invite_state"]["events"];
    assert!(
        invite
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.room.member" && e["content"]["membership"] == "invite"),
        "{body}"
    );
    server
        .req(
            "POST",
            &format!("/_matrix/client/v3/join/{room}"),
            Some(&bob),
            Some(json!({})),
        )
        .await;
    let (_, body) = server
        .req("GET", "/_matrix/client/v3/sync", Some(&bob), None)
        .await;
    let mut since = body["next_batch"].as_str().unwrap().to_owned();
    let joined = &body["rooms"]["join"][&room];
    // The create event is in the state block or, for a short room, in the timeline.
    let in_state = joined["state"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["type"] == "m.room.create");
    let in_timeline = joined["timeline"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["type"] == "m.room.create");
    assert!(in_state != in_timeline, "{body}");

    // An idle long-poll returns empty at its timeout with the same position.
    let (_, body) = server
        .req(
            "GET",
            &format!("/_matrix/client/v3/sync?since={since}&timeout=300"),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(
        body["rooms"]["join"].as_object().map(|o| o.len()),
        Some(0),
        "{body}"
    );
    since = body["next_batch"].as_str().unwrap().to_owned();

    let wait = |since: String| {
        let (url, bob) = (server.url.clone(), bob.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let body: Value = reqwest::Client::new()
                .get(format!(
                    "{url}/_matrix/client/v3/sync?since={since}&timeout=20000"
                ))
                .bearer_auth(&bob)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            (body, started.elapsed())
        })
    };

    // A message wakes the poll well before its timeout.
    let poll = wait(since.clone());
    tokio::time::sleep(Duration::from_millis(200)).await;
    server
        .req(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/1"),
            Some(&alice),
            Some(json!({ "body": "ping" })),
        )
        .await;
    let (body, took) = poll.await.unwrap();
    assert!(took < Duration::from_secs(10), "woke after {took:?}");
    let events = body["rooms"]["join"][&room]["timeline"]["events"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(events.len(), 1, "{body}");
    assert_eq!(events[0]["content"]["body"], "ping");
    since = body["next_batch"].as_str().unwrap().to_owned();

    // Typing wakes it too.
    let poll = wait(since.clone());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _) = server
        .req(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/typing/@alice:localhost"),
            Some(&alice),
            Some(json!({ "typing": true, "timeout": 10000 })),
        )
        .await;
    assert_eq!(status, 200);
    let (body, _) = poll.await.unwrap();
    let eph = &body["rooms"]["join"][&room]["ephemeral"]["events"][0];
    assert_eq!(eph["type"], "m.typing", "{body}");
    assert_eq!(eph["content"]["user_ids"][0], "@alice:localhost");
    since = body["next_batch"].as_str().unwrap().to_owned();

    // And account data.
    let poll = wait(since.clone());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _) = server
        .req(
            "PUT",
            "/_matrix/client/v3/user/@bob:localhost/account_data/org.example.x",
            Some(&bob),
            Some(json!({ "a": 1 })),
        )
        .await;
    assert_eq!(status, 200);
    let (body, _) = poll.await.unwrap();
    assert_eq!(
        body["account_data"]["events"][0]["type"], "org.example.x",
        "{body}"
    );
    server.stop().await;
}

#[tokio::test]
async fn limited_timeline_filters_and_leave() {
    let server = harness::start().await;
    let (_, alice) = server.register("alice").await;
    let (_, room) = server
        .req(
            "POST",
            "/_matrix/client/v3/createRoom",
            Some(&alice),
            Some(json!({})),
        )
        .await;
    let room = room["room_id"].as_str().unwrap().to_owned();
    let (_, body) = server
        .req("GET", "/_matrix/client/v3/sync", Some(&alice), None)
        .await;
    let since = body["next_batch"].as_str().unwrap().to_owned();
    for i in 0..15 {
        server
            .req(
                "PUT",
                &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{i}"),
                Some(&alice),
                Some(json!({ "body": format!("m{i}") })),
            )
            .await;
    }
    // A stored filter with a timeline limit of 5.
    let (status, body) = server
        .req(
            "POST",
            "/_matrix/client/v3/user/@alice:localhost/filter",
            Some(&alice),
            Some(json!({ "room": { "timeline": { "limit": 5 } } })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let filter = body["filter_id"].as_str().unwrap().to_owned();
    let (_, body) = server
        .req(
            "GET",
            &format!("/_matrix/client/v3/sync?since={since}&filter={filter}"),
            Some(&alice),
            None,
        )
        .await;
    let tl = &body["rooms"]["join"][&room]["timeline"];
    assert_eq!(tl["limited"], true);
    let bodies: Vec<_> = tl["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["content"]["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, vec!["m10", "m11", "m12", "m13", "m14"]);
    // prev_batch continues backwards with no gap.
    let prev = tl["prev_batch"].as_str().unwrap();
    let (_, body) = server
        .req(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&from={prev}&limit=3"),
            Some(&alice),
            None,
        )
        .await;
    let bodies: Vec<_> = body["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["content"]["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, vec!["m9", "m8", "m7"]);
    // With lazy-loaded members, /messages carries the senders' member events.
    let lazy = "%7B%22lazy_load_members%22%3Atrue%7D";
    let (_, body) = server
        .req(
            "GET",
            &format!(
                "/_matrix/client/v3/rooms/{room}/messages?dir=b&from={prev}&limit=3&filter={lazy}"
            ),
            Some(&alice),
            None,
        )
        .await;
    let state = body["state"].as_array().expect("state with lazy loading");
    assert_eq!(state.len(), 1, "{body}");
    assert_eq!(state[0]["state_key"], "@alice:localhost");

    // not_types filter drops messages.
    let f = "%7B%22room%22%3A%7B%22timeline%22%3A%7B%22not_types%22%3A%5B%22m.room.message%22%5D%7D%7D%7D";
    let (_, body) = server
        .req(
            "GET",
            &format!("/_matrix/client/v3/sync?since={since}&filter={f}"),
            Some(&alice),
            None,
        )
        .await;
    assert!(body["rooms"]["join"].get(&room).is_none(), "{body}");

    // Leaving shows the room under `leave` on the next sync.
    let next = body["next_batch"].as_str().unwrap().to_owned();
    server
        .req(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room}/leave"),
            Some(&alice),
            Some(json!({})),
        )
        .await;
    let (_, body) = server
        .req(
            "GET",
            &format!("/_matrix/client/v3/sync?since={next}"),
            Some(&alice),
            None,
        )
        .await;
    assert!(body["rooms"]["leave"].get(&room).is_some(), "{body}");
    server.stop().await;
}

#[tokio::test]
async fn to_device_in_order_until_acknowledged() {
    let server = harness::start().await;
    let (alice_id, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let (_, body) = server
        .req("GET", "/_matrix/client/v3/account/whoami", Some(&bob), None)
        .await;
    let bob_device = body["device_id"].as_str().unwrap().to_owned();
    let (_, body) = server
        .req("GET", "/_matrix/client/v3/sync", Some(&bob), None)
        .await;
    let since = body["next_batch"].as_str().unwrap().to_owned();

    for (i, device) in [bob_device.as_str(), "*", bob_device.as_str()]
        .iter()
        .enumerate()
    {
        let (status, _) = server
            .req(
                "PUT",
                &format!("/_matrix/client/v3/sendToDevice/org.example.ping/t{i}"),
                Some(&alice),
                Some(json!({ "messages": { bob_id.as_str(): { *device: { "n": i } } } })),
            )
            .await;
        assert_eq!(status, 200);
    }
    // The same transaction again is not delivered twice.
    server
        .req(
            "PUT",
            "/_matrix/client/v3/sendToDevice/org.example.ping/t0",
            Some(&alice),
            Some(json!({ "messages": { bob_id.as_str(): { bob_device.as_str(): { "n": 0 } } } })),
        )
        .await;

    let get = |since: String| {
        let server = &server;
        let bob = bob.clone();
        async move {
            server
                .req(
                    "GET",
                    &format!("/_matrix/client/v3/sync?since={since}"),
                    Some(&bob),
                    None,
                )
                .await
                .1
        }
    };
    let body = get(since.clone()).await;
    let events = body["to_device"]["events"].as_array().unwrap().clone();
    let ns: Vec<_> = events
        .iter()
        .map(|e| e["content"]["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, vec![0, 1, 2], "{body}");
    assert_eq!(events[0]["sender"], alice_id.as_str());
    // Not acknowledged yet: the same since gets them again.
    let again = get(since).await;
    assert_eq!(again["to_device"]["events"].as_array().unwrap().len(), 3);
    // Acknowledged by syncing from the new token: gone.
    let next = body["next_batch"].as_str().unwrap().to_owned();
    let body = get(next.clone()).await;
    assert!(
        body["to_device"]["events"].as_array().unwrap().is_empty(),
        "{body}"
    );
    let (_, body) = server
        .req("GET", "/_matrix/client/v3/sync", Some(&bob), None)
        .await;
    assert!(
        body["to_device"]["events"].as_array().unwrap().is_empty(),
        "{body}"
    );
    server.stop().await;
}

/// A typing timeout running out reaches a long-polling sync as it happens: nothing else
/// would announce that the user stopped typing.
#[tokio::test]
async fn typing_timeout_wakes_long_polls() {
    let server = harness::start().await;
    let (alice_id, alice) = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    server
        .ok(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/typing/{alice_id}"),
            &alice,
            Some(json!({ "typing": true, "timeout": 300 })),
        )
        .await;
    let body = server
        .ok("GET", "/_matrix/client/v3/sync", &alice, None)
        .await;
    let typing = &body["rooms"]["join"][&room]["ephemeral"]["events"][0];
    assert_eq!(typing["content"]["user_ids"], json!([alice_id]), "{body}");
    let since = body["next_batch"].as_str().unwrap().to_owned();
    // Long-poll well past the typing timeout: the answer must carry the empty typing list.
    let body = server
        .ok(
            "GET",
            &format!("/_matrix/client/v3/sync?since={since}&timeout=20000"),
            &alice,
            None,
        )
        .await;
    let typing = &body["rooms"]["join"][&room]["ephemeral"]["events"][0];
    assert_eq!(typing["type"], "m.typing", "{body}");
    assert_eq!(typing["content"]["user_ids"], json!([]), "{body}");
    server.stop().await;
}

/// The room summary comes with an incremental sync whenever membership changed since, also
/// when the member event itself is not shown: here it falls in the gap of a limited,
/// lazy-loading timeline.
#[tokio::test]
async fn summary_follows_joins_hidden_by_a_limited_timeline() {
    let server = harness::start().await;
    let (_, alice) = server.register("alice").await;
    let (_, bob) = server.register("bob").await;
    let (_, carol) = server.register("carol").await;
    let room = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    server.membership(&bob, &room, "join").await;
    let filter = "%7B%22room%22%3A%7B%22timeline%22%3A%7B%22limit%22%3A5%7D%2C%22state%22%3A%7B%22lazy_load_members%22%3Atrue%7D%7D%7D";
    let body = server
        .ok(
            "GET",
            &format!("/_matrix/client/v3/sync?filter={filter}"),
            &bob,
            None,
        )
        .await;
    assert_eq!(
        body["rooms"]["join"][&room]["summary"]["m.joined_member_count"], 2,
        "{body}"
    );
    let since = body["next_batch"].as_str().unwrap().to_owned();
    server.membership(&carol, &room, "join").await;
    for i in 0..8 {
        server
            .send_text(&alice, &room, &format!("m{i}"), "hello")
            .await;
    }
    let body = server
        .ok(
            "GET",
            &format!("/_matrix/client/v3/sync?filter={filter}&since={since}"),
            &bob,
            None,
        )
        .await;
    let joined = &body["rooms"]["join"][&room];
    assert_eq!(joined["timeline"]["limited"], true, "{body}");
    let shown = format!("{}{}", joined["state"], joined["timeline"]);
    assert!(!shown.contains("@carol:localhost"), "{body}");
    assert_eq!(joined["summary"]["m.joined_member_count"], 3, "{body}");
    // Nothing about members moved since: the summary is left out.
    let since = body["next_batch"].as_str().unwrap().to_owned();
    server.send_text(&alice, &room, "m9", "again").await;
    let body = server
        .ok(
            "GET",
            &format!("/_matrix/client/v3/sync?filter={filter}&since={since}"),
            &bob,
            None,
        )
        .await;
    assert_eq!(body["rooms"]["join"][&room]["summary"], json!({}), "{body}");
    server.stop().await;
}

/// Stream positions are never handed out twice, even when the rows that held the highest
/// one are gone: here acknowledged to-device messages, then a restart. A client holding
/// that position must still receive what comes next.
#[tokio::test]
async fn positions_survive_acknowledged_to_device_and_restart() {
    let mut server = harness::start().await;
    let (_, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let room = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    server.membership(&bob, &room, "join").await;
    let body = server
        .ok("GET", "/_matrix/client/v3/sync", &bob, None)
        .await;
    let since = body["next_batch"].as_str().unwrap().to_owned();
    server
        .ok(
            "PUT",
            "/_matrix/client/v3/sendToDevice/org.example.ping/t1",
            &alice,
            Some(json!({ "messages": { bob_id: { "*": { "n": 1 } } } })),
        )
        .await;
    let body = server
        .ok(
            "GET",
            &format!("/_matrix/client/v3/sync?since={since}"),
            &bob,
            None,
        )
        .await;
    assert_eq!(body["to_device"]["events"][0]["content"]["n"], 1, "{body}");
    let since = body["next_batch"].as_str().unwrap().to_owned();
    // This sync acknowledges (deletes) the message.
    server
        .ok(
            "GET",
            &format!("/_matrix/client/v3/sync?since={since}&timeout=0"),
            &bob,
            None,
        )
        .await;
    server.restart().await;
    server
        .send_text(&alice, &room, "after", "after the restart")
        .await;
    let body = server
        .ok(
            "GET",
            &format!("/_matrix/client/v3/sync?since={since}&timeout=5000"),
            &bob,
            None,
        )
        .await;
    let timeline = body["rooms"]["join"][&room]["timeline"]["events"].to_string();
    assert!(timeline.contains("after the restart"), "{body}");
    server.stop().await;
}

/// Messages, receipts, account data and to-device messages written concurrently by four
/// users all reach every long-polling sync: each message and to-device message exactly
/// once, and the last account data and receipts in the end. Guards the per-stream skips.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mixed_streams_reach_every_long_poll() {
    const USERS: usize = 4;
    const ROUNDS: usize = 10;
    let server = harness::start().await;
    let mut users = Vec::new();
    for i in 0..USERS {
        users.push(server.register(&format!("m{i}")).await);
    }
    let room = server
        .create_room(&users[0].1, json!({ "preset": "public_chat" }))
        .await;
    for (_, token) in &users[1..] {
        server.membership(token, &room, "join").await;
    }
    let mut starts = Vec::new();
    for (_, token) in &users {
        let body = server
            .ok("GET", "/_matrix/client/v3/sync", token, None)
            .await;
        starts.push(body["next_batch"].as_str().unwrap().to_owned());
    }
    let ids: Vec<String> = users.iter().map(|(id, _)| id.clone()).collect();

    let mut readers = Vec::new();
    for (i, (_, token)) in users.iter().enumerate() {
        let (url, room, token, ids) =
            (server.url.clone(), room.clone(), token.clone(), ids.clone());
        let mut since = starts[i].clone();
        readers.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let (mut messages, mut to_device) = (Vec::<(String, String)>::new(), Vec::new());
            let (mut counter, mut receipts) = (None, std::collections::HashMap::new());
            loop {
                // Done once every message, to-device message, the last counter and each
                // sender's receipt on its own last message were seen.
                let last_of = |u: &str| messages.iter().rev().find(|(s, _)| s == u).map(|(_, e)| e.clone());
                if messages.len() == USERS * ROUNDS
                    && to_device.len() == ROUNDS
                    && counter == Some(ROUNDS as i64 - 1)
                    && ids.iter().all(|u| receipts.get(u) == last_of(u).as_ref())
                {
                    return (messages, to_device);
                }
                let body: Value = http
                    .get(format!("{url}/_matrix/client/v3/sync?timeout=10000&since={since}&filter=%7B%22room%22%3A%7B%22timeline%22%3A%7B%22limit%22%3A100%7D%7D%7D"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                since = body["next_batch"].as_str().unwrap().to_owned();
                let joined = &body["rooms"]["join"][&room];
                assert_ne!(joined["timeline"]["limited"], true, "{body}");
                for e in joined["timeline"]["events"].as_array().into_iter().flatten() {
                    if e["type"] == "m.room.message" {
                        messages.push((e["sender"].as_str().unwrap().into(), e["event_id"].as_str().unwrap().into()));
                    }
                }
                for e in joined["ephemeral"]["events"].as_array().into_iter().flatten() {
                    if e["type"] != "m.receipt" {
                        continue;
                    }
                    for (event_id, by_type) in e["content"].as_object().unwrap() {
                        for user in by_type["m.read"].as_object().into_iter().flatten().map(|(u, _)| u) {
                            receipts.insert(user.clone(), event_id.clone());
                        }
                    }
                }
                for e in body["account_data"]["events"].as_array().into_iter().flatten() {
                    if e["type"] == "org.example.counter" {
                        counter = e["content"]["n"].as_i64();
                    }
                }
                for e in body["to_device"]["events"].as_array().into_iter().flatten() {
                    to_device.push(e["content"]["n"].as_i64().unwrap());
                }
            }
        }));
    }

    let mut writers = Vec::new();
    for (i, (id, token)) in users.iter().enumerate() {
        let (url, room, token, id) = (server.url.clone(), room.clone(), token.clone(), id.clone());
        let next = ids[(i + 1) % USERS].clone();
        writers.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let put = |path: String, body: Value| {
                http.put(format!("{url}{path}"))
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
            };
            for n in 0..ROUNDS {
                let res = put(
                    format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{n}"),
                    json!({ "msgtype": "m.text", "body": format!("{i}-{n}") }),
                )
                .await
                .unwrap();
                assert_eq!(res.status(), 200);
                let event: Value = res.json().await.unwrap();
                let event = event["event_id"].as_str().unwrap();
                let res = http
                    .post(format!(
                        "{url}/_matrix/client/v3/rooms/{room}/receipt/m.read/{event}"
                    ))
                    .bearer_auth(&token)
                    .json(&json!({}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 200);
                let res = put(
                    format!("/_matrix/client/v3/user/{id}/account_data/org.example.counter"),
                    json!({ "n": n }),
                )
                .await
                .unwrap();
                assert_eq!(res.status(), 200);
                let res = put(
                    format!("/_matrix/client/v3/sendToDevice/org.example.n/{n}"),
                    json!({ "messages": { next.clone(): { "*": { "n": n } } } }),
                )
                .await
                .unwrap();
                assert_eq!(res.status(), 200);
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let mut orders = Vec::new();
    for r in readers {
        let (messages, to_device) = tokio::time::timeout(std::time::Duration::from_secs(60), r)
            .await
            .expect("every reader saw everything")
            .unwrap();
        assert_eq!(
            to_device,
            (0..ROUNDS as i64).collect::<Vec<_>>(),
            "to-device once each, in order"
        );
        let unique: std::collections::HashSet<_> = messages.iter().collect();
        assert_eq!(unique.len(), messages.len(), "a message arrived twice");
        orders.push(messages);
    }
    assert!(
        orders.iter().all(|o| *o == orders[0]),
        "readers saw different orders"
    );
    server.stop().await;
}
