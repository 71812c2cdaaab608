//! The client event format's `unsigned` data (spec: "Room Event Format", "Transaction
//! identifiers"): `transaction_id` for the sending device only, and `prev_content` and
//! `replaces_state` on state events.

use serde_json::{json, Value};

use crate::harness;

/// The events of `room` in a sync body's timeline.
fn timeline(body: &Value, room: &str) -> Vec<Value> {
    body["rooms"]["join"][room]["timeline"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn transaction_ids_and_replaced_state() {
    let server = harness::start().await;
    let (alice_id, alice) = server.register("alice").await;
    let (_, bob) = server.register("bob").await;
    let room = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    server.membership(&bob, &room, "join").await;
    let event = server.send_text(&alice, &room, "txn-1", "hello").await;

    // The sending device sees its transaction ID everywhere the event is served.
    let body = server
        .ok("GET", "/_matrix/client/v3/sync", &alice, None)
        .await;
    let mine = timeline(&body, &room);
    let sent = mine
        .iter()
        .find(|e| e["event_id"] == event.as_str())
        .expect("in sync");
    assert_eq!(sent["unsigned"]["transaction_id"], "txn-1", "{sent}");
    let got = server
        .ok(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/event/{event}"),
            &alice,
            None,
        )
        .await;
    assert_eq!(got["unsigned"]["transaction_id"], "txn-1", "{got}");
    let page = server
        .ok(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=5"),
            &alice,
            None,
        )
        .await;
    assert_eq!(
        page["chunk"][0]["unsigned"]["transaction_id"], "txn-1",
        "{page}"
    );
    let ctx = server
        .ok(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/context/{event}"),
            &alice,
            None,
        )
        .await;
    assert_eq!(ctx["event"]["unsigned"]["transaction_id"], "txn-1", "{ctx}");

    // Nobody else does: another user, or the same user's other device.
    let body = server
        .ok("GET", "/_matrix/client/v3/sync", &bob, None)
        .await;
    let theirs = timeline(&body, &room);
    let seen = theirs
        .iter()
        .find(|e| e["event_id"] == event.as_str())
        .expect("bob sees it");
    assert!(seen["unsigned"].get("transaction_id").is_none(), "{seen}");
    let (status, login) = server
        .req(
            "POST",
            "/_matrix/client/v3/login",
            None,
            Some(json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "alice" }, "password": "correct horse battery" })),
        )
        .await;
    assert_eq!(status, 200, "{login}");
    let other = login["access_token"].as_str().unwrap();
    let got = server
        .ok(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/event/{event}"),
            other,
            None,
        )
        .await;
    assert!(got["unsigned"].get("transaction_id").is_none(), "{got}");

    // A state event carries the one it replaced.
    let old_member = server
        .ok(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/{alice_id}?format=event"),
            &alice,
            None,
        )
        .await;
    let since = body["next_batch"].as_str().unwrap().to_owned();
    server
        .ok(
            "PUT",
            &format!("/_matrix/client/v3/profile/{alice_id}/displayname"),
            &alice,
            Some(json!({ "displayname": "Alice A." })),
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
    let change = timeline(&body, &room)
        .into_iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == alice_id.as_str())
        .expect("member event in bob's sync");
    assert_eq!(change["content"]["displayname"], "Alice A.");
    assert_eq!(
        change["unsigned"]["prev_content"], old_member["content"],
        "{change}"
    );
    assert_eq!(
        change["unsigned"]["replaces_state"], old_member["event_id"],
        "{change}"
    );
    assert_eq!(
        change["unsigned"]["prev_sender"],
        alice_id.as_str(),
        "{change}"
    );
    server.stop().await;
}
