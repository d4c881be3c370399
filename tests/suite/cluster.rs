//! Sluice as a cluster: two API processes and three worker processes, each an OS process of
//! its own in a folder of its own (no shared disk), sharing one PostgreSQL store and one
//! RabbitMQ, calling one simulator of the test's own that counts the calls each key receives.
//! Jobs submitted through either API run on any worker, are charged once, and read the same
//! through both APIs; a worker killed with SIGKILL mid-run loses nothing. What the cluster
//! shares holds across processes: a key of 60 requests a minute used by all three workers
//! receives no more than one bucket allows in any window, and keeps being used after a
//! worker dies; a file uploaded through one API is batched by the workers through the other;
//! a circuit a worker opened shows open on an API-only process; a 429 one worker meets stops
//! every worker calling that key until its rest ends.

use crate::common::postgres::TestDatabase;
use crate::common::serve::{sluice, Served};
use crate::common::{self, AMQP_URL, TOKEN};
use serde_json::{json, Value};
use sqlx::{PgPool, Row};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Jobs the cluster runs on the unlimited key, half through each API.
const JOBS: usize = 3000;
/// Jobs on the key of 60 requests a minute: its burst, then one a second.
const PACED: usize = 80;
/// The paced key's limit.
const PACED_RPM: u64 = 60;
/// The paced key's secret, as the simulator counts it.
const PACED_KEY: &str = "sk-sim-paced";
/// Jobs that always meet a 500, two attempts each: they open the circuit of `broken`.
const FAILING: usize = 6;
/// Lines of the batch file uploaded through one API and created as a batch through the other.
const BATCH_LINES: usize = 20;
/// Worker processes.
const WORKERS: usize = 3;
/// The storm key's secret, as the simulator counts it.
const STORM_KEY: &str = "sk-sim-storm";
/// The `retry-after` of the simulator's 429s: how long the storm key rests.
const STORM_REST: Duration = Duration::from_secs(3);
/// Jobs per `POST /v1/jobs`.
const CHUNK: usize = 200;
/// How long the simulator holds each call, so a worker is killed with calls in flight.
const CALL: &str = "30ms";

/// Deletes the run's RabbitMQ queues when the test ends, passed or failed.
struct DeleteTopology(String);

impl Drop for DeleteTopology {
    fn drop(&mut self) {
        common::delete_topology_blocking(sluice::queue::amqp::Topology::new(self.0.clone(), 10));
    }
}

/// One process of the cluster: its folder (config, log) and the running child.
struct Node {
    name: &'static str,
    dir: tempfile::TempDir,
    child: Option<tokio::process::Child>,
    /// Set for API nodes: `http://HOST:PORT`.
    base_url: Option<String>,
    /// Kept while an API node runs; it kills the process when dropped.
    served: Option<Served>,
}

