//! What must survive: a job published straight onto the queue without the API, a message that
//! is not a job, and a worker killed in the middle of a job.

use crate::common;

use common::{prompt, test_config, Backend, Harness};
use sluice::app::App;
use sluice::job::Urgency;
use std::time::Duration;

/// A job envelope written by hand, exactly as `docs/envelope.md` documents it, as a program
/// in another language would publish it.
fn hand_written_envelope(id: uuid::Uuid, text: &str) -> Vec<u8> {
    format!(
        r#"{{"version": 1, "id": "{id}", "tenant": "acme", "urgency": "standard",
            "tags": {{"team": "etl"}}, "custom_id": "row-{id}",
            "request": {{"model": "fast", "messages": [{{"role": "user", "content": "{text}"}}], "temperature": 0.1}}}}"#
    )
    .into_bytes()
}

/// Publishes raw bytes the way a foreign producer would: on RabbitMQ straight onto the
/// exchange with a plain AMQP client, on the embedded backend through the queue alone.
async fn publish_raw(h: &Harness, backend: Backend, payload: Vec<u8>) {
    publish_raw_to(h, backend, Urgency::Standard, payload).await
}

/// [`publish_raw`] with the routing key (the queue) `urgency`.
async fn publish_raw_to(h: &Harness, backend: Backend, urgency: Urgency, payload: Vec<u8>) {
    match backend {
        Backend::Embedded => h.app.queue.publish(urgency, vec![payload]).await.unwrap(),
        Backend::Rabbitmq | Backend::Postgres => {
            use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
            let conn = common::amqp_connection().await;
            let channel = conn.create_channel().await.unwrap();
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .unwrap();
            let exchange = h.topology().exchange();
            channel
                .basic_publish(
                    exchange.as_str().into(),
                    urgency.as_str().into(),
                    BasicPublishOptions::default(),
                    &payload,
                    lapin::BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .unwrap()
                .await
                .unwrap();
            conn.close(200, "bye".into()).await.unwrap();
        }
    }
}

/// Reasons of the messages in the dead-letter queue.
async fn dead_letter_reasons(h: &Harness, backend: Backend) -> Vec<String> {
    match backend {
        Backend::Embedded => sqlx::query_scalar("SELECT reason FROM dead_letters")
            .fetch_all(h.app.store.sqlite_reader().unwrap())
            .await
            .unwrap(),
        Backend::Rabbitmq | Backend::Postgres => {
            use lapin::options::BasicGetOptions;
            let conn = common::amqp_connection().await;
            let channel = conn.create_channel().await.unwrap();
            let queue = h.topology().dead_queue();
            let mut reasons = Vec::new();
            while let Some(message) = channel
                .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap()
            {
                let headers = message
                    .delivery
                    .properties
                    .headers()
                    .clone()
                    .unwrap_or_default();
                let reason = headers
                    .inner()
                    .get("x-sluice-dead-reason")
                    .and_then(|v| v.as_long_string().map(|s| s.to_string()))
                    .unwrap_or_default();
                reasons.push(reason);
            }
            conn.close(200, "bye".into()).await.unwrap();
            reasons
        }
    }
}

on_both_backends!(
    a_job_published_straight_onto_the_queue_is_recorded_and_pollable,
    a_poison_message_is_dead_lettered_and_the_worker_keeps_going,
    a_worker_killed_mid_job_loses_nothing_and_the_job_finishes_once,
    a_job_stranded_between_record_and_publish_is_relayed_and_runs_once,
    a_message_of_a_recorded_job_without_its_row_is_dead_lettered_not_run,
    bad_envelopes_are_dead_lettered_naming_the_field_and_none_runs,
);

async fn a_job_published_straight_onto_the_queue_is_recorded_and_pollable(backend: Backend) {
    let h = Harness::start(backend).await;
    let id = uuid::Uuid::now_v7();
    publish_raw(
        &h,
        backend,
        hand_written_envelope(id, &prompt("published without the API")),
    )
    .await;
    let job = h.wait_published(id).await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    assert_eq!(job["custom_id"], format!("row-{id}"));
    assert_eq!(job["tags"]["team"], "etl");
    assert!(job["cost"]["amount_pico_usd"].as_i64().unwrap() > 0);
    // The unknown field travelled to the provider untouched.
    let seen = h.app.sim.as_ref().unwrap().requests();
    assert!(
        seen.iter().any(|r| r["temperature"] == 0.1),
        "temperature reached the provider"
    );
    h.stop().await;
}

async fn a_poison_message_is_dead_lettered_and_the_worker_keeps_going(backend: Backend) {
    let h = Harness::start(backend).await;
    publish_raw(&h, backend, b"this is not json".to_vec()).await;
    publish_raw(
        &h,
        backend,
        br#"{"version": 1, "id": "not-a-uuid"}"#.to_vec(),
    )
    .await;
    let id = h.submit("fast", &prompt("after the poison")).await;
    assert_eq!(h.wait(id).await["status"], "succeeded");
    let reasons = common::eventually("two dead letters", Duration::from_secs(5), async || {
        let reasons = dead_letter_reasons(&h, backend).await;
        if reasons.len() >= 2 {
            Ok(reasons)
        } else {
            Err(format!("{reasons:?}"))
        }
    })
    .await;
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons
            .iter()
            .all(|r| r.contains("not a Sluice job envelope")),
        "{reasons:?}"
    );
    h.stop().await;
}

