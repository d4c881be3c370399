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

/// `POST /v1/jobs` with one job, as raw HTTP: the status, `retry-after` and the error object.
async fn post_job(h: &Harness, content: &str) -> (u16, Option<String>, Value) {
    let answer = reqwest::Client::new()
        .post(format!("{}/v1/jobs", h.base_url))
        .bearer_auth(TOKEN)
        .json(&json!({"request": {"model": "fast", "messages": [{"role": "user", "content": content}]}}))
        .send()
        .await
        .unwrap();
    let retry_after = answer
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let (status, error) = error_of(answer).await;
    (status, retry_after, error)
}

async fn readyz(h: &Harness) -> (u16, Value) {
    let answer = reqwest::get(format!("{}/readyz", h.base_url))
        .await
        .unwrap();
    (answer.status().as_u16(), answer.json().await.unwrap())
}

/// Makes `path` impossible to write, even for root (the immutable attribute, where the file
/// system has one; else its permissions); false when neither holds here.
fn make_read_only(path: &std::path::Path) -> bool {
    let immutable = std::process::Command::new("chattr")
        .arg("+i")
        .arg(path)
        .status()
        .is_ok_and(|s| s.success());
    if !immutable {
        let mut permissions = std::fs::metadata(path).unwrap().permissions();
        permissions.set_readonly(true);
        std::fs::set_permissions(path, permissions).unwrap();
    }
    std::fs::OpenOptions::new().write(true).open(path).is_err()
}

fn make_writable(path: &std::path::Path) {
    let _ = std::process::Command::new("chattr")
        .arg("-i")
        .arg(path)
        .status();
    let mut permissions = std::fs::metadata(path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    permissions.set_readonly(false);
    std::fs::set_permissions(path, permissions).unwrap();
}

/// Sluice starts on a read-only database (it reads well): `/readyz` says it cannot record
/// jobs and why, and a submission is a 503 with `retry-after` saying nothing was accepted,
/// not an opaque 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_database_is_not_ready_and_refuses_jobs_with_a_503() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::test_config(Backend::Embedded, dir.path());
    let database = config.server.database.clone();
    {
        // Every migration applied, then the store closed.
        let store = sluice::store::Store::open(&database).await.unwrap();
        store.reader().close().await;
    }
    if !make_read_only(&database) {
        eprintln!("skipped: cannot make a file read-only here");
        return;
    }
    let h = Harness::start_on(config, dir, false).await;
    let (status, ready) = readyz(&h).await;
    let outcome = async {
        assert_eq!(status, 503, "{ready:#}");
        assert_eq!(ready["store_writable"], false, "{ready:#}");
        assert!(
            ready["problems"].to_string().contains("read-only"),
            "{ready:#}"
        );
        let (status, retry_after, error) = post_job(&h, "to a read-only store").await;
        assert_eq!(status, 503, "{error}");
        assert_eq!(error["type"], "store_unavailable", "{error}");
        let message = error["message"].as_str().unwrap();
        assert!(
            message.contains("read-only") && message.contains("nothing was accepted"),
            "{message}"
        );
        assert!(retry_after.is_some(), "no retry-after");
        assert_eq!(h.count("SELECT COUNT(*) FROM jobs").await, 0);
    };
    // Writable again whatever happened, so the folder can be deleted.
    let result = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(outcome)).await;
    make_writable(&database);
    h.stop().await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// A write the database refuses (full: here SQLite's own page limit, which fails a write
/// with the code a full disk does) is a 503 with `retry-after`, and once there is room
/// again the same request is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_the_database_refuses_is_a_503_and_the_store_recovers() {
    let h = Harness::start_with(Backend::Embedded, |_| {}, false).await;
    let limit = |pages: Option<i64>| {
        let store = h.app.store.clone();
        async move {
            store
                .write(move |conn| {
                    Box::pin(async move {
                        let sql = match pages {
                            Some(pages) => format!("PRAGMA max_page_count = {pages}"),
                            None => "PRAGMA max_page_count = 1073741823".to_string(),
                        };
                        sqlx::query(&sql).execute(&mut *conn).await?;
                        Ok(())
                    })
                })
                .await
                .unwrap()
        }
    };
    let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
        .fetch_one(h.app.store.reader())
        .await
        .unwrap();
    limit(Some(pages)).await;
    // A prompt larger than a page: it needs new ones.
    let big = "x".repeat(64 << 10);
    let (status, retry_after, error) = post_job(&h, &big).await;
    assert_eq!(status, 503, "{error}");
    assert_eq!(error["type"], "store_unavailable", "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("full"),
        "{error}"
    );
    assert_eq!(retry_after.as_deref(), Some("5"));
    assert_eq!(h.count("SELECT COUNT(*) FROM jobs").await, 0);

    limit(None).await;
    let (status, _, answer) = post_job(&h, &big).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(h.count("SELECT COUNT(*) FROM jobs").await, 1);
    h.stop().await;
}
