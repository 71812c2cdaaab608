//! The write path on a forked DAG: a second server (a test key) builds a branch that
//! conflicts with ours; state resolution must pick the spec's answer, and unauthorised
//! or badly signed events must be rejected.

use ruma::{
    canonical_json::to_canonical_value,
    events::{StateEventType, TimelineEventType},
    server_name,
    signatures::{self, Ed25519KeyPair},
    state_res::auth_types_for_event,
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, RoomId, RoomVersionId,
};
use serde_json::{json, Value};
use tessera_server::Homeserver;

use crate::harness;

/// The parts of a remote event the test chooses.
struct Ev<'a> {
    sender: &'a str,
    kind: &'a str,
    state_key: Option<&'a str>,
    content: Value,
}

fn ev<'a>(sender: &'a str, kind: &'a str, state_key: Option<&'a str>, content: Value) -> Ev<'a> {
    Ev {
        sender,
        kind,
        state_key,
        content,
    }
}

struct Remote {
    key: Ed25519KeyPair,
}

impl Remote {
    fn new(hs: &Homeserver) -> Self {
        let der = Ed25519KeyPair::generate();
        let key = Ed25519KeyPair::from_der(&der, "t1".into()).unwrap();
        let b64 =
            ruma::serde::Base64::<ruma::serde::base64::Standard, _>::new(key.public_key().to_vec())
                .encode();
        hs.add_server_key(server_name!("remote.test"), "ed25519:t1", &b64)
            .unwrap();
        Self { key }
    }

    /// Builds a signed PDU on top of `prev`, with auth events chosen from the state after
    /// `prev[0]`.
    async fn pdu(
        &self,
        hs: &Homeserver,
        room: &RoomId,
        ev: Ev<'_>,
        prev: &[OwnedEventId],
    ) -> CanonicalJsonObject {
        let Ev {
            sender,
            kind,
            state_key,
            content,
        } = ev;
        let rules = RoomVersionId::V12.rules().unwrap();
        let place = hs.event_place(&prev[0]).await.unwrap().unwrap();
        let (state, _) = hs.state_group(place.state_after).await.unwrap();
        let raw = serde_json::value::to_raw_value(&content).unwrap();
        let sender_id = ruma::UserId::parse(sender).unwrap();
        let kinds = auth_types_for_event(
            &TimelineEventType::from(kind),
            &sender_id,
            state_key,
            &raw,
            &rules.authorization,
        )
        .unwrap();
        let auth: Vec<CanonicalJsonValue> = kinds
            .iter()
            .filter_map(|k| state.get(k))
            .map(|id| id.as_str().into())
            .collect();
        let mut depth = 0;
        for p in prev {
            depth = depth.max(hs.get_pdu(p).await.unwrap().unwrap().depth);
        }
        let mut obj = CanonicalJsonObject::new();
        obj.insert("type".into(), kind.into());
        obj.insert("room_id".into(), room.as_str().into());
        obj.insert("sender".into(), sender.into());
        obj.insert(
            "origin_server_ts".into(),
            CanonicalJsonValue::Integer(1_700_000_000_000i64.try_into().unwrap()),
        );
        obj.insert(
            "depth".into(),
            CanonicalJsonValue::Integer(((depth + 1) as i64).try_into().unwrap()),
        );
        obj.insert("content".into(), to_canonical_value(&content).unwrap());
        obj.insert(
            "prev_events".into(),
            CanonicalJsonValue::Array(prev.iter().map(|p| p.as_str().into()).collect()),
        );
        obj.insert("auth_events".into(), CanonicalJsonValue::Array(auth));
        if let Some(k) = state_key {
            obj.insert("state_key".into(), k.into());
        }
        signatures::hash_and_sign_event("remote.test", &self.key, &mut obj, &rules.redaction)
            .unwrap();
        obj
    }
}

async fn member_of(hs: &Homeserver, room: &RoomId, user: &str) -> Option<String> {
    let id = hs
        .current_state_event_id(room, &StateEventType::RoomMember, user)
        .await
        .unwrap()?;
    let pdu = hs.get_pdu(&id).await.unwrap()?;
    serde_json::from_str::<Value>(pdu.content.get()).unwrap()["membership"]
        .as_str()
        .map(str::to_owned)
}

async fn power_of(hs: &Homeserver, room: &RoomId, user: &str) -> i64 {
    let id = hs
        .current_state_event_id(room, &StateEventType::RoomPowerLevels, "")
        .await
        .unwrap()
        .unwrap();
    let pdu = hs.get_pdu(&id).await.unwrap().unwrap();
    serde_json::from_str::<Value>(pdu.content.get()).unwrap()["users"][user]
        .as_i64()
        .unwrap_or(0)
}