async fn a_worker_killed_mid_job_loses_nothing_and_the_job_finishes_once(backend: Backend) {
    let mut h = Harness::start_with(backend, |_| {}, false).await;
    let id = h.submit("fast", &prompt("[sim latency=1s] slow job")).await;

    // The victim: a second Sluice process on the same store and queue, in its own runtime,
    // which is torn down while its call to the provider is in flight (a crash: nothing is
    // settled, nothing is recorded).
    let mut config = test_config(backend, h.dir.path());
    config.queue.prefix = h.app.config.queue.prefix.clone();
    let victim = std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async move {
            let app = App::start(config.resolve().unwrap()).await.unwrap();
            if let Some(amqp) = app.queue_as_amqp() {
                amqp.wait_connected(Duration::from_secs(10)).await.unwrap();
            }
            let _workers = app.start_workers(&[Urgency::Standard]);
            let sim = app.sim.as_ref().unwrap();
            // The crash comes once the call is at the provider and the job is recorded
            // `running` (the call may begin a moment before that commit lands).
            common::eventually(
                "the victim's call to reach the provider, its job running",
                Duration::from_secs(5),
                async || {
                    let status: Option<String> =
                        sqlx::query_scalar("SELECT status FROM jobs WHERE id = ?")
                            .bind(id.to_string())
                            .fetch_optional(app.store.sqlite_reader().unwrap())
                            .await
                            .unwrap();
                    match (sim.stats().chat_requests, status.as_deref()) {
                        (1.., Some("running")) => Ok(()),
                        (calls, status) => Err(format!("{calls} calls, job {status:?}")),
                    }
                },
            )
            .await;
            sim.stats().chat_requests
        })
        // The runtime is dropped here, mid-call.
    });
    let victim_calls = victim.join().unwrap();
    assert_eq!(victim_calls, 1, "the victim had taken the job when it died");
    assert_eq!(h.client.get(id, None).await.unwrap()["status"], "running");

    h.start_workers();
    let job = h.wait(id).await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    assert_eq!(
        h.count("SELECT COUNT(*) FROM costs").await,
        1,
        "charged once"
    );
    assert_eq!(h.count("SELECT COUNT(*) FROM results").await, 1);
    assert_eq!(h.sim_requests(), 1, "the survivor called the provider once");
    h.stop().await;
}

