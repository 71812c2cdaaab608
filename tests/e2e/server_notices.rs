//! Server notices (spec: module "Server Notices") over raw HTTP: one tagged room per
//! user, an invite that cannot be rejected, notices only the notices user may post, and
//! the admin API that sends them.

use serde_json::{json, Value};

use crate::harness::{self, TestServer};

async fn notice(server: &TestServer, admin: &str, user: &str, body: &str) -> (u16, Value) {
    server
        .req(
            "POST",
            "/_synapse/admin/v1/send_server_notice",
            Some(admin),
            Some(json!({ "user_id": user, "content": { "body": body } })),
        )
        .await
}

fn invites(sync: &Value) -> Vec<String> {
    sync["rooms"]["invite"]
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn server_notices_arrive_in_one_tagged_room() {
    let server = harness::start_configured(harness::Options::default(), |c| {
        c.server_notices.localpart = Some("notices".into());
        c.server_notices.room_name = "System Alerts".into();
    })
    .await;
    let (alice_id, alice) = server.register("alice").await;
    server
        .hs()
        .create_user("admin", Some("correct horse battery"), true)
        .await
        .unwrap();
    let admin = server.login("admin").await;

    // Only admins send notices; to local users that exist.
    let (status, _) = notice(&server, &alice, &alice_id, "hi").await;
    assert_eq!(status, 403);
    let (status, _) = notice(&server, &admin, "@nobody:localhost", "hi").await;
    assert_eq!(status, 404);
    let (status, _) = notice(&server, &admin, "@bob:elsewhere.example", "hi").await;
    assert_eq!(status, 400);
    let (status, _) = server
        .req(
            "POST",
            "/_synapse/admin/v1/send_server_notice",
            Some(&admin),
            Some(json!({ "user_id": alice_id, "content": "nope" })),
        )
        .await;
    assert_eq!(status, 400);

    let (status, body) = notice(&server, &admin, &alice_id, "Maintenance tonight").await;
    assert_eq!(status, 200, "{body}");
    let s = harness::sync(&server, &alice, "").await;
    let rooms = invites(&s);
    assert_eq!(rooms.len(), 1, "{s}");
    let room = rooms[0].clone();
    let invite_state = &s["rooms"]["invite"][&room]["invite_state"]["events"];
    assert!(
        invite_state
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "System Alerts"),
        "{s}"
    );

    // The invite cannot be rejected.
    let (status, body) = server
        .req(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room}/leave"),
            Some(&alice),
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (403, Some("M_CANNOT_LEAVE_SERVER_NOTICE_ROOM")),
        "{body}"
    );

    // Joined: the notice, from the notices user, with the server notice msgtype; the room
    // tagged; the user cannot post.
    server.membership(&alice, &room, "join").await;
    let messages = server
        .ok(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=10"),
            &alice,
            None,
        )
        .await;
    let msg = messages["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.room.message")
        .expect("the notice")
        .clone();
    assert_eq!(msg["sender"], "@notices:localhost");
    assert_eq!(msg["content"]["msgtype"], "m.server_notice");
    assert_eq!(msg["content"]["body"], "Maintenance tonight");
    let tags = server
        .ok(
            "GET",
            &format!("/_matrix/client/v3/user/{alice_id}/rooms/{room}/tags"),
            &alice,
            None,
        )
        .await;
    assert!(tags["tags"].get("m.server_notice").is_some(), "{tags}");
    let (status, _) = server
        .req(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/a1"),
            Some(&alice),
            Some(json!({ "msgtype": "m.text", "body": "reply" })),
        )
        .await;
    assert_eq!(status, 403);
    let profile = server
        .ok(
            "GET",
            "/_matrix/client/v3/profile/@notices:localhost",
            &alice,
            None,
        )
        .await;
    assert_eq!(profile["displayname"], "Server Notices");
    // Nobody logs in as the notices user.
    let (status, _) = server
        .req(
            "POST",
            "/_matrix/client/v3/login",
            None,
            Some(json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "notices" }, "password": "" })),
        )
        .await;
    assert_eq!(status, 403);

    // The next notice goes to the same room; a retried transaction is sent once.
    for _ in 0..2 {
        let (status, _) = server
            .req(
                "PUT",
                "/_synapse/admin/v1/send_server_notice/txn1",
                Some(&admin),
                Some(json!({ "user_id": alice_id, "content": { "body": "Second", "msgtype": "m.text" } })),
            )
            .await;
        assert_eq!(status, 200);
    }
    let bodies = server.message_bodies(&alice, &room).await;
    assert_eq!(
        bodies.iter().filter(|b| *b == "Second").count(),
        1,
        "{bodies:?}"
    );

    // Having left, the user is invited back into the same room.
    server.membership(&alice, &room, "leave").await;
    let (status, _) = notice(&server, &admin, &alice_id, "Third").await;
    assert_eq!(status, 200);
    let s = harness::sync(&server, &alice, "").await;
    assert_eq!(invites(&s), vec![room.clone()], "{s}");
    server.stop().await;
}

#[tokio::test]
async fn server_notices_are_off_unless_configured() {
    let server = harness::start().await;
    let (alice_id, _) = server.register("alice").await;
    server
        .hs()
        .create_user("admin", Some("correct horse battery"), true)
        .await
        .unwrap();
    let admin = server.login("admin").await;
    let (status, body) = notice(&server, &admin, &alice_id, "hi").await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (404, Some("M_UNRECOGNIZED")),
        "{body}"
    );
    server.stop().await;
}
