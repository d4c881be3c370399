//! The fault suite: Sluice under the faults an operator meets (a broker restarted or out of
//! memory, a provider refusing or failing, a process killed mid-stream, hostile input), each
//! case checking the same three promises and printing its figures:
//!
//! - every job accepted reaches a final state (submitted = final: none lost);
//! - each succeeded job has exactly one cost row, and nothing else has one (none charged twice);
//! - no secret (provider key, tenant token) appears in the store, the answers or the logs.
//!
//! Broker faults run on a RabbitMQ node of the test's own ([`common::broker`]), and database
//! restarts on a PostgreSQL server of the test's own ([`common::pg_node`]), never the shared
//! ones. Faults covered elsewhere are not repeated: crash loops (`crashes`), late
//! confirms and garbage envelopes (`resilience`), a full disk, large bodies and token guessing
//! (`api_errors`). Figures and guarantees: `docs/reliability.md`.

use crate::common;

use common::{broker, pg_node};
use common::{Backend, Harness, TOKEN};
use serde_json::{json, Value};
use sluice::config::{Config, Database, Secret};
use std::time::Duration;

/// A secret no answer, row or log line may contain: every provider key of a fault case's
/// configuration is this plus the key's id.
const KEY_SECRET: &str = "sk-fault-SECRET-7f3a9c";

/// Gives every provider key a recognisable secret (see [`KEY_SECRET`]).
fn with_traceable_keys(config: &mut Config) {
    for provider in config.providers.values_mut() {
        for key in &mut provider.keys {
            key.secret = Secret::new(format!("{KEY_SECRET}-{}", key.id));
        }
    }
}

/// A harness on the test's RabbitMQ node, with keys to trace.
async fn harness_on(node: &broker::OwnedBroker, tweak: impl FnOnce(&mut Config)) -> Harness {
    let url = node.url();
    Harness::start_with(
        Backend::Rabbitmq,
        move |config| {
            config.queue.url = Some(Secret::new(url));
            with_traceable_keys(config);
            tweak(config);
        },
        true,
    )
    .await
}

/// What a case saw: every job the API accepted, and every answer body it got.
#[derive(Default)]
struct Tally {
    accepted: Vec<uuid::Uuid>,
    refused: usize,
    answers: Vec<String>,
}

impl Tally {
    /// Checks the promises on the store behind `h` and prints the case's figures.
    async fn check(&self, h: &Harness, case: &str) {
        let mut finals = 0;
        let mut succeeded = 0;
        for id in &self.accepted {
            let job = h.wait(*id).await;
            finals += 1;
            if job["status"] == "succeeded" {
                succeeded += 1;
            }
        }
        let cost_rows = h.count("SELECT COUNT(*) FROM costs").await;
        let charged_jobs = h.count("SELECT COUNT(DISTINCT job_id) FROM costs").await;
        let succeeded_rows = h
            .count("SELECT COUNT(*) FROM jobs WHERE status = 'succeeded'")
            .await;
        let recorded = h.count("SELECT COUNT(*) FROM jobs").await;
        println!(
            "{case}: {} jobs submitted, {finals} final ({succeeded} succeeded), {} lost, {} \
             refused with a 503, {cost_rows} cost rows, {} charged twice",
            self.accepted.len(),
            self.accepted.len() - finals,
            self.refused,
            cost_rows - charged_jobs,
        );
        assert_eq!(finals, self.accepted.len(), "every accepted job is final");
        assert_eq!(
            recorded,
            self.accepted.len() as i64,
            "the store holds exactly the accepted jobs (a refused one left no row)"
        );
        assert_eq!(cost_rows, succeeded_rows, "one cost row per succeeded job");
        assert_eq!(cost_rows, succeeded as i64);
        assert_eq!(charged_jobs, cost_rows, "no job charged twice");
        for answer in &self.answers {
            assert_no_secret(answer, "an answer");
        }
        assert_no_secret_in_store(h);
    }
}

fn assert_no_secret(text: &str, where_: &str) {
    for secret in [KEY_SECRET, TOKEN, common::OTHER_TOKEN] {
        assert!(!text.contains(secret), "{where_} holds a secret: {text}");
    }
}

/// The database files, read as bytes: no key or token in any row, index or log page.
fn assert_no_secret_in_store(h: &Harness) {
    for entry in std::fs::read_dir(h.dir.path()).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("sluice.db") || !entry.path().is_file() {
            continue;
        }
        let bytes = std::fs::read(entry.path()).unwrap();
        for secret in [KEY_SECRET, TOKEN, common::OTHER_TOKEN] {
            assert!(
                !bytes
                    .windows(secret.len())
                    .any(|window| window == secret.as_bytes()),
                "{name} holds a secret"
            );
        }
    }
}

/// `GET /readyz`: status and body.
async fn readyz(h: &Harness) -> (u16, Value) {
    let answer = reqwest::get(format!("{}/readyz", h.base_url))
        .await
        .unwrap();
    (answer.status().as_u16(), answer.json().await.unwrap())
}

/// Asks `/readyz` until it answers `status` (the queue learns of an alarm from its own
/// probe, and of its end from the broker); its last body.
async fn readyz_until(h: &Harness, status: u16) -> Value {
    common::eventually(
        &format!("/readyz to answer {status}"),
        Duration::from_secs(10),
        async || match readyz(h).await {
            (answered, body) if answered == status => Ok(body),
            (answered, body) => Err(format!("{answered} {body:#}")),
        },
    )
    .await
}

