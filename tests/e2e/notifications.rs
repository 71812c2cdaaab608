//! Unread notification and highlight counts (spec: "Push Notifications", "Receiving
//! notifications", "Threaded read receipts"): worked out with the push rules when each
//! event is written, cleared by read receipts.

use std::time::Duration;

use matrix_sdk::config::SyncSettings;
use serde_json::{json, Value};

use crate::harness::{self, urlencode, TestServer};

async fn send(
    server: &TestServer,
    token: &str,
    room: &str,
    kind: &str,
    txn: &str,
    content: Value,
) -> String {
    let body = server
        .ok(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/send/{kind}/{txn}"),
            token,
            Some(content),
        )
        .await;
    body["event_id"].as_str().unwrap().to_owned()
}

/// (notification_count, highlight_count) of the room in a full sync, and the sync.
async fn counts(server: &TestServer, token: &str, room: &str, filter: &str) -> ((i64, i64), Value) {
    let body = harness::sync(server, token, filter).await;
    let n = &body["rooms"]["join"][room]["unread_notifications"];
    (
        (
            n["notification_count"]
                .as_i64()
                .expect("notification_count"),
            n["highlight_count"].as_i64().expect("highlight_count"),
        ),
        body,
    )
}

async fn receipt(server: &TestServer, token: &str, room: &str, event: &str, thread: Option<&str>) {
    let body = match thread {
        Some(t) => json!({ "thread_id": t }),
        None => json!({}),
    };
    server
        .ok(
            "POST",
            &format!(
                "/_matrix/client/v3/rooms/{room}/receipt/m.read/{}",
                urlencode(event)
            ),
            token,
            Some(body),
        )
        .await;
}

#[tokio::test]
async fn mentions_highlight_and_read_receipts_clear_counts() {
    let mut server = harness::start().await;
    let (alice_id, alice) = server.register("alice").await;
    let (_, bob) = server.register("bob").await;
    let (_, carol) = server.register("carol").await;
    let room = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    server.membership(&bob, &room, "join").await;
    server.membership(&carol, &room, "join").await;

    server.send_text(&bob, &room, "b1", "hello").await;
    server.send_text(&bob, &room, "b2", "anyone?").await;
    let mention = send(
        &server,
        &bob,
        &room,
        "m.room.message",
        "b3",
        json!({ "msgtype": "m.text", "body": "alice, look", "m.mentions": { "user_ids": [alice_id] } }),
    )
    .await;
    // Not counted: Alice's own message, a reaction, an edit (the default rules).
    server.send_text(&alice, &room, "a1", "mine").await;
    send(
        &server,
        &bob,
        &room,
        "m.reaction",
        "b4",
        json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": mention, "key": "👀" } }),
    )
    .await;
    send(&server, &bob, &room, "m.room.message", "b5", json!({
        "msgtype": "m.text", "body": "* alice, look!", "m.new_content": { "msgtype": "m.text", "body": "alice, look!" },
        "m.relates_to": { "rel_type": "m.replace", "event_id": mention } })).await;
    let (c, _) = counts(&server, &alice, &room, "").await;
    assert_eq!(c, (3, 1), "alice: two messages and a mention");
    // Carol was not mentioned: Bob's three and Alice's one, no highlight; Bob has only
    // Alice's (his own never count).
    assert_eq!(counts(&server, &carol, &room, "").await.0, (4, 0));
    assert_eq!(counts(&server, &bob, &room, "").await.0, (1, 0));

    // A receipt on the mention reads everything up to it.
    receipt(&server, &alice, &room, &mention, None).await;
    assert_eq!(counts(&server, &alice, &room, "").await.0, (0, 0));
    let later = server.send_text(&bob, &room, "b6", "more").await;
    assert_eq!(counts(&server, &alice, &room, "").await.0, (1, 0));

    // An incremental sync carries the counts as they change, a receipt alone included.
    let (_, full) = counts(&server, &alice, &room, "").await;
    let since = harness::next_batch(&full);
    receipt(&server, &alice, &room, &later, None).await;
    let inc = harness::sync(&server, &alice, &format!("since={since}&timeout=0")).await;
    assert_eq!(
        inc["rooms"]["join"][&room]["unread_notifications"]["notification_count"], 0,
        "{inc}"
    );

    // Persisted with the events: the same after a restart.
    server.send_text(&bob, &room, "b7", "after").await;
    server.restart().await;
    assert_eq!(counts(&server, &alice, &room, "").await.0, (1, 0));
    assert_eq!(counts(&server, &carol, &room, "").await.0, (6, 0));
}

