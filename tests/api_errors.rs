//! The errors the HTTP layer answers before any handler runs (no such endpoint, a method the
//! endpoint does not take, a body over the limit) and the submission checks of a request's
//! standard parameters: each in the API's JSON error shape, naming what is wrong, with
//! nothing recorded.

mod common;

use common::{Backend, Harness, TOKEN};
use serde_json::{json, Value};

async fn error_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body: Value = response
        .json()
        .await
        .expect("the error body is JSON, whatever answered it");
    (status, body["error"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_before_any_handler_are_json_naming_the_problem() {
    let h = Harness::start(Backend::Embedded).await;
    let http = reqwest::Client::new();

    let (status, error) = error_of(
        http.get(format!("{}/v1/nope", h.base_url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("no such endpoint: GET /v1/nope"),
        "{error}"
    );

    let wrong_method = http
        .delete(format!("{}/v1/chat/completions", h.base_url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert!(wrong_method.headers().contains_key("allow"));
    let (status, error) = error_of(wrong_method).await;
    assert_eq!(status, 405);
    assert_eq!(error["type"], "method_not_allowed", "{error}");

    // 65 MiB of JSON string: over the limit of a body held whole.
    let huge = format!(
        r#"{{"request": {{"model": "fast", "messages": [{{"role": "user", "content": "{}"}}]}}}}"#,
        "x".repeat(65 << 20)
    );
    let (status, error) = error_of(
        http.post(format!("{}/v1/jobs", h.base_url))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(huge)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 413);
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("64 MiB") && message.contains("/v1/bulk"),
        "{message}"
    );
    assert_eq!(h.count("SELECT COUNT(*) FROM jobs").await, 0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parameter_of_the_wrong_type_is_refused_at_submission() {
    let h = Harness::start(Backend::Embedded).await;
    let http = reqwest::Client::new();
    let job = |extra: Value| {
        let mut request = json!({"model": "fast", "messages": [{"role": "user", "content": "hi"}]});
        request
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({ "request": request })
    };
    for (body, field) in [
        (job(json!({"temperature": "hot"})), "request.temperature"),
        (job(json!({"max_tokens": -5})), "request.max_tokens"),
        (
            json!({"request": {"model": "fast", "messages": [{"role": "user"}]}}),
            "request.messages[0].content",
        ),
    ] {
        let (status, error) = error_of(
            http.post(format!("{}/v1/jobs", h.base_url))
                .bearer_auth(TOKEN)
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(error["field"], field, "{error}");
    }
    let (status, error) = error_of(
        http.post(format!("{}/v1/jobs", h.base_url))
            .bearer_auth(TOKEN)
            .json(&json!({"request": {"model": "fast", "messages": [{"role": "user", "content": "hi"}]},
                          "tags": {"colour": "blue"}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        error["message"].as_str().unwrap().contains("colour"),
        "{error}"
    );
    assert_eq!(h.count("SELECT COUNT(*) FROM jobs").await, 0);
    h.stop().await;
}
