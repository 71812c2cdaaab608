//! Rate limits: every budget refuses a burst with 429 `M_LIMIT_EXCEEDED`, `retry_after_ms`
//! and a `Retry-After` header, and leaves other users (or addresses, or accounts) alone.

use serde_json::{json, Value};
use tessera_server::config::{Budget, Config};

use crate::harness::{self, Options, TestServer};

/// Everything generous, so a test sees only the budget it tightens.
fn generous(c: &mut Config) {
    let lots = Budget {
        per_second: 1000.0,
        burst: 10_000,
    };
    let r = &mut c.rate_limits;
    r.enabled = true;
    r.per_second = 1000.0;
    r.burst = 10_000;
    // The tests' requests come from loopback: let them name other addresses.
    r.trusted_proxies = vec!["127.0.0.1".into()];
    for b in [
        &mut r.per_ip,
        &mut r.ephemeral,
        &mut r.profile,
        &mut r.messages,
        &mut r.joins,
        &mut r.invites,
        &mut r.registration,
        &mut r.login,
        &mut r.login_account,
        &mut r.to_device,
    ] {
        *b = lots;
    }
}

/// A budget of `burst` that refills slowly (one per 100 s).
fn tight(burst: u32) -> Budget {
    Budget {
        per_second: 0.01,
        burst,
    }
}

async fn start(configure: fn(&mut Config)) -> TestServer {
    harness::start_with(Options {
        configure,
        ..Default::default()
    })
    .await
}

