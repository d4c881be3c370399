//! The `sluice` command line.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use sluice::app::App;
use sluice::client::Client;
use sluice::config::Config;
use sluice::job::Urgency;
use sluice::worker::WorkerPools;
use std::path::PathBuf;
use std::time::Duration;

/// How often `serve` looks for jobs a crash left recorded but unpublished, and how old such a
/// job must be (younger ones may simply be waiting for their publisher confirm).
const RELAY_EVERY: Duration = Duration::from_secs(30);
const RELAY_AFTER: Duration = Duration::from_secs(60);

#[derive(Parser)]
#[command(name = "sluice", version, about = "A queue-driven LLM job processor")]
struct Cli {
    /// Configuration file; without one, the built-in configuration (simulator, embedded queue).
    #[arg(long, short, global = true, env = "SLUICE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API and the worker pools of every urgency.
    Serve {
        /// Run the API (and the outbox relay and the scheduler) without worker pools, for a
        /// deployment whose workers run as `sluice worker` processes.
        #[arg(long)]
        no_workers: bool,
    },
    /// Run worker pools only (scale out: several processes share one broker).
    Worker {
        /// Urgencies to work on; all when not given.
        #[arg(long, value_parser = parse_urgency)]
        urgency: Vec<Urgency>,
    },
    /// Submit a job through the API and print its id.
    Submit(SubmitArgs),
    /// Print a job: status, result, attempts and cost.
    Get {
        id: uuid::Uuid,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Wait until a job is final, then print it.
    Wait {
        id: uuid::Uuid,
        /// Give up after this long.
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        timeout: Duration,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Serve the provider simulator on its own.
    Sim {
        #[arg(long, default_value = "127.0.0.1:9090")]
        listen: std::net::SocketAddr,
        /// How long a batch takes to end (overrides `sim.batch_turnaround`), e.g. 500ms.
        #[arg(long, value_parser = humantime::parse_duration)]
        batch_turnaround: Option<Duration>,
    },
    /// Run sample jobs of every urgency through the simulator and the embedded queue.
    Demo {
        /// Where to keep the demo's database (a fresh temporary file by default).
        #[arg(long)]
        database: Option<PathBuf>,
    },
    /// Create or upgrade the database schema, then exit.
    Migrate,
    /// Check the configuration and list every problem.
    CheckConfig,
    /// Measure throughput and latency through the real queue and store.
    Bench(sluice::bench::BenchArgs),
    /// Recurring jobs (`jobs/*.toml`, or the configured `scheduler.dir`).
    Jobs {
        #[command(subcommand)]
        action: JobsAction,
    },
    /// Bulk JSONL in and out: submit a file of requests, follow it, fetch its results.
    #[command(subcommand)]
    Bulk(BulkCommand),
    /// Cost report from the configured database (every tenant unless --tenant): requests,
    /// tokens, cost, batch savings, fallback extra and unpriced requests, grouped.
    Costs(CostsArgs),
    /// Budgets from the configured database: each budget's limit, spend, reservations and
    /// crossed thresholds this period, per tenant (every tenant unless --tenant).
    Budgets {
        /// Only this tenant's budgets.
        #[arg(long)]
        tenant: Option<String>,
        /// table or json.
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// The shipped price catalogue (USD per million tokens), with each price's date and source.
    Prices {
        /// table or json.
        #[arg(long, default_value = "table")]
        format: String,
    },
}

#[derive(Args)]
struct CostsArgs {
    /// Group by any of model, route, deployment, provider, tier, tenant, user, team, feature,
    /// day (UTC), comma-separated: --by team,day. Totals only when absent.
    #[arg(long, default_value = "")]
    by: String,
    /// From this time: RFC 3339, a UTC date (2026-11-01), or a span back from now (7d, 12h).
    #[arg(long)]
    since: Option<String>,
    /// Until this time (exclusive), same forms.
    #[arg(long)]
    until: Option<String>,
    /// Only this tenant's costs.
    #[arg(long)]
    tenant: Option<String>,
    /// table, csv or json.
    #[arg(long, default_value = "table")]
    format: String,
}

#[derive(Subcommand)]
enum JobsAction {
    /// List every definition with its next due times and last run; name every bad file.
    List,
    /// Run one definition now (besides its schedule), and print the job id.
    Run { name: String },
}

#[derive(Subcommand)]
enum BulkCommand {
    /// Check every line of a JSONL file, then submit it as a bulk and print the bulk id.
    ///
    /// A line is an OpenAI batch request ({"custom_id", "method", "url", "body"}), the short
    /// form {"custom_id", "body"}, or a bare chat body (custom_id "line-N" when it has none).
    /// Submitting again under the same name adds only the lines whose custom_id the bulk
    /// does not hold yet: the same file twice creates no duplicate jobs. A line whose
    /// custom_id the bulk holds with a different request is not submitted but listed as a
    /// conflict.
    Submit(BulkSubmitArgs),
    /// Show a bulk's jobs by status and its cost so far.
    Status {
        id: uuid::Uuid,
        /// Follow it with a progress bar until every job is final.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Write a bulk's results as JSONL in OpenAI's batch output format (finished jobs only).
    Results(BulkResultsArgs),
    /// Cancel every job of a bulk that is still queued.
    Cancel {
        id: uuid::Uuid,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Args)]
struct BulkSubmitArgs {
    /// The JSONL file, or `-` for standard input.
    file: PathBuf,
    /// The bulk's name, unique per tenant (default: the file's name; required for stdin).
    #[arg(long)]
    name: Option<String>,
    /// The model for lines whose request names none.
    #[arg(long)]
    model: Option<String>,
    #[arg(long, default_value = "batch", value_parser = parse_urgency)]
    urgency: Urgency,
    /// When the answers are needed: a time from now (`6h`) or an RFC 3339 time.
    #[arg(long, value_parser = parse_deadline)]
    deadline: Option<chrono::DateTime<chrono::Utc>>,
    /// A cost attribution tag, `user=…`, `team=…` or `feature=…` (repeatable).
    #[arg(long = "tag", value_parser = parse_tag)]
    tags: Vec<(String, String)>,
    /// Submit the valid lines and write the bad ones to the rejects file.
    #[arg(long)]
    skip_invalid: bool,
    /// Where --skip-invalid writes the bad lines (default: FILE.rejects.jsonl).
    #[arg(long)]
    rejects: Option<PathBuf>,
    /// Then wait for every job to finish (with a progress bar).
    #[arg(long)]
    wait: bool,
    /// With --wait: write the results here.
    #[arg(long, short, requires = "wait")]
    output: Option<PathBuf>,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Args)]
struct BulkResultsArgs {
    id: uuid::Uuid,
    /// Where to write them (default: standard output).
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// In input order (by line number); otherwise in no particular order (join on custom_id).
    #[arg(long)]
    ordered: bool,
    /// Failed and cancelled jobs only.
    #[arg(long)]
    errors: bool,
    /// Wait until every job is final first.
    #[arg(long)]
    wait: bool,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Args)]
struct ServerArgs {
    /// Base URL of a running `sluice serve`.
    #[arg(long, env = "SLUICE_SERVER", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// The tenant's API token.
    #[arg(long, env = "SLUICE_TOKEN", default_value = "sk-sluice-demo")]
    token: String,
}

#[derive(Args)]
struct SubmitArgs {
    /// The prompt (a single user message). Use --file for a full job JSON.
    prompt: Option<String>,
    /// A job as JSON (`{"urgency", "tags", "custom_id", "request": {...}}`), or `-` for stdin.
    #[arg(long, conflicts_with = "prompt")]
    file: Option<PathBuf>,
    #[arg(long, default_value = "fast")]
    model: String,
    #[arg(long, default_value = "standard", value_parser = parse_urgency)]
    urgency: Urgency,
    #[arg(long)]
    custom_id: Option<String>,
    /// Wait for the result and print the job.
    #[arg(long)]
    wait: bool,
    #[command(flatten)]
    server: ServerArgs,
}

fn parse_urgency(text: &str) -> Result<Urgency, String> {
    text.parse()
}

fn parse_deadline(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&chrono::Utc));
    }
    let after = humantime::parse_duration(text).map_err(|_| {
        format!("\"{text}\" is neither a duration like 6h nor an RFC 3339 time like 2026-01-31T12:00:00Z")
    })?;
    Ok(chrono::Utc::now() + chrono::Duration::from_std(after).map_err(|e| e.to_string())?)
}

