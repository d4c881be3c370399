//! The simulator's Gemini API over real HTTP, checked against Google's documented shapes:
//! `GenerateContentResponse`, `usageMetadata` (prompt includes cached), the SSE stream that
//! ends by closing, Google RPC errors with `RetryInfo`, function calling.

use crate::sse;

use serde_json::{json, Value};
use sluice::sim::{self, SimConfig, SimServer};
use std::time::Duration;

const MODEL: &str = "gemini-2.5-flash";

async fn start() -> (SimServer, reqwest::Client) {
    let config = SimConfig {
        retry_after: Duration::from_millis(50),
        ..SimConfig::default()
    };
    let server = sim::spawn("127.0.0.1:0".parse().unwrap(), config)
        .await
        .expect("simulator starts");
    (server, reqwest::Client::new())
}

fn post(
    server: &SimServer,
    http: &reqwest::Client,
    method: &str,
    body: &Value,
) -> reqwest::RequestBuilder {
    http.post(format!(
        "{}/models/{MODEL}:{method}",
        server.gemini_base_url()
    ))
    .header("x-goog-api-key", "AIza-test")
    .json(body)
}

fn ask(text: &str) -> Value {
    json!({
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "contents": [{"role": "user", "parts": [{"text": text}]}],
    })
}

async fn error_of(response: reqwest::Response, code: u16, status: &str) -> Value {
    assert_eq!(response.status(), code);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], code, "{body}");
    assert_eq!(body["error"]["status"], status, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    body
}

