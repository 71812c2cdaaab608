//! Storage: migrations on a fresh database, concurrent start-up, newer schemas refused.

use crate::harness::{self, Options};

#[tokio::test]
async fn concurrent_migrations_and_newer_schema_refused() {
    let db = harness::test_db(Options::default()).await;
    // Two nodes starting at once on an empty database both come up.
    let (a, b) = tokio::join!(
        tessera_server::open_homeserver(&db.config),
        tessera_server::open_homeserver(&db.config)
    );
    let a = a.expect("first node");
    b.expect("second node");
    // A schema from a newer binary makes start-up fail instead of guessing.
    a.db.execute("INSERT INTO schema_version (version) VALUES (999)", vec![])
        .await
        .unwrap();
    drop(a);
    let err = tessera_server::open_homeserver(&db.config)
        .await
        .err()
        .expect("refused");
    assert!(format!("{err:#}").contains("newer"), "{err:#}");
    db.drop_db().await;
}

/// Stream positions and room heads live in the serving process, so a second node on the
/// same database is refused rather than left to hand out clashing positions; once the
/// first stops, a new one starts.
#[tokio::test]
async fn second_node_on_one_database_is_refused() {
    let mut server = harness::start().await;
    let mut second = server.config.clone();
    second.listen.client = "127.0.0.1:0".into();
    let err = tessera_server::start(second.clone())
        .await
        .err()
        .expect("second node refused");
    assert!(
        format!("{err:#}").contains("another Tessera process"),
        "{err:#}"
    );
    // The first node still serves, and a restart (stop, then start) takes the lock over.
    let (status, _) = server
        .req("GET", "/_matrix/client/versions", None, None)
        .await;
    assert_eq!(status, 200);
    server.restart().await;
    let (status, _) = server
        .req("GET", "/_matrix/client/versions", None, None)
        .await;
    assert_eq!(status, 200);
    server.stop().await;
}
