//! Recording jobs: inserting their rows (up to 500 a statement, a `custom_id` answered by the
//! job that holds it), refusing the ones the queue did not take, adopting a job first seen
//! on the queue, marking jobs published, and reading back the envelopes the relay publishes
//! again. Apart from the transitions because a job is recorded once and moved many times.

use crate::job::{Envelope, Tags};
use crate::store::{ms_to_time, now_ms, Conn, Dialect, Store, StoreError};
use crate::{with_conn, with_pool};
use uuid::Uuid;

/// What happened when a job was offered to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertOutcome {
    /// A new job row was written.
    Created,
    /// The tenant already has a job with this `custom_id` (or this id): that one stands.
    Existing(Uuid),
    /// The bulk already holds this `custom_id` for a different request: that job stands and
    /// nothing of this one was written. Answering with that job would let the client believe
    /// its changed line runs. Only a bulk's jobs get this; jobs submitted alone are refused
    /// together instead ([`CustomIdReused`]).
    Conflicting(Uuid),
}

/// A `custom_id` (the `idempotency-key` of `/v1/chat/completions`) offered again with a
/// different request. Answering with the first job would hand the client an answer to a
/// question it did not ask, so the second request is refused and nothing is written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "custom_id \"{custom_id}\" already names job {existing}, whose request is different; \
     a retry must repeat its request exactly, and a new request needs a new custom_id"
)]
pub struct CustomIdReused {
    pub custom_id: String,
    pub existing: Uuid,
}

/// What [`Store::refuse_unpublished`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every job was refused: none will run, whatever the broker does with their messages.
    Refused,
    /// A worker already has one of them: nothing was refused, the jobs stand (accepted).
    TooLate,
}

/// What [`Store::adopt`] made of a consumed envelope the store had no row for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Adopted {
    /// Recorded now: run it.
    Recorded,
    /// The tenant's job with this `custom_id` (or this id) stands: not run again.
    Existing(Uuid),
    /// Not a job to run, for the reason given.
    Orphan(Orphan),
}

/// A message whose job must not run although the envelope is well formed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Orphan {
    /// The late message of a job refused at submission (the producer heard a 503).
    #[error(
        "job {0} was refused when it was submitted (the queue did not confirm its message in \
         time, and the producer was told nothing was accepted); this is that message, arriving \
         late, and it is not run"
    )]
    Refused(Uuid),
    /// A message Sluice published for a job it had recorded, but the store has no such job.
    #[error(
        "job {0} was recorded by Sluice before it was published, but this store has no such \
         job (is another Sluice, with another database, using the same queue prefix?); it is \
         not run"
    )]
    Unrecorded(Uuid),
}

impl Store {
    /// Records a new job as `queued`, unless the tenant already has one with the same id or
    /// `custom_id`, in which case that job's id is returned and nothing is written.
    ///
    /// `published` says whether the job's message is already on the queue (a job recorded on
    /// first consume) or is still to be published (see [`Store::mark_published`]).
    pub async fn insert_job(
        &self,
        envelope: &Envelope,
        published: bool,
    ) -> Result<InsertOutcome, StoreError> {
        let envelope = envelope.clone();
        let mut outcomes = self
            .write(move |conn| {
                Box::pin(async move {
                    let mut conn = conn;
                    let job = NewJob {
                        envelope: &envelope,
                        published,
                        bulk: None,
                    };
                    insert_jobs(&mut conn, &[job]).await
                })
            })
            .await?;
        Ok(outcomes.remove(0))
    }

    /// Records many jobs in one grouped commit; see [`Store::insert_job`].
    /// A `custom_id` reused for a different request refuses them all ([`CustomIdReused`]).
    pub async fn insert_jobs(
        &self,
        envelopes: Vec<Envelope>,
    ) -> Result<Vec<InsertOutcome>, StoreError> {
        self.write(move |conn| {
            Box::pin(async move {
                let mut conn = conn;
                insert_alone(&mut conn, &envelopes, false).await
            })
        })
        .await?
        .map_err(StoreError::CustomIdReused)
    }