async fn generate(server: &SimServer, http: &reqwest::Client, body: &Value) -> Value {
    let response = post(server, http, "generateContent", body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn a_response_has_the_documented_shape_and_usage() {
    let (server, http) = start().await;
    let response = generate(&server, &http, &ask("Say hello to the queue")).await;
    let candidate = &response["candidates"][0];
    assert_eq!(candidate["content"]["role"], "model");
    assert_eq!(candidate["finishReason"], "STOP");
    assert_eq!(candidate["index"], 0);
    let text = candidate["content"]["parts"][0]["text"].as_str().unwrap();
    assert!(text.starts_with("This is a simulated answer to \"Say hello to the queue\"."));
    let usage = &response["usageMetadata"];
    assert_eq!(
        usage["candidatesTokenCount"],
        sluice::sim::tokens::count(text)
    );
    assert_eq!(
        usage["totalTokenCount"].as_u64().unwrap(),
        usage["promptTokenCount"].as_u64().unwrap()
            + usage["candidatesTokenCount"].as_u64().unwrap()
    );
    assert!(usage.get("cachedContentTokenCount").is_none());
    assert_eq!(response["modelVersion"], MODEL);
    assert!(response["responseId"]
        .as_str()
        .is_some_and(|id| !id.is_empty()));

    // Cached tokens stay inside promptTokenCount and are reported on their own.
    let cached = generate(&server, &http, &ask("Say hello [sim cached=4]")).await;
    let plain = generate(&server, &http, &ask("Say hello [sim cached=0]")).await;
    assert_eq!(cached["usageMetadata"]["cachedContentTokenCount"], 4);
    assert_eq!(
        cached["usageMetadata"]["promptTokenCount"],
        plain["usageMetadata"]["promptTokenCount"]
    );

    // The key may come as ?key=, and the SDK's default v1 path is served too.
    let by_query = http
        .post(format!(
            "http://{}/v1/models/{MODEL}:generateContent?key=AIza-test",
            server.local_addr()
        ))
        .json(&ask("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(by_query.status(), 200);
    let stats = server.stats();
    assert_eq!(
        (
            stats.chat_requests,
            stats.gemini_requests,
            stats.completions
        ),
        (4, 4, 4)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn requests_are_checked_in_googles_words() {
    let (server, http) = start().await;
    let url = format!(
        "{}/models/{MODEL}:generateContent",
        server.gemini_base_url()
    );
    let keyless = http.post(&url).json(&ask("hi")).send().await.unwrap();
    error_of(keyless, 403, "PERMISSION_DENIED").await;

    let unknown_field = post(
        &server,
        &http,
        "generateContent",
        &json!({"contents": [{"parts": [{"text": "x"}]}], "max_tokens": 5}),
    );
    let e = error_of(unknown_field.send().await.unwrap(), 400, "INVALID_ARGUMENT").await;
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Unknown name \"max_tokens\""));
    let empty = post(&server, &http, "generateContent", &json!({"contents": []}));
    error_of(empty.send().await.unwrap(), 400, "INVALID_ARGUMENT").await;
    let typo = post(&server, &http, "generateContent", &ask("[sim fial=1]"));
    error_of(typo.send().await.unwrap(), 400, "INVALID_ARGUMENT").await;
    let unknown_method = post(&server, &http, "embedEverything", &ask("x"));
    error_of(unknown_method.send().await.unwrap(), 404, "NOT_FOUND").await;
    server.shutdown().await;
}

#[tokio::test]
async fn every_error_class_is_a_google_rpc_error() {
    let (server, http) = start().await;
    let fail = |directive: &str| {
        post(
            &server,
            &http,
            "generateContent",
            &ask(&format!("x [sim fail={directive}]")),
        )
    };

    let e = error_of(fail("429").send().await.unwrap(), 429, "RESOURCE_EXHAUSTED").await;
    let details = e["error"]["details"].as_array().unwrap();
    let retry = details
        .iter()
        .find(|d| d["@type"] == "type.googleapis.com/google.rpc.RetryInfo")
        .expect("a RetryInfo detail");
    assert_eq!(retry["retryDelay"], "0.050s");
    assert_eq!(
        fail("429").send().await.unwrap().status(),
        200,
        "the plan is spent"
    );

    let e = error_of(
        fail("quota").send().await.unwrap(),
        429,
        "RESOURCE_EXHAUSTED",
    )
    .await;
    let details = e["error"]["details"].as_array().unwrap();
    assert!(details
        .iter()
        .all(|d| d["@type"] != "type.googleapis.com/google.rpc.RetryInfo"));
    assert!(details.iter().any(|d| d["violations"][0]["quotaId"]
        .as_str()
        .unwrap_or("")
        .contains("PerDay")));

    for (directive, code, status) in [
        ("500", 500, "INTERNAL"),
        ("503", 503, "UNAVAILABLE"),
        ("504", 504, "DEADLINE_EXCEEDED"),
        ("400", 400, "INVALID_ARGUMENT"),
        ("403", 403, "PERMISSION_DENIED"),
        ("404", 404, "NOT_FOUND"),
        ("midstream", 503, "UNAVAILABLE"),
    ] {
        error_of(fail(directive).send().await.unwrap(), code, status).await;
    }
    sse::cut_body(fail("cut").send().await.unwrap()).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_stream_is_data_chunks_that_end_by_closing() {
    let (server, http) = start().await;
    let body = ask("Tell me about durable queues and their workers");
    let plain = generate(&server, &http, &body).await;
    let url = format!(
        "{}/models/{MODEL}:streamGenerateContent?alt=sse",
        server.gemini_base_url()
    );
    let request = http.post(&url).header("x-goog-api-key", "k").json(&body);
    let events = sse::events(request.send().await.unwrap()).await;
    assert!(events.len() > 2, "several chunks: {}", events.len());
    assert!(events
        .iter()
        .all(|e| e.name.is_none() && e.data != "[DONE]"));
    let chunks: Vec<Value> = events.iter().map(sse::Event::json).collect();
    let text: String = chunks
        .iter()
        .map(|c| {
            c["candidates"][0]["content"]["parts"][0]["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        text,
        plain["candidates"][0]["content"]["parts"][0]["text"]
            .as_str()
            .unwrap()
    );
    let last = chunks.last().unwrap();
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    assert!(chunks[..chunks.len() - 1]
        .iter()
        .all(|c| c["candidates"][0].get("finishReason").is_none()));
    assert_eq!(last["usageMetadata"], plain["usageMetadata"]);
    assert!(chunks
        .iter()
        .all(|c| c["responseId"] == chunks[0]["responseId"]));

    // Without alt=sse the chunks come as one JSON array.
    let array: Value = post(&server, &http, "streamGenerateContent", &body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(array.as_array().unwrap().len(), chunks.len());

    let faulty = ask("A long answer please [sim fail=midstream]");
    let events = sse::events(
        http.post(&url)
            .header("x-goog-api-key", "k")
            .json(&faulty)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let last = events.last().unwrap().json();
    assert_eq!(last["error"]["status"], "UNAVAILABLE");
    assert!(events.len() > 1);
    let cut = ask("A long answer please [sim fail=cut]");
    let partial = sse::cut_body(
        http.post(&url)
            .header("x-goog-api-key", "k")
            .json(&cut)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(!partial.contains("finishReason"), "{partial}");
    server.shutdown().await;
}

#[tokio::test]
async fn function_calls_results_json_and_limits() {
    let (server, http) = start().await;
    let tools = json!([{"functionDeclarations": [{
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}, "required": ["city"]}
    }]}]);
    let mut body = ask("Weather in Oslo?");
    body["tools"] = tools.clone();
    body["toolConfig"] = json!({"functionCallingConfig": {"mode": "ANY"}});
    let called = generate(&server, &http, &body).await;
    let candidate = &called["candidates"][0];
    assert_eq!(
        candidate["finishReason"], "STOP",
        "Gemini has no tool-call finish reason"
    );
    let call = &candidate["content"]["parts"][0]["functionCall"];
    assert_eq!(call["name"], "get_weather");
    assert_eq!(call["args"], json!({"city": "sample city"}));

    let followup = json!({
        "tools": tools,
        "contents": [
            {"role": "user", "parts": [{"text": "Weather in Oslo? [sim tool=get_weather]"}]},
            candidate["content"],
            {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"output": "3 degrees"}}}]}
        ]
    });
    let answered = generate(&server, &http, &followup).await;
    let text = answered["candidates"][0]["content"]["parts"][0]["text"]
        .as_str()
        .unwrap();
    assert!(
        text.contains("get_weather returned \"3 degrees\""),
        "{text}"
    );

    let mut body = ask("Count");
    body["generationConfig"] = json!({"responseMimeType": "application/json", "responseJsonSchema": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}});
    let structured = generate(&server, &http, &body).await;
    let text = structured["candidates"][0]["content"]["parts"][0]["text"]
        .as_str()
        .unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(text).unwrap(),
        json!({"n": 1})
    );

    let mut body = ask("Tell me a long story");
    body["generationConfig"] = json!({"maxOutputTokens": 3, "candidateCount": 2});
    let cut = generate(&server, &http, &body).await;
    assert_eq!(cut["candidates"][1]["finishReason"], "MAX_TOKENS");
    assert_eq!(cut["usageMetadata"]["candidatesTokenCount"], 6);
    server.shutdown().await;
}