/// One answer of the API: status, `retry-after`, body.
struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: Value,
}

/// The API's client for fault cases: a bound on every request well under the publish
/// timeout, so a submission that hangs fails the case instead of passing late.
fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

async fn post(h: &Harness, path: &str, body: &Value, tally: &mut Tally) -> Answer {
    let answer = http()
        .post(format!("{}{path}", h.base_url))
        .bearer_auth(TOKEN)
        .json(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {path} did not answer: {e}"));
    let status = answer.status().as_u16();
    let retry_after = answer
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let text = answer.text().await.unwrap();
    tally.answers.push(text.clone());
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer {
        status,
        retry_after,
        body,
    }
}

fn job(content: &str) -> Value {
    json!({"request": {"model": "fast", "messages": [{"role": "user", "content": content}]}})
}

/// Submits one job; an accepted one is tallied.
async fn submit(h: &Harness, content: &str, tally: &mut Tally) -> Answer {
    let answer = post(h, "/v1/jobs", &job(content), tally).await;
    if answer.status == 202 {
        tally
            .accepted
            .push(answer.body["id"].as_str().unwrap().parse().unwrap());
    }
    answer
}

/// A memory alarm, then a disk alarm, on the broker: `/readyz` answers 503 naming it, and a
/// submission (a job, a chat completion) is a 503 with `retry-after` at once, nothing
/// recorded, instead of waiting out the publish timeout; once the alarm clears, the same
/// submission is accepted and runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_alarm_makes_the_server_unready_and_submissions_a_quick_503() {
    let node = broker::exclusive().await;
    // A publish that waited for the alarm to clear would outlast the client's bound.
    let h = harness_on(&node, |config| {
        config.queue.publish_timeout = Duration::from_secs(60)
    })
    .await;
    let mut tally = Tally::default();
    let (status, ready) = readyz(&h).await;
    assert_eq!(status, 200, "{ready:#}");
    assert_eq!(
        submit(&h, &common::prompt("before"), &mut tally)
            .await
            .status,
        202
    );

    for alarm in ["memory", "disk"] {
        match alarm {
            "memory" => node.raise_memory_alarm().await,
            _ => node.raise_disk_alarm().await,
        }
        // The first submission is the connection's first publish under the alarm: RabbitMQ
        // takes that message and only then blocks the connection and says so, so the job is
        // either confirmed first (accepted, and it runs) or refused (and never runs).
        let first = submit(&h, &common::prompt(alarm), &mut tally).await;
        assert!(matches!(first.status, 202 | 503), "{:#}", first.body);
        if first.status == 503 {
            tally.refused += 1;
        }
        let ready = readyz_until(&h, 503).await;
        assert_eq!(ready["queue_ready"], false, "{ready:#}");
        assert!(
            ready["problems"]
                .to_string()
                .contains(&format!("broker blocked: {alarm} alarm")),
            "{ready:#}"
        );
        // Known blocked: refused before anything is recorded.
        let answer = submit(&h, &common::prompt(alarm), &mut tally).await;
        assert_eq!(answer.status, 503, "{:#}", answer.body);
        let error = &answer.body["error"];
        assert_eq!(error["type"], "queue_unavailable", "{error:#}");
        let message = error["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("broker blocked: {alarm} alarm"))
                && message.contains("nothing was accepted"),
            "{message}"
        );
        assert!(answer.retry_after.is_some(), "no retry-after");
        tally.refused += 1;
        let chat = post(
            &h,
            "/v1/chat/completions",
            &json!({"model": "fast", "messages": [{"role": "user", "content": "hi"}]}),
            &mut tally,
        )
        .await;
        assert_eq!(chat.status, 503, "{:#}", chat.body);
        assert!(chat.retry_after.is_some());
        tally.refused += 1;

        node.clear_alarms().await;
        readyz_until(&h, 200).await;
        let answer = submit(&h, &common::prompt("after"), &mut tally).await;
        assert_eq!(answer.status, 202, "{:#}", answer.body);
    }
    tally.check(&h, "broker memory and disk alarms").await;
    h.stop().await;
}

/// The broker stopped and started again mid-run, then its memory alarm raised, while a
/// producer submits steadily and the workers run: every job the API accepted is final and
/// charged once; every job it refused (503) left nothing behind and never ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restarted_and_alarmed_mid_run_loses_nothing_and_charges_once() {
    let node = broker::exclusive().await;
    // Submissions during the outage give up after a short publish timeout.
    let h = harness_on(&node, |config| {
        config.queue.publish_timeout = Duration::from_secs(3)
    })
    .await;
    let done = std::sync::atomic::AtomicBool::new(false);
    let producer = async {
        let mut tally = Tally::default();
        let mut after_faults = 0;
        while after_faults < 20 {
            if done.load(std::sync::atomic::Ordering::Relaxed) {
                after_faults += 1;
            }
            let content = common::prompt("[sim latency=100ms] steady");
            let answer = submit(&h, &content, &mut tally).await;
            match answer.status {
                202 => {}
                503 => {
                    assert!(answer.retry_after.is_some(), "{:#}", answer.body);
                    tally.refused += 1;
                }
                other => panic!("{other}: {:#}", answer.body),
            }
            // The producer's pace, not a wait for a state: a job every 50 ms.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tally
    };
    // The fault schedule: each sleep is how long a phase lasts under the steady producer (the
    // point of the test), and each phase's end is waited for on `/readyz`, not slept.
    let faults = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        node.stop().await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        node.start().await;
        readyz_until(&h, 200).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        node.raise_memory_alarm().await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        node.clear_alarms().await;
        readyz_until(&h, 200).await;
        done.store(true, std::sync::atomic::Ordering::Relaxed);
    };
    let (tally, ()) = tokio::join!(producer, faults);
    assert!(tally.accepted.len() >= 20, "too few jobs ran to tell");
    tally
        .check(&h, "broker restarted, then its memory alarm raised")
        .await;
    h.stop().await;
}

