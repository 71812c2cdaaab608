//! VoIP (spec: "Voice over IP"): `/voip/turnServer` credentials, checked by a real TURN
//! server (coturn, with `use-auth-secret`): they allocate a relay, and neither a wrong
//! password nor an expired credential does.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::harness;

/// coturn's binaries, installed from Debian's packages if missing (once per test run).
fn ensure_coturn() {
    static DONE: std::sync::Once = std::sync::Once::new();
    DONE.call_once(|| {
        let found = |b: &str| {
            std::process::Command::new("sh")
                .args(["-c", &format!("command -v {b}")])
                .stdout(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if found("turnserver") && found("turnutils_uclient") {
            return;
        }
        let status = std::process::Command::new("sh")
            .args(["-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq coturn"])
            .status()
            .expect("apt-get");
        assert!(status.success(), "installing coturn failed");
    });
}

/// A free UDP port on loopback (released for coturn to take).
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Asks coturn for an allocation (and relays two messages through it) with these
/// credentials; whether it worked.
async fn allocates(port: u16, username: &str, password: &str) -> bool {
    let status = tokio::process::Command::new("turnutils_uclient")
        .args([
            "-y", "-n", "1", "-m", "1", "-u", username, "-w", password, "-p",
        ])
        .arg(port.to_string())
        .arg("127.0.0.1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .status();
    matches!(tokio::time::timeout(Duration::from_secs(30), status).await, Ok(Ok(s)) if s.success())
}

#[tokio::test]
async fn turn_credentials_are_unset_without_a_turn_server() {
    let server = harness::start().await;
    let (_, t) = server.register("alice").await;
    let (status, body) = server
        .req("GET", "/_matrix/client/v3/voip/turnServer", Some(&t), None)
        .await;
    assert_eq!((status, body), (200, json!({})));
    let (status, body) = server
        .req("GET", "/_matrix/client/v3/voip/turnServer", None, None)
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (401, Some("M_MISSING_TOKEN"))
    );
    server.stop().await;
}

#[tokio::test]
async fn turn_credentials_work_on_a_real_turn_server_until_they_expire() {
    ensure_coturn();
    let port = free_udp_port();
    let secret = "a shared secret";
    let _coturn = tokio::process::Command::new("turnserver")
        .args([
            "--use-auth-secret",
            "--realm=tessera.test",
            "--listening-ip=127.0.0.1",
        ])
        .args(["--relay-ip=127.0.0.1", "--no-tls", "--no-dtls", "--no-cli"])
        .args([
            "--allow-loopback-peers",
            "--log-file=stdout",
            "--simple-log",
        ])
        .arg(format!("--static-auth-secret={secret}"))
        .arg(format!("--listening-port={port}"))
        .args(["--min-port=49160", "--max-port=49400"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("coturn's turnserver is installed (.ci/run installs it)");
    static URIS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let _ = URIS.set(vec![format!("turn:127.0.0.1:{port}?transport=udp")]);
    let server = harness::start_with(harness::Options {
        configure: |c| {
            c.voip.turn_uris = URIS.get().cloned().unwrap_or_default();
            c.voip.turn_shared_secret = Some("a shared secret".into());
            c.voip.turn_user_lifetime_ms = 3_600_000;
        },
        ..Default::default()
    })
    .await;
    let (alice_id, t) = server.register("alice").await;
    let body = server
        .ok("GET", "/_matrix/client/v3/voip/turnServer", &t, None)
        .await;
    assert_eq!(body["ttl"], 3600, "{body}");
    assert_eq!(body["uris"], json!(URIS.get()), "{body}");
    let username = body["username"].as_str().expect("username");
    let password = body["password"].as_str().expect("password");
    let (expiry, user) = username.split_once(':').expect("expiry:user");
    assert_eq!(user, alice_id);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let expiry: u64 = expiry.parse().expect("a number");
    assert!(
        (now + 3590..=now + 3610).contains(&expiry),
        "{expiry} vs {now}"
    );

    // coturn may take a moment to listen.
    let mut ok = false;
    for _ in 0..10 {
        if allocates(port, username, password).await {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(ok, "the TURN server accepts the credentials");
    assert!(!allocates(port, username, "not the password").await);
    let user_id = ruma::UserId::parse(alice_id.as_str()).expect("user id");
    let (old_name, old_pass) =
        tessera_core::voip::turn_credentials(secret, &user_id, now - 60).expect("credentials");
    assert!(
        !allocates(port, &old_name, &old_pass).await,
        "expired credentials are refused"
    );
    server.stop().await;
}
