//! Attempts: starting one (interrupted ones settled, the count checked against
//! `max_attempts` across crashes), how one ended, and the SQL that records one. Its own file
//! because every transition stores attempts, and the batch tier records them too.

use super::transitions::fail_job;
use crate::failure::{ErrorKind, JobFailure};
use crate::job::JobStatus;
use crate::store::{now_ms, Conn, Store, StoreError};
use crate::tier::Tier;
use crate::with_conn;
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

/// What [`Store::start_attempt`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOutcome {
    /// The job is now `running`; this is attempt number `n` (1-based).
    Started(u32),
    /// The job is already finished (or cancelled): do not call the provider again.
    AlreadyFinal(JobStatus),
    /// The job had all its `max_attempts` already (the last one, typically, interrupted by a
    /// crash): it has been failed instead, in the same transaction, with why.
    Exhausted { attempts: u32 },
    /// No such job.
    Missing,
}

/// How an attempt ended, or that it has not yet: an attempt is recorded `running` when it
/// starts, so one its worker never finishes (a crash, a kill, a lost connection) stays
/// visible, and becomes `interrupted` when the job is picked up again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// Started and not finished: at the provider now, or its worker died and the job has
    /// not been picked up since.
    Running,
    /// Its worker stopped before recording the outcome; found when the job was picked up
    /// again (or failed for good).
    Interrupted,
    /// Answered.
    Ok,
    /// Ended without an answer, for this reason.
    Failed(AttemptFailure),
}

/// Why an attempt ended without an answer: a provider's error, or why a batch item came back
/// unanswered. Stored by name in `attempts.outcome` (see [`AttemptFailure::as_str`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptFailure {
    /// The provider's error, named as [`ErrorKind::as_str`] names it (`rate_limited`, …).
    Provider(ErrorKind),
    /// The provider batch's window closed before the item ran (`expired`).
    Expired,
    /// The provider batch was cancelled before the item ran (`cancelled`).
    Cancelled,
    /// The provider batch ended without a result for the item (`missing`).
    Missing,
    /// The provider batch was given up without a provider error (`abandoned`).
    Abandoned,
    /// A name this build does not know (written by another version of Sluice), kept as
    /// stored so the job's view shows it unchanged.
    Unrecognised(String),
}

impl AttemptFailure {
    /// The batch items' own names, for reading them back.
    const BATCH: [(AttemptFailure, &'static str); 4] = [
        (AttemptFailure::Expired, "expired"),
        (AttemptFailure::Cancelled, "cancelled"),
        (AttemptFailure::Missing, "missing"),
        (AttemptFailure::Abandoned, "abandoned"),
    ];

    /// The name stored in `attempts.outcome`.
    pub fn as_str(&self) -> &str {
        match self {
            AttemptFailure::Provider(kind) => kind.as_str(),
            AttemptFailure::Unrecognised(name) => name,
            own => Self::BATCH
                .iter()
                .find(|(failure, _)| failure == own)
                .map_or("unrecognised", |(_, name)| name),
        }
    }

    /// The failure a stored name stands for; a name this build does not know is kept as
    /// [`AttemptFailure::Unrecognised`].
    pub fn from_stored(name: &str) -> Self {
        ErrorKind::from_name(name)
            .map(AttemptFailure::Provider)
            .or_else(|| {
                Self::BATCH
                    .iter()
                    .find(|(_, own)| *own == name)
                    .map(|(failure, _)| failure.clone())
            })
            .unwrap_or_else(|| AttemptFailure::Unrecognised(name.to_string()))
    }

    /// The job's failure when this was its last attempt: the same stable name, where
    /// [`JobFailure`] has one.
    pub fn job_failure(&self) -> JobFailure {
        JobFailure::from_name(self.as_str())
    }
}

impl From<ErrorKind> for AttemptFailure {
    fn from(kind: ErrorKind) -> Self {
        AttemptFailure::Provider(kind)
    }
}

impl std::fmt::Display for AttemptFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AttemptOutcome {
    /// The word stored in `attempts.outcome` and shown in a job's view.
    pub fn as_str(&self) -> &str {
        match self {
            AttemptOutcome::Running => "running",
            AttemptOutcome::Interrupted => "interrupted",
            AttemptOutcome::Ok => "ok",
            AttemptOutcome::Failed(failure) => failure.as_str(),
        }
    }