/// Sends a request, optionally from another address (`X-Forwarded-For` is trusted here).
async fn send(
    server: &TestServer,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
    from: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut r = server.http.request(
        reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
        format!("{}{path}", server.url),
    );
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    if let Some(ip) = from {
        r = r.header("X-Forwarded-For", ip);
    }
    let res = r.send().await.expect("answered");
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

/// Asserts the answer is a proper rate-limit refusal.
fn assert_limited(what: &str, (status, headers, body): &(u16, reqwest::header::HeaderMap, Value)) {
    assert_eq!(*status, 429, "{what}: {body}");
    assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED", "{what}");
    assert!(
        body["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0),
        "{what}: {body}"
    );
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1, "{what}: Retry-After {retry}");
}

fn assert_ok(what: &str, (status, _, body): &(u16, reqwest::header::HeaderMap, Value)) {
    assert_eq!(*status, 200, "{what}: {body}");
}

#[tokio::test]
async fn every_route_spends_the_users_request_budget() {
    fn config(c: &mut Config) {
        generous(c);
        c.rate_limits.per_second = 0.01;
        c.rate_limits.burst = 3;
        c.rate_limits.exempt_users = vec!["@lim-admin:localhost".into()];
    }
    let server = start(config).await;
    // Registrations come from addresses of their own: unauthenticated requests spend
    // their address's request budget.
    let register = |name: String, ip: String| {
        let server = &server;
        async move {
            let body = json!({ "username": name, "password": "correct horse battery", "auth": { "type": "m.login.dummy" } });
            let (status, _, body) = send(
                server,
                "POST",
                "/_matrix/client/v3/register",
                None,
                Some(body),
                Some(&ip),
            )
            .await;
            assert_eq!(status, 200, "{body}");
            (
                body["user_id"].as_str().unwrap().to_owned(),
                body["access_token"].as_str().unwrap().to_owned(),
            )
        }
    };
    let (_, admin_token) = register("lim-admin".into(), "10.9.9.9".into()).await;
    let room = server
        .create_room(
            &admin_token,
            json!({ "preset": "public_chat", "power_level_content_override": { "state_default": 0 } }),
        )
        .await;
    let r = |p: &str| format!("/_matrix/client/v3/rooms/{room}/{p}");
    // The routes that once were never limited, each tried by a fresh user.
    let cases: Vec<(&str, String, Value)> = vec![
        ("PUT", r("send/m.room.message/{n}"), json!({ "body": "x" })),
        ("PUT", r("state/x.custom/{n}"), json!({})),
        ("PUT", r("typing/{user}"), json!({ "typing": true })),
        ("POST", r("receipt/m.read/{event}"), json!({})),
        (
            "PUT",
            "/_matrix/client/v3/sendToDevice/m.x/{n}".into(),
            json!({ "messages": {} }),
        ),
        (
            "PUT",
            "/_matrix/client/v3/presence/{user}/status".into(),
            json!({ "presence": "online" }),
        ),
        ("GET", "/_matrix/client/v3/joined_rooms".into(), Value::Null),
        ("GET", "/_matrix/client/v3/sync".into(), Value::Null),
    ];
    for (i, (method, template, body)) in cases.into_iter().enumerate() {
        let (user, token) = register(format!("lim-user{i}"), format!("10.9.0.{i}")).await;
        // Joining spends one request; the event is the admin's message.
        server.membership(&token, &room, "join").await;
        let event = server
            .send_text(&admin_token, &room, &format!("e{i}"), "m")
            .await;
        let path = |n: usize| {
            template
                .replace("{n}", &n.to_string())
                .replace("{user}", &user)
                .replace("{event}", &event)
        };
        let body = (!body.is_null()).then_some(body);
        for n in 0..2 {
            let answer = send(&server, method, &path(n), Some(&token), body.clone(), None).await;
            assert_ok(&path(n), &answer);
        }
        let answer = send(&server, method, &path(2), Some(&token), body.clone(), None).await;
        assert_limited(&path(2), &answer);
    }
    // Others are unaffected: a new user has a full budget.
    let (_, fresh) = register("lim-fresh".into(), "10.9.1.1".into()).await;
    let answer = send(
        &server,
        "GET",
        "/_matrix/client/v3/joined_rooms",
        Some(&fresh),
        None,
        None,
    )
    .await;
    assert_ok("a fresh user", &answer);
    server.stop().await;
}

#[tokio::test]
async fn messages_joins_and_invites_have_budgets_of_their_own() {
    fn config(c: &mut Config) {
        generous(c);
        c.rate_limits.messages = tight(3);
        c.rate_limits.joins = tight(2);
        c.rate_limits.invites = tight(2);
    }
    let server = start(config).await;
    let (_, alice) = server.register("alice").await;
    let (_, bob) = server.register("bob").await;
    let mut users = Vec::new();
    for i in 0..4 {
        users.push(server.register(&format!("guest{i}")).await.0);
    }
    // createRoom is one message; two more pass, the fourth is refused.
    let room = server
        .create_room(&alice, json!({ "preset": "public_chat" }))
        .await;
    let path = |n: u32| format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{n}");
    for n in 0..2 {
        assert_ok(
            "message",
            &send(
                &server,
                "PUT",
                &path(n),
                Some(&alice),
                Some(json!({ "body": "x" })),
                None,
            )
            .await,
        );
    }
    let answer = send(
        &server,
        "PUT",
        &path(2),
        Some(&alice),
        Some(json!({ "body": "x" })),
        None,
    )
    .await;
    assert_limited("fourth message", &answer);
    let state = format!("/_matrix/client/v3/rooms/{room}/state/m.room.topic");
    assert_limited(
        "state event",
        &send(
            &server,
            "PUT",
            &state,
            Some(&alice),
            Some(json!({ "topic": "t" })),
            None,
        )
        .await,
    );
    // Reading is not sending.
    let read = format!("/_matrix/client/v3/rooms/{room}/messages?dir=b");
    assert_ok(
        "reading",
        &send(&server, "GET", &read, Some(&alice), None, None).await,
    );

    // Bob's budgets are his own.
    let join = format!("/_matrix/client/v3/join/{room}");
    assert_ok(
        "join",
        &send(&server, "POST", &join, Some(&bob), Some(json!({})), None).await,
    );
    assert_ok(
        "message by another user",
        &send(
            &server,
            "PUT",
            &path(10),
            Some(&bob),
            Some(json!({ "body": "x" })),
            None,
        )
        .await,
    );
    let other = server
        .create_room(&bob, json!({ "preset": "public_chat" }))
        .await;
    let (_, carol) = server.register("carol").await;
    for target in [&room, &other] {
        let p = format!("/_matrix/client/v3/join/{target}");
        assert_ok(
            "carol joins",
            &send(&server, "POST", &p, Some(&carol), Some(json!({})), None).await,
        );
    }
    let knock = format!("/_matrix/client/v3/knock/{room}");
    assert_limited(
        "third join",
        &send(&server, "POST", &knock, Some(&carol), Some(json!({})), None).await,
    );

    // Invites: bob invites two guests to his room, the third is refused.
    let invite = format!("/_matrix/client/v3/rooms/{other}/invite");
    for guest in &users[..2] {
        assert_ok(
            "invite",
            &send(
                &server,
                "POST",
                &invite,
                Some(&bob),
                Some(json!({ "user_id": guest })),
                None,
            )
            .await,
        );
    }
    let answer = send(
        &server,
        "POST",
        &invite,
        Some(&bob),
        Some(json!({ "user_id": users[2] })),
        None,
    )
    .await;
    assert_limited("third invite", &answer);
    server.stop().await;
}

#[tokio::test]
async fn registration_and_login_are_limited_per_address_and_per_account() {
    fn config(c: &mut Config) {
        generous(c);
        c.rate_limits.registration = tight(3);
        c.rate_limits.login = tight(4);
        c.rate_limits.login_account = tight(2);
    }
    let server = start(config).await;
    let register = |name: &str| json!({ "username": name, "password": "correct horse battery", "auth": { "type": "m.login.dummy" } });
    for n in 0..3 {
        let answer = send(
            &server,
            "POST",
            "/_matrix/client/v3/register",
            None,
            Some(register(&format!("reg{n}"))),
            Some("10.0.0.1"),
        )
        .await;
        assert_ok("registration", &answer);
    }
    let answer = send(
        &server,
        "POST",
        "/_matrix/client/v3/register",
        None,
        Some(register("reg3")),
        Some("10.0.0.1"),
    )
    .await;
    assert_limited("fourth registration from one address", &answer);
    let answer = send(
        &server,
        "POST",
        "/_matrix/client/v3/register",
        None,
        Some(register("reg3")),
        Some("10.0.0.2"),
    )
    .await;
    assert_ok("another address", &answer);

    let login = |user: &'static str, password: &'static str, ip: &'static str| {
        let body = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": user }, "password": password });
        send(
            &server,
            "POST",
            "/_matrix/client/v3/login",
            None,
            Some(body),
            Some(ip),
        )
    };
    let right = "correct horse battery";
    // Per account: right passwords spend nothing…
    for ip in ["10.0.1.1", "10.0.1.2", "10.0.1.1"] {
        assert_ok("a right password", &login("reg0", right, ip).await);
    }
    // …wrong ones do, wherever they come from: two use the budget up, the third finds
    // it empty, and then even the right one waits.
    for ip in ["10.0.1.4", "10.0.1.5", "10.0.1.6"] {
        assert_eq!(login("reg0", "wrong", ip).await.0, 403);
    }
    assert_limited("a locked account", &login("reg0", right, "10.0.1.7").await);
    // Another account is unaffected.
    assert_ok("another account", &login("reg1", right, "10.0.1.7").await);
    // Per address: four attempts from one address, whatever the accounts.
    for user in ["reg1", "reg2"] {
        assert_eq!(login(user, "wrong", "10.0.1.7").await.0, 403, "{user}");
    }
    assert_limited(
        "a fifth login from one address",
        &login("reg2", right, "10.0.1.7").await,
    );

    // Wrong passwords through user-interactive auth spend the account's budget too.
    let (_, token) = server.register("uia-target").await;
    let auth = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "uia-target" }, "password": "wrong" });
    let deactivate = || {
        send(
            &server,
            "POST",
            "/_matrix/client/v3/account/deactivate",
            Some(&token),
            Some(json!({ "auth": auth })),
            None,
        )
    };
    for _ in 0..3 {
        assert_eq!(deactivate().await.0, 401);
    }
    assert_limited("a fourth wrong password through UIA", &deactivate().await);
    server.stop().await;
}