fn parse_tag(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key @ ("user" | "team" | "feature"), value)) if !value.is_empty() => {
            Ok((key.to_string(), value.to_string()))
        }
        _ => Err(format!(
            "\"{text}\" is not a tag; write user=NAME, team=NAME or feature=NAME"
        )),
    }
}

fn main() -> std::process::ExitCode {
    // Errors are for people: the message chain, without a backtrace even when
    // RUST_BACKTRACE is set in the environment.
    match start() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each cause added only if the message does not already say it
/// (Sluice's own errors spell out their cause).
fn describe(error: &anyhow::Error) -> String {
    let mut message = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !message.contains(&cause) {
            message.push_str(": ");
            message.push_str(&cause);
        }
    }
    message
}

fn start() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
                .unwrap_or_else(|_| default_log_filter(&cli.command).into()),
        )
        .with_writer(std::io::stderr)
        .init();
    tokio::runtime::Runtime::new()?.block_on(run(cli))
}

fn default_log_filter(command: &Command) -> &'static str {
    match command {
        Command::Demo { .. } | Command::Bench(_) | Command::Bulk(_) => "warn",
        _ => "info",
    }
}

fn load_config(path: &Option<PathBuf>) -> anyhow::Result<Config> {
    Ok(match path {
        Some(path) => Config::load(path)?,
        None => Config::builtin(),
    })
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { no_workers } => {
            let app = App::start(load_config(&cli.config)?).await?;
            let listener = tokio::net::TcpListener::bind(&app.config.server.listen)
                .await
                .with_context(|| format!("cannot listen on {}", app.config.server.listen))?;
            tracing::info!(address = %listener.local_addr()?, queue = app.queue.name(), "serving the Sluice API");
            let workers =
                (!no_workers).then(|| WorkerPools::start(app.worker_context(), &Urgency::ALL));
            let stop = tokio_util::sync::CancellationToken::new();
            let relay = tokio::spawn(app.submitter().run_relay(
                RELAY_EVERY,
                RELAY_AFTER,
                stop.clone(),
            ));
            let scheduler = start_scheduler(&app, stop.clone());
            sluice::api::serve(listener, app.api_state(), shutdown_signal()).await?;
            stop.cancel();
            let _ = relay.await;
            if let Some(scheduler) = scheduler {
                let _ = scheduler.await;
            }
            if let Some(workers) = workers {
                workers.shutdown().await;
            }
        }
        Command::Worker { urgency } => {
            let app = App::start(load_config(&cli.config)?).await?;
            let urgencies = if urgency.is_empty() {
                Urgency::ALL.to_vec()
            } else {
                urgency
            };
            let workers = WorkerPools::start(app.worker_context(), &urgencies);
            shutdown_signal().await;
            workers.shutdown().await;
        }
        Command::Submit(args) => submit(args).await?,
        Command::Get { id, server } => {
            let job = Client::new(server.server, server.token)
                .get(id, None)
                .await?;
            println!("{}", serde_json::to_string_pretty(&job)?);
        }
        Command::Wait {
            id,
            timeout,
            server,
        } => {
            let job = Client::new(server.server, server.token)
                .wait(id, timeout)
                .await?;
            println!("{}", serde_json::to_string_pretty(&job)?);
        }
        Command::Sim {
            listen,
            batch_turnaround,
        } => {
            let config = load_config(&cli.config)?;
            let mut sim_config = config.sim.clone();
            if let Some(turnaround) = batch_turnaround {
                sim_config.batch_turnaround = turnaround;
            }
            let sim = sluice::sim::spawn(listen, sim_config).await?;
            eprintln!(
                "simulator serving the OpenAI API at {}, Anthropic at {}, Gemini at {}",
                sim.openai_base_url(),
                sim.anthropic_base_url(),
                sim.gemini_base_url()
            );
            shutdown_signal().await;
            sim.shutdown().await;
        }
        Command::Demo { database } => {
            let dir = tempfile_dir()?;
            let database = database.unwrap_or_else(|| sluice::store::database_in(&dir));
            sluice::demo::run(&database, &mut std::io::stdout()).await?;
        }
        Command::Migrate => {
            let config = load_config(&cli.config)?;
            sluice::store::Store::open(&config.server.database).await?;
            println!("{} is up to date", config.server.database.display());
        }
        Command::CheckConfig => {
            let config = load_config(&cli.config)?;
            // The recurring jobs are configuration too: a bad one would otherwise only show
            // as an error in the server's log, once it runs.
            let dir = &config.scheduler.dir;
            let (definitions, errors) = sluice::schedule::load_dir(dir, &config);
            if !errors.is_empty() {
                for error in &errors {
                    eprintln!("error: {error}");
                }
                anyhow::bail!(
                    "{} recurring job definition(s) in {} cannot be used (each is named above)",
                    errors.len(),
                    dir.display()
                );
            }
            println!(
                "configuration OK: {} tenant(s), {} provider(s), {} deployment(s), {} route(s), {} queue, {} recurring job(s)",
                config.tenants.len(),
                config.providers.len(),
                config.deployments.len(),
                config.routes.len(),
                match config.queue.effective_backend() {
                    sluice::config::QueueBackend::Embedded => "embedded",
                    sluice::config::QueueBackend::Rabbitmq => "rabbitmq",
                },
                definitions.len()
            );
        }
        Command::Bench(args) => sluice::bench::run(args, &mut std::io::stdout()).await?,
        Command::Jobs { action } => jobs(load_config(&cli.config)?, action).await?,
        Command::Bulk(command) => bulk(command).await?,
        Command::Costs(args) => costs(load_config(&cli.config)?, args).await?,
        Command::Budgets { tenant, format } => {
            budgets(load_config(&cli.config)?, tenant, &format).await?
        }
        Command::Prices { format } => {
            let catalogue = sluice::pricing::catalogue::Catalogue::shipped();
            match format.as_str() {
                "table" => print!("{}", catalogue.to_table()),
                "json" => println!("{}", serde_json::to_string_pretty(&catalogue.entries)?),
                other => anyhow::bail!("unknown format \"{other}\"; use table or json"),
            }
        }
    }
    Ok(())
}

