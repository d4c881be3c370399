//! Bulk JSONL in and out, on each queue backend: `sluice bulk submit|status|results|cancel`
//! through their library functions (and once through the built binary) against a whole
//! Sluice, and `/v1/bulk` over plain HTTP.

use crate::common;

use common::{prompt, Backend, Harness};
use serde_json::{json, Value};
use sluice::bulk::wire::{BulkRequest, ResultsQuery};
use sluice::bulk::{BulkError, Defaults};
use sluice::client::bulk::{self, BulkCommandError};
use sluice::client::ClientError;
use sluice::job::Urgency;
use std::path::{Path, PathBuf};
use std::time::Duration;
use uuid::Uuid;

on_all_backends!(
    three_line_forms_complete_with_results_in_input_order,
    every_bad_line_of_a_large_file_is_reported_and_nothing_is_enqueued,
    skip_invalid_runs_the_good_lines_and_writes_the_bad_ones_to_rejects,
    the_same_file_twice_is_the_same_bulk_without_duplicates,
    a_changed_line_resubmitted_is_a_conflict_not_a_duplicate,
    cancel_stops_every_queued_job_of_the_bulk,
    another_tenants_bulk_is_a_404,
);

fn request(name: &str, urgency: Urgency) -> BulkRequest {
    BulkRequest {
        name: Some(name.to_string()),
        defaults: Defaults {
            model: Some("fast".into()),
            urgency,
            ..Defaults::default()
        },
        skip_invalid: false,
    }
}