#[tokio::test]
async fn to_device_fan_out_and_addresses_have_budgets() {
    fn config(c: &mut Config) {
        generous(c);
        c.rate_limits.to_device = tight(10);
        c.rate_limits.per_ip = tight(30);
    }
    let server = start(config).await;
    let (alice, alice_token) = server.register("fan-alice").await;
    let (_, bob_token) = server.register("fan-bob").await;
    let to = |n: usize| {
        let devices: serde_json::Map<String, Value> = (0..n)
            .map(|i| (format!("DEV{i}"), json!({ "i": i })))
            .collect();
        json!({ "messages": { alice.clone(): devices } })
    };
    let path = |t: &str| format!("/_matrix/client/v3/sendToDevice/m.x/{t}");
    assert_ok(
        "8 recipients",
        &send(
            &server,
            "PUT",
            &path("a"),
            Some(&bob_token),
            Some(to(8)),
            None,
        )
        .await,
    );
    assert_limited(
        "8 more",
        &send(
            &server,
            "PUT",
            &path("b"),
            Some(&bob_token),
            Some(to(8)),
            None,
        )
        .await,
    );
    assert_ok(
        "2 more fit",
        &send(
            &server,
            "PUT",
            &path("c"),
            Some(&bob_token),
            Some(to(2)),
            None,
        )
        .await,
    );
    // More than the whole budget can never pass.
    let (status, _, body) = send(
        &server,
        "PUT",
        &path("d"),
        Some(&alice_token),
        Some(to(11)),
        None,
    )
    .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (413, Some("M_TOO_LARGE")),
        "{body}"
    );
    assert_ok(
        "another sender",
        &send(
            &server,
            "PUT",
            &path("e"),
            Some(&alice_token),
            Some(to(8)),
            None,
        )
        .await,
    );

    // An address's budget covers everyone behind it, signed in or not.
    let mut last = None;
    for _ in 0..40 {
        let answer = send(
            &server,
            "GET",
            "/_matrix/client/versions",
            None,
            None,
            Some("192.0.2.7"),
        )
        .await;
        if answer.0 == 429 {
            last = Some(answer);
            break;
        }
    }
    assert_limited(
        "an address over its budget",
        &last.expect("refused within 40"),
    );
    let answer = send(
        &server,
        "GET",
        "/_matrix/client/v3/joined_rooms",
        Some(&alice_token),
        None,
        Some("192.0.2.7"),
    )
    .await;
    assert_limited("a signed-in user behind that address", &answer);
    let answer = send(
        &server,
        "GET",
        "/_matrix/client/v3/joined_rooms",
        Some(&alice_token),
        None,
        Some("192.0.2.8"),
    )
    .await;
    assert_ok("the same user elsewhere", &answer);
    server.stop().await;
}

