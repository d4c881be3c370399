//! The single writer: owns the only write connection and groups waiting operations into one
//! `BEGIN IMMEDIATE … COMMIT`.
//!
//! Why: an fsync per job would cap throughput at a few hundred jobs a second, and several
//! writing connections fight over SQLite's one write lock. With one writer, whatever piles up
//! while a commit is in flight goes into the next one. Each operation runs inside its own
//! savepoint, so a failing operation is rolled back alone and reported to its caller only;
//! callers get their answer after the commit, never before: an answer means durable.

use super::StoreError;
use futures::future::BoxFuture;
use sqlx::{Connection, Executor, SqliteConnection};
use std::any::Any;
use tokio::sync::{mpsc, oneshot};

/// Most operations grouped into one transaction.
const MAX_GROUP: usize = 512;

/// The future an operation returns; see [`super::Store::write`].
pub type WriteFuture<'c, T> = BoxFuture<'c, Result<T, sqlx::Error>>;

type AnyValue = Box<dyn Any + Send>;

/// A type-erased operation, so one channel carries operations of every result type.
trait ErasedOp: Send {
    fn apply<'c>(self: Box<Self>, conn: &'c mut SqliteConnection) -> WriteFuture<'c, AnyValue>;
}

impl<T, F> ErasedOp for F
where
    T: Send + 'static,
    F: for<'c> FnOnce(&'c mut SqliteConnection) -> WriteFuture<'c, T> + Send + 'static,
{
    fn apply<'c>(self: Box<Self>, conn: &'c mut SqliteConnection) -> WriteFuture<'c, AnyValue> {
        let future = (*self)(conn);
        Box::pin(async move { future.await.map(|value| Box::new(value) as AnyValue) })
    }
}

struct Pending {
    op: Box<dyn ErasedOp>,
    reply: oneshot::Sender<Result<AnyValue, StoreError>>,
}

#[derive(Clone)]
pub(super) struct Writer {
    tx: mpsc::Sender<Pending>,
}

impl Writer {
    pub(super) fn spawn(conn: SqliteConnection) -> Writer {
        let (tx, rx) = mpsc::channel(4 * MAX_GROUP);
        tokio::spawn(run(conn, rx));
        Writer { tx }
    }

    pub(super) async fn submit<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> WriteFuture<'c, T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Pending {
                op: Box::new(op),
                reply,
            })
            .await
            .map_err(|_| StoreError::WriterGone)?;
        let value = answer.await.map_err(|_| StoreError::WriterGone)??;
        Ok(*value
            .downcast::<T>()
            .expect("the writer returns the type the operation produced"))
    }
}

async fn run(mut conn: SqliteConnection, mut rx: mpsc::Receiver<Pending>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while rx.recv_many(&mut group, MAX_GROUP).await > 0 {
        commit_group(&mut conn, std::mem::take(&mut group)).await;
    }
    let _ = conn.close().await;
}

async fn commit_group(conn: &mut SqliteConnection, group: Vec<Pending>) {
    // Each operation runs under the savepoint `op`. The savepoint statements travel together
    // with their neighbours (`RELEASE op; SAVEPOINT op` between two operations), because every
    // statement is a round trip to sqlx's SQLite thread and they add up at thousands of jobs
    // a second.
    if let Err(e) = conn.execute("BEGIN IMMEDIATE; SAVEPOINT op").await {
        for pending in group {
            let _ = pending.reply.send(Err(StoreError::Sql(clone_error(&e))));
        }
        return;
    }
    let mut outcomes = Vec::with_capacity(group.len());
    let count = group.len();
    let mut broken = None;
    for (i, pending) in group.into_iter().enumerate() {
        let outcome = match &broken {
            Some(e) => Err(clone_error(e)),
            None => pending.op.apply(conn).await,
        };
        if outcome.is_err() && broken.is_none() {
            // Undo this operation alone; the savepoint stays open for the next one.
            if let Err(e) = conn.execute("ROLLBACK TO op").await {
                broken = Some(e);
            }
        }
        if i + 1 < count && broken.is_none() {
            if let Err(e) = conn.execute("RELEASE op; SAVEPOINT op").await {
                broken = Some(e);
            }
        }
        outcomes.push((pending.reply, outcome));
    }
    let committed = match broken {
        Some(e) => Err(e),
        None => conn.execute("RELEASE op; COMMIT").await.map(|_| ()),
    };
    match committed {
        Ok(()) => {
            for (reply, outcome) in outcomes {
                let _ = reply.send(outcome.map_err(StoreError::Sql));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "grouped commit failed; every operation in it is reported failed");
            let _ = conn.execute("ROLLBACK").await;
            for (reply, _) in outcomes {
                let _ = reply.send(Err(StoreError::Sql(clone_error(&e))));
            }
        }
    }
}

/// `sqlx::Error` is not `Clone`; one failed commit must be reported to many callers.
fn clone_error(e: &sqlx::Error) -> sqlx::Error {
    sqlx::Error::Protocol(e.to_string())
}

#[cfg(test)]
mod tests {
    use crate::store::Store;

    /// Many writes at once land in shared commits; the failing ones are undone alone and
    /// reported to their own callers, the others are committed.
    #[tokio::test]
    async fn a_failing_operation_is_rolled_back_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).await.unwrap();
        let writes = (0..200i64).map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .write(move |conn| {
                        Box::pin(async move {
                            sqlx::query("INSERT INTO dead_letters (urgency, payload, reason, created_at) VALUES ('batch', x'00', ?, 0)")
                                .bind(format!("row {i}"))
                                .execute(&mut *conn)
                                .await?;
                            if i % 3 == 0 {
                                // Fails after a successful statement: both must be undone.
                                sqlx::query("INSERT INTO no_such_table VALUES (1)")
                                    .execute(&mut *conn)
                                    .await?;
                            }
                            Ok(i)
                        })
                    })
                    .await
            })
        });
        let results = futures::future::join_all(writes).await;
        let failed = results
            .iter()
            .filter(|r| r.as_ref().unwrap().is_err())
            .count();
        assert_eq!(failed, 67);
        let kept: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM dead_letters")
            .fetch_one(store.reader())
            .await
            .unwrap();
        assert_eq!(kept, 133);
    }
}