/// The PostgreSQL store stopped (`pg_ctl stop -m fast`) and started again mid-run, twice, on
/// a server of the test's own ([`common::pg_node`]), while a producer submits steadily and
/// the workers run: down 3 s, submissions wait for it and the workers pause and resume; down
/// longer, a submission is a 503 with `retry-after` naming the store once the pool gives up
/// (10 s), nothing recorded. Every job the API accepted succeeds, charged once, and no
/// attempt is left `running`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_mid_run_loses_nothing_and_charges_once() {
    /// Submissions in all, at least.
    const JOBS: usize = 300;
    /// Submissions after the last restart, at least.
    const AFTER_RESTART: usize = 20;
    /// How long the first restart keeps the server down.
    const SHORT_OUTAGE: Duration = Duration::from_secs(3);
    let node = pg_node::PgNode::start_new().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::test_config(Backend::Postgres, dir.path());
    config.server.database =
        Database::Postgres(node.url().parse().expect("the node's URL is valid"));
    with_traceable_keys(&mut config);
    let h = Harness::start_on(config, dir, true).await;

    let restarted = std::sync::atomic::AtomicBool::new(false);
    // The producer's refusals so far, for the figures of each outage.
    let refusals = std::sync::atomic::AtomicUsize::new(0);
    let producer = async {
        let mut tally = Tally::default();
        let (mut submitted, mut after_restart) = (0, 0);
        while submitted < JOBS || after_restart < AFTER_RESTART {
            if restarted.load(std::sync::atomic::Ordering::Relaxed) {
                after_restart += 1;
            }
            let answer = submit(&h, &common::prompt("[sim latency=20ms] steady"), &mut tally).await;
            submitted += 1;
            match answer.status {
                202 => {}
                503 => {
                    assert_store_unavailable(&answer);
                    tally.refused += 1;
                    refusals.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                other => panic!("{other}: {:#}", answer.body),
            }
            // The producer's pace, not a wait for a state: a job every 20 ms.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (tally, submitted)
    };
    // The faults, once jobs are flowing: a short restart, then an outage that lasts until a
    // submission made during it has been answered.
    let faults = async {
        let succeeded = async || {
            h.count("SELECT COUNT(*) FROM jobs WHERE status = 'succeeded'")
                .await
        };
        common::eventually(
            "jobs to succeed before the fault",
            Duration::from_secs(30),
            async || succeeded().await >= 20,
        )
        .await;
        // Shorter than the pool's wait for a connection (10 s, `ACQUIRE_TIMEOUT` in
        // src/store/postgres.rs): the submissions meanwhile wait, and the workers pause.
        let refused_before = refusals.load(std::sync::atomic::Ordering::Relaxed);
        node.stop().await;
        let stopped = std::time::Instant::now();
        tokio::time::sleep(SHORT_OUTAGE).await;
        node.start().await;
        println!(
            "postgres restart: down {:.1} s, {} submissions refused meanwhile",
            stopped.elapsed().as_secs_f64(),
            refusals.load(std::sync::atomic::Ordering::Relaxed) - refused_before
        );
        let before = succeeded().await;
        common::eventually(
            "the workers to resume after the restart",
            Duration::from_secs(60),
            async || succeeded().await >= before + 20,
        )
        .await;
        // Down for as long as a submission takes to be answered: what the API answers while
        // the store cannot be reached.
        node.stop().await;
        let stopped = std::time::Instant::now();
        let mut tally = Tally::default();
        let probe = submit(
            &h,
            &common::prompt("[sim latency=20ms] while down"),
            &mut tally,
        )
        .await;
        let answered_in = stopped.elapsed();
        node.start().await;
        restarted.store(true, std::sync::atomic::Ordering::Relaxed);
        println!(
            "postgres outage: down {:.1} s; a submission while down answered {} in {:.1} s",
            stopped.elapsed().as_secs_f64(),
            probe.status,
            answered_in.as_secs_f64()
        );
        assert_store_unavailable(&probe);
        tally.refused += 1;
        tally
    };
    let ((mut tally, submitted), probe_tally) = tokio::join!(producer, faults);
    tally.refused += probe_tally.refused;
    tally.answers.extend(probe_tally.answers);
    let submitted = submitted + 1;

    tally.check(&h, "postgres restarted mid-run").await;
    let succeeded = h
        .count("SELECT COUNT(*) FROM jobs WHERE status = 'succeeded'")
        .await;
    let cost_rows = h.count("SELECT COUNT(*) FROM costs").await;
    let charged_jobs = h.count("SELECT COUNT(DISTINCT job_id) FROM costs").await;
    let attempts = h.count("SELECT COUNT(*) FROM attempts").await;
    let running = h
        .count("SELECT COUNT(*) FROM attempts WHERE outcome = 'running'")
        .await;
    let interrupted = h
        .count("SELECT COUNT(*) FROM attempts WHERE outcome = 'interrupted'")
        .await;
    println!(
        "postgres restarted mid-run: {submitted} submitted, {} accepted, {} refused with a 503, \
         {succeeded} succeeded, {cost_rows} cost rows for {charged_jobs} jobs, {attempts} \
         attempts ({interrupted} interrupted, {running} left running), {} provider calls",
        tally.accepted.len(),
        tally.refused,
        h.sim_requests()
    );
    assert_eq!(
        succeeded,
        tally.accepted.len() as i64,
        "every accepted job succeeded"
    );
    assert_eq!(cost_rows, charged_jobs, "no job charged twice");
    assert_eq!(cost_rows, succeeded, "one cost row per job");
    assert_eq!(running, 0, "no attempt left running");
    h.stop().await;
}

/// A 503 of a store that cannot record anything now: `retry-after`, and the error says so.
fn assert_store_unavailable(answer: &Answer) {
    assert_eq!(answer.status, 503, "{:#}", answer.body);
    assert!(
        answer.retry_after.is_some(),
        "no retry-after: {:#}",
        answer.body
    );
    assert_eq!(
        answer.body["error"]["type"], "store_unavailable",
        "{:#}",
        answer.body
    );
}

/// A provider that refuses connections (alone, and as the primary of a fallback chain),
/// 429 storms, connections closed half-way through the body, and a provider failing every
/// call, on each queue backend: the routing suite tests what each does to a job; here the
/// accounting of a mixed run is checked.
async fn provider_faults_lose_nothing_and_charge_once(backend: Backend) {
    // Held for the whole test: a port merely found free could be taken by another test's
    // server, and answer.
    let refused = common::RefusedPort::new();
    let closed_port = refused.port;
    let h = Harness::start_with(
        backend,
        |config| {
            let mut down = config.providers["openai"].clone();
            down.base_url = format!("http://127.0.0.1:{closed_port}/v1");
            config.providers.insert("down".into(), down);
            let mut deployment = config.deployments["gpt-4o-mini"].clone();
            deployment.provider = "down".into();
            config.deployments.insert("down-mini".into(), deployment);
            // The fallback on a provider of its own, so the 429 storms' cooldowns of the
            // other jobs' key never send its jobs back to the refusing one.
            let mut spare = config.providers["openai"].clone();
            for key in &mut spare.keys {
                key.id = format!("spare-{}", key.id);
            }
            config.providers.insert("spare".into(), spare);
            let mut deployment = config.deployments["gpt-4o-mini"].clone();
            deployment.provider = "spare".into();
            config.deployments.insert("spare-mini".into(), deployment);
            let mut refused = config.routes["fast"].clone();
            refused.deployments = vec!["down-mini".into()];
            config.routes.insert("refused".into(), refused.clone());
            refused.deployments = vec!["down-mini".into(), "spare-mini".into()];
            config.routes.insert("refused-then-ok".into(), refused);
            // The circuit breaker is the routing suite's business: here every job goes
            // through its own retries.
            config.health.window = 10_000;
            config.health.min_calls = 10_000;
            with_traceable_keys(config);
        },
        true,
    )
    .await;
    let mut tally = Tally::default();
    let cases = [
        ("fast", "[sim fail=429,429]", 6),
        ("fast", "[sim fail=cut]", 6),
        ("fast", "[sim fail=500*]", 3),
        ("refused", "", 3),
        ("refused-then-ok", "", 6),
    ];
    for (model, directive, count) in cases {
        for i in 0..count {
            let content = common::prompt(&format!("{directive} {model} {i}"));
            let body = json!({"request": {"model": model,
                "messages": [{"role": "user", "content": content}]}});
            let answer = post(&h, "/v1/jobs", &body, &mut tally).await;
            assert_eq!(answer.status, 202, "{:#}", answer.body);
            tally
                .accepted
                .push(answer.body["id"].as_str().unwrap().parse().unwrap());
        }
    }
    tally
        .check(&h, &format!("provider faults ({backend:?})"))
        .await;
    // Each kind of fault ended as it should: the storms and cuts retried to success, the
    // provider that always fails and the one that is down failed the job.
    let failed: Vec<(String, String)> = sqlx::query_as(
        "SELECT request, error FROM jobs WHERE status = 'failed' ORDER BY created_at",
    )
    .fetch_all(h.app.store.sqlite_reader().unwrap())
    .await
    .unwrap();
    assert_eq!(
        failed.len(),
        6,
        "the always-failing and the refusing-only jobs: {failed:#?}"
    );
    h.stop().await;
}

/// Hostile bodies on the endpoints that read JSON whole: 10 MB, nested 100,000 deep, bytes
/// that are not UTF-8. Each is a 4xx JSON error naming the problem, nothing is recorded,
/// and the server goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bodies_are_refused_and_the_server_goes_on() {
    let h = Harness::start(Backend::Embedded).await;
    let deep = format!(
        r#"{{"request": {{"model": "fast", "messages": [{{"role": "user", "content": "x"}}], "metadata": {}{}}}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let huge = serde_json::to_vec(&job(&"x".repeat(10 << 20))).unwrap();
    let mut bad_utf8 =
        br#"{"request": {"model": "fast", "messages": [{"role": "user", "content": "caf"#.to_vec();
    bad_utf8.extend_from_slice(&[0xff, 0xfe, 0xc3]);
    bad_utf8.extend_from_slice(br#""}]}}"#);
    let chat_huge = serde_json::to_vec(
        &json!({"model": "fast", "messages": [{"role": "user", "content": "x".repeat(10 << 20)}]}),
    )
    .unwrap();
    let bodies: [(&str, &str, Vec<u8>); 6] = [
        ("10 MB", "/v1/jobs", huge),
        ("10 MB", "/v1/chat/completions", chat_huge),
        ("deep", "/v1/jobs", deep.clone().into_bytes()),
        (
            "deep",
            "/v1/chat/completions",
            deep.replace(r#"{"request": "#, "").into_bytes(),
        ),
        ("bad UTF-8", "/v1/jobs", bad_utf8.clone()),
        ("bad UTF-8", "/v1/chat/completions", bad_utf8),
    ];
    let mut tally = Tally::default();
    for (what, path, body) in bodies {
        let answer = http()
            .post(format!("{}{path}", h.base_url))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = answer.status().as_u16();
        let text = answer.text().await.unwrap();
        println!(
            "hostile body, {what} to {path}: {status} {}",
            &text[..text.len().min(200)]
        );
        let error: Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{what} to {path}: not JSON: {text}"));
        assert!(
            (400..500).contains(&status),
            "{what} to {path}: {status} {error}"
        );
        assert!(error["error"]["message"].is_string(), "{error}");
        tally.answers.push(text);
    }
    assert_eq!(h.count("SELECT COUNT(*) FROM jobs").await, 0);
    // Still serving.
    let answer = submit(&h, &common::prompt("after the hostile bodies"), &mut tally).await;
    assert_eq!(answer.status, 202, "{:#}", answer.body);
    tally.check(&h, "hostile bodies").await;
    h.stop().await;
}

/// The built `sluice` run as processes of their own (`serve`, `serve --no-workers`,
/// `worker`) on one configuration, with the provider a simulator of the test's own, so a
/// process can be killed while its call is at the provider.
struct Processes {
    backend: Backend,
    dir: tempfile::TempDir,
    prefix: String,
    sim: sluice::sim::SimServer,
    logs: Vec<std::path::PathBuf>,
}

impl Processes {
    async fn new(backend: Backend) -> Processes {
        let sim = sluice::sim::spawn(
            "127.0.0.1:0".parse().unwrap(),
            sluice::sim::SimConfig::default(),
        )
        .await
        .unwrap();
        let processes = Processes {
            backend,
            dir: tempfile::tempdir().unwrap(),
            prefix: format!("sluice-test-faults-{}", uuid::Uuid::now_v7()),
            sim,
            logs: Vec::new(),
        };
        processes.write_config();
        processes
    }

    fn config_path(&self) -> std::path::PathBuf {
        self.dir.path().join("sluice.toml")
    }

    /// One deployment on the test's simulator; a visibility timeout just above the provider
    /// timeout, so the embedded queue hands a dead process's job out again soon.
    fn write_config(&self) {
        let queue = match self.backend {
            Backend::Embedded => String::new(),
            Backend::Rabbitmq | Backend::Postgres => format!(
                "url = \"{}\"\nprefix = \"{}\"",
                common::AMQP_URL,
                self.prefix
            ),
        };
        let text = format!(
            r#"
[server]
listen = "127.0.0.1:0"
database = {database:?}

[queue]
visibility_timeout = "12s"
{queue}

[scheduler]
enabled = false

[retry]
max_attempts = 3
base_delay = "100ms"
max_delay = "1s"

[[tenants]]
name = "acme"
token = "{TOKEN}"

[providers.upstream]
kind = "openai"
base_url = "{sim}"
timeout = "10s"
keys = [{{ id = "k1", secret = "{KEY_SECRET}-k1" }}]

[deployments.mini]
provider = "upstream"
model = "gpt-4o-mini"

[routes.story]
deployments = ["mini"]
"#,
            database = self.dir.path().join("sluice.db").to_str().unwrap(),
            sim = self.sim.openai_base_url(),
        );
        std::fs::write(self.config_path(), text).unwrap();
    }

    /// A log file of the run for the next process.
    fn next_log(&mut self, what: &str) -> std::path::PathBuf {
        let path = self
            .dir
            .path()
            .join(format!("{what}-{}.log", self.logs.len()));
        self.logs.push(path.clone());
        path
    }

    /// Starts `sluice serve ARGS`, and waits until it listens.
    async fn serve(&mut self, args: &[&str]) -> common::serve::Served {
        let log = self.next_log("serve");
        common::serve::Served::start(&self.config_path(), args, &log).await
    }

    /// Starts `sluice worker`, its log in a file of the run.
    fn worker(&mut self) -> tokio::process::Child {
        let log = std::fs::File::create(self.next_log("worker")).unwrap();
        tokio::process::Command::from(common::serve::sluice())
            .arg("worker")
            .arg("--config")
            .arg(self.config_path())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    }

    async fn count(&self, sql: &str) -> i64 {
        let store = sqlx::SqlitePool::connect(&format!(
            "sqlite://{}?mode=ro",
            self.dir.path().join("sluice.db").display()
        ))
        .await
        .unwrap();
        let n = sqlx::query_scalar(sql).fetch_one(&store).await.unwrap();
        store.close().await;
        n
    }

    /// Calls that reached the simulator with `text` in them.
    fn calls_with(&self, text: &str) -> usize {
        self.sim
            .requests()
            .iter()
            .filter(|r| r.to_string().contains(text))
            .count()
    }

    /// Waits until job `id` is final in the store (a server must be running to finish it).
    async fn wait_final(&self, id: &str) -> String {
        let what = format!("job {id} to end (see {})", self.dir.path().display());
        common::eventually(&what, Duration::from_secs(60), async || {
            let status: Vec<String> = {
                let store = sqlx::SqlitePool::connect(&format!(
                    "sqlite://{}?mode=ro",
                    self.dir.path().join("sluice.db").display()
                ))
                .await
                .unwrap();
                let rows = sqlx::query_scalar("SELECT status FROM jobs WHERE id = ?")
                    .bind(id)
                    .fetch_all(&store)
                    .await
                    .unwrap();
                store.close().await;
                rows
            };
            match status.first() {
                Some(status) if matches!(status.as_str(), "succeeded" | "failed" | "cancelled") => {
                    Ok(status.clone())
                }
                other => Err(format!("{other:?}")),
            }
        })
        .await
    }

    /// No secret in any log or database file of the run.
    fn assert_no_secret_in_files(&self) {
        for entry in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == "sluice.toml" || !entry.path().is_file() {
                continue;
            }
            let bytes = std::fs::read(entry.path()).unwrap();
            for secret in [KEY_SECRET, TOKEN] {
                assert!(
                    !bytes
                        .windows(secret.len())
                        .any(|window| window == secret.as_bytes()),
                    "{name} holds a secret"
                );
            }
        }
    }

    /// Asserts the accounting of the run's jobs and prints its figures.
    async fn check(&self, case: &str, submitted: i64) {
        let finals = self
            .count("SELECT COUNT(*) FROM jobs WHERE status IN ('succeeded', 'failed', 'cancelled')")
            .await;
        let succeeded = self
            .count("SELECT COUNT(*) FROM jobs WHERE status = 'succeeded'")
            .await;
        let cost_rows = self.count("SELECT COUNT(*) FROM costs").await;
        let charged = self.count("SELECT COUNT(DISTINCT job_id) FROM costs").await;
        println!(
            "{case} ({:?}): {submitted} jobs submitted, {finals} final ({succeeded} succeeded), \
             {} lost, {cost_rows} cost rows, {} charged twice",
            self.backend,
            submitted - finals,
            cost_rows - charged,
        );
        assert_eq!(finals, submitted, "every job is final");
        assert_eq!(self.count("SELECT COUNT(*) FROM jobs").await, submitted);
        assert_eq!(cost_rows, succeeded, "one cost row per succeeded job");
        assert_eq!(charged, cost_rows, "no job charged twice");
        self.assert_no_secret_in_files();
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        if self.backend.uses_rabbitmq() {
            common::delete_topology_blocking(sluice::queue::amqp::Topology::new(
                self.prefix.clone(),
                10,
            ));
        }
    }
}

/// A streamed chat completion whose answer comes slowly: three words every 300 ms.
fn slow_story(text: &str) -> Value {
    json!({"model": "story", "stream": true, "messages": [{"role": "user",
        "content": format!("[sim itl=300ms] {text}: tell me a long story about rivers and the sea")}]})
}

/// Reads a stream's `data:` payloads until `enough` of them came (or it ended); the
/// response's job id and what was read. The rest of the stream is read by `rest`.
async fn read_events(response: &mut reqwest::Response, enough: usize) -> (Vec<String>, bool) {
    let mut buffer = String::new();
    let mut events = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(bytes)) => {
                buffer.push_str(&String::from_utf8_lossy(&bytes));
                while let Some(end) = buffer.find("\n\n") {
                    let event: String = buffer.drain(..end + 2).collect();
                    for line in event.lines() {
                        if let Some(data) = line.strip_prefix("data:") {
                            events.push(data.trim_start().to_string());
                        }
                    }
                }
                if events.len() >= enough {
                    return (events, false);
                }
            }
            // The end of the stream, or the connection cut.
            Ok(None) | Err(_) => return (events, true),
        }
    }
}

