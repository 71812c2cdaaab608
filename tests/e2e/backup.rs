//! Server-side key backups: versions, the replacement rule, counts and etags, the wrong
//! version, deletion, limits, concurrent uploads.

use serde_json::{json, Value};

use crate::harness::{self, TestServer};

const ALG: &str = "m.megolm_backup.v1.curve25519-aes-sha2";
const ROOM: &str = "!backup:example.org";
const OTHER_ROOM: &str = "!other:example.org";

fn auth_data(public_key: &str) -> Value {
    json!({ "public_key": public_key, "signatures": {} })
}

fn key(is_verified: bool, first_message_index: u64, forwarded_count: u64) -> Value {
    json!({
        "first_message_index": first_message_index,
        "forwarded_count": forwarded_count,
        "is_verified": is_verified,
        "session_data": {
            "ephemeral": "eph",
            "ciphertext": format!("c-{is_verified}-{first_message_index}-{forwarded_count}"),
            "mac": "mac",
        },
    })
}

async fn create(server: &TestServer, t: Option<&str>, pk: &str) -> String {
    let (status, body) = server
        .req(
            "POST",
            "/_matrix/client/v3/room_keys/version",
            t,
            Some(json!({ "algorithm": ALG, "auth_data": auth_data(pk) })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["version"].as_str().expect("version").to_owned()
}

fn session_path(version: &str, room: &str, session: &str) -> String {
    format!("/_matrix/client/v3/room_keys/keys/{room}/{session}?version={version}")
}

/// PUT of one session key; returns (status, body).
async fn put_key(
    server: &TestServer,
    t: Option<&str>,
    version: &str,
    session: &str,
    k: Value,
) -> (u16, Value) {
    server
        .req("PUT", &session_path(version, ROOM, session), t, Some(k))
        .await
}

async fn stored(server: &TestServer, t: Option<&str>, version: &str, session: &str) -> Value {
    let (status, body) = server
        .req("GET", &session_path(version, ROOM, session), t, None)
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

fn errcode(body: &Value) -> Option<&str> {
    body["errcode"].as_str()
}

#[tokio::test]
async fn backup_version_lifecycle() {
    let server = harness::start().await;
    let (_, t) = server.register("vera").await;
    let t = Some(t.as_str());
    let latest = "/_matrix/client/v3/room_keys/version";

    let (status, body) = server.req("GET", latest, t, None).await;
    assert_eq!(
        (status, errcode(&body)),
        (404, Some("M_NOT_FOUND")),
        "{body}"
    );

    let v1 = create(&server, t, "pk1").await;
    let (status, body) = server.req("GET", latest, t, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["algorithm"], ALG);
    assert_eq!(body["auth_data"], auth_data("pk1"));
    assert_eq!(body["count"], 0);
    assert!(body["etag"].is_string(), "{body}");
    assert_eq!(body["version"], v1.as_str());
    let (status, by_id) = server.req("GET", &format!("{latest}/{v1}"), t, None).await;
    assert_eq!((status, &by_id), (200, &body));

    // Only auth_data changes; algorithm and body version must match.
    let (status, body) = server
        .req(
            "PUT",
            &format!("{latest}/{v1}"),
            t,
            Some(json!({ "algorithm": ALG, "auth_data": auth_data("pk1b"), "version": v1 })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = server.req("GET", latest, t, None).await;
    assert_eq!(body["auth_data"], auth_data("pk1b"));
    let (status, body) = server
        .req(
            "PUT",
            &format!("{latest}/{v1}"),
            t,
            Some(json!({ "algorithm": "org.example.other", "auth_data": {} })),
        )
        .await;
    assert_eq!(
        (status, errcode(&body)),
        (400, Some("M_INVALID_PARAM")),
        "{body}"
    );
    let (status, body) = server
        .req(
            "PUT",
            &format!("{latest}/{v1}"),
            t,
            Some(json!({ "algorithm": ALG, "auth_data": {}, "version": "999" })),
        )
        .await;
    assert_eq!(
        (status, errcode(&body)),
        (400, Some("M_INVALID_PARAM")),
        "{body}"
    );
    let (status, body) = server
        .req(
            "PUT",
            &format!("{latest}/999"),
            t,
            Some(json!({ "algorithm": ALG, "auth_data": {} })),
        )
        .await;
    assert_eq!(
        (status, errcode(&body)),
        (404, Some("M_NOT_FOUND")),
        "{body}"
    );
    let (status, body) = server
        .req(
            "POST",
            latest,
            t,
            Some(json!({ "algorithm": ALG, "auth_data": "not an object" })),
        )
        .await;
    assert_eq!(
        (status, errcode(&body)),
        (400, Some("M_BAD_JSON")),
        "{body}"
    );

    // A newer version becomes the current one.
    let v2 = create(&server, t, "pk2").await;
    assert_ne!(v1, v2);
    let (_, body) = server.req("GET", latest, t, None).await;
    assert_eq!(body["version"], v2.as_str());

    // Another user sees none of it.
    let (_, t2) = server.register("walt").await;
    let (status, body) = server.req("GET", latest, Some(&t2), None).await;
    assert_eq!(
        (status, errcode(&body)),
        (404, Some("M_NOT_FOUND")),
        "{body}"
    );
    let (status, _) = server
        .req("GET", &format!("{latest}/{v2}"), Some(&t2), None)
        .await;
    assert_eq!(status, 404);
    let (status, _) = server
        .req("DELETE", &format!("{latest}/{v2}"), Some(&t2), None)
        .await;
    assert_eq!(status, 404);

    // Deleting the current version falls back to the previous one; deleting twice is fine.
    let (status, body) = server
        .req("DELETE", &format!("{latest}/{v2}"), t, None)
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = server
        .req("DELETE", &format!("{latest}/{v2}"), t, None)
        .await;
    assert_eq!(status, 200);
    let (status, _) = server.req("GET", &format!("{latest}/{v2}"), t, None).await;
    assert_eq!(status, 404);
    let (_, body) = server.req("GET", latest, t, None).await;
    assert_eq!(body["version"], v1.as_str());
    let (status, body) = server
        .req("DELETE", &format!("{latest}/12345"), t, None)
        .await;
    assert_eq!(
        (status, errcode(&body)),
        (404, Some("M_NOT_FOUND")),
        "{body}"
    );

    // Version numbers are not reused.
    let v3 = create(&server, t, "pk3").await;
    assert!(v3 != v1 && v3 != v2, "{v1} {v2} {v3}");
    let (status, _) = server
        .req("DELETE", &format!("{latest}/{v1}"), t, None)
        .await;
    assert_eq!(status, 200);
    let (status, _) = server
        .req("DELETE", &format!("{latest}/{v3}"), t, None)
        .await;
    assert_eq!(status, 200);
    let (status, body) = server.req("GET", latest, t, None).await;
    assert_eq!(
        (status, errcode(&body)),
        (404, Some("M_NOT_FOUND")),
        "{body}"
    );
    server.stop().await;
}

#[tokio::test]
async fn backup_keys_replacement_counts_and_etags() {
    let server = harness::start().await;
    let (_, t) = server.register("rhea").await;
    let t = Some(t.as_str());
    let v = create(&server, t, "pk").await;

    let (status, first) = put_key(&server, t, &v, "s1", key(false, 5, 1)).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["count"], 1);
    let etag1 = first["etag"].as_str().expect("etag").to_owned();
    assert_eq!(stored(&server, t, &v, "s1").await, key(false, 5, 1));

    // Worse keys do not replace: a higher index, or the same index forwarded more often.
    for worse in [key(false, 6, 0), key(false, 5, 2), key(false, 5, 1)] {
        let (status, body) = put_key(&server, t, &v, "s1", worse.clone()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            (body["count"].clone(), body["etag"].as_str()),
            (json!(1), Some(etag1.as_str())),
            "{worse}"
        );
        assert_eq!(stored(&server, t, &v, "s1").await, key(false, 5, 1));
    }
    // A lower index replaces, even forwarded more often.
    let (_, body) = put_key(&server, t, &v, "s1", key(false, 3, 4)).await;
    let etag2 = body["etag"].as_str().unwrap().to_owned();
    assert_ne!(etag2, etag1);
    assert_eq!(body["count"], 1);
    assert_eq!(stored(&server, t, &v, "s1").await, key(false, 3, 4));
    // Then fewer forwards at the same index.
    let (_, body) = put_key(&server, t, &v, "s1", key(false, 3, 0)).await;
    let etag3 = body["etag"].as_str().unwrap().to_owned();
    assert_ne!(etag3, etag2);
    assert_eq!(stored(&server, t, &v, "s1").await, key(false, 3, 0));
    // A verified key replaces an unverified one whatever its index ...
    let (_, body) = put_key(&server, t, &v, "s1", key(true, 9, 9)).await;
    let etag4 = body["etag"].as_str().unwrap().to_owned();
    assert_ne!(etag4, etag3);
    assert_eq!(stored(&server, t, &v, "s1").await, key(true, 9, 9));
    // ... and is not replaced by an unverified one, even from index 0.
    let (_, body) = put_key(&server, t, &v, "s1", key(false, 0, 0)).await;
    assert_eq!(body["etag"], etag4.as_str());
    assert_eq!(stored(&server, t, &v, "s1").await, key(true, 9, 9));

    // Several rooms at once, then a room at once; one of these is worse than stored.
    let (status, body) = server
        .req(
            "PUT",
            &format!("/_matrix/client/v3/room_keys/keys?version={v}"),
            t,
            Some(json!({ "rooms": {
                ROOM: { "sessions": { "s1": key(false, 1, 0), "s2": key(true, 0, 0) } },
                OTHER_ROOM: { "sessions": { "o1": key(false, 2, 0) } },
            } })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["count"], 3);
    let etag5 = body["etag"].as_str().unwrap().to_owned();
    assert_ne!(etag5, etag4);
    assert_eq!(stored(&server, t, &v, "s1").await, key(true, 9, 9));
    let (status, body) = server
        .req(
            "PUT",
            &format!("/_matrix/client/v3/room_keys/keys/{OTHER_ROOM}?version={v}"),
            t,
            Some(json!({ "sessions": { "o2": key(false, 0, 0) } })),
        )
        .await;
    assert_eq!((status, body["count"].clone()), (200, json!(4)), "{body}");
    let etag6 = body["etag"].as_str().unwrap().to_owned();
    assert_ne!(etag6, etag5);

    // The version reports the same count and etag.
    let (_, info) = server
        .req("GET", "/_matrix/client/v3/room_keys/version", t, None)
        .await;
    assert_eq!(
        (info["count"].clone(), info["etag"].as_str()),
        (json!(4), Some(etag6.as_str())),
        "{info}"
    );

    // Reads: everything, a room, an empty room, a missing session.
    let (status, all) = server
        .req(
            "GET",
            &format!("/_matrix/client/v3/room_keys/keys?version={v}"),
            t,
            None,
        )
        .await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(
        all,
        json!({ "rooms": {
            ROOM: { "sessions": { "s1": key(true, 9, 9), "s2": key(true, 0, 0) } },
            OTHER_ROOM: { "sessions": { "o1": key(false, 2, 0), "o2": key(false, 0, 0) } },
        } })
    );
    let (status, room) = server
        .req(
            "GET",
            &format!("/_matrix/client/v3/room_keys/keys/{OTHER_ROOM}?version={v}"),
            t,
            None,
        )
        .await;
    assert_eq!((status, &room), (200, &all["rooms"][OTHER_ROOM]));
    let (status, empty) = server
        .req(
            "GET",
            &format!("/_matrix/client/v3/room_keys/keys/!none:example.org?version={v}"),
            t,
            None,
        )
        .await;
    assert_eq!((status, empty), (200, json!({ "sessions": {} })));
    let (status, body) = server
        .req("GET", &session_path(&v, ROOM, "nope"), t, None)
        .await;
    assert_eq!(
        (status, errcode(&body)),
        (404, Some("M_NOT_FOUND")),
        "{body}"
    );
    let (status, body) = server
        .req(
            "GET",
            "/_matrix/client/v3/room_keys/keys?version=777",
            t,
            None,
        )
        .await;
    assert_eq!(
        (status, errcode(&body)),
        (404, Some("M_NOT_FOUND")),
        "{body}"
    );

    // Bad key data and too many sessions are refused.
    let (status, body) = put_key(
        &server,
        t,
        &v,
        "bad",
        json!({ "first_message_index": 0, "forwarded_count": 0, "session_data": {} }),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let many: serde_json::Map<String, Value> = (0..1001)
        .map(|i| (format!("m{i}"), key(false, 0, 0)))
        .collect();
    let (status, body) = server
        .req(
            "PUT",
            &format!("/_matrix/client/v3/room_keys/keys/{ROOM}?version={v}"),
            t,
            Some(json!({ "sessions": many })),
        )
        .await;
    assert_eq!(
        (status, errcode(&body)),
        (413, Some("M_TOO_LARGE")),
        "{body}"
    );
    server.stop().await;
}

#[tokio::test]
async fn backup_wrong_version() {
    let server = harness::start().await;
    let (_, t) = server.register("wes").await;
    let t = Some(t.as_str());

    // No backup at all.
    let (status, body) = put_key(&server, t, "1", "s", key(false, 0, 0)).await;
    assert_eq!(
        (status, errcode(&body)),
        (404, Some("M_NOT_FOUND")),
        "{body}"
    );

    let v1 = create(&server, t, "pk1").await;
    let (status, _) = put_key(&server, t, &v1, "old", key(false, 0, 0)).await;
    assert_eq!(status, 200);
    let v2 = create(&server, t, "pk2").await;
    for wrong in [v1.as_str(), "9999", "not-a-version"] {
        let (status, body) = put_key(&server, t, wrong, "s", key(false, 0, 0)).await;
        assert_eq!(
            (status, errcode(&body), body["current_version"].as_str()),
            (403, Some("M_WRONG_ROOM_KEYS_VERSION"), Some(v2.as_str())),
            "{wrong}: {body}"
        );
    }
    let (status, body) = server
        .req(
            "PUT",
            &format!("/_matrix/client/v3/room_keys/keys?version={v1}"),
            t,
            Some(json!({ "rooms": { ROOM: { "sessions": { "s": key(false, 0, 0) } } } })),
        )
        .await;
    assert_eq!(
        (status, errcode(&body)),
        (403, Some("M_WRONG_ROOM_KEYS_VERSION")),
        "{body}"
    );
    // The new version starts empty; the old one can still be read.
    let (_, info) = server
        .req("GET", "/_matrix/client/v3/room_keys/version", t, None)
        .await;
    assert_eq!(
        (info["version"].as_str(), info["count"].clone()),
        (Some(v2.as_str()), json!(0))
    );
    assert_eq!(stored(&server, t, &v1, "old").await, key(false, 0, 0));
    // The version parameter is required.
    let (status, _) = server
        .req(
            "PUT",
            &format!("/_matrix/client/v3/room_keys/keys/{ROOM}/s"),
            t,
            Some(key(false, 0, 0)),
        )
        .await;
    assert_eq!(status, 400);

    // Once the current version is deleted, the previous one is current again.
    let (status, _) = server
        .req(
            "DELETE",
            &format!("/_matrix/client/v3/room_keys/version/{v2}"),
            t,
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = put_key(&server, t, &v2, "s", key(false, 0, 0)).await;
    assert_eq!(
        (status, body["current_version"].as_str()),
        (403, Some(v1.as_str())),
        "{body}"
    );
    let (status, body) = put_key(&server, t, &v1, "s", key(false, 0, 0)).await;
    assert_eq!((status, body["count"].clone()), (200, json!(2)), "{body}");
    server.stop().await;
}

#[tokio::test]
async fn backup_delete_keys_and_versions() {
    let server = harness::start().await;
    let (_, t) = server.register("dora").await;
    let t = Some(t.as_str());
    let v = create(&server, t, "pk").await;
    let (status, body) = server
        .req(
            "PUT",
            &format!("/_matrix/client/v3/room_keys/keys?version={v}"),
            t,
            Some(json!({ "rooms": {
                ROOM: { "sessions": { "a": key(false, 0, 0), "b": key(false, 0, 0), "c": key(false, 0, 0) } },
                OTHER_ROOM: { "sessions": { "x": key(false, 0, 0), "y": key(false, 0, 0) } },
            } })),
        )
        .await;
    assert_eq!((status, body["count"].clone()), (200, json!(5)), "{body}");
    let etag0 = body["etag"].clone();

    // One session.
    let (status, body) = server
        .req("DELETE", &session_path(&v, ROOM, "a"), t, None)
        .await;
    assert_eq!((status, body["count"].clone()), (200, json!(4)), "{body}");
    assert_ne!(body["etag"], etag0);
    let etag1 = body["etag"].clone();
    let (status, _) = server
        .req("GET", &session_path(&v, ROOM, "a"), t, None)
        .await;
    assert_eq!(status, 404);
    // Deleting nothing leaves the etag alone.
    let (status, body) = server
        .req("DELETE", &session_path(&v, ROOM, "a"), t, None)
        .await;
    assert_eq!(
        (status, body["count"].clone(), &body["etag"]),
        (200, json!(4), &etag1),
        "{body}"
    );

    // One room.
    let (status, body) = server
        .req(
            "DELETE",
            &format!("/_matrix/client/v3/room_keys/keys/{ROOM}?version={v}"),
            t,
            None,
        )
        .await;
    assert_eq!((status, body["count"].clone()), (200, json!(2)), "{body}");
    assert_ne!(body["etag"], etag1);
    let (_, room) = server
        .req(
            "GET",
            &format!("/_matrix/client/v3/room_keys/keys/{ROOM}?version={v}"),
            t,
            None,
        )
        .await;
    assert_eq!(room, json!({ "sessions": {} }));

    // Everything.
    let (status, body) = server
        .req(
            "DELETE",
            &format!("/_matrix/client/v3/room_keys/keys?version={v}"),
            t,
            None,
        )
        .await;
    assert_eq!((status, body["count"].clone()), (200, json!(0)), "{body}");
    let (_, all) = server
        .req(
            "GET",
            &format!("/_matrix/client/v3/room_keys/keys?version={v}"),
            t,
            None,
        )
        .await;
    assert_eq!(all, json!({ "rooms": {} }));
    let (status, body) = server
        .req(
            "DELETE",
            "/_matrix/client/v3/room_keys/keys?version=4242",
            t,
            None,
        )
        .await;
    assert_eq!(
        (status, errcode(&body)),
        (404, Some("M_NOT_FOUND")),
        "{body}"
    );

    // Deleting a version removes its keys with it.
    let (status, _) = put_key(&server, t, &v, "z", key(false, 0, 0)).await;
    assert_eq!(status, 200);
    let (status, _) = server
        .req(
            "DELETE",
            &format!("/_matrix/client/v3/room_keys/version/{v}"),
            t,
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = server
        .req(
            "GET",
            &format!("/_matrix/client/v3/room_keys/keys?version={v}"),
            t,
            None,
        )
        .await;
    assert_eq!(
        (status, errcode(&body)),
        (404, Some("M_NOT_FOUND")),
        "{body}"
    );
    let (status, body) = put_key(&server, t, &v, "z", key(false, 0, 0)).await;
    assert_eq!(
        (status, errcode(&body)),
        (404, Some("M_NOT_FOUND")),
        "{body}"
    );
    let v2 = create(&server, t, "pk2").await;
    let (_, info) = server
        .req(
            "GET",
            &format!("/_matrix/client/v3/room_keys/version/{v2}"),
            t,
            None,
        )
        .await;
    assert_eq!(info["count"], 0, "{info}");
    server.stop().await;
}

#[tokio::test]
async fn backup_concurrent_uploads_keep_the_best_key() {
    let server = harness::start().await;
    let (_, t) = server.register("cora").await;
    let t = Some(t.as_str());
    let v = create(&server, t, "pk").await;
    // Uploads of one session with indexes 1..=16 in a scrambled order, and the best one
    // (index 0) in the middle, all at once.
    let mut order: Vec<u64> = (1..=16).map(|i| (i * 7) % 17).collect();
    order.insert(8, 0);
    let uploads = order
        .iter()
        .map(|&i| put_key(&server, t, &v, "race", key(false, i, 0)));
    for (status, body) in futures_util::future::join_all(uploads).await {
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(stored(&server, t, &v, "race").await, key(false, 0, 0));
    // And with a verified key racing better-indexed unverified ones.
    let uploads = (0..12u64).map(|i| {
        let k = if i == 5 {
            key(true, 30, 3)
        } else {
            key(false, 0, 0)
        };
        put_key(&server, t, &v, "race2", k)
    });
    for (status, body) in futures_util::future::join_all(uploads).await {
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(stored(&server, t, &v, "race2").await, key(true, 30, 3));
    let (_, info) = server
        .req("GET", "/_matrix/client/v3/room_keys/version", t, None)
        .await;
    assert_eq!(info["count"], 2, "{info}");
    server.stop().await;
}