impl Node {
    /// Writes the node's own copy of the configuration into a new folder of its own.
    fn new(name: &'static str, database: &TestDatabase, prefix: &str, sim: &str) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            r#"
[server]
listen = "127.0.0.1:0"
database = "{database}"
# Five processes share the suite's one server with the tests running beside this one.
database_connections = 6

[queue]
url = "{AMQP_URL}"
prefix = "{prefix}"
visibility_timeout = "5s"

[scheduler]
enabled = false

[retry]
base_delay = "100ms"
max_delay = "1s"

[[tenants]]
name = "acme"
token = "{TOKEN}"

[health]
window = 10
min_calls = 3
error_threshold = 0.5
cooldown = "3s"

[providers.upstream]
kind = "openai"
base_url = "{sim}"
timeout = "4s"
keys = [{{ id = "k1", secret = "sk-sim-cluster" }}]

[providers.paced]
kind = "openai"
base_url = "{sim}"
timeout = "4s"
keys = [{{ id = "k2", secret = "{PACED_KEY}", requests_per_minute = {PACED_RPM} }}]

[providers.flaky]
kind = "openai"
base_url = "{sim}"
timeout = "4s"
keys = [{{ id = "k3", secret = "sk-sim-flaky" }}]

[providers.storm]
kind = "openai"
base_url = "{sim}"
timeout = "4s"
keys = [{{ id = "k4", secret = "{STORM_KEY}" }}]

[deployments.mini]
provider = "upstream"
model = "gpt-4o-mini"

[deployments.stormy]
provider = "storm"
model = "gpt-4o-mini"

[routes.storm]
deployments = ["stormy"]

[deployments.slow]
provider = "paced"
model = "gpt-4o-mini"

[deployments.broken]
provider = "flaky"
model = "gpt-4o-mini"

[routes.fast]
deployments = ["mini"]

[routes.paced]
deployments = ["slow"]

[routes.flaky]
deployments = ["broken"]
max_attempts = 2
"#,
            database = database.url,
        );
        std::fs::write(dir.path().join("sluice.toml"), text).unwrap();
        Node {
            name,
            dir,
            child: None,
            base_url: None,
            served: None,
        }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("sluice.toml")
    }

    fn log_path(&self, run: u32) -> PathBuf {
        self.dir.path().join(format!("{}-{run}.log", self.name))
    }

    /// `sluice serve --no-workers`, waiting until it listens.
    async fn start_api(&mut self) {
        let served = Served::start(&self.config(), &["--no-workers"], &self.log_path(1)).await;
        self.base_url = Some(served.base_url.clone());
        self.served = Some(served);
    }

    /// `sluice worker`, its output in a log file of run `run`.
    fn start_worker(&mut self, run: u32) {
        let log = std::fs::File::create(self.log_path(run)).unwrap();
        let child = tokio::process::Command::from(sluice())
            .arg("worker")
            .arg("--config")
            .arg(self.config())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// SIGKILL: no shutdown code runs, in-flight calls and unacknowledged messages are left.
    async fn kill(&mut self) {
        let mut child = self.child.take().expect("a running worker");
        child.start_kill().unwrap();
        child.wait().await.unwrap();
    }

    fn logs(&self) -> String {
        let mut all = String::new();
        for entry in std::fs::read_dir(self.dir.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "log") {
                all.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
            }
        }
        all
    }
}

async fn submit(http: &reqwest::Client, base: &str, model: &str, texts: &[String]) -> Vec<Uuid> {
    let body: Vec<Value> = texts
        .iter()
        .map(|text| {
            json!({"urgency": "standard",
                   "request": {"model": model, "max_tokens": 8,
                               "messages": [{"role": "user", "content": format!("[sim latency={CALL}] {text}")}]}})
        })
        .collect();
    let answer: Value = http
        .post(format!("{base}/v1/jobs"))
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
    answer["jobs"]
        .as_array()
        .expect("the jobs submitted")
        .iter()
        .map(|job| job["id"].as_str().unwrap().parse().unwrap())
        .collect()
}