    /// Refuses jobs that were recorded but whose messages the queue did not confirm, all or
    /// none: when no worker has touched any of them, their rows are deleted (which frees
    /// their `custom_id`s for the producer's retry) and their ids kept in `refused_jobs`, so
    /// that a message the broker takes late is recognised ([`Store::adopt`]) and never run.
    /// When a worker has already started or reserved one, the broker evidently took the
    /// messages: nothing is refused, and the rows stay for the relay to publish what may
    /// still be missing.
    pub async fn refuse_unpublished(&self, ids: Vec<Uuid>) -> Result<Refusal, StoreError> {
        self.write(move |conn| {
            Box::pin(async move {
                let now = now_ms();
                match conn {
                    Conn::Sqlite(c) => {
                        let ids = serde_json::to_string(&ids).expect("ids always serialise");
                        let touched: i64 = sqlx::query_scalar(TOUCHED_SQLITE)
                            .bind(&ids)
                            .fetch_one(&mut *c)
                            .await?;
                        if touched > 0 {
                            return Ok(Refusal::TooLate);
                        }
                        sqlx::query(REFUSE_SQLITE)
                            .bind(&ids)
                            .bind(now)
                            .execute(&mut *c)
                            .await?;
                        sqlx::query(DELETE_SQLITE)
                            .bind(&ids)
                            .execute(&mut *c)
                            .await?;
                    }
                    Conn::Postgres(c) => {
                        let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
                        // The rows locked before they are looked at: a worker starting or
                        // reserving one of them waits, then finds it gone.
                        sqlx::query(LOCK_POSTGRES)
                            .bind(&ids)
                            .execute(&mut *c)
                            .await?;
                        let touched: i64 = sqlx::query_scalar(TOUCHED_POSTGRES)
                            .bind(&ids)
                            .fetch_one(&mut *c)
                            .await?;
                        if touched > 0 {
                            return Ok(Refusal::TooLate);
                        }
                        sqlx::query(REFUSE_POSTGRES)
                            .bind(&ids)
                            .bind(now)
                            .execute(&mut *c)
                            .await?;
                        sqlx::query(DELETE_POSTGRES)
                            .bind(&ids)
                            .execute(&mut *c)
                            .await?;
                    }
                }
                Ok(Refusal::Refused)
            })
        })
        .await
    }

    /// Records a job whose message a worker consumed before the store knew it: a job
    /// published straight onto the exchange (see `docs/envelope.md`). A message of a job
    /// Sluice recorded itself (`envelope.recorded`) is never recorded again from the message,
    /// nor one refused at submission ([`Store::refuse_unpublished`]): those are
    /// [`Adopted::Orphan`], not to be run.
    pub async fn adopt(&self, envelope: &Envelope) -> Result<Adopted, StoreError> {
        let envelope = envelope.clone();
        self.write(move |conn| {
            Box::pin(async move {
                let mut conn = conn;
                let refused: Option<String> = with_conn!(conn, c => sqlx::query_scalar(
                    "SELECT id FROM refused_jobs WHERE id = $1",
                )
                .bind(envelope.id.to_string())
                .fetch_optional(&mut *c)
                .await?);
                if refused.is_some() {
                    return Ok(Adopted::Orphan(Orphan::Refused(envelope.id)));
                }
                if envelope.recorded {
                    // Its row would have been found; a job whose row is gone stays gone.
                    let exists: Option<String> = with_conn!(conn, c => sqlx::query_scalar(
                        "SELECT id FROM jobs WHERE id = $1",
                    )
                    .bind(envelope.id.to_string())
                    .fetch_optional(&mut *c)
                    .await?);
                    if exists.is_none() {
                        return Ok(Adopted::Orphan(Orphan::Unrecorded(envelope.id)));
                    }
                }
                let job = NewJob {
                    envelope: &envelope,
                    published: true,
                    bulk: None,
                };
                Ok(match insert_jobs(&mut conn, &[job]).await?.remove(0) {
                    InsertOutcome::Created => Adopted::Recorded,
                    InsertOutcome::Existing(id) | InsertOutcome::Conflicting(id) => {
                        Adopted::Existing(id)
                    }
                })
            })
        })
        .await
    }

    /// Records that the queue has confirmed these jobs' messages.
    pub async fn mark_published(&self, ids: Vec<Uuid>) -> Result<(), StoreError> {
        self.write_single(move |conn| {
            Box::pin(async move {
                match conn {
                    Conn::Sqlite(c) => execute_for_each(c, MARK_PUBLISHED_SQLITE, &ids).await,
                    Conn::Postgres(c) => {
                        let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
                        sqlx::query(MARK_PUBLISHED_POSTGRES)
                            .bind(ids)
                            .execute(&mut *c)
                            .await?;
                        Ok(())
                    }
                }
            })
        })
        .await
    }

