//! `POST /v1/chat/completions` end to end, on each queue backend: an OpenAI-shaped request
//! becomes a realtime job, runs through the queue and a worker against the simulator over
//! HTTP, and comes back as OpenAI's `chat.completion`, with the job stored and charged.

use crate::common;

use common::{prompt, Backend, Harness, TOKEN};
use serde_json::{json, Value};

on_all_backends!(
    a_chat_completion_is_a_stored_and_charged_realtime_job,
    a_retried_upstream_failure_is_invisible_to_the_client,
    a_request_the_provider_refuses_is_a_400_with_its_message,
    an_idempotency_key_never_runs_a_request_twice,
    bad_requests_are_refused_before_any_job_exists,
    a_streamed_request_arrives_as_server_sent_chunks,
    a_stream_survives_a_retried_attempt_and_fails_cleanly_when_the_job_fails,
    a_stream_whose_worker_died_mid_answer_ends_with_an_error_not_a_second_answer,
    failures_the_client_caused_are_client_errors_the_sdks_do_not_retry,
);

/// The `data:` payloads of a server-sent event stream, in order.
async fn sse_data(response: reqwest::Response) -> Vec<String> {
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream",
        "a stream is served as server-sent events"
    );
    let text = response.text().await.unwrap();
    text.lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(|data| data.trim_start().to_string())
        .collect()
}

/// The text a stream's chunks add up to.
fn streamed_text(data: &[String]) -> String {
    data.iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter_map(|chunk| {
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

/// Posts `body` to `/v1/chat/completions` with the tenant's token and `headers`.
async fn post_chat(h: &Harness, body: &Value, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", h.base_url))
        .bearer_auth(TOKEN)
        .json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("the API answers")
}

fn job_id_of(response: &reqwest::Response) -> uuid::Uuid {
    response
        .headers()
        .get(sluice::api::JOB_ID_HEADER)
        .expect("the job id header")
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn a_chat_completion_is_a_stored_and_charged_realtime_job(backend: Backend) {
    let h = Harness::start(backend).await;
    let body = json!({
        "model": "fast",
        "messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": prompt("What is a lock keeper?")}
        ],
        "user": "u-42",
        "temperature": 0.2
    });
    let response = post_chat(&h, &body, &[("x-sluice-team", "docs")]).await;
    assert_eq!(response.status(), 200);
    let id = job_id_of(&response);
    let completion: Value = response.json().await.unwrap();
    assert_eq!(completion["object"], "chat.completion");
    assert_eq!(completion["id"], id.to_string(), "the answer names its job");
    assert_eq!(completion["choices"][0]["message"]["role"], "assistant");
    assert_eq!(completion["choices"][0]["finish_reason"], "stop");

    // The same job is pollable, final, realtime, tagged and charged for exactly this usage.
    let job = h.client.get(id, None).await.unwrap();
    assert_eq!(job["status"], "succeeded", "{job:#}");
    assert_eq!(job["urgency"], "realtime");
    assert_eq!(job["tags"]["user"], "u-42");
    assert_eq!(job["tags"]["team"], "docs");
    assert_eq!(job["result"]["usage"], completion["usage"]);
    let (input, output) = (
        completion["usage"]["prompt_tokens"].as_i64().unwrap(),
        completion["usage"]["completion_tokens"].as_i64().unwrap(),
    );
    // gpt-4o-mini: $0.15 / $0.60 per million tokens = 150,000 / 600,000 pico-USD per token.
    assert_eq!(
        job["cost"]["amount_pico_usd"].as_i64().unwrap(),
        input * 150_000 + output * 600_000
    );
    // Unknown fields reached the provider.
    let sent = h.app.sim.as_ref().unwrap().requests();
    assert_eq!(sent.last().unwrap()["temperature"], 0.2);
    h.stop().await;
}

async fn a_retried_upstream_failure_is_invisible_to_the_client(backend: Backend) {
    let h = Harness::start(backend).await;
    let body = json!({
        "model": "fast",
        "messages": [{"role": "user", "content": prompt("[sim fail=429] hello")}]
    });
    let response = post_chat(&h, &body, &[]).await;
    assert_eq!(response.status(), 200);
    let id = job_id_of(&response);
    let job = h.client.get(id, None).await.unwrap();
    let attempts = job["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{job:#}");
    assert_eq!(attempts[0]["http_status"], 429);
    assert_eq!(h.count("SELECT COUNT(*) FROM costs").await, 1);
    h.stop().await;
}

async fn a_request_the_provider_refuses_is_a_400_with_its_message(backend: Backend) {
    let h = Harness::start(backend).await;
    let body = json!({
        "model": "fast",
        "messages": [{"role": "user", "content": prompt("[sim fail=400] hello")}]
    });
    let response = post_chat(&h, &body, &[]).await;
    assert_eq!(response.status(), 400);
    let id = job_id_of(&response);
    let error: Value = response.json().await.unwrap();
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("bad_request"), "{message}");
    assert!(
        message.contains(&id.to_string()),
        "the message names the job: {message}"
    );
    let job = h.client.get(id, None).await.unwrap();
    assert_eq!(job["status"], "failed");
    assert_eq!(job["attempts"].as_array().unwrap().len(), 1, "not retried");
    // OpenAI's error object shape, so OpenAI SDKs read it.
    assert!(error["error"].get("param").is_some() && error["error"].get("code").is_some());
    assert_eq!(
        error["error"]["param"],
        Value::Null,
        "this refusal blames no parameter"
    );

    // A refusal naming its parameter (the simulator's, like OpenAI's: `n` over 128) hands the
    // name on in `param`, plain or streamed, and the job keeps it.
    for stream in [false, true] {
        let body = json!({
            "model": "fast",
            "n": 129,
            "stream": stream,
            "messages": [{"role": "user", "content": prompt("too many answers")}]
        });
        let response = post_chat(&h, &body, &[]).await;
        assert_eq!(response.status(), 400, "stream: {stream}");
        let id = job_id_of(&response);
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["param"], "n", "stream: {stream}: {error}");
        let job = h.client.get(id, None).await.unwrap();
        assert_eq!(job["error"]["param"], "n", "{job}");
    }
    h.stop().await;
}

