//! `docs/endpoints.md` lists every client-server endpoint of the spec and whether Tessera
//! serves it; this test sends each one to a running server and checks the table.

use crate::harness;

/// A value for each path parameter, of the kind the parameter names, so a served route
/// gets past its path parsing.
fn sample(param: &str) -> &'static str {
    match param {
        "roomId" | "roomIdOrAlias" => "!nowhere:localhost",
        "roomAlias" => "#nowhere:localhost",
        "userId" => "@nobody:localhost",
        "eventId" => "$nothing",
        "eventType" | "type" => "m.room.message",
        "relType" => "m.thread",
        "stateKey" => "key",
        "kind" => "override",
        "ruleId" => ".m.rule.master",
        "serverName" => "localhost",
        "mediaId" => "nothing",
        "deviceId" => "NODEVICE",
        "filterId" => "1",
        "tag" => "u.tag",
        "version" => "1",
        "loginType" => "m.login.registration_token",
        "fileName" => "file.txt",
        "protocol" => "irc",
        "appserviceId" => "nothing",
        "txnId" => "txn1",
        _ => "x",
    }
}

fn fill(template: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let Some(j) = rest[i..].find('}') else { break };
        out.push_str(&harness::urlencode(sample(&rest[i + 1..i + j])));
        rest = &rest[i + j + 1..];
    }
    out.push_str(rest);
    out
}

#[tokio::test]
async fn endpoints_listed_as_served_are_served() {
    let server = harness::start().await;
    let (_, token) = server.register("prober").await;
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/endpoints.md");
    let doc = std::fs::read_to_string(path).expect("docs/endpoints.md");
    let mut out = Vec::new();
    let mut wrong = Vec::new();
    for line in doc.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // `| GET | `/path` | no | yes |`
        let [_, method, template, deprecated, listed, _] = cells[..] else {
            out.push(line.to_owned());
            continue;
        };
        let Some(template) = template.strip_prefix('`').and_then(|t| t.strip_suffix('`')) else {
            out.push(line.to_owned());
            continue;
        };
        let body = matches!(method, "POST" | "PUT").then(|| serde_json::json!({}));
        let (status, resp) = server
            .req(method, &fill(template), Some(&token), body)
            .await;
        // The router's own answers to a path or method it does not serve.
        let served = !(resp["errcode"] == "M_UNRECOGNIZED" && matches!(status, 404 | 405));
        let served = if served { "yes" } else { "no" };
        if listed != served {
            wrong.push(format!(
                "{method} {template}: listed {listed}, answers {status} {resp}"
            ));
        }
        out.push(format!(
            "| {method} | `{template}` | {deprecated} | {served} |"
        ));
    }
    if std::env::var_os("TESSERA_UPDATE_ENDPOINTS").is_some() {
        std::fs::write(path, out.join("\n") + "\n").expect("write docs/endpoints.md");
        return;
    }
    assert!(
        wrong.is_empty(),
        "docs/endpoints.md is wrong:\n{}",
        wrong.join("\n")
    );
}
