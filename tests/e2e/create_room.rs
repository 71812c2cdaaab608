//! createRoom as one transaction: a refused event leaves nothing behind.

use serde_json::json;

use crate::harness::{self, TestServer};

/// Rows of every table a room writes, to check that a failed createRoom left none.
async fn room_rows(server: &TestServer) -> Vec<i64> {
    let mut counts = Vec::new();
    for sql in [
        "SELECT COUNT(*) FROM rooms",
        "SELECT COUNT(*) FROM events",
        "SELECT COUNT(*) FROM state_groups",
        "SELECT COUNT(*) FROM current_state",
        "SELECT COUNT(*) FROM forward_extremities",
        "SELECT COUNT(*) FROM memberships",
        "SELECT COUNT(*) FROM room_aliases",
    ] {
        let rows = server.hs().db.query(sql, vec![]).await.expect("count");
        counts.push(rows[0].int(0).expect("int"));
    }
    counts
}

/// createRoom is one transaction: when an event part-way through is refused, no room,
/// event, state, membership or alias is left behind, in old and new room versions.
#[tokio::test]
async fn failed_create_room_leaves_nothing() {
    let server = harness::start().await;
    let (alice, token) = server.register("alice").await;
    let empty = room_rows(&server).await;
    assert_eq!(empty, vec![0; 7]);
    for version in ["10", "12"] {
        // The preset's join rules come after the power levels, which leave the creator
        // unable to send state: refused after four events were planned.
        let (status, body) = server
            .req(
                "POST",
                "/_matrix/client/v3/createRoom",
                Some(&token),
                Some(json!({
                    "room_version": version,
                    "preset": "private_chat",
                    "room_alias_name": format!("never{version}"),
                    "power_level_content_override": { "users": { alice.clone(): 0 }, "state_default": 50 },
                })),
            )
            .await;
        // Spec: initial state the auth rules refuse is 400 M_INVALID_ROOM_STATE.
        assert_eq!(
            (status, body["errcode"].as_str()),
            (400, Some("M_INVALID_ROOM_STATE")),
            "{body}"
        );
        // An m.room.create in initial_state is refused at its turn.
        let (status, body) = server
            .req(
                "POST",
                "/_matrix/client/v3/createRoom",
                Some(&token),
                Some(json!({
                    "room_version": version,
                    "name": "half",
                    "initial_state": [{ "type": "m.room.create", "state_key": "", "content": {} }],
                })),
            )
            .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(room_rows(&server).await, empty, "room version {version}");
    }
    let (status, body) = server
        .req(
            "POST",
            "/_matrix/client/v3/createRoom",
            Some(&token),
            Some(json!({ "preset": "party" })),
        )
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (400, Some("M_INVALID_PARAM")),
        "{body}"
    );
    let (_, body) = server
        .req("GET", "/_matrix/client/v3/joined_rooms", Some(&token), None)
        .await;
    assert_eq!(body["joined_rooms"], json!([]));
    let (_, body) = server
        .req(
            "GET",
            "/_matrix/client/v3/directory/room/%23never12:localhost",
            None,
            None,
        )
        .await;
    assert_eq!(body["errcode"], "M_NOT_FOUND", "{body}");

    // A room that is created is whole, and its alias is taken.
    server
        .create_room(&token, json!({ "room_alias_name": "once" }))
        .await;
    let one = room_rows(&server).await;
    assert!(one.iter().all(|n| *n > 0), "{one:?}");
    let (status, body) = server
        .req(
            "POST",
            "/_matrix/client/v3/createRoom",
            Some(&token),
            Some(json!({ "room_alias_name": "once" })),
        )
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (400, Some("M_ROOM_IN_USE")),
        "{body}"
    );
    assert_eq!(room_rows(&server).await, one);
    server.stop().await;
}

/// `trusted_private_chat` (how clients create DMs) makes the invitees as powerful as the
/// creator: additional creators from room v12 on, power level 100 before.
#[tokio::test]
async fn trusted_private_chat_invitees_share_the_creators_power() {
    let server = harness::start().await;
    let (_, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    for version in ["12", "11"] {
        let room = server
            .create_room(
                &alice,
                json!({ "room_version": version, "preset": "trusted_private_chat", "invite": [bob_id], "is_direct": true }),
            )
            .await;
        let state = |kind: &'static str| {
            let (server, room, alice) = (&server, room.clone(), alice.clone());
            async move {
                server
                    .ok(
                        "GET",
                        &format!("/_matrix/client/v3/rooms/{room}/state/{kind}/"),
                        &alice,
                        None,
                    )
                    .await
            }
        };
        let create = state("m.room.create").await;
        let power = state("m.room.power_levels").await;
        if version == "12" {
            assert_eq!(create["additional_creators"], json!([bob_id]), "{create}");
            assert!(power["users"].get(&bob_id).is_none(), "{power}");
        } else {
            assert!(create.get("additional_creators").is_none(), "{create}");
            assert_eq!(power["users"][&bob_id], 100, "{power}");
        }
        // Either way Bob may do what only the most powerful may.
        server.membership(&bob, &room, "join").await;
        server
            .ok(
                "PUT",
                &format!("/_matrix/client/v3/rooms/{room}/state/m.room.history_visibility/"),
                &bob,
                Some(json!({ "history_visibility": "joined" })),
            )
            .await;
    }
    server.stop().await;
}
