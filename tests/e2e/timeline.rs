//! What Element X shows: matrix-sdk-ui's `Timeline` (the library Element X is built on),
//! on a device that never saw the events arrive, reading them back through `/messages`.
//! An edit replaces the body, a reaction is listed under its key and sender, a thread
//! root carries its summary, and a redacted reaction is gone.

use matrix_sdk::{config::SyncSettings, ruma::OwnedRoomId};
use matrix_sdk_ui::timeline::{EventTimelineItem, RoomExt};
use serde_json::json;

fn find<'a>(items: &'a [EventTimelineItem], id: &str) -> &'a EventTimelineItem {
    items
        .iter()
        .find(|i| i.event_id().is_some_and(|e| e.as_str() == id))
        .unwrap_or_else(|| panic!("{id} not in the timeline"))
}

#[tokio::test]
async fn timeline_shows_edits_reactions_and_threads() {
    let server = crate::harness::start().await;
    let (_, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let room = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    server.membership(&bob, &room, "join").await;

    let original = server.send_text(&alice, &room, "m1", "helo").await;
    let send =
        |token: String, kind: &'static str, txn: &'static str, content: serde_json::Value| {
            let room = room.clone();
            let server = &server;
            async move {
                server
                    .ok(
                        "PUT",
                        &format!("/_matrix/client/v3/rooms/{room}/send/{kind}/{txn}"),
                        &token,
                        Some(content),
                    )
                    .await["event_id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            }
        };
    send(
        alice.clone(),
        "m.room.message",
        "e1",
        json!({ "msgtype": "m.text", "body": "* hello", "m.new_content": { "msgtype": "m.text", "body": "hello" },
                "m.relates_to": { "rel_type": "m.replace", "event_id": original } }),
    )
    .await;
    send(
        bob.clone(),
        "m.reaction",
        "r1",
        json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": original, "key": "👍" } }),
    )
    .await;
    let heart = send(
        bob.clone(),
        "m.reaction",
        "r2",
        json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": original, "key": "❤️" } }),
    )
    .await;
    server
        .ok(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/redact/{heart}/x1"),
            &bob,
            Some(json!({})),
        )
        .await;
    let root = server.send_text(&alice, &room, "m2", "a thread").await;
    for (i, txn) in ["t1", "t2"].into_iter().enumerate() {
        send(
            bob.clone(),
            "m.room.message",
            txn,
            json!({ "msgtype": "m.text", "body": format!("reply {i}"),
                    "m.relates_to": { "rel_type": "m.thread", "event_id": root, "is_falling_back": true,
                                      "m.in_reply_to": { "event_id": root } } }),
        )
        .await;
    }
    // A fresh device of alice's, which saw none of this arrive.
    let client = server.sdk_client("alice").await;
    client.event_cache().subscribe().expect("event cache");
    client
        .sync_once(SyncSettings::default())
        .await
        .expect("sync");
    let room_id = OwnedRoomId::try_from(room.as_str()).unwrap();
    let sdk_room = client.get_room(&room_id).expect("room known");
    let timeline = sdk_room.timeline().await.expect("timeline");
    // Back to the room's start.
    for _ in 0..10 {
        if timeline.paginate_backwards(50).await.expect("paginate") {
            break;
        }
    }
    let items: Vec<EventTimelineItem> = timeline
        .items()
        .await
        .iter()
        .filter_map(|i| i.as_event().cloned())
        .collect();

    let edited = find(&items, &original);
    let message = edited.content().as_message().expect("a message");
    assert_eq!(message.body(), "hello");
    assert!(message.is_edited());
    let reactions = edited.content().reactions().expect("reactions");
    let thumbs = reactions.get("👍").expect("👍 listed");
    assert!(thumbs.keys().any(|u| u.as_str() == bob_id), "{thumbs:?}");
    assert!(
        reactions.get("❤️").is_none(),
        "redacted reaction still shown"
    );

    let thread = find(&items, &root);
    let summary = thread.content().thread_summary().expect("thread summary");
    assert_eq!(summary.num_replies, 2);
    server.stop().await;
}