/// A broker that is down at start: no panic, a clear error to the producer, nothing recorded,
/// and a connection that keeps retrying in the background.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_down_at_start_gives_a_clear_error_not_a_panic() {
    let h = Harness::start_with_unready_broker(|config| {
        // Port 1 on loopback: nothing listens there.
        config.queue.url = Some(sluice::config::Secret::new(
            "amqp://guest:s3cret@127.0.0.1:1/%2f",
        ));
        config.queue.publish_timeout = Duration::from_millis(1500);
    })
    .await;
    let amqp = h.app.queue_as_amqp().unwrap();
    let err = amqp
        .wait_connected(Duration::from_millis(500))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("127.0.0.1:1"), "names the broker: {err}");
    assert!(!err.contains("s3cret"), "never shows the password: {err}");

    let response = reqwest::Client::new()
        .post(format!("{}/v1/jobs", h.base_url))
        .bearer_auth(common::TOKEN)
        .json(&serde_json::json!({"request": {"model": "fast", "messages": [{"role": "user", "content": "hi"}]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("queue is unavailable") && message.contains("retry"),
        "{message}"
    );
    assert!(!message.contains("s3cret"), "{message}");
    assert_eq!(
        h.count("SELECT COUNT(*) FROM jobs").await,
        0,
        "a refused job is not left behind"
    );
    // The API itself is still up, and says the queue is not: not ready for submissions.
    let health = reqwest::get(format!("{}/healthz", h.base_url))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let health: serde_json::Value = health.json().await.unwrap();
    assert_eq!(health["queue_available"], false, "{health}");
    let ready = reqwest::get(format!("{}/readyz", h.base_url))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let ready: serde_json::Value = ready.json().await.unwrap();
    assert!(
        ready["problems"][0]
            .as_str()
            .is_some_and(|p| p.contains("queue (rabbitmq) is unreachable")),
        "{ready}"
    );
    h.stop().await;
}

async fn a_job_stranded_between_record_and_publish_is_relayed_and_runs_once(backend: Backend) {
    let h = Harness::start(backend).await;
    let submitter = h.app.submitter();
    // A normally submitted job is confirmed on the queue: nothing to relay.
    let normal = h.submit("fast", &prompt("submitted normally")).await;
    assert_eq!(h.wait(normal).await["status"], "succeeded");
    assert_eq!(submitter.relay_stranded(Duration::ZERO).await.unwrap(), 0);

    // The API's first step without its second: recorded, then the process "died" before
    // publishing.
    let spec: sluice::job::JobSpec = serde_json::from_value(serde_json::json!({
        "custom_id": "stranded-1",
        "request": {"model": "fast", "messages": [{"role": "user", "content": prompt("stranded")}]}
    }))
    .unwrap();
    let envelope = sluice::job::Envelope::new("acme", spec);
    h.app
        .store
        .insert_jobs(vec![envelope.clone()])
        .await
        .unwrap();
    // Too young to be called stranded: it may still be waiting for its confirm.
    assert_eq!(
        submitter
            .relay_stranded(Duration::from_secs(60))
            .await
            .unwrap(),
        0
    );

    assert_eq!(submitter.relay_stranded(Duration::ZERO).await.unwrap(), 1);
    let job = h.wait(envelope.id).await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    assert_eq!(
        submitter.relay_stranded(Duration::ZERO).await.unwrap(),
        0,
        "relayed once"
    );
    assert_eq!(h.count("SELECT COUNT(*) FROM costs").await, 2);
    h.stop().await;
}

/// Waits until a dead letter's reason contains `expected` (true), or until `ran` finds the job
/// in the store (false): whichever the worker did with the message. Bounded, so a worker
/// that does neither fails the test.
async fn dead_lettered_or_ran(h: &Harness, backend: Backend, expected: &str, ran: &str) -> bool {
    let mut reasons = Vec::new();
    common::eventually(
        "the message to be dead-lettered or run",
        Duration::from_secs(30),
        async || {
            reasons.extend(dead_letter_reasons(h, backend).await);
            if reasons.iter().any(|r| r.contains(expected)) {
                return Ok(true);
            }
            if h.count(ran).await > 0 {
                return Ok(false);
            }
            Err(format!("dead letters: {reasons:?}"))
        },
    )
    .await
}

/// A message Sluice published for a job it had recorded (`"recorded": true`) is never
/// recorded again from the message when its row is missing: the job was refused, and the
/// producer was told so.
async fn a_message_of_a_recorded_job_without_its_row_is_dead_lettered_not_run(backend: Backend) {
    let h = Harness::start(backend).await;
    let id = uuid::Uuid::now_v7();
    let text = prompt("recorded elsewhere");
    let envelope = format!(
        r#"{{"version": 1, "id": "{id}", "tenant": "acme", "recorded": true,
            "request": {{"model": "fast", "messages": [{{"role": "user", "content": "{text}"}}]}}}}"#
    );
    publish_raw(&h, backend, envelope.into_bytes()).await;
    let dead = dead_lettered_or_ran(
        &h,
        backend,
        &format!("job {id} was recorded by Sluice"),
        &format!("SELECT COUNT(*) FROM jobs WHERE id = '{id}'"),
    )
    .await;
    assert!(dead, "the job was recorded from its message");
    assert_eq!(h.count("SELECT COUNT(*) FROM jobs").await, 0);
    assert_eq!(h.sim_requests(), 0, "nothing was called");
    h.stop().await;
}

/// A TCP proxy to the test broker that can hold back everything the client sends: the bytes
/// sit in the socket and reach the broker once the stall ends, as a publish does when the
/// broker's memory alarm blocks publishers and lifts after the publisher gave up.
struct StallingProxy {
    url: String,
    stalled: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl StallingProxy {
    async fn start() -> StallingProxy {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stalled, watch) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut watch = watch.clone();
                tokio::spawn(async move {
                    let Ok(broker) = tokio::net::TcpStream::connect("127.0.0.1:5672").await else {
                        return;
                    };
                    let (mut from_client, mut to_client) = client.into_split();
                    let (mut from_broker, mut to_broker) = broker.into_split();
                    let up = async move {
                        let mut buffer = vec![0u8; 64 * 1024];
                        while let Ok(n @ 1..) = from_client.read(&mut buffer).await {
                            if watch.wait_for(|stalled| !stalled).await.is_err()
                                || to_broker.write_all(&buffer[..n]).await.is_err()
                            {
                                break;
                            }
                        }
                        let _ = to_broker.shutdown().await;
                    };
                    let down = async move {
                        let _ = tokio::io::copy(&mut from_broker, &mut to_client).await;
                        let _ = to_client.shutdown().await;
                    };
                    tokio::join!(up, down);
                });
            }
        });
        StallingProxy {
            url: format!("amqp://guest:guest@{address}/%2f"),
            stalled,
            task,
        }
    }

    fn stall(&self, stalled: bool) {
        self.stalled.send_replace(stalled);
    }
}

