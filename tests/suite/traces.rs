//! Traces as a collector receives them: the built `sluice` processes export to an OTLP/HTTP
//! receiver of the test's own (`common::otlp`, decoding the real protobufs), and the test
//! reads the span tree of a job back — one trace from the caller's `traceparent` through the
//! API, the queue (RabbitMQ between two processes, or the embedded queue) and the worker to
//! the provider call and the settlement, with the GenAI conventions on the provider span and
//! the figures the job's view shows. A collector that is down fails no job.
//!
//! Processes, not apps in this process: the export installs a process-wide tracer, which the
//! test process keeps free.

use crate::common::otlp::{ReceivedSpan, Receiver};
use crate::common::serve::{sluice, Served};
use crate::common::{self, eventually, Backend, RefusedPort, AMQP_URL, TOKEN};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The provider key; no span may show it.
const PROVIDER_SECRET: &str = "sk-sim-traces-secret-4417";
/// The queue's delivery limit, which names the RabbitMQ topology deleted at the end.
const DELIVERY_LIMIT: u32 = 10;
/// Spans leave each process within this long of ending (the default is five seconds).
const QUICK_EXPORT: (&str, &str) = ("OTEL_BSP_SCHEDULE_DELAY", "100");

on_both_backends!(
    a_job_is_one_trace_from_the_callers_span_to_the_settlement,
    a_retried_job_stays_in_its_trace_with_each_attempt_and_its_failure,
);

/// One run's folder, simulator, RabbitMQ prefix and configuration.
struct Setup {
    backend: Backend,
    dir: tempfile::TempDir,
    prefix: String,
    sim: sluice::sim::SimServer,
}

impl Setup {
    async fn new(backend: Backend) -> Setup {
        let sim = sluice::sim::spawn(
            "127.0.0.1:0".parse().unwrap(),
            sluice::sim::SimConfig::default(),
        )
        .await
        .unwrap();
        Setup {
            backend,
            dir: tempfile::tempdir().unwrap(),
            prefix: format!("sluice-test-traces-{}", uuid::Uuid::now_v7()),
            sim,
        }
    }