    /// The outcome a stored word means (any other word names a failure).
    pub fn from_stored(word: &str) -> Self {
        match word {
            "running" => AttemptOutcome::Running,
            "interrupted" => AttemptOutcome::Interrupted,
            "ok" => AttemptOutcome::Ok,
            failure => AttemptOutcome::Failed(AttemptFailure::from_stored(failure)),
        }
    }
}

impl std::fmt::Display for AttemptOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for AttemptOutcome {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// The error kind of a job failed because its attempts were interrupted (its workers
/// stopped mid-call until `max_attempts` or the queue's delivery limit ran out).
pub const INTERRUPTED: JobFailure = JobFailure::Interrupted;

/// What an interrupted attempt's `error` says.
const INTERRUPTED_ATTEMPT: &str = "interrupted: its worker stopped (a crash, a kill, a lost \
     queue connection) before the outcome was recorded; found when the job was picked up again";

/// One attempt, as the worker reports it.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub number: u32,
    pub deployment: String,
    pub provider: String,
    pub model: String,
    pub key_id: String,
    /// The tier the call was made on; stored as its endpoint ([`Tier::endpoint`]: a flex
    /// call's attempt says `realtime`).
    pub tier: Tier,
    pub outcome: AttemptOutcome,
    pub http_status: Option<u16>,
    pub error: Option<String>,
    pub retry_after_ms: Option<i64>,
    pub started_at: i64,
    pub finished_at: i64,
    /// Why the router sent the attempt where it did (see [`crate::router::Route::choose`]).
    pub chosen_because: Option<String>,
    /// Milliseconds to the first token, when known.
    pub first_token_ms: Option<i64>,
}

/// An attempt about to be made, as [`Store::start_attempt`] records it (`running`): where it
/// goes and why, known before the call.
#[derive(Debug, Clone)]
pub struct AttemptStart {
    pub deployment: String,
    pub provider: String,
    pub model: String,
    pub key_id: String,
    /// The tier the call is made on; stored as its endpoint, as [`AttemptRecord::tier`].
    pub tier: Tier,
    pub started_at: i64,
    pub chosen_because: Option<String>,
}

impl Store {
    /// Starts the next attempt of a job, in one transaction: any attempt of it still
    /// `running` (its worker died mid-call) becomes `interrupted`; the job moves to `running`
    /// and counts the attempt; the attempt is recorded `running`, so a crash during the call
    /// leaves it visible. Guarded in SQL: a final job is not started
    /// ([`StartOutcome::AlreadyFinal`]), nor one that has had `max_attempts` already, counted
    /// across crashes, which is failed instead with why ([`StartOutcome::Exhausted`]).
    pub async fn start_attempt(
        &self,
        id: Uuid,
        max_attempts: u32,
        attempt: AttemptStart,
    ) -> Result<StartOutcome, StoreError> {
        self.write(move |mut conn| {
            Box::pin(async move {
                let now = now_ms();
                let job = id.to_string();
                let started = match conn.reborrow() {
                    Conn::Sqlite(c) => {
                        // One query (see [`START`]), since each statement is a round trip to
                        // SQLite's thread: every row is read, so SQLite runs every statement.
                        let started: Vec<i64> = sqlx::query_scalar(&START)
                            .bind(INTERRUPTED_ATTEMPT)
                            .bind(now)
                            .bind(&job)
                            .bind(now)
                            .bind(&job)
                            .bind(i64::from(max_attempts))
                            .bind(&job)
                            .bind(&attempt.deployment)
                            .bind(&attempt.provider)
                            .bind(&attempt.model)
                            .bind(&attempt.key_id)
                            .bind(attempt.tier.endpoint())
                            .bind(attempt.started_at)
                            .bind(attempt.started_at)
                            .bind(&attempt.chosen_because)
                            .bind(&job)
                            .fetch_all(&mut *c)
                            .await?;
                        started.first().copied()
                    }
                    Conn::Postgres(c) => {
                        start_postgres(c, &job, max_attempts, &attempt, now).await?
                    }
                };
                if let Some(number) = started {
                    return Ok(StartOutcome::Started(number as u32));
                }
                let row: Option<(String, i64)> = with_conn!(conn, c => sqlx::query_as(
                    "SELECT status, attempts FROM jobs WHERE id = $1",
                )
                .bind(&job)
                .fetch_optional(&mut *c)
                .await?);
                let Some((status, attempts)) = row else {
                    return Ok(StartOutcome::Missing);
                };
                let status: JobStatus = status
                    .parse()
                    .map_err(|e: String| sqlx::Error::Decode(e.into()))?;
                if status.is_final() {
                    return Ok(StartOutcome::AlreadyFinal(status));
                }
                let attempts = attempts as u32;
                let (kind, message) = exhausted(&mut conn, &job, attempts, max_attempts).await?;
                fail_job(&mut conn, id, None, kind, &message, None).await?;
                Ok(StartOutcome::Exhausted { attempts })
            })
        })
        .await
    }
}

/// [`START`] on Postgres, one statement after another: the job's row locked first, so that
/// of two processes starting the same job the second waits, then finds the first one's
/// attempt `running` and marks it `interrupted`, and numbers its own after it. The attempt's
/// number, or `None` when no attempt started (no such job, final, or out of attempts).
async fn start_postgres(
    conn: &mut PgConnection,
    job: &str,
    max_attempts: u32,
    attempt: &AttemptStart,
    now: i64,
) -> Result<Option<i64>, sqlx::Error> {
    let locked: Option<i64> =
        sqlx::query_scalar("SELECT attempts FROM jobs WHERE id = $1 FOR UPDATE")
            .bind(job)
            .fetch_optional(&mut *conn)
            .await?;
    if locked.is_none() {
        return Ok(None);
    }
    interrupt_attempts(&mut Conn::Postgres(&mut *conn), job, now).await?;
    let number: Option<i64> = sqlx::query_scalar(
        "UPDATE jobs SET status = 'running', attempts = attempts + 1, updated_at = $1 \
         WHERE id = $2 AND status IN ('queued', 'running') AND attempts < $3 RETURNING attempts",
    )
    .bind(now)
    .bind(job)
    .bind(i64::from(max_attempts))
    .fetch_optional(&mut *conn)
    .await?;
    let Some(number) = number else {
        return Ok(None);
    };
    sqlx::query(&START_POSTGRES_ATTEMPT)
        .bind(job)
        .bind(number)
        .bind(&attempt.deployment)
        .bind(&attempt.provider)
        .bind(&attempt.model)
        .bind(&attempt.key_id)
        .bind(attempt.tier.endpoint())
        .bind(attempt.started_at)
        .bind(&attempt.chosen_because)
        .execute(&mut *conn)
        .await?;
    Ok(Some(number))
}

/// The attempt [`start_postgres`] records, `running`, under the number the job's count gave.
static START_POSTGRES_ATTEMPT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "INSERT INTO attempts ({ATTEMPT_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, '{running}', NULL, NULL, NULL, $8, $8, $9, NULL) \
         {ATTEMPT_UPSERT}",
        running = AttemptOutcome::Running.as_str(),
    )
});