    /// Jobs recorded at least `older_than` ago whose message was never confirmed (a crash
    /// between recording and publishing), with their envelopes, oldest first.
    pub async fn stranded_jobs(
        &self,
        older_than: std::time::Duration,
        limit: i64,
    ) -> Result<Vec<Envelope>, StoreError> {
        let cutoff = now_ms() - older_than.as_millis() as i64;
        let rows: Vec<EnvelopeRow> = with_pool!(self.pool(), p,
            sql = (STRANDED_SQLITE.as_str(), STRANDED_POSTGRES.as_str()) =>
            sqlx::query_as(sql)
                .bind(cutoff)
                .bind(limit)
                .fetch_all(p)
                .await?);
        rows.into_iter().map(envelope_of).collect()
    }

    /// The envelopes of `ids` (those that exist), to publish them again.
    pub async fn envelopes(&self, ids: &[Uuid]) -> Result<Vec<Envelope>, StoreError> {
        let mut envelopes = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            let dialect = self.dialect();
            let sql = format!(
                "SELECT {ENVELOPE_COLUMNS} FROM jobs WHERE id IN ({})",
                (1..=chunk.len())
                    .map(|n| dialect.placeholder(n))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let rows: Vec<EnvelopeRow> = with_pool!(self.pool(), p => {
                let mut query = sqlx::query_as(&sql);
                for id in chunk {
                    query = query.bind(id.to_string());
                }
                query.fetch_all(p).await?
            });
            for row in rows {
                envelopes.push(envelope_of(row)?);
            }
        }
        Ok(envelopes)
    }
}

/// A job to record: its envelope, whether its message is already on the queue, and for a job
/// of a bulk the bulk's id and the job's line number in the submitted file.
pub(in crate::store) struct NewJob<'a> {
    pub envelope: &'a Envelope,
    pub published: bool,
    pub bulk: Option<(Uuid, u64)>,
}

/// The columns `insert_jobs` writes, one parameter each ([`JOB_PARAMETERS`]; `status` is a
/// constant).
const JOB_COLUMNS: &str = "id, tenant, custom_id, urgency, status, model, user_tag, team_tag, \
     feature_tag, deadline, request, created_at, updated_at, published, bulk_id, bulk_line";
const JOB_PARAMETERS: usize = 15;

/// The values of the `row`-th job (from 0) of an `INSERT` of [`JOB_COLUMNS`]: its parameters
/// numbered after the rows before it (in `dialect`'s words).
fn job_values(dialect: Dialect, row: usize) -> String {
    let p = |n: usize| dialect.placeholder(row * JOB_PARAMETERS + n);
    format!(
        "({}, {}, {}, {}, 'queued', {})",
        p(1),
        p(2),
        p(3),
        p(4),
        (5..=JOB_PARAMETERS).map(p).collect::<Vec<_>>().join(", ")
    )
}

/// Rows in one `INSERT` statement: 15 parameters a row stays well under SQLite's limit of
/// 32,766 parameters a statement (and Postgres' 65,535).
const ROWS_PER_INSERT: usize = 500;

/// The envelopes whose jobs an insert created, `outcomes` being its answer for each, in order
/// (the others' `custom_id` was already held by a job).
pub fn newly_created<'e>(
    envelopes: &'e [Envelope],
    outcomes: &'e [InsertOutcome],
) -> impl Iterator<Item = &'e Envelope> {
    envelopes
        .iter()
        .zip(outcomes)
        .filter(|(_, outcome)| matches!(outcome, InsertOutcome::Created))
        .map(|(envelope, _)| envelope)
}

/// Inserts jobs submitted alone (outside any bulk), `published` or not, unless one of them
/// reuses a `custom_id` for a different request ([`reused_custom_id`]): then nothing is
/// written and the reuse is the answer. Runs on a connection inside a [`Store::write`], so
/// a caller can add its own writes to the same transaction (the embedded queue queues the
/// created jobs' messages there, marking them `published`).
pub async fn insert_alone(
    conn: &mut Conn<'_>,
    envelopes: &[Envelope],
    published: bool,
) -> Result<Result<Vec<InsertOutcome>, CustomIdReused>, sqlx::Error> {
    if let Conn::Postgres(c) = conn.reborrow() {
        lock_custom_ids(c, envelopes).await?;
    }
    if let Some(reused) = reused_custom_id(conn, envelopes).await? {
        return Ok(Err(reused));
    }
    let jobs: Vec<NewJob> = envelopes
        .iter()
        .map(|envelope| NewJob {
            envelope,
            published,
            bulk: None,
        })
        .collect();
    insert_jobs(conn, &jobs).await.map(Ok)
}

