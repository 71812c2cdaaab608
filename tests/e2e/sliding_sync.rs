//! Simplified sliding sync (MSC4186, the `org.matrix.simplified_msc3575` endpoint):
//! what Element X shows through matrix-sdk-ui's `SyncService`, `RoomListService` and
//! `Timeline` (a client that only ever uses sliding sync, discovered from `/versions`),
//! and the protocol's edges through raw HTTP: unread counts as `/v3/sync` has them,
//! the typing and receipts extensions, and connections across a restart.

use std::{
    future::Future,
    time::{Duration, Instant},
};

use futures_util::{Stream, StreamExt};
use matrix_sdk::{
    config::SyncSettings,
    ruma::{
        api::client::room::create_room::v3::Request as CreateRoom,
        events::{
            room::{
                encryption::RoomEncryptionEventContent, member::MembershipState,
                message::RoomMessageEventContent,
            },
            InitialStateEvent,
        },
        OwnedRoomId, OwnedUserId, RoomId,
    },
    sliding_sync::{Version, VersionBuilder},
    Client, Room, RoomState,
};
use matrix_sdk_ui::{
    eyeball_im::{Vector, VectorDiff},
    room_list_service::{filters::new_filter_non_left, RoomListItem},
    sync_service::SyncService,
    timeline::{EventTimelineItem, RoomExt, Timeline},
};
use serde_json::{json, Value};

use crate::harness::{self, urlencode, TestServer};

/// How long any condition may take to come true.
const WAIT: Duration = Duration::from_secs(20);

const SLIDING_SYNC: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

/// A matrix-sdk client that must discover sliding sync from `/versions`, logged in.
async fn sliding_client(server: &TestServer, name: &str) -> Client {
    let client = Client::builder()
        .homeserver_url(&server.url)
        .sliding_sync_version_builder(VersionBuilder::DiscoverNative)
        .build()
        .await
        .expect("the server advertises org.matrix.simplified_msc3575 in /versions");
    assert!(
        matches!(client.sliding_sync_version(), Version::Native),
        "{:?}",
        client.sliding_sync_version()
    );
    client
        .matrix_auth()
        .login_username(name, "correct horse battery")
        .send()
        .await
        .expect("login");
    client
}

/// Element X's sync: the room list and the encryption connections, started.
async fn start_sync_service(client: &Client) -> SyncService {
    let service = SyncService::builder(client.clone())
        .build()
        .await
        .expect("sync service");
    service.start().await;
    service
}

/// Polls `f` until it gives a value, for at most [`WAIT`].
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The room list as the dynamic-adapters stream shows it, kept up to date.
struct RoomListWatch<S> {
    stream: S,
    rooms: Vector<RoomListItem>,
}

impl<S> RoomListWatch<S>
where
    S: Stream<Item = Vec<VectorDiff<RoomListItem>>> + Unpin,
{
    /// Applies the stream's diffs until `pred` holds of the list, for at most [`WAIT`].
    async fn until(&mut self, what: &str, pred: impl Fn(&Vector<RoomListItem>) -> bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            if pred(&self.rooms) {
                return;
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "timed out waiting for {what}; the list: {:?}",
                self.describe()
            );
            // Room states are read live, so look again now and then even without a diff.
            let step = (deadline - now).min(Duration::from_millis(250));
            match tokio::time::timeout(step, self.stream.next()).await {
                Ok(Some(diffs)) => {
                    for diff in diffs {
                        diff.apply(&mut self.rooms);
                    }
                }
                Ok(None) => panic!("the room list stream ended while waiting for {what}"),
                Err(_) => {}
            }
        }
    }

    fn describe(&self) -> Vec<(String, RoomState)> {
        self.rooms
            .iter()
            .map(|r| (r.room_id().to_string(), r.state()))
            .collect()
    }
}

/// The room IDs of `rooms`, in list order, restricted to `among`.
fn order(rooms: &Vector<RoomListItem>, among: &[&OwnedRoomId]) -> Vec<OwnedRoomId> {
    rooms
        .iter()
        .map(|r| r.room_id().to_owned())
        .filter(|id| among.contains(&id))
        .collect()
}

