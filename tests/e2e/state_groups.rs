//! State groups (`core/src/rooms/state.rs`): a room whose state grows one event at a time
//! writes rows in proportion to the changes, not a full copy of its state every few
//! events, and every group reads back right from the database alone. Both engines.

use serde_json::json;

use crate::harness::{self, urlencode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_groups_grow_with_the_changes_and_read_back_whole() {
    // Enough state events for full copies and root deltas alike (32-step chains).
    const EVENTS: usize = 1500;
    let mut server = harness::start().await;
    let (_, alice) = server.register("alice").await;
    let room = server
        .create_room(&alice, json!({ "preset": "private_chat" }))
        .await;
    let mut ids = Vec::new();
    for i in 0..EVENTS {
        let body = server
            .ok(
                "PUT",
                &format!(
                    "/_matrix/client/v3/rooms/{}/state/org.test.s/k{i}",
                    urlencode(&room)
                ),
                &alice,
                Some(json!({ "i": i })),
            )
            .await;
        ids.push(body["event_id"].as_str().expect("event_id").to_owned());
    }
    let rows = server
        .hs()
        .db
        .query(
            "SELECT COUNT(*) FROM state_group_entries e JOIN state_groups g ON g.group_id = e.group_id
             WHERE g.room_id = $1",
            vec![room.as_str().into()],
        )
        .await
        .expect("count");
    let rows = rows[0].int(0).expect("count");
    // One row per change, plus root deltas and full copies every 8·√n or so: O(√n) rows
    // per event. A full copy every 32 steps would be about EVENTS² / 64 (35,000 here).
    let n = EVENTS as i64;
    eprintln!("{rows} rows for {n} state events");
    assert!(rows < n * n / 128, "{rows} rows for {n} state events");

    // From the database alone: every group is rebuilt through whatever chain it is on.
    server.restart().await;
    let hs = server.hs();
    for (i, id) in ids.iter().enumerate().rev().step_by(7) {
        let event_id = ruma::EventId::parse(id).expect("event id");
        let place = hs
            .event_place(&event_id)
            .await
            .expect("place")
            .expect("stored");
        let (state, _) = hs.state_group(place.state_after).await.expect("group");
        let ours: Vec<_> = state
            .iter()
            .filter(|((kind, _), _)| kind.to_string() == "org.test.s")
            .collect();
        assert_eq!(ours.len(), i + 1, "event {i}");
        let mine = (
            ruma::events::StateEventType::from("org.test.s"),
            format!("k{i}"),
        );
        assert_eq!(
            state.get(&mine).map(|e| e.as_str()),
            Some(id.as_str()),
            "event {i}"
        );
        for j in [0, i / 2] {
            let key = (
                ruma::events::StateEventType::from("org.test.s"),
                format!("k{j}"),
            );
            assert_eq!(
                state.get(&key).map(|e| e.as_str()),
                Some(ids[j].as_str()),
                "{i}/{j}"
            );
        }
    }
    server.stop().await;
}
