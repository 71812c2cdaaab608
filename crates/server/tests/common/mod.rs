//! Shared by the server's integration tests.

use sqlx::Connection;

/// Runs `check` with a database URL on SQLite (a fresh file), then, when
/// `TESSERA_TEST_POSTGRES_URL` is set, on a fresh PostgreSQL database named after `name`,
/// dropped afterwards.
pub async fn on_both_engines<F, Fut>(name: &str, check: F)
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("tempdir");
    check(format!("sqlite://{}", dir.path().join("t.db").display())).await;
    if let Ok(base) = std::env::var("TESSERA_TEST_POSTGRES_URL") {
        let name = format!("tessera_{name}_{}", std::process::id());
        let mut conn = sqlx::PgConnection::connect(&base).await.expect("postgres");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create database");
        let url = format!(
            "{}/{name}",
            base.rsplit_once('/').map_or(base.as_str(), |(b, _)| b)
        );
        check(url).await;
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE {name} WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await;
    }
}