async fn an_idempotency_key_never_runs_a_request_twice(backend: Backend) {
    let h = Harness::start(backend).await;
    let body = json!({
        "model": "fast",
        "messages": [{"role": "user", "content": prompt("once only")}]
    });
    let first = post_chat(&h, &body, &[("idempotency-key", "order-17")]).await;
    assert_eq!(first.status(), 200);
    let calls = h.sim_requests();
    let second = post_chat(&h, &body, &[("idempotency-key", "order-17")]).await;
    assert_eq!(second.status(), 200);
    assert_eq!(job_id_of(&first), job_id_of(&second));
    let (a, b): (Value, Value) = (first.json().await.unwrap(), second.json().await.unwrap());
    assert_eq!(a, b, "the second answer is the first job's");
    assert_eq!(h.sim_requests(), calls, "the provider was not called again");
    assert_eq!(h.count("SELECT COUNT(*) FROM jobs").await, 1);

    // The same key with another question is refused, not answered with the first's answer.
    let other = json!({
        "model": "fast",
        "messages": [{"role": "user", "content": prompt("something else entirely")}]
    });
    let third = post_chat(&h, &other, &[("idempotency-key", "order-17")]).await;
    assert_eq!(third.status(), 409);
    // OpenAI's SDKs retry a 409 unless told not to; this one conflicts every time.
    assert_eq!(third.headers()["x-should-retry"], "false");
    let error: Value = third.json().await.unwrap();
    assert_eq!(error["error"]["type"], "idempotency_conflict", "{error}");
    assert_eq!(
        error["error"]["existing_job"],
        job_id_of_value(&a),
        "{error}"
    );
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("idempotency-key"),
        "{error}"
    );
    assert_eq!(h.count("SELECT COUNT(*) FROM jobs").await, 1);
    h.stop().await;
}

/// The job id a `chat.completion` answer carries as its `id`.
fn job_id_of_value(answer: &Value) -> Value {
    answer["id"].clone()
}

