//! Server discovery: `/.well-known/matrix/client` and `/.well-known/matrix/support`.

use serde_json::json;

use crate::harness;

#[tokio::test]
async fn well_known_client_and_support() {
    let server = harness::start().await;
    let (status, body) = server
        .req("GET", "/.well-known/matrix/client", None, None)
        .await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({ "m.homeserver": { "base_url": "http://localhost" } })
        )
    );
    // Not configured: 404, as the spec says.
    let (status, body) = server
        .req("GET", "/.well-known/matrix/support", None, None)
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (404, Some("M_NOT_FOUND"))
    );
    server.stop().await;

    let server = harness::start_with(harness::Options {
        configure: |c| {
            c.public_base_url = Some("https://matrix.example.org".into());
            c.support.contacts = vec![
                tessera_server::config::SupportContact {
                    matrix_id: Some("@admin:example.org".into()),
                    email_address: Some("admin@example.org".into()),
                    role: "m.role.admin".into(),
                },
                tessera_server::config::SupportContact {
                    matrix_id: None,
                    email_address: Some("security@example.org".into()),
                    role: "m.role.security".into(),
                },
            ];
            c.support.page = Some("https://example.org/help".into());
        },
        ..Default::default()
    })
    .await;
    let (_, body) = server
        .req("GET", "/.well-known/matrix/client", None, None)
        .await;
    assert_eq!(
        body["m.homeserver"]["base_url"],
        "https://matrix.example.org"
    );
    let (status, body) = server
        .req("GET", "/.well-known/matrix/support", None, None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({
            "contacts": [
                { "matrix_id": "@admin:example.org", "email_address": "admin@example.org", "role": "m.role.admin" },
                { "email_address": "security@example.org", "role": "m.role.security" },
            ],
            "support_page": "https://example.org/help",
        })
    );
    server.stop().await;
}

#[test]
fn support_contacts_are_checked_at_load() {
    let mut c = tessera_server::config::Config::default();
    c.support.contacts = vec![tessera_server::config::SupportContact {
        matrix_id: None,
        email_address: None,
        role: "m.role.admin".into(),
    }];
    assert!(c.core().is_err(), "a contact needs a way to reach it");
    c.support.contacts[0].matrix_id = Some("not a user".into());
    assert!(c.core().is_err());
    c.support.contacts[0].matrix_id = Some("@admin:example.org".into());
    assert!(c.core().is_ok());
}
