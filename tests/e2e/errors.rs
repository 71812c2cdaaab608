//! Bad input gets the right Matrix error, never a 500.

use serde_json::json;

use crate::harness::{self, Options};

#[tokio::test]
async fn error_codes() {
    let server = harness::start().await;
    let (_, token) = server.register("erin").await;
    let t = Some(token.as_str());

    let (status, body) = server
        .req("GET", "/_matrix/client/v3/no_such_thing", t, None)
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (404, Some("M_UNRECOGNIZED"))
    );
    let (status, body) = server
        .req("DELETE", "/_matrix/client/v3/account/whoami", t, None)
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (405, Some("M_UNRECOGNIZED"))
    );
    let (status, body) = server
        .req("GET", "/_matrix/client/v3/joined_rooms", None, None)
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (401, Some("M_MISSING_TOKEN"))
    );
    let (status, body) = server
        .req(
            "GET",
            "/_matrix/client/v3/joined_rooms",
            Some("syt_bogus"),
            None,
        )
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (401, Some("M_UNKNOWN_TOKEN"))
    );

    // Not JSON at all, and JSON of the wrong shape.
    let res = server
        .http
        .post(format!("{}/_matrix/client/v3/createRoom", server.url))
        .bearer_auth(&token)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["errcode"], "M_NOT_JSON");
    let (status, body) = server
        .req(
            "POST",
            "/_matrix/client/v3/createRoom",
            t,
            Some(json!({ "invite": "not a list" })),
        )
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (400, Some("M_BAD_JSON")),
        "{body}"
    );
    let (status, body) = server
        .req(
            "POST",
            "/_matrix/client/v3/createRoom",
            t,
            Some(json!({ "room_version": "999" })),
        )
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (400, Some("M_UNSUPPORTED_ROOM_VERSION")),
        "{body}"
    );

    // Rooms: unknown, not a member, bad IDs.
    let (status, body) = server
        .req(
            "PUT",
            "/_matrix/client/v3/rooms/!nope:localhost/send/m.room.message/1",
            t,
            Some(json!({ "body": "x" })),
        )
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (404, Some("M_NOT_FOUND")),
        "{body}"
    );
    let (status, body) = server
        .req(
            "GET",
            "/_matrix/client/v3/rooms/not-a-room/messages?dir=b",
            t,
            None,
        )
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (400, Some("M_INVALID_PARAM")),
        "{body}"
    );
    let (_, other) = server.register("frank").await;
    let (_, room) = server
        .req(
            "POST",
            "/_matrix/client/v3/createRoom",
            Some(&other),
            Some(json!({})),
        )
        .await;
    let room = room["room_id"].as_str().unwrap();
    let (status, body) = server
        .req(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/1"),
            t,
            Some(json!({ "body": "x" })),
        )
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{body}"
    );
    let (status, body) = server
        .req(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b"),
            t,
            None,
        )
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{body}"
    );
    let (status, body) = server
        .req(
            "GET",
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=x"),
            t,
            None,
        )
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (400, Some("M_INVALID_PARAM")),
        "{body}"
    );
    let (status, body) = server
        .req("GET", "/_matrix/client/v3/sync?since=garbage", t, None)
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (400, Some("M_INVALID_PARAM")),
        "{body}"
    );
    let (status, body) = server
        .req(
            "POST",
            "/_matrix/client/v3/register",
            None,
            Some(json!({ "username": "Bad Name!", "auth": { "type": "m.login.dummy" } })),
        )
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (400, Some("M_INVALID_USERNAME")),
        "{body}"
    );
    let (status, body) = server
        .req(
            "POST",
            "/_matrix/client/v3/register",
            None,
            Some(json!({ "username": "erin", "auth": { "type": "m.login.dummy" } })),
        )
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (400, Some("M_USER_IN_USE")),
        "{body}"
    );

    // Oversized bodies are refused.
    let big = "x".repeat(9 * 1024 * 1024);
    let res = server
        .http
        .put(format!(
            "{}/_matrix/client/v3/user/@erin:localhost/account_data/big",
            server.url
        ))
        .bearer_auth(&token)
        .body(format!("{{\"a\":\"{big}\"}}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 413);
    server.stop().await;
}

#[tokio::test]
async fn rate_limits() {
    let server = harness::start_with(Options {
        registration_open: true,
        rate_limits: true,
        ..Default::default()
    })
    .await;
    let mut limited = None;
    for i in 0..20 {
        let (status, body) = server
            .req(
                "POST",
                "/_matrix/client/v3/login",
                None,
                Some(json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "nobody" }, "password": format!("{i}") })),
            )
            .await;
        if status == 429 {
            limited = Some(body);
            break;
        }
    }
    let body = limited.expect("rate limited within 20 attempts");
    assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED");
    assert!(body["retry_after_ms"].as_u64().is_some(), "{body}");
    server.stop().await;
}
