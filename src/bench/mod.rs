//! `sluice bench`: jobs per second and latency through the real queue and store.
//!
//! Runs N standard jobs against the built-in simulator at zero latency, so what is measured
//! is Sluice itself: API-side insert and publish with confirms, the queue, the worker, the
//! HTTP call over loopback, and the grouped commits. Latency is from the job's `created_at`
//! (written before publishing) to its `finished_at` (the commit of its result). Peak RSS is the
//! whole process's (`VmHWM`), simulator included. CPU per job is the user and system time of
//! the bench's process (and, with `--worker-processes`, of its worker processes) from the
//! first submission to the last result, divided by the jobs.
//!
//! On a PostgreSQL store (`--database`) the workers may run as processes of their own
//! (`--worker-processes N`), as a cluster runs them; `--limited-keys` gives every key limits
//! that never bind, so each call goes through the key's buckets (the cluster's capacity
//! leases on Postgres): run with and without to see what they cost. Likewise `--no-metrics`
//! (`[telemetry] metrics = false`) against the default, which records every metric and, once
//! the jobs are in the store, times `GET /metrics` over HTTP (`scrape`).
//!
//! With `--streams N`, it measures streaming instead: N clients at a time send streamed
//! requests to `POST /v1/chat/completions` over loopback HTTP, each asking the simulator for a
//! first token after `--ttft`. Sluice's overhead is the client's time to its first content
//! chunk minus the provider's own time to first token, which the simulator measures for each
//! call (from the call's arrival to its first content event): recording and publishing the
//! job, the queue hop to a worker, the provider call's setup, and the relay of the chunk back
//! through the reply inbox. The overhead beyond the nominal `ttft` is printed beside it. Each
//! client's first stream is a warm-up, not counted: it opens the connections a service in
//! steady use keeps open.

mod cpu;
mod processes;
mod scrape;
mod setup;
pub mod trips;

use crate::app::App;
use crate::config::{Config, PostgresUrl, QueueBackend};
use crate::job::{ChatRequest, JobSpec, Tags, Urgency};
use crate::store::RunTimes;
use cpu::CpuTime;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Queue backend to measure.
    #[arg(long, value_enum, default_value_t = QueueBackend::Embedded)]
    pub backend: QueueBackend,
    /// How many jobs.
    #[arg(long, default_value_t = 10_000)]
    pub jobs: usize,
    /// Worker concurrency (and prefetch).
    #[arg(long, default_value_t = 64)]
    pub concurrency: u16,
    /// Broker for `--backend rabbitmq`.
    #[arg(
        long,
        env = "SLUICE_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub amqp_url: String,
    /// Measure streams instead: this many concurrent streamed requests through
    /// `POST /v1/chat/completions` (`--jobs` of them in all), reporting the time to the first
    /// content byte at the client beyond the provider's own time to first token.
    #[arg(long, default_value_t = 0)]
    pub streams: usize,
    /// The simulated provider's time to first token in `--streams` mode.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub ttft: Duration,
    /// The simulated provider's pace after the first token in `--streams` mode: the time
    /// between content chunks (real models stream 20 to 100 tokens a second, so a stream
    /// stays open for seconds; `0ms` sends the whole answer at once, which turns "N streams at
    /// a time" into as many new streams a second as the machine can take).
    #[arg(long, default_value = "20ms", value_parser = humantime::parse_duration)]
    pub itl: Duration,
    /// Record in this PostgreSQL database (`postgres://…`, an empty one: the figures are read
    /// from every job it holds) instead of a new SQLite file; the queue is then RabbitMQ.
    #[arg(long, env = "SLUICE_BENCH_DATABASE")]
    pub database: Option<PostgresUrl>,
    /// Run the workers as this many `sluice worker` processes of their own instead of in the
    /// bench's process (needs `--database`: the processes share a PostgreSQL store).
    #[arg(long, default_value_t = 0, requires = "database")]
    pub worker_processes: usize,
    /// Give every key limits that never bind, so each call goes through the key's buckets
    /// (on a PostgreSQL store, the cluster's capacity leases): compare with and without.
    #[arg(long)]
    pub limited_keys: bool,
    /// Count the statements this process sends the store, and print them per job (the
    /// counting itself costs CPU: quote CPU per job from a run without it).
    #[arg(long, conflicts_with = "worker_processes")]
    pub count_round_trips: bool,
    /// Run with `[telemetry] metrics = false`: nothing recorded, to compare with a run that
    /// records them (the default), which also times `GET /metrics` once the jobs are in.
    #[arg(long)]
    pub no_metrics: bool,
}

