//! The integration-test harness: a whole Sluice (store in a temporary SQLite file, the
//! simulator on a random port, the API on a random port, worker pools) on either queue
//! backend. RabbitMQ tests use a unique name prefix, so tests share the broker safely.

#![allow(dead_code, unused_macros)]

pub mod broker;
pub mod browser;

/// Runs each case once per backend, as `<case>_embedded` and `<case>_rabbitmq`.
/// Runs each named `async fn case(backend: Backend)` on the three backends
/// ([`Backend::ALL`]): the suites whose outcomes depend on the store as well as the queue.
macro_rules! on_all_backends {
    ($($case:ident),* $(,)?) => {
        on_both_backends!($($case),*);
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::$case($crate::common::Backend::Postgres).await })*
        }
    };
}

macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {
        mod embedded {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::$case($crate::common::Backend::Embedded).await })*
        }
        mod rabbitmq {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::$case($crate::common::Backend::Rabbitmq).await })*
        }
    };
}

pub mod log;
pub mod otlp;
pub mod own_server;
pub mod pg_node;
pub mod poll;
pub mod ports;
pub mod postgres;
pub mod serve;
#[macro_use]
pub mod stores;

pub use poll::{eventually, within};
pub use ports::RefusedPort;

use sluice::app::App;
use sluice::client::Client;
use sluice::config::{BatchTierConfig, Config, ProviderKind, QueueBackend, Secret, TenantConfig};
use sluice::job::Urgency;
use sluice::worker::WorkerPools;
use std::time::Duration;
use tokio::task::JoinHandle;

pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const TOKEN: &str = "sk-test-acme";
pub const OTHER_TOKEN: &str = "sk-test-globex";

/// Where a harness keeps its jobs: the queue backend, and for `Postgres` the store too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite store, the queue embedded in it.
    Embedded,
    /// SQLite store, RabbitMQ queue.
    Rabbitmq,
    /// A PostgreSQL store of the test's own, RabbitMQ queue.
    Postgres,
}

impl Backend {
    /// Whether the queue is RabbitMQ.
    pub fn uses_rabbitmq(self) -> bool {
        self != Backend::Embedded
    }
}

pub struct Harness {
    pub app: App,
    pub client: Client,
    pub other_client: Client,
    pub base_url: String,
    pub dir: tempfile::TempDir,
    workers: Option<WorkerPools>,
    api: JoinHandle<()>,
    /// The test's PostgreSQL database (`Backend::Postgres`), dropped with the harness.
    pub postgres: Option<postgres::TestDatabase>,
}

/// The configuration every test starts from: the built-in one, with a tenant pair, quick
/// retries and an isolated database and queue prefix.
pub fn test_config(backend: Backend, dir: &std::path::Path) -> Config {
    let mut config = Config::builtin();
    config.server.database = dir.join("sluice.db").into();
    config.tenants = vec![
        TenantConfig {
            name: "acme".into(),
            token: Secret::new(TOKEN),
            requests_per_minute: None,
            tokens_per_minute: None,
        },
        TenantConfig {
            name: "globex".into(),
            token: Secret::new(OTHER_TOKEN),
            requests_per_minute: None,
            tokens_per_minute: None,
        },
    ];
    config.retry.base_delay = Duration::from_millis(100);
    config.retry.max_delay = Duration::from_secs(2);
    config.retry.max_attempts = 3;
    config.sim.retry_after = Duration::from_millis(200);
    // Short, so a killed worker's job comes back quickly; the attempt timeout stays below it.
    config.queue.visibility_timeout = Duration::from_secs(4);
    for provider in config.providers.values_mut() {
        provider.timeout = Duration::from_secs(3);
    }
    // The example keys' quotas would pace the big tests for minutes; the routing tests set
    // the limits they test.
    config.lift_key_limits();
    // Batch jobs run real-time unless a test gives a deployment its batch tier back
    // (`tests/suite/batch_tier.rs`), so every other test's calls are the simulator's real-time ones.
    for deployment in config.deployments.values_mut() {
        deployment.batch = None;
    }
    if backend.uses_rabbitmq() {
        config.queue.backend = Some(QueueBackend::Rabbitmq);
        config.queue.url = Some(Secret::new(AMQP_URL));
        config.queue.prefix = format!("sluice-test-{}", uuid::Uuid::now_v7());
    }
    config
}

/// [`test_config`], with for `Backend::Postgres` a database of the test's own as its store:
/// keep the database as long as the configuration is used (it is dropped with it).
pub async fn test_config_with_store(
    backend: Backend,
    dir: &std::path::Path,
) -> (Config, Option<postgres::TestDatabase>) {
    let mut config = test_config(backend, dir);
    let database = match backend {
        Backend::Postgres => Some(postgres::TestDatabase::create().await),
        Backend::Embedded | Backend::Rabbitmq => None,
    };
    if let Some(database) = &database {
        config.server.database = sluice::config::Database::Postgres(
            database
                .url
                .parse()
                .expect("a test database's URL is valid"),
        );
        // No `server.files`: beside a Postgres store uploaded files' bytes are kept in it.
        // Tests that start several apps, running beside each other, share one server's
        // `max_connections`.
        config.server.database_connections = 8;
    }
    (config, database)
}

