//! Login tokens (spec: `POST /login/get_token`, `m.login.token`): behind user-interactive
//! auth, single use, short lived.

use serde_json::json;

use crate::harness;

#[tokio::test]
async fn a_login_token_signs_in_another_device_once() {
    let server = harness::start().await;
    let (alice_id, alice) = server.register("alice").await;
    let (_, flows) = server
        .req("GET", "/_matrix/client/v3/login", None, None)
        .await;
    assert!(
        flows["flows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["type"] == "m.login.token" && f["get_login_token"] == true),
        "{flows}"
    );
    let caps = server
        .ok("GET", "/_matrix/client/v3/capabilities", &alice, None)
        .await;
    assert_eq!(caps["capabilities"]["m.get_login_token"]["enabled"], true);

    // User-interactive auth first: the password again.
    let path = "/_matrix/client/v1/login/get_token";
    let (status, uia) = server
        .req("POST", path, Some(&alice), Some(json!({})))
        .await;
    assert_eq!(status, 401, "{uia}");
    let session = uia["session"].as_str().expect("session").to_owned();
    let auth = |password: &str| {
        json!({ "auth": { "type": "m.login.password", "session": session, "password": password,
                          "identifier": { "type": "m.id.user", "user": "alice" } } })
    };
    let (status, body) = server
        .req("POST", path, Some(&alice), Some(auth("wrong")))
        .await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = server
        .req(
            "POST",
            path,
            Some(&alice),
            Some(auth("correct horse battery")),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["expires_in_ms"], 120_000);
    let token = body["login_token"]
        .as_str()
        .expect("login_token")
        .to_owned();

    let login = json!({ "type": "m.login.token", "token": token });
    let (status, signed_in) = server
        .req(
            "POST",
            "/_matrix/client/v3/login",
            None,
            Some(login.clone()),
        )
        .await;
    assert_eq!(status, 200, "{signed_in}");
    assert_eq!(signed_in["user_id"], alice_id.as_str());
    let new_token = signed_in["access_token"].as_str().unwrap();
    let me = server
        .ok("GET", "/_matrix/client/v3/account/whoami", new_token, None)
        .await;
    assert_eq!(me["user_id"], alice_id.as_str());
    assert_eq!(
        me["device_id"], signed_in["device_id"],
        "a device of its own"
    );
    // Once only.
    let (status, body) = server
        .req("POST", "/_matrix/client/v3/login", None, Some(login))
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{body}"
    );
    let (status, _) = server
        .req(
            "POST",
            "/_matrix/client/v3/login",
            None,
            Some(json!({ "type": "m.login.token", "token": "syl_made_up" })),
        )
        .await;
    assert_eq!(status, 403);

    // Two logins racing with one token: one wins.
    let (_, uia) = server
        .req("POST", path, Some(&alice), Some(json!({})))
        .await;
    let session = uia["session"].as_str().unwrap().to_owned();
    let body = json!({ "auth": { "type": "m.login.password", "session": session, "password": "correct horse battery",
                                 "identifier": { "type": "m.id.user", "user": "alice" } } });
    let token = server.ok("POST", path, &alice, Some(body)).await["login_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let login = json!({ "type": "m.login.token", "token": token });
    let (a, b) = tokio::join!(
        server.req(
            "POST",
            "/_matrix/client/v3/login",
            None,
            Some(login.clone())
        ),
        server.req(
            "POST",
            "/_matrix/client/v3/login",
            None,
            Some(login.clone())
        ),
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [200, 403], "{a:?} {b:?}");
}
