//! The user directory (spec: "User directory"): room-mates and members of public rooms,
//! or with `user_directory.search_all_users` every local user.

use serde_json::{json, Value};

use crate::harness::{self, urlencode, TestServer};

async fn find(server: &TestServer, token: &str, term: &str, limit: Option<u64>) -> Value {
    let mut body = json!({ "search_term": term });
    if let Some(l) = limit {
        body["limit"] = l.into();
    }
    server
        .ok(
            "POST",
            "/_matrix/client/v3/user_directory/search",
            token,
            Some(body),
        )
        .await
}

fn ids(body: &Value) -> Vec<String> {
    body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|u| u["user_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_directory_finds_room_mates_and_public_room_members() {
    for all in [false, true] {
        let server = harness::start_configured(harness::Options::default(), |c| {
            c.user_directory.search_all_users = all;
        })
        .await;
        let (_, alice) = server.register("alice").await;
        let (bob_id, bob) = server.register("bob").await;
        let (carol_id, carol) = server.register("carol").await;
        let (dave_id, _) = server.register("dave").await;
        let private = server
            .create_room(&alice, json!({ "preset": "private_chat" }))
            .await;
        server
            .ok(
                "POST",
                &format!("/_matrix/client/v3/rooms/{private}/invite"),
                &alice,
                Some(json!({ "user_id": bob_id })),
            )
            .await;
        server.membership(&bob, &private, "join").await;
        server
            .ok(
                "PUT",
                &format!(
                    "/_matrix/client/v3/profile/{}/displayname",
                    urlencode(&bob_id)
                ),
                &bob,
                Some(json!({ "displayname": "Bobby Tables" })),
            )
            .await;
        server
            .create_room(
                &carol,
                json!({ "preset": "public_chat", "visibility": "public" }),
            )
            .await;

        let r = find(&server, &alice, "bo", None).await;
        assert_eq!(ids(&r), vec![bob_id.clone()], "{r}");
        assert_eq!(r["results"][0]["display_name"], "Bobby Tables");
        assert_eq!(
            ids(&find(&server, &alice, "tabl", None).await),
            vec![bob_id.clone()]
        );
        assert_eq!(
            ids(&find(&server, &alice, "CAR", None).await),
            vec![carol_id.clone()]
        );
        // Dave shares nothing: found only when the server lists every local user.
        let d = ids(&find(&server, &alice, "dave", None).await);
        assert_eq!(d.contains(&dave_id), all, "{d:?}");
        assert_eq!(
            ids(&find(&server, &alice, "nobody", None).await),
            Vec::<String>::new()
        );
        // A limit below the matches says `limited`; room-mates rank first.
        let r = find(&server, &alice, "localhost", Some(1)).await;
        assert_eq!(r["limited"], true, "{r}");
        let r = find(&server, &alice, "localhost", None).await;
        assert_eq!(ids(&r).first(), Some(&bob_id), "{r}");
        let _ = carol;
    }
}
