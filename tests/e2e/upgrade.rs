//! Room upgrades (spec: "Room Upgrades"): the replacement room, its predecessor, the
//! tombstone, moved aliases and directory entry, the old room silenced.

use serde_json::json;

use crate::harness::{self, urlencode};

#[tokio::test]
async fn an_upgraded_room_is_followed_through_its_tombstone() {
    let server = harness::start().await;
    let (_, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    for version in ["10", "12"] {
        let old = server
            .create_room(
                &alice,
                json!({ "preset": "public_chat", "visibility": "public", "name": "Old name",
                        "topic": "Old topic", "room_version": version,
                        "room_alias_name": format!("up{version}") }),
            )
            .await;
        server.membership(&bob, &old, "join").await;
        let upgrade = format!("/_matrix/client/v3/rooms/{old}/upgrade");
        // Bob may not send a tombstone; an unknown version is refused.
        let (status, body) = server
            .req(
                "POST",
                &upgrade,
                Some(&bob),
                Some(json!({ "new_version": "12" })),
            )
            .await;
        assert_eq!(
            (status, body["errcode"].as_str()),
            (403, Some("M_FORBIDDEN")),
            "{body}"
        );
        let (status, body) = server
            .req(
                "POST",
                &upgrade,
                Some(&alice),
                Some(json!({ "new_version": "99" })),
            )
            .await;
        assert_eq!(
            (status, body["errcode"].as_str()),
            (400, Some("M_UNSUPPORTED_ROOM_VERSION")),
            "{body}"
        );

        let body = server
            .ok(
                "POST",
                &upgrade,
                &alice,
                Some(json!({ "new_version": "12" })),
            )
            .await;
        let new = body["replacement_room"]
            .as_str()
            .expect("replacement_room")
            .to_owned();
        assert_ne!(new, old);
        let state = |room: String, kind: &'static str| {
            let (server, bob) = (&server, bob.clone());
            async move {
                server
                    .req(
                        "GET",
                        &format!("/_matrix/client/v3/rooms/{room}/state/{kind}/"),
                        Some(&bob),
                        None,
                    )
                    .await
            }
        };
        // The old room points at the new one; the new one back at the old.
        let (_, tomb) = state(old.clone(), "m.room.tombstone").await;
        assert_eq!(tomb["replacement_room"], new.as_str(), "{tomb}");
        server.membership(&bob, &new, "join").await;
        let (_, create) = state(new.clone(), "m.room.create").await;
        assert_eq!(create["predecessor"]["room_id"], old.as_str(), "{create}");
        assert_eq!(create["room_version"], "12");
        // The state that transfers did, and the alias, canonical alias and directory
        // entry moved.
        assert_eq!(
            state(new.clone(), "m.room.name").await.1["name"],
            "Old name"
        );
        assert_eq!(
            state(new.clone(), "m.room.topic").await.1["topic"],
            "Old topic"
        );
        assert_eq!(
            state(new.clone(), "m.room.join_rules").await.1["join_rule"],
            "public"
        );
        let alias = format!("#up{version}:localhost");
        let (_, resolved) = server
            .req(
                "GET",
                &format!("/_matrix/client/v3/directory/room/{}", urlencode(&alias)),
                None,
                None,
            )
            .await;
        assert_eq!(resolved["room_id"], new.as_str(), "{resolved}");
        assert_eq!(
            state(new.clone(), "m.room.canonical_alias").await.1["alias"],
            alias.as_str()
        );
        let (_, listed) = server
            .req("GET", "/_matrix/client/v3/publicRooms", None, None)
            .await;
        let listed: Vec<&str> = listed["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["room_id"].as_str())
            .collect();
        assert!(
            listed.contains(&new.as_str()) && !listed.contains(&old.as_str()),
            "{listed:?}"
        );
        // The old room is silenced: Bob can no longer speak there.
        let (status, _) = server
            .req(
                "PUT",
                &format!("/_matrix/client/v3/rooms/{old}/send/m.room.message/t{version}"),
                Some(&bob),
                Some(json!({ "msgtype": "m.text", "body": "still here?" })),
            )
            .await;
        assert_eq!(status, 403);
        server
            .send_text(&bob, &new, &format!("n{version}"), "moved")
            .await;
        let _ = &bob_id;
    }
}