/// `sluice costs`: reads the store directly (an operator's view across tenants, with no API
/// token and no server needed); tenants use `GET /v1/costs`.
async fn costs(config: Config, args: CostsArgs) -> anyhow::Result<()> {
    use sluice::costs::{Format, ReportQuery};
    let query = ReportQuery::parse(
        args.tenant,
        &args.by,
        args.since.as_deref(),
        args.until.as_deref(),
        chrono::Utc::now(),
    )?;
    let format: Format = args.format.parse()?;
    let store = sluice::store::Store::open(&config.server.database)
        .await
        .with_context(|| format!("opening {}", config.server.database.display()))?;
    print!("{}", store.cost_report(query).await?.render(format));
    Ok(())
}

/// `sluice budgets`: like `sluice costs`, an operator's view read from the store directly.
async fn budgets(config: Config, tenant: Option<String>, format: &str) -> anyhow::Result<()> {
    use sluice::budgets::{view, Budgets};
    if !matches!(format, "table" | "json") {
        anyhow::bail!("unknown format \"{format}\"; use table or json");
    }
    let tenants: Vec<&str> = match &tenant {
        Some(name) if config.tenant(name).is_none() => anyhow::bail!("unknown tenant \"{name}\""),
        Some(name) => vec![name.as_str()],
        None => config.tenants.iter().map(|t| t.name.as_str()).collect(),
    };
    let store = sluice::store::Store::open(&config.server.database)
        .await
        .with_context(|| format!("opening {}", config.server.database.display()))?;
    let views = view::views(&store, &Budgets::from_config(&config), &tenants).await?;
    if format == "json" {
        println!("{}", serde_json::to_string_pretty(&views)?);
    } else if views.is_empty() {
        println!("no budgets configured");
    } else {
        print!("{}", view::to_table(&views));
    }
    Ok(())
}

