//! Moves the write-ahead log into the database file beside the writer, not inside it.
//!
//! In WAL mode SQLite copies the log back into the database (a checkpoint) once it reaches
//! `wal_autocheckpoint` pages, and it does so inside the commit that crossed the mark, on the
//! connection that committed: here, the one writer. That commit then waits for the copy and
//! its fsyncs, and so does every operation queued behind it. Measured on 300 streamed jobs a
//! second, about one commit in 150 took 2 to 40 ms, and those were the checkpoints.
//!
//! So the writer's own threshold is raised far out of reach, and this task checkpoints from
//! a connection of its own every [`EVERY`]. A `PASSIVE` checkpoint takes no lock a writer or a
//! reader needs: commits go on appending to the log while it copies. The writer's threshold
//! stays as a safety net, should this task fall behind.

use sqlx::{Connection, SqliteConnection};
use std::time::Duration;
use tokio::sync::mpsc::WeakSender;

/// How often the log is copied back. At a few thousand jobs a second the log grows by a few
/// megabytes a second, so it stays small, and a checkpoint finding nothing to do is cheap.
pub(super) const EVERY: Duration = Duration::from_millis(250);

/// The writer's own checkpoint threshold, in pages (4 KiB): reached only if this task stops
/// keeping up. SQLite's default is 1,000.
pub(super) const WRITER_THRESHOLD_PAGES: u32 = 25_000;

/// Checkpoints with `conn` every [`EVERY`] until the writer is gone (`alive` can no longer
/// be upgraded), then closes `conn`.
pub(super) async fn run<T: Send + 'static>(mut conn: SqliteConnection, alive: WeakSender<T>) {
    let mut ticks = tokio::time::interval(EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if alive.upgrade().is_none() {
            break;
        }
        // A busy result (another checkpoint running) or an error is not fatal: the next tick
        // tries again, and the writer's threshold is the safety net.
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&mut conn)
            .await
        {
            tracing::warn!(error = %e, "could not checkpoint the database's log; will try again");
        }
    }
    let _ = conn.close().await;
}

#[cfg(test)]
mod tests {
    use crate::store::Store;
    use std::time::{Duration, Instant};

    /// Written pages reach the database file without the writer checkpointing: the writer's
    /// threshold (100 MB of log) is far above the 2 MB written here, so only this task can
    /// have copied them.
    #[tokio::test]
    async fn the_log_reaches_the_database_file_off_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = Store::open(&path).await.unwrap();
        let threshold: i64 = store
            .write(|conn| {
                Box::pin(async move {
                    sqlx::query_scalar("PRAGMA wal_autocheckpoint")
                        .fetch_one(&mut *conn)
                        .await
                })
            })
            .await
            .unwrap();
        assert_eq!(threshold, i64::from(super::WRITER_THRESHOLD_PAGES));

        let before = std::fs::metadata(&path).unwrap().len();
        store
            .write(|conn| {
                Box::pin(async move {
                    for i in 0..64 {
                        sqlx::query("INSERT INTO dead_letters (urgency, payload, reason, created_at) VALUES ('batch', zeroblob(32768), ?, 0)")
                            .bind(format!("row {i}"))
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let grown = loop {
            let now = std::fs::metadata(&path).unwrap().len();
            if now >= before + 2_000_000 || Instant::now() > deadline {
                break now;
            }
            tokio::time::sleep(super::EVERY).await;
        };
        assert!(
            grown >= before + 2_000_000,
            "the database file stayed at {grown} bytes (from {before}): nothing was checkpointed"
        );
    }
}
