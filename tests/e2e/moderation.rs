//! Reporting content, `/admin/whois`, OpenID tokens and the third-party lookups (spec:
//! "Reporting content", "Server Administration", "OpenID", "Third-party Networks").

use serde_json::json;

use crate::harness::{self, urlencode};

#[tokio::test]
async fn reports_are_stored_for_visible_targets_only() {
    let server = harness::start().await;
    let (alice_id, alice) = server.register("alice").await;
    let (_, bob) = server.register("bob").await;
    let room = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    let msg = server.send_text(&alice, &room, "m1", "rude words").await;
    let event_path = format!("/_matrix/client/v3/rooms/{room}/report/{}", urlencode(&msg));
    // Bob is not in the room: the event is not found for him.
    let (status, body) = server
        .req(
            "POST",
            &event_path,
            Some(&bob),
            Some(json!({ "reason": "rude" })),
        )
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (404, Some("M_NOT_FOUND")),
        "{body}"
    );
    server.membership(&bob, &room, "join").await;
    server
        .ok("POST", &event_path, &bob, Some(json!({ "reason": "rude" })))
        .await;
    // The reason may be left out for an event.
    server.ok("POST", &event_path, &bob, Some(json!({}))).await;
    let (status, _) = server
        .req(
            "POST",
            &format!(
                "/_matrix/client/v3/rooms/{room}/report/{}",
                urlencode("$missing")
            ),
            Some(&bob),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 404);
    let (status, body) = server
        .req(
            "POST",
            &event_path,
            Some(&bob),
            Some(json!({ "reason": "x".repeat(5000) })),
        )
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (400, Some("M_INVALID_PARAM")),
        "{body}"
    );

    // Rooms and users: the reporter need not share them; unknown ones are 404.
    let (_, carol) = server.register("carol").await;
    server
        .ok(
            "POST",
            &format!("/_matrix/client/v3/rooms/{room}/report"),
            &carol,
            Some(json!({ "reason": "spam room" })),
        )
        .await;
    let (status, _) = server
        .req(
            "POST",
            "/_matrix/client/v3/rooms/!nope:localhost/report",
            Some(&carol),
            Some(json!({ "reason": "" })),
        )
        .await;
    assert_eq!(status, 404);
    server
        .ok(
            "POST",
            &format!("/_matrix/client/v3/users/{}/report", urlencode(&alice_id)),
            &carol,
            Some(json!({ "reason": "spammer" })),
        )
        .await;
    let (status, _) = server
        .req(
            "POST",
            "/_matrix/client/v3/users/%40ghost%3Alocalhost/report",
            Some(&carol),
            Some(json!({ "reason": "" })),
        )
        .await;
    assert_eq!(status, 404);

    // Stored for the admins: three of events, rooms and users in all, with their targets.
    let rows = server
        .hs()
        .db
        .query(
            "SELECT reporter, room_id, event_id, user_id, reason FROM reports ORDER BY created_ts, reason",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 4, "{rows:?}");
    let events = rows
        .iter()
        .filter(|r| r.opt_text(2).unwrap().as_deref() == Some(msg.as_str()))
        .count();
    assert_eq!(events, 2);
    assert!(rows
        .iter()
        .any(|r| r.opt_text(3).unwrap().as_deref() == Some(alice_id.as_str())));
}

#[tokio::test]
async fn whois_openid_and_thirdparty_lookups() {
    let server = harness::start().await;
    let (alice_id, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let whois = |user: &str| format!("/_matrix/client/v3/admin/whois/{}", urlencode(user));
    // One's own devices, with where they were seen; not another user's.
    let me = server.ok("GET", &whois(&alice_id), &alice, None).await;
    assert_eq!(me["user_id"], alice_id.as_str());
    let devices = me["devices"].as_object().expect("devices");
    assert_eq!(devices.len(), 1, "{me}");
    assert!(devices.values().all(|d| d["sessions"].is_array()), "{me}");
    let (status, body) = server.req("GET", &whois(&alice_id), Some(&bob), None).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{body}"
    );

    // OpenID: one's own only, a new token each time.
    let path = |user: &str| {
        format!(
            "/_matrix/client/v3/user/{}/openid/request_token",
            urlencode(user)
        )
    };
    let t1 = server
        .ok("POST", &path(&alice_id), &alice, Some(json!({})))
        .await;
    assert_eq!(t1["token_type"], "Bearer");
    assert_eq!(t1["matrix_server_name"], "localhost");
    assert_eq!(t1["expires_in"], 3600);
    let token = t1["access_token"].as_str().unwrap().to_owned();
    let t2 = server
        .ok("POST", &path(&alice_id), &alice, Some(json!({})))
        .await;
    assert_ne!(t2["access_token"], t1["access_token"]);
    assert_eq!(
        server
            .hs()
            .openid_user(&token)
            .await
            .unwrap()
            .map(|u| u.to_string()),
        Some(alice_id.clone())
    );
    assert_eq!(server.hs().openid_user("made-up").await.unwrap(), None);
    let (status, _) = server
        .req("POST", &path(&alice_id), Some(&bob), Some(json!({})))
        .await;
    assert_eq!(status, 403);

    // No bridges: no protocols; lookups find nothing, or 404 for what does not exist.
    let get = |p: &'static str| {
        let server = &server;
        let bob = bob.clone();
        async move { server.req("GET", p, Some(&bob), None).await }
    };
    assert_eq!(
        get("/_matrix/client/v3/thirdparty/protocols").await,
        (200, json!({}))
    );
    assert_eq!(
        get("/_matrix/client/v3/thirdparty/protocol/irc").await.0,
        404
    );
    assert_eq!(
        get("/_matrix/client/v3/thirdparty/location/irc").await.0,
        404
    );
    assert_eq!(get("/_matrix/client/v3/thirdparty/user/irc").await.0, 404);
    server
        .create_room(&alice, json!({ "room_alias_name": "known" }))
        .await;
    assert_eq!(
        get("/_matrix/client/v3/thirdparty/location?alias=%23known%3Alocalhost").await,
        (200, json!([]))
    );
    assert_eq!(
        get("/_matrix/client/v3/thirdparty/location?alias=%23gone%3Alocalhost")
            .await
            .0,
        404
    );
    let known = format!(
        "/_matrix/client/v3/thirdparty/user?userid={}",
        urlencode(&bob_id)
    );
    let (status, body) = server.req("GET", &known, Some(&bob), None).await;
    assert_eq!((status, body), (200, json!([])));
    assert_eq!(
        get("/_matrix/client/v3/thirdparty/user?userid=%40ghost%3Alocalhost")
            .await
            .0,
        404
    );
}
