//! Relations, edits, reactions, references and threads (spec: "Forming relationships
//! between events", "Threading", "Event replacements", "Event annotations and reactions").

use serde_json::{json, Value};

use crate::harness::{self, urlencode, TestServer};

/// Sends `content` as `kind`; returns (status, body).
async fn send(
    server: &TestServer,
    token: &str,
    room: &str,
    kind: &str,
    txn: &str,
    content: Value,
) -> (u16, Value) {
    server
        .req(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/send/{kind}/{txn}"),
            Some(token),
            Some(content),
        )
        .await
}

async fn send_ok(
    server: &TestServer,
    token: &str,
    room: &str,
    kind: &str,
    txn: &str,
    content: Value,
) -> String {
    let (status, body) = send(server, token, room, kind, txn, content).await;
    assert_eq!(status, 200, "{body}");
    body["event_id"].as_str().unwrap().to_owned()
}

fn edit(of: &str, body: &str) -> Value {
    json!({
        "msgtype": "m.text", "body": format!("* {body}"),
        "m.new_content": { "msgtype": "m.text", "body": body },
        "m.relates_to": { "rel_type": "m.replace", "event_id": of },
    })
}

fn in_thread(root: &str, body: &str) -> Value {
    json!({
        "msgtype": "m.text", "body": body,
        "m.relates_to": { "rel_type": "m.thread", "event_id": root, "is_falling_back": true,
                          "m.in_reply_to": { "event_id": root } },
    })
}

async fn event(server: &TestServer, token: &str, room: &str, id: &str) -> Value {
    server
        .ok(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/event/{}", urlencode(id)),
            token,
            None,
        )
        .await
}

/// `GET /relations/{id}{rest}`.
async fn relations(server: &TestServer, token: &str, room: &str, id: &str, rest: &str) -> Value {
    server
        .ok(
            "GET",
            &format!(
                "/_matrix/client/v1/rooms/{room}/relations/{}{rest}",
                urlencode(id)
            ),
            token,
            None,
        )
        .await
}