/// Starts the scheduler of recurring jobs, unless it is disabled or has nothing to run. Bad
/// definitions are logged by file; the good ones still run.
fn start_scheduler(
    app: &App,
    stop: tokio_util::sync::CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    if !app.config.scheduler.enabled {
        return None;
    }
    let (definitions, errors) = sluice::schedule::load_dir(&app.config.scheduler.dir, &app.config);
    for error in errors {
        tracing::error!("recurring job not scheduled: {error}");
    }
    if definitions.is_empty() {
        return None;
    }
    let scheduler = sluice::schedule::Scheduler::new(definitions, app.submitter());
    Some(tokio::spawn(scheduler.run(stop)))
}

/// `sluice jobs list|run`.
async fn jobs(config: Config, action: JobsAction) -> anyhow::Result<()> {
    let dir = config.scheduler.dir.clone();
    let (definitions, errors) = sluice::schedule::load_dir(&dir, &config);
    for error in &errors {
        eprintln!("error: {error}");
    }
    match action {
        JobsAction::List => {
            let store = sluice::store::Store::open(&config.server.database).await?;
            if definitions.is_empty() && errors.is_empty() {
                println!("no recurring jobs in {}", dir.display());
            }
            let now = chrono::Utc::now();
            for definition in &definitions {
                let next: Vec<String> = definition
                    .upcoming(now, 3)
                    .iter()
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .collect();
                let last = store
                    .runs(&definition.name, 1)
                    .await?
                    .first()
                    .map(|run| match run.job_id {
                        Some(job) => format!("{} (job {job})", run.due_at.to_rfc3339()),
                        None => format!("{} (skipped)", run.due_at.to_rfc3339()),
                    })
                    .unwrap_or_else(|| "never".into());
                println!(
                    "{}\n  schedule: {} ({}), {} urgency, catch_up {}, tenant {}\n  next:     {}\n  last run: {last}",
                    definition.name,
                    definition.expression,
                    definition.timezone,
                    definition.urgency,
                    definition.catch_up.as_str(),
                    definition.tenant,
                    next.join(", "),
                );
            }
            if !errors.is_empty() {
                anyhow::bail!(
                    "{} definition(s) in {} cannot be used",
                    errors.len(),
                    dir.display()
                );
            }
        }
        JobsAction::Run { name } => {
            let Some(definition) = definitions.iter().find(|d| d.name == name).cloned() else {
                let known: Vec<&str> = definitions.iter().map(|d| d.name.as_str()).collect();
                anyhow::bail!(
                    "no usable recurring job \"{name}\" in {} (known: {})",
                    dir.display(),
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                );
            };
            let app = App::start(config).await?;
            let scheduler = sluice::schedule::Scheduler::new(definitions, app.submitter());
            let job = scheduler
                .fire(&definition, chrono::Utc::now(), true)
                .await?;
            println!("{job}");
        }
    }
    Ok(())
}

