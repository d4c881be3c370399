//! OpenAI's Files and Batches API over Sluice's bulks, on both queue backends: upload, create,
//! poll, download the output and error files; cancel; tenants; bad requests and bad files;
//! listing and deleting files; a batch whose submission a crash cut short, resumed at start.
//! Once, on PostgreSQL: two apps on one database and one RabbitMQ prefix, each with a folder of
//! its own, a file uploaded through one and batched through the other.
//! (`tests/suite/sdk.rs` runs the same workflow through the official `openai` Python SDK.)

use crate::common;

use common::{Backend, Harness, OTHER_TOKEN, TOKEN};
use serde_json::{json, Value};
use sluice::api::batches::batch_id;
use sluice::store::{NewBatch, Store};
use std::time::Duration;
use uuid::Uuid;

/// The tenant of `TOKEN`.
const TENANT: &str = "acme";

/// A tenant's view of the API over plain HTTP.
struct Api {
    http: reqwest::Client,
    root: String,
    token: &'static str,
}

impl Api {
    fn new(h: &Harness, token: &'static str) -> Api {
        Api {
            http: reqwest::Client::new(),
            root: h.base_url.clone(),
            token,
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let answer = request.bearer_auth(self.token).send().await.unwrap();
        let status = answer.status().as_u16();
        let text = answer.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.http.get(format!("{}{path}", self.root)))
            .await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(self.http.post(format!("{}{path}", self.root)).json(&body))
            .await
    }

    async fn delete(&self, path: &str) -> (u16, Value) {
        self.send(self.http.delete(format!("{}{path}", self.root)))
            .await
    }

    /// The ids of a `GET /v1/files` page, and the page.
    async fn list_files(&self, query: &str) -> (Vec<String>, Value) {
        let (status, page) = self.get(&format!("/v1/files{query}")).await;
        assert_eq!(status, 200, "{page}");
        let ids = page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["id"].as_str().unwrap().to_string())
            .collect();
        (ids, page)
    }

    async fn text(&self, path: &str) -> (u16, String) {
        let answer = self
            .http
            .get(format!("{}{path}", self.root))
            .bearer_auth(self.token)
            .send()
            .await
            .unwrap();
        (answer.status().as_u16(), answer.text().await.unwrap())
    }

    /// `POST /v1/files`, the multipart form written by hand.
    async fn upload(&self, content: &str, purpose: &str) -> (u16, Value) {
        let boundary = "sluice-test-boundary";
        let body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n{purpose}\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\n\
             Content-Type: application/jsonl\r\n\r\n{content}\r\n--{boundary}--\r\n"
        );
        self.send(
            self.http
                .post(format!("{}/v1/files", self.root))
                .header(
                    "content-type",
                    format!("multipart/form-data; boundary={boundary}"),
                )
                .body(body),
        )
        .await
    }

    async fn create(&self, file_id: &str) -> Value {
        let (status, batch) = self
            .post(
                "/v1/batches",
                json!({"input_file_id": file_id, "endpoint": "/v1/chat/completions",
                       "completion_window": "24h", "metadata": {"job": "nightly"}}),
            )
            .await;
        assert_eq!(status, 200, "{batch}");
        batch
    }

    /// Polls the batch until its status is one of `statuses`.
    async fn until(&self, id: &str, statuses: &[&str]) -> Value {
        self.until_batch(id, statuses, |_| true).await
    }

    /// Polls the batch until its status is one of `statuses` and `also` holds.
    async fn until_batch(
        &self,
        id: &str,
        statuses: &[&str],
        also: impl Fn(&Value) -> bool,
    ) -> Value {
        common::eventually(
            &format!("batch {id} to reach {statuses:?}"),
            Duration::from_secs(60),
            async || {
                let (status, batch) = self.get(&format!("/v1/batches/{id}")).await;
                assert_eq!(status, 200, "{batch}");
                if statuses.contains(&batch["status"].as_str().unwrap()) && also(&batch) {
                    Ok(batch)
                } else {
                    Err(batch)
                }
            },
        )
        .await
    }
}

fn line(custom_id: &str, content: &str) -> String {
    json!({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
           "body": {"model": "fast", "messages": [{"role": "user", "content": content}]}})
    .to_string()
}

