//! End-to-end encryption with matrix-sdk (what Element X is built on) and raw HTTP.

use std::{collections::HashSet, time::Duration};

use matrix_sdk::{
    config::SyncSettings,
    ruma::{
        api::client::room::create_room::v3::Request as CreateRoom,
        events::{
            room::{encryption::RoomEncryptionEventContent, message::RoomMessageEventContent},
            InitialStateEvent,
        },
        OwnedUserId,
    },
    Client,
};
use serde_json::{json, Value};

use crate::harness;

async fn sync(c: &Client) {
    c.sync_once(SyncSettings::default().timeout(Duration::from_secs(0)))
        .await
        .expect("sync");
}

fn body(ev: &matrix_sdk::deserialized_responses::TimelineEvent) -> Option<String> {
    let content: Value = ev.raw().get_field("content").ok()??;
    content["body"].as_str().map(str::to_owned)
}

#[tokio::test]
async fn encrypted_chat_device_lists_and_cross_signing() {
    let mut server = harness::start().await;
    server.register("alice").await;
    let (bob_id, _) = server.register("bob").await;
    let alice = server.sdk_client("alice").await;
    let bob = server.sdk_client("bob").await;
    // The first syncs upload each device's keys.
    sync(&alice).await;
    sync(&bob).await;

    let mut req = CreateRoom::new();
    req.invite = vec![bob_id.parse().unwrap()];
    req.initial_state = vec![InitialStateEvent::with_empty_state_key(
        RoomEncryptionEventContent::with_recommended_defaults(),
    )
    .to_raw_any()];
    let room = alice.create_room(req).await.expect("create");
    sync(&bob).await;
    bob.join_room_by_id(room.room_id()).await.expect("join");
    sync(&alice).await;
    sync(&bob).await;
    assert!(room.latest_encryption_state().await.unwrap().is_encrypted());

    // Alice's message is encrypted on the wire and Bob decrypts it.
    let sent = room
        .send(RoomMessageEventContent::text_plain("secret hello"))
        .await
        .expect("send")
        .response
        .event_id;
    sync(&bob).await;
    let bob_room = bob.get_room(room.room_id()).unwrap();
    let ev = bob_room.event(&sent, None).await.expect("event");
    assert!(
        ev.encryption_info().is_some(),
        "Bob decrypted an encrypted event"
    );
    assert_eq!(body(&ev).as_deref(), Some("secret hello"));
    let (_, raw) = server
        .req(
            "GET",
            &format!("/_matrix/client/v3/rooms/{}/event/{sent}", room.room_id()),
            Some(alice.access_token().unwrap().as_str()),
            None,
        )
        .await;
    assert_eq!(
        raw["type"], "m.room.encrypted",
        "the server only ever saw ciphertext"
    );

    // And back.
    let reply = bob_room
        .send(RoomMessageEventContent::text_plain("secret reply"))
        .await
        .expect("send")
        .response
        .event_id;
    sync(&alice).await;
    let ev = room.event(&reply, None).await.expect("event");
    assert_eq!(body(&ev).as_deref(), Some("secret reply"));

    // Bob logs in a second device: Alice learns of it through device lists.
    let bob2 = server.sdk_client("bob").await;
    sync(&bob2).await;
    sync(&alice).await;
    let bob_user: OwnedUserId = bob_id.parse().unwrap();
    let devices: HashSet<_> = alice
        .encryption()
        .get_user_devices(&bob_user)
        .await
        .unwrap()
        .devices()
        .map(|d| d.device_id().to_owned())
        .collect();
    assert!(devices.contains(bob2.device_id().unwrap()), "{devices:?}");
    assert_eq!(devices.len(), 2);

    // Cross-signing: Alice bootstraps; Bob sees her device signed by her identity.
    alice
        .encryption()
        .bootstrap_cross_signing(None)
        .await
        .expect("bootstrap");
    let status = alice.encryption().cross_signing_status().await.unwrap();
    assert!(status.is_complete(), "{status:?}");
    sync(&bob).await;
    let alice_user = alice.user_id().unwrap().to_owned();
    bob.encryption()
        .get_user_identity(&alice_user)
        .await
        .unwrap();
    let alice_device = bob
        .encryption()
        .get_device(&alice_user, alice.device_id().unwrap())
        .await
        .unwrap()
        .expect("device");
    assert!(alice_device.is_cross_signed_by_owner());

    // After a server restart a fresh client of Bob's still finds Alice's identity and her
    // device signed by it: keys and signatures were persisted.
    server.restart().await;
    let bob3 = server.sdk_client("bob").await;
    sync(&bob3).await;
    bob3.encryption()
        .get_user_devices(&alice_user)
        .await
        .unwrap();
    let identity = bob3
        .encryption()
        .get_user_identity(&alice_user)
        .await
        .unwrap();
    assert!(
        identity.is_some(),
        "Alice's cross-signing identity survived the restart"
    );
    let alice_device = bob3
        .encryption()
        .get_device(&alice_user, alice.device_id().unwrap())
        .await
        .unwrap()
        .expect("device");
    assert!(alice_device.is_cross_signed_by_owner());
    // Alice's own client, after the restart, still sees her identity as complete.
    sync(&alice).await;
    assert!(alice
        .encryption()
        .cross_signing_status()
        .await
        .unwrap()
        .is_complete());
    server.stop().await;
}

