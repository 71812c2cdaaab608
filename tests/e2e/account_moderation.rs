//! Account locking and suspension (spec: "Account moderation", `/admin/lock` and
//! `/admin/suspend`, v1.18) over raw HTTP: who may set them, what each forbids, and that
//! both are lifted again.

use serde_json::{json, Value};

use crate::harness::TestServer;

async fn admin(server: &TestServer) -> String {
    server
        .hs()
        .create_user("admin", Some("correct horse battery"), true)
        .await
        .expect("admin");
    server.login("admin").await
}

async fn put(server: &TestServer, token: &str, what: &str, user: &str, on: bool) -> (u16, Value) {
    let key = if what == "lock" {
        "locked"
    } else {
        "suspended"
    };
    server
        .req(
            "PUT",
            &format!("/_matrix/client/v1/admin/{what}/{user}"),
            Some(token),
            Some(json!({ key: on })),
        )
        .await
}

async fn get(server: &TestServer, token: &str, what: &str, user: &str) -> (u16, Value) {
    server
        .req(
            "GET",
            &format!("/_matrix/client/v1/admin/{what}/{user}"),
            Some(token),
            None,
        )
        .await
}

/// Who may lock or suspend whom, and the errors the spec gives in its order.
#[tokio::test]
async fn only_admins_moderate_and_errors_follow_the_spec() {
    let server = crate::harness::start().await;
    let (alice_id, alice) = server.register("alice").await;
    let admin = admin(&server).await;
    for what in ["lock", "suspend"] {
        // Not an admin: 403 before any look-up, even for a user who does not exist.
        for target in [alice_id.as_str(), "@nobody:localhost"] {
            let (status, body) = get(&server, &alice, what, target).await;
            assert_eq!(
                (status, body["errcode"].as_str()),
                (403, Some("M_FORBIDDEN")),
                "{body}"
            );
            let (status, _) = put(&server, &alice, what, target, true).await;
            assert_eq!(status, 403);
        }
        // A remote user: 400 M_INVALID_PARAM; unknown: 404; oneself: 403 to set.
        let (status, body) = get(&server, &admin, what, "@bob:elsewhere.example").await;
        assert_eq!(
            (status, body["errcode"].as_str()),
            (400, Some("M_INVALID_PARAM")),
            "{body}"
        );
        let (status, body) = put(&server, &admin, what, "@nobody:localhost", true).await;
        assert_eq!(
            (status, body["errcode"].as_str()),
            (404, Some("M_NOT_FOUND")),
            "{body}"
        );
        let (status, _) = put(&server, &admin, what, "@admin:localhost", true).await;
        assert_eq!(status, 403);
        let key = if what == "lock" {
            "locked"
        } else {
            "suspended"
        };
        let (status, body) = get(&server, &admin, what, &alice_id).await;
        assert_eq!((status, body[key].as_bool()), (200, Some(false)), "{body}");
        // Bad bodies are 400s, not 500s.
        let (status, _) = server
            .req(
                "PUT",
                &format!("/_matrix/client/v1/admin/{what}/{alice_id}"),
                Some(&admin),
                Some(json!({ key: "yes" })),
            )
            .await;
        assert_eq!(status, 400);
    }
    // Another admin cannot be restricted.
    server
        .hs()
        .create_user("admin2", Some("correct horse battery"), true)
        .await
        .unwrap();
    let (status, _) = put(&server, &admin, "lock", "@admin2:localhost", true).await;
    assert_eq!(status, 403);
    // The capability is offered to admins only.
    let caps = server
        .ok("GET", "/_matrix/client/v3/capabilities", &admin, None)
        .await;
    assert_eq!(
        caps["capabilities"]["m.account_moderation"],
        json!({ "suspend": true, "lock": true })
    );
    let caps = server
        .ok("GET", "/_matrix/client/v3/capabilities", &alice, None)
        .await;
    assert!(
        caps["capabilities"].get("m.account_moderation").is_none(),
        "{caps}"
    );
    // A deactivated user is not found.
    let (_, carol) = server.register("carol").await;
    server
        .ok(
            "POST",
            "/_matrix/client/v3/account/deactivate",
            &carol,
            Some(json!({ "auth": { "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "carol" }, "password": "correct horse battery" } })),
        )
        .await;
    let (status, _) = get(&server, &admin, "suspend", "@carol:localhost").await;
    assert_eq!(status, 404);
    server.stop().await;
}

/// A locked account gets 401 `M_USER_LOCKED` with `soft_logout` on everything but
/// logging out, cannot log in, and works again with the same token once unlocked.
#[tokio::test]
async fn a_locked_account_can_only_log_out() {
    let server = crate::harness::start().await;
    let (alice_id, alice) = server.register("alice").await;
    let second = server.login("alice").await;
    let admin = admin(&server).await;
    let room = server.create_room(&alice, json!({})).await;
    let (status, body) = put(&server, &admin, "lock", &alice_id, true).await;
    assert_eq!(
        (status, body["locked"].as_bool()),
        (200, Some(true)),
        "{body}"
    );
    assert_eq!(
        get(&server, &admin, "lock", &alice_id).await.1["locked"],
        true
    );

    for (method, path, body) in [
        ("GET", "/_matrix/client/v3/sync".to_owned(), None),
        ("GET", "/_matrix/client/v3/account/whoami".to_owned(), None),
        (
            "PUT",
            format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/t1"),
            Some(json!({ "msgtype": "m.text", "body": "hi" })),
        ),
    ] {
        let (status, b) = server.req(method, &path, Some(&alice), body).await;
        assert_eq!(status, 401, "{path}: {b}");
        assert_eq!(b["errcode"], "M_USER_LOCKED", "{b}");
        assert_eq!(b["soft_logout"], true, "{b}");
    }
    // No new token while locked.
    let (status, b) = server
        .req(
            "POST",
            "/_matrix/client/v3/login",
            None,
            Some(json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "alice" }, "password": "correct horse battery" })),
        )
        .await;
    assert_eq!(
        (status, b["errcode"].as_str()),
        (401, Some("M_USER_LOCKED")),
        "{b}"
    );
    // Logging out still works.
    let (status, _) = server
        .req(
            "POST",
            "/_matrix/client/v3/logout",
            Some(&second),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, b) = server
        .req(
            "GET",
            "/_matrix/client/v3/account/whoami",
            Some(&second),
            None,
        )
        .await;
    assert_eq!(b["errcode"], "M_UNKNOWN_TOKEN", "{status} {b}");

    // Unlocked: the kept token works again, and nothing was lost.
    let (status, _) = put(&server, &admin, "lock", &alice_id, false).await;
    assert_eq!(status, 200);
    let me = server
        .ok("GET", "/_matrix/client/v3/account/whoami", &alice, None)
        .await;
    assert_eq!(me["user_id"], alice_id.as_str());
    server.send_text(&alice, &room, "t2", "back").await;
    server.login("alice").await;
    server.stop().await;
}

/// A suspended account reads and leaves but does not write what others see: no joins,
/// invites, messages, profile changes, rooms, or redactions of others' events.
#[tokio::test]
async fn a_suspended_account_reads_but_does_not_act() {
    let server = crate::harness::start().await;
    let (alice_id, alice) = server.register("alice").await;
    let (_, bob) = server.register("bob").await;
    let admin = admin(&server).await;
    let room = server
        .create_room(&bob, json!({ "preset": "public_chat" }))
        .await;
    server.membership(&alice, &room, "join").await;
    let own = server.send_text(&alice, &room, "t1", "mine").await;
    let bobs = server.send_text(&bob, &room, "t2", "bob's").await;
    // Alice may redact others' events, so only the suspension can refuse it.
    server
        .ok(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.power_levels"),
            &bob,
            Some(json!({ "users": { alice_id.clone(): 50 }, "redact": 50 })),
        )
        .await;
    let other = server
        .create_room(&bob, json!({ "preset": "public_chat" }))
        .await;
    let invited = server
        .create_room(&bob, json!({ "preset": "private_chat" }))
        .await;
    server
        .ok(
            "POST",
            &format!("/_matrix/client/v3/rooms/{invited}/invite"),
            &bob,
            Some(json!({ "user_id": alice_id })),
        )
        .await;
    let (status, _) = put(&server, &admin, "suspend", &alice_id, true).await;
    assert_eq!(status, 200);

    let refused = |what: &str, (status, body): (u16, Value)| {
        assert_eq!(
            (status, body["errcode"].as_str()),
            (403, Some("M_USER_SUSPENDED")),
            "{what}: {body}"
        );
    };
    refused(
        "send",
        server
            .req(
                "PUT",
                &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/t3"),
                Some(&alice),
                Some(json!({ "msgtype": "m.text", "body": "hi" })),
            )
            .await,
    );
    refused(
        "state",
        server
            .req(
                "PUT",
                &format!("/_matrix/client/v3/rooms/{room}/state/m.room.topic"),
                Some(&alice),
                Some(json!({ "topic": "mine now" })),
            )
            .await,
    );
    refused(
        "join",
        server
            .req(
                "POST",
                &format!("/_matrix/client/v3/join/{other}"),
                Some(&alice),
                Some(json!({})),
            )
            .await,
    );
    refused(
        "accept invite",
        server
            .req(
                "POST",
                &format!("/_matrix/client/v3/join/{invited}"),
                Some(&alice),
                Some(json!({})),
            )
            .await,
    );
    refused(
        "invite",
        server
            .req(
                "POST",
                &format!("/_matrix/client/v3/rooms/{room}/invite"),
                Some(&alice),
                Some(json!({ "user_id": "@admin:localhost" })),
            )
            .await,
    );
    refused(
        "displayname",
        server
            .req(
                "PUT",
                &format!("/_matrix/client/v3/profile/{alice_id}/displayname"),
                Some(&alice),
                Some(json!({ "displayname": "Mallory" })),
            )
            .await,
    );
    refused(
        "createRoom",
        server
            .req(
                "POST",
                "/_matrix/client/v3/createRoom",
                Some(&alice),
                Some(json!({})),
            )
            .await,
    );
    refused(
        "redact other",
        server
            .req(
                "PUT",
                &format!("/_matrix/client/v3/rooms/{room}/redact/{bobs}/r1"),
                Some(&alice),
                Some(json!({})),
            )
            .await,
    );

    refused(
        "alias",
        server
            .req(
                "PUT",
                "/_matrix/client/v3/directory/room/%23mine:localhost",
                Some(&alice),
                Some(json!({ "room_id": room })),
            )
            .await,
    );
    refused(
        "publish",
        server
            .req(
                "PUT",
                &format!("/_matrix/client/v3/directory/list/room/{room}"),
                Some(&alice),
                Some(json!({ "visibility": "public" })),
            )
            .await,
    );
    refused(
        "media",
        server
            .req("POST", "/_matrix/media/v1/create", Some(&alice), None)
            .await,
    );
    refused(
        "knock",
        server
            .req(
                "POST",
                &format!("/_matrix/client/v3/knock/{other}"),
                Some(&alice),
                Some(json!({})),
            )
            .await,
    );

    // A retried request whose event was sent before the suspension gets that event.
    let retried = server
        .ok(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/t1"),
            &alice,
            Some(json!({ "msgtype": "m.text", "body": "mine" })),
        )
        .await;
    assert_eq!(retried["event_id"], own.as_str());
    let caps = server
        .ok("GET", "/_matrix/client/v3/capabilities", &alice, None)
        .await;
    assert_eq!(caps["capabilities"]["m.set_displayname"]["enabled"], false);
    assert_eq!(caps["capabilities"]["m.set_avatar_url"]["enabled"], false);

    // Still allowed: reading, redacting her own event, rejecting the invite, leaving.
    let bodies = server.message_bodies(&alice, &room).await;
    assert!(bodies.contains(&"bob's".to_owned()), "{bodies:?}");
    server
        .ok("GET", "/_matrix/client/v3/sync", &alice, None)
        .await;
    server
        .ok(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/redact/{own}/r2"),
            &alice,
            Some(json!({})),
        )
        .await;
    server.membership(&alice, &invited, "leave").await;
    // Leaving through the state API carries no profile change along.
    server
        .ok(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/{alice_id}"),
            &alice,
            Some(json!({ "membership": "leave", "displayname": "Mallory", "reason": "bye" })),
        )
        .await;
    let member = server
        .ok(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/{alice_id}"),
            &bob,
            None,
        )
        .await;
    assert_eq!(member, json!({ "membership": "leave", "reason": "bye" }));
    // Logging in again works, and the new session is suspended too.
    let fresh = server.login("alice").await;
    refused(
        "join from a new session",
        server
            .req(
                "POST",
                &format!("/_matrix/client/v3/join/{room}"),
                Some(&fresh),
                Some(json!({})),
            )
            .await,
    );

    // Lifted, and still lifted after a restart.
    let (status, body) = put(&server, &admin, "suspend", &alice_id, false).await;
    assert_eq!((status, body["suspended"].as_bool()), (200, Some(false)));
    server.membership(&alice, &room, "join").await;
    server.send_text(&alice, &room, "t4", "hello again").await;
    // Suspended again, then the server restarts: the suspension holds.
    put(&server, &admin, "suspend", &alice_id, true).await;
    let mut server = server;
    server.restart().await;
    refused(
        "send after restart",
        server
            .req(
                "PUT",
                &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/t5"),
                Some(&alice),
                Some(json!({ "msgtype": "m.text", "body": "hi" })),
            )
            .await,
    );
    server.stop().await;
}