/// Inserts job rows unless their id or `custom_id` is taken, and says for each, in order,
/// whether it was created or which job already stands. The `custom_id` is unique per tenant
/// for jobs submitted alone, and per bulk for jobs of a bulk; a bulk's job whose `custom_id`
/// stands for a different request is [`InsertOutcome::Conflicting`].
///
/// Up to [`ROWS_PER_INSERT`] rows go in one statement (`ON CONFLICT DO NOTHING RETURNING id`
/// names the rows created): a statement is a round trip to SQLite's thread, and a bulk of a
/// million lines would otherwise make a million of them. Only a row that was not created costs
/// one more, to find the job that stands in its place.
pub(in crate::store) async fn insert_jobs(
    conn: &mut Conn<'_>,
    jobs: &[NewJob<'_>],
) -> Result<Vec<InsertOutcome>, sqlx::Error> {
    let mut outcomes = Vec::with_capacity(jobs.len());
    let dialect = conn.dialect();
    for chunk in jobs.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO jobs ({JOB_COLUMNS}) VALUES {} ON CONFLICT DO NOTHING RETURNING id",
            (0..chunk.len())
                .map(|row| job_values(dialect, row))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let now = now_ms();
        let created: Vec<String> = with_conn!(conn, c => {
            let mut query = sqlx::query_scalar(&sql);
            for job in chunk {
                let spec = &job.envelope.spec;
                query = query
                    .bind(job.envelope.id.to_string())
                    .bind(&job.envelope.tenant)
                    .bind(&spec.custom_id)
                    .bind(spec.urgency.as_str())
                    .bind(&spec.request.model)
                    .bind(&spec.tags.user)
                    .bind(&spec.tags.team)
                    .bind(&spec.tags.feature)
                    .bind(spec.deadline.map(|d| d.timestamp_millis()))
                    .bind(serde_json::to_string(&spec.request).expect("a request always serialises"))
                    .bind(now)
                    .bind(now)
                    .bind(job.published)
                    .bind(job.bulk.map(|(id, _)| id.to_string()))
                    .bind(job.bulk.map(|(_, line)| line as i64));
            }
            query.fetch_all(&mut *c).await?
        });
        let created: std::collections::HashSet<String> = created.into_iter().collect();
        for job in chunk {
            if created.contains(&job.envelope.id.to_string()) {
                outcomes.push(InsertOutcome::Created);
                continue;
            }
            let (id, request) = existing_job(conn, job).await?;
            let existing = Uuid::parse_str(&id).map_err(|e| sqlx::Error::Decode(e.into()))?;
            // Jobs submitted alone are compared before their insert, all or none
            // ([`reused_custom_id`]); a bulk's line is judged on its own, here, in the
            // inserting transaction, so no concurrent submission slips in between.
            outcomes.push(
                if job.bulk.is_some() && !same_request(&id, &request, job.envelope) {
                    InsertOutcome::Conflicting(existing)
                } else {
                    InsertOutcome::Existing(existing)
                },
            );
        }
    }
    Ok(outcomes)
}

/// The first `custom_id` among `envelopes` (jobs outside any bulk) that names a different
/// request than its envelope's: an earlier envelope's, or a stored job's. Read in the
/// transaction that then inserts, so no concurrent submission slips between the two. A job
/// offered again under its own id (a republished envelope) is the same job, not a reuse.
async fn reused_custom_id(
    conn: &mut Conn<'_>,
    envelopes: &[Envelope],
) -> Result<Option<CustomIdReused>, sqlx::Error> {
    let mut seen: std::collections::HashMap<&str, &Envelope> = std::collections::HashMap::new();
    for envelope in envelopes {
        let Some(custom_id) = envelope.spec.custom_id.as_deref() else {
            continue;
        };
        let reused = |existing: Uuid| CustomIdReused {
            custom_id: custom_id.to_string(),
            existing,
        };
        if let Some(first) = seen.get(custom_id) {
            if first.spec.request != envelope.spec.request {
                return Ok(Some(reused(first.id)));
            }
            continue;
        }
        seen.insert(custom_id, envelope);
        let stored: Option<(String, String)> = with_conn!(conn, c => sqlx::query_as(
            "SELECT id, request FROM jobs WHERE tenant = $1 AND custom_id = $2 AND bulk_id IS NULL",
        )
        .bind(&envelope.tenant)
        .bind(custom_id)
        .fetch_optional(&mut *c)
        .await?);
        let Some((id, request)) = stored else {
            continue;
        };
        if !same_request(&id, &request, envelope) {
            let existing = Uuid::parse_str(&id).map_err(|e| sqlx::Error::Decode(e.into()))?;
            return Ok(Some(reused(existing)));
        }
    }
    Ok(None)
}

