//! Push rules: server defaults, user rules, enabling and actions.

use serde_json::json;

use crate::harness;

#[tokio::test]
async fn push_rules_defaults_and_changes() {
    let server = harness::start().await;
    let (_, t) = server.register("pat").await;
    let t = Some(t.as_str());
    let (status, body) = server
        .req("GET", "/_matrix/client/v3/pushrules/", t, None)
        .await;
    assert_eq!(status, 200);
    assert!(
        body["global"]["override"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["rule_id"] == ".m.rule.master"),
        "{body}"
    );
    let (_, sync) = server.req("GET", "/_matrix/client/v3/sync", t, None).await;
    assert!(
        sync["account_data"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.push_rules"),
        "{sync}"
    );

    let path = "/_matrix/client/v3/pushrules/global/content/cake";
    let (status, body) = server
        .req(
            "PUT",
            path,
            t,
            Some(json!({ "pattern": "cake*", "actions": ["notify"] })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server.req("GET", path, t, None).await;
    assert_eq!(
        (status, body["pattern"].as_str(), body["enabled"].as_bool()),
        (200, Some("cake*"), Some(true)),
        "{body}"
    );
    let (status, _) = server
        .req(
            "PUT",
            &format!("{path}/enabled"),
            t,
            Some(json!({ "enabled": false })),
        )
        .await;
    assert_eq!(status, 200);
    let (_, body) = server.req("GET", &format!("{path}/enabled"), t, None).await;
    assert_eq!(body["enabled"], false);
    let (status, _) = server
        .req(
            "PUT",
            &format!("{path}/actions"),
            t,
            Some(json!({ "actions": [] })),
        )
        .await;
    assert_eq!(status, 200);
    let (_, body) = server.req("GET", &format!("{path}/actions"), t, None).await;
    assert_eq!(body["actions"], json!([]));
    let (status, _) = server.req("DELETE", path, t, None).await;
    assert_eq!(status, 200);
    let (status, body) = server.req("GET", path, t, None).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (404, Some("M_NOT_FOUND"))
    );
    // Server-default rule IDs cannot be created by users.
    let (status, _) = server
        .req(
            "PUT",
            "/_matrix/client/v3/pushrules/global/override/.m.rule.mine",
            t,
            Some(json!({ "actions": [], "conditions": [] })),
        )
        .await;
    assert_eq!(status, 400);
    // m.push_rules is not writable through plain account data.
    let (status, _) = server
        .req(
            "PUT",
            "/_matrix/client/v3/user/@pat:localhost/account_data/m.push_rules",
            t,
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 400);
    server.stop().await;
}