/// The columns of an attempt, in [`bind_attempt!`]'s order.
pub(super) const ATTEMPT_COLUMNS: &str =
    "job_id, number, deployment, provider, model, key_id, tier, \
     outcome, http_status, error, retry_after_ms, started_at, finished_at, chosen_because, \
     first_token_ms";

/// What recording an attempt number already recorded does (the row [`Store::start_attempt`]
/// wrote `running`): completes it.
pub(super) const ATTEMPT_UPSERT: &str = "ON CONFLICT (job_id, number) DO UPDATE SET \
     outcome = excluded.outcome, http_status = excluded.http_status, error = excluded.error, \
     retry_after_ms = excluded.retry_after_ms, finished_at = excluded.finished_at, \
     chosen_because = excluded.chosen_because, first_token_ms = excluded.first_token_ms";

/// Inserts an attempt, or completes the row of an attempt number already recorded. Bound by
/// [`bind_attempt!`].
pub(super) static INSERT_ATTEMPT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "INSERT INTO attempts ({ATTEMPT_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) {ATTEMPT_UPSERT}"
    )
});

/// Everything `start_attempt` writes, as one query: the attempts still `running` become
/// `interrupted` (no worker holds the job any more), then the guarded transition
/// `queued | running → running` that counts the attempt only while `attempts < max_attempts`,
/// then the attempt's row, `running`, numbered by that count, only if the transition wrote
/// (`changes() = 1`). Returns the attempt's number, or no row when no attempt started.
/// SQLite only: Postgres runs the statements one by one ([`start_postgres`]).
static START: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "UPDATE attempts SET outcome = '{interrupted}', error = ?, finished_at = ? \
         WHERE job_id = ? AND outcome = '{running}'; \
         UPDATE jobs SET status = 'running', attempts = attempts + 1, updated_at = ? \
         WHERE id = ? AND status IN ('queued', 'running') AND attempts < ?; \
         INSERT INTO attempts ({ATTEMPT_COLUMNS}) \
         SELECT ?, attempts, ?, ?, ?, ?, ?, '{running}', NULL, NULL, NULL, ?, ?, ?, NULL \
         FROM jobs WHERE id = ? AND changes() = 1 {ATTEMPT_UPSERT} RETURNING number",
        interrupted = AttemptOutcome::Interrupted.as_str(),
        running = AttemptOutcome::Running.as_str(),
    )
});