/// 50 concurrent claims against 10 one-time keys: 10 distinct keys, then the fallback key.
#[tokio::test]
async fn one_time_keys_are_claimed_once() {
    let server = harness::start().await;
    let (owner, token) = server.register("otk").await;
    let (_, who) = server.register("claimer").await;
    let (_, me) = server
        .req(
            "GET",
            "/_matrix/client/v3/account/whoami",
            Some(&token),
            None,
        )
        .await;
    let device = me["device_id"].as_str().unwrap().to_owned();
    let mut otks = serde_json::Map::new();
    for i in 0..10 {
        otks.insert(
            format!("signed_curve25519:k{i}"),
            json!({ "key": format!("otk{i}"), "signatures": {} }),
        );
    }
    let (status, body) = server
        .req(
            "POST",
            "/_matrix/client/v3/keys/upload",
            Some(&token),
            Some(json!({ "one_time_keys": otks, "fallback_keys": { "signed_curve25519:fb": { "key": "fallback", "fallback": true, "signatures": {} } } })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["one_time_key_counts"]["signed_curve25519"], 10);
    // Reusing a key ID with other content is refused.
    let (status, _) = server
        .req(
            "POST",
            "/_matrix/client/v3/keys/upload",
            Some(&token),
            Some(json!({ "one_time_keys": { "signed_curve25519:k0": { "key": "other" } } })),
        )
        .await;
    assert_eq!(status, 400);

    // The owner's sync reports them (and the counts are then kept in memory).
    let (_, sync) = server
        .req("GET", "/_matrix/client/v3/sync", Some(&token), None)
        .await;
    assert_eq!(sync["device_one_time_keys_count"]["signed_curve25519"], 10);
    assert_eq!(
        sync["device_unused_fallback_key_types"],
        json!(["signed_curve25519"])
    );

    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (url, who, owner, device) = (
            server.url.clone(),
            who.clone(),
            owner.clone(),
            device.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let body: Value = reqwest::Client::new()
                .post(format!("{url}/_matrix/client/v3/keys/claim"))
                .bearer_auth(who)
                .json(&json!({ "one_time_keys": { owner.as_str(): { device.as_str(): "signed_curve25519" } } }))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let keys = body["one_time_keys"][owner.as_str()][device.as_str()].as_object().cloned().unwrap_or_default();
            keys.values().next().map(|k| k["key"].as_str().unwrap().to_owned())
        }));
    }
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await.unwrap().expect("every claim gets a key"));
    }
    let one_time: Vec<_> = got.iter().filter(|k| k.starts_with("otk")).collect();
    let unique: HashSet<_> = one_time.iter().collect();
    assert_eq!(one_time.len(), 10, "{got:?}");
    assert_eq!(unique.len(), 10, "no one-time key twice: {got:?}");
    assert_eq!(got.iter().filter(|k| *k == "fallback").count(), 40);

    // The owner's sync shows no one-time keys left and the fallback key as used.
    let (_, sync) = server
        .req("GET", "/_matrix/client/v3/sync", Some(&token), None)
        .await;
    assert_eq!(
        sync["device_one_time_keys_count"]["signed_curve25519"], 0,
        "{sync}"
    );
    assert_eq!(sync["device_unused_fallback_key_types"], json!([]));
    server.stop().await;
}

/// A second device of the same user reads old encrypted history through the server-side
/// key backup, unlocked with the recovery key (secret storage in account data).
#[tokio::test]
async fn second_device_reads_history_through_key_backup() {
    let server = harness::start().await;
    server.register("alice").await;
    let alice = server.sdk_client("alice").await;
    sync(&alice).await;
    let recovery_key = alice
        .encryption()
        .recovery()
        .enable()
        .await
        .expect("enable recovery");

    let mut req = CreateRoom::new();
    req.initial_state = vec![InitialStateEvent::with_empty_state_key(
        RoomEncryptionEventContent::with_recommended_defaults(),
    )
    .to_raw_any()];
    let room = alice.create_room(req).await.expect("create");
    sync(&alice).await;
    let mut sent = Vec::new();
    for i in 0..3 {
        sent.push(
            room.send(RoomMessageEventContent::text_plain(format!("diary {i}")))
                .await
                .expect("send")
                .response
                .event_id,
        );
    }
    alice
        .encryption()
        .backups()
        .wait_for_steady_state()
        .await
        .expect("keys backed up");
    let token = alice.access_token().unwrap();
    let (status, info) = server
        .req(
            "GET",
            "/_matrix/client/v3/room_keys/version",
            Some(token.as_str()),
            None,
        )
        .await;
    assert_eq!(status, 200, "{info}");
    assert!(info["count"].as_u64().unwrap() >= 1, "{info}");

    // A new device knows nothing until it recovers the backup key.
    let alice2 = server.sdk_client("alice").await;
    sync(&alice2).await;
    alice2
        .encryption()
        .recovery()
        .recover(&recovery_key)
        .await
        .expect("recover");
    alice2
        .encryption()
        .backups()
        .download_room_keys_for_room(room.room_id())
        .await
        .expect("download keys");
    let room2 = alice2
        .get_room(room.room_id())
        .expect("room on the second device");
    for (i, id) in sent.iter().enumerate() {
        let ev = room2.event(id, None).await.expect("event");
        assert!(ev.encryption_info().is_some());
        assert_eq!(body(&ev), Some(format!("diary {i}")));
    }
    server.stop().await;
}
