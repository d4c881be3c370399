//! Prometheus metrics through a whole Sluice on every backend: real jobs run, `GET /metrics`
//! scraped over HTTP and parsed, and each counter checked against what happened (jobs by
//! status and failure kind, attempts by outcome) or against the store's own records (cost
//! and tokens equal the cost rows' sums, to the pico-dollar); the queue gauges over a backlog
//! and after it drains; no secret anywhere in the text. Then the built binary: `sluice serve`
//! with `metrics_listen` (and JSON logs from its `[telemetry]` section) and `sluice worker`
//! scraped on that listener.

use crate::common;

use common::serve::Served;
use common::{eventually, prompt, Backend, Harness, TOKEN};
use prometheus_parse::{Scrape, Value};
use serde_json::json;
use sluice::budgets::Period;
use sluice::config::{BudgetConfig, OnExceed};
use std::time::Duration;

on_all_backends!(
    jobs_move_the_counters_by_exactly_what_happened,
    a_backlog_shows_in_the_queue_gauges_until_it_drains,
);

/// The built-in configuration's operator token, which the test configurations keep.
const OPERATOR_TOKEN: &str = "sk-sluice-operator";

/// `GET /metrics` on the API's `base_url`, as the operator: the text, and the text parsed.
async fn scrape(base_url: &str) -> (String, Scrape) {
    scrape_with(base_url, Some(OPERATOR_TOKEN)).await
}