async fn bulk(command: BulkCommand) -> anyhow::Result<()> {
    use sluice::bulk::client as bulk;
    const WAIT_AT_MOST: Duration = Duration::from_secs(7 * 24 * 3600);
    const MAX_PRINTED_ERRORS: usize = 100;
    match command {
        BulkCommand::Submit(args) => {
            let client = Client::new(&args.server.server, &args.server.token);
            let mut defaults = sluice::bulk::Defaults {
                model: args.model,
                urgency: args.urgency,
                deadline: args.deadline,
                ..Default::default()
            };
            for (key, value) in args.tags {
                let slot = match key.as_str() {
                    "user" => &mut defaults.tags.user,
                    "team" => &mut defaults.tags.team,
                    _ => &mut defaults.tags.feature,
                };
                *slot = Some(value);
            }
            let request = sluice::bulk::submit::BulkRequest {
                name: args.name,
                defaults,
                skip_invalid: args.skip_invalid,
            };
            let report = match bulk::submit(&client, &args.file, request, args.rejects, true).await
            {
                Err(sluice::bulk::BulkError::Invalid {
                    lines,
                    invalid,
                    errors,
                }) => {
                    eprintln!(
                        "{}: {invalid} of {lines} lines are invalid:",
                        args.file.display()
                    );
                    bulk::print_lines(&errors, invalid, MAX_PRINTED_ERRORS, "bad lines");
                    anyhow::bail!("nothing was submitted; fix the lines above, or pass --skip-invalid to submit the valid ones and write the others to a rejects file");
                }
                Err(sluice::bulk::BulkError::Client(sluice::client::ClientError::Api {
                    status: 400,
                    message,
                    error,
                })) if error["lines"].is_array() => {
                    let errors: Vec<sluice::bulk::LineError> =
                        serde_json::from_value(error["lines"].clone()).unwrap_or_default();
                    eprintln!("the server refused {}: {message}", args.file.display());
                    bulk::print_lines(
                        &errors,
                        error["invalid_lines"].as_u64().unwrap_or(0),
                        MAX_PRINTED_ERRORS,
                        "bad lines",
                    );
                    anyhow::bail!("nothing was submitted");
                }
                other => other?,
            };
            let s = &report.submission;
            if let Some(rejects) = &report.rejects {
                eprintln!(
                    "{} bad lines skipped, written to {}",
                    report.validation.invalid,
                    rejects.display()
                );
            }
            eprintln!(
                "bulk \"{}\": {} jobs submitted, {} lines already in the bulk (same name and custom_id: not submitted again), {} conflicting (same custom_id, another request: not submitted)",
                s.name, s.submitted, s.duplicates, s.conflicts
            );
            if s.conflicts > 0 {
                eprintln!(
                    "{} lines were NOT submitted: the bulk already holds their custom_id with a different request, and that job stands (give each a new custom_id, or submit under a new --name):",
                    s.conflicts
                );
                bulk::print_lines(
                    &s.conflicting,
                    s.conflicts,
                    MAX_PRINTED_ERRORS,
                    "conflicting lines",
                );
            }
            println!("{}", s.id);
            if args.wait {
                let status = bulk::wait(&client, s.id, WAIT_AT_MOST, true).await?;
                eprintln!("{}", bulk::describe_status(&status));
                if let Some(output) = &args.output {
                    let (lines, _) =
                        bulk::download_results(&client, s.id, Default::default(), Some(output))
                            .await?;
                    eprintln!("{lines} results written to {}", output.display());
                }
            }
        }
        BulkCommand::Status { id, wait, server } => {
            let client = Client::new(server.server, server.token);
            let status = if wait {
                bulk::wait(&client, id, WAIT_AT_MOST, true).await?
            } else {
                client.bulk(id).await?
            };
            eprintln!("{}", bulk::describe_status(&status));
            println!("{}", serde_json::to_string_pretty(&status)?);
        }
        BulkCommand::Results(args) => {
            let client = Client::new(args.server.server, args.server.token);
            if args.wait {
                bulk::wait(&client, args.id, WAIT_AT_MOST, true).await?;
            }
            let filter = sluice::store::ResultsFilter {
                ordered: args.ordered,
                errors_only: args.errors,
                successes_only: false,
            };
            let (lines, pending) =
                bulk::download_results(&client, args.id, filter, args.output.as_deref()).await?;
            if let Some(output) = &args.output {
                eprintln!("{lines} results written to {}", output.display());
            }
            if pending > 0 {
                eprintln!("{pending} jobs are not finished yet and are not in the results; run again later, or with --wait");
            }
        }
        BulkCommand::Cancel { id, server } => {
            let answer = Client::new(server.server, server.token)
                .bulk_cancel(id)
                .await?;
            eprintln!(
                "bulk {id}: {} queued jobs cancelled; running jobs finish",
                answer["cancelled"]
            );
            println!("{}", serde_json::to_string_pretty(&answer)?);
        }
    }
    Ok(())
}

