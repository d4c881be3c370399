//! The errors the HTTP layer answers before any handler runs (no such endpoint, a method the
//! endpoint does not take, a body over the limit) and the submission checks of a request's
//! standard parameters: each in the API's JSON error shape, naming what is wrong, with
//! nothing recorded. Also the answers when the server cannot take a request: a store that
//! cannot write (read-only, full), too many large bodies at once; and what `/readyz` and
//! `/v1/providers` say about the process.

use crate::common;

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
    let database = config
        .server
        .database
        .sqlite_path()
        .expect("the test store is a SQLite file")
        .to_owned();
    {
        // Every migration applied, then the store closed.
        let store = sluice::store::Store::open(&database).await.unwrap();
        store.sqlite_reader().unwrap().close().await;
    }
    // Its connections close in tasks of their own; until they have, a new connection in
    // this process would share their writable file descriptor.
    common::eventually(
        "the closed store's connections to release the file",
        std::time::Duration::from_secs(10),
        async || {
            let open = std::fs::read_dir("/proc/self/fd")
                .map(|fds| {
                    fds.flatten().any(|fd| {
                        std::fs::read_link(fd.path()).is_ok_and(|target| target == database)
                    })
                })
                .unwrap_or(false);
            !open
        },
    )
    .await;
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
                        let conn = conn.into_sqlite("PRAGMA max_page_count")?;
                        sqlx::query(&sql).execute(&mut *conn).await?;
                        Ok(())
                    })
                })
                .await
                .unwrap()
        }
    };
    let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
        .fetch_one(h.app.store.sqlite_reader().unwrap())
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

/// Unmounts a file system when dropped.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Writes zeros into `dir` until its file system is full; returns the file.
fn fill(dir: &std::path::Path) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 64 << 10];
    while file.write_all(&chunk).is_ok() {}
    let _ = file.sync_all();
    path
}

/// A full disk (a 24 MiB tmpfs of the test's own, so it needs root; skipped elsewhere): a
/// submission is a 503 with `retry-after` naming it, nothing half recorded; once space
/// returns the store takes jobs again and its write-ahead log is checkpointed away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_jobs_with_a_503_and_the_store_recovers_when_space_returns() {
    let disk = tempfile::tempdir().unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"])
        .arg(disk.path())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    }
    let _unmount = Unmount(disk.path().to_owned());
    let home = tempfile::tempdir().unwrap();
    let mut config = common::test_config(Backend::Embedded, home.path());
    config.server.database = disk.path().join("sluice.db").into();
    let wal = disk.path().join("sluice.db-wal");
    let h = Harness::start_on(config, home, false).await;
    assert_eq!(readyz(&h).await.0, 200);

    let filler = fill(disk.path());
    let big = "x".repeat(64 << 10);
    let mut accepted = 0;
    let refused = loop {
        let (status, retry_after, error) = post_job(&h, &big).await;
        match status {
            202 => accepted += 1,
            503 => break (retry_after, error),
            _ => panic!("{status}: {error}"),
        }
        assert!(accepted < 400, "the disk never filled");
    };
    let (retry_after, error) = refused;
    println!("disk full after {accepted} more jobs: {error}");
    assert_eq!(error["type"], "store_unavailable", "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("disk"),
        "{error}"
    );
    assert!(retry_after.is_some());
    assert_eq!(h.count("SELECT COUNT(*) FROM jobs").await, accepted);
    let (status, ready) = readyz(&h).await;
    if status == 503 {
        assert!(ready["problems"].to_string().contains("full"), "{ready:#}");
    }

    // Space returns: jobs are accepted again, and the log goes back into the database.
    std::fs::remove_file(filler).unwrap();
    let (status, _, answer) = post_job(&h, &big).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(h.count("SELECT COUNT(*) FROM jobs").await, accepted + 1);
    assert_eq!(readyz(&h).await.0, 200);
    common::eventually(
        "the write-ahead log to shrink to 4 MiB",
        std::time::Duration::from_secs(10),
        async || match std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0) {
            bytes if bytes <= 4 << 20 => Ok(()),
            bytes => Err(format!("{bytes} bytes")),
        },
    )
    .await;
    h.stop().await;
}