/// On Postgres, where another process may submit the same `custom_id` at the same moment,
/// takes a transaction-scoped advisory lock on each tenant's `custom_id` among `envelopes`
/// (in one order, by its hash) before [`reused_custom_id`] reads: the second submission
/// waits for the first to commit, then reads its job and compares, instead of finding
/// nothing, inserting nothing (`ON CONFLICT DO NOTHING`) and answering with a job whose
/// request differs from its own. SQLite's single writer already serialises the two.
async fn lock_custom_ids(
    conn: &mut sqlx::PgConnection,
    envelopes: &[Envelope],
) -> Result<(), sqlx::Error> {
    let keys: Vec<String> = envelopes
        .iter()
        .filter_map(|e| {
            let custom_id = e.spec.custom_id.as_deref()?;
            // The tenant's length first: no two (tenant, custom_id) pairs give one key.
            Some(format!("{}:{}{custom_id}", e.tenant.len(), e.tenant))
        })
        .collect();
    if keys.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "SELECT pg_advisory_xact_lock(h) FROM (SELECT DISTINCT hashtextextended(k, 0) AS h \
         FROM UNNEST($1::TEXT[]) AS k ORDER BY h) AS keys",
    )
    .bind(keys)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Whether a stored job (its id and its `request` column) is what `envelope` asks for: the
/// same job offered again under its own id (a republished envelope), or the same request.
/// The one comparison behind both idempotency checks, so a retry that is a duplicate alone is
/// one in a bulk too.
fn same_request(stored_id: &str, stored_request: &str, envelope: &Envelope) -> bool {
    stored_id == envelope.id.to_string()
        || serde_json::from_str::<crate::job::ChatRequest>(stored_request)
            .is_ok_and(|stored| stored == envelope.spec.request)
}

/// The job that holds a new job's id or `custom_id`: its id and its request (to tell a
/// duplicate from a conflict; the row is read anyway). Each form matches one partial unique
/// index exactly, so the lookup is an index probe.
async fn existing_job(
    conn: &mut Conn<'_>,
    job: &NewJob<'_>,
) -> Result<(String, String), sqlx::Error> {
    let envelope = job.envelope;
    let bulk_id = job.bulk.map(|(id, _)| id.to_string());
    let (sql, scope) = match &bulk_id {
        None => (
            "SELECT id, request FROM jobs WHERE id = $1 OR (tenant = $2 AND custom_id = $3 AND bulk_id IS NULL) LIMIT 1",
            &envelope.tenant,
        ),
        Some(bulk_id) => (
            "SELECT id, request FROM jobs WHERE id = $1 OR (bulk_id = $2 AND custom_id = $3) LIMIT 1",
            bulk_id,
        ),
    };
    let existing: Option<(String, String)> = with_conn!(conn, c => sqlx::query_as(sql)
        .bind(envelope.id.to_string())
        .bind(scope)
        .bind(&envelope.spec.custom_id)
        .fetch_optional(&mut *c)
        .await?);
    existing.ok_or(sqlx::Error::RowNotFound)
}

/// The columns [`envelope_of`] reads, in its order.
const ENVELOPE_COLUMNS: &str =
    "id, tenant, custom_id, urgency, user_tag, team_tag, feature_tag, deadline, request";

/// A row of [`ENVELOPE_COLUMNS`], in its order.
type EnvelopeRow = (
    String,
    String,
    Option<String>,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
    String,
);