fn write_file(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

fn user(content: &str) -> Value {
    json!([{"role": "user", "content": content}])
}

/// A valid line of each of the three forms, in turn.
fn good_line(i: usize, tag: &str) -> String {
    let messages = user(&prompt(&format!("{tag} {i}")));
    match i % 3 {
        0 => {
            json!({"custom_id": format!("req-{i}"), "method": "POST", "url": "/v1/chat/completions",
                    "body": {"model": "fast", "messages": messages}})
        }
        1 => json!({"custom_id": format!("req-{i}"), "body": {"messages": messages}}),
        _ => json!({"messages": messages}),
    }
    .to_string()
}

fn expected_custom_id(i: usize) -> String {
    match i % 3 {
        0 | 1 => format!("req-{i}"),
        _ => format!("line-{}", i + 1),
    }
}

/// Submits a file through the CLI's library function, without a rejects file or progress bars.
async fn submit_file(
    client: &sluice::client::Client,
    path: &Path,
    request: BulkRequest,
) -> Result<bulk::SubmitReport, BulkCommandError> {
    bulk::submit(client, path, request, None, false).await
}

async fn wait_done(h: &Harness, id: Uuid) -> Value {
    let status = bulk::wait(&h.client, id, Duration::from_secs(120), false)
        .await
        .unwrap();
    assert!(
        matches!(status["status"].as_str(), Some("completed" | "cancelled")),
        "bulk not done within 120 s: {status:#}"
    );
    status
}

async fn results(h: &Harness, id: Uuid, query: ResultsQuery) -> Vec<Value> {
    let out = h
        .dir
        .path()
        .join(format!("results-{}.jsonl", Uuid::now_v7()));
    let (lines, _) = bulk::download_results(&h.client, id, query, Some(&out))
        .await
        .unwrap();
    let text = std::fs::read_to_string(&out).unwrap();
    let parsed: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(parsed.len() as u64, lines);
    parsed
}

async fn three_line_forms_complete_with_results_in_input_order(backend: Backend) {
    let h = Harness::start(backend).await;
    let lines: Vec<String> = (0..30).map(|i| good_line(i, "forms")).collect();
    let path = write_file(h.dir.path(), "forms.jsonl", &lines);
    let report = submit_file(&h.client, &path, request("forms", Urgency::Standard))
        .await
        .unwrap();
    let s = &report.submission;
    assert_eq!(
        (s.lines, s.submitted, s.duplicates, s.rejected),
        (30, 30, 0, 0)
    );
    assert!(s.created);
    assert_eq!(s.name, "forms");

    let status = wait_done(&h, s.id).await;
    assert_eq!(status["status"], "completed", "{status:#}");
    assert_eq!(status["total"], 30);
    assert_eq!(status["counts"]["succeeded"], 30, "{status:#}");
    // The cost so far is the exact sum of the bulk's cost records.
    let summed = h.count("SELECT SUM(amount_pico_usd) FROM costs").await;
    assert!(summed > 0);
    assert_eq!(status["cost"]["amount_pico_usd"], summed);

    let ordered = results(
        &h,
        s.id,
        ResultsQuery {
            ordered: true,
            errors: false,
        },
    )
    .await;
    assert_eq!(ordered.len(), 30);
    for (i, line) in ordered.iter().enumerate() {
        assert_eq!(line["custom_id"], expected_custom_id(i), "{line:#}");
        assert_eq!(line["response"]["status_code"], 200);
        assert_eq!(line["response"]["body"]["object"], "chat.completion");
        assert!(line["error"].is_null());
        // The answer is the one to this line's request: its job holds this line's prompt.
        let job = h
            .client
            .get(line["id"].as_str().unwrap().parse().unwrap(), None)
            .await
            .unwrap();
        assert_eq!(job["custom_id"], expected_custom_id(i));
        assert_eq!(job["result"], line["response"]["body"]);
    }
    assert!(results(
        &h,
        s.id,
        ResultsQuery {
            ordered: false,
            errors: true,
        }
    )
    .await
    .is_empty());
    h.stop().await;
}

async fn every_bad_line_of_a_large_file_is_reported_and_nothing_is_enqueued(backend: Backend) {
    let h = Harness::start(backend).await;
    let mut lines: Vec<String> = (0..10_000).map(|i| good_line(i, "large")).collect();
    lines[99] = "{\"custom_id\": \"broken\", \"body\": {".into(); // line 100: bad JSON
    lines[4_999] =
        json!({"custom_id": "x", "body": {"model": "gpt-9", "messages": user("x")}}).to_string(); // line 5000
    lines[9_999] = json!({"custom_id": "req-3", "body": {"messages": user("again")}}).to_string(); // line 10000: repeats line 4
    lines[7_000] =
        json!({"custom_id": "y", "url": "/v1/embeddings", "body": {"messages": user("x")}})
            .to_string(); // line 7001
    let path = write_file(h.dir.path(), "large.jsonl", &lines);

    let expected = [
        (100, ""),
        (5000, "body.model"),
        (7001, "url"),
        (10000, "custom_id"),
    ];
    match submit_file(&h.client, &path, request("large", Urgency::Batch)).await {
        Err(BulkCommandError::Bulk(BulkError::Invalid {
            lines,
            invalid,
            errors,
        })) => {
            assert_eq!((lines, invalid), (10_000, 4));
            let found: Vec<(u64, &str)> =
                errors.iter().map(|e| (e.line, e.field.as_str())).collect();
            assert_eq!(found, expected);
            assert!(
                errors[0].message.contains("not valid JSON at column"),
                "{}",
                errors[0]
            );
            assert!(
                errors[1].message.contains("unknown model \"gpt-9\""),
                "{}",
                errors[1]
            );
            assert!(
                errors[3].message.contains("already used by line 4"),
                "{}",
                errors[3]
            );
        }
        other => panic!("expected the bad lines, got {other:?}"),
    }

    // The server checks on its own too: a plain upload is refused with every bad line.
    let response = reqwest::Client::new()
        .post(format!("{}/v1/bulk?name=large&model=fast", h.base_url))
        .bearer_auth(common::TOKEN)
        .body(std::fs::read(&path).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["invalid_lines"], 4, "{error:#}");
    let found: Vec<(u64, String)> = error["error"]["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["line"].as_u64().unwrap(),
                l["field"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(found, expected.map(|(l, f)| (l, f.to_string())));

    assert_eq!(
        h.count("SELECT COUNT(*) FROM jobs").await,
        0,
        "nothing recorded"
    );
    assert_eq!(
        h.count("SELECT COUNT(*) FROM bulks").await,
        0,
        "no bulk either"
    );
    assert_eq!(h.sim_requests(), 0);
    h.stop().await;
}

async fn skip_invalid_runs_the_good_lines_and_writes_the_bad_ones_to_rejects(backend: Backend) {
    let h = Harness::start(backend).await;
    let mut lines: Vec<String> = (0..10_000).map(|i| good_line(i, "skip")).collect();
    lines[9] = "not json".into();
    lines[19] = json!({"custom_id": "m", "body": {"model": "fast"}}).to_string();
    lines[29] = json!({"custom_id": "req-0", "body": {"messages": user("dup")}}).to_string();
    let path = write_file(h.dir.path(), "skip.jsonl", &lines);
    let rejects = h.dir.path().join("rejects.jsonl");
    let mut req = request("skip", Urgency::Standard);
    req.skip_invalid = true;
    let report = bulk::submit(&h.client, &path, req, Some(rejects.clone()), false)
        .await
        .unwrap();
    assert_eq!(report.submission.submitted, 9_997);
    assert_eq!(report.submission.rejected, 3);
    assert_eq!(report.rejects.as_deref(), Some(rejects.as_path()));

    let rejected: Vec<Value> = std::fs::read_to_string(&rejects)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary: Vec<(u64, &str, &str)> = rejected
        .iter()
        .map(|r| {
            (
                r["line"].as_u64().unwrap(),
                r["field"].as_str().unwrap(),
                r["input"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (10, "", lines[9].as_str()),
            (20, "body.messages", lines[19].as_str()),
            (30, "custom_id", lines[29].as_str()),
        ]
    );

    let status = wait_done(&h, report.submission.id).await;
    assert_eq!(status["counts"]["succeeded"], 9_997, "{status:#}");
    let out = results(&h, report.submission.id, ResultsQuery::default()).await;
    assert_eq!(out.len(), 9_997);
    // One to one with the valid lines' custom_ids.
    let mut got: Vec<String> = out
        .iter()
        .map(|l| l["custom_id"].as_str().unwrap().to_string())
        .collect();
    let mut want: Vec<String> = (0..10_000)
        .filter(|i| ![9, 19, 29].contains(i))
        .map(expected_custom_id)
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    h.stop().await;
}

async fn the_same_file_twice_is_the_same_bulk_without_duplicates(backend: Backend) {
    let h = Harness::start(backend).await;
    let lines: Vec<String> = (0..20).map(|i| good_line(i, "twice")).collect();
    let path = write_file(h.dir.path(), "twice.jsonl", &lines);
    // The name defaults to the file's name.
    let mut req = request("ignored", Urgency::Standard);
    req.name = None;
    let first = submit_file(&h.client, &path, req.clone())
        .await
        .unwrap()
        .submission;
    let second = submit_file(&h.client, &path, req.clone())
        .await
        .unwrap()
        .submission;
    assert_eq!(first.id, second.id);
    assert_eq!(first.name, "twice.jsonl");
    assert_eq!(
        (first.submitted, first.duplicates, first.created),
        (20, 0, true)
    );
    assert_eq!(
        (second.submitted, second.duplicates, second.created),
        (0, 20, false)
    );

    // A longer version of the file adds only its new lines.
    let mut longer = lines.clone();
    longer.extend((20..25).map(|i| good_line(i, "twice")));
    let path = write_file(h.dir.path(), "twice.jsonl", &longer);
    let third = submit_file(&h.client, &path, req).await.unwrap().submission;
    assert_eq!(
        (third.id, third.submitted, third.duplicates),
        (first.id, 5, 20)
    );

    // The same custom_ids under another name are another bulk's jobs.
    let other = submit_file(&h.client, &path, request("twice-again", Urgency::Standard))
        .await
        .unwrap()
        .submission;
    assert_ne!(other.id, first.id);
    assert_eq!(other.submitted, 25);

    let status = wait_done(&h, first.id).await;
    assert_eq!(status["total"], 25);
    wait_done(&h, other.id).await;
    assert_eq!(h.count("SELECT COUNT(*) FROM jobs").await, 50);
    assert_eq!(h.sim_requests(), 50, "no job ran twice");
    h.stop().await;
}

/// Messages waiting on the work queue of `urgency`, read from the backend itself (the embedded
/// queue's table, or the RabbitMQ queue), not from what the store says it published.
async fn queued_messages(h: &Harness, backend: Backend, urgency: Urgency) -> u64 {
    match backend {
        Backend::Embedded => {
            let sql = format!(
                "SELECT COUNT(*) FROM queue_messages WHERE urgency = '{}'",
                urgency.as_str()
            );
            h.count(&sql).await as u64
        }
        Backend::Rabbitmq | Backend::Postgres => {
            let conn = common::amqp_connection().await;
            let channel = conn.create_channel().await.unwrap();
            let queue = channel
                .queue_declare(
                    h.topology().work_queue(urgency).as_str().into(),
                    lapin::options::QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    lapin::types::FieldTable::default(),
                )
                .await
                .expect("the work queue exists");
            let _ = conn.close(200, "counted".into()).await;
            u64::from(queue.message_count())
        }
    }
}

/// A file resubmitted under its name with line 1 changed and line 2 as it was: line 1 is a
/// conflict naming the job that keeps its custom_id (whose request stays the first one), line
/// 2 a duplicate, and nothing new is recorded or queued. Without workers, so the queue shows
/// every message published.
async fn a_changed_line_resubmitted_is_a_conflict_not_a_duplicate(backend: Backend) {
    let h = Harness::start_with(backend, |_| {}, false).await;
    let (before, after) = (prompt("before the change"), prompt("after the change"));
    let kept = prompt("unchanged");
    let line = |custom_id: &str, content: &str| {
        json!({"custom_id": custom_id, "body": {"messages": user(content)}}).to_string()
    };
    let path = write_file(
        h.dir.path(),
        "conflict.jsonl",
        &[line("changed", &before), line("kept", &kept)],
    );
    let first = submit_file(&h.client, &path, request("conflict", Urgency::Standard))
        .await
        .unwrap()
        .submission;
    assert_eq!(
        (first.submitted, first.duplicates, first.conflicts),
        (2, 0, 0)
    );
    assert_eq!(queued_messages(&h, backend, Urgency::Standard).await, 2);
    let existing: String = sluice::with_pool!(h.app.store.pool(), pool => sqlx::query_scalar("SELECT id FROM jobs WHERE custom_id = 'changed'")
        .fetch_one(pool)
        .await
        .unwrap());

    let path = write_file(
        h.dir.path(),
        "conflict.jsonl",
        &[line("changed", &after), line("kept", &kept)],
    );
    let second = submit_file(&h.client, &path, request("conflict", Urgency::Standard))
        .await
        .unwrap()
        .submission;
    assert_eq!((second.id, second.created), (first.id, false));
    assert_eq!(
        (
            second.submitted,
            second.duplicates,
            second.conflicts,
            second.rejected
        ),
        (0, 1, 1, 0),
        "{second:#?}"
    );
    assert_eq!(second.conflicting.len(), 1, "{second:#?}");
    let conflict = &second.conflicting[0];
    assert_eq!((conflict.line, conflict.field.as_str()), (1, "custom_id"));
    assert!(
        conflict.message.contains("\"changed\"") && conflict.message.contains(&existing),
        "{conflict}"
    );
    assert!(conflict.message.contains("new custom_id"), "{conflict}");

    // The bulk's job keeps its first request, and nothing of the second line was recorded or
    // queued.
    let request: String = sluice::with_pool!(h.app.store.pool(), pool => sqlx::query_scalar("SELECT request FROM jobs WHERE custom_id = 'changed'")
            .fetch_one(pool)
            .await
            .unwrap());
    assert!(
        request.contains(&before) && !request.contains(&after),
        "{request}"
    );
    assert_eq!(h.count("SELECT COUNT(*) FROM jobs").await, 2);
    assert_eq!(queued_messages(&h, backend, Urgency::Standard).await, 2);
    h.stop().await;
}

async fn cancel_stops_every_queued_job_of_the_bulk(backend: Backend) {
    let mut h = Harness::start_with(backend, |_| {}, false).await;
    let lines: Vec<String> = (0..40).map(|i| good_line(i, "cancel")).collect();
    let path = write_file(h.dir.path(), "cancel.jsonl", &lines);
    let s = submit_file(&h.client, &path, request("cancel", Urgency::Batch))
        .await
        .unwrap()
        .submission;
    let answer = h.client.bulk_cancel(s.id).await.unwrap();
    assert_eq!(answer["cancelled"], 40, "{answer:#}");
    assert_eq!(answer["status"], "cancelled");
    // Submitting more to a cancelled bulk is refused.
    match submit_file(&h.client, &path, request("cancel", Urgency::Batch)).await {
        Err(BulkCommandError::Client(ClientError::Api { status: 409, .. })) => {}
        other => panic!("expected 409, got {other:?}"),
    }

    h.start_workers();
    let witness = h.submit("fast", &prompt("after the cancelled bulk")).await;
    assert_eq!(h.wait(witness).await["status"], "succeeded");
    let status = h.client.bulk(s.id).await.unwrap();
    assert_eq!(status["counts"]["cancelled"], 40, "{status:#}");
    assert_eq!(h.sim_requests(), 1, "only the witness reached the provider");
    let errors = results(
        &h,
        s.id,
        ResultsQuery {
            ordered: true,
            errors: true,
        },
    )
    .await;
    assert_eq!(errors.len(), 40);
    assert_eq!(errors[0]["error"]["code"], "batch_cancelled");
    assert!(errors[0]["response"].is_null());
    h.stop().await;
}

/// Cancelling a finished bulk changes nothing and says so, whether asked as a bulk
/// (`sluice bulk cancel`) or as a batch (`POST /v1/batches/{id}/cancel`): one rule, a 409.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_finished_bulk_changes_nothing_and_says_so() {
    let h = Harness::start(Backend::Embedded).await;
    let lines: Vec<String> = (0..3).map(|i| good_line(i, "finished")).collect();
    let path = write_file(h.dir.path(), "finished.jsonl", &lines);
    let s = submit_file(&h.client, &path, request("finished", Urgency::Standard))
        .await
        .unwrap()
        .submission;
    let before = wait_done(&h, s.id).await;
    assert_eq!(before["status"], "completed", "{before:#}");

    match h.client.bulk_cancel(s.id).await {
        Err(ClientError::Api {
            status: 409,
            message,
            ..
        }) => assert!(
            message.contains("already completed") && message.contains("nothing to cancel"),
            "{message}"
        ),
        other => panic!("expected 409, got {other:?}"),
    }
    let after = h.client.bulk(s.id).await.unwrap();
    assert_eq!(after, before, "a refused cancel changed the bulk");

    let batch = format!("batch_{}", s.id.simple());
    let http = reqwest::Client::new();
    let answer = http
        .post(format!("{}/v1/batches/{batch}/cancel", h.base_url))
        .bearer_auth(common::TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 409);
    let body: Value = answer.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already completed"),
        "{body}"
    );
    let view: Value = http
        .get(format!("{}/v1/batches/{batch}", h.base_url))
        .bearer_auth(common::TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["status"], "completed", "{view:#}");
    assert!(
        view["cancelled_at"].is_null() && view["cancelling_at"].is_null(),
        "{view:#}"
    );
    h.stop().await;
}

async fn another_tenants_bulk_is_a_404(backend: Backend) {
    let h = Harness::start(backend).await;
    let lines: Vec<String> = (0..3).map(|i| good_line(i, "mine")).collect();
    let path = write_file(h.dir.path(), "mine.jsonl", &lines);
    let s = submit_file(&h.client, &path, request("mine", Urgency::Standard))
        .await
        .unwrap()
        .submission;
    let is_404 = |r: Result<Value, ClientError>| {
        assert!(
            matches!(r, Err(ClientError::Api { status: 404, .. })),
            "{r:?}"
        )
    };
    is_404(h.other_client.bulk(s.id).await);
    is_404(h.other_client.bulk_cancel(s.id).await);
    match h
        .other_client
        .bulk_results(s.id, ResultsQuery::default())
        .await
    {
        Err(ClientError::Api { status: 404, .. }) => {}
        other => panic!("expected 404, got {:?}", other.map(|(_, p)| p)),
    }
    // The same name is the other tenant's own bulk.
    let theirs = submit_file(&h.other_client, &path, request("mine", Urgency::Standard))
        .await
        .unwrap()
        .submission;
    assert_ne!(theirs.id, s.id);
    assert_eq!(theirs.submitted, 3);
    wait_done(&h, s.id).await;
    h.stop().await;
}

/// The built binary end to end: `sluice bulk submit FILE --wait -o OUT`, `bulk status`,
/// `bulk results --ordered --errors`, and a refused file's exit status and message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sluice_bulk_commands_work() {
    let h = Harness::start(Backend::Embedded).await;
    let lines: Vec<String> = (0..6).map(|i| good_line(i, "cli")).collect();
    let path = write_file(h.dir.path(), "cli.jsonl", &lines);
    let out = h.dir.path().join("out.jsonl");
    let sluice = |args: &[&str]| {
        let mut command = tokio::process::Command::from(common::serve::sluice());
        command
            .args(args)
            .env("SLUICE_SERVER", &h.base_url)
            .env("SLUICE_TOKEN", common::TOKEN);
        command.output()
    };
    let run = sluice(&[
        "bulk",
        "submit",
        path.to_str().unwrap(),
        "--model",
        "fast",
        "--urgency",
        "standard",
        "--tag",
        "team=search",
        "--wait",
        "-o",
        out.to_str().unwrap(),
    ])
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let id: Uuid = String::from_utf8_lossy(&run.stdout).trim().parse().unwrap();
    assert!(stderr.contains("6 jobs submitted"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 6);
    let team: String = sluice::with_pool!(h.app.store.pool(), pool => sqlx::query_scalar("SELECT team_tag FROM jobs LIMIT 1")
        .fetch_one(pool)
        .await
        .unwrap());
    assert_eq!(team, "search");

    let status = sluice(&["bulk", "status", &id.to_string()]).await.unwrap();
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["counts"]["succeeded"], 6);

    let errors = sluice(&["bulk", "results", &id.to_string(), "--ordered", "--errors"])
        .await
        .unwrap();
    assert!(errors.status.success());
    assert!(errors.stdout.is_empty());

    // The same file with its first line changed: the CLI says the line was not submitted.
    let mut changed = lines.clone();
    changed[0] = good_line(0, "cli changed");
    write_file(h.dir.path(), "cli.jsonl", &changed);
    let again = sluice(&["bulk", "submit", path.to_str().unwrap(), "--model", "fast"])
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{stderr}");
    assert!(
        stderr.contains("0 jobs submitted, 5 lines already in the bulk")
            && stderr.contains("1 conflicting")
            && stderr.contains("line 1: custom_id: custom_id \"req-0\" already names job"),
        "{stderr}"
    );

    let bad = write_file(
        h.dir.path(),
        "bad.jsonl",
        &[good_line(0, "cli"), "{oops".into()],
    );
    let refused = sluice(&["bulk", "submit", bad.to_str().unwrap()])
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("line 2: not valid JSON at column 2"),
        "{stderr}"
    );
    assert!(stderr.contains("--skip-invalid"), "{stderr}");
    h.stop().await;
}
