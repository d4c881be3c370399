//! The job loop end to end, on each queue backend: API → queue → worker → simulator over HTTP
//! → result, attempts and cost in the SQLite file → API.

use crate::common;

use common::{prompt, Backend, Harness};
use serde_json::json;
use sluice::client::ClientError;

on_all_backends!(
    a_job_runs_and_is_charged_exactly,
    a_429_then_success_is_two_attempts_and_one_charge,
    a_400_fails_at_once_with_the_providers_message,
    exhausted_retries_fail_with_the_last_error,
    a_duplicate_custom_id_returns_the_first_job,
    another_tenants_job_is_a_404,
    bad_input_is_rejected_naming_the_field,
    a_cancelled_job_never_runs,
    a_batch_of_jobs_all_complete_once,
);

async fn a_job_runs_and_is_charged_exactly(backend: Backend) {
    let h = Harness::start(backend).await;
    let id = h.submit("fast", &prompt("What is a sluice?")).await;
    let job = h.wait(id).await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    let result = &job["result"];
    assert_eq!(result["object"], "chat.completion");
    assert!(!result["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .is_empty());
    assert_eq!(job["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(job["attempts"][0]["outcome"], "ok");
    assert_eq!(job["attempts"][0]["deployment"], "gpt-4o-mini");

    // The cost, by hand: gpt-4o-mini is $0.15 in and $0.60 out per million tokens, which is
    // 150,000 and 600,000 pico-USD per token.
    let usage = &result["usage"];
    let (input, output) = (
        usage["prompt_tokens"].as_i64().unwrap(),
        usage["completion_tokens"].as_i64().unwrap(),
    );
    let expected = input * 150_000 + output * 600_000;
    assert_eq!(
        job["cost"]["amount_pico_usd"].as_i64().unwrap(),
        expected,
        "{job:#}"
    );
    assert_eq!(job["cost"]["input_tokens"].as_i64().unwrap(), input);
    assert_eq!(h.count("SELECT COUNT(*) FROM costs").await, 1);
    let row: (String, Option<String>, Option<String>) = sluice::with_pool!(h.app.store.pool(), pool => sqlx::query_as("SELECT tenant, team_tag, user_tag FROM costs")
            .fetch_one(pool)
            .await
            .unwrap());
    assert_eq!(
        row,
        ("acme".into(), Some("search".into()), Some("u1".into()))
    );
    h.stop().await;
}

async fn a_429_then_success_is_two_attempts_and_one_charge(backend: Backend) {
    let h = Harness::start(backend).await;
    let id = h.submit("fast", &prompt("[sim fail=429] Retry me")).await;
    let job = h.wait(id).await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    let attempts = job["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{job:#}");
    assert_eq!(attempts[0]["outcome"], "rate_limited");
    assert_eq!(attempts[0]["http_status"], 429);
    assert!(
        attempts[0]["retry_after_ms"].as_i64().unwrap() > 0,
        "retry-after was parsed"
    );
    assert_eq!(attempts[1]["outcome"], "ok");
    assert_eq!(h.count("SELECT COUNT(*) FROM costs").await, 1);
    assert_eq!(h.sim_requests(), 2);
    h.stop().await;
}

async fn a_400_fails_at_once_with_the_providers_message(backend: Backend) {
    let h = Harness::start(backend).await;
    let id = h.submit("fast", &prompt("[sim fail=400] Bad")).await;
    let job = h.wait(id).await;
    assert_eq!(job["status"], "failed", "{job:#}");
    assert_eq!(
        job["attempts"].as_array().unwrap().len(),
        1,
        "no retry of a client error"
    );
    assert_eq!(job["error"]["kind"], "bad_request");
    let message = job["error"]["message"].as_str().unwrap();
    let sim_message = job["attempts"][0]["error"].as_str().unwrap();
    assert!(
        !sim_message.is_empty() && message.contains(sim_message),
        "{job:#}"
    );
    assert_eq!(h.count("SELECT COUNT(*) FROM costs").await, 0);
    h.stop().await;
}

async fn exhausted_retries_fail_with_the_last_error(backend: Backend) {
    let h = Harness::start(backend).await; // max_attempts = 3 in tests
    let id = h
        .submit("fast", &prompt("[sim fail=500*] Always broken"))
        .await;
    let job = h.wait(id).await;
    assert_eq!(job["status"], "failed", "{job:#}");
    assert_eq!(job["attempts"].as_array().unwrap().len(), 3, "{job:#}");
    assert_eq!(job["error"]["kind"], "server_error");
    let message = job["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("gave up after 3 attempts; last error:"),
        "{message}"
    );
    assert!(message.contains("500"), "{message}");
    assert_eq!(h.sim_requests(), 3);
    h.stop().await;
}

async fn a_duplicate_custom_id_returns_the_first_job(backend: Backend) {
    let h = Harness::start(backend).await;
    let job = json!({
        "custom_id": "order-42",
        "request": {"model": "fast", "messages": [{"role": "user", "content": prompt("once")}]}
    });
    let first = h.client.submit(&job).await.unwrap();
    let second = h.client.submit(&job).await.unwrap();
    assert_eq!(first["id"], second["id"]);
    assert_eq!(first["duplicate"], false);
    assert_eq!(second["duplicate"], true);
    // A repeat answers with the first answer's status, 202, as an idempotency key replays
    // the original response elsewhere (Stripe), and says that it is a replay.
    let post = |body: serde_json::Value| {
        reqwest::Client::new()
            .post(format!("{}/v1/jobs", h.base_url))
            .bearer_auth(common::TOKEN)
            .json(&body)
            .send()
    };
    let repeat = post(job.clone()).await.unwrap();
    assert_eq!(repeat.status(), 202);
    assert_eq!(repeat.headers()["idempotent-replayed"], "true");
    let repeat: serde_json::Value = repeat.json().await.unwrap();
    assert_eq!(
        (&repeat["id"], &repeat["duplicate"]),
        (&first["id"], &json!(true))
    );
    let mut fresh = job.clone();
    fresh["custom_id"] = json!("order-44");
    let fresh = post(json!([job.clone(), fresh])).await.unwrap();
    assert_eq!(fresh.status(), 202);
    assert!(fresh.headers().get("idempotent-replayed").is_none());
    // The same custom_id from another tenant is another job.
    let theirs = h.other_client.submit(&job).await.unwrap();
    assert_ne!(theirs["id"], first["id"]);
    h.wait(first["id"].as_str().unwrap().parse().unwrap()).await;
    assert_eq!(
        h.count("SELECT COUNT(*) FROM jobs WHERE tenant = 'acme'")
            .await,
        2
    );

    // The same custom_id for a different request is refused, naming the job that holds it,
    // and so is an array that gives one custom_id two requests: nothing of it is recorded.
    let mut changed = job.clone();
    changed["request"]["messages"][0]["content"] = json!(prompt("twice?"));
    let refused = h.client.submit(&changed).await.unwrap_err().to_string();
    assert!(
        refused.contains("409") && refused.contains(first["id"].as_str().unwrap()),
        "{refused}"
    );
    let pair = json!([
        {"custom_id": "order-43", "request": {"model": "fast", "messages": [{"role": "user", "content": prompt("a")}]}},
        {"custom_id": "order-43", "request": {"model": "fast", "messages": [{"role": "user", "content": prompt("b")}]}},
    ]);
    let refused = h.client.submit(&pair).await.unwrap_err().to_string();
    assert!(refused.contains("order-43"), "{refused}");
    assert_eq!(
        h.count("SELECT COUNT(*) FROM jobs WHERE custom_id = 'order-43'")
            .await,
        0
    );
    h.stop().await;
}

async fn another_tenants_job_is_a_404(backend: Backend) {
    let h = Harness::start(backend).await;
    let id = h.submit("fast", &prompt("mine")).await;
    match h.other_client.get(id, None).await {
        Err(ClientError::Api { status: 404, .. }) => {}
        other => panic!("expected 404, got {other:?}"),
    }
    match h.other_client.cancel(id).await {
        Err(ClientError::Api { status: 404, .. }) => {}
        other => panic!("expected 404, got {other:?}"),
    }
    let no_token = reqwest::get(format!("{}/v1/jobs/{id}", h.base_url))
        .await
        .unwrap();
    assert_eq!(no_token.status(), 401);
    h.stop().await;
}

async fn bad_input_is_rejected_naming_the_field(backend: Backend) {
    let h = Harness::start(backend).await;
    let cases = [
        (
            json!({"request": {"model": "gpt-5", "messages": [{"role": "user", "content": "x"}]}}),
            "request.model",
            "unknown model \"gpt-5\"",
        ),
        (
            json!({"request": {"model": "fast", "messages": []}}),
            "request.messages",
            "at least one message",
        ),
        (
            json!({"request": {"model": "fast", "messages": [{"role": "wizard", "content": "x"}]}}),
            "request.messages[0].role",
            "unknown role",
        ),
        (
            json!({"urgency": "asap", "request": {"model": "fast", "messages": [{"role": "user", "content": "x"}]}}),
            "urgency",
            "unknown variant",
        ),
        (
            json!({"request": {"model": "fast", "stream": true, "messages": [{"role": "user", "content": "x"}]}}),
            "request.stream",
            "cannot stream",
        ),
        (
            json!([{"request": {"model": "fast", "messages": [{"role": "user", "content": "x"}]}}, {"request": {"model": "nope", "messages": [{"role": "user", "content": "x"}]}}]),
            "[1].request.model",
            "unknown model",
        ),
    ];
    for (body, field, needle) in cases {
        let response = reqwest::Client::new()
            .post(format!("{}/v1/jobs", h.base_url))
            .bearer_auth(common::TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let error: serde_json::Value = response.json().await.unwrap();
        assert_eq!(error["error"]["field"], field, "{error:#}");
        assert!(
            error["error"]["message"].as_str().unwrap().contains(needle),
            "{error:#}"
        );
    }
    assert_eq!(
        h.count("SELECT COUNT(*) FROM jobs").await,
        0,
        "nothing recorded on bad input"
    );
    h.stop().await;
}

async fn a_cancelled_job_never_runs(backend: Backend) {
    let mut h = Harness::start_with(backend, |_| {}, false).await;
    let id = h.submit("fast", &prompt("cancel me")).await;
    let cancelled = h.client.cancel(id).await.unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    h.start_workers();
    let witness = h.submit("fast", &prompt("after the cancelled one")).await;
    assert_eq!(h.wait(witness).await["status"], "succeeded");
    let job = h.client.get(id, None).await.unwrap();
    assert_eq!(job["status"], "cancelled");
    assert!(job["attempts"].as_array().unwrap().is_empty());
    assert_eq!(h.sim_requests(), 1, "only the witness reached the provider");
    h.stop().await;
}

async fn a_batch_of_jobs_all_complete_once(backend: Backend) {
    let h = Harness::start(backend).await;
    let jobs: Vec<_> = (0..200)
        .map(|i| (i, ["realtime", "standard", "batch"][i % 3]))
        .map(|(i, urgency)| json!({"urgency": urgency, "request": {"model": "fast", "messages": [{"role": "user", "content": prompt(&format!("job {i}"))}]}}))
        .collect();
    let ids = h.submit_all(&jobs).await;
    assert_eq!(ids.len(), 200);
    for id in &ids {
        assert_eq!(h.wait(*id).await["status"], "succeeded");
    }
    assert_eq!(h.count("SELECT COUNT(*) FROM costs").await, 200);
    assert_eq!(h.count("SELECT COUNT(*) FROM attempts").await, 200);
    assert_eq!(h.sim_requests(), 200);
    let total = h.app.store.total_cost().await.unwrap();
    let summed: i64 = h
        .count("SELECT SUM(input_tokens * input_price + output_tokens * output_price) FROM costs")
        .await;
    assert_eq!(total.0, summed);
    h.stop().await;
}
