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
    if let Err(e) = conn.execute("BEGIN IMMEDIATE").await {
        for pending in group {
            let _ = pending.reply.send(Err(StoreError::Sql(clone_error(&e))));
        }
        return;
    }
    let mut outcomes = Vec::with_capacity(group.len());
    for pending in group {
        let outcome = apply_in_savepoint(conn, pending.op).await;
        outcomes.push((pending.reply, outcome));
    }
    match conn.execute("COMMIT").await {
        Ok(_) => {
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

async fn apply_in_savepoint(
    conn: &mut SqliteConnection,
    op: Box<dyn ErasedOp>,
) -> Result<AnyValue, sqlx::Error> {
    conn.execute("SAVEPOINT op").await?;
    match op.apply(conn).await {
        Ok(value) => {
            conn.execute("RELEASE op").await?;
            Ok(value)
        }
        Err(e) => {
            conn.execute("ROLLBACK TO op").await?;
            conn.execute("RELEASE op").await?;
            Err(e)
        }
    }
}

/// `sqlx::Error` is not `Clone`; one failed commit must be reported to many callers.
fn clone_error(e: &sqlx::Error) -> sqlx::Error {
    sqlx::Error::Protocol(e.to_string())
}
