//! `/sync`, `/messages` and visibility exactly as the spec says (issue 8): each test is a
//! case that once came out wrong. Both engines.

use serde_json::{json, Value};

use crate::harness::{self, next_batch, sync, urlencode, TestServer};

fn code(body: &Value) -> Option<&str> {
    body["errcode"].as_str()
}

/// The `(type, state_key) → content` of a state block.
fn state_of(block: &Value) -> Vec<(String, String, Value)> {
    block["events"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["type"].as_str().unwrap_or_default().to_owned(),
                        e["state_key"].as_str().unwrap_or_default().to_owned(),
                        e["content"].clone(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn topic_in(events: &[(String, String, Value)]) -> Option<String> {
    events
        .iter()
        .find(|(t, _, _)| t == "m.room.topic")
        .and_then(|(_, _, c)| c["topic"].as_str().map(str::to_owned))
}

fn timeline_bodies(room: &Value) -> Vec<String> {
    room["timeline"]["events"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

async fn set_topic(server: &TestServer, token: &str, room: &str, topic: &str) -> String {
    server
        .ok(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.topic"),
            token,
            Some(json!({ "topic": topic })),
        )
        .await["event_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn left_rooms_carry_the_state_at_the_leave() {
    let server = harness::start().await;
    let (_, alice) = server.register("alice").await;
    let (_, bob) = server.register("bob").await;
    let room = server
        .create_room(
            &alice,
            json!({ "preset": "public_chat", "topic": "before" }),
        )
        .await;
    server.membership(&bob, &room, "join").await;
    let s = next_batch(&sync(&server, &bob, "").await);
    server.membership(&bob, &room, "leave").await;
    // Set after bob left: he must never see it.
    set_topic(&server, &alice, &room, "after").await;

    // Incremental: the leave, with the room as it was then.
    let body = sync(&server, &bob, &format!("since={s}")).await;
    let left = &body["rooms"]["leave"][&room];
    assert!(left.is_object(), "{body}");
    let mut seen = state_of(&left["state"]);
    seen.extend(state_of(&left["timeline"]));
    assert_ne!(topic_in(&seen).as_deref(), Some("after"), "{left}");

    // Initial sync with include_leave: the state at the leave.
    let filter = urlencode(&json!({ "room": { "include_leave": true } }).to_string());
    let body = sync(&server, &bob, &format!("filter={filter}")).await;
    let left = &body["rooms"]["leave"][&room];
    let mut seen = state_of(&left["state"]);
    seen.extend(state_of(&left["timeline"]));
    assert_eq!(topic_in(&seen).as_deref(), Some("before"), "{left}");

    // With use_state_after, left rooms answer `state_after`, also as of the leave.
    let body = sync(
        &server,
        &bob,
        &format!("filter={filter}&use_state_after=true"),
    )
    .await;
    let left = &body["rooms"]["leave"][&room];
    assert!(left["state_after"].is_object(), "{left}");
    assert!(left.get("state").is_none(), "{left}");
    let after = state_of(&left["state_after"]);
    assert_eq!(topic_in(&after).as_deref(), Some("before"), "{left}");
    server.stop().await;
}

#[tokio::test]
async fn a_sync_reads_memberships_as_of_its_own_position() {
    let server = harness::start().await;
    let (_, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let whoami = server
        .ok("GET", "/_matrix/client/v3/account/whoami", &bob, None)
        .await;
    let bob_device = whoami["device_id"].as_str().unwrap().to_owned();
    let room = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    server.membership(&bob, &room, "join").await;
    let s = next_batch(&sync(&server, &bob, "").await);
    server
        .send_text(&alice, &room, "m", "while bob was in")
        .await;
    // More to-device messages than one sync delivers (100), one position each: bob's next
    // sync stops before the last of them, so before his leave.
    for i in 0..101 {
        server
            .ok(
                "PUT",
                &format!("/_matrix/client/v3/sendToDevice/org.example.n/t{i}"),
                &alice,
                Some(json!({ "messages": { bob_id.clone(): { bob_device.clone(): { "i": i } } } })),
            )
            .await;
    }
    server.membership(&bob, &room, "leave").await;

    let first = sync(&server, &bob, &format!("since={s}")).await;
    let joined = &first["rooms"]["join"][&room];
    assert_eq!(
        timeline_bodies(joined),
        vec!["while bob was in"],
        "the room as it was at the sync's position: {first}"
    );
    assert!(first["rooms"]["leave"].get(&room).is_none(), "{first}");
    let second = sync(&server, &bob, &format!("since={}", next_batch(&first))).await;
    assert!(second["rooms"]["leave"][&room].is_object(), "{second}");
    server.stop().await;
}

#[tokio::test]
async fn a_profile_change_is_not_a_new_join() {
    let server = harness::start().await;
    let (_, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let room = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    server.membership(&bob, &room, "join").await;
    for i in 0..15 {
        server
            .send_text(&alice, &room, &format!("m{i}"), "chatter")
            .await;
    }
    let bob_since = next_batch(&sync(&server, &bob, "").await);
    let alice_since = next_batch(&sync(&server, &alice, "").await);
    server
        .ok(
            "PUT",
            &format!("/_matrix/client/v3/profile/{bob_id}/displayname"),
            &bob,
            Some(json!({ "displayname": "Bobby" })),
        )
        .await;
    let body = sync(&server, &bob, &format!("since={bob_since}")).await;
    let joined = &body["rooms"]["join"][&room];
    let events = joined["timeline"]["events"].as_array().unwrap();
    assert_eq!(
        events.len(),
        1,
        "only the member event, not the room again: {joined}"
    );
    assert_eq!(joined["timeline"]["limited"], false);
    assert_eq!(
        state_of(&joined["state"]),
        vec![],
        "no full state: {joined}"
    );
    // Nobody's keys changed.
    let body = sync(&server, &alice, &format!("since={alice_since}")).await;
    assert_eq!(body["device_lists"]["changed"], json!([]), "{body}");
    server.stop().await;
}

#[tokio::test]
async fn redacting_state_redacts_it_in_prev_content_too() {
    let server = harness::start().await;
    let (_, alice) = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    let first = set_topic(&server, &alice, &room, "secret").await;
    let second = set_topic(&server, &alice, &room, "public").await;
    let event = server
        .ok(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/event/{second}"),
            &alice,
            None,
        )
        .await;
    assert_eq!(event["unsigned"]["prev_content"]["topic"], "secret");
    server
        .ok(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/redact/{first}/r1"),
            &alice,
            Some(json!({})),
        )
        .await;
    let event = server
        .ok(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/event/{second}"),
            &alice,
            None,
        )
        .await;
    assert!(
        event["unsigned"]["prev_content"].get("topic").is_none(),
        "{event}"
    );
    let page = server
        .ok(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=5"),
            &alice,
            None,
        )
        .await;
    let served = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_id"] == second.as_str())
        .cloned()
        .unwrap();
    assert!(
        served["unsigned"]["prev_content"].get("topic").is_none(),
        "{served}"
    );
    let body = sync(&server, &alice, "").await;
    let text = body.to_string();
    assert!(!text.contains("secret"), "{text}");
    server.stop().await;
}

#[tokio::test]
async fn pagination_tokens_are_positions_between_events() {
    let server = harness::start().await;
    let (_, alice) = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    for b in ["e1", "e2", "e3"] {
        server.send_text(&alice, &room, b, b).await;
    }
    let next = next_batch(&sync(&server, &alice, "").await);
    let page = |from: String, dir: &'static str| {
        let server = &server;
        let alice = alice.clone();
        let room = room.clone();
        async move {
            server
                .ok(
                    "GET",
                    &format!(
                        "/_matrix/client/v3/rooms/{room}/messages?dir={dir}&limit=1&from={from}"
                    ),
                    &alice,
                    None,
                )
                .await
        }
    };
    // Back from the sync position: the newest event first, and `start` is `from`.
    let p = page(next.clone(), "b").await;
    assert_eq!(p["start"], next.as_str(), "{p}");
    assert_eq!(p["chunk"][0]["content"]["body"], "e3", "{p}");
    let p2 = page(p["end"].as_str().unwrap().to_owned(), "b").await;
    assert_eq!(p2["chunk"][0]["content"]["body"], "e2", "{p2}");
    // Forward again from there: the event after the gap.
    let f = page(p2["end"].as_str().unwrap().to_owned(), "f").await;
    assert_eq!(f["chunk"][0]["content"]["body"], "e2", "{f}");
    let f2 = page(f["end"].as_str().unwrap().to_owned(), "f").await;
    assert_eq!(f2["chunk"][0]["content"]["body"], "e3", "{f2}");
    // /context tokens are positions too: back from `start` is the event before the
    // context, forward from `end` the one after.
    let e2 = p2["chunk"][0]["event_id"].as_str().unwrap().to_owned();
    let ctx = server
        .ok(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/context/{e2}?limit=0"),
            &alice,
            None,
        )
        .await;
    let before = page(ctx["start"].as_str().unwrap().to_owned(), "b").await;
    assert_eq!(
        before["chunk"][0]["content"]["body"], "e1",
        "{ctx} {before}"
    );
    let after = page(ctx["end"].as_str().unwrap().to_owned(), "f").await;
    assert_eq!(after["chunk"][0]["content"]["body"], "e3", "{ctx} {after}");
    // Garbage is refused.
    let (status, body) = server
        .req(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&from=x9"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!((status, code(&body)), (400, Some("M_INVALID_PARAM")));
    server.stop().await;
}

#[tokio::test]
async fn a_v12_create_event_is_read_only_through_its_own_room() {
    let server = harness::start().await;
    let (_, alice) = server.register("alice").await;
    let a = server.create_room(&alice, json!({})).await;
    let b = server.create_room(&alice, json!({})).await;
    let create_of_a = format!("${}", a.trim_start_matches('!'));
    let (status, _) = server
        .req(
            "GET",
            &format!("/_matrix/client/v3/rooms/{a}/event/{create_of_a}"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = server
        .req(
            "GET",
            &format!("/_matrix/client/v3/rooms/{b}/event/{create_of_a}"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!((status, code(&body)), (404, Some("M_NOT_FOUND")), "{body}");
    server.stop().await;
}

#[tokio::test]
async fn presence_is_for_room_mates_and_arrives_in_sync() {
    let server = harness::start().await;
    let (alice_id, alice) = server.register("alice").await;
    let (_, bob) = server.register("bob").await;
    let (_, carol) = server.register("carol").await;
    let room = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    server.membership(&bob, &room, "join").await;
    let s = next_batch(&sync(&server, &bob, "").await);
    server
        .ok(
            "PUT",
            &format!("/_matrix/client/v3/presence/{alice_id}/status"),
            &alice,
            Some(json!({ "presence": "online", "status_msg": "here" })),
        )
        .await;
    let path = format!("/_matrix/client/v3/presence/{alice_id}/status");
    let (status, body) = server.req("GET", &path, Some(&bob), None).await;
    assert_eq!(
        (status, body["presence"].as_str()),
        (200, Some("online")),
        "{body}"
    );
    let (status, body) = server.req("GET", &path, Some(&carol), None).await;
    assert_eq!((status, code(&body)), (403, Some("M_FORBIDDEN")), "{body}");
    let body = sync(&server, &bob, &format!("since={s}")).await;
    let presence = body["presence"]["events"].as_array().unwrap();
    assert!(
        presence
            .iter()
            .any(|e| e["sender"] == alice_id.as_str() && e["content"]["presence"] == "online"),
        "{body}"
    );
    let body = sync(&server, &carol, "").await;
    assert!(!body["presence"].to_string().contains(&alice_id), "{body}");
    // `set_presence` on /sync sets it.
    let s = next_batch(&sync(&server, &bob, "").await);
    sync(&server, &alice, "set_presence=unavailable").await;
    let body = sync(&server, &bob, &format!("since={s}")).await;
    assert!(
        body["presence"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["sender"] == alice_id.as_str() && e["content"]["presence"] == "unavailable"),
        "{body}"
    );
    server.stop().await;
}

#[tokio::test]
async fn world_readable_rooms_are_readable_by_anyone() {
    let server = harness::start().await;
    let (_, alice) = server.register("alice").await;
    let (_, carol) = server.register("carol").await;
    let room = server
        .create_room(
            &alice,
            json!({
                "preset": "public_chat",
                "initial_state": [{ "type": "m.room.history_visibility", "state_key": "", "content": { "history_visibility": "world_readable" } }],
            }),
        )
        .await;
    let event = server.send_text(&alice, &room, "w", "for all to see").await;
    let messages = server
        .ok(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b"),
            &carol,
            None,
        )
        .await;
    assert!(
        messages.to_string().contains("for all to see"),
        "{messages}"
    );
    server
        .ok(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/event/{event}"),
            &carol,
            None,
        )
        .await;
    let state = server
        .ok(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/state"),
            &carol,
            None,
        )
        .await;
    assert!(state.as_array().is_some_and(|s| !s.is_empty()));
    // A room that is not world-readable stays closed.
    let closed = server.create_room(&alice, json!({})).await;
    let (status, _) = server
        .req(
            "GET",
            &format!("/_matrix/client/v3/rooms/{closed}/messages?dir=b"),
            Some(&carol),
            None,
        )
        .await;
    assert_eq!(status, 403);
    server.stop().await;
}

#[tokio::test]
async fn a_room_joined_and_left_within_one_window_comes_with_its_state() {
    let server = harness::start().await;
    let (_, alice) = server.register("alice").await;
    let (_, bob) = server.register("bob").await;
    let room = server
        .create_room(&alice, json!({ "preset": "public_chat", "topic": "t" }))
        .await;
    let s = next_batch(&sync(&server, &bob, "").await);
    server.membership(&bob, &room, "join").await;
    server.membership(&bob, &room, "leave").await;
    let body = sync(&server, &bob, &format!("since={s}")).await;
    let left = &body["rooms"]["leave"][&room];
    let mut seen = state_of(&left["state"]);
    seen.extend(state_of(&left["timeline"]));
    assert!(
        seen.iter().any(|(t, _, _)| t == "m.room.create"),
        "bob never saw this room: it comes whole: {left}"
    );
    assert_eq!(topic_in(&seen).as_deref(), Some("t"), "{left}");
    server.stop().await;
}

#[tokio::test]
async fn gapped_and_filtered_syncs_keep_state_and_lazy_members() {
    let server = harness::start().await;
    let (_, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let room = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    server.membership(&bob, &room, "join").await;
    let lazy = urlencode(
        &json!({ "room": { "timeline": { "limit": 2 }, "state": { "lazy_load_members": true } } })
            .to_string(),
    );
    let s = next_batch(&sync(&server, &alice, &format!("filter={lazy}")).await);
    set_topic(&server, &alice, &room, "gapped").await;
    for i in 0..5 {
        server
            .send_text(&bob, &room, &format!("b{i}"), "from bob")
            .await;
    }
    let body = sync(&server, &alice, &format!("since={s}&filter={lazy}")).await;
    let joined = &body["rooms"]["join"][&room];
    assert_eq!(joined["timeline"]["limited"], true, "{joined}");
    let state = state_of(&joined["state"]);
    assert_eq!(topic_in(&state).as_deref(), Some("gapped"), "{joined}");
    assert!(
        state
            .iter()
            .any(|(t, k, _)| t == "m.room.member" && *k == bob_id),
        "the timeline's sender, lazily loaded: {joined}"
    );

    // A timeline filtered to messages still hands over the state set among them.
    let only_messages =
        urlencode(&json!({ "room": { "timeline": { "types": ["m.room.message"] } } }).to_string());
    let s = next_batch(&sync(&server, &alice, &format!("filter={only_messages}")).await);
    server.send_text(&bob, &room, "x1", "one").await;
    set_topic(&server, &alice, &room, "filtered").await;
    server.send_text(&bob, &room, "x2", "two").await;
    let body = sync(
        &server,
        &alice,
        &format!("since={s}&filter={only_messages}"),
    )
    .await;
    let joined = &body["rooms"]["join"][&room];
    let mut seen = state_of(&joined["state"]);
    seen.extend(state_of(&joined["timeline"]));
    assert_eq!(topic_in(&seen).as_deref(), Some("filtered"), "{joined}");
    server.stop().await;
}

#[tokio::test]
async fn inline_sync_filters_apply() {
    let server = harness::start().await;
    let (_, alice) = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    for i in 0..5 {
        server.send_text(&alice, &room, &format!("i{i}"), "x").await;
    }
    let filter = urlencode(&json!({ "room": { "timeline": { "limit": 1 } } }).to_string());
    let body = sync(&server, &alice, &format!("filter={filter}")).await;
    let events = body["rooms"]["join"][&room]["timeline"]["events"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(events, 1, "{body}");
    server.stop().await;
}

#[tokio::test]
async fn identical_state_is_sent_once() {
    let server = harness::start().await;
    let (_, alice) = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    let first = set_topic(&server, &alice, &room, "same").await;
    let again = set_topic(&server, &alice, &room, "same").await;
    assert_eq!(first, again);
    let other = set_topic(&server, &alice, &room, "different").await;
    assert_ne!(first, other);
    server.stop().await;
}

#[tokio::test]
async fn canonical_aliases_must_exist_and_point_here() {
    let server = harness::start().await;
    let (_, alice) = server.register("alice").await;
    let room = server
        .create_room(&alice, json!({ "room_alias_name": "here" }))
        .await;
    let other = server
        .create_room(&alice, json!({ "room_alias_name": "elsewhere" }))
        .await;
    let path = format!("/_matrix/client/v3/rooms/{room}/state/m.room.canonical_alias");
    // Spec: aliases that do not point here are M_BAD_ALIAS (those of other servers cannot
    // be checked without federation), malformed ones M_INVALID_PARAM.
    for (content, errcode) in [
        (json!({ "alias": "#missing:localhost" }), "M_BAD_ALIAS"),
        (json!({ "alias": "#elsewhere:localhost" }), "M_BAD_ALIAS"),
        (json!({ "alias": "#here:other.example" }), "M_BAD_ALIAS"),
        (
            json!({ "alias": "#here:localhost", "alt_aliases": ["#elsewhere:localhost"] }),
            "M_BAD_ALIAS",
        ),
        (json!({ "alias": "not an alias" }), "M_INVALID_PARAM"),
        (
            json!({ "alt_aliases": "#here:localhost" }),
            "M_INVALID_PARAM",
        ),
        (json!({ "alt_aliases": [5] }), "M_INVALID_PARAM"),
    ] {
        let (status, body) = server
            .req("PUT", &path, Some(&alice), Some(content.clone()))
            .await;
        assert_eq!(
            (status, code(&body)),
            (400, Some(errcode)),
            "{content}: {body}"
        );
    }
    server
        .ok(
            "PUT",
            &path,
            &alice,
            Some(json!({ "alias": "#here:localhost", "alt_aliases": [] })),
        )
        .await;
    // Removing the alias is always fine.
    server.ok("PUT", &path, &alice, Some(json!({}))).await;
    let _ = other;
    server.stop().await;
}

#[tokio::test]
async fn a_room_joined_since_the_last_sync_is_limited_and_whole() {
    let server = harness::start().await;
    let (_, alice) = server.register("alice").await;
    let (_, bob) = server.register("bob").await;
    let room = server
        .create_room(&alice, json!({ "preset": "public_chat", "name": "N" }))
        .await;
    let filter = urlencode(&json!({ "room": { "timeline": { "limit": 2 } } }).to_string());
    let s = next_batch(&sync(&server, &bob, &format!("filter={filter}")).await);
    server.membership(&bob, &room, "join").await;
    let body = sync(&server, &bob, &format!("since={s}&filter={filter}")).await;
    let joined = &body["rooms"]["join"][&room];
    // As Synapse answers: limited, and the state at the start of the timeline in full.
    assert_eq!(joined["timeline"]["limited"], true, "{joined}");
    let state = state_of(&joined["state"]);
    for kind in ["m.room.create", "m.room.power_levels", "m.room.join_rules"] {
        assert!(
            state.iter().any(|(t, _, _)| t == kind),
            "{kind} missing: {joined}"
        );
    }
    // A small room whose whole history fits is still limited: the client had none of it.
    let small = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    let s = next_batch(&sync(&server, &bob, "").await);
    server.membership(&bob, &small, "join").await;
    let body = sync(&server, &bob, &format!("since={s}")).await;
    assert_eq!(
        body["rooms"]["join"][&small]["timeline"]["limited"], true,
        "{body}"
    );
    server.stop().await;
}
