//! Crash loops: `sluice serve` killed with SIGKILL again and again while its calls are at the
//! provider, on both queue backends. However often a process dies mid-call, every job reaches
//! a final state, no job is started more than `max_attempts` times or sent to the provider more
//! often, every interrupted attempt stays visible in the job's view, and each succeeded job is
//! charged exactly once.
//!
//! Two bounds end a crash loop, and each case reaches one of them first:
//! - `max_attempts` (counted in the store, across crashes): the delivery after the last
//!   attempt fails the job instead of calling again;
//! - the queue's delivery limit (RabbitMQ's `x-delivery-limit`, the same bound on the
//!   embedded queue): the queue gives up on the message, and its job is failed in the store.
//!
//! The provider is a simulator of the test's own, outside the killed process, so it counts
//! every call that reached it whatever happened to the caller.

#![cfg(unix)]

use crate::common;

use common::serve::Served;
use common::{Backend, AMQP_URL, TOKEN};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

/// How long a slow job's provider call takes: long enough to be killed in the middle of it,
/// shorter than the provider timeout.
const SLOW_CALL: &str = "2s";

/// One crash-loop run: its configuration and what it found.
struct CrashLoop {
    backend: Backend,
    max_attempts: u32,
    delivery_limit: u32,
    dir: tempfile::TempDir,
    /// `http://HOST:PORT` of the server running now.
    base_url: String,
    prefix: String,
    sim: sluice::sim::SimServer,
    http: reqwest::Client,
    /// Each job's id and the text that tells its calls apart at the simulator.
    jobs: Vec<(uuid::Uuid, String, bool)>,
    kills: u32,
    runs: u32,
}

impl CrashLoop {
    async fn new(backend: Backend, max_attempts: u32, delivery_limit: u32) -> CrashLoop {
        let sim = sluice::sim::spawn(
            "127.0.0.1:0".parse().unwrap(),
            sluice::sim::SimConfig::default(),
        )
        .await
        .unwrap();
        CrashLoop {
            backend,
            max_attempts,
            delivery_limit,
            dir: tempfile::tempdir().unwrap(),
            base_url: String::new(),
            prefix: format!("sluice-test-crash-{}", uuid::Uuid::now_v7()),
            sim,
            http: reqwest::Client::new(),
            jobs: Vec::new(),
            kills: 0,
            runs: 0,
        }
    }

    /// The API of the server running now (each start binds a new port).
    fn base(&self) -> String {
        self.base_url.clone()
    }

