//! The foundation's client story, told with matrix-sdk (what Element X is built on).

use std::time::Duration;

use matrix_sdk::{
    config::SyncSettings,
    room::MessagesOptions,
    ruma::{
        api::client::room::create_room::v3::Request as CreateRoom,
        events::room::message::RoomMessageEventContent, OwnedUserId,
    },
};

use crate::harness;

fn body_of(ev: &matrix_sdk::deserialized_responses::TimelineEvent) -> Option<String> {
    let raw = ev.raw();
    let kind: String = raw.get_field("type").ok()??;
    if kind != "m.room.message" {
        return None;
    }
    let content: serde_json::Value = raw.get_field("content").ok()??;
    content["body"].as_str().map(str::to_owned)
}

#[tokio::test]
async fn two_users_chat_paginate_and_leave() {
    let server = harness::start().await;
    let (alice_id, _) = server.register("alice").await;
    let (bob_id, _) = server.register("bob").await;
    let alice = server.sdk_client("alice").await;
    let bob = server.sdk_client("bob").await;
    assert_eq!(
        alice.user_id().map(|u| u.to_string()),
        Some(alice_id.clone())
    );

    // Alice creates a room and invites Bob.
    let mut req = CreateRoom::new();
    req.name = Some("Tea".into());
    let room = alice.create_room(req).await.expect("create room");
    let bob_user: OwnedUserId = bob_id.parse().unwrap();
    room.invite_user_by_id(&bob_user).await.expect("invite");

    // Bob sees the invite through sync and joins.
    bob.sync_once(SyncSettings::default())
        .await
        .expect("bob sync");
    let invited = bob
        .get_room(room.room_id())
        .expect("bob knows the invited room");
    assert_eq!(invited.state(), matrix_sdk::RoomState::Invited);
    bob.join_room_by_id(room.room_id()).await.expect("join");

    // They exchange messages.
    room.send(RoomMessageEventContent::text_plain("hello bob"))
        .await
        .expect("alice sends");
    let bob_room = bob.get_room(room.room_id()).expect("bob room");
    for i in 0..25 {
        bob_room
            .send(RoomMessageEventContent::text_plain(format!("reply {i}")))
            .await
            .expect("bob sends");
    }

    // Alice's sync sees Bob joined, and her client knows the room name.
    alice
        .sync_once(SyncSettings::default().timeout(Duration::from_secs(0)))
        .await
        .expect("alice sync");
    let alice_room = alice.get_room(room.room_id()).expect("alice room");
    assert_eq!(alice_room.name().as_deref(), Some("Tea"));
    let members = alice_room
        .members(matrix_sdk::RoomMemberships::JOIN)
        .await
        .expect("members");
    assert_eq!(members.len(), 2);

    // Paginate back through the whole history, 10 at a time.
    let mut bodies = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let mut opts = MessagesOptions::backward().from(from.as_deref());
        opts.limit = 10u32.into();
        let page = alice_room.messages(opts).await.expect("messages");
        bodies.extend(page.chunk.iter().filter_map(body_of));
        match page.end {
            Some(end) if !page.chunk.is_empty() => from = Some(end),
            _ => break,
        }
    }
    bodies.reverse();
    let mut expected = vec!["hello bob".to_owned()];
    expected.extend((0..25).map(|i| format!("reply {i}")));
    assert_eq!(bodies, expected);

    // Profile changes reach the room as a member event.
    alice
        .account()
        .set_display_name(Some("Alice L."))
        .await
        .expect("set displayname");
    assert_eq!(
        alice.account().get_display_name().await.unwrap().as_deref(),
        Some("Alice L.")
    );
    bob.sync_once(SyncSettings::default().timeout(Duration::from_secs(0)))
        .await
        .expect("bob sync");
    let member = bob_room
        .get_member(alice.user_id().unwrap())
        .await
        .unwrap()
        .expect("alice member");
    assert_eq!(member.display_name(), Some("Alice L."));

    // Bob leaves; Alice sees one joined member.
    bob_room.leave().await.expect("leave");
    alice
        .sync_once(SyncSettings::default().timeout(Duration::from_secs(0)))
        .await
        .expect("alice sync");
    let members = alice_room
        .members(matrix_sdk::RoomMemberships::JOIN)
        .await
        .expect("members");
    assert_eq!(members.len(), 1);
    server.stop().await;
}