fn state_of(rooms: &Vector<RoomListItem>, id: &RoomId) -> Option<RoomState> {
    rooms.iter().find(|r| r.room_id() == id).map(|r| r.state())
}

fn room_id(s: &str) -> OwnedRoomId {
    OwnedRoomId::try_from(s).expect("room id")
}

/// `PUT /rooms/{room}/send/{kind}/{txn}`; returns the event ID.
async fn send(
    server: &TestServer,
    token: &str,
    room: &str,
    kind: &str,
    txn: &str,
    content: Value,
) -> String {
    server
        .ok(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/send/{kind}/{txn}"),
            token,
            Some(content),
        )
        .await["event_id"]
        .as_str()
        .expect("event_id")
        .to_owned()
}

async fn read_receipt(server: &TestServer, token: &str, room: &str, event: &str) {
    server
        .ok(
            "POST",
            &format!(
                "/_matrix/client/v3/rooms/{room}/receipt/m.read/{}",
                urlencode(event)
            ),
            token,
            Some(json!({})),
        )
        .await;
}

/// A raw sliding sync request; returns the status and body.
async fn sliding_sync(
    server: &TestServer,
    token: &str,
    pos: Option<&str>,
    timeout_ms: u64,
    body: Value,
) -> (u16, Value) {
    let path = match pos {
        Some(pos) => format!("{SLIDING_SYNC}?pos={}&timeout={timeout_ms}", urlencode(pos)),
        None => format!("{SLIDING_SYNC}?timeout={timeout_ms}"),
    };
    server.req("POST", &path, Some(token), Some(body)).await
}

/// A raw sliding sync request that must succeed; returns the body.
async fn sliding_sync_ok(
    server: &TestServer,
    token: &str,
    pos: Option<&str>,
    timeout_ms: u64,
    body: Value,
) -> Value {
    let (status, resp) = sliding_sync(server, token, pos, timeout_ms, body.clone()).await;
    assert_eq!(
        status, 200,
        "sliding sync pos={pos:?} request {body} answered {resp}"
    );
    assert!(resp["pos"].is_string(), "no pos in {resp}");
    resp
}

fn pos(body: &Value) -> String {
    body["pos"].as_str().expect("pos").to_owned()
}

fn assert_unknown_pos(status: u16, body: &Value, what: &str) {
    assert_eq!(status, 400, "{what}: {body}");
    assert_eq!(body["errcode"], "M_UNKNOWN_POS", "{what}: {body}");
}

/// The message bodies of a timeline, oldest first.
async fn message_items(timeline: &Timeline) -> Vec<EventTimelineItem> {
    timeline
        .items()
        .await
        .iter()
        .filter_map(|i| i.as_event().cloned())
        .filter(|e| e.content().as_message().is_some())
        .collect()
}

fn body_of(item: &EventTimelineItem) -> &str {
    item.content().as_message().expect("message").body()
}

/// The room as the sliding-sync client knows it, once it does.
async fn known_room(client: &Client, id: &RoomId) -> Room {
    eventually(&format!("{id} to be known to the client"), || async {
        client.get_room(id)
    })
    .await
}