    /// A configuration of its own: one deployment on the test's simulator, a visibility
    /// timeout just above the provider timeout (so the embedded queue hands a dead process's
    /// jobs out again within seconds), no recurring jobs.
    fn config(&self) -> PathBuf {
        let queue = match self.backend {
            Backend::Embedded => String::new(),
            Backend::Rabbitmq | Backend::Postgres => {
                format!("url = \"{AMQP_URL}\"\nprefix = \"{}\"", self.prefix)
            }
        };
        let text = format!(
            r#"
[server]
listen = "127.0.0.1:0"
database = {database:?}

[queue]
visibility_timeout = "4s"
delivery_limit = {delivery_limit}
{queue}

[scheduler]
enabled = false

[retry]
max_attempts = {max_attempts}
base_delay = "100ms"
max_delay = "1s"

[[tenants]]
name = "acme"
token = "{TOKEN}"

[providers.upstream]
kind = "openai"
base_url = "{sim}"
timeout = "3s"
keys = [{{ id = "k1", secret = "sk-sim-1" }}]

[deployments.mini]
provider = "upstream"
model = "gpt-4o-mini"

[routes.slow]
deployments = ["mini"]
"#,
            database = self.dir.path().join("sluice.db").to_str().unwrap(),
            delivery_limit = self.delivery_limit,
            max_attempts = self.max_attempts,
            sim = self.sim.openai_base_url(),
        );
        let path = self.dir.path().join("sluice.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Starts `sluice serve` and waits until it answers; its log goes to a file of the run.
    async fn serve(&mut self) -> Served {
        self.runs += 1;
        let log = self.dir.path().join(format!("serve-{}.log", self.runs));
        let server = Served::start(&self.config(), &[], &log).await;
        self.base_url = server.base_url.clone();
        server
    }

    /// Submits `slow` jobs held at the provider for [`SLOW_CALL`] and `quick` ones answered at
    /// once, in one request.
    async fn submit(&mut self, slow: usize, quick: usize) {
        let mut texts = Vec::new();
        for i in 0..slow {
            texts.push((format!("slow job {i} {}", uuid::Uuid::now_v7()), true));
        }
        for i in 0..quick {
            texts.push((format!("quick job {i} {}", uuid::Uuid::now_v7()), false));
        }
        let body: Vec<Value> = texts
            .iter()
            .map(|(text, slow)| {
                let content = if *slow {
                    format!("[sim latency={SLOW_CALL}] {text}")
                } else {
                    text.clone()
                };
                json!({"urgency": "standard",
                       "request": {"model": "slow", "messages": [{"role": "user", "content": content}]}})
            })
            .collect();
        let answer: Value = self
            .http
            .post(format!("{}/v1/jobs", self.base()))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap();
        let ids = answer["jobs"].as_array().expect("the jobs submitted");
        for ((text, slow), job) in texts.into_iter().zip(ids) {
            let id = job["id"].as_str().unwrap().parse().unwrap();
            self.jobs.push((id, text, slow));
        }
    }

    /// Provider calls per job, counted at the simulator.
    fn calls(&self) -> HashMap<uuid::Uuid, u32> {
        let requests = self.sim.requests();
        self.jobs
            .iter()
            .map(|(id, text, _)| {
                let n = requests
                    .iter()
                    .filter(|r| r.to_string().contains(text.as_str()))
                    .count();
                (*id, n as u32)
            })
            .collect()
    }

    async fn store(&self) -> sqlx::SqlitePool {
        sqlx::SqlitePool::connect(&format!(
            "sqlite://{}?mode=ro",
            self.dir.path().join("sluice.db").display()
        ))
        .await
        .unwrap()
    }

    /// Each job's status and attempts started, as the store has them.
    async fn statuses(&self) -> HashMap<uuid::Uuid, (String, u32)> {
        let store = self.store().await;
        let rows: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT id, status, attempts FROM jobs")
                .fetch_all(&store)
                .await
                .unwrap();
        store.close().await;
        rows.into_iter()
            .map(|(id, status, attempts)| (id.parse().unwrap(), (status, attempts as u32)))
            .collect()
    }

    fn is_final(status: &str) -> bool {
        matches!(status, "succeeded" | "failed" | "cancelled")
    }

    /// Waits until every slow job that is not final has had a call more than in `before`
    /// (they are all at the provider), or `limit` passes; true when any call was made.
    async fn wait_for_calls(&self, before: &HashMap<uuid::Uuid, u32>, limit: Duration) -> bool {
        let mut any_called = false;
        // Running out of time is an answer here (no call made), not a failure.
        let _ = common::within(limit, async || {
            let calls = self.calls();
            let statuses = self.statuses().await;
            let waiting = self.jobs.iter().filter(|(id, _, slow)| {
                *slow && !statuses.get(id).is_some_and(|(s, _)| Self::is_final(s))
            });
            let mut all_called = true;
            any_called = false;
            for (id, _, _) in waiting {
                if calls[id] > before[id] {
                    any_called = true;
                } else {
                    all_called = false;
                }
            }
            all_called
        })
        .await;
        any_called
    }

    /// Waits until every job is final, or `limit` passes.
    async fn wait_final(&self, limit: Duration) {
        // The caller checks what is final; a job left unfinished is its finding to report.
        let _ = common::within(limit, async || {
            let statuses = self.statuses().await;
            self.jobs.iter().all(|(id, _, _)| {
                statuses
                    .get(id)
                    .is_some_and(|(status, _)| Self::is_final(status))
            })
        })
        .await;
    }

    /// The crash loop: start, let the slow jobs reach the provider, SIGKILL, again, until a
    /// run makes no call; then a last run finishes what is left.
    async fn run(&mut self, slow: usize, quick: usize) {
        let rounds = self.max_attempts.max(self.delivery_limit + 1) + 2;
        let mut server = self.serve().await;
        self.submit(slow, quick).await;
        // The calls counted before each round, taken while no server runs (none before the
        // first), so a call made as a server starts is never mistaken for an earlier one.
        let mut before: HashMap<uuid::Uuid, u32> =
            self.jobs.iter().map(|(id, _, _)| (*id, 0)).collect();
        for _ in 0..rounds {
            // The embedded queue hands a dead process's jobs out again after the visibility
            // timeout (4 s); RabbitMQ requeues them when the connection drops.
            if !self.wait_for_calls(&before, Duration::from_secs(15)).await {
                break;
            }
            // Every call is held at the provider for SLOW_CALL: kill in the middle of it (the
            // point of the test: a sleep into the call, not a wait for a state).
            tokio::time::sleep(Duration::from_millis(300)).await;
            server.kill().await;
            self.kills += 1;
            before = self.calls();
            server = self.serve().await;
        }
        self.wait_final(Duration::from_secs(30)).await;
        server.kill().await;
    }

    /// A job as `GET /v1/jobs/{id}` shows it (the server is started again to ask).
    async fn views(&mut self) -> HashMap<uuid::Uuid, Value> {
        let mut server = self.serve().await;
        let mut views = HashMap::new();
        for (id, _, _) in &self.jobs {
            let view: Value = self
                .http
                .get(format!("{}/v1/jobs/{id}", self.base()))
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            views.insert(*id, view);
        }
        server.kill().await;
        views
    }

    /// What every crash loop must come to; returns the job views for the case's own checks.
    async fn check(&mut self, case: &str) -> HashMap<uuid::Uuid, Value> {
        let statuses = self.statuses().await;
        let calls = self.calls();
        let store = self.store().await;
        let cost_rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM costs")
            .fetch_one(&store)
            .await
            .unwrap();
        let charged_jobs: i64 = sqlx::query_scalar("SELECT COUNT(DISTINCT job_id) FROM costs")
            .fetch_one(&store)
            .await
            .unwrap();
        store.close().await;
        let count = |wanted: &str| {
            self.jobs
                .iter()
                .filter(|(id, _, _)| statuses.get(id).is_some_and(|(s, _)| s == wanted))
                .count()
        };
        let finals = self
            .jobs
            .iter()
            .filter(|(id, _, _)| statuses.get(id).is_some_and(|(s, _)| Self::is_final(s)))
            .count();
        let total_calls: u32 = calls.values().sum();
        println!(
            "{case} ({:?}, max_attempts {}, delivery_limit {}): {} jobs submitted, {finals} final \
             ({} succeeded, {} failed), {} kills mid-call, {total_calls} provider calls, \
             {cost_rows} cost rows",
            self.backend,
            self.max_attempts,
            self.delivery_limit,
            self.jobs.len(),
            count("succeeded"),
            count("failed"),
            self.kills,
        );
        let succeeded = count("succeeded") as i64;
        let views = self.views().await;
        for (id, _, _) in &self.jobs {
            let (status, attempts) = &statuses[id];
            assert!(
                Self::is_final(status),
                "job {id} is still {status} after {} kills: {:#}",
                self.kills,
                views[id]
            );
            assert!(
                *attempts <= self.max_attempts,
                "job {id} started {attempts} attempts, max_attempts {}",
                self.max_attempts
            );
            assert!(
                calls[id] <= self.max_attempts,
                "job {id} reached the provider {} times, max_attempts {}",
                calls[id],
                self.max_attempts
            );
            let shown = views[id]["attempts"].as_array().unwrap().len();
            assert_eq!(
                shown, *attempts as usize,
                "every attempt started is shown: {:#}",
                views[id]
            );
        }
        assert_eq!(finals, self.jobs.len());
        assert_eq!(cost_rows, succeeded, "one cost row per succeeded job");
        assert_eq!(charged_jobs, cost_rows, "no job charged twice");
        views
    }
}

impl Drop for CrashLoop {
    fn drop(&mut self) {
        if self.backend.uses_rabbitmq() {
            common::delete_topology_blocking(sluice::queue::amqp::Topology::new(
                self.prefix.clone(),
                self.delivery_limit,
            ));
        }
    }
}

/// Killed mid-call at every attempt: after `max_attempts` interrupted attempts the job is
/// failed, not called again, and its view lists each attempt as interrupted.
async fn a_crash_loop_fails_the_job_after_max_attempts(backend: Backend) {
    let mut run = CrashLoop::new(backend, 2, 10).await;
    run.run(3, 2).await;
    assert!(
        run.kills >= run.max_attempts,
        "every attempt was killed mid-call ({} kills)",
        run.kills
    );
    let views = run.check("crash loop, max_attempts first").await;
    for (id, _, slow) in &run.jobs {
        let view = &views[id];
        if !slow {
            assert_eq!(view["status"], "succeeded", "{view:#}");
            continue;
        }
        assert_eq!(view["status"], "failed", "{view:#}");
        assert_eq!(view["error"]["kind"], "interrupted", "{view:#}");
        let message = view["error"]["message"].as_str().unwrap();
        assert!(message.contains("max_attempts"), "{message}");
        let outcomes: Vec<&str> = view["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["outcome"].as_str().unwrap())
            .collect();
        assert_eq!(outcomes, ["interrupted", "interrupted"], "{view:#}");
    }
}

/// Killed mid-call more often than the queue's delivery limit allows, with attempts to
/// spare: the queue gives up on the message, and the job is failed in the store with the
/// reason instead of staying `running` for ever.
async fn a_dead_lettered_job_is_failed_in_the_store(backend: Backend) {
    let mut run = CrashLoop::new(backend, 5, 1).await;
    run.run(2, 1).await;
    let views = run.check("crash loop, delivery limit first").await;
    for (id, _, slow) in &run.jobs {
        let view = &views[id];
        if !slow {
            continue;
        }
        assert_eq!(view["status"], "failed", "{view:#}");
        assert_eq!(view["error"]["kind"], "interrupted", "{view:#}");
        let message = view["error"]["message"].as_str().unwrap();
        assert!(message.contains("delivery limit"), "{message}");
        assert!(view["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["outcome"] == "interrupted"));
    }
}

on_both_backends!(
    a_crash_loop_fails_the_job_after_max_attempts,
    a_dead_lettered_job_is_failed_in_the_store,
);