    /// A configuration exporting traces to `otlp_endpoint`: one deployment on the test's
    /// simulator, no recurring jobs.
    fn config(&self, otlp_endpoint: &str) -> PathBuf {
        let queue = match self.backend {
            Backend::Embedded => String::new(),
            Backend::Rabbitmq | Backend::Postgres => {
                format!("url = \"{AMQP_URL}\"\nprefix = \"{}\"", self.prefix)
            }
        };
        let text = format!(
            r#"
[server]
listen = "127.0.0.1:0"
database = {database:?}

[queue]
delivery_limit = {DELIVERY_LIMIT}
{queue}

[scheduler]
enabled = false

[retry]
base_delay = "100ms"

[telemetry]
otlp_endpoint = "{otlp_endpoint}"

[[tenants]]
name = "acme"
token = "{TOKEN}"

[providers.upstream]
kind = "openai"
base_url = "{sim}"
timeout = "10s"
keys = [{{ id = "k1", secret = "{PROVIDER_SECRET}" }}]

[deployments.mini]
provider = "upstream"
model = "gpt-4o-mini"

[routes.fast]
deployments = ["mini"]
"#,
            database = self.dir.path().join("sluice.db").to_str().unwrap(),
            sim = self.sim.openai_base_url(),
        );
        let path = self.dir.path().join("sluice.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The API and the workers: on RabbitMQ two processes (`serve --no-workers`, `worker`),
    /// so the trace must cross the broker; on the embedded queue one `serve`. Each names
    /// itself by `OTEL_SERVICE_NAME`. Returns the API's base URL and the processes.
    async fn start(&self, config: &Path) -> (String, Vec<Served>) {
        let log = |name: &str| self.dir.path().join(format!("{name}.log"));
        if self.backend == Backend::Embedded {
            let env = [QUICK_EXPORT, ("OTEL_SERVICE_NAME", "sluice-api")];
            let served = Served::start_with_env(config, &[], &log("serve"), &env).await;
            return (served.base_url.clone(), vec![served]);
        }
        let api_env = [QUICK_EXPORT, ("OTEL_SERVICE_NAME", "sluice-api")];
        let api = Served::start_with_env(config, &["--no-workers"], &log("serve"), &api_env).await;
        let worker_env = [QUICK_EXPORT, ("OTEL_SERVICE_NAME", "sluice-worker")];
        let worker = Served::start_worker_with_env(config, &[], &log("worker"), &worker_env).await;
        (api.base_url.clone(), vec![api, worker])
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        if self.backend.uses_rabbitmq() {
            common::delete_topology_blocking(sluice::queue::amqp::Topology::new(
                self.prefix.clone(),
                DELIVERY_LIMIT,
            ));
        }
    }
}

/// Submits one job with `traceparent` (when given) and waits for its view once final.
async fn run_job(base_url: &str, content: &str, traceparent: Option<&str>) -> Value {
    let http = reqwest::Client::new();
    let mut submit = http
        .post(format!("{base_url}/v1/jobs"))
        .bearer_auth(TOKEN)
        .json(&json!({"urgency": "standard", "request": {
            "model": "fast",
            "max_tokens": 50,
            "messages": [{"role": "user", "content": content}],
        }}));
    if let Some(traceparent) = traceparent {
        submit = submit.header("traceparent", traceparent);
    }
    let answer: Value = submit
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = answer["id"]
        .as_str()
        .or_else(|| answer["jobs"][0]["id"].as_str())
        .unwrap_or_else(|| panic!("no job id in {answer}"))
        .to_string();
    let view = eventually("the job to be final", Duration::from_secs(60), async || {
        let view: Value = http
            .get(format!("{base_url}/v1/jobs/{id}?wait=5s"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        matches!(view["status"].as_str(), Some("succeeded" | "failed")).then_some(view)
    })
    .await;
    assert_eq!(view["status"], "succeeded", "{view:#}");
    view
}

/// The one span named `name` in `spans`.
fn span<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    let found: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "one span {name:?} in {spans:#?}");
    found[0]
}

/// The names of the spans of one job's trace, once the worker's have all arrived.
const JOB_SPANS: [&str; 7] = [
    "POST /v1/jobs",
    "submit",
    "queue wait",
    "job",
    "attempt",
    "chat gpt-4o-mini",
    "settle",
];

/// A caller's span (`traceparent` on `POST /v1/jobs`) is the root of the job's whole tree,
/// across processes on RabbitMQ: request → submit → (queue wait, job → (attempt → chat,
/// settle)), with the GenAI attributes on the provider call matching the job's view, and
/// no key, token or message content on any span.
async fn a_job_is_one_trace_from_the_callers_span_to_the_settlement(backend: Backend) {
    let receiver = Receiver::start().await;
    let setup = Setup::new(backend).await;
    let config = setup.config(&receiver.endpoint);
    let (base_url, _processes) = setup.start(&config).await;

    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let caller_span = &uuid::Uuid::new_v4().simple().to_string()[..16];
    let traceparent = format!("00-{trace_id}-{caller_span}-01");
    let content = format!("content-marker-{}", uuid::Uuid::now_v7());
    let view = run_job(&base_url, &content, Some(&traceparent)).await;
    let id = view["id"].as_str().unwrap();

    let spans = eventually(
        "every span of the job's trace",
        Duration::from_secs(30),
        async || {
            let spans = receiver.trace(&trace_id);
            let missing: Vec<&str> = JOB_SPANS
                .iter()
                .filter(|name| !spans.iter().any(|s| s.name == **name))
                .copied()
                .collect();
            if missing.is_empty() {
                Ok(spans)
            } else {
                Err(format!("missing {missing:?} among {} spans", spans.len()))
            }
        },
    )
    .await;

    let request = span(&spans, "POST /v1/jobs");
    let submit = span(&spans, "submit");
    let queue_wait = span(&spans, "queue wait");
    let job = span(&spans, "job");
    let attempt = span(&spans, "attempt");
    let chat = span(&spans, "chat gpt-4o-mini");
    let settle = span(&spans, "settle");

    // The tree.
    assert_eq!(request.parent_span_id, caller_span, "{request:#?}");
    assert_eq!(submit.parent_span_id, request.span_id);
    assert_eq!(queue_wait.parent_span_id, submit.span_id);
    assert_eq!(job.parent_span_id, submit.span_id);
    assert_eq!(attempt.parent_span_id, job.span_id);
    assert_eq!(chat.parent_span_id, attempt.span_id);
    assert_eq!(settle.parent_span_id, job.span_id);
    assert!(queue_wait.end_unix_nano <= chat.start_unix_nano);
    // Across processes on RabbitMQ: the worker's spans come from the worker.
    let worker = match backend {
        Backend::Embedded => "sluice-api",
        _ => "sluice-worker",
    };
    for s in [request, submit] {
        assert_eq!(s.service, "sluice-api", "{s:#?}");
    }
    for s in [job, attempt, chat, settle] {
        assert_eq!(s.service, worker, "{s:#?}");
    }

    // Kinds: server, producer, consumer, client.
    assert_eq!(request.kind, 2);
    assert_eq!(submit.kind, 4);
    assert_eq!(job.kind, 5);
    assert_eq!(chat.kind, 3);

    // Sluice's attributes.
    assert_eq!(request.text("http.route"), Some("/v1/jobs"));
    assert_eq!(
        request.int("http.response.status_code"),
        Some(202),
        "{request:#?}"
    );
    assert_eq!(submit.text("sluice.job.id"), Some(id));
    assert_eq!(submit.text("sluice.tenant"), Some("acme"));
    assert_eq!(job.text("sluice.job.id"), Some(id));
    assert_eq!(job.text("sluice.tenant"), Some("acme"));
    assert_eq!(job.text("sluice.urgency"), Some("standard"));
    assert_eq!(job.text("sluice.route"), Some("fast"));
    assert_eq!(job.text("sluice.outcome"), Some("succeeded"));
    assert_eq!(attempt.int("sluice.attempt"), Some(1));
    assert_eq!(attempt.text("sluice.deployment"), Some("mini"));
    assert_eq!(attempt.text("sluice.key.id"), Some("k1"));
    assert_eq!(attempt.text("sluice.tier"), Some("realtime"));
    let cost = &view["cost"];
    let amount = cost["amount_pico_usd"].as_i64().unwrap();
    assert!(amount > 0, "{view:#}");
    assert_eq!(attempt.int("sluice.cost.pico_usd"), Some(amount));
    assert_eq!(job.int("sluice.cost.pico_usd"), Some(amount));
    assert_eq!(settle.text("sluice.settlement"), Some("ack"));

    // The provider call, in the GenAI conventions, with the figures the job's view shows.
    assert_eq!(chat.text("gen_ai.operation.name"), Some("chat"));
    assert_eq!(chat.text("gen_ai.provider.name"), Some("openai"));
    assert_eq!(chat.text("gen_ai.system"), Some("openai"));
    assert_eq!(chat.text("gen_ai.request.model"), Some("gpt-4o-mini"));
    assert_eq!(chat.int("gen_ai.request.max_tokens"), Some(50));
    assert_eq!(
        chat.text("gen_ai.response.model"),
        view["result"]["model"].as_str(),
        "{view:#}"
    );
    assert!(chat.text("gen_ai.response.model").is_some());
    assert_eq!(
        chat.int("gen_ai.usage.input_tokens"),
        cost["input_tokens"].as_i64()
    );
    assert_eq!(
        chat.int("gen_ai.usage.output_tokens"),
        cost["output_tokens"].as_i64()
    );
    assert!(chat.int("gen_ai.usage.output_tokens").unwrap() > 0);
    let finish_reason = view["result"]["choices"][0]["finish_reason"]
        .as_str()
        .expect("the answer's finish reason")
        .to_string();
    assert_eq!(
        chat.texts("gen_ai.response.finish_reasons"),
        Some(&[finish_reason][..])
    );
    assert_eq!(
        chat.text("gen_ai.response.id"),
        view["result"]["id"].as_str()
    );
    assert_eq!(chat.status_code, 0, "a successful call has no error status");

    // No secret and no content on any span the processes sent.
    for s in receiver.spans() {
        let text = format!("{s:?}");
        for secret in [PROVIDER_SECRET, TOKEN, content.as_str()] {
            assert!(!text.contains(secret), "{secret:?} on {s:#?}");
        }
    }
}

/// A job whose first call fails is retried through the delay ladder and stays in its
/// trace: two deliveries, each a `job` span under `submit`; two attempts, the first with its
/// provider span marked failed with the kind of the failure, the second answered.
async fn a_retried_job_stays_in_its_trace_with_each_attempt_and_its_failure(backend: Backend) {
    let receiver = Receiver::start().await;
    let setup = Setup::new(backend).await;
    let config = setup.config(&receiver.endpoint);
    let (base_url, _processes) = setup.start(&config).await;

    let content = format!("[sim fail=500] retried {}", uuid::Uuid::now_v7());
    let view = run_job(&base_url, &content, None).await;
    let id = view["id"].as_str().unwrap();
    assert_eq!(view["attempts"].as_array().unwrap().len(), 2, "{view:#}");

    let spans = eventually(
        "both deliveries' spans",
        Duration::from_secs(30),
        async || {
            let spans = receiver.spans();
            let Some(submit) = spans
                .iter()
                .find(|s| s.name == "submit" && s.text("sluice.job.id") == Some(id))
            else {
                return Err("no submit span yet".to_string());
            };
            let trace = receiver.trace(&submit.trace_id);
            let count = |name: &str| trace.iter().filter(|s| s.name == name).count();
            if count("settle") == 2 && count("chat gpt-4o-mini") == 2 {
                Ok(trace)
            } else {
                Err(format!("{} spans in the trace so far", trace.len()))
            }
        },
    )
    .await;
    let submit = span(&spans, "submit");
    let jobs: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.name == "job").collect();
    assert_eq!(jobs.len(), 2, "{spans:#?}");
    for job in &jobs {
        assert_eq!(job.parent_span_id, submit.span_id, "{job:#?}");
    }
    assert_eq!(
        spans.iter().filter(|s| s.name == "queue wait").count(),
        1,
        "the wait before the first attempt only"
    );
    let attempt = |number: i64| {
        let found: Vec<&ReceivedSpan> = spans
            .iter()
            .filter(|s| s.name == "attempt" && s.int("sluice.attempt") == Some(number))
            .collect();
        assert_eq!(found.len(), 1, "attempt {number} in {spans:#?}");
        found[0]
    };
    let chat_of = |attempt: &ReceivedSpan| {
        spans
            .iter()
            .find(|s| s.name == "chat gpt-4o-mini" && s.parent_span_id == attempt.span_id)
            .unwrap_or_else(|| panic!("the call of {attempt:#?}"))
            .clone()
    };
    let (first, second) = (attempt(1), attempt(2));
    assert_eq!(first.text("sluice.outcome"), Some("retry"));
    assert_eq!(second.text("sluice.outcome"), Some("succeeded"));
    let failed = chat_of(first);
    assert_eq!(failed.status_code, 2, "{failed:#?}");
    assert_eq!(failed.text("error.type"), Some("server_error"));
    assert_eq!(failed.int("gen_ai.usage.output_tokens"), None);
    let answered = chat_of(second);
    assert_eq!(answered.status_code, 0, "{answered:#?}");
    assert_eq!(
        answered.int("gen_ai.usage.output_tokens"),
        view["cost"]["output_tokens"].as_i64()
    );
    let settlements: Vec<Option<&str>> = spans
        .iter()
        .filter(|s| s.name == "settle")
        .map(|s| s.text("sluice.settlement"))
        .collect();
    assert!(
        settlements.contains(&Some("retry_after")),
        "{settlements:?}"
    );
    assert!(settlements.contains(&Some("ack")), "{settlements:?}");
}

/// A collector that refuses connections is a warning in the log, once, and no job fails;
/// when it starts answering, the log says so and spans arrive again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_fails_no_job() {
    let port = RefusedPort::new();
    let setup = Setup::new(Backend::Embedded).await;
    let config = setup.config(&port.base_url());
    let (base_url, processes) = setup.start(&config).await;
    let serve = &processes[0];

