//! Three Sluice apps on one PostgreSQL store behave as one for what a cluster must share:
//! a key's limit holds for all of them together, a 429 one of them meets rests the key for
//! all, and a circuit one opens is skipped by the others and shown by an API-only process.
//!
//! The apps run in this test process (each with its own store pool, router, workers and
//! folder), against one simulator of the test's own that counts the calls it receives, so
//! what the provider saw is counted apart from what Sluice recorded.

use crate::common::postgres::TestDatabase;
use crate::common::{self, Backend, Harness};
use serde_json::{json, Value};
use sluice::config::{Config, Database};
use sluice::sim::{SimConfig, SimServer};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The deployment every job here names directly: a chain of one, so a key at rest makes
/// jobs wait rather than fall back.
const DEPLOYMENT: &str = "gpt-4o-mini";

struct Cluster {
    sim: SimServer,
    apps: Vec<Harness>,
    _database: TestDatabase,
}

impl Cluster {
    /// `workers` apps with workers and `api_only` without, on one database, one RabbitMQ
    /// prefix and `sim`; `tweak` adjusts each app's configuration.
    async fn start(
        workers: usize,
        api_only: usize,
        sim: SimConfig,
        tweak: impl Fn(&mut Config),
    ) -> Cluster {
        let sim = sluice::sim::spawn(([127, 0, 0, 1], 0).into(), sim)
            .await
            .unwrap();
        let database = TestDatabase::create().await;
        let url: sluice::config::PostgresUrl = database.url.parse().unwrap();
        let prefix = format!("sluice-test-{}", Uuid::now_v7());
        let mut apps = Vec::new();
        for with_workers in
            std::iter::repeat_n(true, workers).chain(std::iter::repeat_n(false, api_only))
        {
            let app = Harness::start_with(
                Backend::Postgres,
                |c| {
                    c.server.database = Database::Postgres(url.clone());
                    c.queue.prefix = prefix.clone();
                    common::use_simulator(c, &sim);
                    tweak(c);
                },
                with_workers,
            )
            .await;
            apps.push(app);
        }
        Cluster {
            sim,
            apps,
            _database: database,
        }
    }

    /// Calls the simulator received, all keys.
    fn calls(&self) -> u64 {
        self.sim.requests_per_key().values().sum()
    }

    async fn submit(&self, app: usize, n: usize, prompt: &str) {
        let jobs: Vec<Value> = (0..n)
            .map(|i| {
                json!({
                    "urgency": "standard",
                    "request": {"model": DEPLOYMENT, "messages": [
                        {"role": "user", "content": format!("{prompt} {i} {}", Uuid::now_v7())}
                    ]}
                })
            })
            .collect();
        self.apps[app].submit_all(&jobs).await;
    }

    async fn stop(self) {
        for app in self.apps {
            app.stop().await;
        }
        self.sim.shutdown().await;
    }
}

/// A key of 120 requests a minute used by three worker apps with 400 jobs waiting: in every
/// window the simulator counts no more than one bucket allows (120 + 2 a second), all three
/// apps make calls, and the cluster's view shows the key's bucket spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_limit_holds_for_the_whole_cluster() {
    const RPM: u64 = 120;
    let cluster = Cluster::start(3, 0, SimConfig::default(), |c| {
        for key in c.providers.values_mut().flat_map(|p| p.keys.iter_mut()) {
            key.requests_per_minute = Some(RPM as u32);
        }
    })
    .await;
    for app in 0..4 {
        cluster.submit(app % 3, 100, "paced").await;
    }
    let started = Instant::now();
    let mut samples = vec![(Duration::ZERO, cluster.calls())];
    while started.elapsed() < Duration::from_secs(12) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        samples.push((started.elapsed(), cluster.calls()));
    }
    // Calls in the window between two samples: at most the burst and what refilled.
    for (i, (from, before)) in samples.iter().enumerate() {
        for (to, after) in &samples[i + 1..] {
            let window = (*to - *from).as_secs_f64();
            let allowed = RPM + (RPM as f64 * window / 60.0).ceil() as u64 + 1;
            assert!(
                after - before <= allowed,
                "{} calls in {window:.1} s, over the key's {allowed}: {samples:?}",
                after - before
            );
        }
    }
    let total = samples.last().unwrap().1;
    assert!(total >= 100, "the key was barely used: {total} calls");
    for (i, app) in cluster.apps.iter().enumerate() {
        let calls = app.app.router.deployment(DEPLOYMENT).unwrap().health.view();
        assert!(
            calls.latency_ms.samples > 0,
            "app {i} made no call of the {total}"
        );
    }
    let view = cluster.apps[0].providers().await;
    assert_eq!(view["scope"], "cluster", "{view:#}");
    assert_eq!(view["processes"].as_array().unwrap().len(), 3, "{view:#}");
    let key = &common::deployment_view(&view, DEPLOYMENT)["keys"][0];
    assert_eq!(key["requests_per_minute"], RPM);
    assert!(
        key["requests_remaining"].as_u64().unwrap() <= 10,
        "the cluster's bucket is spent: {key:#}"
    );
    cluster.stop().await;
}

