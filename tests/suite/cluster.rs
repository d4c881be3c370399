//! Sluice as a cluster: two API processes and two worker processes, each an OS process of its
//! own in a folder of its own (no shared disk), sharing one PostgreSQL store and one RabbitMQ.
//! Jobs submitted through either API run on either worker, are charged once, and read the same
//! through both APIs; a worker killed with SIGKILL mid-run loses nothing.

use crate::common::postgres::TestDatabase;
use crate::common::serve::{sluice, Served};
use crate::common::{self, AMQP_URL, TOKEN};
use serde_json::{json, Value};
use sqlx::{PgPool, Row};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Jobs the cluster runs, half through each API.
const JOBS: usize = 2000;
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

[providers.upstream]
kind = "openai"
base_url = "{sim}"
timeout = "4s"
keys = [{{ id = "k1", secret = "sk-sim-cluster" }}]

[deployments.mini]
provider = "upstream"
model = "gpt-4o-mini"

[routes.fast]
deployments = ["mini"]
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

async fn submit(http: &reqwest::Client, base: &str, texts: &[String]) -> Vec<Uuid> {
    let body: Vec<Value> = texts
        .iter()
        .map(|text| {
            json!({"urgency": "standard",
                   "request": {"model": "fast", "max_tokens": 8,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_apis_and_two_workers_on_one_postgres_act_as_one() {
    let database = TestDatabase::create().await;
    let sim = sluice::sim::spawn(
        "127.0.0.1:0".parse().unwrap(),
        sluice::sim::SimConfig::default(),
    )
    .await
    .unwrap();
    let prefix = format!("sluice-test-cluster-{}", Uuid::now_v7());
    let _topology = DeleteTopology(prefix.clone());
    let mut apis = [
        Node::new("api-a", &database, &prefix, &sim.openai_base_url()),
        Node::new("api-b", &database, &prefix, &sim.openai_base_url()),
    ];
    let mut workers = [
        Node::new("worker-a", &database, &prefix, &sim.openai_base_url()),
        Node::new("worker-b", &database, &prefix, &sim.openai_base_url()),
    ];
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
    let texts: Vec<String> = (0..JOBS)
        .map(|i| format!("cluster job {i} {}", Uuid::now_v7()))
        .collect();
    let mut ids = Vec::with_capacity(JOBS);
    for (n, chunk) in texts.chunks(CHUNK).enumerate() {
        ids.extend(submit(&http, &bases[n % 2], chunk).await);
    }
    assert_eq!(ids.len(), JOBS);
    let submitted_in = started.elapsed();

    // A third of the way, the first worker dies with calls in flight, and is started again.
    common::eventually(
        "a third of the jobs to finish",
        Duration::from_secs(120),
        async || finished(&pool).await >= (JOBS / 3) as i64,
    )
    .await;
    workers[0].kill().await;
    let killed_at = finished(&pool).await;
    workers[0].start_worker(2);

    let all_done = common::within(Duration::from_secs(180), async || {
        finished(&pool).await == JOBS as i64
    })
    .await
    .is_ok();
    let wall = started.elapsed();
    assert!(
        all_done,
        "{} of {JOBS} jobs finished within 3 minutes\n{}",
        finished(&pool).await,
        workers.iter().map(Node::logs).collect::<String>()
    );

    // Every job succeeded, and both APIs give the same view of it.
    let mut by_api: [HashMap<Uuid, (String, i64)>; 2] = Default::default();
    for (api, base) in bases.iter().enumerate() {
        for chunk in ids.chunks(100) {
            let views = futures::future::join_all(chunk.iter().map(|id| {
                let http = http.clone();
                let url = format!("{base}/v1/jobs/{id}");
                async move {
                    let view: Value = http
                        .get(url)
                        .bearer_auth(TOKEN)
                        .send()
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap();
                    view
                }
            }))
            .await;
            for (id, view) in chunk.iter().zip(views) {
                by_api[api].insert(*id, outcome(&view));
            }
        }
    }
    for id in &ids {
        let (status, cost) = &by_api[0][id];
        assert_eq!(status, "succeeded", "job {id}");
        assert!(*cost > 0, "job {id} has no cost");
        assert_eq!(by_api[0][id], by_api[1][id], "job {id} reads differently");
    }

    // Each job charged exactly once; nothing left reserved or running.
    let row = sqlx::query(
        "SELECT COUNT(*), COUNT(DISTINCT job_id), CAST(SUM(amount_pico_usd) AS BIGINT) FROM costs",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let (rows, jobs, total): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(
        (rows, jobs),
        (JOBS as i64, JOBS as i64),
        "one cost row per job"
    );
    let viewed: i64 = by_api[0].values().map(|(_, cost)| cost).sum();
    assert_eq!(
        total, viewed,
        "the costs the API shows are the costs recorded"
    );
    let running: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM attempts WHERE outcome = 'running'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(running, 0, "no attempt left running");

    let attempts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM attempts")
        .fetch_one(&pool)
        .await
        .unwrap();
    println!(
        "cluster: {JOBS} jobs through 2 APIs and 2 workers in {:.1} s (submitted in {:.1} s), \
         {:.0} jobs/s; worker killed at {killed_at} finished; {attempts} attempts, {} provider calls",
        wall.as_secs_f64(),
        submitted_in.as_secs_f64(),
        JOBS as f64 / wall.as_secs_f64(),
        sim.stats().chat_requests,
    );
    pool.close().await;
    for worker in &mut workers {
        worker.kill().await;
    }
    drop(apis);
    sim.shutdown().await;
}
