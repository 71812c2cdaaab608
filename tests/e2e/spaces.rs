//! Spaces and room summaries (spec: "Spaces", `/hierarchy`; "Room summaries").

use serde_json::{json, Value};

use crate::harness::{self, urlencode, TestServer};

fn ids(body: &Value) -> Vec<String> {
    body["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .map(|r| r["room_id"].as_str().unwrap().to_owned())
        .collect()
}

async fn add_child(server: &TestServer, token: &str, space: &str, child: &str, extra: Value) {
    let mut content = json!({ "via": ["localhost"] });
    if let (Some(c), Some(e)) = (content.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    server
        .ok(
            "PUT",
            &format!(
                "/_matrix/client/v3/rooms/{space}/state/m.space.child/{}",
                urlencode(child)
            ),
            token,
            Some(content),
        )
        .await;
}

#[tokio::test]
async fn a_space_hierarchy_lists_the_rooms_one_may_see_depth_first() {
    let server = harness::start().await;
    let (_, alice) = server.register("alice").await;
    let (_, bob) = server.register("bob").await;
    let space_of = |name: &'static str| json!({ "preset": "public_chat", "name": name, "creation_content": { "type": "m.space" } });
    let space = server.create_room(&alice, space_of("Space")).await;
    let a = server
        .create_room(
            &alice,
            json!({ "preset": "public_chat", "name": "A", "room_alias_name": "roomA" }),
        )
        .await;
    let b = server
        .create_room(&alice, json!({ "preset": "private_chat", "name": "B" }))
        .await;
    let c = server
        .create_room(&alice, json!({ "preset": "public_chat", "name": "C" }))
        .await;
    let sub = server.create_room(&alice, space_of("Sub")).await;
    let d = server
        .create_room(&alice, json!({ "preset": "public_chat", "name": "D" }))
        .await;
    add_child(&server, &alice, &space, &a, json!({ "order": "b" })).await;
    add_child(&server, &alice, &space, &b, json!({})).await;
    add_child(
        &server,
        &alice,
        &space,
        &c,
        json!({ "order": "a", "suggested": true }),
    )
    .await;
    add_child(&server, &alice, &space, &sub, json!({})).await;
    add_child(&server, &alice, &sub, &d, json!({})).await;
    // No `via`: not a child.
    server
        .ok(
            "PUT",
            &format!(
                "/_matrix/client/v3/rooms/{space}/state/m.space.child/{}",
                urlencode(&d)
            ),
            &alice,
            Some(json!({})),
        )
        .await;

    let get = |token: String, query: String| {
        let (server, space) = (&server, space.clone());
        async move {
            server
                .req(
                    "GET",
                    &format!("/_matrix/client/v1/rooms/{space}/hierarchy{query}"),
                    Some(&token),
                    None,
                )
                .await
        }
    };
    // Ordered children first (by `order`), then by the time of their event; B is invite
    // only, so Bob does not see it; depth first, so the sub-space's room follows it.
    let (status, body) = get(bob.clone(), String::new()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        ids(&body),
        [&space, &c, &a, &sub, &d].map(|s| s.to_string()),
        "{body}"
    );
    let (_, body) = get(alice.clone(), String::new()).await;
    assert_eq!(
        ids(&body),
        [&space, &c, &a, &b, &sub, &d].map(|s| s.to_string())
    );
    let root = &body["rooms"][0];
    assert_eq!(root["room_type"], "m.space");
    assert_eq!(root["name"], "Space");
    assert_eq!(
        root["children_state"].as_array().map(Vec::len),
        Some(4),
        "{root}"
    );
    let child = &root["children_state"][0];
    assert!(
        child["origin_server_ts"].is_u64() && child["sender"].is_string(),
        "{child}"
    );
    assert_eq!(
        body["rooms"][1]["children_state"],
        json!([]),
        "not a space: no children"
    );
    assert_eq!(body["rooms"][2]["canonical_alias"], "#roomA:localhost");

    // Filters and depth.
    let (_, body) = get(bob.clone(), "?suggested_only=true".into()).await;
    assert_eq!(ids(&body), vec![space.clone(), c.clone()]);
    let (_, body) = get(bob.clone(), "?max_depth=1".into()).await;
    assert_eq!(ids(&body), [&space, &c, &a, &sub].map(|s| s.to_string()));

    // Pages: the token carries on where the last page ended, for the same parameters.
    let (_, p1) = get(bob.clone(), "?limit=2".into()).await;
    assert_eq!(ids(&p1), vec![space.clone(), c.clone()]);
    let next = p1["next_batch"].as_str().expect("next_batch").to_owned();
    let (_, p2) = get(bob.clone(), format!("?limit=2&from={next}")).await;
    assert_eq!(ids(&p2), vec![a.clone(), sub.clone()]);
    let next2 = p2["next_batch"].as_str().expect("next_batch").to_owned();
    let (_, p3) = get(bob.clone(), format!("?limit=2&from={next2}")).await;
    assert_eq!(ids(&p3), vec![d.clone()]);
    assert!(p3.get("next_batch").is_none(), "{p3}");
    let (status, body) = get(bob.clone(), format!("?limit=2&max_depth=1&from={next}")).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (400, Some("M_INVALID_PARAM")),
        "{body}"
    );
    let (status, _) = get(bob.clone(), "?limit=0".into()).await;
    assert_eq!(status, 400);

    // A space one may not see is 403.
    let hidden = server
        .create_room(
            &alice,
            json!({ "preset": "private_chat", "creation_content": { "type": "m.space" } }),
        )
        .await;
    let (status, body) = server
        .req(
            "GET",
            &format!("/_matrix/client/v1/rooms/{hidden}/hierarchy"),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{body}"
    );
}

#[tokio::test]
async fn room_summaries_for_those_who_may_see_them() {
    let server = harness::start().await;
    let (_, alice) = server.register("alice").await;
    let (_, bob) = server.register("bob").await;
    let public = server
        .create_room(
            &alice,
            json!({ "preset": "public_chat", "name": "Open", "room_alias_name": "open" }),
        )
        .await;
    let private = server
        .create_room(
            &alice,
            json!({ "preset": "private_chat", "name": "Closed" }),
        )
        .await;
    let path = |r: &str| format!("/_matrix/client/v1/room_summary/{}", urlencode(r));
    let s = server.ok("GET", &path(&public), &bob, None).await;
    assert_eq!(
        (s["room_id"].as_str(), s["name"].as_str()),
        (Some(public.as_str()), Some("Open")),
        "{s}"
    );
    assert_eq!(s["num_joined_members"], 1);
    assert_eq!(s["join_rule"], "public");
    assert_eq!(s["room_version"], "12");
    assert!(s.get("membership").is_none(), "{s}");
    // By alias, and without logging in, for a public room.
    assert_eq!(
        server.ok("GET", &path("#open:localhost"), &bob, None).await["room_id"],
        public.as_str()
    );
    let (status, anon) = server.req("GET", &path(&public), None, None).await;
    assert_eq!(
        (status, anon["name"].as_str()),
        (200, Some("Open")),
        "{anon}"
    );
    // A private room only for its members, with their membership.
    let (status, body) = server.req("GET", &path(&private), Some(&bob), None).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (404, Some("M_NOT_FOUND")),
        "{body}"
    );
    let mine = server.ok("GET", &path(&private), &alice, None).await;
    assert_eq!(mine["membership"], "join");
    let (status, _) = server
        .req("GET", &path("#nowhere:localhost"), Some(&bob), None)
        .await;
    assert_eq!(status, 404);
}
