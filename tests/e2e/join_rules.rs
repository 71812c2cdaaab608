//! Join rules end to end: `restricted` and `knock_restricted` joins (spec: "Restricted
//! rooms", with `join_authorised_via_users_server`), and knocking (spec: "Knocking on
//! rooms"), over raw HTTP and through matrix-sdk.

use matrix_sdk::{config::SyncSettings, ruma::events::room::member::MembershipState, RoomState};
use serde_json::{json, Value};

use crate::harness::TestServer;

async fn join(server: &TestServer, token: &str, room: &str) -> (u16, Value) {
    server
        .req(
            "POST",
            &format!("/_matrix/client/v3/join/{room}"),
            Some(token),
            Some(json!({})),
        )
        .await
}

async fn knock(server: &TestServer, token: &str, room: &str) -> (u16, Value) {
    server
        .req(
            "POST",
            &format!("/_matrix/client/v3/knock/{room}"),
            Some(token),
            Some(json!({ "reason": "let me in" })),
        )
        .await
}

async fn member(server: &TestServer, token: &str, room: &str, user: &str) -> Value {
    server
        .ok(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/{user}"),
            token,
            None,
        )
        .await
}

fn restricted(rule: &str, allowed: &str) -> Value {
    json!({ "type": "m.room.join_rules", "content": {
        "join_rule": rule,
        "allow": [{ "type": "m.room_membership", "room_id": allowed }],
    } })
}