#[tokio::test]
async fn forked_dag_resolves_and_rejects() {
    let server = harness::start().await;
    let hs = server.hs();
    let remote = Remote::new(hs);
    let (alice, token) = server.register("alice").await;
    let (_, body) = server
        .req(
            "POST",
            "/_matrix/client/v3/createRoom",
            Some(&token),
            Some(json!({ "preset": "public_chat" })),
        )
        .await;
    let room = RoomId::parse(body["room_id"].as_str().unwrap()).unwrap();
    let (bob, carol) = ("@bob:remote.test", "@carol:remote.test");

    // Bob and Carol join from the remote server.
    for user in [bob, carol] {
        let ext = hs.forward_extremities(&room).await.unwrap();
        let join = remote
            .pdu(
                hs,
                &room,
                ev(
                    user,
                    "m.room.member",
                    Some(user),
                    json!({ "membership": "join" }),
                ),
                &ext,
            )
            .await;
        hs.receive_pdu(&room, join)
            .await
            .expect("remote join accepted");
    }
    assert_eq!(member_of(hs, &room, carol).await.as_deref(), Some("join"));

    // Alice makes Bob an admin: the fork point E0.
    let (status, _) = server
        .req(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.power_levels/"),
            Some(&token),
            Some(json!({ "users": { bob: 100 }, "kick": 50, "ban": 50, "state_default": 50, "events_default": 0, "users_default": 0 })),
        )
        .await;
    assert_eq!(status, 200);
    let e0 = hs.forward_extremities(&room).await.unwrap();
    assert_eq!(e0.len(), 1);

    // Branch A (ours): Alice demotes Bob.
    let (status, _) = server
        .req(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.power_levels/"),
            Some(&token),
            Some(json!({ "users": {}, "kick": 50, "ban": 50, "state_default": 50, "events_default": 0, "users_default": 0 })),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(power_of(hs, &room, bob).await, 0);

    // Branch B (theirs, built on E0 without seeing the demotion): Bob kicks Carol. It is
    // authorised by the state before it, so it is accepted into the DAG...
    let kick = remote
        .pdu(
            hs,
            &room,
            ev(
                bob,
                "m.room.member",
                Some(carol),
                json!({ "membership": "leave" }),
            ),
            &e0,
        )
        .await;
    let kick_id = hs
        .receive_pdu(&room, kick)
        .await
        .expect("kick is valid at its place in the DAG");
    assert_eq!(
        hs.forward_extremities(&room).await.unwrap().len(),
        2,
        "the DAG forked"
    );

    // ...but state resolution orders Alice's demotion (the creator's power event) first,
    // so Bob's kick fails the iterative auth checks: Carol stays, Bob stays demoted.
    assert_eq!(member_of(hs, &room, carol).await.as_deref(), Some("join"));
    assert_eq!(power_of(hs, &room, bob).await, 0);
    assert!(hs.get_pdu(&kick_id).await.unwrap().is_some());

    // The next local event merges the fork: it references both extremities.
    let (status, body) = server
        .req(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/m1"),
            Some(&token),
            Some(json!({ "body": "merge" })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let merge = hs
        .get_pdu(&OwnedEventId::try_from(body["event_id"].as_str().unwrap()).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(merge.prev_events.len(), 2);
    assert_eq!(hs.forward_extremities(&room).await.unwrap().len(), 1);

    // Rejections: Bob, demoted, may no longer change power levels.
    let ext = hs.forward_extremities(&room).await.unwrap();
    let grab = remote
        .pdu(
            hs,
            &room,
            ev(
                bob,
                "m.room.power_levels",
                Some(""),
                json!({ "users": { bob: 100 } }),
            ),
            &ext,
        )
        .await;
    let err = hs
        .receive_pdu(&room, grab)
        .await
        .expect_err("demoted user cannot raise himself");
    assert!(err.to_string().contains("not authorised"), "{err}");
    // A user who never joined may not send.
    let msg = remote
        .pdu(
            hs,
            &room,
            ev(
                "@dave:remote.test",
                "m.room.message",
                None,
                json!({ "body": "hi" }),
            ),
            &ext,
        )
        .await;
    assert!(hs.receive_pdu(&room, msg).await.is_err());
    // A forged signature is refused.
    let mut forged = remote
        .pdu(
            hs,
            &room,
            ev(carol, "m.room.message", None, json!({ "body": "hi" })),
            &ext,
        )
        .await;
    forged.insert(
        "origin_server_ts".into(),
        CanonicalJsonValue::Integer(1i64.try_into().unwrap()),
    );
    let err = hs
        .receive_pdu(&room, forged)
        .await
        .expect_err("bad signature");
    assert!(err.to_string().contains("signature"), "{err}");
    // Carol, still joined, may talk.
    let ok = remote
        .pdu(
            hs,
            &room,
            ev(
                carol,
                "m.room.message",
                None,
                json!({ "body": "still here" }),
            ),
            &ext,
        )
        .await;
    hs.receive_pdu(&room, ok)
        .await
        .expect("carol's message is accepted");
    let _ = alice;
    server.stop().await;
}