fn ids(body: &Value) -> Vec<String> {
    body["chunk"]
        .as_array()
        .expect("chunk")
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn edits_reactions_and_references_are_bundled_and_listed() {
    let server = harness::start().await;
    let (_, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let room = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    server.membership(&bob, &room, "join").await;
    let msg = server.send_text(&alice, &room, "m1", "I like cake").await;
    let plain = server.send_text(&alice, &room, "m2", "no children").await;
    let e1 = send_ok(
        &server,
        &alice,
        &room,
        "m.room.message",
        "e1",
        edit(&msg, "I like tea"),
    )
    .await;
    let e2 = send_ok(
        &server,
        &alice,
        &room,
        "m.room.message",
        "e2",
        edit(&msg, "I like pie"),
    )
    .await;
    // Bob may not edit Alice's message: listed, never the bundled edit.
    let forged = send_ok(
        &server,
        &bob,
        &room,
        "m.room.message",
        "f1",
        edit(&msg, "I hate cake"),
    )
    .await;
    let reaction =
        json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": msg, "key": "👍" } });
    let r1 = send_ok(&server, &bob, &room, "m.reaction", "r1", reaction.clone()).await;
    // A retried transaction is no duplicate; a new one is.
    assert_eq!(
        send_ok(&server, &bob, &room, "m.reaction", "r1", reaction.clone()).await,
        r1
    );
    let (status, body) = send(&server, &bob, &room, "m.reaction", "r2", reaction.clone()).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (400, Some("M_DUPLICATE_ANNOTATION")),
        "{body}"
    );
    let reference = send_ok(
        &server,
        &bob,
        &room,
        "m.room.message",
        "ref",
        json!({ "msgtype": "m.text", "body": "see above",
                "m.relates_to": { "rel_type": "m.reference", "event_id": msg } }),
    )
    .await;

    // A relation no engine could index (a NUL, a parent ID longer than the spec allows)
    // is no relation: the event itself is stored all the same.
    let long_parent = format!("${}", "a".repeat(3000));
    for (txn, parent) in [("n1", "$a\u{0}b".to_owned()), ("n2", long_parent)] {
        let content = json!({ "msgtype": "m.text", "body": "odd",
                              "m.relates_to": { "rel_type": "m.reference", "event_id": parent } });
        send_ok(&server, &bob, &room, "m.room.message", txn, content).await;
    }
    let content = json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": msg, "key": "k".repeat(2000) } });
    send_ok(&server, &bob, &room, "m.reaction", "n3", content).await;

    // `/event`: the latest valid edit in full, the references; annotations are not bundled.
    let ev = event(&server, &bob, &room, &msg).await;
    let rels = &ev["unsigned"]["m.relations"];
    assert_eq!(rels["m.replace"]["event_id"], e2.as_str(), "{ev}");
    assert_eq!(
        rels["m.replace"]["content"]["m.new_content"]["body"],
        "I like pie"
    );
    assert_eq!(rels["m.replace"]["room_id"], room.as_str());
    assert_eq!(
        rels["m.reference"]["chunk"],
        json!([{ "event_id": reference }])
    );
    assert!(rels.get("m.annotation").is_none(), "{rels}");
    // The original content is left as it was (spec, v1.7).
    assert_eq!(ev["content"]["body"], "I like cake");
    let ev = event(&server, &bob, &room, &plain).await;
    assert!(ev["unsigned"].get("m.relations").is_none(), "{ev}");

    // `/messages` and `/sync` bundle the same.
    let page = server
        .ok(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50"),
            &bob,
            None,
        )
        .await;
    let original = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_id"] == msg.as_str())
        .unwrap();
    assert_eq!(
        original["unsigned"]["m.relations"]["m.replace"]["event_id"],
        e2.as_str()
    );
    let sync = harness::sync(&server, &bob, "").await;
    let timeline = sync["rooms"]["join"][&room]["timeline"]["events"]
        .as_array()
        .unwrap();
    let original = timeline
        .iter()
        .find(|e| e["event_id"] == msg.as_str())
        .expect("in the timeline");
    let edit_json = &original["unsigned"]["m.relations"]["m.replace"];
    assert_eq!(edit_json["event_id"], e2.as_str(), "{original}");
    // Within a sync, events are in the format without `room_id`.
    assert!(edit_json.get("room_id").is_none(), "{edit_json}");

    // `/relations`: newest first, paginated with `next_batch`, filtered by type.
    let all = relations(&server, &bob, &room, &msg, "").await;
    assert_eq!(
        ids(&all),
        [&reference, &r1, &forged, &e2, &e1].map(|s| s.to_string())
    );
    assert!(
        all.get("next_batch").is_none() && all.get("recursion_depth").is_none(),
        "{all}"
    );
    let page1 = relations(&server, &bob, &room, &msg, "?limit=2").await;
    assert_eq!(ids(&page1), [reference.clone(), r1.clone()]);
    let next = page1["next_batch"].as_str().expect("next_batch");
    let page2 = relations(&server, &bob, &room, &msg, &format!("?limit=2&from={next}")).await;
    assert_eq!(ids(&page2), [forged.clone(), e2.clone()]);
    assert_eq!(page2["prev_batch"], next);
    let next = page2["next_batch"].as_str().expect("next_batch");
    let page3 = relations(&server, &bob, &room, &msg, &format!("?limit=2&from={next}")).await;
    assert_eq!(ids(&page3), vec![e1.clone()]);
    assert!(page3.get("next_batch").is_none(), "{page3}");
    let forward = relations(&server, &bob, &room, &msg, "/m.replace?dir=f").await;
    assert_eq!(ids(&forward), [e1.clone(), e2.clone(), forged.clone()]);
    let typed = relations(&server, &bob, &room, &msg, "/m.annotation/m.reaction").await;
    assert_eq!(ids(&typed), vec![r1.clone()]);
    let none = relations(&server, &bob, &room, &msg, "/m.annotation/m.room.message").await;
    assert_eq!(ids(&none), Vec::<String>::new());

    // Redacting the latest edit falls back to the one before; a redacted reaction leaves
    // the list and may be sent again.
    let redact = |target: String, txn: &'static str, token: String| {
        let server = &server;
        let room = room.clone();
        async move {
            server
                .ok(
                    "PUT",
                    &format!(
                        "/_matrix/client/v3/rooms/{room}/redact/{}/{txn}",
                        urlencode(&target)
                    ),
                    &token,
                    Some(json!({})),
                )
                .await
        }
    };
    redact(e2.clone(), "x1", alice.clone()).await;
    let ev = event(&server, &bob, &room, &msg).await;
    assert_eq!(
        ev["unsigned"]["m.relations"]["m.replace"]["event_id"],
        e1.as_str(),
        "{ev}"
    );
    redact(r1.clone(), "x2", bob.clone()).await;
    let typed = relations(&server, &bob, &room, &msg, "/m.annotation").await;
    assert_eq!(ids(&typed), Vec::<String>::new());
    send_ok(&server, &bob, &room, "m.reaction", "r3", reaction).await;
    // A redacted original bundles no edit (spec: "Redactions of edited events").
    redact(msg.clone(), "x3", alice.clone()).await;
    let ev = event(&server, &bob, &room, &msg).await;
    assert!(
        ev["unsigned"]["m.relations"].get("m.replace").is_none(),
        "{ev}"
    );
    let _ = bob_id;
}

