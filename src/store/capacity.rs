//! Key capacity a cluster shares: the buckets capacity leases are taken from, and keys at
//! rest (see `crate::cluster`).
//!
//! Every time here is on the store's own clock, read in the statement that uses it, so
//! processes on machines whose clocks disagree still agree on a bucket: a process never sends
//! its time, only durations (a wait, a rest), and reads back durations.

use super::{Conn, Dialect, Store, StoreError};
use crate::gcra::{Gcra, KeyLimit};
use crate::{with_conn, with_pool};
use std::time::Duration;

/// `sql` with each `{now}` replaced by the store's clock in nanoseconds since the Unix epoch,
/// in `dialect`'s words (SQLite's `'now'` has millisecond resolution; PostgreSQL's
/// `clock_timestamp()` microsecond), so a statement reading the clock is written once.
pub(super) fn on_store_clock(sql: &str, dialect: Dialect) -> String {
    let now = match dialect {
        Dialect::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000000000.0 AS INTEGER)",
        Dialect::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000000 AS BIGINT)",
    };
    sql.replace("{now}", now)
}

/// Deletes the rows `sql` (a `DELETE … WHERE column < {now} - $1`) names as older than
/// `after`; how many.
pub(super) async fn delete_older(
    conn: &mut Conn<'_>,
    sql: &str,
    after: Duration,
) -> Result<u64, sqlx::Error> {
    let sql = on_store_clock(sql, conn.dialect());
    Ok(with_conn!(conn, c => sqlx::query(&sql)
        .bind(nanos(after))
        .execute(&mut *c)
        .await?
        .rows_affected()))
}

/// One limit of one key of one deployment, as `key_buckets` names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct BucketId {
    pub deployment: String,
    pub key_id: String,
    pub limit: KeyLimit,
}

/// Cells a process asks of one bucket.
#[derive(Debug, Clone)]
pub struct CellRequest {
    pub bucket: BucketId,
    pub shape: Gcra,
    pub want: u64,
}

/// What a bucket gave: `granted` cells (maybe none) and how long until it has another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellGrant {
    pub granted: u64,
    pub next_cell_in: Duration,
}

/// What a key at rest rests from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestKind {
    /// A 429 or a `remaining: 0` header: the key rests on one deployment (`scope`).
    Cooldown,
    /// Out of credit: the key rests on every deployment of its provider (`scope`).
    Spent,
}

impl RestKind {
    fn as_str(self) -> &'static str {
        match self {
            RestKind::Cooldown => "cooldown",
            RestKind::Spent => "spent",
        }
    }

    fn parse(text: &str) -> Option<RestKind> {
        match text {
            "cooldown" => Some(RestKind::Cooldown),
            "spent" => Some(RestKind::Spent),
            _ => None,
        }
    }
}

/// A key at rest: told with the rest to come, read back with the rest left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRest {
    pub kind: RestKind,
    pub scope: String,
    pub key_id: String,
    pub rest: Duration,
}

/// One bucket as it stands: how much of its span is used (0: full).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketLevel {
    pub bucket: BucketId,
    pub used: Duration,
}

/// A duration as the store's nanosecond columns count it.
pub(super) fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// A nanosecond count read back (negative: none).
pub(super) fn duration(ns: i64) -> Duration {
    Duration::from_nanos(u64::try_from(ns).unwrap_or(0))
}