pub async fn run(args: BenchArgs, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("sluice-bench-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir)?;
    let prefix = format!("sluice-bench-{}", uuid::Uuid::now_v7());
    let text = setup::config_text(&args, &crate::store::database_in(&dir), &prefix)?;
    let app = App::start(setup::resolve(&args, &text)?).await?;
    let held = app.store.finished_jobs().await?;
    anyhow::ensure!(
        held == 0,
        "the bench's database already holds {held} finished jobs: give it an empty one"
    );
    if let Some(amqp) = app.queue_as_amqp() {
        amqp.wait_connected(Duration::from_secs(10)).await?;
    }
    if args.streams > 0 {
        let workers = app.start_workers(&[Urgency::Realtime]);
        let result = bench_streams(&app, &args, out).await;
        workers.shutdown().await;
        cleanup(app, &args, &dir, out).await?;
        return result;
    }
    let (workers, processes) = match args.worker_processes {
        0 => (Some(app.start_workers(&[Urgency::Standard])), None),
        n => (
            None,
            Some(processes::WorkerProcesses::start(&args, n, &text, &dir)?),
        ),
    };
    let submitter = app.submitter();

    writeln!(
        out,
        "bench: {} jobs, backend {}, store {}, concurrency {}, workers {}{}",
        args.jobs,
        app.queue.name(),
        match app.store.dialect() {
            crate::store::Dialect::Sqlite => "sqlite",
            crate::store::Dialect::Postgres => "postgres",
        },
        args.concurrency,
        match args.worker_processes {
            0 => "in this process".to_string(),
            n => format!("in {n} processes of their own"),
        },
        if args.limited_keys {
            ", keys limited (never binding)"
        } else {
            ""
        },
    )?;
    let cpu_at_start = CpuTime::of_this_process();
    let statements_at_start = trips::statements();
    let started = Instant::now();
    let mut submitted = 0;
    while submitted < args.jobs {
        let n = (args.jobs - submitted).min(500);
        let specs = (submitted..submitted + n).map(bench_job).collect();
        submitter.submit("demo", specs).await?;
        submitted += n;
    }
    let published_in = started.elapsed();

    loop {
        let done = app.store.finished_jobs().await?;
        if done as usize >= args.jobs {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(1800),
            "bench did not finish within 30 minutes ({done} done)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let wall = started.elapsed();
    let bench_cpu = CpuTime::of_this_process().since(cpu_at_start);
    let statements = trips::statements() - statements_at_start;
    let children_before = CpuTime::of_waited_children();
    if let Some(workers) = workers {
        workers.shutdown().await;
    }
    if let Some(processes) = processes {
        processes.stop().await?;
    }
    let workers_cpu = CpuTime::of_waited_children().since(children_before);

    let RunTimes {
        first_created: first,
        last_finished: last,
        succeeded,
        latencies_ms: latencies,
    } = app.store.run_times().await?;
    let pct = |p: f64| percentile(&latencies, p);
    let span = Duration::from_millis((last - first).max(1) as u64);
    writeln!(
        out,
        "published {} jobs in {:.2}s ({:.0} jobs/s, insert + confirmed publish)",
        args.jobs,
        published_in.as_secs_f64(),
        args.jobs as f64 / published_in.as_secs_f64()
    )?;
    writeln!(
        out,
        "completed {} jobs ({} succeeded) in {:.2}s: {:.0} jobs/s",
        args.jobs,
        succeeded,
        span.as_secs_f64(),
        args.jobs as f64 / span.as_secs_f64()
    )?;
    writeln!(
        out,
        "latency publish -> stored result: p50 {} ms, p99 {} ms, max {} ms",
        pct(0.50),
        pct(0.99),
        latencies.last().copied().unwrap_or(0)
    )?;
    let per_job = routing_cost(100_000);
    writeln!(
        out,
        "router + limiter: {:.2} µs/job (choose a healthy deployment, estimate tokens, admit on one of 3 keys, record health)",
        per_job.as_secs_f64() * 1e6
    )?;
    let cpu = bench_cpu.total() + workers_cpu.total();
    writeln!(
        out,
        "CPU: {:.0} µs/job ({:.2}s user + {:.2}s system in this process{})",
        cpu.as_secs_f64() * 1e6 / args.jobs as f64,
        bench_cpu.user.as_secs_f64(),
        bench_cpu.system.as_secs_f64(),
        match args.worker_processes {
            0 => String::new(),
            n => format!(
                ", {:.2}s user + {:.2}s system in the {n} worker processes over their whole run",
                workers_cpu.user.as_secs_f64(),
                workers_cpu.system.as_secs_f64()
            ),
        }
    )?;
    if args.count_round_trips {
        writeln!(
            out,
            "store round trips: {:.1} per job ({statements} statements, the run's polls of the finished count included; counting them costs CPU)",
            statements as f64 / args.jobs as f64
        )?;
    }
    writeln!(
        out,
        "peak RSS: {} (whole process, simulator included); wall time {:.2}s",
        peak_rss(),
        wall.as_secs_f64()
    )?;
    match scrape::time_scrapes(&app).await? {
        Some(times) => writeln!(
            out,
            "GET /metrics with {} jobs in the store: p50 {:.1} ms, max {:.1} ms ({} scrapes)",
            args.jobs,
            times[times.len() / 2].as_secs_f64() * 1e3,
            times.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
            times.len()
        )?,
        None => writeln!(out, "metrics off ([telemetry] metrics = false)")?,
    }

    cleanup(app, &args, &dir, out).await
}

/// Deletes what the bench made: its RabbitMQ queues, the simulator, the database folder.
async fn cleanup(
    app: App,
    args: &BenchArgs,
    dir: &std::path::Path,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    if let Some(amqp) = app.queue_as_amqp() {
        // The bench borrowed the broker under a throwaway prefix; leave nothing behind.
        let conn =
            lapin::Connection::connect(&args.amqp_url, lapin::ConnectionProperties::default())
                .await?;
        if let Err(e) = amqp.topology().delete(&conn).await {
            let prefix = amqp.topology().prefix();
            writeln!(
                out,
                "warning: could not delete every bench queue under {prefix}: {e}"
            )?;
        }
        let _ = conn.close(200, "bench done".into()).await;
    }
    if let Some(sim) = app.sim {
        sim.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

/// `--streams`: time to first content chunk through Sluice, beyond the provider's own.
async fn bench_streams(
    app: &App,
    args: &BenchArgs,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base_url = format!("http://{}", listener.local_addr()?);
    let api = tokio::spawn(app.serve(listener, std::future::pending()));
    let token = app
        .config
        .tenants
        .first()
        .map(|t| t.token.expose().to_string())
        .ok_or_else(|| anyhow::anyhow!("the configuration has no tenant to stream as"))?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.streams)
        .build()?;
    writeln!(
        out,
        "bench: {} streamed requests (after one warm-up stream per client), {} at a time, backend {}, provider ttft {}, itl {}",
        args.jobs,
        args.streams,
        app.queue.name(),
        humantime::format_duration(args.ttft),
        humantime::format_duration(args.itl)
    )?;
    let sim = app
        .sim
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("the stream bench needs the built-in simulator"))?;
    sim.record_first_tokens();
    let started = Instant::now();
    let per_client = args.jobs.div_ceil(args.streams);
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..args.streams {
        let (http, base_url, token, ttft, itl) = (
            http.clone(),
            base_url.clone(),
            token.clone(),
            args.ttft,
            args.itl,
        );
        // The clients start spread over one time to first token, as streams arrive in
        // steady use, not all in the same millisecond (which would measure a burst of
        // `--streams` simultaneous arrivals at every turn instead).
        let start_after = ttft.mul_f64(client as f64 / args.streams as f64);
        clients.spawn(async move {
            tokio::time::sleep(start_after).await;
            let prompt = |i: &dyn std::fmt::Display| {
                format!(
                    "[sim ttft={}ms itl={}ms] Stream bench {client}-{i}: tell a short story.",
                    ttft.as_millis(),
                    itl.as_millis()
                )
            };
            // One stream first, not counted: it opens the connections a running service
            // keeps open (client to API, worker to provider), as a service in steady use has.
            first_content_after(&http, &base_url, &token, &prompt(&"warm-up")).await?;
            let mut firsts = Vec::with_capacity(per_client);
            for i in 0..per_client {
                let prompt = prompt(&i);
                let first = first_content_after(&http, &base_url, &token, &prompt).await?;
                firsts.push((crate::sim::text_key(&prompt), first));
            }
            anyhow::Ok(firsts)
        });
    }
    let mut firsts = Vec::with_capacity(args.jobs);
    while let Some(joined) = clients.join_next().await {
        firsts.extend(joined??);
    }
    let wall = started.elapsed();
    api.abort();

    // The issue's measure: what the client waited beyond what the provider took, as the
    // simulator measured it for that very call. Beside it, the same beyond the nominal
    // `--ttft`, which also counts the simulator's own lateness (its timer, its share of the
    // machine) against Sluice.
    let provider = sim.first_tokens();
    let mut beyond_provider = Vec::with_capacity(firsts.len());
    let mut beyond_nominal = Vec::with_capacity(firsts.len());
    let mut before_provider = Vec::with_capacity(firsts.len());
    let mut after_provider = Vec::with_capacity(firsts.len());
    for (key, first) in &firsts {
        let logged = provider.get(key).ok_or_else(|| {
            anyhow::anyhow!("the simulator logged no first token for a streamed call")
        })?;
        let waited = first.arrived.duration_since(first.sent);
        beyond_provider.push(waited.saturating_sub(logged.took));
        beyond_nominal.push(waited.saturating_sub(args.ttft));
        // The two sides of the provider's time: the client's request on its way to the
        // provider (API, record, queue, worker, router, the call), and the first token on its
        // way back (worker, reply inbox, API, the client's socket).
        before_provider.push(logged.arrived.saturating_duration_since(first.sent));
        after_provider.push(
            first
                .arrived
                .saturating_duration_since(logged.arrived + logged.took),
        );
    }
    writeln!(
        out,
        "time to first content chunk beyond the provider's own (measured per call): {}",
        percentiles(&mut beyond_provider)
    )?;
    writeln!(
        out,
        "of which before the provider (sent -> the provider has the request): {}",
        percentiles(&mut before_provider)
    )?;
    writeln!(
        out,
        "of which after it (the provider's first token -> the client has it): {}",
        percentiles(&mut after_provider)
    )?;
    writeln!(
        out,
        "time to first content chunk beyond the nominal ttft {}: {}",
        humantime::format_duration(args.ttft),
        percentiles(&mut beyond_nominal)
    )?;
    // Where the time goes before the provider is called: recorded → the attempt starts.
    let queued = app.store.times_to_first_attempt().await?;
    if !queued.is_empty() {
        let at = |p: f64| percentile(&queued, p);
        writeln!(
            out,
            "of which recorded -> attempt started (record, publish, queue, worker; warm-ups included, whole ms): p50 {} ms, p99 {} ms",
            at(0.50),
            at(0.99)
        )?;
    }
    writeln!(
        out,
        "{} streams in {:.2}s ({:.0} started a second); peak RSS {}",
        firsts.len(),
        wall.as_secs_f64(),
        firsts.len() as f64 / wall.as_secs_f64(),
        peak_rss()
    )?;
    Ok(())
}

/// `p50 …, p99 …, max …` of `durations` (sorted here), in milliseconds.
fn percentiles(durations: &mut [Duration]) -> String {
    durations.sort_unstable();
    let Some(max) = durations.last() else {
        return "no samples".into();
    };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(percentile(durations, 0.50)),
        ms(percentile(durations, 0.99)),
        ms(*max)
    )
}

/// The value at fraction `p` of `sorted` (which must not be empty).
fn percentile<T: Copy>(sorted: &[T], p: f64) -> T {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// When a streamed request left the client and when its first content chunk arrived.
struct FirstContent {
    sent: Instant,
    arrived: Instant,
}

/// Sends one streamed request; returns when it left and when its first content chunk
/// arrived, after reading the stream to its end.
async fn first_content_after(
    http: &reqwest::Client,
    base_url: &str,
    token: &str,
    prompt: &str,
) -> anyhow::Result<FirstContent> {
    use futures::StreamExt;
    let sent = Instant::now();
    let response = http
        .post(format!("{base_url}/v1/chat/completions"))
        .bearer_auth(token)
        .json(&serde_json::json!({
            "model": "fast",
            "stream": true,
            "messages": [{"role": "user", "content": prompt}],
        }))
        .send()
        .await?;
    anyhow::ensure!(
        response.status().is_success(),
        "a streamed request failed: {}",
        response.status()
    );
    let mut body = response.bytes_stream();
    let mut events = crate::providers::sse::Parser::new();
    let (mut first, mut done) = (None, false);
    while let Some(bytes) = body.next().await {
        for event in events.feed(&bytes?) {
            if event.data == "[DONE]" {
                done = true;
            } else if first.is_none() {
                let chunk: serde_json::Value = serde_json::from_str(&event.data)?;
                let content = chunk.pointer("/choices/0/delta/content");
                if content
                    .and_then(|c| c.as_str())
                    .is_some_and(|c| !c.is_empty())
                {
                    first = Some(Instant::now());
                }
            }
        }
    }
    anyhow::ensure!(done, "a stream ended without [DONE]");
    let arrived = first.ok_or_else(|| anyhow::anyhow!("a stream carried no content"))?;
    Ok(FirstContent { sent, arrived })
}

/// What the router and the limiter add to each job, on average over `jobs` jobs: choosing a
/// deployment of a two-deployment route (health gate, token estimate of a short prompt,
/// requests/min and tokens/min admission on one of three keys) and recording the outcome's
/// health. The keys' quotas are high enough that every job is admitted, as in a well-sized
/// deployment: the cost of refusing is lower (fewer bucket updates).
pub fn routing_cost(jobs: usize) -> Duration {
    let config = Config::parse(
        r#"
        [providers.p]
        kind = "openai"
        base_url = "http://127.0.0.1:9"
        keys = [
          { id = "k1", secret = "s", requests_per_minute = 100000000, tokens_per_minute = 2000000000 },
          { id = "k2", secret = "s", requests_per_minute = 100000000, tokens_per_minute = 2000000000 },
          { id = "k3", secret = "s", requests_per_minute = 100000000, tokens_per_minute = 2000000000 },
        ]
        [deployments.a]
        provider = "p"
        model = "m"
        price = { input = 1, output = 1 }
        [deployments.b]
        provider = "p"
        model = "m"
        price = { input = 1, output = 1 }
        [routes.r]
        deployments = ["a", "b"]
        "#,
        "bench",
        &|_| None,
    )
    .and_then(Config::resolve)
    .expect("the bench config is valid");
    let router = crate::router::Router::new(&config, reqwest::Client::new(), None);
    let route = router.route("r").expect("the bench route").clone();
    let request = bench_job(1).request;
    let started = Instant::now();
    for _ in 0..jobs {
        match route.choose(1, &request, Urgency::Standard) {
            crate::router::Choice::Go(pick) => pick.deployment.health.record(
                crate::router::health::Verdict::Healthy,
                Duration::from_millis(1),
                None,
            ),
            other => panic!("the bench route refused a job: {other:?}"),
        }
    }
    started.elapsed() / jobs.max(1) as u32
}

fn bench_job(i: usize) -> JobSpec {
    let prompt = format!("Benchmark job number {i}: reply briefly.");
    JobSpec {
        tags: Tags {
            team: Some("bench".into()),
            ..Tags::default()
        },
        ..JobSpec::new(
            Urgency::Standard,
            ChatRequest::single_user_message("fast", prompt),
        )
    }
}

/// The process's peak resident set size, from `/proc/self/status` (Linux).
fn peak_rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.trim_start_matches("VmHWM:").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn routing_cost_runs() {
        // Measured, not asserted: timings belong in `sluice bench`, not in tests.
        let _ = super::routing_cost(100);
    }
}
