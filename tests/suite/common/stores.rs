//! A store of one test's own on either backend: a SQLite file in a temporary folder, or a
//! PostgreSQL database created for the test (see [`super::postgres`]). Store-level tests
//! take a [`StoreBackend`] and run once per backend through [`on_both_stores!`].

use super::postgres::TestDatabase;
use sluice::store::Store;

/// The store backends a store-level test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreBackend {
    Sqlite,
    Postgres,
}

/// An open store and what keeps it alive: the temporary folder (its SQLite file, its
/// uploaded files) and, on Postgres, the test's database, dropped with it.
pub struct TestStore {
    pub store: Store,
    pub dir: tempfile::TempDir,
    pub postgres: Option<TestDatabase>,
}

impl TestStore {
    /// A new, empty store on `backend`, its migrations applied.
    pub async fn open(backend: StoreBackend) -> TestStore {
        let dir = tempfile::tempdir().unwrap();
        match backend {
            StoreBackend::Sqlite => TestStore {
                store: Store::open(&dir.path().join("sluice.db")).await.unwrap(),
                dir,
                postgres: None,
            },
            StoreBackend::Postgres => {
                let database = TestDatabase::create().await;
                let url = database
                    .url
                    .parse()
                    .expect("a test database's URL is valid");
                let store = Store::open_postgres(
                    &url,
                    sluice::config::DEFAULT_DATABASE_CONNECTIONS,
                    sluice::config::FileBytes::Store,
                )
                .await
                .unwrap();
                TestStore {
                    store,
                    dir,
                    postgres: Some(database),
                }
            }
        }
    }
}

/// Runs each named `async fn case(backend: StoreBackend)` of the calling module once on
/// SQLite and once on Postgres, as the tests `sqlite::case` and `postgres::case`.
macro_rules! on_both_stores {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::$case($crate::common::stores::StoreBackend::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::$case($crate::common::stores::StoreBackend::Postgres).await })*
        }
    };
}