/// How many answers a stream's events began (a role chunk starts each).
fn answers_begun(events: &[String]) -> usize {
    events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter(|e| e["choices"][0]["delta"]["role"].is_string())
        .count()
}

/// Starts a slow streamed story on the API at `base_url` and reads its first events: the
/// story's text (which tells its calls apart at the provider), the job id, the response
/// still streaming, and the events read.
async fn begin_story(base_url: &str) -> (String, String, reqwest::Response, Vec<String>) {
    let text = format!("story {}", uuid::Uuid::now_v7());
    let mut response = reqwest::Client::new()
        .post(format!("{base_url}/v1/chat/completions"))
        .bearer_auth(TOKEN)
        .json(&slow_story(&text))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let id = response.headers()[sluice::api::JOB_ID_HEADER]
        .to_str()
        .unwrap()
        .to_string();
    let (events, ended) = read_events(&mut response, 3).await;
    assert!(!ended, "the stream ended before the kill: {events:?}");
    (text, id, response, events)
}

/// `sluice serve` killed with SIGKILL while a streamed chat completion is in flight: the
/// client's stream ends without `[DONE]` and without a second answer spliced on; a new
/// server finishes the job, which ends final and is charged at most once.
async fn serve_killed_mid_stream_leaves_a_final_job_charged_once(backend: Backend) {
    let mut run = Processes::new(backend).await;
    let mut server = run.serve(&[]).await;
    let (text, id, mut response, mut events) = begin_story(&server.base_url).await;
    server.kill().await;
    let (rest, ended) = read_events(&mut response, usize::MAX).await;
    assert!(ended);
    events.extend(rest);
    assert!(!events.iter().any(|e| e == "[DONE]"), "{events:?}");
    assert_eq!(
        answers_begun(&events),
        1,
        "one answer, none spliced: {events:?}"
    );
    for event in &events {
        assert_no_secret(event, "a streamed event");
    }

    let mut server = run.serve(&[]).await;
    let status = run.wait_final(&id).await;
    server.kill().await;
    let calls = run.calls_with(&text);
    println!("serve killed mid-stream ({backend:?}): job {status} after {calls} provider calls");
    assert!(calls <= 3, "{calls} calls, max_attempts 3");
    run.check("serve killed mid-stream", 1).await;
}

