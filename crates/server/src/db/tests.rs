//! Engine conformance: SQLite in memory always, PostgreSQL when TESSERA_TEST_POSTGRES_URL is set.

use std::sync::Arc;

use tessera_core::ports::{Database, DbError, Row, Statement, Value};

async fn engines() -> Vec<Arc<dyn Database>> {
    // A file database also exercises the reader connections (in memory has one).
    let dir = tempfile::tempdir().expect("tempdir").keep();
    let file = format!("sqlite://{}", dir.join("t.db").display());
    let mut dbs = vec![
        super::connect("sqlite::memory:", Default::default())
            .await
            .expect("sqlite"),
        super::connect(&file, Default::default())
            .await
            .expect("sqlite file"),
    ];
    if let Ok(url) = std::env::var("TESSERA_TEST_POSTGRES_URL") {
        dbs.push(
            super::connect(&url, Default::default())
                .await
                .expect("postgres"),
        );
    }
    dbs
}

/// `Statement::sql` is `&'static`; a per-run table name keeps PostgreSQL runs apart.
fn sql(template: &str, table: &str) -> &'static str {
    Box::leak(template.replace("{t}", table).into_boxed_str())
}

async fn fresh_table(db: &dyn Database) -> String {
    let table = format!(
        "t_{}",
        tessera_core::accounts::tokens::random_string(10).to_lowercase()
    );
    db.execute_script(&format!(
        "CREATE TABLE {table} (id BIGINT PRIMARY KEY, name TEXT, n BIGINT);\n\
         CREATE INDEX {table}_name ON {table} (name);"
    ))
    .await
    .expect("script");
    table
}

fn values(rows: Vec<Row>) -> Vec<Vec<Value>> {
    rows.into_iter().map(|r| r.0).collect()
}

#[tokio::test]
async fn round_trip_and_null_binding() {
    for db in engines().await {
        let t = fresh_table(db.as_ref()).await;
        let insert = sql("INSERT INTO {t} (id, name, n) VALUES ($1, $2, $3)", &t);
        // NULL first, then values: the same cached statement must take both.
        db.execute(insert, vec![1.into(), Value::Null, Value::Null])
            .await
            .expect("insert 1");
        db.execute(insert, vec![2.into(), "bob".into(), 7.into()])
            .await
            .expect("insert 2");
        let rows = db
            .query(sql("SELECT id, name, n FROM {t} ORDER BY id", &t), vec![])
            .await
            .expect("select");
        assert_eq!(
            values(rows),
            vec![
                vec![Value::Int(1), Value::Null, Value::Null],
                vec![Value::Int(2), Value::Text("bob".into()), Value::Int(7)],
            ]
        );
        // Placeholders bind by number, not by position.
        let rows = db
            .query(
                sql("SELECT id FROM {t} WHERE n = $2 AND name = $1", &t),
                vec!["bob".into(), 7.into()],
            )
            .await
            .expect("select by number");
        assert_eq!(values(rows), vec![vec![Value::Int(2)]]);
        let rows = db
            .query(
                sql("SELECT id FROM {t} WHERE n = $1 OR id = $1", &t),
                vec![7.into()],
            )
            .await
            .expect("repeated placeholder");
        assert_eq!(values(rows), vec![vec![Value::Int(2)]]);
        // SUM is NUMERIC on PostgreSQL.
        let rows = db
            .query(sql("SELECT SUM(n), COUNT(*) FROM {t}", &t), vec![])
            .await
            .expect("sum");
        assert_eq!(values(rows), vec![vec![Value::Int(7), Value::Int(2)]]);
    }
}

#[tokio::test]
async fn unique_violation_and_guarded_batch() {
    for db in engines().await {
        let t = fresh_table(db.as_ref()).await;
        let insert = sql("INSERT INTO {t} (id, name) VALUES ($1, $2)", &t);
        db.execute(insert, vec![1.into(), "a".into()])
            .await
            .expect("insert");
        let dup = db.execute(insert, vec![1.into(), "b".into()]).await;
        assert!(matches!(dup, Err(DbError::UniqueViolation)), "{dup:?}");

        let guarded = db
            .batch(vec![
                Statement::new(insert, vec![2.into(), "c".into()]),
                Statement::new(
                    sql("UPDATE {t} SET n = 1 WHERE id = $1", &t),
                    vec![99.into()],
                )
                .expecting_change(),
            ])
            .await;
        assert!(matches!(guarded, Err(DbError::Conflict)), "{guarded:?}");
        let failed = db
            .batch(vec![
                Statement::new(insert, vec![3.into(), "d".into()]),
                Statement::new(insert, vec![1.into(), "e".into()]),
            ])
            .await;
        assert!(
            matches!(failed, Err(DbError::UniqueViolation)),
            "{failed:?}"
        );
        let rows = db
            .query(sql("SELECT id FROM {t} ORDER BY id", &t), vec![])
            .await
            .expect("select");
        assert_eq!(
            values(rows),
            vec![vec![Value::Int(1)]],
            "rolled-back batches left rows behind"
        );

        db.batch(vec![
            Statement::new(insert, vec![2.into(), "c".into()]),
            Statement::new(
                sql("UPDATE {t} SET n = 5 WHERE id = $1", &t),
                vec![2.into()],
            )
            .expecting_change(),
        ])
        .await
        .expect("batch");
        let rows = db
            .query(sql("SELECT n FROM {t} WHERE id = 2", &t), vec![])
            .await
            .expect("select");
        assert_eq!(values(rows), vec![vec![Value::Int(5)]]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_and_readers() {
    for db in engines().await {
        let t = fresh_table(db.as_ref()).await;
        let insert = sql("INSERT INTO {t} (id, name) VALUES ($1, 'x')", &t);
        let count = sql("SELECT COUNT(*) FROM {t}", &t);
        let tasks: Vec<_> = (0..8i64)
            .map(|w| {
                let db = db.clone();
                tokio::spawn(async move {
                    let mut seen = 0;
                    for i in 0..25i64 {
                        db.execute(insert, vec![(w * 100 + i).into()])
                            .await
                            .expect("insert");
                        let n = db.query(count, vec![]).await.expect("count")[0]
                            .int(0)
                            .expect("int");
                        // A read after our own write sees it, and counts never go back.
                        assert!(n > seen && n > i, "{n} after {seen}");
                        seen = n;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("task");
        }
        let rows = db.query(count, vec![]).await.expect("count");
        assert_eq!(values(rows), vec![vec![Value::Int(200)]]);
    }
}