impl Store {
    /// Takes cells from each bucket in `requests`, in one transaction, answering in the same
    /// order. Buckets are locked in one order (deployment, key, limit) whatever the order
    /// asked, so two processes taking from the same buckets never deadlock.
    pub async fn take_cells(
        &self,
        requests: Vec<CellRequest>,
    ) -> Result<Vec<CellGrant>, StoreError> {
        self.write(move |mut conn| {
            Box::pin(async move {
                let mut order: Vec<usize> = (0..requests.len()).collect();
                order.sort_by(|a, b| requests[*a].bucket.cmp(&requests[*b].bucket));
                let mut grants = vec![
                    CellGrant {
                        granted: 0,
                        next_cell_in: Duration::ZERO
                    };
                    requests.len()
                ];
                // Creates the bucket full (TAT 0) or locks it, and reads it with the time.
                let lock = on_store_clock(
                    "INSERT INTO key_buckets (deployment, key_id, key_limit, tat_ns) \
                     VALUES ($1, $2, $3, 0) ON CONFLICT (deployment, key_id, key_limit) \
                     DO UPDATE SET tat_ns = key_buckets.tat_ns RETURNING tat_ns, {now}",
                    conn.dialect(),
                );
                for index in order {
                    let CellRequest {
                        bucket,
                        shape,
                        want,
                    } = &requests[index];
                    let (tat_ns, now_ns): (i64, i64) = with_conn!(conn, c => sqlx::query_as(&lock)
                        .bind(&bucket.deployment)
                        .bind(&bucket.key_id)
                        .bind(bucket.limit.as_str())
                        .fetch_one(&mut *c)
                        .await?);
                    let take = shape.take(tat_ns, now_ns, *want);
                    if take.granted > 0 {
                        with_conn!(conn, c => sqlx::query(
                            "UPDATE key_buckets SET tat_ns = $1 \
                             WHERE deployment = $2 AND key_id = $3 AND key_limit = $4",
                        )
                        .bind(take.tat_ns)
                        .bind(&bucket.deployment)
                        .bind(&bucket.key_id)
                        .bind(bucket.limit.as_str())
                        .execute(&mut *c)
                        .await?
                        .rows_affected());
                    }
                    grants[index] = CellGrant {
                        granted: take.granted,
                        next_cell_in: take.next_cell_in,
                    };
                }
                Ok(grants)
            })
        })
        .await
    }

    /// How full every bucket is now.
    pub async fn bucket_levels(&self) -> Result<Vec<BucketLevel>, StoreError> {
        let sql = on_store_clock(
            "SELECT deployment, key_id, key_limit, tat_ns - {now} FROM key_buckets",
            self.dialect(),
        );
        let rows: Vec<(String, String, String, i64)> =
            with_pool!(self.pool(), p => sqlx::query_as(&sql).fetch_all(p).await?);
        Ok(rows
            .into_iter()
            .filter_map(|(deployment, key_id, limit, used_ns)| {
                let limit = KeyLimit::parse(&limit)?;
                Some(BucketLevel {
                    bucket: BucketId {
                        deployment,
                        key_id,
                        limit,
                    },
                    used: duration(used_ns),
                })
            })
            .collect())
    }

    /// Records that keys rest: each until now + its rest, never shortening a longer rest
    /// another process told.
    pub async fn tell_rests(&self, rests: Vec<KeyRest>) -> Result<(), StoreError> {
        if rests.is_empty() {
            return Ok(());
        }
        self.write(move |mut conn| {
            Box::pin(async move {
                // The later of the two ends: SQLite's two-argument MAX, Postgres' GREATEST.
                let later = match conn.dialect() {
                    Dialect::Sqlite => "MAX",
                    Dialect::Postgres => "GREATEST",
                };
                let sql = on_store_clock(
                    &format!(
                        "INSERT INTO key_rests (kind, scope, key_id, until_ns) \
                         VALUES ($1, $2, $3, {{now}} + $4) ON CONFLICT (kind, scope, key_id) \
                         DO UPDATE SET until_ns = {later}(key_rests.until_ns, excluded.until_ns)"
                    ),
                    conn.dialect(),
                );
                for rest in &rests {
                    with_conn!(conn, c => sqlx::query(&sql)
                        .bind(rest.kind.as_str())
                        .bind(&rest.scope)
                        .bind(&rest.key_id)
                        .bind(nanos(rest.rest))
                        .execute(&mut *c)
                        .await?
                        .rows_affected());
                }
                Ok(())
            })
        })
        .await
    }

    /// Every key still at rest, with the rest left.
    pub async fn key_rests(&self) -> Result<Vec<KeyRest>, StoreError> {
        let sql = on_store_clock(
            "SELECT kind, scope, key_id, until_ns - {now} FROM key_rests WHERE until_ns > {now}",
            self.dialect(),
        );
        let rows: Vec<(String, String, String, i64)> =
            with_pool!(self.pool(), p => sqlx::query_as(&sql).fetch_all(p).await?);
        Ok(rows
            .into_iter()
            .filter_map(|(kind, scope, key_id, left_ns)| {
                Some(KeyRest {
                    kind: RestKind::parse(&kind)?,
                    scope,
                    key_id,
                    rest: duration(left_ns),
                })
            })
            .collect())
    }

    /// Forgets rests that ended more than `after` ago.
    pub async fn prune_rests(&self, after: Duration) -> Result<u64, StoreError> {
        self.write(move |mut conn| {
            Box::pin(async move {
                delete_older(
                    &mut conn,
                    "DELETE FROM key_rests WHERE until_ns < {now} - $1",
                    after,
                )
                .await
            })
        })
        .await
    }
}
