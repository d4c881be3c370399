//! The simulator's batch APIs over raw HTTP, one family at a time, checked against the
//! providers' documented shapes: create, poll while running, the end after the configured
//! turnaround, results equal to the realtime answer of the same request (content and
//! usage), the `batch=` item directives, a whole batch expiring at the window, cancel,
//! OpenAI's input-file validation, and 404s for unknown ids.

use crate::common;
use serde_json::{json, Value};
use sluice::sim::{self, Family, SimConfig, SimServer};
use std::future::Future;
use std::time::Duration;

/// A simulator whose batches end `turnaround` after creation, within a `window`.
struct Sim {
    server: SimServer,
    http: reqwest::Client,
}

impl Sim {
    async fn start(turnaround: Duration, window: Duration) -> Sim {
        let config = SimConfig {
            batch_turnaround: turnaround,
            batch_window: window,
            ..SimConfig::default()
        };
        let server = sim::spawn("127.0.0.1:0".parse().unwrap(), config)
            .await
            .expect("simulator starts");
        Sim {
            server,
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.server.local_addr())
    }

    /// Sends with `family`'s credentials; answers the status and the body (JSON when it is).
    async fn send(
        &self,
        family: Family,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.http.request(method, self.url(path));
        request = match family {
            Family::OpenAi => request.bearer_auth("sk-test"),
            Family::Anthropic => request
                .header("x-api-key", "sk-ant-test")
                .header("anthropic-version", "2023-06-01"),
            Family::Gemini => request.header("x-goog-api-key", "AIza-test"),
        };
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    async fn ok(&self, family: Family, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, body) = self.send(family, method, path, body).await;
        assert_eq!(status, 200, "{method} {path}: {body}");
        body
    }

    /// `POST /v1/files` with `content` as a batch input file; answers the File object.
    async fn upload(&self, content: &str) -> Value {
        let form = format!(
            "--B\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--B\r\n\
             Content-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\n\r\n\
             {content}\r\n--B--\r\n"
        );
        let response = self
            .http
            .post(self.url("/v1/files"))
            .bearer_auth("sk-test")
            .header("content-type", "multipart/form-data; boundary=B")
            .body(form)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// The lines of a JSONL body.
    async fn lines(&self, family: Family, path: &str) -> Vec<Value> {
        match self.ok(family, "GET", path, None).await {
            Value::String(text) => text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect(),
            // A one-line file parses as JSON as a whole.
            line => vec![line],
        }
    }
}

/// Polls `read` until `done` holds (for at most 10 s); answers the last value.
async fn until<F: Future<Output = Value>>(
    read: impl Fn() -> F,
    done: impl Fn(&Value) -> bool,
) -> Value {
    common::eventually(
        "the batch to be done",
        Duration::from_secs(10),
        async || {
            let value = read().await;
            if done(&value) {
                Ok(value)
            } else {
                Err(value)
            }
        },
    )
    .await
}

const SHORT: Duration = Duration::from_millis(600);
const DAY: Duration = Duration::from_secs(24 * 3600);

fn chat(text: &str) -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]})
}

