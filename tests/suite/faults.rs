//! The fault suite: Sluice under the faults an operator meets (a broker restarted or out of
//! memory, a provider refusing or failing, a process killed mid-stream, hostile input), each
//! case checking the same three promises and printing its figures:
//!
//! - every job accepted reaches a final state (submitted = final: none lost);
//! - each succeeded job has exactly one cost row, and nothing else has one (none charged twice);
//! - no secret (provider key, tenant token) appears in the store, the answers or the logs.
//!
//! Broker faults run on a RabbitMQ node of the test's own ([`common::broker`]), never the
//! shared one. Faults covered elsewhere are not repeated: crash loops (`crashes`), late
//! confirms and garbage envelopes (`resilience`), a full disk, large bodies and token guessing
//! (`api_errors`). Figures and guarantees: `docs/reliability.md`.

use crate::common;

use common::broker;
use common::{Backend, Harness, TOKEN};
use serde_json::{json, Value};
use sluice::config::{Config, Secret};
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
    let mut last = (0, Value::Null);
    for _ in 0..100 {
        last = readyz(h).await;
        if last.0 == status {
            return last.1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("/readyz never answered {status}: {} {:#}", last.0, last.1);
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
