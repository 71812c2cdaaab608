//! Registration, login, tokens and devices over raw HTTP.

use serde_json::json;

use crate::harness::{self, Options};

#[tokio::test]
async fn registration_closed_by_default_token_opens_it() {
    let server = harness::start_with(Options {
        registration_open: false,
        ..Default::default()
    })
    .await;
    // Dummy auth is not offered.
    let (status, body) = server
        .req(
            "POST",
            "/_matrix/client/v3/register",
            None,
            Some(json!({ "username": "eve", "password": "pw-pw-pw-pw" })),
        )
        .await;
    assert_eq!(status, 401);
    let flows = body["flows"].to_string();
    assert!(
        flows.contains("m.login.registration_token") && !flows.contains("m.login.dummy"),
        "{flows}"
    );
    let session = body["session"].as_str().unwrap().to_owned();
    let (status, body) = server
        .req(
            "POST",
            "/_matrix/client/v3/register",
            None,
            Some(json!({ "username": "eve", "password": "pw-pw-pw-pw", "auth": { "type": "m.login.dummy", "session": session } })),
        )
        .await;
    assert_eq!(status, 401, "{body}");

    // A one-use token registers exactly one account.
    let token = server
        .hs()
        .create_registration_token(Some(1))
        .await
        .unwrap();
    let (status, body) = server
        .req(
            "GET",
            &format!(
                "/_matrix/client/v1/register/m.login.registration_token/validity?token={token}"
            ),
            None,
            None,
        )
        .await;
    assert_eq!((status, body["valid"].as_bool()), (200, Some(true)));
    let reg = |name: &'static str| {
        let token = token.clone();
        let server = &server;
        async move {
            server
                .req(
                    "POST",
                    "/_matrix/client/v3/register",
                    None,
                    Some(json!({ "username": name, "password": "pw-pw-pw-pw", "auth": { "type": "m.login.registration_token", "token": token } })),
                )
                .await
        }
    };
    let (s1, b1) = reg("eve").await;
    assert_eq!(s1, 200, "{b1}");
    assert!(b1["access_token"].is_string());
    let (s2, b2) = reg("mallory").await;
    assert_eq!(s2, 401, "{b2}");
    let (_, body) = server
        .req(
            "GET",
            &format!(
                "/_matrix/client/v1/register/m.login.registration_token/validity?token={token}"
            ),
            None,
            None,
        )
        .await;
    assert_eq!(body["valid"].as_bool(), Some(false));
    server.stop().await;
}

#[tokio::test]
async fn login_whoami_logout_and_devices() {
    let server = harness::start().await;
    let (user, token) = server.register("carol").await;
    let (status, body) = server
        .req(
            "GET",
            "/_matrix/client/v3/account/whoami",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(
        (status, body["user_id"].as_str()),
        (200, Some(user.as_str()))
    );

    // Wrong password: 403 M_FORBIDDEN.
    let (status, body) = server
        .req(
            "POST",
            "/_matrix/client/v3/login",
            None,
            Some(json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "carol" }, "password": "nope" })),
        )
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (403, Some("M_FORBIDDEN"))
    );

    // A second device, with a refresh token.
    let (status, body) = server
        .req(
            "POST",
            "/_matrix/client/v3/login",
            None,
            Some(json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "carol" },
                         "password": "correct horse battery", "device_id": "PHONE", "refresh_token": true })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let phone = body["access_token"].as_str().unwrap().to_owned();
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();
    assert!(body["expires_in_ms"].as_u64().is_some());

    let (_, body) = server
        .req("GET", "/_matrix/client/v3/devices", Some(&token), None)
        .await;
    assert_eq!(
        body["devices"].as_array().map(|d| d.len()),
        Some(2),
        "{body}"
    );

    // Refresh tokens work once.
    let (status, body) = server
        .req(
            "POST",
            "/_matrix/client/v3/refresh",
            None,
            Some(json!({ "refresh_token": refresh })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let new_access = body["access_token"].as_str().unwrap().to_owned();
    let (status, _) = server
        .req(
            "POST",
            "/_matrix/client/v3/refresh",
            None,
            Some(json!({ "refresh_token": refresh })),
        )
        .await;
    assert_eq!(status, 401);
    let (status, _) = server
        .req(
            "GET",
            "/_matrix/client/v3/account/whoami",
            Some(&phone),
            None,
        )
        .await;
    assert_eq!(status, 401, "the refreshed-away access token is dead");
    let (status, _) = server
        .req(
            "GET",
            "/_matrix/client/v3/account/whoami",
            Some(&new_access),
            None,
        )
        .await;
    assert_eq!(status, 200);

    // Deleting the phone needs UIA with the password.
    let (status, body) = server
        .req(
            "DELETE",
            "/_matrix/client/v3/devices/PHONE",
            Some(&token),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 401);
    let session = body["session"].as_str().unwrap();
    let (status, body) = server
        .req(
            "DELETE",
            "/_matrix/client/v3/devices/PHONE",
            Some(&token),
            Some(json!({ "auth": { "type": "m.login.password", "identifier": { "type": "m.id.user", "user": user },
                                   "password": "correct horse battery", "session": session } })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .req(
            "GET",
            "/_matrix/client/v3/account/whoami",
            Some(&new_access),
            None,
        )
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (401, Some("M_UNKNOWN_TOKEN"))
    );

    // Logout kills the token.
    let (status, _) = server
        .req(
            "POST",
            "/_matrix/client/v3/logout",
            Some(&token),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = server
        .req(
            "GET",
            "/_matrix/client/v3/account/whoami",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (401, Some("M_UNKNOWN_TOKEN"))
    );
    server.stop().await;
}

#[tokio::test]
async fn deactivation_stops_tokens_at_once() {
    let server = harness::start().await;
    let (user, token) = server.register("dave").await;
    let auth = json!({ "auth": { "type": "m.login.password", "identifier": { "type": "m.id.user", "user": user }, "password": "correct horse battery" } });
    let (status, body) = server
        .req(
            "POST",
            "/_matrix/client/v3/account/deactivate",
            Some(&token),
            Some(auth),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = server
        .req(
            "GET",
            "/_matrix/client/v3/account/whoami",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, 401);
    let (status, body) = server
        .req(
            "POST",
            "/_matrix/client/v3/login",
            None,
            Some(json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "dave" }, "password": "correct horse battery" })),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    server.stop().await;
}
