//! Ignoring users (spec: "Ignoring Users"): `m.ignored_user_list` hides an ignored user's
//! messages (not their state events), invites and to-device messages, and their events
//! do not notify.

use serde_json::{json, Value};

use crate::harness::{self, next_batch, sync, urlencode};

/// The `key` field of each event in a JSON list (absent or not a list: none).
fn fields(events: &Value, key: &str) -> Vec<String> {
    events
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e[key].as_str().map(str::to_owned))
        .collect()
}

fn timeline_ids(body: &Value, room: &str) -> Vec<String> {
    fields(
        &body["rooms"]["join"][room]["timeline"]["events"],
        "event_id",
    )
}

/// Sets the user's `m.ignored_user_list` to exactly `ignored`.
async fn set_ignored(server: &harness::TestServer, user_id: &str, token: &str, ignored: &[&str]) {
    let list: serde_json::Map<String, Value> =
        ignored.iter().map(|u| (u.to_string(), json!({}))).collect();
    server
        .ok(
            "PUT",
            &format!(
                "/_matrix/client/v3/user/{}/account_data/m.ignored_user_list",
                urlencode(user_id)
            ),
            token,
            Some(json!({ "ignored_users": list })),
        )
        .await;
}

#[tokio::test]
async fn ignored_users_are_hidden_wherever_events_are_served() {
    let server = harness::start().await;
    let (alice_id, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let (carol_id, carol) = server.register("carol").await;
    let room = server
        .create_room(
            &carol,
            json!({ "preset": "public_chat", "power_level_content_override": { "events": { "m.room.topic": 0 } } }),
        )
        .await;
    server.membership(&alice, &room, "join").await;
    server.membership(&bob, &room, "join").await;
    let before = next_batch(&sync(&server, &alice, "").await);

    set_ignored(&server, &alice_id, &alice, &[&bob_id]).await;
    let hidden = server
        .send_text(&bob, &room, "b1", "you cannot see me")
        .await;
    let topic = server
        .ok(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.topic/"),
            &bob,
            Some(json!({ "topic": "set by bob" })),
        )
        .await["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let shown = server.send_text(&carol, &room, "c1", "hello alice").await;

    // /sync: bob's message is gone, his state event stays; only carol's message counts.
    let body = sync(&server, &alice, &format!("since={before}")).await;
    let ids = timeline_ids(&body, &room);
    assert!(!ids.contains(&hidden), "{body}");
    assert!(ids.contains(&topic) && ids.contains(&shown), "{body}");
    assert_eq!(
        body["rooms"]["join"][&room]["unread_notifications"]["notification_count"], 1,
        "{body}"
    );
    // A fresh sync too.
    let body = sync(&server, &alice, "").await;
    assert!(!timeline_ids(&body, &room).contains(&hidden), "{body}");

    // /messages and /context.
    let page = server
        .ok(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50"),
            &alice,
            None,
        )
        .await;
    let ids = fields(&page["chunk"], "event_id");
    assert!(ids.contains(&topic) && !ids.contains(&hidden), "{page}");
    let ctx = server
        .ok(
            "GET",
            &format!(
                "/_matrix/client/v3/rooms/{room}/context/{}?limit=10",
                urlencode(&shown)
            ),
            &alice,
            None,
        )
        .await;
    let before_ids = fields(&ctx["events_before"], "event_id");
    assert!(
        before_ids.contains(&topic) && !before_ids.contains(&hidden),
        "{ctx}"
    );
    // Others still see bob.
    assert!(server
        .message_bodies(&carol, &room)
        .await
        .contains(&"you cannot see me".to_owned()));

    // Invites from bob are not sent; carol's are.
    let since = next_batch(&sync(&server, &alice, "").await);
    let from_bob = server
        .create_room(&bob, json!({ "invite": [alice_id.clone()] }))
        .await;
    let from_carol = server
        .create_room(&carol, json!({ "invite": [alice_id.clone()] }))
        .await;
    let body = sync(&server, &alice, &format!("since={since}")).await;
    assert!(body["rooms"]["invite"].get(&from_bob).is_none(), "{body}");
    assert!(body["rooms"]["invite"].get(&from_carol).is_some(), "{body}");

    // To-device messages from bob are not delivered.
    let devices = server
        .ok("GET", "/_matrix/client/v3/devices", &alice, None)
        .await;
    let device = devices["devices"][0]["device_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let since = next_batch(&body);
    for (token, txn, who) in [(&bob, "td1", "bob"), (&carol, "td2", "carol")] {
        server
            .ok(
                "PUT",
                &format!("/_matrix/client/v3/sendToDevice/m.test/{txn}"),
                token,
                Some(json!({ "messages": { alice_id.clone(): { device.clone(): { "from": who } } } })),
            )
            .await;
    }
    let body = sync(&server, &alice, &format!("since={since}")).await;
    let senders = fields(&body["to_device"]["events"], "sender");
    assert_eq!(senders, std::slice::from_ref(&carol_id), "{body}");

    // Unignored: what bob sends from now on is shown again.
    set_ignored(&server, &alice_id, &alice, &[]).await;
    let since = next_batch(&body);
    let again = server.send_text(&bob, &room, "b2", "back again").await;
    let body = sync(&server, &alice, &format!("since={since}")).await;
    assert!(timeline_ids(&body, &room).contains(&again), "{body}");
    server.stop().await;
}

/// The index of who ignores whom is rebuilt at start-up.
#[tokio::test]
async fn ignoring_survives_a_restart() {
    let mut server = harness::start().await;
    let (alice_id, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let room = server
        .create_room(&bob, json!({ "preset": "public_chat" }))
        .await;
    server.membership(&alice, &room, "join").await;
    set_ignored(&server, &alice_id, &alice, &[&bob_id]).await;
    server.restart().await;
    let hidden = server.send_text(&bob, &room, "b1", "still hidden").await;
    let body = sync(&server, &alice, "").await;
    assert!(!timeline_ids(&body, &room).contains(&hidden), "{body}");
    server.stop().await;
}
