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