impl Drop for StallingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The publish of a submission is held past the publish timeout, and the broker takes the
/// message afterwards: the producer's 503 must be true (the late message is dead-lettered,
/// not run), and its retry with the same custom_id runs once and is charged once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_refused_for_a_late_confirm_never_runs_and_its_retry_runs_once() {
    let proxy = StallingProxy::start().await;
    let h = Harness::start_with(
        Backend::Rabbitmq,
        |config| {
            config.queue.url = Some(sluice::config::Secret::new(&proxy.url));
            config.queue.publish_timeout = Duration::from_millis(300);
        },
        true,
    )
    .await;
    let body = serde_json::json!({
        "custom_id": "late-1",
        "request": {"model": "fast", "messages": [{"role": "user", "content": prompt("late")}]}
    });

    proxy.stall(true);
    let response = reqwest::Client::new()
        .post(format!("{}/v1/jobs", h.base_url))
        .bearer_auth(common::TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(status, 503, "{answer}");
    proxy.stall(false);

    // The broker now takes the message that waited in the socket.
    let dead = dead_lettered_or_ran(
        &h,
        Backend::Rabbitmq,
        "was refused when it was submitted",
        "SELECT COUNT(*) FROM jobs WHERE custom_id = 'late-1'",
    )
    .await;
    assert!(dead, "the refused job was recorded from its late message");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("nothing was accepted and nothing will run")
            && message.contains("with the same custom_id (\"late-1\")"),
        "{message}"
    );
    assert_eq!(h.count("SELECT COUNT(*) FROM refused_jobs").await, 1);

    // The producer's retry, as the 503 told it.
    let id = h.submit_job(&body).await;
    assert_eq!(h.wait(id).await["status"], "succeeded");
    assert_eq!(h.count("SELECT COUNT(*) FROM jobs").await, 1);
    assert_eq!(
        h.count("SELECT COUNT(*) FROM costs").await,
        1,
        "charged once"
    );
    assert_eq!(h.sim_requests(), 1, "the provider was called once");
    h.stop().await;
}

/// Envelopes the documentation promises to refuse: each goes to the dead letters with a
/// reason naming its field, and none of them runs (before, each ran with a default).
async fn bad_envelopes_are_dead_lettered_naming_the_field_and_none_runs(backend: Backend) {
    let h = Harness::start(backend).await;
    let envelope = |extra: serde_json::Value, content: String| {
        let mut envelope = serde_json::json!({
            "version": 1, "id": uuid::Uuid::now_v7(), "tenant": "acme", "urgency": "standard",
            "request": {"model": "fast", "messages": [{"role": "user", "content": content}]}
        });
        envelope
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::to_vec(&envelope).unwrap()
    };
    let bad = [
        (
            Urgency::Standard,
            envelope(serde_json::json!({"urgancy": "realtime"}), prompt("typo")),
            "unknown field `urgancy`",
        ),
        (
            Urgency::Standard,
            envelope(serde_json::json!({}), "x".repeat(2_000_000)),
            "request: the envelope is",
        ),
        (
            Urgency::Realtime,
            envelope(serde_json::json!({}), prompt("wrong queue")),
            "urgency: \"standard\" differs from the routing key \"realtime\"",
        ),
    ];
    let expected: Vec<&str> = bad.iter().map(|(_, _, reason)| *reason).collect();
    for (urgency, payload, _) in bad {
        publish_raw_to(&h, backend, urgency, payload).await;
    }
    let mut reasons = Vec::new();
    common::eventually(
        "every bad message dead-lettered (or one run)",
        Duration::from_secs(30),
        async || {
            reasons.extend(dead_letter_reasons(&h, backend).await);
            reasons.sort();
            reasons.dedup();
            reasons.len() >= expected.len() || h.count("SELECT COUNT(*) FROM jobs").await > 0
        },
    )
    .await;
    assert_eq!(h.count("SELECT COUNT(*) FROM jobs").await, 0, "{reasons:?}");
    for expected in expected {
        assert!(
            reasons.iter().any(|r| r.contains(expected)),
            "{expected}: {reasons:?}"
        );
    }
    assert_eq!(h.sim_requests(), 0, "nothing was called");
    h.stop().await;
}
