//! Moves the write-ahead log into the database file beside the writer, not inside it, and
//! keeps the log's file bounded.
//!
//! In WAL mode SQLite copies the log back into the database (a checkpoint) once it reaches
//! `wal_autocheckpoint` pages, and it does so inside the commit that crossed the mark, on the
//! connection that committed: here, the one writer. That commit then waits for the copy and
//! its fsyncs, and so does every operation queued behind it. Measured on 300 streamed jobs a
//! second, about one commit in 150 took 2 to 40 ms, and those were the checkpoints.
//!
//! So the writer's own threshold is raised out of reach, and this task checkpoints from
//! a connection of its own every [`EVERY`]. A `PASSIVE` checkpoint takes no lock a writer or a
//! reader needs: commits go on appending to the log while it copies. The writer's threshold
//! stays as a safety net, should this task fall behind.
//!
//! A passive checkpoint never shortens the log's file, though: the log starts again from its
//! beginning only when a checkpoint has copied all of it while no reader still reads it, and
//! under steady traffic some reader always does, so the file grew by megabytes a minute (85
//! MB once, which filled the disk and wedged the store). Two bounds keep it small: once the
//! log holds more than [`TRUNCATE_ABOVE_PAGES`], this task runs a `TRUNCATE` checkpoint,
//! which waits (up to [`BUSY_TIMEOUT`], holding new
//! commits back) for the readers to leave the log, copies it all and cuts the file to
//! nothing (also when the log was all copied back but its file is still large); and `journal_size_limit` ([`JOURNAL_SIZE_LIMIT`]) cuts the file
//! back whenever the log restarts by itself. On a full disk a checkpoint fails too (the
//! database file cannot grow); this task says so once, keeps trying, and the log shrinks as
//! soon as there is room again.

use sqlx::{Connection, Row, SqliteConnection};
use std::time::Duration;
use tokio::sync::mpsc::WeakSender;

/// How often the log is copied back. At a few thousand jobs a second the log grows by a few
/// megabytes a second, so it stays small, and a checkpoint finding nothing to do is cheap.
pub(super) const EVERY: Duration = Duration::from_millis(250);

/// The log's bound, in pages: past it, the next tick truncates the log (8 MiB).
pub(super) const TRUNCATE_ABOVE_PAGES: i64 = 2_048;

/// SQLite's page size here (its default).
const PAGE_BYTES: i64 = 4_096;

/// The writer's own checkpoint threshold, in pages: reached only if this task stops keeping
/// up. Twice the bound this task keeps. SQLite's default is 1,000.
pub(super) const WRITER_THRESHOLD_PAGES: u32 = 2 * TRUNCATE_ABOVE_PAGES as u32;

/// How long a truncating checkpoint waits for readers to leave the log (and holds back the
/// writer meanwhile) before it gives up until the next tick.
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_millis(200);

/// `PRAGMA journal_size_limit`: the bytes of log file kept when the log restarts from its
/// beginning (SQLite leaves the file at its largest size otherwise).
pub(super) const JOURNAL_SIZE_LIMIT: i64 = 4 << 20;

/// Checkpoints with `conn` every [`EVERY`] until the writer is gone (`alive` can no longer
/// be upgraded), then closes `conn`.
pub(super) async fn run<T: Send + 'static>(mut conn: SqliteConnection, alive: WeakSender<T>) {
    let mut ticks = tokio::time::interval(EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        ticks.tick().await;
        if alive.upgrade().is_none() {
            break;
        }
        // A busy result (another checkpoint running) or an error is not fatal: the next tick
        // tries again, and the writer's threshold is the safety net. A failure is logged
        // when it starts and when it ends, not every tick.
        match checkpoint(&mut conn).await {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("the database's log is checkpointed again");
            }
            Ok(()) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "could not checkpoint the database's log; trying again every {}ms", EVERY.as_millis());
            }
            Err(_) => {}
        }
    }
    let _ = conn.close().await;
}

/// One tick: a passive checkpoint, then a truncating one if the log is past its bound.
async fn checkpoint(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    // (busy, frames in the log, frames copied back)
    let passive = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(&mut *conn)
        .await?;
    let (log, copied): (i64, i64) = (passive.get(1), passive.get(2));
    // Past the bound; or all copied back (nothing to wait for) but the file still larger
    // than `journal_size_limit` leaves it, which only the next commit would cut back.
    let all_copied_but_large = log == copied && log * PAGE_BYTES > JOURNAL_SIZE_LIMIT;
    if log > TRUNCATE_ABOVE_PAGES || all_copied_but_large {
        let truncated = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&mut *conn)
            .await?;
        if truncated.get::<i64, _>(0) != 0 {
            tracing::debug!(
                frames = log,
                "readers kept the database's log from being truncated; trying again"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::store::Store;
    use std::time::{Duration, Instant};

    /// Written pages reach the database file without the writer checkpointing: the writer's
    /// threshold (16 MiB of log) is far above the 2 MB written here, so only this task can
    /// have copied them.
    #[tokio::test]
    async fn the_log_reaches_the_database_file_off_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = Store::open(&path).await.unwrap();
        let threshold: i64 = store
            .write(|conn| {
                Box::pin(async move {
                    let conn = conn.into_sqlite("the SQLite checkpointer test")?;
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
                    let conn = conn.into_sqlite("the SQLite checkpointer test")?;
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

    /// A reader holding an old snapshot keeps a passive checkpoint from restarting the log,
    /// which then grows past its bound; once the reader is gone the log file is cut back,
    /// not left at its largest size.
    #[tokio::test]
    async fn the_log_is_cut_back_once_readers_let_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let wal = dir.path().join("t.db-wal");
        let store = Store::open(&path).await.unwrap();
        let mut reader = store.sqlite_reader().unwrap().acquire().await.unwrap();
        sqlx::query("BEGIN").execute(&mut *reader).await.unwrap();
        let _: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM dead_letters")
            .fetch_one(&mut *reader)
            .await
            .unwrap();
        // 24 MiB, in commits of 1 MiB, past the bound of 8 MiB.
        for _ in 0..24 {
            store
                .write(|conn| {
                    Box::pin(async move {
                        let conn = conn.into_sqlite("the SQLite checkpointer test")?;
                        for _ in 0..32 {
                            sqlx::query("INSERT INTO dead_letters (urgency, payload, reason, created_at) VALUES ('batch', zeroblob(32768), 'r', 0)")
                                .execute(&mut *conn)
                                .await?;
                        }
                        Ok(())
                    })
                })
                .await
                .unwrap();
        }
        let grown = std::fs::metadata(&wal).unwrap().len();
        assert!(grown > 20 << 20, "the log is only {grown} bytes");
        sqlx::query("COMMIT").execute(&mut *reader).await.unwrap();
        drop(reader);

        let deadline = Instant::now() + Duration::from_secs(20);
        let mut size = grown;
        while size > super::JOURNAL_SIZE_LIMIT as u64 && Instant::now() < deadline {
            tokio::time::sleep(super::EVERY).await;
            size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        }
        assert!(
            size <= super::JOURNAL_SIZE_LIMIT as u64,
            "the log stayed at {size} bytes (from {grown})"
        );
    }
}
