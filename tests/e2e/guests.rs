//! Guest access (spec: module "Guest Access") over raw HTTP: off by default; a guest
//! reaches only the listed endpoints, joins only `can_join` rooms, leaves them when that
//! changes, and upgrades to a full account.

use serde_json::{json, Value};

use crate::harness::{self, TestServer};

async fn register_guest(server: &TestServer) -> (String, String) {
    let (status, body) = server
        .req(
            "POST",
            "/_matrix/client/v3/register?kind=guest",
            None,
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    (
        body["user_id"].as_str().unwrap().to_owned(),
        body["access_token"].as_str().unwrap().to_owned(),
    )
}

fn guest_forbidden(what: &str, (status, body): (u16, Value)) {
    assert_eq!(
        (status, body["errcode"].as_str()),
        (403, Some("M_GUEST_ACCESS_FORBIDDEN")),
        "{what}: {body}"
    );
}

#[tokio::test]
async fn guest_registration_is_off_by_default() {
    let server = harness::start().await;
    guest_forbidden(
        "register",
        server
            .req(
                "POST",
                "/_matrix/client/v3/register?kind=guest",
                None,
                Some(json!({})),
            )
            .await,
    );
    server.stop().await;
}

#[tokio::test]
async fn guests_join_can_join_rooms_and_reach_only_listed_endpoints() {
    let server = harness::start_configured(harness::Options::default(), |c| {
        c.registration.allow_guests = true;
    })
    .await;
    let (_, alice) = server.register("alice").await;
    let (guest_id, guest) = register_guest(&server).await;
    let me = server
        .ok("GET", "/_matrix/client/v3/account/whoami", &guest, None)
        .await;
    assert_eq!(me["user_id"], guest_id.as_str());

    let open = server
        .create_room(
            &alice,
            json!({ "preset": "public_chat", "initial_state": [{ "type": "m.room.guest_access", "content": { "guest_access": "can_join" } }] }),
        )
        .await;
    let closed = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;

    // Joining: only where guests may.
    guest_forbidden(
        "join closed",
        server
            .req(
                "POST",
                &format!("/_matrix/client/v3/join/{closed}"),
                Some(&guest),
                Some(json!({})),
            )
            .await,
    );
    guest_forbidden(
        "state join closed",
        server
            .req(
                "PUT",
                &format!("/_matrix/client/v3/rooms/{closed}/state/m.room.member/{guest_id}"),
                Some(&guest),
                Some(json!({ "membership": "join" })),
            )
            .await,
    );
    let (status, body) = server
        .req(
            "POST",
            &format!("/_matrix/client/v3/rooms/{open}/join"),
            Some(&guest),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    server
        .send_text(&guest, &open, "g1", "hi from a guest")
        .await;
    assert!(server
        .message_bodies(&alice, &open)
        .await
        .contains(&"hi from a guest".to_owned()));
    server
        .ok("GET", "/_matrix/client/v3/sync", &guest, None)
        .await;
    server
        .ok(
            "GET",
            &format!("/_matrix/client/v3/rooms/{open}/members"),
            &guest,
            None,
        )
        .await;

    // A display name, but no other profile field.
    server
        .ok(
            "PUT",
            &format!("/_matrix/client/v3/profile/{guest_id}/displayname"),
            &guest,
            Some(json!({ "displayname": "Visitor" })),
        )
        .await;
    guest_forbidden(
        "avatar",
        server
            .req(
                "PUT",
                &format!("/_matrix/client/v3/profile/{guest_id}/avatar_url"),
                Some(&guest),
                Some(json!({ "avatar_url": "mxc://localhost/abc" })),
            )
            .await,
    );

    // The capabilities say so.
    let caps = server
        .ok("GET", "/_matrix/client/v3/capabilities", &guest, None)
        .await;
    assert_eq!(caps["capabilities"]["m.set_displayname"]["enabled"], true);
    assert_eq!(caps["capabilities"]["m.set_avatar_url"]["enabled"], false);
    assert_eq!(caps["capabilities"]["m.change_password"]["enabled"], false);

    // Endpoints the module does not list.
    guest_forbidden(
        "createRoom",
        server
            .req(
                "POST",
                "/_matrix/client/v3/createRoom",
                Some(&guest),
                Some(json!({})),
            )
            .await,
    );
    guest_forbidden(
        "invite",
        server
            .req(
                "POST",
                &format!("/_matrix/client/v3/rooms/{open}/invite"),
                Some(&guest),
                Some(json!({ "user_id": "@alice:localhost" })),
            )
            .await,
    );
    guest_forbidden(
        "account data",
        server
            .req(
                "PUT",
                &format!("/_matrix/client/v3/user/{guest_id}/account_data/org.example"),
                Some(&guest),
                Some(json!({})),
            )
            .await,
    );
    guest_forbidden(
        "pushers",
        server
            .req("GET", "/_matrix/client/v3/pushers", Some(&guest), None)
            .await,
    );

    // Nor invites through the state API.
    guest_forbidden(
        "invite by state",
        server
            .req(
                "PUT",
                &format!("/_matrix/client/v3/rooms/{open}/state/m.room.member/@alice2:localhost"),
                Some(&guest),
                Some(json!({ "membership": "invite" })),
            )
            .await,
    );

    // Guest access revoked: the guest is made to leave.
    server
        .ok(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{open}/state/m.room.guest_access"),
            &alice,
            Some(json!({ "guest_access": "forbidden" })),
        )
        .await;
    let member = server
        .ok(
            "GET",
            &format!("/_matrix/client/v3/rooms/{open}/state/m.room.member/{guest_id}"),
            &alice,
            None,
        )
        .await;
    assert_eq!(member["membership"], "leave", "{member}");
    guest_forbidden(
        "rejoin",
        server
            .req(
                "POST",
                &format!("/_matrix/client/v3/rooms/{open}/join"),
                Some(&guest),
                Some(json!({})),
            )
            .await,
    );

    // Redacting the guest access event ends `can_join` too.
    let other = server
        .create_room(
            &alice,
            json!({ "preset": "public_chat", "initial_state": [{ "type": "m.room.guest_access", "content": { "guest_access": "can_join" } }] }),
        )
        .await;
    server.membership(&guest, &other, "join").await;
    let state = server
        .ok(
            "GET",
            &format!("/_matrix/client/v3/rooms/{other}/state"),
            &alice,
            None,
        )
        .await;
    let access = state
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.room.guest_access")
        .unwrap()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    server
        .ok(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{other}/redact/{access}/x1"),
            &alice,
            Some(json!({})),
        )
        .await;
    let member = server
        .ok(
            "GET",
            &format!("/_matrix/client/v3/rooms/{other}/state/m.room.member/{guest_id}"),
            &alice,
            None,
        )
        .await;
    assert_eq!(member["membership"], "leave", "{member}");
    server.stop().await;
}

#[tokio::test]
async fn a_guest_upgrades_to_a_full_account() {
    let server = harness::start_configured(harness::Options::default(), |c| {
        c.registration.allow_guests = true;
    })
    .await;
    let (guest_id, guest) = register_guest(&server).await;
    let localpart = guest_id
        .trim_start_matches('@')
        .split(':')
        .next()
        .unwrap()
        .to_owned();
    let upgrade = |username: &str| {
        json!({
            "username": username,
            "password": "correct horse battery",
            "guest_access_token": guest,
            "auth": { "type": "m.login.dummy" },
        })
    };
    // Another name than its own is refused, before any user-interactive auth.
    let mut wrong = upgrade("someoneelse");
    wrong.as_object_mut().unwrap().remove("auth");
    let (status, body) = server
        .req("POST", "/_matrix/client/v3/register", None, Some(wrong))
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (400, Some("M_INVALID_USERNAME")),
        "{body}"
    );
    let (status, body) = server
        .req(
            "POST",
            "/_matrix/client/v3/register",
            None,
            Some(upgrade(&localpart)),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], guest_id.as_str());
    let full = body["access_token"].as_str().unwrap().to_owned();
    // A full account now: the old token too, and a password login.
    server
        .ok(
            "POST",
            "/_matrix/client/v3/createRoom",
            &full,
            Some(json!({})),
        )
        .await;
    server
        .ok(
            "POST",
            "/_matrix/client/v3/createRoom",
            &guest,
            Some(json!({})),
        )
        .await;
    server.login(&localpart).await;
    // Upgrading twice is refused.
    let (status, _) = server
        .req(
            "POST",
            "/_matrix/client/v3/register",
            None,
            Some(upgrade(&localpart)),
        )
        .await;
    assert_eq!(status, 403);
    server.stop().await;
}
