//! The single writer: owns the only write connection and groups waiting operations into one
//! `BEGIN IMMEDIATE … COMMIT`.
//!
//! Why: an fsync per job would cap throughput at a few hundred jobs a second, and several
//! writing connections fight over SQLite's one write lock. With one writer, whatever piles up
//! while a commit is in flight goes into the next one. Each operation runs inside its own
//! savepoint, so a failing operation is rolled back alone and reported to its caller only;
//! callers get their answer after the commit, never before: an answer means durable.
//!
//! An operation that writes with one statement needs no savepoint: SQLite undoes a failed
//! statement by itself. Such operations ([`Undo::ByStatement`]) run first in a group, without
//! the savepoint round trips, which at thousands of jobs a second are a good share of the
//! writer's work.

use super::{Conn, StoreError};
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
    fn apply<'c>(self: Box<Self>, conn: Conn<'c>) -> WriteFuture<'c, AnyValue>;
}

impl<T, F> ErasedOp for F
where
    T: Send + 'static,
    F: for<'c> FnOnce(Conn<'c>) -> WriteFuture<'c, T> + Send + 'static,
{
    fn apply<'c>(self: Box<Self>, conn: Conn<'c>) -> WriteFuture<'c, AnyValue> {
        let future = (*self)(conn);
        Box::pin(async move { future.await.map(|value| Box::new(value) as AnyValue) })
    }
}

/// How a failed operation's writes are undone, so it is undone alone.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Undo {
    /// The operation runs under a savepoint of its own, rolled back if it fails.
    Savepoint,
    /// The operation's only write is one statement, and it fails only when that statement
    /// does: SQLite has then undone the statement itself, and there is nothing else to undo.
    ByStatement,
}

pub(super) struct Pending {
    op: Box<dyn ErasedOp>,
    undo: Undo,
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

    /// A handle that does not keep the writer running: [`super::checkpointer`] stops once
    /// it can no longer be upgraded.
    pub(super) fn downgrade(&self) -> mpsc::WeakSender<Pending> {
        self.tx.downgrade()
    }

    pub(super) async fn submit<T, F>(&self, undo: Undo, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(Conn<'c>) -> WriteFuture<'c, T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Pending {
                op: Box::new(op),
                undo,
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

async fn commit_group(conn: &mut SqliteConnection, mut group: Vec<Pending>) {
    // Each operation that needs one runs under the savepoint `op`, opened just before it. The
    // savepoint statements travel together with their neighbours (`RELEASE op; SAVEPOINT op`
    // between two operations), because every statement is a round trip to sqlx's SQLite
    // thread and they add up at thousands of jobs a second. The operations in a group come
    // from different callers and are unordered, so those undone by their own statement go
    // first, inside the group's first savepoint, with no round trip between them.
    group.sort_by_key(|pending| pending.undo == Undo::Savepoint);
    if let Err(e) = conn.execute("BEGIN IMMEDIATE; SAVEPOINT op").await {
        for pending in group {
            let _ = pending.reply.send(Err(StoreError::shared(&e)));
        }
        return;
    }
    let mut outcomes = Vec::with_capacity(group.len());
    let mut broken = None;
    let mut operations = group.into_iter().peekable();
    while let Some(pending) = operations.next() {
        let outcome = match &broken {
            Some(e) => Err(clone_error(e)),
            None => pending.op.apply(Conn::Sqlite(&mut *conn)).await,
        };
        if broken.is_none() {
            let next_needs_savepoint = operations
                .peek()
                .is_some_and(|next| next.undo == Undo::Savepoint);
            let step = match (&outcome, pending.undo) {
                // Undo this operation alone. The savepoint stays open, empty, for the next.
                (Err(_), Undo::Savepoint) => Some("ROLLBACK TO op"),
                // SQLite undid the statement; releasing and reopening the savepoint also
                // proves the transaction survived the failure.
                (Err(_), Undo::ByStatement) => Some("RELEASE op; SAVEPOINT op"),
                (Ok(_), _) if next_needs_savepoint => Some("RELEASE op; SAVEPOINT op"),
                (Ok(_), _) => None,
            };
            if let Some(step) = step {
                if let Err(e) = conn.execute(step).await {
                    broken = Some(e);
                }
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
                let _ = reply.send(outcome.map_err(StoreError::from));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "grouped commit failed; every operation in it is reported failed");
            let _ = conn.execute("ROLLBACK").await;
            for (reply, _) in outcomes {
                let _ = reply.send(Err(StoreError::shared(&e)));
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
                            let conn = conn.into_sqlite("the SQLite writer test")?;
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
            .fetch_one(store.sqlite_reader().unwrap())
            .await
            .unwrap();
        assert_eq!(kept, 133);
    }

    /// Operations undone by their own statement share the group's transaction with
    /// savepointed ones: a failing statement takes nothing else with it, whichever kind of
    /// operation fails, and every other write is committed.
    #[tokio::test]
    async fn a_failing_statement_is_undone_alone_beside_savepointed_operations() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).await.unwrap();
        let insert = "INSERT INTO dead_letters (urgency, payload, reason, created_at) VALUES ('batch', x'00', ?, 0)";
        let writes = (0..300i64).map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                if i % 2 == 0 {
                    // One statement; every tenth one breaks a NOT NULL constraint.
                    store
                        .write_single(move |conn| {
                            Box::pin(async move {
                                let conn = conn.into_sqlite("the SQLite writer test")?;
                                let reason = (i % 10 != 0).then(|| format!("single {i}"));
                                sqlx::query(insert).bind(reason).execute(&mut *conn).await?;
                                Ok(i)
                            })
                        })
                        .await
                } else {
                    // Two statements; every sixth one (odd) fails after its first insert.
                    store
                        .write(move |conn| {
                            Box::pin(async move {
                                let conn = conn.into_sqlite("the SQLite writer test")?;
                                sqlx::query(insert)
                                    .bind(format!("pair {i} a"))
                                    .execute(&mut *conn)
                                    .await?;
                                let second = (i % 3 != 0).then(|| format!("pair {i} b"));
                                sqlx::query(insert).bind(second).execute(&mut *conn).await?;
                                Ok(i)
                            })
                        })
                        .await
                }
            })
        });
        let results = futures::future::join_all(writes).await;
        let failed: Vec<i64> = (0..300)
            .filter(|&i| results[i as usize].as_ref().unwrap().is_err())
            .collect();
        let expected: Vec<i64> = (0..300)
            .filter(|i| (i % 2 == 0 && i % 10 == 0) || (i % 2 == 1 && i % 3 == 0))
            .collect();
        assert_eq!(failed, expected);
        let kept: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM dead_letters")
            .fetch_one(store.sqlite_reader().unwrap())
            .await
            .unwrap();
        // 150 singles of which 30 fail; 150 pairs of which 50 fail, two rows each.
        assert_eq!(kept, 120 + 2 * 100);
    }
}