fn openai_file(requests: &[(&str, Value)]) -> String {
    requests
        .iter()
        .map(|(id, body)| {
            json!({"custom_id": id, "method": "POST", "url": "/v1/chat/completions", "body": body})
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn by_custom_id(lines: &[Value], id: &str) -> Value {
    lines
        .iter()
        .find(|line| line["custom_id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no line for {id} in {lines:?}"))
}

async fn create_openai(sim: &Sim, requests: &[(&str, Value)]) -> Value {
    let file = sim.upload(&openai_file(requests)).await;
    assert_eq!(file["object"], "file");
    assert_eq!(file["purpose"], "batch");
    assert_eq!(file["status"], "processed");
    let body = json!({"input_file_id": file["id"], "endpoint": "/v1/chat/completions",
                      "completion_window": "24h", "metadata": {"run": "nightly"}});
    sim.ok(Family::OpenAi, "POST", "/v1/batches", Some(body))
        .await
}

#[tokio::test]
async fn an_openai_batch_runs_answers_like_realtime_and_files_its_failures() {
    let sim = Sim::start(SHORT, DAY).await;
    let hello = chat("Say hello to the queue");
    let batch = create_openai(
        &sim,
        &[
            ("hello", hello.clone()),
            ("boom", chat("Fail me [sim batch=error]")),
            ("bad", chat("Refuse me [sim batch=invalid]")),
            ("late", chat("Too late [sim batch=expire]")),
        ],
    )
    .await;
    assert!(batch["id"].as_str().unwrap().starts_with("batch_"));
    assert_eq!(batch["object"], "batch");
    assert_eq!(batch["status"], "validating");
    assert_eq!(batch["metadata"], json!({"run": "nightly"}));
    assert_eq!(batch["completion_window"], "24h");
    let created = batch["created_at"].as_i64().unwrap();
    assert_eq!(batch["expires_at"].as_i64().unwrap(), created + 24 * 3600);
    let path = format!("/v1/batches/{}", batch["id"].as_str().unwrap());

    let running = sim.ok(Family::OpenAi, "GET", &path, None).await;
    assert_eq!(running["status"], "in_progress");
    assert_eq!(running["request_counts"]["total"], 4);
    assert_eq!(running["output_file_id"], Value::Null);

    let done = until(
        || sim.ok(Family::OpenAi, "GET", &path, None),
        |b| b["status"] == "completed",
    )
    .await;
    assert_eq!(
        done["request_counts"],
        json!({"total": 4, "completed": 1, "failed": 3})
    );
    assert_eq!(done["model"], "gpt-4o-mini");
    for field in ["in_progress_at", "finalizing_at", "completed_at"] {
        assert!(done[field].as_i64().unwrap() >= created, "{field}: {done}");
    }
    for field in [
        "failed_at",
        "expired_at",
        "cancelling_at",
        "cancelled_at",
        "errors",
    ] {
        assert_eq!(done[field], Value::Null, "{field}");
    }

    // The answer is the realtime answer of the same request; the batch usage is its usage.
    let realtime = sim
        .ok(Family::OpenAi, "POST", "/v1/chat/completions", Some(hello))
        .await;
    let output_path = format!(
        "/v1/files/{}/content",
        done["output_file_id"].as_str().unwrap()
    );
    let output = sim.lines(Family::OpenAi, &output_path).await;
    assert_eq!(output.len(), 1);
    let line = &output[0];
    assert!(line["id"].as_str().unwrap().starts_with("batch_req_"));
    assert_eq!(line["custom_id"], "hello");
    assert_eq!(line["error"], Value::Null);
    assert_eq!(line["response"]["status_code"], 200);
    assert!(line["response"]["request_id"]
        .as_str()
        .unwrap()
        .starts_with("req_"));
    let body = &line["response"]["body"];
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(
        body["choices"][0]["message"],
        realtime["choices"][0]["message"]
    );
    assert_eq!(body["usage"], realtime["usage"]);
    let usage = &done["usage"];
    assert_eq!(usage["input_tokens"], realtime["usage"]["prompt_tokens"]);
    assert_eq!(
        usage["output_tokens"],
        realtime["usage"]["completion_tokens"]
    );
    assert_eq!(usage["total_tokens"], realtime["usage"]["total_tokens"]);

    let errors_path = format!(
        "/v1/files/{}/content",
        done["error_file_id"].as_str().unwrap()
    );
    let errors = sim.lines(Family::OpenAi, &errors_path).await;
    assert_eq!(errors.len(), 3);
    let boom = by_custom_id(&errors, "boom");
    assert_eq!(boom["response"]["status_code"], 500);
    assert_eq!(boom["response"]["body"]["error"]["type"], "server_error");
    let bad = by_custom_id(&errors, "bad");
    assert_eq!(bad["response"]["status_code"], 400);
    assert_eq!(
        bad["response"]["body"]["error"]["type"],
        "invalid_request_error"
    );
    let late = by_custom_id(&errors, "late");
    assert_eq!(late["response"], Value::Null);
    assert_eq!(late["error"]["code"], "batch_expired");

    // The output file's object, and a realtime call carrying a batch directive is answered.
    let file = sim
        .ok(
            Family::OpenAi,
            "GET",
            &format!("/v1/files/{}", done["output_file_id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(file["purpose"], "batch_output");
    assert!(file["bytes"].as_u64().unwrap() > 0);
    let realtime = sim
        .ok(
            Family::OpenAi,
            "POST",
            "/v1/chat/completions",
            Some(chat("Fail me [sim batch=error]")),
        )
        .await;
    assert_eq!(realtime["choices"][0]["finish_reason"], "stop");

    let stats = sim.server.stats();
    assert_eq!((stats.batch_items, stats.openai_requests), (4, 2));
    assert_eq!(sim.server.batches_created(Family::OpenAi), 1);
    assert_eq!(sim.server.batches_created(Family::Anthropic), 0);
}

#[tokio::test]
async fn openai_validates_the_input_file_and_the_request_as_documented() {
    let sim = Sim::start(SHORT, DAY).await;
    // A duplicate custom_id fails the batch, naming the line.
    let batch = create_openai(&sim, &[("a", chat("one")), ("a", chat("two"))]).await;
    let path = format!("/v1/batches/{}", batch["id"].as_str().unwrap());
    let failed = sim.ok(Family::OpenAi, "GET", &path, None).await;
    assert_eq!(failed["status"], "failed");
    assert!(failed["failed_at"].is_i64());
    assert_eq!(failed["errors"]["object"], "list");
    let error = &failed["errors"]["data"][0];
    assert_eq!(
        (error["code"].as_str(), error["line"].as_u64()),
        (Some("duplicate_custom_id"), Some(2))
    );
    assert_eq!(error["param"], "custom_id");
    let (status, refused) = sim
        .send(Family::OpenAi, "POST", &format!("{path}/cancel"), None)
        .await;
    assert_eq!(status, 400, "{refused}");

    let file = sim.upload(&openai_file(&[("x", chat("hi"))])).await;
    for (body, param) in [
        (
            json!({"endpoint": "/v1/chat/completions", "completion_window": "24h"}),
            "input_file_id",
        ),
        (
            json!({"input_file_id": file["id"], "endpoint": "/v1/embeddings", "completion_window": "24h"}),
            "endpoint",
        ),
        (
            json!({"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "48h"}),
            "completion_window",
        ),
        (
            json!({"input_file_id": "file-nope", "endpoint": "/v1/chat/completions", "completion_window": "24h"}),
            "input_file_id",
        ),
        (
            json!({"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h", "metadata": {"n": 1}}),
            "metadata.n",
        ),
    ] {
        let (status, error) = sim
            .send(Family::OpenAi, "POST", "/v1/batches", Some(body))
            .await;
        assert_eq!(status, 400, "{error}");
        assert_eq!(error["error"]["param"], param, "{error}");
    }
    for path in [
        "/v1/batches/batch_nope",
        "/v1/files/file-nope",
        "/v1/files/file-nope/content",
    ] {
        let (status, error) = sim.send(Family::OpenAi, "GET", path, None).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(error["error"]["type"], "invalid_request_error");
    }
    let (status, _) = sim
        .send(
            Family::OpenAi,
            "POST",
            "/v1/batches/batch_nope/cancel",
            None,
        )
        .await;
    assert_eq!(status, 404);

    // Two batches, newest first, a page at a time.
    let second = create_openai(&sim, &[("b", chat("three"))]).await;
    let page = sim
        .ok(Family::OpenAi, "GET", "/v1/batches?limit=1", None)
        .await;
    assert_eq!(page["object"], "list");
    assert_eq!(
        (page["first_id"].clone(), page["has_more"].clone()),
        (second["id"].clone(), json!(true))
    );
    let next = format!(
        "/v1/batches?limit=1&after={}",
        page["last_id"].as_str().unwrap()
    );
    let page = sim.ok(Family::OpenAi, "GET", &next, None).await;
    assert_eq!(
        (page["data"][0]["id"].clone(), page["has_more"].clone()),
        (batch["id"].clone(), json!(false))
    );
    let (status, _) = sim
        .send(Family::OpenAi, "GET", "/v1/batches?limit=0", None)
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn a_cancelled_batch_cancels_what_it_had_not_answered() {
    let sim = Sim::start(Duration::from_secs(30), DAY).await;
    // OpenAI: cancelling, then cancelled with the items in the error file.
    let batch = create_openai(&sim, &[("a", chat("one")), ("b", chat("two"))]).await;
    let path = format!("/v1/batches/{}", batch["id"].as_str().unwrap());
    let cancelling = sim
        .ok(Family::OpenAi, "POST", &format!("{path}/cancel"), None)
        .await;
    assert_eq!(cancelling["status"], "cancelling");
    assert!(cancelling["cancelling_at"].is_i64());
    let cancelled = until(
        || sim.ok(Family::OpenAi, "GET", &path, None),
        |b| b["status"] == "cancelled",
    )
    .await;
    assert!(cancelled["cancelled_at"].is_i64());
    assert_eq!(cancelled["output_file_id"], Value::Null);
    let errors = sim
        .lines(
            Family::OpenAi,
            &format!(
                "/v1/files/{}/content",
                cancelled["error_file_id"].as_str().unwrap()
            ),
        )
        .await;
    assert_eq!(errors.len(), 2);
    assert!(
        errors
            .iter()
            .all(|line| line["error"]["code"] == "batch_cancelled"),
        "{errors:?}"
    );

    // Anthropic: canceling, then ended with canceled results.
    let body = json!({"requests": [{"custom_id": "a", "params": message("one")}]});
    let batch = sim
        .ok(
            Family::Anthropic,
            "POST",
            "/v1/messages/batches",
            Some(body),
        )
        .await;
    let path = format!("/v1/messages/batches/{}", batch["id"].as_str().unwrap());
    let canceling = sim
        .ok(Family::Anthropic, "POST", &format!("{path}/cancel"), None)
        .await;
    assert_eq!(canceling["processing_status"], "canceling");
    assert!(canceling["cancel_initiated_at"].is_string());
    let ended = until(
        || sim.ok(Family::Anthropic, "GET", &path, None),
        |b| b["processing_status"] == "ended",
    )
    .await;
    assert_eq!(ended["request_counts"]["canceled"], 1);
    let results = sim
        .lines(Family::Anthropic, &format!("{path}/results"))
        .await;
    assert_eq!(results[0]["result"], json!({"type": "canceled"}));

    // Gemini: CANCELLED, the request answered with a CANCELLED status.
    let batch = create_gemini(&sim, "/v1beta", &[(json!({"key": "a"}), ask("one"))]).await;
    let name = batch["name"].as_str().unwrap().to_string();
    let cancelled = sim
        .ok(
            Family::Gemini,
            "POST",
            &format!("/v1beta/{name}:cancel"),
            None,
        )
        .await;
    assert_eq!(cancelled, json!({}));
    let path = format!("/v1beta/{name}");
    let ended = until(
        || sim.ok(Family::Gemini, "GET", &path, None),
        |op| op["done"] == true,
    )
    .await;
    assert_eq!(ended["metadata"]["state"], "BATCH_STATE_CANCELLED");
    assert_eq!(
        ended["metadata"]["output"]["inlinedResponses"]["inlinedResponses"][0]["error"]["code"],
        1
    );
}

#[tokio::test]
async fn a_turnaround_past_the_window_expires_every_family_s_batch() {
    let sim = Sim::start(Duration::from_secs(60), Duration::from_millis(300)).await;
    let openai = create_openai(&sim, &[("a", chat("one"))]).await;
    let body = json!({"requests": [{"custom_id": "a", "params": message("one")}]});
    let anthropic = sim
        .ok(
            Family::Anthropic,
            "POST",
            "/v1/messages/batches",
            Some(body),
        )
        .await;
    let gemini = create_gemini(&sim, "/v1beta", &[(Value::Null, ask("one"))]).await;

    let path = format!("/v1/batches/{}", openai["id"].as_str().unwrap());
    let expired = until(
        || sim.ok(Family::OpenAi, "GET", &path, None),
        |b| b["status"] == "expired",
    )
    .await;
    assert!(expired["expired_at"].is_i64());
    let errors = sim
        .lines(
            Family::OpenAi,
            &format!(
                "/v1/files/{}/content",
                expired["error_file_id"].as_str().unwrap()
            ),
        )
        .await;
    assert_eq!(errors[0]["error"]["code"], "batch_expired");

    let path = format!("/v1/messages/batches/{}", anthropic["id"].as_str().unwrap());
    let ended = sim.ok(Family::Anthropic, "GET", &path, None).await;
    assert_eq!(ended["processing_status"], "ended");
    assert_eq!(ended["request_counts"]["expired"], 1);
    let results = sim
        .lines(Family::Anthropic, &format!("{path}/results"))
        .await;
    assert_eq!(results[0]["result"], json!({"type": "expired"}));

    let path = format!("/v1beta/{}", gemini["name"].as_str().unwrap());
    let ended = sim.ok(Family::Gemini, "GET", &path, None).await;
    assert_eq!(ended["metadata"]["state"], "BATCH_STATE_EXPIRED");
    let response = &ended["metadata"]["output"]["inlinedResponses"]["inlinedResponses"][0];
    assert_eq!(response["error"]["status"], "DEADLINE_EXCEEDED");
}

fn message(text: &str) -> Value {
    json!({"model": "claude-test", "max_tokens": 200, "messages": [{"role": "user", "content": text}]})
}

#[tokio::test]
async fn an_anthropic_batch_ends_with_results_like_realtime() {
    let sim = Sim::start(SHORT, DAY).await;
    let mut no_max_tokens = message("no cap");
    no_max_tokens.as_object_mut().unwrap().remove("max_tokens");
    let requests = [
        ("hello", message("Say hello to the queue")),
        ("boom", message("Fail me [sim batch=error]")),
        ("bad", message("Refuse me [sim batch=invalid]")),
        ("late", message("Too late [sim batch=expire]")),
        ("nocap", no_max_tokens),
    ];
    let body = json!({"requests": requests.iter().map(|(id, params)| json!({"custom_id": id, "params": params})).collect::<Vec<_>>()});
    let batch = sim
        .ok(
            Family::Anthropic,
            "POST",
            "/v1/messages/batches",
            Some(body),
        )
        .await;
    assert!(batch["id"].as_str().unwrap().starts_with("msgbatch_"));
    assert_eq!(batch["type"], "message_batch");
    assert_eq!(batch["processing_status"], "in_progress");
    assert_eq!(
        batch["request_counts"],
        json!({"processing": 5, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0})
    );
    assert_eq!(batch["results_url"], Value::Null);
    let created =
        chrono::DateTime::parse_from_rfc3339(batch["created_at"].as_str().unwrap()).unwrap();
    let expires =
        chrono::DateTime::parse_from_rfc3339(batch["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!(expires - created, chrono::Duration::hours(24));
    let path = format!("/v1/messages/batches/{}", batch["id"].as_str().unwrap());
    let (status, early) = sim
        .send(Family::Anthropic, "GET", &format!("{path}/results"), None)
        .await;
    assert_eq!(status, 400, "{early}");

    let ended = until(
        || sim.ok(Family::Anthropic, "GET", &path, None),
        |b| b["processing_status"] == "ended",
    )
    .await;
    assert_eq!(
        ended["request_counts"],
        json!({"processing": 0, "succeeded": 1, "errored": 3, "canceled": 0, "expired": 1})
    );
    assert!(ended["ended_at"].is_string());
    let results_url = ended["results_url"].as_str().unwrap();
    assert_eq!(results_url, sim.url(&format!("{path}/results")));

    let results = sim
        .lines(Family::Anthropic, &format!("{path}/results"))
        .await;
    assert_eq!(results.len(), 5);
    let realtime = sim
        .ok(
            Family::Anthropic,
            "POST",
            "/v1/messages",
            Some(message("Say hello to the queue")),
        )
        .await;
    let hello = by_custom_id(&results, "hello");
    assert_eq!(hello["result"]["type"], "succeeded");
    let batched = &hello["result"]["message"];
    assert_eq!(batched["content"], realtime["content"]);
    assert_eq!(
        batched["usage"]["input_tokens"],
        realtime["usage"]["input_tokens"]
    );
    assert_eq!(
        batched["usage"]["output_tokens"],
        realtime["usage"]["output_tokens"]
    );
    assert_eq!(batched["usage"]["service_tier"], "batch");
    for (id, kind) in [
        ("boom", "api_error"),
        ("bad", "invalid_request_error"),
        ("nocap", "invalid_request_error"),
    ] {
        let result = &by_custom_id(&results, id)["result"];
        assert_eq!(result["type"], "errored");
        assert_eq!(result["error"]["type"], "error");
        assert_eq!(result["error"]["error"]["type"], kind, "{id}: {result}");
    }
    assert_eq!(
        by_custom_id(&results, "late")["result"],
        json!({"type": "expired"})
    );

    let list = sim
        .ok(
            Family::Anthropic,
            "GET",
            "/v1/messages/batches?limit=10",
            None,
        )
        .await;
    assert_eq!(
        (list["first_id"].clone(), list["has_more"].clone()),
        (batch["id"].clone(), json!(false))
    );
    for (method, path) in [
        ("GET", "/v1/messages/batches/msgbatch_nope"),
        ("POST", "/v1/messages/batches/msgbatch_nope/cancel"),
        ("GET", "/v1/messages/batches/msgbatch_nope/results"),
    ] {
        let (status, error) = sim.send(Family::Anthropic, method, path, None).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(error["error"]["type"], "not_found_error");
    }
    let duplicate = json!({"requests": [{"custom_id": "a", "params": message("x")}, {"custom_id": "a", "params": message("y")}]});
    let (status, error) = sim
        .send(
            Family::Anthropic,
            "POST",
            "/v1/messages/batches",
            Some(duplicate),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("requests.1.custom_id"),
        "{error}"
    );
    let no_key = sim
        .http
        .get(sim.url(&path))
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap();
    assert_eq!(no_key.status(), 401);
    assert_eq!(sim.server.batches_created(Family::Anthropic), 1);
}

fn ask(text: &str) -> Value {
    json!({"contents": [{"role": "user", "parts": [{"text": text}]}]})
}

async fn create_gemini(sim: &Sim, version: &str, requests: &[(Value, Value)]) -> Value {
    let requests: Vec<Value> = requests
        .iter()
        .map(|(metadata, request)| {
            let mut entry = json!({"request": request});
            if !metadata.is_null() {
                entry["metadata"] = metadata.clone();
            }
            entry
        })
        .collect();
    let body = json!({"batch": {"displayName": "nightly", "inputConfig": {"requests": {"requests": requests}}}});
    let path = format!("{version}/models/gemini-2.5-flash:batchGenerateContent");
    sim.ok(Family::Gemini, "POST", &path, Some(body)).await
}

#[tokio::test]
async fn a_gemini_batch_is_an_operation_that_ends_with_inlined_responses() {
    let sim = Sim::start(SHORT, DAY).await;
    let operation = create_gemini(
        &sim,
        "/v1beta",
        &[
            (json!({"key": "hello"}), ask("Say hello to the queue")),
            (json!({"key": "boom"}), ask("Fail me [sim batch=error]")),
            (json!({"key": "bad"}), ask("Refuse me [sim batch=invalid]")),
        ],
    )
    .await;
    let name = operation["name"].as_str().unwrap().to_string();
    assert!(name.starts_with("batches/"));
    assert_eq!(operation["done"], false);
    let metadata = &operation["metadata"];
    assert!(metadata["@type"]
        .as_str()
        .unwrap()
        .ends_with("GenerateContentBatch"));
    assert_eq!(metadata["state"], "BATCH_STATE_PENDING");
    assert_eq!(metadata["displayName"], "nightly");
    assert_eq!(metadata["model"], "models/gemini-2.5-flash");
    assert_eq!(metadata["batchStats"]["requestCount"], "3");
    let path = format!("/v1beta/{name}");
    let running = sim.ok(Family::Gemini, "GET", &path, None).await;
    assert_eq!(running["metadata"]["state"], "BATCH_STATE_RUNNING");

    let done = until(
        || sim.ok(Family::Gemini, "GET", &path, None),
        |op| op["done"] == true,
    )
    .await;
    let metadata = &done["metadata"];
    assert_eq!(metadata["state"], "BATCH_STATE_SUCCEEDED");
    assert!(metadata["endTime"].is_string());
    assert_eq!(
        metadata["batchStats"],
        json!({"requestCount": "3", "successfulRequestCount": "1", "failedRequestCount": "2", "pendingRequestCount": "0"})
    );
    let responses = metadata["output"]["inlinedResponses"]["inlinedResponses"]
        .as_array()
        .unwrap();
    assert_eq!(
        done["response"]["inlinedResponses"]["inlinedResponses"]
            .as_array()
            .unwrap(),
        responses
    );
    let realtime = sim
        .ok(
            Family::Gemini,
            "POST",
            "/v1beta/models/gemini-2.5-flash:generateContent",
            Some(ask("Say hello to the queue")),
        )
        .await;
    assert_eq!(responses[0]["metadata"], json!({"key": "hello"}));
    let batched = &responses[0]["response"];
    assert_eq!(batched["candidates"], realtime["candidates"]);
    assert_eq!(batched["usageMetadata"], realtime["usageMetadata"]);
    assert_eq!(
        (
            responses[1]["error"]["code"].as_u64(),
            responses[1]["error"]["status"].as_str()
        ),
        (Some(13), Some("INTERNAL"))
    );
    assert_eq!(
        (
            responses[2]["error"]["code"].as_u64(),
            responses[2]["error"]["status"].as_str()
        ),
        (Some(3), Some("INVALID_ARGUMENT"))
    );

    // Also under /v1; listed newest first; unknown ids and bad bodies in Google's words.
    let v1 = create_gemini(&sim, "/v1", &[(Value::Null, ask("again"))]).await;
    let list = sim
        .ok(Family::Gemini, "GET", "/v1beta/batches?pageSize=1", None)
        .await;
    assert_eq!(list["operations"][0]["name"], v1["name"]);
    let next = format!(
        "/v1/batches?pageSize=5&pageToken={}",
        list["nextPageToken"].as_str().unwrap()
    );
    let list = sim.ok(Family::Gemini, "GET", &next, None).await;
    assert_eq!(list["operations"][0]["name"], json!(name));
    assert_eq!(list.get("nextPageToken"), None);
    let (status, error) = sim
        .send(Family::Gemini, "GET", "/v1beta/batches/nope", None)
        .await;
    assert_eq!(
        (status, error["error"]["status"].as_str()),
        (404, Some("NOT_FOUND"))
    );
    let (status, _) = sim
        .send(Family::Gemini, "POST", "/v1beta/batches/nope:cancel", None)
        .await;
    assert_eq!(status, 404);
    let (status, error) = sim
        .send(
            Family::Gemini,
            "POST",
            "/v1beta/models/gemini-2.5-flash:batchGenerateContent",
            Some(json!({"batch": {"displayName": "x"}})),
        )
        .await;
    assert_eq!(
        (status, error["error"]["status"].as_str()),
        (400, Some("INVALID_ARGUMENT"))
    );
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("input_config"),
        "{error}"
    );
    assert_eq!(sim.server.batches_created(Family::Gemini), 2);
    assert_eq!(sim.server.stats().gemini_requests, 1);
}
