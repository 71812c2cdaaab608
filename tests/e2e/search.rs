//! Server-side search (spec: "Server Side Search"): full text over message bodies, room
//! names and topics, only what the searcher may see.

use serde_json::{json, Value};

use crate::harness::{self, urlencode, TestServer};

async fn search(server: &TestServer, token: &str, criteria: Value) -> Value {
    server
        .ok(
            "POST",
            "/_matrix/client/v3/search",
            token,
            Some(json!({ "search_categories": { "room_events": criteria } })),
        )
        .await["search_categories"]["room_events"]
        .clone()
}

fn bodies(r: &Value) -> Vec<String> {
    r["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|h| {
            let c = &h["result"]["content"];
            c["body"]
                .as_str()
                .or(c["name"].as_str())
                .unwrap_or("")
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn search_finds_what_the_searcher_may_see() {
    let server = harness::start().await;
    let (_, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let (_, carol) = server.register("carol").await;
    let room = server
        .create_room(
            &alice,
            json!({ "preset": "public_chat", "name": "Fox den", "topic": "about foxes" }),
        )
        .await;
    server.membership(&bob, &room, "join").await;
    server.membership(&carol, &room, "join").await;
    server
        .send_text(&alice, &room, "m1", "the quick brown fox")
        .await;
    let lazy = server.send_text(&alice, &room, "m2", "lazy dog").await;
    server.send_text(&bob, &room, "m3", "Quick thinking").await;
    // Carol leaves; what is said afterwards is not hers to find.
    server.membership(&carol, &room, "leave").await;
    server.send_text(&bob, &room, "m4", "quick, she left").await;
    // Nor is a room she was never in.
    let other = server
        .create_room(&alice, json!({ "preset": "private_chat" }))
        .await;
    server.send_text(&alice, &other, "s1", "quick secret").await;

    let r = search(
        &server,
        &bob,
        json!({ "search_term": "QUICK", "order_by": "recent" }),
    )
    .await;
    assert_eq!(
        bodies(&r),
        ["quick, she left", "Quick thinking", "the quick brown fox"],
        "{r}"
    );
    assert_eq!(r["count"], 3);
    assert!(
        r["highlights"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h.as_str().is_some_and(|h| h.eq_ignore_ascii_case("quick"))),
        "{r}"
    );
    let r = search(&server, &carol, json!({ "search_term": "quick" })).await;
    let mut found = bodies(&r);
    found.sort();
    assert_eq!(found, ["Quick thinking", "the quick brown fox"], "{r}");
    let r = search(&server, &alice, json!({ "search_term": "quick" })).await;
    assert_eq!(r["count"], 4, "alice is in both rooms: {r}");

    // Names and topics are searched too; `keys` narrows it; all words must match.
    let r = search(&server, &bob, json!({ "search_term": "fox" })).await;
    let mut found = bodies(&r);
    found.sort();
    assert_eq!(found, ["Fox den", "the quick brown fox"], "{r}");
    let r = search(
        &server,
        &bob,
        json!({ "search_term": "fox", "keys": ["content.body"] }),
    )
    .await;
    assert_eq!(bodies(&r), ["the quick brown fox"]);
    let r = search(&server, &bob, json!({ "search_term": "quick fox" })).await;
    assert_eq!(bodies(&r), ["the quick brown fox"]);
    let r = search(
        &server,
        &bob,
        json!({ "search_term": "fox", "filter": { "senders": [bob_id] } }),
    )
    .await;
    assert_eq!(r["count"], 0, "{r}");

    // Pages, context, groups, state.
    let r = search(
        &server,
        &bob,
        json!({ "search_term": "quick", "order_by": "recent", "filter": { "limit": 2 } }),
    )
    .await;
    assert_eq!(bodies(&r).len(), 2);
    let next = r["next_batch"].as_str().expect("next_batch").to_owned();
    let page2 = server
        .ok(
            "POST",
            &format!("/_matrix/client/v3/search?next_batch={}", urlencode(&next)),
            &bob,
            Some(json!({ "search_categories": { "room_events": { "search_term": "quick", "order_by": "recent", "filter": { "limit": 2 } } } })),
        )
        .await;
    let page2 = &page2["search_categories"]["room_events"];
    assert_eq!(bodies(page2), ["the quick brown fox"], "{page2}");
    assert!(page2.get("next_batch").is_none());
    let r = search(
        &server,
        &bob,
        json!({
            "search_term": "thinking",
            "event_context": { "before_limit": 1, "after_limit": 1, "include_profile": true },
            "groupings": { "group_by": [{ "key": "room_id" }, { "key": "sender" }] },
            "include_state": true,
        }),
    )
    .await;
    let ctx = &r["results"][0]["context"];
    assert_eq!(
        ctx["events_before"][0]["content"]["body"], "lazy dog",
        "{r}"
    );
    assert_eq!(ctx["events_after"].as_array().map(Vec::len), Some(1), "{r}");
    assert!(ctx["profile_info"][&bob_id].is_object(), "{ctx}");
    assert_eq!(
        r["groups"]["room_id"][&room]["results"]
            .as_array()
            .map(Vec::len),
        Some(1),
        "{r}"
    );
    assert!(r["groups"]["sender"][&bob_id].is_object(), "{r}");
    assert!(
        r["state"][&room]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.room.name"),
        "{r}"
    );

    // A redacted message is no longer found.
    server
        .ok(
            "PUT",
            &format!(
                "/_matrix/client/v3/rooms/{room}/redact/{}/x",
                urlencode(&lazy)
            ),
            &alice,
            Some(json!({})),
        )
        .await;
    assert_eq!(
        search(&server, &bob, json!({ "search_term": "lazy" })).await["count"],
        0
    );

    // Whatever the term, a Matrix answer: the engines' query syntax never reaches them.
    for term in [
        "\"",
        "*",
        "AND OR NOT (",
        "a\u{0}b",
        "fox\"*",
        "",
        "   ",
        &"x".repeat(5000),
        "NEAR(quick fox)",
        "quick:*",
    ] {
        let (status, body) = server
            .req(
                "POST",
                "/_matrix/client/v3/search",
                Some(&bob),
                Some(json!({ "search_categories": { "room_events": { "search_term": term } } })),
            )
            .await;
        assert_eq!(status, 200, "{term:?}: {body}");
    }
    let (status, body) = server
        .req("POST", "/_matrix/client/v3/search", Some(&bob), Some(json!({ "search_categories": { "room_events": { "search_term": "x", "keys": ["content.secret"] } } })))
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (400, Some("M_INVALID_PARAM")),
        "{body}"
    );
    let (status, _) = server
        .req(
            "POST",
            "/_matrix/client/v3/search",
            Some(&bob),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 400);
}
