//! Simplified sliding sync (MSC4186) over raw HTTP: list filters and ranges, what an
//! incremental answer holds, `required_state` patterns, rooms left or kicked from,
//! timeline expansion, positions that are not the connection's, the to-device
//! extension's acknowledgement, and bad requests.

use serde_json::{json, Value};

use crate::harness::TestServer;

const PATH: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

async fn ss(server: &TestServer, token: &str, pos: Option<&str>, body: Value) -> Value {
    let path = match pos {
        Some(p) => format!("{PATH}?pos={}&timeout=0", crate::harness::urlencode(p)),
        None => PATH.to_owned(),
    };
    server.ok("POST", &path, token, Some(body)).await
}

fn pos(body: &Value) -> String {
    body["pos"].as_str().expect("pos").to_owned()
}

/// The rooms of an answer that name `list` in their `lists`.
fn in_list(body: &Value, list: &str) -> Vec<String> {
    let mut out: Vec<String> = body["rooms"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, r)| {
            r["lists"]
                .as_array()
                .is_some_and(|l| l.iter().any(|n| n == list))
        })
        .map(|(id, _)| id.clone())
        .collect();
    out.sort();
    out
}

fn sorted(mut v: Vec<&str>) -> Vec<String> {
    v.sort();
    v.into_iter().map(str::to_owned).collect()
}

