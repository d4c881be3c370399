//! Opening a store, its migrations, and the probes `GET /readyz` asks.

use crate::common::stores::{StoreBackend, TestStore};

/// A new store takes a write and answers a read: its migrations ran and its connection
/// (the SQLite writer, or a Postgres transaction) commits.
async fn opens_reads_and_writes(backend: StoreBackend) {
    let t = TestStore::open(backend).await;
    assert_eq!(
        t.store.dialect(),
        match backend {
            StoreBackend::Sqlite => sluice::store::Dialect::Sqlite,
            StoreBackend::Postgres => sluice::store::Dialect::Postgres,
        }
    );
    t.store.probe_write().await.unwrap();
    t.store.probe_write().await.unwrap();
    t.store.probe_read().await.unwrap();
}

on_both_stores!(opens_reads_and_writes);
