//! The `sluice` command line.

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use sluice::app::App;
use sluice::client::Client;
use sluice::config::{Config, ResolvedConfig};
use sluice::job::Urgency;
use sluice::worker::WorkerPools;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `println!` that returns the error instead of panicking: a closed pipe (`| head`) then ends
/// the command quietly (see [`main`]).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?
    }};
}

/// `print!` the same way as [`outln`].
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout().lock(), $($arg)*)?
    }};
}

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
        /// Urgencies to work on (repeatable); all when not given.
        #[arg(long, value_parser = urgency())]
        urgency: Vec<Urgency>,
    },
    /// Submit a job through the API and print its id.
    Submit(SubmitArgs),
    /// Print a job: status, result, attempts and cost.
    Get {
        /// The job's id, as `sluice submit` prints it.
        id: uuid::Uuid,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Wait until a job is final, then print it.
    Wait {
        /// The job's id, as `sluice submit` prints it.
        id: uuid::Uuid,
        /// Give up after this long.
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        timeout: Duration,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Serve the provider simulator on its own.
    Sim {
        /// The address to serve the three provider APIs on.
        #[arg(long, default_value = "127.0.0.1:9090")]
        listen: std::net::SocketAddr,
        /// How long a batch takes to end (overrides `sim.batch_turnaround`), e.g. 500ms.
        #[arg(long, value_parser = humantime::parse_duration)]
        batch_turnaround: Option<Duration>,
    },
    /// Run sample jobs of every urgency through the simulator and the embedded queue.
    Demo {
        /// Where to keep the demo's database (by default a temporary file, removed at the end).
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
        #[arg(long, value_enum, default_value_t = Listing::Table)]
        format: Listing,
    },
    /// The shipped price catalogue (USD per million tokens), with each price's date and source.
    Prices {
        #[arg(long, value_enum, default_value_t = Listing::Table)]
        format: Listing,
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
    #[arg(long, value_enum, default_value_t = sluice::costs::Format::Table)]
    format: sluice::costs::Format,
}

/// How a listing is printed.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Listing {
    /// Aligned columns for people.
    Table,
    /// JSON for programs.
    Json,
}

#[derive(Subcommand)]
enum JobsAction {
    /// List every definition with its next due times and last run; name every bad file.
    List,
    /// Run one definition now (besides its schedule), and print the job id.
    Run {
        /// The definition's name: its file's name without `.toml`, as `jobs list` shows it.
        name: String,
    },
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
        #[arg(value_name = "BULK")]
        /// The bulk: its id, its batch id (`batch_…`) or its name.
        id: String,
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
        /// The bulk: its id, its batch id (`batch_…`) or its name.
        #[arg(value_name = "BULK")]
        id: String,
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
    /// The model (a route or deployment name) for lines whose request names none.
    #[arg(long)]
    model: Option<String>,
    /// How soon the answers are needed: realtime, standard, or batch (the cheapest: a
    /// provider's batch tier where the route has one).
    #[arg(long, default_value = "batch", value_parser = urgency())]
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
    /// The bulk: its id, its batch id (`batch_…`) or its name.
    #[arg(value_name = "BULK")]
    id: String,
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
    /// Base URL of a running `sluice serve` [default: the address the --config file listens
    /// on, else http://127.0.0.1:8080].
    #[arg(long, env = "SLUICE_SERVER")]
    server: Option<String>,
    /// The tenant's API token [default: the first tenant's token in the --config file, else
    /// the built-in sk-sluice-demo].
    #[arg(long, env = "SLUICE_TOKEN")]
    token: Option<String>,
}

impl ServerArgs {
    /// The client these arguments name. What they leave out comes from the configuration
    /// file when one is given (its address and first tenant's token), else from the built-in
    /// configuration. The file's types and keys are checked, not the providers' secrets,
    /// which a client's machine need not have.
    fn client(self, config: Option<&Path>) -> anyhow::Result<Client> {
        let loaded;
        let config = match config {
            Some(path) => {
                loaded = Config::load_for_client(path)?;
                &loaded
            }
            None => &Config::builtin(),
        };
        let server = match self.server {
            Some(server) => server,
            None => config.server.client_url(),
        };
        let token = match self.token {
            Some(token) => token,
            None => {
                let tenant = config.tenants.first().ok_or_else(|| {
                    anyhow::anyhow!("the configuration has no tenant; give --token")
                })?;
                if let Some(problem) = config.secret_problem("tenants[0].token") {
                    anyhow::bail!("{problem}; give --token, or set the variable");
                }
                tenant.token.expose().to_string()
            }
        };
        Ok(Client::new(server, token))
    }
}

#[derive(Args)]
struct SubmitArgs {
    /// The prompt (a single user message). Use --file for a full job JSON.
    prompt: Option<String>,
    /// A job as JSON (`{"urgency", "tags", "custom_id", "request": {...}}`), or `-` for stdin.
    #[arg(long, conflicts_with = "prompt")]
    file: Option<PathBuf>,
    /// The model: a route or deployment name of the server's configuration.
    #[arg(long, default_value = "fast")]
    model: String,
    /// How soon the answer is needed: realtime, standard, or batch (the cheapest: a
    /// provider's batch tier where the route has one).
    #[arg(long, default_value = "standard", value_parser = urgency())]
    urgency: Urgency,
    /// Your own id for the job, unique per tenant: submitting it again returns the first job
    /// instead of a second one.
    #[arg(long)]
    custom_id: Option<String>,
    /// Wait for the result and print the job.
    #[arg(long)]
    wait: bool,
    #[command(flatten)]
    server: ServerArgs,
}

/// An urgency's name, its possible values listed in `--help`.
fn urgency() -> impl clap::builder::TypedValueParser<Value = Urgency> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(Urgency::ALL.map(Urgency::as_str))
        .try_map(|text| text.parse::<Urgency>())
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
        // The reader went away (`sluice budgets | head`): nobody is left to tell.
        Err(e) if is_closed_pipe(&e) => std::process::ExitCode::SUCCESS,
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

/// Whether `error` is a write to a pipe whose reader has gone.
fn is_closed_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn start() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
                .unwrap_or_else(|_| default_log_filter(&cli.command).into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person's terminal, never into a file or a log collector.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    tokio::runtime::Runtime::new()?.block_on(run(cli))
}

fn default_log_filter(command: &Command) -> &'static str {
    match command {
        Command::Demo { .. } | Command::Bench(_) | Command::Bulk(_) => "warn",
        _ => "info",
    }
}