/// Starts a `POST /v1/jobs` of `length` bytes that sends its first MiB and then waits for
/// a permit of `go` before sending the rest; returns the request's task.
fn held_body(
    h: &Harness,
    length: usize,
    go: std::sync::Arc<tokio::sync::Semaphore>,
) -> tokio::task::JoinHandle<(u16, bool, String)> {
    use futures::StreamExt;
    let prefix =
        r#"{"request": {"model": "fast", "messages": [{"role": "user", "content": ""#.to_string();
    let suffix = r#""}]}}"#;
    let filler = length - prefix.len() - suffix.len();
    let first = 1 << 20;
    let head = format!("{prefix}{}", "x".repeat(first));
    let rest = format!("{}{suffix}", "x".repeat(filler - first));
    let body = futures::stream::once(async move { Ok::<_, std::io::Error>(head) }).chain(
        futures::stream::once(async move {
            go.acquire().await.unwrap().forget();
            Ok(rest)
        }),
    );
    let request = reqwest::Client::new()
        .post(format!("{}/v1/jobs", h.base_url))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .header("content-length", length)
        .body(reqwest::Body::wrap_stream(body));
    tokio::spawn(async move {
        let answer = request.send().await.unwrap();
        let status = answer.status().as_u16();
        let retry_after = answer.headers().contains_key("retry-after");
        let text = answer.text().await.unwrap();
        println!("held body: {status} {text}");
        (status, retry_after, text)
    })
}

/// Request bodies held at once are bounded across requests: of three 63.5 MiB bodies sent at
/// once, any two fit the 128 MiB bound and no three do, so whichever comes last is refused at
/// once with a 503 naming the bound, unread, while the other two are held; once they are
/// done, a body is read again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_large_bodies_are_bounded_in_total() {
    let h = Harness::start_with(Backend::Embedded, |_| {}, false).await;
    let go = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let held: Vec<_> = (0..3)
        .map(|_| held_body(&h, (63 << 20) + (512 << 10), go.clone()))
        .collect();
    // Only the refused one can finish before `go`: the others wait for their permits.
    let (refused, _, others) = futures::future::select_all(held).await;
    let (status, retry_after, text) = refused.unwrap();
    assert_eq!(status, 503, "{text}");
    assert!(retry_after);
    let error: Value = serde_json::from_str(&text).unwrap();
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("128 MiB"), "{message}");
    assert!(message.contains("nothing was accepted"), "{message}");

    go.add_permits(2);
    // Read once they are sent whole (whether the job is then accepted is another matter).
    for answer in futures::future::join_all(others).await {
        let (status, _, text) = answer.unwrap();
        assert_ne!(status, 503, "{text}");
    }
    // 2 MiB that is not JSON: read (a 400) now that the bound has room again.
    let answer = reqwest::Client::new()
        .post(format!("{}/v1/jobs", h.base_url))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(" ".repeat(2 << 20))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400, "the bound was not given back");
    h.stop().await;
}

/// `GET /v1/providers` on a process without workers: its deployments look healthy with no
/// calls whatever the workers see, and the answer says plainly whose view it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_providers_view_says_it_is_the_process_own() {
    let h = Harness::start_with(Backend::Embedded, |_| {}, false).await;
    let answer = h.providers().await;
    assert_eq!(answer["scope"], "process", "{answer:#}");
    let note = answer["note"].as_str().unwrap();
    assert!(
        note.contains("this process") && note.contains("--no-workers"),
        "{note}"
    );
    assert!(!answer["data"].as_array().unwrap().is_empty());
    h.stop().await;
}

/// Repeated unknown tokens from one address are slowed down: after ten within a minute, its
/// requests are answered 429 with `retry-after`, even with a good token, without the token
/// being looked at; another tenant's token still names only that tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_unknown_tokens_from_one_address_are_slowed_down() {
    let h = Harness::start_with(Backend::Embedded, |_| {}, false).await;
    let http = reqwest::Client::new();
    let models = |token: &'static str| {
        http.get(format!("{}/v1/models", h.base_url))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(models(TOKEN).await.unwrap().status(), 200);
    assert_eq!(models(common::OTHER_TOKEN).await.unwrap().status(), 200);
    // Guesses of every length, one sharing the good token's prefix.
    for guess in [
        "x",
        "sk-test-acm",
        "sk-test-acmf",
        "sk-test-acme-but-longer",
    ]
    .iter()
    .cycle()
    .take(10)
    {
        let answer = models(guess).await.unwrap();
        assert_eq!(answer.status(), 401, "{guess}");
    }
    let throttled = models(TOKEN).await.unwrap();
    assert_eq!(throttled.status(), 429);
    let wait: u64 = throttled.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    let (_, error) = error_of(throttled).await;
    assert_eq!(error["type"], "too_many_failed_authentications", "{error}");
    h.stop().await;
}