fn jsonl(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn a_batch_runs_to_completed_with_output_and_error_files(backend: Backend) {
    let h = Harness::start(backend).await;
    let api = Api::new(&h, TOKEN);
    let input: String = (1..=6)
        .map(|i| {
            let content = if i == 4 {
                "[sim fail=400] refuse this".to_string()
            } else {
                format!("question {i}")
            };
            line(&format!("req-{i}"), &content) + "\n"
        })
        .collect();
    let (status, file) = api.upload(&input, "batch").await;
    assert_eq!(status, 200, "{file}");
    let file_id = file["id"].as_str().unwrap();
    assert!(file_id.starts_with("file-"));
    assert_eq!(file["object"], "file");
    assert_eq!(file["bytes"], input.len());
    assert_eq!(file["purpose"], "batch");
    assert_eq!(api.get(&format!("/v1/files/{file_id}")).await.1, file);
    assert_eq!(
        api.text(&format!("/v1/files/{file_id}/content")).await,
        (200, input.clone())
    );

    let batch = api.create(file_id).await;
    let id = batch["id"].as_str().unwrap();
    assert!(id.starts_with("batch_"), "{batch}");
    assert_eq!(batch["object"], "batch");
    assert_eq!(batch["input_file_id"], file_id);
    assert_eq!(batch["metadata"], json!({"job": "nightly"}));
    assert_eq!(
        batch["expires_at"].as_i64().unwrap() - batch["created_at"].as_i64().unwrap(),
        24 * 3600
    );
    assert!(batch["output_file_id"].is_null());

    let done = api.until(id, &["completed", "failed"]).await;
    assert_eq!(done["status"], "completed", "{done:#}");
    assert_eq!(
        done["request_counts"],
        json!({"total": 6, "completed": 5, "failed": 1})
    );
    assert!(done["completed_at"].as_i64().unwrap() >= done["created_at"].as_i64().unwrap());
    assert!(done["in_progress_at"].is_i64());
    assert!(done["usage"]["output_tokens"].as_u64().unwrap() > 0);

    // The output file: one line per succeeded request, bodies answering each input line.
    let output_id = done["output_file_id"].as_str().unwrap();
    let (status, output) = api.text(&format!("/v1/files/{output_id}/content")).await;
    assert_eq!(status, 200);
    let lines = jsonl(&output);
    let ids: Vec<&str> = lines
        .iter()
        .map(|l| l["custom_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["req-1", "req-2", "req-3", "req-5", "req-6"]);
    for l in &lines {
        assert_eq!(l["response"]["status_code"], 200);
        assert_eq!(l["response"]["body"]["object"], "chat.completion");
        assert!(l["error"].is_null());
    }
    let (status, object) = api.get(&format!("/v1/files/{output_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(object["bytes"], output.len());

    // The error file: the refused request, with the provider's status.
    let error_id = done["error_file_id"].as_str().unwrap();
    let errors = jsonl(&api.text(&format!("/v1/files/{error_id}/content")).await.1);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["custom_id"], "req-4");
    assert_eq!(errors[0]["response"]["status_code"], 400);

    // Every success was routed and charged like any job.
    let bulk = done["sluice"]["bulk_id"].as_str().unwrap();
    assert_eq!(
        h.count(&format!(
            "SELECT COUNT(*) FROM costs c JOIN jobs j ON j.id = c.job_id WHERE j.bulk_id = '{bulk}' AND j.urgency = 'batch'"
        ))
        .await,
        5
    );

    // The list shows it; another tenant sees none of it.
    let (_, list) = api.get("/v1/batches?limit=5").await;
    assert_eq!(list["data"][0]["id"], id);
    let other = Api::new(&h, OTHER_TOKEN);
    for path in [
        format!("/v1/batches/{id}"),
        format!("/v1/files/{file_id}"),
        format!("/v1/files/{file_id}/content"),
        format!("/v1/files/{output_id}/content"),
    ] {
        let (status, body) = other.get(&path).await;
        assert_eq!(status, 404, "{path}: {body}");
    }
    assert_eq!(other.get("/v1/batches").await.1["data"], json!([]));
    assert_eq!(
        other
            .post(&format!("/v1/batches/{id}/cancel"), json!({}))
            .await
            .0,
        404
    );
    assert_eq!(other.delete(&format!("/v1/files/{file_id}")).await.0, 404);
    assert_eq!(other.delete(&format!("/v1/files/{output_id}")).await.0, 404);

    // Output files are views and cannot be deleted; the input file can once the batch has
    // all its jobs, and the batch and its output stay readable.
    let (status, e) = api.delete(&format!("/v1/files/{output_id}")).await;
    assert_eq!(status, 400, "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("view"),
        "{e}"
    );
    let (status, deleted) = api.delete(&format!("/v1/files/{file_id}")).await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(
        deleted,
        json!({"id": file_id, "object": "file", "deleted": true})
    );
    assert_eq!(
        api.get(&format!("/v1/batches/{id}")).await.1["status"],
        "completed"
    );
    assert_eq!(
        api.text(&format!("/v1/files/{output_id}/content")).await,
        (200, output)
    );
    h.stop().await;
}

async fn a_cancelled_batch_reports_its_queued_requests_as_cancelled(backend: Backend) {
    // No workers: every job stays queued until the cancel.
    let h = Harness::start_with(backend, |_| {}, false).await;
    let api = Api::new(&h, TOKEN);
    let input: String = (1..=3)
        .map(|i| line(&format!("c-{i}"), "wait") + "\n")
        .collect();
    let file = api.upload(&input, "batch").await.1;
    let batch = api.create(file["id"].as_str().unwrap()).await;
    let id = batch["id"].as_str().unwrap();
    // in_progress as soon as the file passed validation; wait for its jobs to be recorded.
    api.until_batch(id, &["in_progress"], |batch| {
        batch["request_counts"]["total"] == 3
    })
    .await;

    let (status, cancelled) = api
        .post(&format!("/v1/batches/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    assert!(cancelled["cancelled_at"].is_i64() && cancelled["cancelling_at"].is_i64());
    assert_eq!(
        cancelled["request_counts"],
        json!({"total": 3, "completed": 0, "failed": 3})
    );
    assert!(cancelled["output_file_id"].is_null());
    let errors = jsonl(
        &api.text(&format!(
            "/v1/files/{}/content",
            cancelled["error_file_id"].as_str().unwrap()
        ))
        .await
        .1,
    );
    assert_eq!(errors.len(), 3);
    assert!(errors
        .iter()
        .all(|e| e["error"]["code"] == "batch_cancelled"));
    h.stop().await;
}

async fn bad_requests_are_400s_and_a_bad_file_fails_the_batch(backend: Backend) {
    let h = Harness::start(backend).await;
    let api = Api::new(&h, TOKEN);
    let good = api.upload(&(line("a", "hi") + "\n"), "batch").await.1;
    let good = good["id"].as_str().unwrap();

    let create = |body: Value| api.post("/v1/batches", body);
    let (status, e) = create(
        json!({"input_file_id": good, "endpoint": "/v1/embeddings", "completion_window": "24h"}),
    )
    .await;
    assert_eq!(status, 400, "{e}");
    assert_eq!(e["error"]["param"], "endpoint");
    let (status, e) = create(json!({"input_file_id": good, "endpoint": "/v1/chat/completions", "completion_window": "1h"})).await;
    assert_eq!(
        (status, e["error"]["param"].clone()),
        (400, json!("completion_window"))
    );
    let (status, e) = create(json!({"input_file_id": "file-nope", "endpoint": "/v1/chat/completions", "completion_window": "24h"})).await;
    assert_eq!(
        (status, e["error"]["param"].clone()),
        (404, json!("input_file_id"))
    );
    let (status, e) = api.upload("{}", "fine-tune").await;
    assert_eq!(
        (status, e["error"]["param"].clone()),
        (400, json!("purpose"))
    );
    assert_eq!(api.get("/v1/batches/batch_nope").await.0, 404);

    // A file with bad lines: the batch is created, then fails with every bad line.
    let bad = format!(
        "{}\nnot json\n{}\n{}\n",
        line("x", "fine"),
        line("x", "duplicate id"),
        json!({"custom_id": "y", "body": {"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]}})
    );
    let file = api.upload(&bad, "batch").await.1;
    let batch = api.create(file["id"].as_str().unwrap()).await;
    let failed = api
        .until(batch["id"].as_str().unwrap(), &["failed", "completed"])
        .await;
    assert_eq!(failed["status"], "failed", "{failed:#}");
    assert!(failed["failed_at"].is_i64());
    assert_eq!(failed["errors"]["object"], "list");
    let lines: Vec<u64> = failed["errors"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [2, 3, 4], "{failed:#}");
    assert_eq!(failed["request_counts"]["total"], 0);
    assert_eq!(h.count("SELECT COUNT(*) FROM jobs").await, 0);
    h.stop().await;
}

/// A batch record for `file`, as `POST /v1/batches` makes it (window from now).
fn new_batch(id: Uuid, file: &str) -> NewBatch {
    NewBatch {
        id,
        name: batch_id(id),
        endpoint: "/v1/chat/completions".into(),
        metadata: None,
        input_file_id: file.into(),
        completion_window: "24h".into(),
        expires_at: (chrono::Utc::now() + chrono::TimeDelta::hours(24)).timestamp_millis(),
    }
}

async fn files_are_listed_by_page_and_deleted_unless_a_batch_still_reads_them(backend: Backend) {
    let h = Harness::start(backend).await;
    let api = Api::new(&h, TOKEN);
    let mut ids = Vec::new();
    for i in 1..=3 {
        let (status, file) = api
            .upload(&(line(&format!("l-{i}"), "hi") + "\n"), "batch")
            .await;
        assert_eq!(status, 200, "{file}");
        ids.push(file["id"].as_str().unwrap().to_string());
    }
    let other = Api::new(&h, OTHER_TOKEN);
    let theirs = other.upload(&(line("g", "hi") + "\n"), "batch").await.1;
    let (f1, f2, f3) = (ids[0].as_str(), ids[1].as_str(), ids[2].as_str());

    // OpenAI's page: newest first by default, the cursor, the order, the purpose.
    let (listed, page) = api.list_files("").await;
    assert_eq!(listed, [f3, f2, f1]);
    assert_eq!(page["object"], "list");
    assert_eq!(page["has_more"], false);
    assert_eq!(
        (&page["first_id"], &page["last_id"]),
        (&json!(f3), &json!(f1))
    );
    assert_eq!(page["data"][2], api.get(&format!("/v1/files/{f1}")).await.1);
    let (listed, page) = api.list_files("?limit=2").await;
    assert_eq!(listed, [f3, f2]);
    assert_eq!(page["has_more"], true);
    let (listed, page) = api.list_files(&format!("?limit=2&after={f2}")).await;
    assert_eq!(listed, [f1]);
    assert_eq!(page["has_more"], false);
    assert_eq!(api.list_files("?order=asc").await.0, [f1, f2, f3]);
    assert_eq!(
        api.list_files(&format!("?order=asc&after={f1}")).await.0,
        [f2, f3]
    );
    assert_eq!(api.list_files("?purpose=batch").await.0.len(), 3);
    assert!(api.list_files("?purpose=fine-tune").await.0.is_empty());
    for (query, param) in [
        ("?limit=0", "limit"),
        ("?limit=10001", "limit"),
        ("?order=sideways", "order"),
        ("?after=batch_1", "after"),
    ] {
        let (status, e) = api.get(&format!("/v1/files{query}")).await;
        assert_eq!(
            (status, &e["error"]["param"]),
            (400, &json!(param)),
            "{query}: {e}"
        );
    }
    // Tenants see only their own.
    assert_eq!(
        other.list_files("").await.0,
        [theirs["id"].as_str().unwrap()]
    );

    // Delete: the record and the bytes go; another tenant's delete is a 404.
    assert_eq!(other.delete(&format!("/v1/files/{f1}")).await.0, 404);
    assert!(bytes_kept(&h.app.store, f1).await);
    let (status, deleted) = api.delete(&format!("/v1/files/{f1}")).await;
    assert_eq!(
        (status, deleted),
        (200, json!({"id": f1, "object": "file", "deleted": true}))
    );
    assert!(!bytes_kept(&h.app.store, f1).await, "{f1}'s bytes are left");
    assert_eq!(api.get(&format!("/v1/files/{f1}")).await.0, 404);
    assert_eq!(api.delete(&format!("/v1/files/{f1}")).await.0, 404);
    assert_eq!(api.delete("/v1/files/nope").await.0, 404);
    assert_eq!(api.list_files("").await.0, [f3, f2]);
    // A batch can no longer be made of it, even by a create that read the file before the
    // delete (the insert checks again).
    let (status, e) = api
        .post(
            "/v1/batches",
            json!({"input_file_id": f1, "endpoint": "/v1/chat/completions", "completion_window": "24h"}),
        )
        .await;
    assert_eq!(
        (status, &e["error"]["param"]),
        (404, &json!("input_file_id")),
        "{e}"
    );
    assert!(!h
        .app
        .store
        .create_batch(TENANT, new_batch(Uuid::now_v7(), f1))
        .await
        .unwrap());

    // A batch recorded but not yet submitted (as a crash leaves one) still needs its file: 409.
    let pending = Uuid::now_v7();
    assert!(h
        .app
        .store
        .create_batch(TENANT, new_batch(pending, f2))
        .await
        .unwrap());
    let (status, e) = api.delete(&format!("/v1/files/{f2}")).await;
    assert_eq!(status, 409, "{e}");
    assert_eq!(e["error"]["code"], "file_in_use");
    assert_eq!(e["error"]["batch_id"], batch_id(pending));
    assert!(bytes_kept(&h.app.store, f2).await);
    // Once cancelled, nothing will read it again.
    let (status, cancelled) = api
        .post(
            &format!("/v1/batches/{}/cancel", batch_id(pending)),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(api.delete(&format!("/v1/files/{f2}")).await.0, 200);
    h.stop().await;
}

/// Writes `content` into `store` as the tenant's uploaded batch file; returns its id.
async fn stored_file(store: &Store, content: &str) -> String {
    let mut upload = store.new_upload().await.unwrap();
    upload.write(content.as_bytes()).await.unwrap();
    let record = upload.keep(TENANT, "in.jsonl", "batch").await.unwrap();
    record.id
}

/// Whether any bytes of file `id` are kept: in its folder, or in the store's chunks.
async fn bytes_kept(store: &Store, id: &str) -> bool {
    match store.file_path(id) {
        Some(path) => path.exists(),
        None => {
            let chunks: i64 = sluice::with_pool!(store.pool(), p => sqlx::query_scalar(
                "SELECT COUNT(*) FROM file_chunks WHERE file_id = $1",
            )
            .bind(id)
            .fetch_one(p)
            .await
            .unwrap());
            chunks > 0
        }
    }
}

async fn a_batch_whose_submission_was_cut_short_is_resumed_at_start(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (config, database) = common::test_config_with_store(backend, dir.path()).await;
    let input: String = (1..=10)
        .map(|i| line(&format!("r-{i}"), &format!("resumed question {i}")) + "\n")
        .collect();

    // The process that crashes: it records the batch, finds the file valid and submits the
    // first four lines as `POST /v1/batches`'s task does (recorded, published), then stops.
    let id = Uuid::now_v7();
    let (file, started_at) = {
        let app = sluice::app::App::start(config.clone().resolve().unwrap())
            .await
            .unwrap();
        if let Some(amqp) = app.queue_as_amqp() {
            amqp.wait_connected(Duration::from_secs(10)).await.unwrap();
        }
        let file = stored_file(&app.store, &input).await;
        let batch = new_batch(id, &file);
        let defaults = sluice::bulk::Defaults {
            deadline: chrono::DateTime::from_timestamp_millis(batch.expires_at),
            ..sluice::bulk::Defaults::default()
        };
        assert!(app.store.create_batch(TENANT, batch).await.unwrap());
        let submitter = app.submitter();
        let opened = app.store.open_bulk(TENANT, &batch_id(id)).await.unwrap();
        assert_eq!(opened.id, id);
        app.store.start_batch(id).await.unwrap();
        let check = |spec: &sluice::job::JobSpec| submitter.check(spec);
        let first: Vec<_> = input
            .lines()
            .take(4)
            .zip(1..)
            .map(|(text, n)| {
                let spec =
                    sluice::bulk::validate::job_of_line(n, text.as_bytes(), &defaults, &check);
                (n, spec.unwrap())
            })
            .collect();
        submitter.submit_to_bulk(TENANT, id, first).await.unwrap();
        assert_eq!(
            app.store.unfinished_batches().await.unwrap()[0].id,
            id,
            "the cut-short batch is unfinished"
        );
        // The file is still needed.
        assert_eq!(
            app.store.delete_file(TENANT, &file).await.unwrap(),
            sluice::store::DeleteOutcome::InUse(id)
        );
        let started = app.store.batch_fields(id).await.unwrap().in_progress_at;
        (file, started)
    };

    // A fresh process on the same database, file store and queue resumes it.
    let mut h = Harness::start_on(config, dir, true).await;
    h.postgres = database;
    let api = Api::new(&h, TOKEN);
    let done = api.until(&batch_id(id), &["completed", "failed"]).await;
    assert_eq!(done["status"], "completed", "{done:#}");
    assert_eq!(
        done["request_counts"],
        json!({"total": 10, "completed": 10, "failed": 0})
    );
    // Every line became exactly one job, answered and charged once.
    let bulk = format!("bulk_id = '{id}'");
    assert_eq!(
        h.count(&format!("SELECT COUNT(*) FROM jobs WHERE {bulk}"))
            .await,
        10
    );
    assert_eq!(
        h.count(&format!(
            "SELECT COUNT(DISTINCT custom_id) + COUNT(DISTINCT bulk_line) FROM jobs WHERE {bulk}"
        ))
        .await,
        20
    );
    assert_eq!(
        h.count(&format!(
            "SELECT COUNT(*) FROM costs c JOIN jobs j ON j.id = c.job_id WHERE j.{bulk}"
        ))
        .await,
        10
    );
    assert_eq!(
        h.app.store.batch_fields(id).await.unwrap().in_progress_at,
        started_at,
        "a resumed batch keeps the time it first started"
    );
    assert!(h.app.store.unfinished_batches().await.unwrap().is_empty());
    let output = done["output_file_id"].as_str().unwrap();
    let results = jsonl(&api.text(&format!("/v1/files/{output}/content")).await.1);
    let ids: Vec<&str> = results
        .iter()
        .map(|r| r["custom_id"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (1..=10).map(|i| format!("r-{i}")).collect();
    assert_eq!(ids, expected);
    // Submission finished: the input file may go now.
    assert_eq!(api.delete(&format!("/v1/files/{file}")).await.0, 200);
    h.stop().await;
}

/// A cancel that lands between a submission's check of the bulk and its insert (`batches.create`
/// then at once `batches.cancel`): the lines the submission still holds are refused by the
/// transaction that would record them, so nothing of the cancelled batch runs or is charged.
async fn a_cancelled_batch_takes_no_more_lines(backend: Backend) {
    let h = Harness::start(backend).await;
    let api = Api::new(&h, TOKEN);
    let input: String = (1..=10)
        .map(|i| line(&format!("k-{i}"), &format!("cancelled question {i}")) + "\n")
        .collect();
    let file = stored_file(&h.app.store, &input).await;
    let id = Uuid::now_v7();
    let batch = new_batch(id, &file);
    let defaults = sluice::bulk::Defaults {
        deadline: chrono::DateTime::from_timestamp_millis(batch.expires_at),
        ..sluice::bulk::Defaults::default()
    };
    assert!(h.app.store.create_batch(TENANT, batch).await.unwrap());
    // The submission has opened the bulk and checked it was not cancelled ...
    let opened = h.app.store.open_bulk(TENANT, &batch_id(id)).await.unwrap();
    assert!(!opened.cancelled);
    h.app.store.start_batch(id).await.unwrap();
    // ... when the cancel comes.
    let (status, cancelled) = api
        .post(&format!("/v1/batches/{}/cancel", batch_id(id)), json!({}))
        .await;
    assert_eq!(status, 200, "{cancelled}");
    let submitter = h.app.submitter();
    let check = |spec: &sluice::job::JobSpec| submitter.check(spec);
    let lines: Vec<_> = input
        .lines()
        .zip(1..)
        .map(|(text, n)| {
            let spec = sluice::bulk::validate::job_of_line(n, text.as_bytes(), &defaults, &check);
            (n, spec.unwrap())
        })
        .collect();
    let refused = submitter.submit_to_bulk(TENANT, id, lines).await;
    assert!(
        refused.is_err(),
        "a cancelled bulk took {} lines",
        refused.map(|answers| answers.len()).unwrap_or_default()
    );
    let bulk = format!("bulk_id = '{id}'");
    assert_eq!(
        h.count(&format!("SELECT COUNT(*) FROM jobs WHERE {bulk}"))
            .await,
        0
    );
    let done = api.until(&batch_id(id), &["cancelled"]).await;
    assert_eq!(
        done["request_counts"],
        json!({"total": 0, "completed": 0, "failed": 0}),
        "{done:#}"
    );

    // The whole race through the API: whatever moment the cancel lands, the batch has no
    // more jobs after it than the cancel's answer counted.
    let file = api.upload(&input, "batch").await.1;
    let batch = api.create(file["id"].as_str().unwrap()).await;
    let id = batch["id"].as_str().unwrap();
    let (status, cancelled) = api
        .post(&format!("/v1/batches/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200, "{cancelled}");
    let done = api.until(id, &["cancelled"]).await;
    assert_eq!(
        done["request_counts"]["total"], cancelled["request_counts"]["total"],
        "jobs were added after the cancel: {done:#}"
    );
    h.stop().await;
}

on_all_backends!(
    a_batch_runs_to_completed_with_output_and_error_files,
    a_cancelled_batch_reports_its_queued_requests_as_cancelled,
    bad_requests_are_400s_and_a_bad_file_fails_the_batch,
    files_are_listed_by_page_and_deleted_unless_a_batch_still_reads_them,
    a_batch_whose_submission_was_cut_short_is_resumed_at_start,
    a_cancelled_batch_takes_no_more_lines,
);

/// Two Sluice apps on one PostgreSQL database and one RabbitMQ prefix, as two machines: each
/// has a temporary folder of its own and no folder is shared, so a file uploaded through A
/// reaches B only through the store. B reads it, makes the batch of it and submits its lines;
/// A's workers answer them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_uploaded_through_one_app_is_batched_through_another() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (config, database) = common::test_config_with_store(Backend::Postgres, dir_a.path()).await;
    assert!(
        config.server.files.is_none(),
        "no folder: bytes in the store"
    );
    let mut a = Harness::start_on(config.clone(), dir_a, true).await;
    a.postgres = database;
    let b = Harness::start_on(config, dir_b, false).await;
    for app in [&a.app, &b.app] {
        assert_eq!(app.store.file_bytes(), &sluice::config::FileBytes::Store);
    }
    let (api_a, api_b) = (Api::new(&a, TOKEN), Api::new(&b, TOKEN));

    let input: String = (1..=8)
        .map(|i| line(&format!("m-{i}"), &format!("machine question {i}")) + "\n")
        .collect();
    let (status, file) = api_a.upload(&input, "batch").await;
    assert_eq!(status, 200, "{file}");
    let file_id = file["id"].as_str().unwrap();

    // B sees the file A took: its object, its bytes, and in its list.
    assert_eq!(
        api_b.get(&format!("/v1/files/{file_id}")).await,
        (200, file.clone())
    );
    assert_eq!(
        api_b.text(&format!("/v1/files/{file_id}/content")).await,
        (200, input.clone())
    );
    assert_eq!(api_b.list_files("").await.0, [file_id]);

    let batch = api_b.create(file_id).await;
    let id = batch["id"].as_str().unwrap();
    let done = api_b.until(id, &["completed", "failed"]).await;
    assert_eq!(done["status"], "completed", "{done:#}");
    assert_eq!(
        done["request_counts"],
        json!({"total": 8, "completed": 8, "failed": 0})
    );
    let output = done["output_file_id"].as_str().unwrap();
    let (status, text) = api_b.text(&format!("/v1/files/{output}/content")).await;
    assert_eq!(status, 200, "{text}");
    let results = jsonl(&text);
    let ids: Vec<&str> = results
        .iter()
        .map(|r| r["custom_id"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (1..=8).map(|i| format!("m-{i}")).collect();
    assert_eq!(ids, expected);
    for result in &results {
        assert_eq!(result["response"]["status_code"], 200, "{result}");
    }
    // A reads the same batch; the bytes were in the store, not in either folder.
    assert_eq!(
        api_a.get(&format!("/v1/batches/{id}")).await.1["status"],
        "completed"
    );
    assert!(bytes_kept(&b.app.store, file_id).await);
    for dir in [&a.dir, &b.dir] {
        let entries: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(entries.is_empty(), "{}: {entries:?}", dir.path().display());
    }
    b.stop().await;
    a.stop().await;
}