fn load_config(path: &Option<PathBuf>) -> anyhow::Result<ResolvedConfig> {
    Ok(match path {
        Some(path) => Config::load(path)?,
        None => Config::builtin().resolve()?,
    })
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { no_workers } => {
            let config = load_config(&cli.config)?;
            let app = if no_workers {
                App::start_without_calls(config).await?
            } else {
                App::start(config).await?
            };
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
        Command::Submit(args) => submit(args, cli.config.as_deref()).await?,
        Command::Get { id, server } => {
            let job = server.client(cli.config.as_deref())?.get(id, None).await?;
            outln!("{}", serde_json::to_string_pretty(&job)?);
        }
        Command::Wait {
            id,
            timeout,
            server,
        } => {
            let job = server
                .client(cli.config.as_deref())?
                .wait(id, timeout)
                .await?;
            outln!("{}", serde_json::to_string_pretty(&job)?);
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
            // The default database lives in a folder removed when the demo ends.
            let dir = tempfile::Builder::new().prefix("sluice-demo-").tempdir()?;
            let database = database.unwrap_or_else(|| sluice::store::database_in(dir.path()));
            sluice::demo::run(&database, &mut std::io::stdout()).await?;
        }
        Command::Migrate => {
            let config = load_config(&cli.config)?;
            sluice::app::open_store(&config).await?;
            outln!("{} is up to date", config.server.database);
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
            outln!(
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
        Command::Bulk(command) => bulk(command, cli.config.as_deref()).await?,
        Command::Costs(args) => costs(load_config(&cli.config)?, args).await?,
        Command::Budgets { tenant, format } => {
            budgets(load_config(&cli.config)?, tenant, format).await?
        }
        Command::Prices { format } => {
            let catalogue = sluice::pricing::catalogue::Catalogue::shipped();
            match format {
                Listing::Table => out!("{}", catalogue.to_table()),
                Listing::Json => outln!("{}", serde_json::to_string_pretty(&catalogue.entries)?),
            }
        }
    }
    Ok(())
}

/// `sluice costs`: reads the store directly (an operator's view across tenants, with no API
/// token and no server needed); tenants use `GET /v1/costs`.
async fn costs(config: ResolvedConfig, args: CostsArgs) -> anyhow::Result<()> {
    use sluice::costs::ReportQuery;
    let query = ReportQuery::parse(
        args.tenant,
        &args.by,
        args.since.as_deref(),
        args.until.as_deref(),
        chrono::Utc::now(),
    )?;
    let store = sluice::app::open_store(&config)
        .await
        .with_context(|| format!("opening {}", config.server.database))?;
    out!("{}", store.cost_report(query).await?.render(args.format));
    Ok(())
}

/// `sluice budgets`: like `sluice costs`, an operator's view read from the store directly.
async fn budgets(
    config: ResolvedConfig,
    tenant: Option<String>,
    format: Listing,
) -> anyhow::Result<()> {
    use sluice::budgets::{view, Budgets};
    let tenants: Vec<&str> = match &tenant {
        Some(name) if config.tenant(name).is_none() => anyhow::bail!("unknown tenant \"{name}\""),
        Some(name) => vec![name.as_str()],
        None => config.tenants.iter().map(|t| t.name.as_str()).collect(),
    };
    let store = sluice::app::open_store(&config)
        .await
        .with_context(|| format!("opening {}", config.server.database))?;
    let views = view::views(&store, &Budgets::from_config(&config), &tenants).await?;
    if format == Listing::Json {
        outln!("{}", serde_json::to_string_pretty(&views)?);
    } else if views.is_empty() {
        outln!("no budgets configured");
    } else {
        out!("{}", view::to_table(&views));
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
async fn jobs(config: ResolvedConfig, action: JobsAction) -> anyhow::Result<()> {
    let dir = config.scheduler.dir.clone();
    let (definitions, errors) = sluice::schedule::load_dir(&dir, &config);
    for error in &errors {
        eprintln!("error: {error}");
    }
    match action {
        JobsAction::List => {
            let store = sluice::app::open_store(&config).await?;
            if definitions.is_empty() && errors.is_empty() {
                outln!("no recurring jobs in {}", dir.display());
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
                outln!(
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
            let app = App::start_without_calls(config).await?;
            let scheduler = sluice::schedule::Scheduler::new(definitions, app.submitter());
            let job = scheduler
                .fire(&definition, chrono::Utc::now(), true)
                .await?;
            outln!("{job}");
        }
    }
    Ok(())
}

async fn bulk(command: BulkCommand, config: Option<&Path>) -> anyhow::Result<()> {
    use sluice::bulk::client as bulk;
    const WAIT_AT_MOST: Duration = Duration::from_secs(7 * 24 * 3600);
    const MAX_PRINTED_ERRORS: usize = 100;
    match command {
        BulkCommand::Submit(args) => {
            let client = args.server.client(config)?;
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
                        "{}: {invalid} of {} {} invalid:",
                        args.file.display(),
                        bulk::count(lines, "line", "lines"),
                        if invalid == 1 { "is" } else { "are" }
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
                    "{} skipped, written to {}",
                    bulk::count(report.validation.invalid, "bad line", "bad lines"),
                    rejects.display()
                );
            }
            eprintln!(
                "bulk \"{}\": {} submitted, {} already in the bulk (same name and custom_id: not submitted again), {} (same custom_id, another request: not submitted)",
                s.name,
                bulk::count(s.submitted, "job", "jobs"),
                bulk::count(s.duplicates, "line", "lines"),
                bulk::count(s.conflicts, "conflicting line", "conflicting lines"),
            );
            if s.conflicts > 0 {
                eprintln!(
                    "{} NOT submitted: the bulk already holds their custom_id with a different request, and that job stands (give each a new custom_id, or submit under a new --name):",
                    bulk::count(s.conflicts, "line was", "lines were"),
                );
                bulk::print_lines(
                    &s.conflicting,
                    s.conflicts,
                    MAX_PRINTED_ERRORS,
                    "conflicting lines",
                );
            }
            outln!("{}", s.id);
            if args.wait {
                let status = bulk::wait(&client, s.id, WAIT_AT_MOST, true).await?;
                eprintln!("{}", bulk::describe_status(&status));
                if let Some(output) = &args.output {
                    let (lines, _) =
                        bulk::download_results(&client, s.id, Default::default(), Some(output))
                            .await?;
                    eprintln!(
                        "{} written to {}",
                        bulk::count(lines, "result", "results"),
                        output.display()
                    );
                }
            }
        }
        BulkCommand::Status { id, wait, server } => {
            let client = server.client(config)?;
            let status = if wait {
                bulk::wait(&client, &id, WAIT_AT_MOST, true).await?
            } else {
                client.bulk(&id).await?
            };
            eprintln!("{}", bulk::describe_status(&status));
            outln!("{}", serde_json::to_string_pretty(&status)?);
        }
        BulkCommand::Results(args) => {
            let client = args.server.client(config)?;
            if args.wait {
                bulk::wait(&client, &args.id, WAIT_AT_MOST, true).await?;
            }
            let filter = sluice::store::ResultsFilter {
                ordered: args.ordered,
                errors_only: args.errors,
                successes_only: false,
            };
            let (lines, pending) =
                bulk::download_results(&client, &args.id, filter, args.output.as_deref()).await?;
            if let Some(output) = &args.output {
                eprintln!(
                    "{} written to {}",
                    bulk::count(lines, "result", "results"),
                    output.display()
                );
            }
            if pending > 0 {
                eprintln!(
                    "{} not finished yet, so not in the results; run again later, or with --wait",
                    bulk::count(pending, "job is", "jobs are")
                );
            }
        }
        BulkCommand::Cancel { id, server } => {
            let answer = server.client(config)?.bulk_cancel(&id).await?;
            eprintln!(
                "bulk {id}: {} cancelled; running jobs finish",
                bulk::count(
                    answer["cancelled"].as_u64().unwrap_or(0),
                    "queued job",
                    "queued jobs"
                )
            );
            outln!("{}", serde_json::to_string_pretty(&answer)?);
        }
    }
    Ok(())
}

async fn submit(args: SubmitArgs, config: Option<&Path>) -> anyhow::Result<()> {
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
    let client = args.server.client(config)?;
    let answer = client.submit(&body).await?;
    match (
        args.wait,
        answer["id"].as_str().and_then(|id| id.parse().ok()),
    ) {
        (true, Some(id)) => {
            let job = client.wait(id, Duration::from_secs(600)).await?;
            outln!("{}", serde_json::to_string_pretty(&job)?);
        }
        _ => outln!("{}", serde_json::to_string_pretty(&answer)?),
    }
    Ok(())
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