/// A job's envelope from its row (selected with [`ENVELOPE_COLUMNS`]).
fn envelope_of(row: EnvelopeRow) -> Result<Envelope, StoreError> {
    let (id, tenant, custom_id, urgency, user, team, feature, deadline, request) = row;
    let corrupt = |e: String| StoreError::Corrupt(e);
    let id = Uuid::parse_str(&id).map_err(|e| corrupt(e.to_string()))?;
    let request = serde_json::from_str(&request).map_err(|e| corrupt(e.to_string()))?;
    Ok(Envelope {
        version: crate::job::ENVELOPE_VERSION,
        id,
        tenant,
        // Whoever waited on a republished job's replies has long given up.
        reply_to: None,
        recorded: true,
        // The trace of a republished job is not kept: its worker's spans start a new one.
        traceparent: None,
        spec: crate::job::JobSpec {
            urgency: urgency.parse().map_err(corrupt)?,
            tags: Tags {
                user,
                team,
                feature,
            },
            custom_id,
            deadline: deadline.map(ms_to_time),
            request,
        },
    })
}

/// Jobs a crash left recorded but unpublished, oldest first (see [`Store::stranded_jobs`]).
static STRANDED_SQLITE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT {ENVELOPE_COLUMNS} FROM jobs WHERE published = 0 AND status = 'queued' \
         AND created_at <= $1 ORDER BY created_at LIMIT $2"
    )
});
static STRANDED_POSTGRES: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT {ENVELOPE_COLUMNS} FROM jobs WHERE NOT published AND status = 'queued' \
         AND created_at <= $1 ORDER BY created_at LIMIT $2"
    )
});

/// [`Store::refuse_unpublished`]'s statements: how many of the jobs a worker touched, then
/// the refusal recorded, then the rows deleted; the ids a JSON array on SQLite, an array on
/// Postgres, where the rows are locked first ([`LOCK_POSTGRES`]) and counted by a statement
/// of its own, which sees what a worker committed while this waited for its lock.
const TOUCHED_SQLITE: &str = "SELECT COUNT(*) FROM jobs \
     WHERE id IN (SELECT value FROM json_each($1)) \
     AND (status != 'queued' OR attempts > 0 OR published = 1 OR EXISTS \
     (SELECT 1 FROM budget_reservations r WHERE r.job_id = jobs.id))";
const LOCK_POSTGRES: &str = "SELECT id FROM jobs WHERE id = ANY($1) ORDER BY id FOR UPDATE";
const TOUCHED_POSTGRES: &str = "SELECT COUNT(*) FROM jobs WHERE id = ANY($1) \
     AND (status != 'queued' OR attempts > 0 OR published OR EXISTS \
     (SELECT 1 FROM budget_reservations r WHERE r.job_id = jobs.id))";
const REFUSE_SQLITE: &str = "INSERT INTO refused_jobs (id, refused_at) \
     SELECT id, $2 FROM jobs WHERE id IN (SELECT value FROM json_each($1)) \
     ON CONFLICT DO NOTHING";
const REFUSE_POSTGRES: &str = "INSERT INTO refused_jobs (id, refused_at) \
     SELECT id, $2 FROM jobs WHERE id = ANY($1) ON CONFLICT DO NOTHING";
const DELETE_SQLITE: &str = "DELETE FROM jobs WHERE id IN (SELECT value FROM json_each($1))";
const DELETE_POSTGRES: &str = "DELETE FROM jobs WHERE id = ANY($1)";

/// [`Store::mark_published`]'s update, the ids a JSON array on SQLite, an array on Postgres.
const MARK_PUBLISHED_SQLITE: &str = "UPDATE jobs SET published = 1 \
     WHERE id IN (SELECT value FROM json_each($1)) AND published = 0";
const MARK_PUBLISHED_POSTGRES: &str =
    "UPDATE jobs SET published = TRUE WHERE id = ANY($1) AND NOT published";

/// Runs a statement over many job ids at once: its one parameter is the ids as a JSON array,
/// read with `json_each`, so a chunk of 500 confirmed jobs is one round trip to SQLite's
/// thread rather than 500.
async fn execute_for_each(
    conn: &mut sqlx::SqliteConnection,
    sql: &'static str,
    ids: &[Uuid],
) -> Result<(), sqlx::Error> {
    let ids = serde_json::to_string(ids).expect("ids always serialise");
    sqlx::query(sql).bind(ids).execute(&mut *conn).await?;
    Ok(())
}
