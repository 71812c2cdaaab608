//! Room members: `/members` filters, `/joined_members`, and lazy-loaded member events in
//! incremental syncs.

use serde_json::{json, Value};

use crate::harness;

#[tokio::test]
async fn members_filters_joined_members_and_lazy_loading() {
    let server = harness::start().await;
    let (alice_id, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let (carol_id, carol) = server.register("carol").await;
    let room = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    server.membership(&bob, &room, "join").await;
    server.membership(&carol, &room, "join").await;
    server.membership(&carol, &room, "leave").await;
    let filter = "%7B%22room%22%3A%7B%22state%22%3A%7B%22lazy_load_members%22%3Atrue%7D%7D%7D";
    let body = server
        .ok(
            "GET",
            &format!("/_matrix/client/v3/sync?filter={filter}"),
            &alice,
            None,
        )
        .await;
    let since = body["next_batch"].as_str().unwrap().to_owned();

    // `membership` and `not_membership` together are an "or".
    let members = |query: &'static str| {
        let (server, room, alice) = (&server, room.clone(), alice.clone());
        async move {
            let body = server
                .ok(
                    "GET",
                    &format!("/_matrix/client/v3/rooms/{room}/members?{query}"),
                    &alice,
                    None,
                )
                .await;
            let mut keys: Vec<String> = body["chunk"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["state_key"].as_str().unwrap().to_owned())
                .collect();
            keys.sort();
            keys
        }
    };
    assert_eq!(
        members("membership=join").await,
        vec![alice_id.clone(), bob_id.clone()]
    );
    assert_eq!(members("not_membership=join").await, vec![carol_id.clone()]);
    assert_eq!(
        members("membership=leave&not_membership=join").await,
        vec![carol_id.clone()]
    );
    assert_eq!(
        members("membership=join&not_membership=leave").await,
        vec![alice_id.clone(), bob_id.clone()]
    );
    assert_eq!(
        members("membership=ban&not_membership=ban").await,
        vec![alice_id.clone(), bob_id.clone(), carol_id.clone()]
    );

    // `/joined_members`: strings or nothing, and only for members in the room now.
    let body = server
        .ok(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/joined_members"),
            &alice,
            None,
        )
        .await;
    assert_eq!(
        body["joined"][&bob_id],
        json!({ "display_name": "bob" }),
        "{body}"
    );
    assert_eq!(body["joined"].as_object().unwrap().len(), 2, "{body}");
    let (status, body) = server
        .req(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/joined_members"),
            Some(&carol),
            None,
        )
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{body}"
    );

    // An incremental, unlimited, lazy-loading sync carries the senders' member events.
    server.send_text(&bob, &room, "b1", "from bob").await;
    let body = server
        .ok(
            "GET",
            &format!("/_matrix/client/v3/sync?filter={filter}&since={since}"),
            &alice,
            None,
        )
        .await;
    let joined = &body["rooms"]["join"][&room];
    assert_eq!(joined["timeline"]["limited"], false, "{body}");
    let state: Vec<&Value> = joined["state"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert!(
        state
            .iter()
            .any(|e| e["type"] == "m.room.member" && e["state_key"] == bob_id.as_str()),
        "{body}"
    );
    assert!(
        !state.iter().any(|e| e["state_key"] == carol_id.as_str()),
        "only senders' member events: {body}"
    );

    // `/event`: 404 for a user who may not read it; world-readable events for anyone.
    let (_, dave) = server.register("dave").await;
    let event = server.send_text(&alice, &room, "a1", "members only").await;
    let path = format!("/_matrix/client/v3/rooms/{room}/event/{event}");
    let (status, body) = server.req("GET", &path, Some(&dave), None).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (404, Some("M_NOT_FOUND")),
        "{body}"
    );
    let open = server
        .create_room(
            &alice,
            json!({ "initial_state": [{ "type": "m.room.history_visibility", "content": { "history_visibility": "world_readable" } }] }),
        )
        .await;
    let event = server.send_text(&alice, &open, "a2", "for all").await;
    let body = server
        .ok(
            "GET",
            &format!("/_matrix/client/v3/rooms/{open}/event/{event}"),
            &dave,
            None,
        )
        .await;
    assert_eq!(body["content"]["body"], "for all", "{body}");
    server.stop().await;
}

/// `m.heroes` (spec: "Room summary"): other members in stream order; once nobody else is
/// joined or invited, those who left.
#[tokio::test]
async fn heroes_in_stream_order_then_those_who_left() {
    let server = harness::start().await;
    let (_, alice) = server.register("alice").await;
    let (zed_id, zed) = server.register("zed").await;
    let (bob_id, bob) = server.register("bob").await;
    let room = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    server.membership(&zed, &room, "join").await;
    server.membership(&bob, &room, "join").await;
    let summary = |body: Value| body["rooms"]["join"][&room]["summary"].clone();
    let body = server
        .ok("GET", "/_matrix/client/v3/sync", &alice, None)
        .await;
    assert_eq!(summary(body)["m.heroes"], json!([zed_id, bob_id]));
    server.membership(&zed, &room, "leave").await;
    server.membership(&bob, &room, "leave").await;
    let body = server
        .ok("GET", "/_matrix/client/v3/sync", &alice, None)
        .await;
    let s = summary(body);
    assert_eq!(s["m.heroes"], json!([zed_id, bob_id]), "{s}");
    assert_eq!(s["m.joined_member_count"], 1, "{s}");
    server.stop().await;
}
