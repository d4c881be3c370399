//! The two dialects of the store agree: `migrations/sqlite` and `migrations/postgres` build the
//! same tables, columns (with matching types and nullability) and indexes, the embedded
//! queue's tables aside (with PostgreSQL the queue is RabbitMQ); and SQL text written with
//! `$1` placeholders runs on both drivers, so an operation's portable SQL is written once.
//! The PostgreSQL side runs on a database of the test's own (`common::postgres`).

use crate::common::postgres::TestDatabase;
use sqlx::migrate::Migrator;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Row};
use std::collections::BTreeMap;
use std::path::Path;

/// Tables of the embedded queue, which only the SQLite store has.
const EMBEDDED_QUEUE_TABLES: [&str; 2] = ["queue_messages", "dead_letters"];

/// A column as both sides can describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Column {
    /// `integer`, `text` or `blob`: SQLite's declared type, and what a PostgreSQL type
    /// stores (BIGINT and BOOLEAN are SQLite's INTEGER, BYTEA its BLOB).
    class: String,
    not_null: bool,
}

/// Every table's columns, by table and column name, and the index names.
#[derive(Debug, Default)]
struct Schema {
    columns: BTreeMap<(String, String), Column>,
    indexes: Vec<String>,
}

fn migrations(dialect: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(dialect)
}

async fn sqlite_schema(file: &Path) -> Schema {
    let mut conn = SqliteConnectOptions::new()
        .filename(file)
        .create_if_missing(true)
        .connect()
        .await
        .unwrap();
    Migrator::new(migrations("sqlite").as_path())
        .await
        .unwrap()
        .run(&mut conn)
        .await
        .unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' \
         AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_sqlx%' ORDER BY name",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let mut schema = Schema::default();
    for table in tables
        .into_iter()
        .filter(|t| !EMBEDDED_QUEUE_TABLES.contains(&t.as_str()))
    {
        let columns = sqlx::query("SELECT name, type, \"notnull\", pk FROM pragma_table_info($1)")
            .bind(&table)
            .fetch_all(&mut conn)
            .await
            .unwrap();
        for column in columns {
            let declared: String = column.get(1);
            let not_null: bool = column.get::<i64, _>(2) != 0 || column.get::<i64, _>(3) != 0;
            schema.columns.insert(
                (table.clone(), column.get(0)),
                Column {
                    class: declared.to_ascii_lowercase(),
                    not_null,
                },
            );
        }
    }
    schema.indexes = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL \
         AND tbl_name NOT IN ($1, $2) ORDER BY name",
    )
    .bind(EMBEDDED_QUEUE_TABLES[0])
    .bind(EMBEDDED_QUEUE_TABLES[1])
    .fetch_all(&mut conn)
    .await
    .unwrap();
    schema
}

async fn postgres_schema(database: &TestDatabase) -> Schema {
    let mut conn = database.connect().await;
    Migrator::new(migrations("postgres").as_path())
        .await
        .unwrap()
        .run(&mut conn)
        .await
        .unwrap();
    let columns = sqlx::query(
        "SELECT table_name::text, column_name::text, data_type::text, is_nullable::text \
         FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name <> '_sqlx_migrations'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let mut schema = Schema::default();
    for column in columns {
        let data_type: String = column.get(2);
        let class = match data_type.as_str() {
            "bigint" | "boolean" => "integer".to_string(),
            "text" => "text".to_string(),
            "bytea" => "blob".to_string(),
            other => format!("postgres type {other}: write BIGINT, BOOLEAN, TEXT or BYTEA"),
        };
        schema.columns.insert(
            (column.get(0), column.get(1)),
            Column {
                class,
                not_null: column.get::<String, _>(3) == "NO",
            },
        );
    }
    // The indexes written as such: not those behind a primary key or UNIQUE constraint,
    // which SQLite does not list either.
    schema.indexes = sqlx::query_scalar(
        "SELECT indexname::text FROM pg_indexes WHERE schemaname = current_schema() \
         AND tablename <> '_sqlx_migrations' \
         AND indexname NOT IN (SELECT conname FROM pg_constraint) ORDER BY indexname",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    schema
}

/// Every way the PostgreSQL schema differs from the SQLite one, one line each.
fn differences(sqlite: &Schema, postgres: &Schema) -> Vec<String> {
    let mut found = Vec::new();
    for ((table, name), column) in &sqlite.columns {
        match postgres.columns.get(&(table.clone(), name.clone())) {
            None => found.push(format!("{table}.{name}: only in migrations/sqlite")),
            Some(other) if other != column => found.push(format!(
                "{table}.{name}: sqlite {column:?}, postgres {other:?}"
            )),
            Some(_) => {}
        }
    }
    for (table, name) in postgres.columns.keys() {
        if !sqlite.columns.contains_key(&(table.clone(), name.clone())) {
            found.push(format!("{table}.{name}: only in migrations/postgres"));
        }
    }
    for index in &sqlite.indexes {
        if !postgres.indexes.contains(index) {
            found.push(format!("index {index}: only in migrations/sqlite"));
        }
    }
    for index in &postgres.indexes {
        if !sqlite.indexes.contains(index) {
            found.push(format!("index {index}: only in migrations/postgres"));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_dialects_build_the_same_tables_columns_and_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = sqlite_schema(&dir.path().join("schema.db")).await;
    let database = TestDatabase::create().await;
    let postgres = postgres_schema(&database).await;
    assert!(
        sqlite.columns.len() > 100,
        "the SQLite migrations built {} columns",
        sqlite.columns.len()
    );
    let found = differences(&sqlite, &postgres);
    assert!(
        found.is_empty(),
        "migrations/postgres differs from migrations/sqlite in {} way(s):\n  {}",
        found.len(),
        found.join("\n  ")
    );
}

/// SQLite reads `$1` as a parameter named `$1`, and sqlx's SQLite driver binds a parameter
/// named `$N` or `?N` to the N-th argument: one text, `$1` placeholders, runs on both drivers,
/// a placeholder used twice included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dollar_placeholders_bind_the_same_on_both_drivers() {
    const SQL: &str = "SELECT $2 || $1 || $2, $1";
    let mut sqlite = SqliteConnectOptions::new()
        .in_memory(true)
        .connect()
        .await
        .unwrap();
    let row = sqlx::query(SQL)
        .bind("a")
        .bind("b")
        .fetch_one(&mut sqlite)
        .await
        .unwrap();
    assert_eq!(
        (row.get::<String, _>(0), row.get::<String, _>(1)),
        ("bab".to_string(), "a".to_string())
    );
    let database = TestDatabase::create().await;
    let mut postgres = database.connect().await;
    let row = sqlx::query(SQL)
        .bind("a")
        .bind("b")
        .fetch_one(&mut postgres)
        .await
        .unwrap();
    assert_eq!(
        (row.get::<String, _>(0), row.get::<String, _>(1)),
        ("bab".to_string(), "a".to_string())
    );
}