fn bodies(room: &Value) -> Vec<String> {
    room["timeline"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

fn state_types(room: &Value) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = room["required_state"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["type"].as_str().unwrap_or_default().to_owned(),
                e["state_key"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn lists_filter_sort_and_count_the_users_rooms() {
    let server = crate::harness::start().await;
    let (alice_id, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let plain = server.create_room(&alice, json!({ "name": "plain" })).await;
    let dm = server
        .create_room(&alice, json!({ "is_direct": true, "invite": [bob_id] }))
        .await;
    let enc = server
        .create_room(
            &alice,
            json!({ "initial_state": [{ "type": "m.room.encryption", "state_key": "", "content": { "algorithm": "m.megolm.v1.aes-sha2" } }] }),
        )
        .await;
    let space = server
        .create_room(&alice, json!({ "creation_content": { "type": "m.space" } }))
        .await;
    let child = server.create_room(&alice, json!({ "name": "child" })).await;
    server
        .ok(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{space}/state/m.space.child/{child}"),
            &alice,
            Some(json!({ "via": ["localhost"] })),
        )
        .await;
    let fav = server.create_room(&alice, json!({ "name": "fav" })).await;
    server
        .ok(
            "PUT",
            &format!("/_matrix/client/v3/user/{alice_id}/rooms/{fav}/tags/m.favourite"),
            &alice,
            Some(json!({})),
        )
        .await;
    server
        .ok(
            "PUT",
            &format!("/_matrix/client/v3/user/{alice_id}/account_data/m.direct"),
            &alice,
            Some(json!({ bob_id.clone(): [dm] })),
        )
        .await;
    let invited = server
        .create_room(&bob, json!({ "invite": [alice_id] }))
        .await;
    // `plain` moves to the top.
    server.send_text(&alice, &plain, "t1", "newest").await;

    let list =
        |filters: Value| json!({ "timeline_limit": 0, "required_state": [], "filters": filters });
    let body = ss(
        &server,
        &alice,
        None,
        json!({ "lists": {
            "top": { "ranges": [[0, 1]], "timeline_limit": 1, "required_state": [] },
            "dm": list(json!({ "is_dm": true })),
            "not_dm": list(json!({ "is_dm": false, "is_invite": false })),
            "enc": list(json!({ "is_encrypted": true })),
            "spaces": list(json!({ "room_types": ["m.space"] })),
            "no_spaces": list(json!({ "not_room_types": ["m.space"], "is_invite": false })),
            "untyped": list(json!({ "room_types": [null] , "is_invite": false})),
            "fav": list(json!({ "tags": ["m.favourite"] })),
            "not_fav": list(json!({ "not_tags": ["m.favourite"], "is_invite": false })),
            "in_space": list(json!({ "spaces": [space] })),
            "invites": list(json!({ "is_invite": true })),
        } }),
    )
    .await;
    assert_eq!(body["lists"]["top"]["count"], 7, "{body}");
    // Most recent first: the message in `plain`, then bob's invite.
    assert_eq!(in_list(&body, "top"), sorted(vec![&plain, &invited]));
    assert_eq!(in_list(&body, "dm"), vec![dm.clone()]);
    assert_eq!(in_list(&body, "enc"), vec![enc.clone()]);
    assert_eq!(in_list(&body, "spaces"), vec![space.clone()]);
    assert_eq!(in_list(&body, "in_space"), vec![child.clone()]);
    assert_eq!(in_list(&body, "fav"), vec![fav.clone()]);
    assert_eq!(in_list(&body, "invites"), vec![invited.clone()]);
    assert_eq!(
        in_list(&body, "not_dm"),
        sorted(vec![&plain, &enc, &space, &child, &fav])
    );
    assert_eq!(
        in_list(&body, "no_spaces"),
        sorted(vec![&plain, &dm, &enc, &child, &fav])
    );
    assert_eq!(in_list(&body, "untyped"), in_list(&body, "no_spaces"));
    assert_eq!(
        in_list(&body, "not_fav"),
        sorted(vec![&plain, &dm, &enc, &space, &child])
    );
    assert_eq!(body["lists"]["not_fav"]["count"], 5);
    let rooms = &body["rooms"];
    assert_eq!(rooms[&dm]["is_dm"], true);
    assert_eq!(rooms[&plain]["is_dm"], false);
    assert_eq!(rooms[&invited]["membership"], "invite");
    assert!(rooms[&invited]["invite_state"]
        .as_array()
        .is_some_and(|s| !s.is_empty()));
    // Sorted by recency: bump stamps follow.
    assert!(rooms[&plain]["bump_stamp"].as_i64() > rooms[&fav]["bump_stamp"].as_i64());
    for (_, r) in rooms.as_object().unwrap() {
        assert_eq!(r["initial"], true);
    }
}

#[tokio::test]
async fn an_incremental_answer_holds_only_what_changed() {
    let server = crate::harness::start().await;
    let (_, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let a = server
        .create_room(&alice, json!({ "name": "A", "preset": "public_chat" }))
        .await;
    let b = server
        .create_room(&alice, json!({ "name": "B", "preset": "public_chat" }))
        .await;
    server.membership(&bob, &a, "join").await;
    server.membership(&bob, &b, "join").await;
    let req = json!({ "conn_id": "main", "lists": { "all": {
        "ranges": [[0, 9]], "timeline_limit": 5,
        "required_state": [["m.room.name", ""], ["m.room.member", "$LAZY"]] } } });
    let first = ss(&server, &alice, None, req.clone()).await;
    assert_eq!(first["rooms"][&a]["name"], "A");
    assert_eq!(first["rooms"][&a]["joined_count"], 2);
    let p1 = pos(&first);
    // Nothing moved: nothing sent, same position.
    let again = ss(&server, &alice, Some(&p1), req.clone()).await;
    assert_eq!(again["rooms"], json!({}), "{again}");
    assert_eq!(pos(&again), p1);

    let m1 = server.send_text(&bob, &a, "b1", "to A").await;
    let second = ss(&server, &alice, Some(&p1), req.clone()).await;
    let ra = &second["rooms"][&a];
    assert!(second["rooms"].get(&b).is_none(), "{second}");
    assert!(ra.get("initial").is_none());
    assert!(ra.get("name").is_none(), "unchanged name is left out: {ra}");
    assert_eq!(bodies(ra), vec!["to A"]);
    assert_eq!(ra["num_live"], 1);
    assert_eq!(ra["notification_count"], 1);
    // The sender's member event comes with it ($LAZY).
    assert!(state_types(ra).contains(&("m.room.member".into(), bob_id.clone())));
    let p2 = pos(&second);
    assert_ne!(p2, p1);

    // The client never saw p2's answer and retries p1: the same room again.
    let retry = ss(&server, &alice, Some(&p1), req.clone()).await;
    assert_eq!(bodies(&retry["rooms"][&a]), vec!["to A"]);
    let p3 = pos(&retry);
    // p2 was abandoned by the retry's successor; p1 is now the previous position.
    let (status, err) = server
        .req(
            "POST",
            &format!("{PATH}?pos={}", crate::harness::urlencode(&p2)),
            Some(&alice),
            Some(req.clone()),
        )
        .await;
    // p2 is the abandoned one: it is still one of the two kept, or refused; never a 5xx.
    assert!(
        status == 200 || err["errcode"] == "M_UNKNOWN_POS",
        "{status} {err}"
    );

    // A name change in B: B alone, with its new name and the event in required_state.
    server
        .ok(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{b}/state/m.room.name/"),
            &alice,
            Some(json!({ "name": "B2" })),
        )
        .await;
    let third = ss(&server, &alice, Some(&p3), req.clone()).await;
    let rb = &third["rooms"][&b];
    assert!(third["rooms"].get(&a).is_none(), "{third}");
    assert_eq!(rb["name"], "B2");
    assert!(state_types(rb).contains(&("m.room.name".into(), String::new())));
    let p4 = pos(&third);

    // Alice reads A: only its counts change, and they are sent.
    server
        .ok(
            "POST",
            &format!("/_matrix/client/v3/rooms/{a}/receipt/m.read/{m1}"),
            &alice,
            Some(json!({})),
        )
        .await;
    let fourth = ss(&server, &alice, Some(&p4), req.clone()).await;
    assert_eq!(fourth["rooms"][&a]["notification_count"], 0, "{fourth}");
    assert!(fourth["rooms"][&a]["timeline"]
        .as_array()
        .is_none_or(Vec::is_empty));
    let p5 = pos(&fourth);

    // Positions that are not this connection's.
    let (_, carol) = server.register("carol").await;
    let other_device = server.login("alice").await;
    for (token, p) in [
        (&carol, p5.as_str()),
        (&other_device, p5.as_str()),
        (&alice, "garbage"),
        (&alice, "p1.99.5.0"),
        (&alice, p1.as_str()),
    ] {
        let (status, body) = server
            .req(
                "POST",
                &format!("{PATH}?pos={}", crate::harness::urlencode(p)),
                Some(token),
                Some(req.clone()),
            )
            .await;
        assert_eq!(
            (status, body["errcode"].as_str()),
            (400, Some("M_UNKNOWN_POS")),
            "{p}: {body}"
        );
    }
    // Another conn_id is another connection.
    let mut other = req.clone();
    other["conn_id"] = "other".into();
    let (status, _) = server
        .req(
            "POST",
            &format!("{PATH}?pos={}", crate::harness::urlencode(&p5)),
            Some(&alice),
            Some(other),
        )
        .await;
    assert_eq!(status, 400);
    // A sliding `pos` pages `/messages` like a `next_batch`.
    let page = server
        .ok(
            "GET",
            &format!(
                "/_matrix/client/v3/rooms/{a}/messages?dir=b&limit=1&from={}",
                crate::harness::urlencode(&p5)
            ),
            &alice,
            None,
        )
        .await;
    assert_eq!(page["chunk"][0]["content"]["body"], "to A", "{page}");
}

#[tokio::test]
async fn required_state_patterns_choose_the_state() {
    let server = crate::harness::start().await;
    let (alice_id, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let (_, carol) = server.register("carol").await;
    let room = server
        .create_room(
            &alice,
            json!({ "name": "R", "topic": "T", "preset": "public_chat" }),
        )
        .await;
    server.membership(&bob, &room, "join").await;
    server.membership(&carol, &room, "join").await;
    server.send_text(&bob, &room, "b1", "from bob").await;
    let sub = |required_state: Value, limit: u64| json!({ "room_subscriptions": { room.clone(): { "timeline_limit": limit, "required_state": required_state } } });
    let all = ss(&server, &alice, None, sub(json!([["*", "*"]]), 1)).await;
    let kinds = state_types(&all["rooms"][&room]);
    for k in [
        "m.room.create",
        "m.room.power_levels",
        "m.room.join_rules",
        "m.room.name",
        "m.room.topic",
    ] {
        assert!(
            kinds.contains(&(k.to_owned(), String::new())),
            "{k}: {kinds:?}"
        );
    }
    assert_eq!(
        kinds.iter().filter(|(t, _)| t == "m.room.member").count(),
        3
    );
    // Lazy members: the timeline's sender only; `$ME` adds the user.
    let lazy = ss(
        &server,
        &alice,
        None,
        sub(json!([["m.room.member", "$LAZY"], ["m.room.topic", ""]]), 1),
    )
    .await;
    assert_eq!(
        state_types(&lazy["rooms"][&room]),
        vec![
            ("m.room.member".to_owned(), bob_id.clone()),
            ("m.room.topic".to_owned(), String::new())
        ]
    );
    let me = ss(
        &server,
        &alice,
        None,
        sub(json!([["m.room.member", "$ME"]]), 0),
    )
    .await;
    assert_eq!(
        state_types(&me["rooms"][&room]),
        vec![("m.room.member".to_owned(), alice_id.clone())]
    );
    assert!(me["rooms"][&room]["timeline"]
        .as_array()
        .is_none_or(Vec::is_empty));
    assert_eq!(me["rooms"][&room]["limited"], true);
    // Every member of one type.
    let members = ss(
        &server,
        &alice,
        None,
        sub(json!([["m.room.member", "*"]]), 0),
    )
    .await;
    assert_eq!(state_types(&members["rooms"][&room]).len(), 3);
    // The MSC's current form: everything but the create event.
    let excl = ss(
        &server,
        &alice,
        None,
        sub(
            json!({ "include": [{}], "exclude": [{ "type": "m.room.create", "state_key": "" }] }),
            0,
        ),
    )
    .await;
    let kinds = state_types(&excl["rooms"][&room]);
    assert!(!kinds.contains(&("m.room.create".to_owned(), String::new())));
    assert!(kinds.contains(&("m.room.topic".to_owned(), String::new())));
    // A subscription to a room the user was never in is ignored.
    let (_, dave) = server.register("dave").await;
    let none = ss(&server, &dave, None, sub(json!([["*", "*"]]), 5)).await;
    assert_eq!(none["rooms"], json!({}), "{none}");
}

#[tokio::test]
async fn rooms_left_or_kicked_from_show_as_of_the_leave() {
    let server = crate::harness::start().await;
    let (alice_id, alice) = server.register("alice").await;
    let (_, bob) = server.register("bob").await;
    let kicked = server
        .create_room(&bob, json!({ "name": "K", "preset": "public_chat" }))
        .await;
    let left = server
        .create_room(&bob, json!({ "name": "L", "preset": "public_chat" }))
        .await;
    server.membership(&alice, &kicked, "join").await;
    server.membership(&alice, &left, "join").await;
    let req = json!({ "lists": { "all": { "ranges": [[0, 9]], "timeline_limit": 3,
        "required_state": [["m.room.name", ""], ["m.room.member", "$ME"]] } } });
    let first = ss(&server, &alice, None, req.clone()).await;
    assert_eq!(first["lists"]["all"]["count"], 2);
    let p1 = pos(&first);
    server
        .ok(
            "POST",
            &format!("/_matrix/client/v3/rooms/{kicked}/kick"),
            &bob,
            Some(json!({ "user_id": alice_id, "reason": "bye" })),
        )
        .await;
    server.membership(&alice, &left, "leave").await;
    // Set after the leave: never shown to alice.
    for room in [&kicked, &left] {
        server
            .ok(
                "PUT",
                &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"),
                &bob,
                Some(json!({ "name": "secret" })),
            )
            .await;
        server
            .send_text(&bob, room, &format!("s{room}"), "after")
            .await;
    }
    let second = ss(&server, &alice, Some(&p1), req.clone()).await;
    for room in [&kicked, &left] {
        let r = &second["rooms"][room];
        assert_eq!(r["membership"], "leave", "{second}");
        assert!(r.get("name").is_none(), "{r}");
        assert!(!bodies(r).contains(&"after".to_owned()), "{r}");
        let own = r["required_state"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["state_key"] == alice_id)
            .expect("own member event");
        assert_eq!(own["content"]["membership"], "leave");
    }
    assert_eq!(second["lists"]["all"]["count"], 2);
    let p2 = pos(&second);
    // Sent once.
    let third = ss(&server, &alice, Some(&p2), req.clone()).await;
    assert_eq!(third["rooms"], json!({}), "{third}");
    // A new connection lists the kick, not the room alice left herself.
    let fresh = ss(&server, &alice, None, req.clone()).await;
    assert_eq!(fresh["lists"]["all"]["count"], 1, "{fresh}");
    assert_eq!(fresh["rooms"][&kicked]["membership"], "leave");
    assert!(fresh["rooms"].get(&left).is_none());
    assert_eq!(fresh["rooms"][&kicked]["name"], "K", "{fresh}");
}

#[tokio::test]
async fn a_larger_timeline_limit_sends_more_history() {
    let server = crate::harness::start().await;
    let (_, alice) = server.register("alice").await;
    let room = server.create_room(&alice, json!({ "name": "R" })).await;
    for i in 0..6 {
        server
            .send_text(&alice, &room, &format!("t{i}"), &format!("m{i}"))
            .await;
    }
    let list = json!({ "all": { "ranges": [[0, 0]], "timeline_limit": 1, "required_state": [] } });
    let first = ss(&server, &alice, None, json!({ "lists": list })).await;
    assert_eq!(bodies(&first["rooms"][&room]), vec!["m5"]);
    assert_eq!(first["rooms"][&room]["limited"], true);
    // Element X opens the room: a subscription with a larger limit.
    let open = json!({ "lists": list, "room_subscriptions": { room.clone(): { "timeline_limit": 4, "required_state": [] } } });
    let second = ss(&server, &alice, Some(&pos(&first)), open.clone()).await;
    let r = &second["rooms"][&room];
    assert_eq!(bodies(r), vec!["m2", "m3", "m4", "m5"], "{r}");
    assert_eq!(r["expanded_timeline"], true);
    assert!(r.get("initial").is_none());
    // Nothing new since: nothing sent.
    let third = ss(&server, &alice, Some(&pos(&second)), open).await;
    assert_eq!(third["rooms"], json!({}), "{third}");
}

#[tokio::test]
async fn to_device_messages_stay_until_acknowledged() {
    let server = crate::harness::start().await;
    let (alice_id, alice) = server.register("alice").await;
    let (_, bob) = server.register("bob").await;
    let whoami = server
        .ok("GET", "/_matrix/client/v3/account/whoami", &alice, None)
        .await;
    let device = whoami["device_id"].as_str().unwrap().to_owned();
    server
        .ok(
            "PUT",
            "/_matrix/client/v3/sendToDevice/m.test/t1",
            &bob,
            Some(json!({ "messages": { alice_id.clone(): { device.clone(): { "n": 1 } } } })),
        )
        .await;
    let ext = |since: Option<&str>| {
        let mut td = json!({ "enabled": true });
        if let Some(s) = since {
            td["since"] = s.into();
        }
        json!({ "extensions": { "to_device": td } })
    };
    let first = ss(&server, &alice, None, ext(None)).await;
    let td = &first["extensions"]["to_device"];
    assert_eq!(td["events"][0]["content"]["n"], 1, "{first}");
    let next = td["next_batch"].as_str().unwrap().to_owned();
    // Not acknowledged (no `since`): sent again.
    let again = ss(&server, &alice, None, ext(None)).await;
    assert_eq!(
        again["extensions"]["to_device"]["events"][0]["content"]["n"],
        1
    );
    // Acknowledged: gone, and a new one follows.
    server
        .ok(
            "PUT",
            "/_matrix/client/v3/sendToDevice/m.test/t2",
            &bob,
            Some(json!({ "messages": { alice_id.clone(): { device.clone(): { "n": 2 } } } })),
        )
        .await;
    // (`again` replaced the first connection: same `conn_id`.)
    let acked = ss(&server, &alice, Some(&pos(&again)), ext(Some(&next))).await;
    let events = acked["extensions"]["to_device"]["events"]
        .as_array()
        .unwrap();
    assert_eq!(events.len(), 1, "{acked}");
    assert_eq!(events[0]["content"]["n"], 2);
}

#[tokio::test]
async fn bad_sliding_sync_requests_are_refused() {
    let server = crate::harness::start().await;
    let (_, alice) = server.register("alice").await;
    let lists: serde_json::Map<String, Value> = (0..101)
        .map(|i| {
            (
                format!("l{i}"),
                json!({ "timeline_limit": 1, "required_state": [] }),
            )
        })
        .collect();
    let subs: serde_json::Map<String, Value> = (0..101)
        .map(|i| {
            (
                format!("!r{i}:localhost"),
                json!({ "timeline_limit": 1, "required_state": [] }),
            )
        })
        .collect();
    for (body, code) in [
        (json!({ "lists": lists }), "M_INVALID_PARAM"),
        (json!({ "room_subscriptions": subs }), "M_INVALID_PARAM"),
        (
            json!({ "lists": { "a": { "ranges": [[9, 1]], "timeline_limit": 1 } } }),
            "M_INVALID_PARAM",
        ),
        (json!({ "lists": { "a": { "ranges": "x" } } }), "M_BAD_JSON"),
        (
            json!({ "lists": { "a": { "timeline_limit": 1, "required_state": [["m.room.name", "\u{0}"]] } } }),
            "M_INVALID_PARAM",
        ),
        (
            json!({ "extensions": { "to_device": { "enabled": true, "since": "nope" } } }),
            "M_INVALID_PARAM",
        ),
    ] {
        let (status, err) = server
            .req("POST", PATH, Some(&alice), Some(body.clone()))
            .await;
        assert_eq!(
            (status, err["errcode"].as_str()),
            (400, Some(code)),
            "{body}: {err}"
        );
    }
    let (status, _, err) = server
        .req_raw("POST", PATH, Some(&alice), Some(b"{not json".to_vec()))
        .await;
    assert_eq!(status, 400, "{err}");
    let (status, err) = server
        .req(
            "POST",
            &format!("{PATH}?set_presence=dancing"),
            Some(&alice),
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (status, err["errcode"].as_str()),
        (400, Some("M_INVALID_PARAM"))
    );
    // Huge numbers are bounded, not overflowed; unknown extensions are left out.
    let body = ss(
        &server,
        &alice,
        None,
        json!({ "lists": { "a": { "ranges": [[0, u64::MAX]], "timeline_limit": u64::MAX, "required_state": [] } },
                "extensions": { "org.example.unknown": { "enabled": true } } }),
    )
    .await;
    assert_eq!(body["lists"]["a"]["count"], 0);
    let (status, _) = server.req("POST", PATH, None, Some(json!({}))).await;
    assert_eq!(status, 401);
    // Advertised.
    let versions = server
        .ok("GET", "/_matrix/client/versions", &alice, None)
        .await;
    assert_eq!(
        versions["unstable_features"]["org.matrix.simplified_msc3575"],
        true
    );
}