#[tokio::test]
async fn room_list_is_in_recency_order_and_follows_messages_invites_and_leaves() {
    let server = harness::start().await;
    let (alice_id, alice) = server.register("alice").await;
    let (_, bob) = server.register("bob").await;
    let mut rooms = Vec::new();
    for name in ["oldest", "middle", "newest"] {
        rooms.push(
            server
                .create_room(&alice, json!({ "name": name, "preset": "private_chat" }))
                .await,
        );
    }
    for (i, room) in rooms.iter().enumerate() {
        server
            .send_text(&alice, room, &format!("m{i}"), &format!("message {i}"))
            .await;
        // Distinct origin_server_ts for the client's recency sort.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let [oldest, middle, newest] = [0, 1, 2].map(|i| room_id(&rooms[i]));

    let client = sliding_client(&server, "alice").await;
    let sync = start_sync_service(&client).await;
    let room_list_service = sync.room_list_service();
    let all_rooms = room_list_service.all_rooms().await.expect("all rooms");
    let (stream, controller) = all_rooms.entries_with_dynamic_adapters(50);
    assert!(controller.set_filter(Box::new(new_filter_non_left())));
    let mut list = RoomListWatch {
        stream: Box::pin(stream),
        rooms: Vector::new(),
    };
    let three = [&oldest, &middle, &newest];

    list.until("the three rooms, most recent first", |r| {
        order(r, &three) == [newest.clone(), middle.clone(), oldest.clone()]
    })
    .await;
    for id in three {
        assert_eq!(state_of(&list.rooms, id), Some(RoomState::Joined));
    }

    // A new message in the oldest room brings it to the top.
    server
        .send_text(&alice, &rooms[0], "m3", "back on top")
        .await;
    list.until("the oldest room to move to the top", |r| {
        order(r, &three) == [oldest.clone(), newest.clone(), middle.clone()]
    })
    .await;

    // Bob invites Alice: the room is listed as an invite.
    let invited = server
        .create_room(
            &bob,
            json!({ "name": "from bob", "preset": "private_chat", "invite": [alice_id] }),
        )
        .await;
    let invited = room_id(&invited);
    list.until("the invite to be listed", |r| {
        state_of(r, &invited) == Some(RoomState::Invited)
    })
    .await;

    // Alice accepts (from another device): it becomes a joined room.
    server.membership(&alice, invited.as_str(), "join").await;
    list.until("the accepted invite to be joined", |r| {
        state_of(r, &invited) == Some(RoomState::Joined)
    })
    .await;

    // Alice leaves the middle room: the non-left list drops it, and keeps the others.
    server.membership(&alice, &rooms[1], "leave").await;
    list.until("the left room to leave the list", |r| {
        state_of(r, &middle).is_none()
            && [&oldest, &newest, &invited]
                .iter()
                .all(|id| state_of(r, id) == Some(RoomState::Joined))
    })
    .await;
    assert_eq!(
        client.get_room(&middle).map(|r| r.state()),
        Some(RoomState::Left),
        "the client knows it left"
    );

    sync.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn sliding_sync_timeline_shows_messages_edits_reactions_and_paginates() {
    let server = harness::start().await;
    let (_, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let room = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    server.membership(&bob, &room, "join").await;
    // More history than any timeline limit the client asks for.
    for i in 0..30 {
        let token = if i % 2 == 0 { &alice } else { &bob };
        server
            .send_text(token, &room, &format!("h{i}"), &format!("history {i}"))
            .await;
    }
    let id = room_id(&room);

    let client = sliding_client(&server, "alice").await;
    let sync = start_sync_service(&client).await;
    let room_list_service = sync.room_list_service();
    let sdk_room = known_room(&client, &id).await;
    // What Element X does when it opens a room.
    room_list_service.subscribe_to_rooms(&[&id]).await;
    let timeline = sdk_room.timeline().await.expect("timeline");

    eventually("the latest message in the timeline", || async {
        message_items(&timeline)
            .await
            .iter()
            .any(|m| body_of(m) == "history 29")
            .then_some(())
    })
    .await;

    // Live: a message, its edit and a reaction arrive through sliding sync.
    let original = server.send_text(&bob, &room, "live", "helo").await;
    eventually("the new message", || async {
        message_items(&timeline)
            .await
            .iter()
            .any(|m| m.event_id().is_some_and(|e| e.as_str() == original))
            .then_some(())
    })
    .await;
    send(
        &server,
        &bob,
        &room,
        "m.room.message",
        "edit",
        json!({ "msgtype": "m.text", "body": "* hello", "m.new_content": { "msgtype": "m.text", "body": "hello" },
                "m.relates_to": { "rel_type": "m.replace", "event_id": original } }),
    )
    .await;
    send(
        &server,
        &alice,
        &room,
        "m.reaction",
        "react",
        json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": original, "key": "👍" } }),
    )
    .await;
    let alice_user = client.user_id().expect("user id").to_owned();
    let edited = eventually("the edit and the reaction", || async {
        let item = timeline
            .items()
            .await
            .iter()
            .filter_map(|i| i.as_event().cloned())
            .find(|e| e.event_id().is_some_and(|e| e.as_str() == original))?;
        let message = item.content().as_message()?;
        let reacted = item
            .content()
            .reactions()
            .and_then(|r| r.get("👍").map(|by| by.contains_key(&alice_user)))
            .unwrap_or(false);
        (message.body() == "hello" && message.is_edited() && reacted).then_some(item)
    })
    .await;
    assert_eq!(edited.sender().as_str(), bob_id);
    // The edit is not a message of its own.
    let items = message_items(&timeline).await;
    assert!(
        !items.iter().any(|m| body_of(m).starts_with('*')),
        "{:?}",
        items.iter().map(body_of).collect::<Vec<_>>()
    );

    // Back to the room's start.
    let mut reached_start = false;
    for _ in 0..20 {
        if tokio::time::timeout(WAIT, timeline.paginate_backwards(10))
            .await
            .expect("pagination answers")
            .expect("paginate")
        {
            reached_start = true;
            break;
        }
    }
    assert!(reached_start, "paginate_backwards never reached the start");
    let bodies: Vec<String> = message_items(&timeline)
        .await
        .iter()
        .map(|m| body_of(m).to_owned())
        .collect();
    let mut expected: Vec<String> = (0..30).map(|i| format!("history {i}")).collect();
    expected.push("hello".into());
    assert_eq!(bodies, expected, "every message once, oldest first");

    sync.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn encrypted_room_decrypts_on_a_sliding_sync_only_device() {
    let server = harness::start().await;
    let (alice_id, _) = server.register("alice").await;
    let (_, bob_token) = server.register("bob").await;

    // Alice's device only ever syncs with sliding sync.
    let alice = sliding_client(&server, "alice").await;
    let alice_device = alice.device_id().expect("device").to_owned();
    let sync = start_sync_service(&alice).await;
    // The encryption connection uploads her device keys.
    eventually("alice's device keys to be uploaded", || async {
        let (status, body) = server
            .req(
                "POST",
                "/_matrix/client/v3/keys/query",
                Some(&bob_token),
                Some(json!({ "device_keys": { alice_id.as_str(): [] } })),
            )
            .await;
        (status == 200 && body["device_keys"][&alice_id][alice_device.as_str()].is_object())
            .then_some(())
    })
    .await;

    // Bob, a plain /v3/sync client, creates an encrypted room and invites her.
    let bob = server.sdk_client("bob").await;
    let bob_sync = || async {
        bob.sync_once(SyncSettings::default().timeout(Duration::from_secs(0)))
            .await
            .expect("bob syncs")
    };
    bob_sync().await;
    let mut req = CreateRoom::new();
    let alice_user: OwnedUserId = alice_id.parse().unwrap();
    req.invite = vec![alice_user.clone()];
    req.initial_state = vec![InitialStateEvent::with_empty_state_key(
        RoomEncryptionEventContent::with_recommended_defaults(),
    )
    .to_raw_any()];
    let bob_room = bob.create_room(req).await.expect("create");
    let id = bob_room.room_id().to_owned();

    // Alice sees the invite through sliding sync and accepts it.
    let invite = eventually("the invite on alice's device", || async {
        alice
            .get_room(&id)
            .filter(|r| r.state() == RoomState::Invited)
    })
    .await;
    invite.join().await.expect("alice joins");
    let alice_room = eventually("the joined room on alice's device", || async {
        alice
            .get_room(&id)
            .filter(|r| r.state() == RoomState::Joined)
    })
    .await;
    sync.room_list_service().subscribe_to_rooms(&[&id]).await;
    let timeline = alice_room.timeline().await.expect("timeline");

    // Bob learns she joined, then sends to her device.
    eventually("bob to see alice joined", || async {
        bob_sync().await;
        bob_room
            .get_member_no_sync(&alice_user)
            .await
            .ok()
            .flatten()
            .filter(|m| m.membership() == &MembershipState::Join)
            .map(|_| ())
    })
    .await;
    assert!(bob_room
        .latest_encryption_state()
        .await
        .unwrap()
        .is_encrypted());
    let sent = bob_room
        .send(RoomMessageEventContent::text_plain("secret hello"))
        .await
        .expect("send")
        .response
        .event_id;
    let (_, raw) = server
        .req(
            "GET",
            &format!("/_matrix/client/v3/rooms/{id}/event/{sent}"),
            Some(&bob_token),
            None,
        )
        .await;
    assert_eq!(raw["type"], "m.room.encrypted", "ciphertext on the wire");

    // The room key arrives over the to-device extension and the timeline decrypts.
    let item = eventually("alice's timeline to show the decrypted message", || async {
        timeline
            .items()
            .await
            .iter()
            .filter_map(|i| i.as_event().cloned())
            .find(|e| {
                e.event_id() == Some(&*sent)
                    && e.content()
                        .as_message()
                        .is_some_and(|m| m.body() == "secret hello")
            })
    })
    .await;
    assert!(!item.content().is_unable_to_decrypt());
    assert!(item.encryption_info().is_some(), "decrypted, not plaintext");

    sync.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn unread_counts_match_sync_v2_and_clear_on_read_receipt() {
    let server = harness::start().await;
    let (alice_id, alice) = server.register("alice").await;
    let (_, bob) = server.register("bob").await;
    let busy = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    let quiet = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    server.membership(&bob, &busy, "join").await;
    server.membership(&bob, &quiet, "join").await;
    server.send_text(&bob, &busy, "b1", "one").await;
    server.send_text(&bob, &busy, "b2", "two").await;
    send(
        &server,
        &bob,
        &busy,
        "m.room.message",
        "b3",
        json!({ "msgtype": "m.text", "body": "alice, look", "m.mentions": { "user_ids": [alice_id] } }),
    )
    .await;
    let last = server.send_text(&bob, &busy, "b4", "three").await;
    server.send_text(&bob, &quiet, "q1", "hi").await;
    server.send_text(&alice, &quiet, "q2", "mine").await;
    let expected = [(busy.as_str(), (4, 1)), (quiet.as_str(), (1, 0))];

    // /v3/sync's counts.
    let v2 = harness::sync(&server, &alice, "").await;
    for (room, counts) in expected {
        let n = &v2["rooms"]["join"][room]["unread_notifications"];
        assert_eq!(
            (
                n["notification_count"].as_u64(),
                n["highlight_count"].as_u64()
            ),
            (Some(counts.0), Some(counts.1)),
            "/v3/sync {room}: {n}"
        );
    }

    // Sliding sync's, for the same account.
    let req = json!({
        "conn_id": "counts",
        "lists": { "all": { "ranges": [[0, 10]], "timeline_limit": 1, "required_state": [] } },
    });
    let first = sliding_sync_ok(&server, &alice, None, 0, req.clone()).await;
    assert_eq!(first["lists"]["all"]["count"], 2, "{first}");
    for (room, _) in expected {
        let v2n = &v2["rooms"]["join"][room]["unread_notifications"];
        let r = &first["rooms"][room];
        assert_eq!(
            (&r["notification_count"], &r["highlight_count"]),
            (&v2n["notification_count"], &v2n["highlight_count"]),
            "sliding sync {room}: {r}"
        );
    }

    // matrix-sdk-ui reads the same numbers.
    let client = sliding_client(&server, "alice").await;
    let sync = start_sync_service(&client).await;
    for (room, (notifications, highlights)) in expected {
        let r = known_room(&client, &room_id(room)).await;
        eventually(&format!("the sdk's counts for {room}"), || async {
            let c = r.unread_notification_counts();
            (c.notification_count == notifications && c.highlight_count == highlights).then_some(())
        })
        .await;
    }

    // A read receipt on the last event clears both counts in the next sliding sync.
    read_receipt(&server, &alice, &busy, &last).await;
    let mut since = pos(&first);
    let room = until_room(
        &server,
        &alice,
        &mut since,
        &req,
        &busy,
        "the cleared counts",
    )
    .await;
    // Both counts, zeros included: matrix-sdk reads a missing count as zero.
    assert_eq!(room["notification_count"], 0, "{room}");
    assert_eq!(room["highlight_count"], 0, "{room}");
    let v2 = harness::sync(&server, &alice, "").await;
    assert_eq!(
        v2["rooms"]["join"][&busy]["unread_notifications"]["notification_count"],
        0
    );
    let r = known_room(&client, &room_id(&busy)).await;
    eventually("the sdk's counts to clear", || async {
        let c = r.unread_notification_counts();
        (c.notification_count == 0 && c.highlight_count == 0).then_some(())
    })
    .await;

    // A room that comes down again for a new event carries its counts with it.
    server.send_text(&bob, &quiet, "q3", "again").await;
    let room = until_room(&server, &alice, &mut since, &req, &quiet, "the new message").await;
    assert_eq!(room["notification_count"], 2, "{room}");
    assert_eq!(room["highlight_count"], 0, "{room}");
    let r = known_room(&client, &room_id(&quiet)).await;
    eventually("the sdk's counts for the new message", || async {
        let c = r.unread_notification_counts();
        (c.notification_count == 2 && c.highlight_count == 0).then_some(())
    })
    .await;

    sync.stop().await;
    server.stop().await;
}

/// Incremental sliding syncs from `since` (long polls) until one carries `room` with its
/// counts; returns that room's entry and leaves `since` at the last position.
async fn until_room(
    server: &TestServer,
    token: &str,
    since: &mut String,
    req: &Value,
    room: &str,
    what: &str,
) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let inc = sliding_sync_ok(server, token, Some(since), 10_000, req.clone()).await;
        *since = pos(&inc);
        let r = &inc["rooms"][room];
        if !r["notification_count"].is_null() || !r["highlight_count"].is_null() {
            return r.clone();
        }
        assert!(
            r.is_null(),
            "{room} came down for {what} without its counts: {inc}"
        );
        assert!(
            Instant::now() < deadline,
            "no incremental sliding sync carried {room} for {what}; last: {inc}"
        );
    }
}

#[tokio::test]
async fn typing_and_receipts_arrive_through_the_extensions() {
    let server = harness::start().await;
    let (_, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let room = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    server.membership(&bob, &room, "join").await;
    let message = server.send_text(&alice, &room, "a1", "read me").await;

    let req = json!({
        "conn_id": "extensions",
        "lists": { "all": { "ranges": [[0, 10]], "timeline_limit": 1, "required_state": [] } },
        "extensions": { "typing": { "enabled": true }, "receipts": { "enabled": true } },
    });
    let first = sliding_sync_ok(&server, &alice, None, 0, req.clone()).await;
    assert!(first["rooms"][&room].is_object(), "{first}");
    let mut since = pos(&first);

    // A long poll in flight is woken by Bob's typing.
    let started = Instant::now();
    let (inc, _) = tokio::join!(
        sliding_sync_ok(&server, &alice, Some(&since), 30_000, req.clone()),
        async {
            // Let the long poll get to the server first.
            tokio::time::sleep(Duration::from_millis(300)).await;
            server
                .ok(
                    "PUT",
                    &format!(
                        "/_matrix/client/v3/rooms/{room}/typing/{}",
                        urlencode(&bob_id)
                    ),
                    &bob,
                    Some(json!({ "typing": true, "timeout": 30000 })),
                )
                .await;
        }
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the long poll was not woken by typing ({:?}): {inc}",
        started.elapsed()
    );
    let mut responses = vec![inc];
    let typing_seen = |responses: &[Value]| {
        responses.iter().any(|r| {
            r["extensions"]["typing"]["rooms"][&room]["content"]["user_ids"]
                .as_array()
                .is_some_and(|ids| ids.iter().any(|u| u == bob_id.as_str()))
        })
    };
    let receipt_seen = |responses: &[Value]| {
        responses.iter().any(|r| {
            r["extensions"]["receipts"]["rooms"][&room]["content"][&message]["m.read"][&bob_id]
                .is_object()
        })
    };

    // Bob reads the message.
    read_receipt(&server, &bob, &room, &message).await;
    let deadline = Instant::now() + WAIT;
    while !(typing_seen(&responses) && receipt_seen(&responses)) {
        assert!(
            Instant::now() < deadline,
            "typing seen: {}, receipt seen: {}; responses: {responses:?}",
            typing_seen(&responses),
            receipt_seen(&responses)
        );
        since = pos(responses.last().unwrap());
        responses.push(sliding_sync_ok(&server, &alice, Some(&since), 10_000, req.clone()).await);
    }
    let typing = responses
        .iter()
        .find_map(|r| r["extensions"]["typing"]["rooms"].get(&room))
        .unwrap();
    assert_eq!(typing["type"], "m.typing", "{typing}");
    let receipt = responses
        .iter()
        .find_map(|r| r["extensions"]["receipts"]["rooms"].get(&room))
        .unwrap();
    assert_eq!(receipt["type"], "m.receipt", "{receipt}");
    assert!(
        receipt["content"][&message]["m.read"][&bob_id]["ts"].is_u64(),
        "{receipt}"
    );

    server.stop().await;
}

#[tokio::test]
async fn a_connection_survives_a_server_restart_without_losing_a_message() {
    let mut server = harness::start().await;
    let (_, alice) = server.register("alice").await;
    let (_, bob) = server.register("bob").await;
    let room = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    server.membership(&bob, &room, "join").await;
    server.send_text(&bob, &room, "b1", "before").await;

    let req = json!({
        "conn_id": "main",
        "lists": { "all": { "ranges": [[0, 10]], "timeline_limit": 10, "required_state": [] } },
    });
    let first = sliding_sync_ok(&server, &alice, None, 0, req.clone()).await;
    let bodies = |resp: &Value| -> Vec<String> {
        resp["rooms"][&room]["timeline"]
            .as_array()
            .map(|t| {
                t.iter()
                    .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(bodies(&first).contains(&"before".to_owned()), "{first}");
    let second = sliding_sync_ok(&server, &alice, Some(&pos(&first)), 0, req.clone()).await;
    let kept = pos(&second);

    server.restart().await;
    server
        .send_text(&bob, &room, "b2", "after the restart")
        .await;

    // The old position is still good, and nothing after it is lost.
    let mut since = kept.clone();
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, resp) = sliding_sync(&server, &alice, Some(&since), 10_000, req.clone()).await;
        assert_eq!(status, 200, "pos {since} after the restart: {resp}");
        if bodies(&resp).contains(&"after the restart".to_owned()) {
            assert!(!bodies(&resp).contains(&"before".to_owned()), "{resp}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the message sent after the restart never came: {resp}"
        );
        since = pos(&resp);
    }

    // Positions the server never issued.
    let (status, body) = sliding_sync(&server, &alice, Some("garbage"), 0, req.clone()).await;
    assert_unknown_pos(status, &body, "pos=garbage");
    for forged in [never_issued(&kept, true), never_issued(&kept, false)] {
        assert_ne!(forged, kept);
        let (status, body) = sliding_sync(&server, &alice, Some(&forged), 0, req.clone()).await;
        assert_unknown_pos(
            status,
            &body,
            &format!("well-formed pos {forged} (from {kept})"),
        );
    }

    // A position issued to someone else.
    let bobs = sliding_sync_ok(&server, &bob, None, 0, req.clone()).await;
    let (status, body) = sliding_sync(&server, &alice, Some(&pos(&bobs)), 0, req.clone()).await;
    assert_unknown_pos(status, &body, "bob's pos used by alice");
    // And to another of Alice's own devices.
    let alice2 = server.login("alice").await;
    let (status, body) = sliding_sync(&server, &alice2, Some(&kept), 0, req.clone()).await;
    assert_unknown_pos(status, &body, "alice's pos used by her other device");

    server.stop().await;
}

/// A position shaped like `pos` but never handed out: its numbers after the first far
/// in the future (`keep_first`: the same connection, later), or all of them (another
/// connection altogether); when it has no numbers, its last character changed.
fn never_issued(pos: &str, keep_first: bool) -> String {
    let mut out = String::new();
    let mut digits = String::new();
    let mut runs = 0;
    let mut flush = |digits: &mut String, out: &mut String| {
        if !digits.is_empty() {
            if keep_first && runs == 0 {
                out.push_str(digits);
            } else {
                let n: u128 = digits.parse().unwrap_or(0);
                out.push_str(&(n + 1_000_000).to_string());
            }
            runs += 1;
            digits.clear();
        }
    };
    for c in pos.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
        } else {
            flush(&mut digits, &mut out);
            out.push(c);
        }
    }
    flush(&mut digits, &mut out);
    if out == pos {
        let mut chars: Vec<char> = pos.chars().collect();
        if let Some(last) = chars.last_mut() {
            *last = if *last == 'a' { 'b' } else { 'a' };
        }
        out = chars.into_iter().collect();
    }
    out
}