    for i in 0..5 {
        run_job(&base_url, &format!("while the collector is down {i}"), None).await;
    }
    eventually(
        "a warning that traces cannot be sent",
        Duration::from_secs(30),
        async || serve.log().contains("cannot send traces"),
    )
    .await;
    run_job(&base_url, "after the warning", None).await;
    let log = serve.log();
    assert_eq!(
        log.matches("cannot send traces").count(),
        1,
        "one warning while the collector stays down:\n{log}"
    );
    assert!(!log.contains(" ERROR "), "{log}");

    let receiver = Receiver::start_on(port.listen());
    let view = run_job(&base_url, "with the collector back", None).await;
    let id = view["id"].as_str().unwrap().to_string();
    eventually(
        "the spans of a job run once the collector is back",
        Duration::from_secs(30),
        async || {
            receiver
                .spans()
                .iter()
                .any(|s| s.name == "job" && s.text("sluice.job.id") == Some(id.as_str()))
        },
    )
    .await;
    assert!(serve.log().contains("sending traces again"));
}

/// A malformed `otlp_endpoint` is a configuration problem that `check-config` names by its
/// field, before anything runs.
#[test]
fn check_config_names_a_malformed_otlp_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        "[telemetry]\notlp_endpoint = \"collector:4318\"\n\n[[tenants]]\nname = \"acme\"\ntoken = \"sk-test-acme\"\n",
    )
    .unwrap();
    let output = sluice()
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!output.status.success(), "{said}");
    assert!(said.contains("telemetry.otlp_endpoint"), "{said}");
}