async fn bad_requests_are_refused_before_any_job_exists(backend: Backend) {
    let h = Harness::start(backend).await;
    let cases = [
        (
            json!({"model": "fast", "messages": "hi"}),
            400,
            "messages",
            "invalid type",
        ),
        // An unknown model is OpenAI's 404 `model_not_found`, as a job failing on one is.
        (
            json!({"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]}),
            404,
            "model",
            "gpt-9",
        ),
    ];
    for (body, status, field, needle) in cases {
        let response = post_chat(&h, &body, &[]).await;
        assert_eq!(response.status(), status, "{body}");
        let error: Value = response.json().await.unwrap();
        let param = error["error"]["param"].as_str().unwrap_or_default();
        assert!(param.ends_with(field), "{field} vs {error:#}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{needle} vs {message}");
        if status == 404 {
            assert_eq!(error["error"]["code"], "model_not_found", "{error:#}");
        }
    }
    let unauthenticated = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", h.base_url))
        .json(&json!({"model": "fast", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);
    assert_eq!(h.count("SELECT COUNT(*) FROM jobs").await, 0);
    h.stop().await;
}

async fn a_streamed_request_arrives_as_server_sent_chunks(backend: Backend) {
    let h = Harness::start(backend).await;
    // One route per API family: OpenAI, Anthropic, Gemini.
    for model in ["fast", "writer", "flash"] {
        let messages = json!([{"role": "user", "content": prompt("Stream me a river, please.")}]);
        let response = post_chat(
            &h,
            &json!({"model": model, "stream": true, "messages": messages,
                    "stream_options": {"include_usage": true}}),
            &[],
        )
        .await;
        assert_eq!(response.status(), 200, "{model}");
        let id = job_id_of(&response);
        let data = sse_data(response).await;
        assert_eq!(data.last().unwrap(), "[DONE]", "{model}: {data:?}");
        let chunks: Vec<Value> = data[..data.len() - 1]
            .iter()
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        assert!(chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk" && c["id"] == id.to_string()));
        let content_chunks = chunks
            .iter()
            .filter(|c| c["choices"][0]["delta"]["content"].is_string())
            .count();
        assert!(
            content_chunks > 1,
            "{model}: the provider's pieces arrive as they come, not as one replayed answer"
        );

        // The stream adds up to the stored answer, and its usage is the charged usage.
        let job = h.client.get(id, None).await.unwrap();
        assert_eq!(job["status"], "succeeded", "{model}: {job:#}");
        let stored = job["result"]["choices"][0]["message"]["content"]
            .as_str()
            .unwrap();
        assert_eq!(streamed_text(&data), stored, "{model}");
        let usage = chunks.iter().rev().find(|c| !c["usage"].is_null()).unwrap();
        for count in ["prompt_tokens", "completion_tokens", "total_tokens"] {
            assert_eq!(
                usage["usage"][count], job["result"]["usage"][count],
                "{model}: {count}"
            );
        }
        assert_eq!(
            job["cost"]["input_tokens"], usage["usage"]["prompt_tokens"],
            "{model}: charged for what streamed"
        );
        assert_eq!(
            chunks
                .iter()
                .filter_map(|c| c["choices"][0]["finish_reason"].as_str())
                .collect::<Vec<_>>(),
            ["stop"],
            "{model}"
        );

        // Without `stream_options.include_usage`, OpenAI sends no usage chunk (it has no
        // choices, and clients read `choices[0]` of every chunk) and no `usage` field: the
        // same answer streams, and the job is still charged for its usage.
        let plain = post_chat(
            &h,
            &json!({"model": model, "stream": true, "messages": messages}),
            &[],
        )
        .await;
        assert_eq!(plain.status(), 200, "{model}");
        let plain_id = job_id_of(&plain);
        let plain_data = sse_data(plain).await;
        assert_eq!(plain_data.last().unwrap(), "[DONE]", "{model}");
        for data in &plain_data[..plain_data.len() - 1] {
            let chunk: Value = serde_json::from_str(data).unwrap();
            assert!(
                chunk["choices"].as_array().is_some_and(|c| !c.is_empty()),
                "{model}: a chunk without choices: {chunk}"
            );
            assert!(chunk.get("usage").is_none(), "{model}: {chunk}");
        }
        assert_eq!(streamed_text(&plain_data), stored, "{model}");
        let plain_job = h.client.get(plain_id, None).await.unwrap();
        assert!(
            plain_job["cost"]["input_tokens"].as_i64().unwrap() > 0,
            "{model}: {plain_job:#}"
        );
    }
    h.stop().await;
}

async fn a_stream_survives_a_retried_attempt_and_fails_cleanly_when_the_job_fails(
    backend: Backend,
) {
    let h = Harness::start(backend).await;
    // A 500 first: the client never sees that attempt, only the retry's answer.
    let retried = post_chat(
        &h,
        &json!({"model": "fast", "stream": true,
                "messages": [{"role": "user", "content": prompt("[sim fail=500] again")}]}),
        &[],
    )
    .await;
    assert_eq!(retried.status(), 200);
    let id = job_id_of(&retried);
    let data = sse_data(retried).await;
    assert_eq!(data.last().unwrap(), "[DONE]");
    assert!(!streamed_text(&data).is_empty());
    let job = h.client.get(id, None).await.unwrap();
    assert_eq!(job["attempts"].as_array().unwrap().len(), 2);

    // An attempt that breaks after its first chunks cannot be taken back: the client's
    // stream ends with an error naming the job, which carries on and succeeds.
    let broken = post_chat(
        &h,
        &json!({"model": "fast", "stream": true,
                "messages": [{"role": "user", "content": prompt("[sim fail=midstream] a long answer please")}]}),
        &[],
    )
    .await;
    assert_eq!(broken.status(), 200);
    let id = job_id_of(&broken);
    let data = sse_data(broken).await;
    assert!(!data.iter().any(|d| d == "[DONE]"), "{data:?}");
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    let message = last["error"]["message"].as_str().unwrap();
    assert!(message.contains(&id.to_string()), "{message}");
    assert!(
        data.len() > 1,
        "some chunks came before the error: {data:?}"
    );
    let job = h.wait(id).await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    assert_eq!(job["attempts"].as_array().unwrap().len(), 2);
    assert_eq!(
        h.count(&format!("SELECT COUNT(*) FROM costs WHERE job_id = '{id}'"))
            .await,
        1
    );

    // A request the provider refuses fails before any chunk: a plain error, not a stream.
    let refused = post_chat(
        &h,
        &json!({"model": "fast", "stream": true,
                "messages": [{"role": "user", "content": prompt("[sim fail=400] no")}]}),
        &[],
    )
    .await;
    assert_eq!(refused.status(), 400);
    let error: Value = refused.json().await.unwrap();
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("bad_request"));
    h.stop().await;
}

/// A chunk of `text` as a worker relays it.
fn chunk(text: &str) -> Value {
    json!({"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 0,
        "model": "gpt-4o-mini", "choices": [{"index": 0,
        "delta": {"role": "assistant", "content": text}, "finish_reason": null}]})
}

/// A worker that dies mid-answer sends no failure: the job's next delivery, on another
/// worker, streams its own answer from the start to the same client. The client's stream must
/// end with an error at that second answer's first chunk, never carry it spliced onto the
/// first and close with `[DONE]`. The two workers' events go through the backend's real
/// reply transport, sent here as the two deliveries send them (a worker killed inside a call
/// cannot be staged in one process); no worker runs, so the job stays queued meanwhile.
async fn a_stream_whose_worker_died_mid_answer_ends_with_an_error_not_a_second_answer(
    backend: Backend,
) {
    let h = Harness::start_with(backend, |_| {}, false).await;
    let base_url = h.base_url.clone();
    let client = tokio::spawn(async move {
        let response = reqwest::Client::new()
            .post(format!("{base_url}/v1/chat/completions"))
            .bearer_auth(TOKEN)
            .json(&json!({"model": "fast", "stream": true,
                "messages": [{"role": "user", "content": "tell me everything"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        sse_data(response).await
    });
    let id: uuid::Uuid = common::eventually(
        "the streamed job to be recorded",
        std::time::Duration::from_secs(10),
        async || {
            let ids: Vec<String> = sluice::with_pool!(h.app.store.pool(), pool => sqlx::query_scalar("SELECT id FROM jobs")
                .fetch_all(pool)
                .await
                .unwrap());
            ids.first().map(|id| id.parse().unwrap())
        },
    )
    .await;
    // Replies go to the process's address, the one every inbox of the API process shares.
    let address = h
        .app
        .queue
        .open_inbox(uuid::Uuid::now_v7())
        .await
        .unwrap()
        .address
        .clone();
    let send = |event: Value| {
        let queue = h.app.queue.clone();
        let address = address.clone();
        async move {
            queue
                .reply(&address, id, serde_json::to_vec(&event).unwrap())
                .await
                .unwrap()
        }
    };
    let (dead, next) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    send(json!({"event": "chunks", "from": dead, "chunks": [chunk("The first answer, ")]})).await;
    send(json!({"event": "chunks", "from": dead, "chunks": [chunk("cut short")]})).await;
    send(json!({"event": "chunks", "from": next, "chunks": [chunk("A second answer")]})).await;
    send(json!({"event": "chunks", "from": next, "chunks": [chunk(" from the start.")]})).await;
    send(json!({"event": "done"})).await;

    let data = client.await.unwrap();
    assert_eq!(
        streamed_text(&data[..data.len() - 1]),
        "The first answer, cut short"
    );
    assert!(!data.iter().any(|d| d == "[DONE]"), "{data:?}");
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    let message = last["error"]["message"].as_str().unwrap();
    assert!(message.contains(&id.to_string()), "{message}");
    h.stop().await;
}

/// A spent budget and a request larger than any key's tokens/min are the client's to fix: a
/// 5xx would make the OpenAI SDKs retry them (three jobs for one call), so they answer 402
/// `budget_exceeded` and 400 `over_limit`, plain or streamed, and the job view says the same.
async fn failures_the_client_caused_are_client_errors_the_sdks_do_not_retry(backend: Backend) {
    let h = Harness::start_with(
        backend,
        |config| {
            // Room for no job at all: every estimate is over a millionth of a dollar.
            config.budgets.push(sluice::budgets::BudgetConfig {
                name: "broke".into(),
                tenant: Some("acme".into()),
                user: None,
                team: Some("broke".into()),
                feature: None,
                period: sluice::budgets::Period::Day,
                limit_usd: "0.000001".into(),
                on_exceed: sluice::budgets::OnExceed::Reject,
                warn_at: Vec::new(),
            });
            for provider in config.providers.values_mut() {
                for key in &mut provider.keys {
                    key.tokens_per_minute = Some(1000);
                }
            }
        },
        true,
    )
    .await;
    for stream in [false, true] {
        let spent = json!({
            "model": "fast",
            "max_tokens": 16,
            "stream": stream,
            "messages": [{"role": "user", "content": prompt("hello")}]
        });
        let response = post_chat(&h, &spent, &[("x-sluice-team", "broke")]).await;
        assert_eq!(response.status(), 402, "stream: {stream}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["type"], "budget_exceeded", "{error}");
        assert_eq!(error["error"]["code"], "budget_exceeded", "{error}");

        let huge = json!({
            "model": "fast",
            "max_tokens": 5000,
            "stream": stream,
            "messages": [{"role": "user", "content": prompt("hello")}]
        });
        let response = post_chat(&h, &huge, &[]).await;
        assert_eq!(response.status(), 400, "stream: {stream}");
        let id = job_id_of(&response);
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
        assert_eq!(error["error"]["code"], "over_limit", "{error}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains("tokens_per_minute"), "{message}");
        // The job view classifies the failure as the endpoint answered it.
        let job = h.client.get(id, None).await.unwrap();
        assert_eq!(job["error"]["kind"], "over_limit", "{job:#}");
        assert_eq!(job["error"]["status"], 400, "{job:#}");
        assert_eq!(job["error"]["code"], "over_limit", "{job:#}");
    }

    // A key out of credit is a 429 `insufficient_quota`, which the SDKs would retry at once
    // (a new job each time) while the credit stays spent for hours: told not to.
    let spent_key = json!({
        "model": "fast",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": prompt("[sim fail=quota] hello")}]
    });
    let response = post_chat(&h, &spent_key, &[]).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["x-should-retry"], "false");
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "insufficient_quota", "{error}");
    h.stop().await;
}