/// A 429 that one app meets (its `retry-after` 3 s) stops every app calling the key: from a
/// second after it until the rest ends the simulator receives no call, though jobs wait; then
/// calls resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_met_by_one_process_rests_the_key_for_all() {
    let sim = SimConfig {
        retry_after: Duration::from_secs(3),
        ..SimConfig::default()
    };
    let cluster = Cluster::start(3, 0, sim, |_| {}).await;
    // A steady flow of slow calls from every app.
    let producer = {
        let jobs: Vec<Value> = (0..40)
            .map(|i| {
                json!({"urgency": "standard", "request": {"model": DEPLOYMENT, "messages": [
                    {"role": "user", "content": format!("[sim latency=100ms] flow {i}")}
                ]}})
            })
            .collect();
        let client = cluster.apps[0].client.clone();
        tokio::spawn(async move {
            loop {
                let fresh: Vec<Value> = jobs
                    .iter()
                    .map(|j| {
                        let mut j = j.clone();
                        j["request"]["messages"][0]["content"] = json!(format!(
                            "{} {}",
                            j["request"]["messages"][0]["content"].as_str().unwrap(),
                            Uuid::now_v7()
                        ));
                        j
                    })
                    .collect();
                let _ = client.submit(&json!(fresh)).await;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    common::eventually("calls to flow", Duration::from_secs(20), async || {
        cluster.calls() > 50
    })
    .await;
    cluster.submit(1, 1, "[sim fail=429]").await;
    let store_of = &cluster.apps[0];
    common::eventually(
        "the 429 to be recorded",
        Duration::from_secs(20),
        async || {
            store_of
                .count("SELECT COUNT(*) FROM attempts WHERE outcome = 'rate_limited'")
                .await
                > 0
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let resting = cluster.calls();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let rested = cluster.calls();
    assert_eq!(
        rested, resting,
        "no app may call a key another was told to rest"
    );
    common::eventually("calls to resume", Duration::from_secs(20), async || {
        cluster.calls() > rested
    })
    .await;
    producer.abort();
    cluster.stop().await;
}

/// Jobs that always meet a 500 open the circuit of whichever worker app runs them; the other
/// worker app skips the deployment too, and an app without workers shows it open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_circuit_one_process_opens_is_shared_and_shown_everywhere() {
    let cluster = Cluster::start(2, 1, SimConfig::default(), |c| {
        c.health.window = 10;
        c.health.min_calls = 4;
        c.health.error_threshold = 0.5;
        c.health.cooldown = Duration::from_secs(30);
    })
    .await;
    cluster.submit(0, 8, "[sim fail=500*] failing").await;
    let api_only = &cluster.apps[2];
    common::eventually(
        "the API-only app to show the circuit open",
        Duration::from_secs(30),
        async || {
            let view = api_only.providers().await;
            match common::deployment_view(&view, DEPLOYMENT)["state"].as_str() {
                Some("open") => Ok(()),
                other => Err(format!("{other:?} in {view:#}")),
            }
        },
    )
    .await;
    // Each worker app reports every second: both within a few.
    common::eventually(
        "both worker apps to report",
        Duration::from_secs(10),
        async || {
            let view = api_only.providers().await;
            match common::deployment_view(&view, DEPLOYMENT)["by_process"].as_array() {
                Some(reports) if reports.len() == 2 => Ok(()),
                _ => Err(format!("{view:#}")),
            }
        },
    )
    .await;
    let view = api_only.providers().await;
    assert_eq!(view["scope"], "cluster");
    let mut roles: Vec<&str> = view["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["role"].as_str().unwrap())
        .collect();
    roles.sort();
    assert_eq!(roles, ["api", "api+worker", "api+worker"]);
    // Where the processes run is the operator's to know, not every tenant's.
    assert!(
        view["processes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p.get("host").is_none() && p.get("pid").is_none()),
        "{view:#}"
    );
    // Both worker apps skip the deployment: one opened the circuit, the other adopted it.
    common::eventually(
        "both workers to skip the deployment",
        Duration::from_secs(10),
        async || {
            cluster.apps[..2].iter().all(|app| {
                let health = &app.app.router.deployment(DEPLOYMENT).unwrap().health;
                health.view().state == sluice::router::health::CircuitState::Open
            })
        },
    )
    .await;
    cluster.stop().await;
}
