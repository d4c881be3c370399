//! The batch tier through a whole Sluice (real queue, real SQLite file, the simulator's batch
//! APIs over HTTP), on both backends: batch jobs grouped into a few provider batches and
//! charged exactly half; a process stopped while its batch is in progress and started again
//! loses no result and answers none twice; an expired batch, errored items, a deadline the
//! batch would miss and a tight deadline all finish real-time, with the reason on the
//! attempt; a cancelled job in a provider batch is never answered or charged.

use crate::common;

use common::{with_batch_tier, Backend, Harness};
use serde_json::{json, Value};
use sluice::config::{Config, FlexTierConfig};
use std::time::Duration;
use uuid::Uuid;

on_all_backends!(
    a_thousand_batch_jobs_go_through_a_few_provider_batches_at_half_price,
    a_stopped_process_resumes_its_batches_and_answers_each_job_once,
    an_expired_batch_sends_its_jobs_realtime_before_their_deadline,
    errored_items_finish_through_the_fallback_deployment,
    a_batch_that_would_miss_a_deadline_is_cancelled_and_its_jobs_run_realtime,
    a_tight_deadline_runs_realtime_and_the_attempt_says_why,
    a_cancelled_job_in_a_provider_batch_is_never_answered,
    a_cancelled_bulk_cancels_its_provider_batch_upstream,
    standard_jobs_use_the_flex_tier_at_batch_prices_and_fall_back_on_its_429,
);

fn in_minutes(minutes: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::minutes(minutes)).to_rfc3339()
}