#[tokio::test]
async fn thread_replies_count_in_their_thread_only() {
    let server = harness::start().await;
    let (_, alice) = server.register("alice").await;
    let (_, bob) = server.register("bob").await;
    let (_, carol) = server.register("carol").await;
    let room = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    server.membership(&bob, &room, "join").await;
    server.membership(&carol, &room, "join").await;
    let root = server.send_text(&bob, &room, "r", "root").await;
    let reply = |txn: &'static str| {
        let (server, bob, room, root) = (&server, bob.clone(), room.clone(), root.clone());
        async move {
            send(
                server,
                &bob,
                &room,
                "m.room.message",
                txn,
                json!({
                "msgtype": "m.text", "body": txn,
                "m.relates_to": { "rel_type": "m.thread", "event_id": root } }),
            )
            .await
        }
    };
    reply("t1").await;
    let t2 = reply("t2").await;
    let filter = format!(
        "filter={}",
        urlencode(r#"{"room":{"timeline":{"unread_thread_notifications":true}}}"#)
    );
    let (c, body) = counts(&server, &alice, &room, &filter).await;
    assert_eq!(c, (1, 0), "the main timeline has the root only: {body}");
    let threads = &body["rooms"]["join"][&room]["unread_thread_notifications"];
    assert_eq!(threads[&root]["notification_count"], 2, "{body}");
    // Without the filter, one count for everything.
    assert_eq!(counts(&server, &alice, &room, "").await.0, (3, 0));

    // A threaded receipt reads that thread only; `main` the main timeline only.
    receipt(&server, &alice, &room, &t2, Some(&root)).await;
    let (c, body) = counts(&server, &alice, &room, &filter).await;
    assert_eq!(c, (1, 0));
    assert!(
        body["rooms"]["join"][&room]["unread_thread_notifications"]
            .get(&root)
            .is_none(),
        "{body}"
    );
    receipt(&server, &alice, &room, &root, Some("main")).await;
    assert_eq!(counts(&server, &alice, &room, &filter).await.0, (0, 0));
    // An unthreaded receipt reads every thread: Carol reads all at once.
    assert_eq!(counts(&server, &carol, &room, "").await.0, (3, 0));
    receipt(&server, &carol, &room, &t2, None).await;
    assert_eq!(counts(&server, &carol, &room, "").await.0, (0, 0));
}

#[tokio::test]
async fn own_rules_mute_a_room_and_sdk_clients_see_the_counts() {
    let server = harness::start().await;
    let (_, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let (_, carol) = server.register("carol").await;
    let room = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    server.membership(&bob, &room, "join").await;
    server.membership(&carol, &room, "join").await;
    // Carol mutes the room: a room rule without actions.
    server
        .ok(
            "PUT",
            &format!(
                "/_matrix/client/v3/pushrules/global/room/{}",
                urlencode(&room)
            ),
            &carol,
            Some(json!({ "actions": [] })),
        )
        .await;
    // Alice is notified of every message containing "cake".
    server
        .ok(
            "PUT",
            "/_matrix/client/v3/pushrules/global/content/cake",
            &alice,
            Some(json!({ "pattern": "cake", "actions": ["notify", { "set_tweak": "highlight" }] })),
        )
        .await;
    server.send_text(&bob, &room, "b1", "cake!").await;
    server.send_text(&bob, &room, "b2", "tea").await;
    assert_eq!(counts(&server, &carol, &room, "").await.0, (0, 0));
    assert_eq!(counts(&server, &alice, &room, "").await.0, (2, 1));

    // matrix-sdk reads the same numbers from its sync.
    let client = server.sdk_client("alice").await;
    client
        .sync_once(SyncSettings::default().timeout(Duration::from_secs(0)))
        .await
        .expect("sync");
    let r = client
        .get_room(&matrix_sdk::ruma::RoomId::parse(&room).unwrap())
        .expect("room");
    let c = r.unread_notification_counts();
    assert_eq!((c.notification_count, c.highlight_count), (2, 1));
    let _ = bob_id;
}

#[tokio::test]
async fn the_notifications_list_pages_and_knows_what_is_read() {
    let server = harness::start().await;
    let (alice_id, alice) = server.register("alice").await;
    let (_, bob) = server.register("bob").await;
    let (_, carol) = server.register("carol").await;
    let room = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    server.membership(&bob, &room, "join").await;
    server.membership(&carol, &room, "join").await;
    let first = server.send_text(&bob, &room, "b1", "one").await;
    let mention = send(
        &server,
        &bob,
        &room,
        "m.room.message",
        "b2",
        json!({ "msgtype": "m.text", "body": "alice!", "m.mentions": { "user_ids": [alice_id] } }),
    )
    .await;
    let third = server.send_text(&bob, &room, "b3", "three").await;
    server
        .send_text(&alice, &room, "a1", "mine, not listed")
        .await;
    receipt(&server, &alice, &room, &first, None).await;

    let list = |query: &'static str| {
        let (server, alice) = (&server, alice.clone());
        async move {
            server
                .ok(
                    "GET",
                    &format!("/_matrix/client/v3/notifications{query}"),
                    &alice,
                    None,
                )
                .await
        }
    };
    let all = list("").await;
    let n = all["notifications"].as_array().expect("notifications");
    let ids: Vec<&str> = n
        .iter()
        .map(|x| x["event"]["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [third.as_str(), mention.as_str(), first.as_str()],
        "{all}"
    );
    assert_eq!(
        n.iter()
            .map(|x| x["read"].as_bool().unwrap())
            .collect::<Vec<_>>(),
        [false, false, true]
    );
    assert_eq!(
        n[1]["actions"],
        json!(["notify", { "set_tweak": "highlight" }])
    );
    assert_eq!(n[0]["room_id"], room.as_str());
    assert!(n[0]["ts"].is_u64());
    // Highlights only; and pages.
    let h = list("?only=highlight").await;
    assert_eq!(h["notifications"].as_array().map(Vec::len), Some(1), "{h}");
    let p1 = list("?limit=2").await;
    assert_eq!(p1["notifications"].as_array().map(Vec::len), Some(2));
    let next = p1["next_token"].as_str().expect("next_token").to_owned();
    let p2 = server
        .ok(
            "GET",
            &format!("/_matrix/client/v3/notifications?limit=2&from={next}"),
            &alice,
            None,
        )
        .await;
    let rest: Vec<&str> = p2["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["event"]["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(rest, [first.as_str()], "{p2}");
    let (status, _) = server
        .req(
            "GET",
            "/_matrix/client/v3/notifications?only=everything",
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(status, 400);
    let _ = carol;
}