/// A worker process killed with SIGKILL mid-stream while the API process lives on
/// (RabbitMQ: the reply inboxes cross processes): the client's stream ends with an error
/// event, not the next worker's answer spliced on, and the job ends final, charged once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_stream_ends_the_stream_with_an_error_event() {
    let mut run = Processes::new(Backend::Rabbitmq).await;
    let mut api = run.serve(&["--no-workers"]).await;
    let mut worker = run.worker();
    let (text, id, mut response, mut events) = begin_story(&api.base_url).await;
    worker.start_kill().unwrap();
    worker.wait().await.unwrap();
    // The job's message goes back to the queue; the next worker answers from the start.
    let mut next = run.worker();
    let (rest, ended) = read_events(&mut response, usize::MAX).await;
    assert!(ended);
    events.extend(rest);
    assert!(!events.iter().any(|e| e == "[DONE]"), "{events:?}");
    assert_eq!(
        answers_begun(&events),
        1,
        "one answer, none spliced: {events:?}"
    );
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert!(
        last["error"]["message"].is_string(),
        "ends with an error event: {events:?}"
    );
    let status = run.wait_final(&id).await;
    let calls = run.calls_with(&text);
    println!("worker killed mid-stream (Rabbitmq): job {status} after {calls} provider calls");
    api.kill().await;
    next.start_kill().unwrap();
    next.wait().await.unwrap();
    assert!(calls <= 3, "{calls} calls, max_attempts 3");
    run.check("worker killed mid-stream", 1).await;
}