#[tokio::test]
async fn threads_are_aggregated_and_listed_by_activity() {
    let server = harness::start().await;
    let (alice_id, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let (_, carol) = server.register("carol").await;
    let room = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    server.membership(&bob, &room, "join").await;
    server.membership(&carol, &room, "join").await;
    let t1 = server.send_text(&alice, &room, "t1", "first root").await;
    let t2 = server.send_text(&alice, &room, "t2", "second root").await;
    let a = send_ok(
        &server,
        &alice,
        &room,
        "m.room.message",
        "a",
        in_thread(&t1, "one"),
    )
    .await;
    // A thread off an event that relates to another is refused (spec: 400 M_UNKNOWN).
    let (status, body) = send(
        &server,
        &bob,
        &room,
        "m.room.message",
        "bad",
        in_thread(&a, "no"),
    )
    .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (400, Some("M_UNKNOWN")),
        "{body}"
    );
    send_ok(
        &server,
        &bob,
        &room,
        "m.room.message",
        "b",
        in_thread(&t2, "two"),
    )
    .await;

    let thread = |ev: &Value| ev["unsigned"]["m.relations"]["m.thread"].clone();
    let root = event(&server, &alice, &room, &t1).await;
    let th = thread(&root);
    assert_eq!(
        (
            th["count"].as_i64(),
            th["current_user_participated"].as_bool()
        ),
        (Some(1), Some(true)),
        "{root}"
    );
    assert_eq!(th["latest_event"]["event_id"], a.as_str());
    assert_eq!(th["latest_event"]["room_id"], room.as_str());
    // Bob took no part in t1: not the sender of the root, nor of a reply.
    assert_eq!(
        thread(&event(&server, &bob, &room, &t1).await)["current_user_participated"],
        false
    );

    // The latest reply is bundled with its own edit.
    let a_edit = send_ok(
        &server,
        &alice,
        &room,
        "m.room.message",
        "ae",
        edit(&a, "one, edited"),
    )
    .await;
    let th = thread(&event(&server, &bob, &room, &t1).await);
    assert_eq!(
        th["latest_event"]["unsigned"]["m.relations"]["m.replace"]["event_id"],
        a_edit.as_str(),
        "{th}"
    );
    let c = send_ok(
        &server,
        &bob,
        &room,
        "m.room.message",
        "c",
        in_thread(&t1, "three"),
    )
    .await;
    let th = thread(&event(&server, &bob, &room, &t1).await);
    assert_eq!(
        (
            th["count"].as_i64(),
            th["current_user_participated"].as_bool()
        ),
        (Some(2), Some(true)),
        "{th}"
    );
    assert_eq!(th["latest_event"]["event_id"], c.as_str());

    // `/threads`: latest activity first; `participated` only those one started or replied in.
    let threads = |token: String, query: &'static str| {
        let server = &server;
        let room = room.clone();
        async move {
            server
                .ok(
                    "GET",
                    &format!("/_matrix/client/v1/rooms/{room}/threads{query}"),
                    &token,
                    None,
                )
                .await
        }
    };
    let all = threads(carol.clone(), "").await;
    assert_eq!(ids(&all), [t1.clone(), t2.clone()], "{all}");
    assert_eq!(
        thread(&all["chunk"][0])["latest_event"]["event_id"],
        c.as_str()
    );
    let page = threads(carol.clone(), "?limit=1").await;
    assert_eq!(ids(&page), vec![t1.clone()]);
    let next = page["next_batch"].as_str().expect("next_batch").to_owned();
    let page = server
        .ok(
            "GET",
            &format!("/_matrix/client/v1/rooms/{room}/threads?limit=1&from={next}"),
            &carol,
            None,
        )
        .await;
    assert_eq!(ids(&page), vec![t2.clone()]);
    assert!(page.get("next_batch").is_none(), "{page}");
    assert_eq!(
        ids(&threads(carol.clone(), "?include=participated").await),
        Vec::<String>::new()
    );
    assert_eq!(
        ids(&threads(bob.clone(), "?include=participated").await),
        [t1.clone(), t2.clone()]
    );
    // A reply moves its thread to the top.
    send_ok(
        &server,
        &alice,
        &room,
        "m.room.message",
        "d",
        in_thread(&t2, "four"),
    )
    .await;
    assert_eq!(
        ids(&threads(carol.clone(), "").await),
        [t2.clone(), t1.clone()]
    );

    // `recurse` also lists the edit of a reply, and says how deep it went.
    let direct = relations(&server, &bob, &room, &t1, "").await;
    assert_eq!(ids(&direct), [c.clone(), a.clone()]);
    let deep = relations(&server, &bob, &room, &t1, "?recurse=true").await;
    assert_eq!(ids(&deep), [c.clone(), a_edit.clone(), a.clone()], "{deep}");
    assert!(
        deep["recursion_depth"]
            .as_u64()
            .is_some_and(|d| (1..=3).contains(&d)),
        "{deep}"
    );
    let deep = relations(&server, &bob, &room, &t1, "/m.thread?recurse=true").await;
    assert_eq!(ids(&deep), [c.clone(), a.clone()]);

    // A user who left sees nothing of the thread sent after: not in the count, not listed.
    server.membership(&carol, &room, "leave").await;
    let e = send_ok(
        &server,
        &alice,
        &room,
        "m.room.message",
        "e",
        in_thread(&t1, "five"),
    )
    .await;
    let th = thread(&event(&server, &carol, &room, &t1).await);
    assert_eq!(
        (
            th["count"].as_i64(),
            th["latest_event"]["event_id"].as_str()
        ),
        (Some(2), Some(c.as_str())),
        "{th}"
    );
    assert_eq!(
        ids(&relations(&server, &carol, &room, &t1, "").await),
        [c.clone(), a.clone()]
    );
    assert_eq!(
        thread(&event(&server, &bob, &room, &t1).await)["latest_event"]["event_id"],
        e.as_str()
    );

    // Unknown or hidden parents are 404.
    let (status, body) = server
        .req(
            "GET",
            &format!(
                "/_matrix/client/v1/rooms/{room}/relations/{}",
                urlencode("$nope")
            ),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (404, Some("M_NOT_FOUND")),
        "{body}"
    );
    let _ = (alice_id, bob_id);
}
