//! `sluice submit`, `get` and `wait`, one job through the API; and `sluice jobs list|run`,
//! the recurring jobs of the configuration.

use super::connect::ServerArgs;
use super::urgency;
use anyhow::Context;
use clap::{Args, Subcommand};
use sluice::app::App;
use sluice::config::ResolvedConfig;
use sluice::job::Urgency;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Args)]
pub struct SubmitArgs {
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

/// `sluice submit`: a prompt or a job JSON; with `--wait`, the job once final.
pub async fn submit(args: SubmitArgs, config: Option<&Path>) -> anyhow::Result<()> {
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

/// `sluice get`: the job as the API shows it.
pub async fn get(id: uuid::Uuid, server: ServerArgs, config: Option<&Path>) -> anyhow::Result<()> {
    let job = server.client(config)?.get(id, None).await?;
    outln!("{}", serde_json::to_string_pretty(&job)?);
    Ok(())
}

/// `sluice wait`: the job once it is final, or as it stands after `timeout`.
pub async fn wait(
    id: uuid::Uuid,
    timeout: Duration,
    server: ServerArgs,
    config: Option<&Path>,
) -> anyhow::Result<()> {
    let job = server.client(config)?.wait(id, timeout).await?;
    outln!("{}", serde_json::to_string_pretty(&job)?);
    Ok(())
}

#[derive(Subcommand)]
pub enum JobsAction {
    /// List every definition with its next due times and last run; name every bad file.
    List,
    /// Run one definition now (besides its schedule), and print the job id.
    Run {
        /// The definition's name: its file's name without `.toml`, as `jobs list` shows it.
        name: String,
    },
}

/// `sluice jobs list|run`.
pub async fn jobs(config: ResolvedConfig, action: JobsAction) -> anyhow::Result<()> {
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