#[tokio::test]
async fn admins_and_listed_users_can_be_exempted() {
    fn config(c: &mut Config) {
        generous(c);
        c.rate_limits.messages = tight(1);
        c.rate_limits.exempt_admins = true;
        c.rate_limits.exempt_users = vec!["@bridge:localhost".into()];
    }
    let server = start(config).await;
    server
        .hs()
        .create_user("admin", Some("correct horse battery"), true)
        .await
        .unwrap();
    let admin = server.login("admin").await;
    let (_, bridge) = server.register("bridge").await;
    let (_, person) = server.register("person").await;
    for (who, token, limited) in [
        ("admin", &admin, false),
        ("bridge", &bridge, false),
        ("person", &person, true),
    ] {
        let room = server.create_room(token, json!({})).await;
        let answer = send(
            &server,
            "PUT",
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/1"),
            Some(token),
            Some(json!({ "body": "x" })),
            None,
        )
        .await;
        if limited {
            assert_limited(who, &answer);
        } else {
            assert_ok(who, &answer);
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn ephemeral_updates_profiles_and_room_invites_have_budgets() {
    fn config(c: &mut Config) {
        generous(c);
        c.rate_limits.ephemeral = tight(3);
        c.rate_limits.profile = tight(1);
        c.rate_limits.invites = tight(3);
    }
    let server = start(config).await;
    let (alice, alice_token) = server.register("eph-alice").await;
    let (_, bob_token) = server.register("eph-bob").await;
    let room = server.create_room(&alice_token, json!({})).await;
    let event = server.send_text(&alice_token, &room, "e", "hi").await;
    let (server_ref, token) = (&server, alice_token.as_str());
    let put = |path: String, body: Value| async move {
        send(server_ref, "PUT", &path, Some(token), Some(body), None).await
    };
    let post = |path: String, body: Value| async move {
        send(server_ref, "POST", &path, Some(token), Some(body), None).await
    };
    // Typing, receipts, read markers and presence share one budget.
    let typing = format!("/_matrix/client/v3/rooms/{room}/typing/{alice}");
    assert_ok("typing", &put(typing, json!({ "typing": true })).await);
    let receipt = format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{event}");
    assert_ok("receipt", &post(receipt, json!({})).await);
    let presence = format!("/_matrix/client/v3/presence/{alice}/status");
    assert_ok(
        "presence",
        &put(presence, json!({ "presence": "online" })).await,
    );
    let markers = format!("/_matrix/client/v3/rooms/{room}/read_markers");
    assert_limited(
        "read markers",
        &post(markers, json!({ "m.fully_read": event })).await,
    );
    // One profile change, then the next waits.
    let name = format!("/_matrix/client/v3/profile/{alice}/displayname");
    assert_ok(
        "a new name",
        &put(name.clone(), json!({ "displayname": "A" })).await,
    );
    assert_limited(
        "another name",
        &put(name, json!({ "displayname": "B" })).await,
    );
    // Invites made with a new room spend the invite budget: three people use it up.
    let mut guests = Vec::new();
    for i in 0..4 {
        guests.push(server.register(&format!("eph-guest{i}")).await.0);
    }
    let create = |body: Value| {
        send(
            &server,
            "POST",
            "/_matrix/client/v3/createRoom",
            Some(&bob_token),
            Some(body),
            None,
        )
    };
    assert_ok(
        "three invites",
        &create(json!({ "invite": guests[..3] })).await,
    );
    assert_limited("one more", &create(json!({ "invite": [guests[3]] })).await);
    assert_ok("no invites", &create(json!({})).await);
    server.stop().await;
}

#[tokio::test]
async fn to_device_wildcards_count_every_device_and_untrusted_forwarding_is_ignored() {
    fn config(c: &mut Config) {
        generous(c);
        c.rate_limits.to_device = tight(5);
        c.rate_limits.per_ip = tight(20);
        c.rate_limits.trusted_proxies = Vec::new();
    }
    let server = start(config).await;
    let (alice, _) = server.register("wild-alice").await;
    for _ in 0..3 {
        server.login("wild-alice").await;
    }
    let (_, bob_token) = server.register("wild-bob").await;
    // Alice has four devices: `*` is four messages, so a second fan-out does not fit.
    let all = json!({ "messages": { alice.clone(): { "*": { "x": 1 } } } });
    let (server_ref, token, all_ref) = (&server, bob_token.as_str(), &all);
    let to_device = |txn: &'static str| async move {
        let path = format!("/_matrix/client/v3/sendToDevice/m.x/{txn}");
        send(
            server_ref,
            "PUT",
            &path,
            Some(token),
            Some(all_ref.clone()),
            None,
        )
        .await
    };
    assert_ok("four devices", &to_device("1").await);
    assert_limited("four more", &to_device("2").await);
    // A retry of the first is not charged again.
    assert_ok("a retry", &to_device("1").await);

    // Without trusted proxies, X-Forwarded-For changes nothing: loopback's budget runs out.
    let mut refused = None;
    for i in 0..30 {
        let ip = format!("10.1.1.{i}");
        let answer = send(
            &server,
            "GET",
            "/_matrix/client/versions",
            None,
            None,
            Some(&ip),
        )
        .await;
        if answer.0 == 429 {
            refused = Some(answer);
            break;
        }
    }
    assert_limited(
        "one address, whatever it claims",
        &refused.expect("refused within 30"),
    );
    server.stop().await;
}
