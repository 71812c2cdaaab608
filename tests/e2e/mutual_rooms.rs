//! `GET /mutual_rooms` (spec v1.19): rooms both users joined, paged, and its errors.

use std::collections::HashSet;

use serde_json::json;

use crate::harness::{self, urlencode};

#[tokio::test]
async fn mutual_rooms_lists_rooms_both_joined_in_pages() {
    let server = harness::start().await;
    let (alice_id, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let (_, carol) = server.register("carol").await;
    let mut shared = HashSet::new();
    for _ in 0..101 {
        let room = server
            .create_room(&alice, json!({ "preset": "public_chat" }))
            .await;
        server.membership(&bob, &room, "join").await;
        shared.insert(room);
    }
    // Not mutual: bob only invited, alice left, carol's room.
    let invited = server
        .create_room(&alice, json!({ "invite": [bob_id.clone()] }))
        .await;
    let left = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    server.membership(&bob, &left, "join").await;
    server.membership(&alice, &left, "leave").await;
    let other = server
        .create_room(&carol, json!({ "preset": "public_chat" }))
        .await;
    server.membership(&bob, &other, "join").await;

    let path = |from: Option<&str>| {
        let mut p = format!(
            "/_matrix/client/v1/mutual_rooms?user_id={}",
            urlencode(&bob_id)
        );
        if let Some(f) = from {
            p.push_str(&format!("&from={}", urlencode(f)));
        }
        p
    };
    let first = server.ok("GET", &path(None), &alice, None).await;
    assert_eq!(first["count"], 101, "{first}");
    assert_eq!(first["joined"].as_array().map(Vec::len), Some(100));
    let next = first["next_batch"].as_str().expect("next_batch");
    let second = server.ok("GET", &path(Some(next)), &alice, None).await;
    assert!(second.get("next_batch").is_none(), "{second}");
    let seen: HashSet<String> = first["joined"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["joined"].as_array().unwrap())
        .filter_map(|r| r.as_str().map(str::to_owned))
        .collect();
    assert_eq!(seen, shared);
    assert!(!seen.contains(&invited) && !seen.contains(&left) && !seen.contains(&other));
    // The unstable path answers the same.
    let unstable = server
        .ok(
            "GET",
            &format!(
                "/_matrix/client/unstable/uk.half-shot.msc2666/user/mutual_rooms?user_id={}",
                urlencode(&bob_id)
            ),
            &alice,
            None,
        )
        .await;
    assert_eq!(unstable["count"], 101);

    // A user who does not exist shares nothing.
    let none = server
        .ok(
            "GET",
            "/_matrix/client/v1/mutual_rooms?user_id=%40nobody%3Alocalhost",
            &alice,
            None,
        )
        .await;
    assert_eq!(none, json!({ "joined": [], "count": 0 }));
    for (query, code) in [
        ("", "M_MISSING_PARAM"),
        ("user_id=not-a-user", "M_INVALID_PARAM"),
        (
            &format!("user_id={}", urlencode(&alice_id)),
            "M_INVALID_PARAM",
        ),
        (
            &format!("user_id={}&from=%21%21", urlencode(&bob_id)),
            "M_INVALID_PARAM",
        ),
    ] {
        let (status, body) = server
            .req(
                "GET",
                &format!("/_matrix/client/v1/mutual_rooms?{query}"),
                Some(&alice),
                None,
            )
            .await;
        assert_eq!(
            (status, body["errcode"].as_str()),
            (400, Some(code)),
            "{query}: {body}"
        );
    }
    server.stop().await;
}