/// Points every provider of `config` at `sim`, a simulator of the test's own, each family at
/// the root its clients expect.
pub fn use_simulator(config: &mut Config, sim: &sluice::sim::SimServer) {
    for provider in config.providers.values_mut() {
        provider.base_url = match provider.kind {
            ProviderKind::Openai => sim.openai_base_url(),
            ProviderKind::Anthropic => sim.anthropic_base_url(),
            ProviderKind::Gemini => sim.gemini_base_url(),
        };
    }
}

/// The deployment named `name` in a `GET /v1/providers` answer.
pub fn deployment_view<'a>(view: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    view["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {view:#}"))
}

/// Gives `deployment` a batch tier that flushes after `max_wait` and holds `max_requests`,
/// polled every second, with a short turnaround so deadlines of minutes allow it (the
/// simulator answers a batch in a second; `realtime_reserve` stays below `safety_margin`, as
/// validation requires).
pub fn with_batch_tier(
    config: &mut Config,
    deployment: &str,
    max_requests: usize,
    max_wait: Duration,
) {
    config.deployments.get_mut(deployment).unwrap().batch = Some(BatchTierConfig {
        price: None,
        turnaround: Duration::from_secs(10),
        max_requests: Some(max_requests),
        max_wait,
    });
    config.batch.poll = "* * * * * *".into();
    config.batch.safety_margin = Duration::from_secs(6);
    config.batch.realtime_reserve = Duration::from_secs(5);
    config.sim.batch_turnaround = Duration::from_secs(1);
}

impl Harness {
    pub async fn start(backend: Backend) -> Harness {
        Harness::start_with(backend, |_| {}, true).await
    }