/// A restricted room lets in the members of its allowed rooms, each join naming a local
/// member who may invite; nobody else, and not through a member event the client writes.
#[tokio::test]
async fn restricted_room_admits_members_of_allowed_rooms() {
    let server = crate::harness::start().await;
    let (alice_id, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let (carol_id, carol) = server.register("carol").await;
    let space = server
        .create_room(
            &alice,
            json!({ "preset": "public_chat", "creation_content": { "type": "m.space" } }),
        )
        .await;
    let room = server
        .create_room(
            &alice,
            json!({ "preset": "private_chat", "initial_state": [restricted("restricted", &space)] }),
        )
        .await;

    // Not in the space: refused, with the spec's error.
    let (status, body) = join(&server, &bob, &room).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{body}"
    );

    // In the space: let in, authorised by alice (the only one who may invite).
    server.membership(&bob, &space, "join").await;
    let (status, body) = join(&server, &bob, &room).await;
    assert_eq!(status, 200, "{body}");
    let content = member(&server, &bob, &room, &bob_id).await;
    assert_eq!(content["membership"], "join");
    assert_eq!(
        content["join_authorised_via_users_server"],
        alice_id.as_str(),
        "{content}"
    );

    // A member event the client writes cannot name its own authoriser.
    let (status, body) = server
        .req(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/{carol_id}"),
            Some(&carol),
            Some(json!({ "membership": "join", "join_authorised_via_users_server": alice_id })),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    // Carol in the space, joining through the state API, gets the server's authoriser.
    server.membership(&carol, &space, "join").await;
    let (status, body) = server
        .req(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/{carol_id}"),
            Some(&carol),
            Some(json!({ "membership": "join", "join_authorised_via_users_server": bob_id })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let content = member(&server, &carol, &room, &carol_id).await;
    assert_eq!(
        content["join_authorised_via_users_server"],
        alice_id.as_str(),
        "{content}"
    );

    // A change of displayname is no new join and carries no authoriser.
    let (status, _) = server
        .req(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/{carol_id}"),
            Some(&carol),
            Some(json!({ "membership": "join", "displayname": "Carol" })),
        )
        .await;
    assert_eq!(status, 200);
    let content = member(&server, &carol, &room, &carol_id).await;
    assert!(
        content.get("join_authorised_via_users_server").is_none(),
        "{content}"
    );

    // Once nobody left in the room may invite, members of the space are not let in.
    let (dave_id, dave) = server.register("dave").await;
    let strict = server
        .create_room(
            &alice,
            json!({
                "preset": "private_chat",
                "initial_state": [restricted("restricted", &space)],
                "power_level_content_override": { "invite": 50 },
            }),
        )
        .await;
    assert_eq!(join(&server, &bob, &strict).await.0, 200);
    server.membership(&alice, &strict, "leave").await;
    server.membership(&dave, &space, "join").await;
    let (status, body) = join(&server, &dave, &strict).await;
    assert_eq!(status, 403, "{body}");
    // Nothing of the refused join was stored.
    let (status, _) = server
        .req(
            "GET",
            &format!("/_matrix/client/v3/rooms/{strict}/state/m.room.member/{dave_id}"),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(status, 404);

    // Room version 7 has no restricted rule: nobody joins uninvited.
    let old = server
        .create_room(
            &alice,
            json!({ "room_version": "7", "initial_state": [restricted("restricted", &space)] }),
        )
        .await;
    let (status, body) = join(&server, &bob, &old).await;
    assert_eq!(status, 403, "{body}");

    // matrix-sdk joins a restricted room like any other.
    let erin_sdk = {
        server.register("erin").await;
        server.sdk_client("erin").await
    };
    let space_id = matrix_sdk::ruma::RoomId::parse(&space).unwrap();
    let room_id = matrix_sdk::ruma::RoomId::parse(&room).unwrap();
    erin_sdk
        .join_room_by_id(&space_id)
        .await
        .expect("join space");
    let joined = erin_sdk
        .join_room_by_id(&room_id)
        .await
        .expect("join restricted room");
    assert_eq!(joined.state(), RoomState::Joined);
    server.stop().await;
}

/// `knock_restricted`: members of an allowed room join at once; anyone else may knock,
/// and is let in by an invite or turned away by a kick. Knocks elsewhere are refused.
#[tokio::test]
async fn knock_restricted_and_knocking_end_to_end() {
    let server = crate::harness::start().await;
    let (alice_id, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let (carol_id, carol) = server.register("carol").await;
    let space = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    let room = server
        .create_room(
            &alice,
            json!({ "preset": "private_chat", "initial_state": [restricted("knock_restricted", &space)] }),
        )
        .await;

    // Bob is in the allowed room: he joins without knocking.
    server.membership(&bob, &space, "join").await;
    assert_eq!(join(&server, &bob, &room).await.0, 200);
    let content = member(&server, &bob, &room, &bob_id).await;
    assert_eq!(
        content["join_authorised_via_users_server"],
        alice_id.as_str()
    );
    // A member cannot knock.
    assert_eq!(knock(&server, &bob, &room).await.0, 403);

    // Carol is not: joining is refused, knocking is not.
    assert_eq!(join(&server, &carol, &room).await.0, 403);
    let (status, body) = knock(&server, &carol, &room).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["room_id"], room.as_str());
    let s = crate::harness::sync(&server, &carol, "").await;
    let knock_state = &s["rooms"]["knock"][&room]["knock_state"]["events"];
    assert!(
        knock_state
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.room.member"
                && e["state_key"] == carol_id.as_str()
                && e["content"]["membership"] == "knock"),
        "{s}"
    );
    assert!(
        knock_state
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.room.join_rules"),
        "{s}"
    );
    let since = crate::harness::next_batch(&s);

    // The admin sees the knock with its reason, and turns it away.
    let content = member(&server, &alice, &room, &carol_id).await;
    assert_eq!(content["membership"], "knock");
    assert_eq!(content["reason"], "let me in");
    server
        .ok(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room}/kick"),
            &alice,
            Some(json!({ "user_id": carol_id })),
        )
        .await;
    let s = crate::harness::sync(&server, &carol, &format!("since={since}")).await;
    assert!(s["rooms"]["leave"].get(&room).is_some(), "{s}");
    assert!(s["rooms"]["knock"].get(&room).is_none(), "{s}");

    // Knocking again, withdrawing, knocking again and being invited in.
    assert_eq!(knock(&server, &carol, &room).await.0, 200);
    server.membership(&carol, &room, "leave").await;
    assert_eq!(
        member(&server, &alice, &room, &carol_id).await["membership"],
        "leave"
    );
    assert_eq!(knock(&server, &carol, &room).await.0, 200);
    server
        .ok(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            &alice,
            Some(json!({ "user_id": carol_id })),
        )
        .await;
    assert_eq!(join(&server, &carol, &room).await.0, 200);
    let content = member(&server, &carol, &room, &carol_id).await;
    assert!(
        content.get("join_authorised_via_users_server").is_none(),
        "{content}"
    );

    // A room whose rule is not a knock rule, or a version without knocking, refuses knocks.
    let (_, dave) = server.register("dave").await;
    let invite_only = server
        .create_room(&alice, json!({ "preset": "private_chat" }))
        .await;
    assert_eq!(knock(&server, &dave, &invite_only).await.0, 403);
    let v6 = server
        .create_room(
            &alice,
            json!({ "room_version": "6", "initial_state": [{ "type": "m.room.join_rules", "content": { "join_rule": "knock" } }] }),
        )
        .await;
    assert_eq!(knock(&server, &dave, &v6).await.0, 403);
    // A banned user cannot knock.
    let knock_room = server
        .create_room(
            &alice,
            json!({ "initial_state": [{ "type": "m.room.join_rules", "content": { "join_rule": "knock" } }] }),
        )
        .await;
    server
        .ok(
            "POST",
            &format!("/_matrix/client/v3/rooms/{knock_room}/ban"),
            &alice,
            Some(json!({ "user_id": "@dave:localhost" })),
        )
        .await;
    assert_eq!(knock(&server, &dave, &knock_room).await.0, 403);

    // matrix-sdk: a knock shows as a knocked room to the knocker and as a knocking member
    // to the admin's client.
    server.register("erin").await;
    let erin = server.sdk_client("erin").await;
    let alice_sdk = server.sdk_client("alice").await;
    let room_id = matrix_sdk::ruma::OwnedRoomId::try_from(knock_room.as_str()).unwrap();
    let knocked = erin
        .knock(room_id.clone().into(), Some("hello".into()), vec![])
        .await
        .expect("knock");
    assert_eq!(knocked.state(), RoomState::Knocked);
    alice_sdk
        .sync_once(SyncSettings::default())
        .await
        .expect("sync");
    let admin_room = alice_sdk.get_room(&room_id).expect("room");
    let erin_id = erin.user_id().unwrap().to_owned();
    let m = admin_room
        .get_member_no_sync(&erin_id)
        .await
        .expect("member")
        .expect("erin known");
    assert_eq!(m.membership(), &MembershipState::Knock);
    server.stop().await;
}