async fn finished(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE finished_at IS NOT NULL")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// What a job's view says about its outcome, to compare across the two APIs.
fn outcome(view: &Value) -> (String, i64) {
    (
        view["status"].as_str().unwrap_or_default().to_string(),
        view["cost"]["amount_pico_usd"].as_i64().unwrap_or(-1),
    )
}

/// Uploads `jsonl` through `/v1/files` of `base`; returns the file's id.
async fn upload(http: &reqwest::Client, base: &str, jsonl: String) -> String {
    let form = reqwest::multipart::Form::new()
        .text("purpose", "batch")
        .part(
            "file",
            reqwest::multipart::Part::bytes(jsonl.into_bytes()).file_name("lines.jsonl"),
        );
    let file: Value = http
        .post(format!("{base}/v1/files"))
        .bearer_auth(TOKEN)
        .multipart(form)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    file["id"].as_str().unwrap().to_string()
}

async fn get(http: &reqwest::Client, url: String) -> Value {
    http.get(url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Kills `worker` with SIGKILL and starts it again; returns the jobs finished then, when,
/// and the paced key's calls by then.
async fn kill_and_restart(
    worker: &mut Node,
    pool: &PgPool,
    sim: &sluice::sim::SimServer,
    started: Instant,
) -> (i64, Duration, u64) {
    worker.kill().await;
    let at = (
        finished(pool).await,
        started.elapsed(),
        sim.requests_per_key().get(PACED_KEY).copied().unwrap_or(0),
    );
    worker.start_worker(2);
    at
}

/// The calls the simulator received on the paced key, sampled every 250 ms from `started`
/// until `stop` is set.
fn sample_paced_key(
    sim: std::sync::Arc<sluice::sim::SimServer>,
    started: Instant,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<Vec<(Duration, u64)>> {
    tokio::spawn(async move {
        let mut samples = Vec::new();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let calls = sim.requests_per_key().get(PACED_KEY).copied().unwrap_or(0);
            samples.push((started.elapsed(), calls));
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        samples
    })
}

/// The most calls in any window of at most 30 s between two samples, against what one bucket
/// of [`PACED_RPM`] allows in it (its burst and what refills, and one for a call counted at
/// the sample's edge): (calls, allowed, window) of the window closest to its allowance.
fn tightest_window(samples: &[(Duration, u64)]) -> (u64, u64, f64) {
    let mut tightest = (0, u64::MAX, 0.0);
    for (i, (from, before)) in samples.iter().enumerate() {
        for (to, after) in samples[i + 1..]
            .iter()
            .take_while(|(to, _)| *to - *from <= Duration::from_secs(30))
        {
            let window = (*to - *from).as_secs_f64();
            let allowed = PACED_RPM + (PACED_RPM as f64 * window / 60.0).ceil() as u64 + 1;
            let calls = after - before;
            if allowed.saturating_sub(calls) < tightest.1.saturating_sub(tightest.0) {
                tightest = (calls, allowed, window);
            }
        }
    }
    tightest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_apis_and_three_workers_on_one_postgres_act_as_one() {
    let database = TestDatabase::create().await;
    let sim = std::sync::Arc::new(
        sluice::sim::spawn(
            "127.0.0.1:0".parse().unwrap(),
            sluice::sim::SimConfig {
                retry_after: STORM_REST,
                ..sluice::sim::SimConfig::default()
            },
        )
        .await
        .unwrap(),
    );
    let prefix = format!("sluice-test-cluster-{}", Uuid::now_v7());
    let _topology = DeleteTopology(prefix.clone());
    let node = |name| Node::new(name, &database, &prefix, &sim.openai_base_url());
    let mut apis = [node("api-a"), node("api-b")];
    let mut workers = [node("worker-a"), node("worker-b"), node("worker-c")];
    // The first API applies the migrations; the others find them applied.
    apis[0].start_api().await;
    apis[1].start_api().await;
    for worker in &mut workers {
        worker.start_worker(1);
    }
    let bases: Vec<String> = apis.iter().map(|a| a.base_url.clone().unwrap()).collect();
    let pool = PgPool::connect_with(database.options()).await.unwrap();
    let http = reqwest::Client::new();

    let started = Instant::now();
    let stop_sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = sample_paced_key(sim.clone(), started, stop_sampling.clone());
    let unique = |what: &str, n: usize| -> Vec<String> {
        (0..n)
            .map(|i| format!("{what} {i} {}", Uuid::now_v7()))
            .collect()
    };
    let texts = unique("cluster job", JOBS);
    let mut ids = Vec::with_capacity(JOBS);
    // A third of the way, the first worker dies with calls in flight, and is started again.
    let mut killed: Option<(i64, Duration, u64)> = None;
    for (n, chunk) in texts.chunks(CHUNK).enumerate() {
        ids.extend(submit(&http, &bases[n % 2], "fast", chunk).await);
        if killed.is_none() && finished(&pool).await >= (JOBS / 3) as i64 {
            killed = Some(kill_and_restart(&mut workers[0], &pool, &sim, started).await);
        }
    }
    assert_eq!(ids.len(), JOBS);
    let submitted_in = started.elapsed();
    let paced = submit(&http, &bases[1], "paced", &unique("paced job", PACED)).await;
    let failing = submit(
        &http,
        &bases[0],
        "flaky",
        &unique("[sim fail=500*] failing job", FAILING),
    )
    .await;
    // A batch file uploaded through one API, created as a batch through the other.
    let lines: String = (0..BATCH_LINES)
        .map(|i| {
            json!({"custom_id": format!("line-{i}"), "method": "POST", "url": "/v1/chat/completions",
                   "body": {"model": "fast", "max_tokens": 8,
                            "messages": [{"role": "user", "content": format!("batch line {i}")}]}})
            .to_string()
                + "\n"
        })
        .collect();
    let file_id = upload(&http, &bases[0], lines).await;
    let batch: Value = http
        .post(format!("{}/v1/batches", bases[1]))
        .bearer_auth(TOKEN)
        .json(
            &json!({"input_file_id": file_id, "endpoint": "/v1/chat/completions",
                      "completion_window": "24h"}),
        )
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    let batch_id = batch["id"].as_str().unwrap().to_string();

    if killed.is_none() {
        common::eventually(
            "a third of the jobs to finish",
            Duration::from_secs(120),
            async || finished(&pool).await >= (JOBS / 3) as i64,
        )
        .await;
        killed = Some(kill_and_restart(&mut workers[0], &pool, &sim, started).await);
    }
    let (killed_at, killed_after, paced_at_kill) = killed.unwrap();

    // The workers open `broken`'s circuit; the API-only process shows it open.
    common::eventually(
        "an API-only process to show the circuit a worker opened",
        Duration::from_secs(60),
        async || {
            let view = get(&http, format!("{}/v1/providers", bases[1])).await;
            let broken = view["data"]
                .as_array()
                .unwrap()
                .iter()
                .find(|d| d["name"] == "broken")
                .cloned()
                .unwrap_or_default();
            match (view["scope"].as_str(), broken["state"].as_str()) {
                (Some("cluster"), Some("open")) => Ok(()),
                other => Err(format!("{other:?}: {broken:#}")),
            }
        },
    )
    .await;

    let total = (JOBS + PACED + FAILING + BATCH_LINES) as i64;
    let all_done = common::within(Duration::from_secs(120), async || {
        finished(&pool).await == total
    })
    .await
    .is_ok();
    let wall = started.elapsed();
    stop_sampling.store(true, std::sync::atomic::Ordering::Relaxed);
    let samples = sampler.await.unwrap();
    if !all_done {
        let stuck: Vec<(String, String, String, i64, bool, Option<String>)> = sqlx::query_as(
            "SELECT id, status, model, attempts, published, bulk_id FROM jobs \
             WHERE finished_at IS NULL LIMIT 20",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        let logs: String = workers.iter().chain(&apis).map(Node::logs).collect();
        let about_stuck: Vec<&str> = logs
            .lines()
            .filter(|line| stuck.iter().any(|s| line.contains(&s.0)))
            .collect();
        panic!(
            "{} of {total} jobs finished within 2 minutes; unfinished: {stuck:?}\n{}",
            finished(&pool).await,
            about_stuck.join("\n")
        );
    }

    // Every job succeeded, and both APIs give the same view of it.
    let mut by_api: [HashMap<Uuid, (String, i64)>; 2] = Default::default();
    let succeeding: Vec<Uuid> = ids.iter().chain(&paced).copied().collect();
    for (api, base) in bases.iter().enumerate() {
        for chunk in succeeding.chunks(100).chain(failing.chunks(100)) {
            let views = futures::future::join_all(
                chunk
                    .iter()
                    .map(|id| get(&http, format!("{base}/v1/jobs/{id}"))),
            )
            .await;
            for (id, view) in chunk.iter().zip(views) {
                by_api[api].insert(*id, outcome(&view));
            }
        }
    }
    for id in &succeeding {
        let (status, cost) = &by_api[0][id];
        assert_eq!(status, "succeeded", "job {id}");
        assert!(*cost > 0, "job {id} has no cost");
        assert_eq!(by_api[0][id], by_api[1][id], "job {id} reads differently");
    }
    for id in &failing {
        assert_eq!(by_api[0][id].0, "failed", "job {id}");
        assert_eq!(by_api[0][id], by_api[1][id], "job {id} reads differently");
    }

    // The batch the other API created from the uploaded file completed, line for line.
    let batch = get(&http, format!("{}/v1/batches/{batch_id}", bases[0])).await;
    assert_eq!(batch["status"], "completed", "{batch:#}");
    assert_eq!(
        batch["request_counts"]["completed"], BATCH_LINES,
        "{batch:#}"
    );

    // Each job charged exactly once; nothing left reserved or running.
    let charged = (JOBS + PACED + BATCH_LINES) as i64;
    let row = sqlx::query(
        "SELECT COUNT(*), COUNT(DISTINCT job_id), CAST(SUM(amount_pico_usd) AS BIGINT) FROM costs",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let (rows, jobs, total_cost): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!((rows, jobs), (charged, charged), "one cost row per success");
    let batch_cost: i64 = sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(c.amount_pico_usd), 0) AS BIGINT) FROM costs c \
         JOIN jobs j ON j.id = c.job_id WHERE j.bulk_id IS NOT NULL",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let viewed: i64 = by_api[0].values().map(|(_, cost)| cost.max(&0)).sum();
    assert_eq!(
        total_cost,
        viewed + batch_cost,
        "the costs the API shows are the costs recorded"
    );
    let running: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM attempts WHERE outcome = 'running'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(running, 0, "no attempt left running");

    // The paced key: never more than one bucket in any window, kept busy after the kill, and
    // called by all three workers (each process reports the calls it made).
    let (calls, allowed, window) = tightest_window(&samples);
    assert!(
        calls <= allowed,
        "{calls} calls on the key of {PACED_RPM}/min in {window:.1} s, over its {allowed}"
    );
    let paced_calls = sim.requests_per_key().get(PACED_KEY).copied().unwrap_or(0);
    assert!(
        paced_calls >= PACED as u64,
        "{paced_calls} calls for {PACED} paced jobs"
    );
    let after_kill = samples
        .iter()
        .find(|(at, _)| *at >= killed_after + Duration::from_secs(10))
        .map(|(_, calls)| calls - paced_at_kill);
    assert!(
        after_kill.is_none_or(|calls| calls >= 5),
        "the key was barely used in the 10 s after a worker died: {after_kill:?} calls"
    );
    let reports: Vec<String> =
        sqlx::query_scalar("SELECT report FROM process_health WHERE deployment = 'slow'")
            .fetch_all(&pool)
            .await
            .unwrap();
    let callers = reports
        .iter()
        .filter(|r| {
            serde_json::from_str::<Value>(r).unwrap()["latency_ms"]["samples"]
                .as_u64()
                .unwrap_or(0)
                > 0
        })
        .count();
    assert!(
        callers >= WORKERS,
        "{callers} worker processes called the paced key: {reports:?}"
    );

    // A 429 storm: while every worker calls the storm key steadily, one meets a 429 (its
    // retry-after 3 s); from a second after it is recorded, for 1.5 s, no worker calls it.
    let storm_calls = || sim.requests_per_key().get(STORM_KEY).copied().unwrap_or(0);
    let producer = {
        let (http, bases) = (http.clone(), bases.clone());
        tokio::spawn(async move {
            for round in 0.. {
                let texts: Vec<String> = (0..12)
                    .map(|i| {
                        format!(
                            "[sim latency=100ms] storm flow {round} {i} {}",
                            Uuid::now_v7()
                        )
                    })
                    .collect();
                submit(&http, &bases[round % 2], "storm", &texts).await;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    common::eventually(
        "calls on the storm key",
        Duration::from_secs(30),
        async || storm_calls() > 20,
    )
    .await;
    submit(
        &http,
        &bases[0],
        "storm",
        &["[sim fail=429] the storm".to_string()],
    )
    .await;
    common::eventually("a worker to meet the 429", Duration::from_secs(30), async || {
        sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM attempts WHERE deployment = 'stormy' AND outcome = 'rate_limited'",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
            > 0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let resting = storm_calls();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let rested = storm_calls();
    producer.abort();
    assert_eq!(
        rested, resting,
        "every worker rests a key one of them met a 429 on"
    );
    common::eventually(
        "calls on the storm key to resume",
        Duration::from_secs(30),
        async || storm_calls() > rested,
    )
    .await;

    let attempts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM attempts")
        .fetch_one(&pool)
        .await
        .unwrap();
    println!(
        "cluster: {JOBS} jobs through 2 APIs and {WORKERS} workers, submitted in {:.1} s; \
         {total} jobs in all finished in {:.1} s; worker killed at {killed_at} finished; \
         {attempts} attempts, {} provider calls; the {PACED_RPM}/min key: {paced_calls} calls, \
         tightest window {calls} of {allowed} allowed in {window:.1} s, called by {callers} \
         processes; the storm key rested at {resting} calls",
        submitted_in.as_secs_f64(),
        wall.as_secs_f64(),
        sim.stats().chat_requests,
    );
    pool.close().await;
    for worker in &mut workers {
        worker.kill().await;
    }
    drop(apis);
    if let Ok(sim) = std::sync::Arc::try_unwrap(sim) {
        sim.shutdown().await;
    }
}