on_both_backends!(
    provider_faults_lose_nothing_and_charge_once,
    serve_killed_mid_stream_leaves_a_final_job_charged_once,
);

/// Every `/v1` route of the router, from `src/api/mod.rs` itself, so a route added later
/// without a case here fails the next test.
fn api_routes() -> Vec<String> {
    include_str!("../../src/api/mod.rs")
        .split(".route(")
        .skip(1)
        .filter_map(|call| {
            let path = call.trim_start().strip_prefix('"')?.split('"').next()?;
            path.starts_with("/v1").then(|| path.to_string())
        })
        .collect()
}

/// Another tenant's token on every route: acme's job, bulk, file and batch are 404s to
/// globex by id (read, cancel, delete, content, results, and a batch made from acme's file),
/// and absent from its lists and reports. The table covers every `/v1` route the router has.
/// (Requests without a token are throttled per address after ten: `api_errors`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_token_finds_nothing_on_any_route() {
    let h = Harness::start_with(Backend::Embedded, with_traceable_keys, true).await;
    let mut tally = Tally::default();
    let http = http();
    let acme_job = submit(&h, &common::prompt("acme's own"), &mut tally)
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    h.wait(acme_job.parse().unwrap()).await;
    let line = |id: &str| {
        json!({"custom_id": id, "method": "POST", "url": "/v1/chat/completions",
               "body": {"model": "fast", "messages": [{"role": "user", "content": id}]}})
        .to_string()
    };
    let bulk: Value = http
        .post(format!(
            "{}/v1/bulk?name=acme-bulk&urgency=standard",
            h.base_url
        ))
        .bearer_auth(TOKEN)
        .body(format!("{}\n", line("b1")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let acme_bulk = bulk["id"].as_str().expect("a bulk id").to_string();
    let form = reqwest::multipart::Form::new()
        .text("purpose", "batch")
        .part(
            "file",
            reqwest::multipart::Part::text(format!("{}\n", line("f1"))).file_name("in.jsonl"),
        );
    let file: Value = http
        .post(format!("{}/v1/files", h.base_url))
        .bearer_auth(TOKEN)
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let acme_file = file["id"].as_str().expect("a file id").to_string();
    let batch_body = json!({"input_file_id": acme_file, "endpoint": "/v1/chat/completions",
                            "completion_window": "24h"});
    let batch: Value = http
        .post(format!("{}/v1/batches", h.base_url))
        .bearer_auth(TOKEN)
        .json(&batch_body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let acme_batch = batch["id"].as_str().expect("a batch id").to_string();

    use reqwest::Method;
    // (route as the router names it, method, path with acme's ids, body, globex's answer).
    let cases: Vec<(&str, Method, String, Option<Value>, u16)> = vec![
        (
            "/v1/jobs/{id}",
            Method::GET,
            format!("/v1/jobs/{acme_job}"),
            None,
            404,
        ),
        (
            "/v1/jobs/{id}",
            Method::DELETE,
            format!("/v1/jobs/{acme_job}"),
            None,
            404,
        ),
        (
            "/v1/bulk/{id}",
            Method::GET,
            format!("/v1/bulk/{acme_bulk}"),
            None,
            404,
        ),
        (
            "/v1/bulk/{id}/results",
            Method::GET,
            format!("/v1/bulk/{acme_bulk}/results"),
            None,
            404,
        ),
        (
            "/v1/bulk/{id}/cancel",
            Method::POST,
            format!("/v1/bulk/{acme_bulk}/cancel"),
            None,
            404,
        ),
        (
            "/v1/files/{id}",
            Method::GET,
            format!("/v1/files/{acme_file}"),
            None,
            404,
        ),
        (
            "/v1/files/{id}",
            Method::DELETE,
            format!("/v1/files/{acme_file}"),
            None,
            404,
        ),
        (
            "/v1/files/{id}/content",
            Method::GET,
            format!("/v1/files/{acme_file}/content"),
            None,
            404,
        ),
        (
            "/v1/batches/{id}",
            Method::GET,
            format!("/v1/batches/{acme_batch}"),
            None,
            404,
        ),
        (
            "/v1/batches/{id}/cancel",
            Method::POST,
            format!("/v1/batches/{acme_batch}/cancel"),
            None,
            404,
        ),
        (
            "/v1/batches",
            Method::POST,
            "/v1/batches".into(),
            Some(batch_body.clone()),
            404,
        ),
        // Lists and reports: globex's own, empty of acme's.
        ("/v1/batches", Method::GET, "/v1/batches".into(), None, 200),
        ("/v1/files", Method::GET, "/v1/files".into(), None, 200),
        (
            "/v1/costs",
            Method::GET,
            "/v1/costs?format=json".into(),
            None,
            200,
        ),
        ("/v1/budgets", Method::GET, "/v1/budgets".into(), None, 200),
        // Not the tenant's data: the same for every tenant.
        ("/v1/models", Method::GET, "/v1/models".into(), None, 200),
        (
            "/v1/providers",
            Method::GET,
            "/v1/providers".into(),
            None,
            200,
        ),
        // Creating: globex's own, naming nothing of acme's.
        (
            "/v1/jobs",
            Method::POST,
            "/v1/jobs".into(),
            Some(job("globex's own")),
            202,
        ),
        (
            "/v1/chat/completions",
            Method::POST,
            "/v1/chat/completions".into(),
            Some(json!({"model": "fast", "messages": [{"role": "user", "content": "globex"}]})),
            200,
        ),
        (
            "/v1/bulk",
            Method::POST,
            "/v1/bulk?name=acme-bulk".into(),
            None,
            201,
        ),
    ];
    let covered: std::collections::BTreeSet<&str> = cases.iter().map(|c| c.0).collect();
    for route in api_routes() {
        assert!(
            covered.contains(route.as_str()),
            "no tenant case for {route}"
        );
    }
    let acme_ids = [&acme_job, &acme_bulk, &acme_file, &acme_batch];
    for (route, method, path, body, expected) in &cases {
        let send = |token: &str| {
            let mut request = http
                .request(method.clone(), format!("{}{path}", h.base_url))
                .bearer_auth(token);
            if *route == "/v1/bulk" {
                request = request.body(format!("{}\n", line("b1")));
            } else if let Some(body) = body {
                request = request.json(body);
            }
            request.send()
        };
        let answer = send(common::OTHER_TOKEN).await.unwrap();
        let status = answer.status().as_u16();
        let text = answer.text().await.unwrap();
        assert_eq!(status, *expected, "{method} {path} as globex: {text}");
        // A 404 names the id it was asked for; an answer with content names none of acme's.
        for id in acme_ids.iter().filter(|_| status < 300) {
            assert!(
                !text.contains(id.as_str()),
                "{method} {path} as globex shows {id}: {text}"
            );
        }
        assert_no_secret(&text, "an answer");
    }
    // Acme's own still stand, untouched by globex's cancels and deletes.
    let mine = http
        .get(format!("{}/v1/files/{acme_file}", h.base_url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(mine.status(), 200);
    println!(
        "another tenant's token: {} routes, {} requests, nothing of acme's seen",
        covered.len(),
        cases.len()
    );
    assert_no_secret_in_store(&h);
    h.stop().await;
}