async fn submit(args: SubmitArgs) -> anyhow::Result<()> {
    let body: serde_json::Value = match (&args.file, &args.prompt) {
        (Some(path), _) => {
            let text = if path.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?
            };
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid JSON", path.display()))?
        }
        (None, Some(prompt)) => serde_json::json!({
            "urgency": args.urgency,
            "custom_id": args.custom_id,
            "request": {"model": args.model, "messages": [{"role": "user", "content": prompt}]},
        }),
        (None, None) => anyhow::bail!("give a prompt, or --file with a job JSON"),
    };
    let client = Client::new(args.server.server, args.server.token);
    let answer = client.submit(&body).await?;
    match (
        args.wait,
        answer["id"].as_str().and_then(|id| id.parse().ok()),
    ) {
        (true, Some(id)) => {
            let job = client.wait(id, Duration::from_secs(600)).await?;
            println!("{}", serde_json::to_string_pretty(&job)?);
        }
        _ => println!("{}", serde_json::to_string_pretty(&answer)?),
    }
    Ok(())
}

/// A directory that lives as long as the process (the demo's database by default).
fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("sluice-demo-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Ctrl-C, or SIGTERM on Unix: what `docker stop`, systemd and Kubernetes send, so a
/// deployment's restart finishes the jobs in flight instead of leaving them leased until
/// their visibility timeout (or, as PID 1 in a container, ignoring the signal altogether).
async fn shutdown_signal() {
    let interrupted = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminated = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops gracefully");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminated = std::future::pending::<()>();
    tokio::select! {
        () = interrupted => {}
        () = terminated => {}
    }
    tracing::info!("shutting down: finishing the jobs in flight");
}
