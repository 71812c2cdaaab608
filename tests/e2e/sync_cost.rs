//! An incremental `/sync` costs what changed, not what the account holds (issue 8): the
//! same database statements for an account in 10 rooms as in 100, whether one room
//! changed or none did; device-list changes kept to one row per user. Counts, not
//! timings. Both engines.

use serde_json::{json, Value};

use crate::harness::{self, next_batch, sync, Options};

fn joined(body: &Value) -> Vec<String> {
    body["rooms"]["join"]
        .as_object()
        .map(|rooms| rooms.keys().cloned().collect())
        .unwrap_or_default()
}

/// Statements (and their SQL) of an incremental sync after one message in one of
/// `rooms` rooms, then of one after nothing.
async fn incremental_statements(rooms: usize) -> ((u32, Vec<String>), (u32, Vec<String>)) {
    let (server, statements) = harness::start_counted(Options::default()).await;
    let (_, alice) = server.register("alice").await;
    let (_, bob) = server.register("bob").await;
    let mut ids = Vec::new();
    for _ in 0..rooms {
        let room = server
            .create_room(&alice, json!({ "preset": "public_chat" }))
            .await;
        server.membership(&bob, &room, "join").await;
        ids.push(room);
    }
    // As a client does: a full sync, then one incremental round so that whatever a first
    // incremental sync sets up (presence, caches) is behind us.
    let body = sync(&server, &alice, "timeout=0").await;
    assert_eq!(joined(&body).len(), rooms);
    server.send_text(&bob, &ids[0], "warm", "warm-up").await;
    let body = sync(
        &server,
        &alice,
        &format!("since={}&timeout=0", next_batch(&body)),
    )
    .await;
    let mut since = next_batch(&body);

    let target = &ids[rooms / 2];
    server.send_text(&bob, target, "t1", "hello").await;
    let (changed, changed_sql, body) = statements
        .during(sync(&server, &alice, &format!("since={since}&timeout=0")))
        .await;
    assert_eq!(joined(&body), vec![target.clone()], "{body}");
    assert_eq!(
        body["rooms"]["join"][target]["timeline"]["events"][0]["content"]["body"],
        "hello"
    );
    since = next_batch(&body);

    let (unchanged, unchanged_sql, body) = statements
        .during(sync(&server, &alice, &format!("since={since}&timeout=0")))
        .await;
    assert!(joined(&body).is_empty(), "{body}");
    server.stop().await;
    ((changed, changed_sql), (unchanged, unchanged_sql))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_sync_statements_do_not_grow_with_rooms() {
    let (changed_10, unchanged_10) = incremental_statements(10).await;
    let (changed_100, unchanged_100) = incremental_statements(100).await;
    assert_eq!(
        changed_10.0, changed_100.0,
        "one room changed: 10 rooms ran {:#?}\n100 rooms ran {:#?}",
        changed_10.1, changed_100.1
    );
    assert_eq!(
        unchanged_10.0, unchanged_100.0,
        "nothing changed: 10 rooms ran {:#?}\n100 rooms ran {:#?}",
        unchanged_10.1, unchanged_100.1
    );
    eprintln!(
        "statements: one room changed {}, nothing changed {}: {:#?}",
        changed_100.0, unchanged_100.0, changed_100.1
    );
    // And few: a handful of reads, not one per room.
    assert!(changed_100.0 <= 12, "{:#?}", changed_100.1);
}

/// Every new device's keys are a device-list change; only the latest per user is kept,
/// and a room-mate who synced before all of them still learns of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_list_changes_keep_one_row_per_user() {
    let server = harness::start().await;
    let (alice_id, alice) = server.register("alice").await;
    let (_, bob) = server.register("bob").await;
    let room = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    server.membership(&bob, &room, "join").await;
    let since = next_batch(&sync(&server, &bob, "timeout=0").await);

    for _ in 0..3 {
        let device = server.sdk_client("alice").await;
        // The first sync uploads the new device's keys.
        device
            .sync_once(
                matrix_sdk::config::SyncSettings::default()
                    .timeout(std::time::Duration::from_secs(0)),
            )
            .await
            .expect("sync");
    }
    let rows = server
        .hs()
        .db
        .query(
            "SELECT COUNT(*) FROM device_list_changes WHERE user_id = $1",
            vec![alice_id.as_str().into()],
        )
        .await
        .expect("count");
    assert_eq!(rows[0].int(0).expect("count"), 1);

    let body = sync(&server, &bob, &format!("since={since}&timeout=0")).await;
    assert_eq!(body["device_lists"]["changed"], json!([alice_id]), "{body}");
    server.stop().await;
}

/// A full sync reads the first page of its rooms' timelines many rooms per statement,
/// and each room still gets exactly its newest events and its own `limited`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sync_reads_timelines_many_rooms_at_once() {
    const ROOMS: usize = 40;
    let (server, statements) = harness::start_counted(Options::default()).await;
    let (_, alice) = server.register("alice").await;
    let mut ids = Vec::new();
    for i in 0..ROOMS {
        let room = server
            .create_room(&alice, json!({ "preset": "private_chat" }))
            .await;
        // Rooms of different lengths: some fit in the timeline, some do not.
        for n in 0..(i % 4) * 3 {
            server
                .send_text(&alice, &room, &format!("r{i}m{n}"), &format!("{i}/{n}"))
                .await;
        }
        ids.push(room);
    }
    let filter = harness::urlencode(r#"{"room":{"timeline":{"limit":8}}}"#);
    let (_, sql, body) = statements
        .during(sync(&server, &alice, &format!("timeout=0&filter={filter}")))
        .await;
    assert_eq!(joined(&body).len(), ROOMS);
    let per_room = sql
        .iter()
        .filter(|s| s.starts_with("SELECT event_id, json, stream_pos"))
        .count();
    let many = sql
        .iter()
        .filter(|s| s.starts_with("SELECT * FROM (SELECT room_id, event_id, json"))
        .count();
    assert_eq!(per_room, 0, "{sql:#?}");
    assert!(
        many <= 2,
        "40 rooms in {many} timeline statements: {sql:#?}"
    );
    for room in &ids {
        let timeline = &body["rooms"]["join"][room]["timeline"];
        let got: Vec<&str> = timeline["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| e["event_id"].as_str().expect("event_id"))
            .collect();
        // The same newest events, oldest first, as paginating back from the end.
        let page = server
            .ok(
                "GET",
                &format!(
                    "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=9",
                    harness::urlencode(room)
                ),
                &alice,
                None,
            )
            .await;
        let mut newest: Vec<&str> = page["chunk"]
            .as_array()
            .expect("chunk")
            .iter()
            .map(|e| e["event_id"].as_str().expect("event_id"))
            .collect();
        let limited = newest.len() > 8;
        newest.truncate(8);
        newest.reverse();
        assert_eq!(got, newest, "{room}");
        assert_eq!(timeline["limited"], limited, "{room}: {timeline}");
    }
    server.stop().await;
}