/// `GET /metrics` on `base_url` with `token` as the bearer, if any: the answer.
async fn get_metrics(base_url: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(format!("{base_url}/metrics"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

/// `GET /metrics` on `base_url` with `token` as the bearer, if any: the text, and the text
/// parsed.
async fn scrape_with(base_url: &str, token: Option<&str>) -> (String, Scrape) {
    let answer = get_metrics(base_url, token).await;
    assert_eq!(answer.status(), 200);
    let content_type = answer.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = answer.text().await.unwrap();
    let parsed = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    (text, parsed)
}

/// The sum of every sample of `metric` whose labels include `labels` (a histogram's
/// `_count` and `_sum` are samples of their own names).
fn sum(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .map(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            _ => panic!("{metric} is not a plain sample"),
        })
        .sum()
}

/// Whether `scrape` has any sample of `metric`.
fn has(scrape: &Scrape, metric: &str) -> bool {
    scrape.samples.iter().any(|s| s.metric == metric)
}

fn standard(text: &str) -> serde_json::Value {
    json!({
        "urgency": "standard",
        "tags": {"team": "search", "user": "u1"},
        "request": {"model": "fast", "messages": [{"role": "user", "content": text}]}
    })
}

/// Three plain answers, one after a 429 and one 400: five jobs submitted, four succeeded,
/// one failed `bad_request`; six attempts; the cost and token counters equal the cost rows.
async fn jobs_move_the_counters_by_exactly_what_happened(backend: Backend) {
    let h = Harness::start_with(
        backend,
        |config| {
            config.budgets.push(BudgetConfig {
                name: "acme-daily".into(),
                tenant: Some("acme".into()),
                user: None,
                team: None,
                feature: None,
                period: Period::Day,
                limit_usd: "10.00".into(),
                on_exceed: OnExceed::Reject,
                warn_at: vec!["0.8".into()],
            });
        },
        true,
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            h.submit_job(&standard(&prompt(&format!("plain {i}"))))
                .await,
        );
    }
    ids.push(
        h.submit_job(&standard(&prompt("[sim fail=429] after a retry")))
            .await,
    );
    ids.push(
        h.submit_job(&standard(&prompt("[sim fail=400] refused")))
            .await,
    );
    for id in &ids {
        h.wait(*id).await;
    }

    // The API's port answers the operator alone: the metrics name every tenant's spend.
    for token in [None, Some(TOKEN)] {
        let refused = get_metrics(&h.base_url, token).await;
        assert_eq!(refused.status(), 401, "{token:?}");
        assert!(!refused.text().await.unwrap().contains("sluice_"));
    }
    let (text, m) = scrape(&h.base_url).await;
    let acme = [
        ("tenant", "acme"),
        ("urgency", "standard"),
        ("route", "fast"),
    ];
    assert_eq!(sum(&m, "sluice_jobs_submitted_total", &acme), 5.0, "{text}");
    let finished = |status: &str, kind: &str| {
        let mut labels = acme.to_vec();
        labels.extend([("status", status), ("failure_kind", kind)]);
        sum(&m, "sluice_jobs_finished_total", &labels)
    };
    assert_eq!(finished("succeeded", ""), 4.0, "{text}");
    assert_eq!(finished("failed", "bad_request"), 1.0, "{text}");
    assert_eq!(sum(&m, "sluice_jobs_finished_total", &[]), 5.0, "{text}");

    let attempts = |outcome: &str| {
        let labels = [
            ("deployment", "gpt-4o-mini"),
            ("tier", "realtime"),
            ("outcome", outcome),
        ];
        sum(&m, "sluice_attempts_total", &labels)
    };
    assert_eq!(attempts("ok"), 4.0, "{text}");
    assert_eq!(attempts("rate_limited"), 1.0, "{text}");
    assert_eq!(attempts("bad_request"), 1.0, "{text}");
    let stored_attempts = h.count("SELECT COUNT(*) FROM attempts").await;
    assert_eq!(
        sum(&m, "sluice_attempts_total", &[]),
        stored_attempts as f64
    );
    assert_eq!(
        sum(
            &m,
            "sluice_jobs_parked_total",
            &[("urgency", "standard"), ("reason", "retry")]
        ),
        1.0,
        "{text}"
    );

    // Money and tokens: exactly the cost rows' sums.
    let cost = h.count("SELECT SUM(amount_pico_usd) FROM costs").await;
    assert!(cost > 0);
    let fast = [
        ("tenant", "acme"),
        ("route", "fast"),
        ("deployment", "gpt-4o-mini"),
    ];
    assert_eq!(
        sum(&m, "sluice_cost_picousd_total", &fast),
        cost as f64,
        "{text}"
    );
    assert_eq!(sum(&m, "sluice_cost_picousd_total", &[]), cost as f64);
    let input = h.count("SELECT SUM(input_tokens) FROM costs").await;
    let output = h.count("SELECT SUM(output_tokens) FROM costs").await;
    assert_eq!(
        sum(&m, "sluice_tokens_total", &[("type", "input")]),
        input as f64
    );
    assert_eq!(
        sum(&m, "sluice_tokens_total", &[("type", "output")]),
        output as f64
    );
    // The budget's spend as a fraction of its 10 USD (10^13 pico-USD).
    let spent = sum(
        &m,
        "sluice_budget_spent_ratio",
        &[("budget", "acme-daily"), ("tenant", "acme")],
    );
    assert!(
        (spent - cost as f64 / 1e13).abs() < 1e-12,
        "{spent} against {cost}: {text}"
    );
    assert_eq!(
        sum(
            &m,
            "sluice_budget_reserved_ratio",
            &[("budget", "acme-daily")]
        ),
        0.0
    );

    // Histograms: one duration per job, one call per attempt, one queue wait per first one.
    let durations = |name: &str| sum(&m, &format!("{name}_count"), &[]);
    assert_eq!(durations("sluice_job_duration_seconds"), 5.0, "{text}");
    assert_eq!(
        durations("sluice_provider_call_seconds"),
        stored_attempts as f64
    );
    assert_eq!(durations("sluice_job_queue_wait_seconds"), 5.0, "{text}");
    assert!(
        text.contains("sluice_provider_call_seconds_bucket{"),
        "{text}"
    );

    // Gauges, read at the scrape: nothing waits, the circuit is closed.
    for urgency in ["realtime", "standard", "batch"] {
        let urgency = [("urgency", urgency)];
        assert_eq!(
            sum(&m, "sluice_queue_oldest_job_age_seconds", &urgency),
            0.0
        );
        assert!(has(&m, "sluice_queue_ready_messages"), "{text}");
        assert_eq!(
            sum(&m, "sluice_queue_delayed_messages", &urgency),
            0.0,
            "{text}"
        );
    }
    let circuit = |state: &str| {
        sum(
            &m,
            "sluice_circuit_state",
            &[("deployment", "gpt-4o-mini"), ("state", state)],
        )
    };
    assert_eq!((circuit("closed"), circuit("open")), (1.0, 0.0), "{text}");
    assert!(
        text.contains("# HELP sluice_jobs_submitted_total "),
        "{text}"
    );

    // No secret: neither a provider key nor a tenant's token.
    let config = &h.app.config;
    let secrets = config
        .providers
        .values()
        .flat_map(|p| p.keys.iter().map(|k| k.secret.expose().to_string()))
        .chain(config.tenants.iter().map(|t| t.token.expose().to_string()))
        .chain(
            config
                .operators
                .iter()
                .map(|o| o.token.expose().to_string()),
        );
    for secret in secrets {
        assert!(!secret.is_empty());
        assert!(!text.contains(&secret), "a secret is in the metrics");
    }
    assert!(!text.contains(TOKEN));
    h.stop().await;
}

/// Jobs with no worker to take them show as ready messages and an oldest age, then both
/// fall back to zero once workers have run them.
async fn a_backlog_shows_in_the_queue_gauges_until_it_drains(backend: Backend) {
    let mut h = Harness::start_with(backend, |_| {}, false).await;
    let ids = h
        .submit_all(&[
            standard(&prompt("backlog 1")),
            standard(&prompt("backlog 2")),
            standard(&prompt("backlog 3")),
        ])
        .await;
    let base = h.base_url.clone();
    eventually(
        "three ready messages",
        Duration::from_secs(10),
        async || {
            let (text, m) = scrape(&base).await;
            match sum(
                &m,
                "sluice_queue_ready_messages",
                &[("urgency", "standard")],
            ) {
                3.0 => Ok(()),
                n => Err(format!("{n} ready: {text}")),
            }
        },
    )
    .await;
    let (text, m) = scrape(&base).await;
    let oldest = sum(
        &m,
        "sluice_queue_oldest_job_age_seconds",
        &[("urgency", "standard")],
    );
    assert!(oldest > 0.0 && oldest < 600.0, "{oldest}: {text}");
    assert_eq!(
        sum(
            &m,
            "sluice_queue_oldest_job_age_seconds",
            &[("urgency", "batch")]
        ),
        0.0
    );
    assert_eq!(sum(&m, "sluice_jobs_submitted_total", &[]), 3.0, "{text}");

    h.start_workers();
    for id in ids {
        h.wait(id).await;
    }
    eventually("an empty queue", Duration::from_secs(10), async || {
        let (text, m) = scrape(&base).await;
        let ready = sum(&m, "sluice_queue_ready_messages", &[]);
        let oldest = sum(&m, "sluice_queue_oldest_job_age_seconds", &[]);
        match (ready, oldest) {
            (0.0, 0.0) => Ok(()),
            _ => Err(format!("{ready} ready, oldest {oldest}: {text}")),
        }
    })
    .await;
    h.stop().await;
}

/// The example configuration on free ports and a temporary database, with `telemetry`
/// appended.
fn config_with(dir: &std::path::Path, telemetry: &str) -> std::path::PathBuf {
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/sluice.example.toml"))
            .unwrap();
    let database = dir.join("sluice.db");
    let text = example
        .replace("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1:0\"")
        .replace(
            "database = \"sluice.db\"",
            &format!("database = {:?}", database.to_str().unwrap()),
        );
    assert!(text.contains(":0\"") && !text.contains("\n[telemetry]"));
    let path = dir.join("sluice.toml");
    std::fs::write(&path, format!("{text}\n[telemetry]\n{telemetry}\n")).unwrap();
    path
}

/// `sluice serve` with `metrics_listen` and `metrics_on_api = false`: the metrics on their
/// own address only, the log in JSON as its `[telemetry]` says; then `sluice worker` on the
/// same file, scraped on its metrics listener.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_listen_serves_the_metrics_of_serve_and_of_a_worker() {
    let dir = tempfile::tempdir().unwrap();
    let path = config_with(
        dir.path(),
        "metrics_listen = \"127.0.0.1:0\"\nmetrics_on_api = false\nlog_format = \"json\"",
    );
    let log = dir.path().join("serve.log");
    let mut server = Served::start(&path, &[], &log).await;
    let metrics_url = format!("http://{}", server.address("serving metrics").await);
    let answer = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", server.base_url))
        .bearer_auth("sk-sluice-demo")
        .json(&json!({"model": "fast", "messages": [{"role": "user", "content": "Hello"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    // The metrics_listen address asks for no token.
    let (text, m) = scrape_with(&metrics_url, None).await;
    let demo = [
        ("tenant", "demo"),
        ("urgency", "realtime"),
        ("route", "fast"),
    ];
    assert_eq!(sum(&m, "sluice_jobs_submitted_total", &demo), 1.0, "{text}");
    assert_eq!(sum(&m, "sluice_jobs_finished_total", &demo), 1.0, "{text}");
    assert!(!text.contains("sk-sluice-demo"));
    // Not there at all, whoever asks.
    let on_api = get_metrics(&server.base_url, Some(OPERATOR_TOKEN)).await;
    assert_eq!(on_api.status(), 404, "metrics_on_api = false");
    // Every line of the log is a JSON object, with no colour code.
    let lines = server.log();
    assert!(lines.lines().count() >= 2, "{lines}");
    for line in lines.lines() {
        let event: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        assert!(event["fields"]["message"].is_string(), "{line}");
        assert!(!line.contains('\u{1b}'), "{line}");
    }
    server.kill().await;

    let mut worker = Served::start_worker(&path, &[], &dir.path().join("worker.log")).await;
    let worker_metrics = format!("http://{}", worker.address("serving metrics").await);
    let (text, m) = scrape_with(&worker_metrics, None).await;
    let closed = [("deployment", "gpt-4o-mini"), ("state", "closed")];
    assert_eq!(sum(&m, "sluice_circuit_state", &closed), 1.0, "{text}");
    assert_eq!(
        sum(
            &m,
            "sluice_queue_ready_messages",
            &[("urgency", "standard")]
        ),
        0.0
    );
    worker.kill().await;
}