    /// Starts with a configuration tweak; `workers: false` leaves jobs queued.
    pub async fn start_with(
        backend: Backend,
        tweak: impl FnOnce(&mut Config),
        workers: bool,
    ) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let (mut config, database) = test_config_with_store(backend, dir.path()).await;
        tweak(&mut config);
        let mut h = Harness::start_on(config, dir, workers).await;
        h.postgres = database;
        h
    }

    /// Starts on `config` (a [`test_config`] of `dir`): given one an earlier process used,
    /// a restart on the same database, file store and RabbitMQ prefix.
    pub async fn start_on(config: Config, dir: tempfile::TempDir, workers: bool) -> Harness {
        let h = Harness::start_inner(config, dir, workers).await;
        if let Some(amqp) = h.app.queue_as_amqp() {
            amqp.wait_connected(Duration::from_secs(10))
                .await
                .expect("RabbitMQ on 127.0.0.1:5672");
        }
        h
    }

    /// A RabbitMQ harness that does not wait for the broker (which may be unreachable).
    pub async fn start_with_unready_broker(tweak: impl FnOnce(&mut Config)) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(Backend::Rabbitmq, dir.path());
        tweak(&mut config);
        Harness::start_inner(config, dir, true).await
    }

    async fn start_inner(config: Config, dir: tempfile::TempDir, workers: bool) -> Harness {
        let config = config.resolve().expect("the test configuration is valid");
        let app = App::start(config).await.expect("app starts");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let serving = app.serve(listener, std::future::pending());
        let api = tokio::spawn(async move {
            serving.await.unwrap();
        });
        let workers = workers.then(|| app.start_workers(&Urgency::ALL));
        Harness {
            client: Client::new(&base_url, TOKEN),
            other_client: Client::new(&base_url, OTHER_TOKEN),
            base_url,
            app,
            dir,
            workers,
            api,
            postgres: None,
        }
    }

    pub fn start_workers(&mut self) {
        assert!(self.workers.is_none());
        self.workers = Some(self.app.start_workers(&Urgency::ALL));
    }

    /// The RabbitMQ names of this harness (RabbitMQ backend only).
    pub fn topology(&self) -> &sluice::queue::amqp::Topology {
        self.app
            .queue_as_amqp()
            .expect("a RabbitMQ harness")
            .topology()
    }

    pub fn sim_requests(&self) -> u64 {
        self.app.sim.as_ref().unwrap().stats().chat_requests
    }

    /// `GET /v1/providers`, as the test tenant.
    pub async fn providers(&self) -> serde_json::Value {
        reqwest::Client::new()
            .get(format!("{}/v1/providers", self.base_url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Submits one job asking `model` with `prompt`; returns its id.
    pub async fn submit(&self, model: &str, prompt: &str) -> uuid::Uuid {
        self.submit_job(&serde_json::json!({
            "urgency": "standard",
            "tags": {"team": "search", "user": "u1"},
            "request": {"model": model, "messages": [{"role": "user", "content": prompt}]}
        }))
        .await
    }

    /// Submits one job body; returns its id.
    pub async fn submit_job(&self, job: &serde_json::Value) -> uuid::Uuid {
        let answer = self.client.submit(job).await.expect("submit accepted");
        answer["id"].as_str().unwrap().parse().unwrap()
    }

    /// Submits job bodies in one request (accepted or refused together); returns their ids.
    pub async fn submit_all(&self, jobs: &[serde_json::Value]) -> Vec<uuid::Uuid> {
        let answer = self
            .client
            .submit(&serde_json::json!(jobs))
            .await
            .expect("submit accepted");
        answer["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().parse().unwrap())
            .collect()
    }

    pub async fn wait(&self, id: uuid::Uuid) -> serde_json::Value {
        let job = self
            .client
            .wait(id, Duration::from_secs(60))
            .await
            .expect("job readable");
        assert!(
            matches!(
                job["status"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            ),
            "job not final within 60 s: {job:#}"
        );
        job
    }

    /// Waits for a job published straight onto the queue, which the store knows only once a
    /// worker has consumed it (until then its id is a 404), and then for it to be final.
    pub async fn wait_published(&self, id: uuid::Uuid) -> serde_json::Value {
        eventually(
            &format!("job {id} to be recorded"),
            Duration::from_secs(30),
            async || match self.client.get(id, None).await {
                Ok(_) => true,
                Err(sluice::client::ClientError::Api { status: 404, .. }) => false,
                Err(e) => panic!("{e}"),
            },
        )
        .await;
        self.wait(id).await
    }

    /// The one integer `sql` selects, on either store backend (on Postgres, where `SUM` of
    /// a BIGINT is NUMERIC, cast back to BIGINT).
    pub async fn count(&self, sql: &str) -> i64 {
        let cast;
        let sql = match self.app.store.dialect() {
            sluice::store::Dialect::Sqlite => sql,
            sluice::store::Dialect::Postgres => {
                cast = format!("SELECT CAST(({sql}) AS BIGINT)");
                &cast
            }
        };
        sluice::with_pool!(self.app.store.pool(), pool => sqlx::query_scalar(sql)
            .fetch_one(pool)
            .await
            .unwrap())
    }

    /// Waits until `sql` counts `n` (a state the workers or the batch tracker reach in the
    /// background), failing after 10 s with the last count.
    pub async fn wait_count(&self, sql: &str, n: i64) {
        eventually(
            &format!("`{sql}` to count {n}"),
            Duration::from_secs(10),
            async || match self.count(sql).await {
                count if count == n => Ok(()),
                count => Err(format!("a count of {count}")),
            },
        )
        .await
    }

    pub async fn stop(mut self) {
        if let Some(workers) = self.workers.take() {
            workers.shutdown().await;
        }
        self.api.abort();
        if let Some(sim) = self.app.sim.take() {
            sim.shutdown().await;
        }
    }
}

impl Drop for Harness {
    /// Deletes the test's RabbitMQ queues and exchanges, so runs do not pile up quorum queues
    /// on the shared broker (hundreds of idle ones slow its restarts to a crawl). Runs on
    /// failure too.
    fn drop(&mut self) {
        if let Some(amqp) = self.app.queue_as_amqp() {
            delete_topology_blocking(amqp.topology().clone());
        }
    }
}

/// Deletes every queue and exchange of a topology, best effort and bounded in time. Blocking,
/// with a runtime of its own, so it can run from `Drop` (even while a test unwinds).
pub fn delete_topology_blocking(topology: sluice::queue::amqp::Topology) {
    let _ = std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(async move {
            // Bounded, so a broker that stopped answering fails the test instead of hanging it.
            let _ = tokio::time::timeout(Duration::from_secs(20), delete_topology(&topology)).await;
        });
    })
    .join();
}

/// A plain AMQP connection to the test broker, as a client in another language would have.
/// Bounded, so a broker that stopped answering fails the test instead of hanging it.
pub async fn amqp_connection() -> lapin::Connection {
    tokio::time::timeout(
        Duration::from_secs(15),
        lapin::Connection::connect(AMQP_URL, lapin::ConnectionProperties::default()),
    )
    .await
    .expect("a connection to RabbitMQ on 127.0.0.1:5672 within 15 s")
    .expect("RabbitMQ on 127.0.0.1:5672")
}

async fn delete_topology(topology: &sluice::queue::amqp::Topology) {
    let Ok(conn) =
        lapin::Connection::connect(AMQP_URL, lapin::ConnectionProperties::default()).await
    else {
        return;
    };
    let _ = topology.delete(&conn).await;
    let _ = conn.close(200, "test done".into()).await;
}

/// A unique prompt, so a test's simulator directives and token counts are its own.
pub fn prompt(text: &str) -> String {
    format!("{text} (test {})", uuid::Uuid::now_v7())
}