/// Submits `n` batch jobs on `model` in one request; `text(i)` is job i's prompt.
async fn submit_batch_jobs(
    h: &Harness,
    model: &str,
    n: usize,
    deadline: Option<String>,
    text: impl Fn(usize) -> String,
) -> Vec<Uuid> {
    let jobs: Vec<Value> = (0..n)
        .map(|i| {
            let mut job = json!({
                "urgency": "batch",
                "tags": {"team": "batch-test"},
                "request": {"model": model, "messages": [{"role": "user", "content": text(i)}]}
            });
            if let Some(deadline) = &deadline {
                job["deadline"] = json!(deadline);
            }
            job
        })
        .collect();
    let answer = h
        .client
        .submit(&Value::Array(jobs))
        .await
        .expect("accepted");
    answer["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().parse().unwrap())
        .collect()
}

async fn wait_all(h: &Harness, ids: &[Uuid]) -> Vec<Value> {
    let mut jobs = Vec::with_capacity(ids.len());
    for id in ids {
        jobs.push(h.wait(*id).await);
    }
    jobs
}

fn tiers(job: &Value) -> Vec<(String, String)> {
    job["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["tier"].as_str().unwrap().to_string(),
                a["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

async fn a_thousand_batch_jobs_go_through_a_few_provider_batches_at_half_price(backend: Backend) {
    let h = Harness::start_with(
        backend,
        |c| with_batch_tier(c, "gpt-4o-mini", 400, Duration::from_secs(1)),
        true,
    )
    .await;
    let ids = submit_batch_jobs(&h, "fast", 1000, None, |i| format!("classify ticket {i}")).await;
    let jobs = wait_all(&h, &ids).await;
    for job in &jobs {
        assert_eq!(job["status"], "succeeded", "{job:#}");
        assert_eq!(
            tiers(job),
            vec![("batch".to_string(), "ok".to_string())],
            "{job:#}"
        );
    }
    let batches = h.count("SELECT COUNT(*) FROM provider_batches").await;
    assert!(
        (3..=6).contains(&batches),
        "1000 jobs at 400 a batch made {batches} provider batches"
    );
    assert_eq!(
        h.count("SELECT COUNT(*) FROM provider_batches WHERE state = 'ended'")
            .await,
        batches
    );
    // Nothing went to the real-time endpoint.
    assert_eq!(h.sim_requests(), 0, "no real-time calls");
    // Every cost row is on the batch tier at the batch price: gpt-4o-mini's catalogue batch
    // price is exactly half its real-time price, so each amount is exactly half.
    assert_eq!(
        h.count("SELECT COUNT(*) FROM costs WHERE tier = 'batch'")
            .await,
        1000
    );
    assert_eq!(
        h.count("SELECT COUNT(*) FROM costs WHERE amount_pico_usd * 2 != realtime_amount_pico_usd OR amount_pico_usd = 0")
            .await,
        0
    );
    assert_eq!(
        h.count("SELECT COUNT(*) FROM costs WHERE input_price != 75000 OR output_price != 300000")
            .await,
        0,
        "charged at the catalogue's batch price"
    );
    let total = h.count("SELECT SUM(amount_pico_usd) FROM costs").await;
    let realtime = h
        .count("SELECT SUM(realtime_amount_pico_usd) FROM costs")
        .await;
    assert_eq!(total * 2, realtime);
    // The cost report shows the saving.
    let report = h.client.costs("by=tier").await.unwrap();
    let text = report.to_string();
    assert!(text.contains("batch"), "{report:#}");
    h.stop().await;
}

async fn a_stopped_process_resumes_its_batches_and_answers_each_job_once(backend: Backend) {
    // One simulator and one database outlive the two Sluice processes.
    let sim_config = sluice::sim::SimConfig {
        batch_turnaround: Duration::from_secs(4),
        ..Default::default()
    };
    let sim = sluice::sim::spawn(([127, 0, 0, 1], 0).into(), sim_config)
        .await
        .unwrap();
    // Both processes record in one store: a shared SQLite file, or one Postgres database.
    let shared = tempfile::tempdir().unwrap();
    let (shared_config, _postgres) = common::test_config_with_store(backend, shared.path()).await;
    let database = shared_config.server.database;
    let prefix = format!("sluice-test-{}", Uuid::now_v7());
    let tweak = |c: &mut Config| {
        with_batch_tier(c, "gpt-4o-mini", 1000, Duration::from_millis(500));
        c.server.database = database.clone();
        c.queue.prefix = prefix.clone();
        common::use_simulator(c, &sim);
    };
    let first = Harness::start_with(backend, tweak, true).await;
    let ids = submit_batch_jobs(&first, "fast", 50, None, |i| {
        format!("summarise report {i}")
    })
    .await;
    // Wait until the provider holds the batch, then stop the process mid-batch.
    first
        .wait_count(
            "SELECT COUNT(*) FROM provider_batches WHERE state = 'submitted'",
            1,
        )
        .await;
    assert_eq!(
        first.count("SELECT COUNT(*) FROM results").await,
        0,
        "stopped before results"
    );
    first.stop().await;

    let second = Harness::start_with(backend, tweak, true).await;
    let jobs = wait_all(&second, &ids).await;
    for job in &jobs {
        assert_eq!(job["status"], "succeeded", "{job:#}");
        assert_eq!(tiers(job), vec![("batch".to_string(), "ok".to_string())]);
    }
    assert_eq!(second.count("SELECT COUNT(*) FROM results").await, 50);
    assert_eq!(
        second.count("SELECT COUNT(*) FROM costs").await,
        50,
        "each job charged once"
    );
    assert_eq!(second.count("SELECT COUNT(*) FROM attempts").await, 50);
    assert_eq!(
        second.count("SELECT COUNT(*) FROM provider_batches").await,
        1,
        "resumed, not submitted again"
    );
    assert_eq!(sim.stats().chat_requests, 0, "no real-time calls");
    second.stop().await;
    sim.shutdown().await;
}

async fn an_expired_batch_sends_its_jobs_realtime_before_their_deadline(backend: Backend) {
    let h = Harness::start_with(
        backend,
        |c| {
            with_batch_tier(c, "gpt-4o-mini", 100, Duration::from_millis(500));
            // The provider's window closes long before its batch would finish.
            c.sim.batch_turnaround = Duration::from_secs(3600);
            c.sim.batch_window = Duration::from_secs(2);
        },
        true,
    )
    .await;
    let deadline = in_minutes(5);
    let ids = submit_batch_jobs(&h, "fast", 20, Some(deadline.clone()), |i| {
        format!("item {i}")
    })
    .await;
    let jobs = wait_all(&h, &ids).await;
    let deadline: chrono::DateTime<chrono::Utc> = deadline.parse().unwrap();
    for job in &jobs {
        assert_eq!(job["status"], "succeeded", "{job:#}");
        assert_eq!(
            tiers(job),
            vec![
                ("batch".to_string(), "expired".to_string()),
                ("realtime".to_string(), "ok".to_string())
            ],
            "{job:#}"
        );
        let finished: chrono::DateTime<chrono::Utc> =
            job["finished_at"].as_str().unwrap().parse().unwrap();
        assert!(finished < deadline);
        assert_eq!(job["cost"]["tier"], "realtime", "{job:#}");
    }
    assert_eq!(h.sim_requests(), 20, "each job ran real-time once");
    h.stop().await;
}

async fn errored_items_finish_through_the_fallback_deployment(backend: Backend) {
    let h = Harness::start_with(
        backend,
        |c| with_batch_tier(c, "gpt-4o", 1000, Duration::from_millis(500)),
        true,
    )
    .await;
    // `smart` is gpt-4o, then gpt-4o-mini: every 20th item errors in the batch.
    let ids = submit_batch_jobs(&h, "smart", 100, None, |i| {
        if i % 20 == 0 {
            format!("question {i} [sim batch=error]")
        } else {
            format!("question {i}")
        }
    })
    .await;
    let jobs = wait_all(&h, &ids).await;
    for (i, job) in jobs.iter().enumerate() {
        assert_eq!(job["status"], "succeeded", "{job:#}");
        if i % 20 == 0 {
            assert_eq!(
                tiers(job),
                vec![
                    ("batch".to_string(), "server_error".to_string()),
                    ("realtime".to_string(), "ok".to_string())
                ],
                "{job:#}"
            );
            assert_eq!(job["attempts"][1]["deployment"], "gpt-4o-mini", "{job:#}");
            assert_eq!(job["cost"]["tier"], "realtime");
        } else {
            assert_eq!(tiers(job), vec![("batch".to_string(), "ok".to_string())]);
            assert_eq!(job["cost"]["tier"], "batch");
        }
    }
    assert_eq!(
        h.sim_requests(),
        5,
        "only the 5 errored items ran real-time"
    );
    h.stop().await;
}

async fn a_batch_that_would_miss_a_deadline_is_cancelled_and_its_jobs_run_realtime(
    backend: Backend,
) {
    let h = Harness::start_with(
        backend,
        |c| {
            with_batch_tier(c, "gpt-4o-mini", 100, Duration::from_millis(500));
            c.deployments
                .get_mut("gpt-4o-mini")
                .unwrap()
                .batch
                .as_mut()
                .unwrap()
                .turnaround = Duration::from_secs(2);
            // The provider is slow today; the jobs' deadline is 20 s away, and the batch is
            // given up 15 s before it.
            c.sim.batch_turnaround = Duration::from_secs(3600);
            c.batch.realtime_reserve = Duration::from_secs(15);
            c.batch.safety_margin = Duration::from_secs(16);
        },
        true,
    )
    .await;
    let deadline = (chrono::Utc::now() + chrono::Duration::seconds(20)).to_rfc3339();
    let ids = submit_batch_jobs(&h, "fast", 10, Some(deadline), |i| {
        format!("urgent-ish {i}")
    })
    .await;
    let jobs = wait_all(&h, &ids).await;
    for job in &jobs {
        assert_eq!(job["status"], "succeeded", "{job:#}");
        assert_eq!(
            tiers(job),
            vec![
                ("batch".to_string(), "abandoned".to_string()),
                ("realtime".to_string(), "ok".to_string())
            ],
            "{job:#}"
        );
        let why = job["attempts"][0]["error"].as_str().unwrap();
        assert!(why.contains("would miss a deadline"), "{why}");
    }
    assert_eq!(
        h.count("SELECT COUNT(*) FROM provider_batches WHERE state = 'cancelled'")
            .await,
        1
    );
    h.stop().await;
}

async fn a_tight_deadline_runs_realtime_and_the_attempt_says_why(backend: Backend) {
    let h = Harness::start_with(
        backend,
        |c| with_batch_tier(c, "gpt-4o-mini", 100, Duration::from_millis(500)),
        true,
    )
    .await;
    // 10 s turnaround + 6 s margin do not fit in 12 s.
    let deadline = (chrono::Utc::now() + chrono::Duration::seconds(12)).to_rfc3339();
    let ids = submit_batch_jobs(&h, "fast", 1, Some(deadline), |_| "now-ish".into()).await;
    let job = h.wait(ids[0]).await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    assert_eq!(
        tiers(&job),
        vec![("realtime".to_string(), "ok".to_string())]
    );
    let why = job["attempts"][0]["chosen_because"].as_str().unwrap();
    assert!(why.contains("too close for the batch tier"), "{why}");
    assert_eq!(h.count("SELECT COUNT(*) FROM provider_batches").await, 0);
    h.stop().await;
}

async fn a_cancelled_job_in_a_provider_batch_is_never_answered(backend: Backend) {
    let h = Harness::start_with(
        backend,
        |c| {
            with_batch_tier(c, "gpt-4o-mini", 100, Duration::from_millis(500));
            c.sim.batch_turnaround = Duration::from_secs(3);
        },
        true,
    )
    .await;
    let ids = submit_batch_jobs(&h, "fast", 4, None, |i| format!("maybe {i}")).await;
    // Wait until all four sit in a provider batch, then cancel one.
    h.wait_count("SELECT COUNT(*) FROM batch_items", 4).await;
    let cancelled = h.client.cancel(ids[0]).await.unwrap();
    assert_eq!(cancelled["status"], "cancelled", "{cancelled:#}");
    let jobs = wait_all(&h, &ids).await;
    assert_eq!(jobs[0]["status"], "cancelled");
    assert!(jobs[0]["result"].is_null(), "{:#}", jobs[0]);
    for job in &jobs[1..] {
        assert_eq!(job["status"], "succeeded", "{job:#}");
    }
    // Wait for the batch to end, then check the cancelled job stayed unanswered.
    h.wait_count(
        "SELECT COUNT(*) FROM provider_batches WHERE state IN ('ended', 'cancelled')",
        1,
    )
    .await;
    let job = h.wait(ids[0]).await;
    assert_eq!(job["status"], "cancelled");
    assert_eq!(h.count("SELECT COUNT(*) FROM costs").await, 3);
    assert_eq!(h.count("SELECT COUNT(*) FROM results").await, 3);
    h.stop().await;
}

async fn a_cancelled_bulk_cancels_its_provider_batch_upstream(backend: Backend) {
    let h = Harness::start_with(
        backend,
        |c| {
            with_batch_tier(c, "gpt-4o-mini", 100, Duration::from_millis(300));
            c.sim.batch_turnaround = Duration::from_secs(3600);
        },
        true,
    )
    .await;
    let body: String = (0..3)
        .map(|i| {
            format!(
                "{}\n",
                json!({"custom_id": format!("line-{i}"), "body": {"model": "fast", "messages": [{"role": "user", "content": format!("row {i}")}]}})
            )
        })
        .collect();
    let request = sluice::bulk::wire::BulkRequest {
        name: Some("cancel-me".into()),
        defaults: sluice::bulk::Defaults::default(),
        skip_invalid: false,
    };
    let submission = h
        .client
        .bulk_submit(&request, reqwest::Body::from(body), &mut |_, _| {})
        .await
        .unwrap();
    h.wait_count(
        "SELECT COUNT(*) FROM provider_batches WHERE state = 'submitted'",
        1,
    )
    .await;
    h.client.bulk_cancel(submission.id).await.unwrap();
    h.wait_count(
        "SELECT COUNT(*) FROM provider_batches WHERE state = 'cancelled'",
        1,
    )
    .await;
    // The provider was told.
    let provider_id: String = sluice::with_pool!(h.app.store.pool(), pool => sqlx::query_scalar("SELECT provider_batch_id FROM provider_batches")
        .fetch_one(pool)
        .await
        .unwrap());
    let sim = h.app.sim.as_ref().unwrap();
    let upstream: Value = reqwest::Client::new()
        .get(format!("{}/batches/{provider_id}", sim.openai_base_url()))
        .bearer_auth("sk-sim-1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        matches!(
            upstream["status"].as_str(),
            Some("cancelling" | "cancelled")
        ),
        "{upstream:#}"
    );
    assert_eq!(
        h.count("SELECT COUNT(*) FROM jobs WHERE status = 'cancelled'")
            .await,
        3
    );
    assert_eq!(h.count("SELECT COUNT(*) FROM costs").await, 0);
    h.stop().await;
}

async fn standard_jobs_use_the_flex_tier_at_batch_prices_and_fall_back_on_its_429(
    backend: Backend,
) {
    let h = Harness::start_with(
        backend,
        |c| {
            c.deployments.get_mut("gpt-4o-mini").unwrap().flex = Some(FlexTierConfig {
                price: None,
                timeout: Duration::from_secs(30),
            });
            c.batch.safety_margin = Duration::from_secs(6);
            c.batch.realtime_reserve = Duration::from_secs(5);
        },
        true,
    )
    .await;
    let submit = |text: &'static str, deadline: Option<i64>| {
        let mut job = json!({
            "urgency": "standard",
            "request": {"model": "fast", "messages": [{"role": "user", "content": text}]}
        });
        if let Some(seconds) = deadline {
            job["deadline"] =
                json!((chrono::Utc::now() + chrono::Duration::seconds(seconds)).to_rfc3339());
        }
        let client = h.client.clone();
        async move {
            let answer = client.submit(&job).await.unwrap();
            answer["id"].as_str().unwrap().parse::<Uuid>().unwrap()
        }
    };
    let flexible = submit("no hurry", None).await;
    let unavailable = submit("no hurry either [sim fail=429]", Some(600)).await;
    let tight = submit("soon", Some(20)).await;

    // Flex: the default endpoint called with service_tier "flex", charged the batch price.
    let job = h.wait(flexible).await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    assert_eq!(
        tiers(&job),
        vec![("realtime".to_string(), "ok".to_string())]
    );
    let why = job["attempts"][0]["chosen_because"].as_str().unwrap();
    assert!(why.starts_with("flex tier: no deadline"), "{why}");
    assert_eq!(job["cost"]["tier"], "flex", "{job:#}");
    assert_eq!(job["cost"]["input_price_per_mtok"], "0.075000", "{job:#}");
    assert_eq!(job["cost"]["output_price_per_mtok"], "0.300000", "{job:#}");

    // Flex answered 429: the next attempt takes the default tier, at the default price.
    let job = h.wait(unavailable).await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    assert_eq!(
        tiers(&job),
        vec![
            ("realtime".to_string(), "rate_limited".to_string()),
            ("realtime".to_string(), "ok".to_string())
        ],
        "{job:#}"
    );
    let first = job["attempts"][0]["chosen_because"].as_str().unwrap();
    assert!(first.starts_with("flex tier: the deadline is"), "{first}");
    let second = job["attempts"][1]["chosen_because"].as_str().unwrap();
    assert!(!second.contains("flex"), "{second}");
    assert_eq!(job["cost"]["tier"], "realtime", "{job:#}");
    assert_eq!(job["cost"]["input_price_per_mtok"], "0.150000", "{job:#}");

    // 20 s do not leave a 30 s flex call + 6 s margin: the default tier from the start.
    let job = h.wait(tight).await;
    assert_eq!(job["cost"]["tier"], "realtime", "{job:#}");
    assert!(job["attempts"][0]["chosen_because"]
        .as_str()
        .unwrap()
        .starts_with("priority"));

    // What the provider was sent.
    let sent = h.app.sim.as_ref().unwrap().requests();
    let flex_calls = sent
        .iter()
        .filter(|body| body["service_tier"] == "flex")
        .count();
    assert_eq!(
        flex_calls, 2,
        "the flexible job and the first call of the unavailable one"
    );
    h.stop().await;
}