/// Binds [`INSERT_ATTEMPT`]'s parameters, in its order, to `$query` (a query of either
/// backend: a macro, so one list of binds serves both drivers): the job's id as text, then
/// the [`AttemptRecord`]'s fields.
macro_rules! bind_attempt {
    ($query:expr, $job:expr, $a:expr) => {{
        let a: &AttemptRecord = $a;
        $query
            .bind($job)
            .bind(a.number as i64)
            .bind(&a.deployment)
            .bind(&a.provider)
            .bind(&a.model)
            .bind(&a.key_id)
            .bind(a.tier.endpoint())
            .bind(a.outcome.as_str())
            .bind(a.http_status.map(i64::from))
            .bind(&a.error)
            .bind(a.retry_after_ms)
            .bind(a.started_at)
            .bind(a.finished_at)
            .bind(&a.chosen_because)
            .bind(a.first_token_ms)
    }};
}
pub(super) use bind_attempt;

pub(in crate::store) async fn insert_attempt(
    conn: &mut Conn<'_>,
    job: Uuid,
    a: &AttemptRecord,
) -> Result<(), sqlx::Error> {
    let job = job.to_string();
    with_conn!(conn, c => bind_attempt!(sqlx::query(&INSERT_ATTEMPT), &job, a)
        .execute(&mut *c)
        .await?
        .rows_affected());
    Ok(())
}

/// Marks the attempts of `job` still `running` as `interrupted`: whoever picks the job up
/// again (to start an attempt, place it in a provider batch or fail it) knows that no
/// worker holds it any more, so the one that made them stopped before their outcome.
pub(in crate::store) async fn interrupt_attempts(
    conn: &mut Conn<'_>,
    job: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    with_conn!(conn, c => sqlx::query(
        "UPDATE attempts SET outcome = $1, error = $2, finished_at = $3 \
         WHERE job_id = $4 AND outcome = $5",
    )
    .bind(AttemptOutcome::Interrupted.as_str())
    .bind(INTERRUPTED_ATTEMPT)
    .bind(now)
    .bind(job)
    .bind(AttemptOutcome::Running.as_str())
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(())
}

/// Why a job that has had all its `max_attempts` fails: the error kind and the message,
/// from how its last attempt ended (interrupted, as a rule: a worker that sees an attempt
/// fail decides the job's fate itself).
pub(in crate::store) async fn exhausted(
    conn: &mut Conn<'_>,
    job: &str,
    attempts: u32,
    max_attempts: u32,
) -> Result<(JobFailure, String), sqlx::Error> {
    let last: Option<String> = with_conn!(conn, c => sqlx::query_scalar(
        "SELECT outcome FROM attempts WHERE job_id = $1 AND number = $2",
    )
    .bind(job)
    .bind(i64::from(attempts))
    .fetch_optional(&mut *c)
    .await?);
    let (kind, how) = match last.as_deref().map(AttemptOutcome::from_stored) {
        Some(AttemptOutcome::Failed(failure)) => {
            (failure.job_failure(), format!("ended {failure}"))
        }
        _ => (
            INTERRUPTED,
            "was interrupted before its outcome was recorded (its worker stopped or lost its \
             queue connection)"
                .to_string(),
        ),
    };
    let message = format!(
        "gave up after {attempts} attempts (max_attempts {max_attempts}): attempt {attempts} {how}"
    );
    Ok((kind, message))
}
