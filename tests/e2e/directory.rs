//! The public room directory and room aliases (spec: "Room discovery", "Room aliases").

use serde_json::{json, Value};

use crate::harness;

fn room_ids(body: &Value) -> Vec<String> {
    body["chunk"]
        .as_array()
        .expect("chunk")
        .iter()
        .map(|r| r["room_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_directory_lists_published_rooms_largest_first_and_paginates() {
    let server = harness::start().await;
    let (_, alice) = server.register("alice").await;
    let (_, bob) = server.register("bob").await;
    let (_, carol) = server.register("carol").await;
    // Three public rooms of 3, 2 and 1 members, and one private room.
    let big = server
        .create_room(
            &alice,
            json!({ "visibility": "public", "preset": "public_chat", "name": "Cake lovers",
                    "topic": "All about cake", "room_alias_name": "cake" }),
        )
        .await;
    let mid = server
        .create_room(
            &alice,
            json!({ "visibility": "public", "preset": "public_chat", "name": "Tea" }),
        )
        .await;
    let small = server
        .create_room(
            &alice,
            json!({ "visibility": "public", "preset": "public_chat", "name": "Spaceport",
                    "creation_content": { "type": "m.space" } }),
        )
        .await;
    let hidden = server
        .create_room(
            &alice,
            json!({ "preset": "public_chat", "name": "Secret cake" }),
        )
        .await;
    for token in [&bob, &carol] {
        server.membership(token, &big, "join").await;
    }
    server.membership(&bob, &mid, "join").await;
    // A leave counts too: Carol joins and leaves the small room.
    server.membership(&carol, &small, "join").await;
    server.membership(&carol, &small, "leave").await;

    // Unauthenticated GET, largest first, with what the spec's chunk carries.
    let (status, all) = server
        .req("GET", "/_matrix/client/v3/publicRooms", None, None)
        .await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(
        room_ids(&all),
        [big.clone(), mid.clone(), small.clone()],
        "{all}"
    );
    let first = &all["chunk"][0];
    assert_eq!(first["num_joined_members"], 3);
    assert_eq!(first["name"], "Cake lovers");
    assert_eq!(first["topic"], "All about cake");
    assert_eq!(first["canonical_alias"], "#cake:localhost");
    assert_eq!(first["join_rule"], "public");
    assert_eq!(first["world_readable"], false);
    assert_eq!(first["guest_can_join"], false);
    assert_eq!(all["chunk"][2]["room_type"], "m.space");
    assert_eq!(all["chunk"][2]["num_joined_members"], 1);
    assert_eq!(all["total_room_count_estimate"], 3);

    // Pages of one, forward and back again.
    let (_, p1) = server
        .req("GET", "/_matrix/client/v3/publicRooms?limit=1", None, None)
        .await;
    assert_eq!(room_ids(&p1), vec![big.clone()]);
    assert!(p1.get("prev_batch").is_none(), "{p1}");
    let next = p1["next_batch"].as_str().expect("next_batch");
    let (_, p2) = server
        .req(
            "GET",
            &format!("/_matrix/client/v3/publicRooms?limit=1&since={next}"),
            None,
            None,
        )
        .await;
    assert_eq!(room_ids(&p2), vec![mid.clone()], "{p2}");
    let next = p2["next_batch"].as_str().expect("next_batch");
    let (_, p3) = server
        .req(
            "GET",
            &format!("/_matrix/client/v3/publicRooms?limit=1&since={next}"),
            None,
            None,
        )
        .await;
    assert_eq!(room_ids(&p3), vec![small.clone()], "{p3}");
    assert!(p3.get("next_batch").is_none(), "{p3}");
    let prev = p3["prev_batch"].as_str().expect("prev_batch");
    let (_, back) = server
        .req(
            "GET",
            &format!("/_matrix/client/v3/publicRooms?limit=1&since={prev}"),
            None,
            None,
        )
        .await;
    assert_eq!(room_ids(&back), vec![mid.clone()], "{back}");
    let (status, body) = server
        .req(
            "GET",
            "/_matrix/client/v3/publicRooms?since=garbage",
            None,
            None,
        )
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (400, Some("M_INVALID_PARAM")),
        "{body}"
    );

    // POST filters by search term (name, topic, alias; case-insensitive) and room type.
    let search = |filter: Value| {
        let server = &server;
        let bob = bob.clone();
        async move {
            server
                .ok(
                    "POST",
                    "/_matrix/client/v3/publicRooms",
                    &bob,
                    Some(json!({ "filter": filter })),
                )
                .await
        }
    };
    assert_eq!(
        room_ids(&search(json!({ "generic_search_term": "CAKE" })).await),
        vec![big.clone()]
    );
    assert_eq!(
        room_ids(&search(json!({ "generic_search_term": "#cake:" })).await),
        vec![big.clone()]
    );
    assert_eq!(
        room_ids(&search(json!({ "room_types": ["m.space"] })).await),
        vec![small.clone()]
    );
    assert_eq!(
        room_ids(&search(json!({ "room_types": [null] })).await),
        [big.clone(), mid.clone()]
    );
    let (status, _) = server
        .req(
            "POST",
            "/_matrix/client/v3/publicRooms",
            None,
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 401);

    // Visibility: read by anyone; changed by the room's admins only.
    let path = |room: &str| format!("/_matrix/client/v3/directory/list/room/{room}");
    let (_, v) = server.req("GET", &path(&hidden), None, None).await;
    assert_eq!(v["visibility"], "private");
    let (status, body) = server
        .req(
            "PUT",
            &path(&hidden),
            Some(&bob),
            Some(json!({ "visibility": "public" })),
        )
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{body}"
    );
    server.membership(&bob, &hidden, "join").await;
    let (status, _) = server
        .req(
            "PUT",
            &path(&hidden),
            Some(&bob),
            Some(json!({ "visibility": "public" })),
        )
        .await;
    assert_eq!(status, 403, "a member without power may not publish");
    server
        .ok(
            "PUT",
            &path(&hidden),
            &alice,
            Some(json!({ "visibility": "public" })),
        )
        .await;
    let (_, v) = server.req("GET", &path(&hidden), None, None).await;
    assert_eq!(v["visibility"], "public");
    let (_, all) = server
        .req("GET", "/_matrix/client/v3/publicRooms", None, None)
        .await;
    // Two members now, as many as `mid`: after the largest, ties by room ID.
    let mut ids = room_ids(&all)[1..3].to_vec();
    ids.sort();
    let mut tied = vec![mid.clone(), hidden.clone()];
    tied.sort();
    assert_eq!(ids, tied, "{all}");
    server
        .ok(
            "PUT",
            &path(&big),
            &alice,
            Some(json!({ "visibility": "private" })),
        )
        .await;
    let (_, all) = server
        .req("GET", "/_matrix/client/v3/publicRooms", None, None)
        .await;
    assert!(!room_ids(&all).contains(&big), "{all}");
    let (status, body) = server
        .req("GET", &path("!unknown:localhost"), None, None)
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (404, Some("M_NOT_FOUND")),
        "{body}"
    );

    // A room's aliases: for its members.
    let (status, body) = server
        .req(
            "GET",
            &format!("/_matrix/client/v3/rooms/{big}/aliases"),
            Some(&carol),
            None,
        )
        .await;
    assert_eq!(
        (status, body["aliases"].clone()),
        (200, json!(["#cake:localhost"])),
        "{body}"
    );
    let (_, dave) = server.register("dave").await;
    let (status, _) = server
        .req(
            "GET",
            &format!("/_matrix/client/v3/rooms/{big}/aliases"),
            Some(&dave),
            None,
        )
        .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn publication_rules_restrict_who_may_publish() {
    let opts = harness::Options::default();
    let server = harness::start_configured(opts, |c| {
        use tessera_server::config::{PublicationRule, RuleAction};
        let rule = |user: &str, action| PublicationRule {
            user_id: Some(user.into()),
            room_id: None,
            alias: None,
            action,
        };
        c.room_directory.publication_rules = vec![
            rule("@alice:*", RuleAction::Allow),
            rule("*", RuleAction::Deny),
        ];
    })
    .await;
    let (_, alice) = server.register("alice").await;
    let (_, bob) = server.register("bob").await;
    let a = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    let b = server
        .create_room(&bob, json!({ "preset": "public_chat" }))
        .await;
    // createRoom's `visibility: public` passes the rules too.
    let (status, _) = server
        .req(
            "POST",
            "/_matrix/client/v3/createRoom",
            Some(&bob),
            Some(json!({ "visibility": "public" })),
        )
        .await;
    assert_eq!(status, 403);
    let path = |room: &str| format!("/_matrix/client/v3/directory/list/room/{room}");
    server
        .ok(
            "PUT",
            &path(&a),
            &alice,
            Some(json!({ "visibility": "public" })),
        )
        .await;
    let (status, body) = server
        .req(
            "PUT",
            &path(&b),
            Some(&bob),
            Some(json!({ "visibility": "public" })),
        )
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{body}"
    );
    // Unpublishing is never restricted.
    server
        .ok(
            "PUT",
            &path(&b),
            &bob,
            Some(json!({ "visibility": "private" })),
        )
        .await;
}
