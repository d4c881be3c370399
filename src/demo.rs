//! `sluice demo`: the whole loop on one machine with nothing installed.
//!
//! Starts the simulator and the embedded queue with the built-in configuration, submits a
//! handful of jobs of each urgency across the three API families (OpenAI, Anthropic and
//! Gemini formats; one job answered first with a 429, so it shows a retry; a `batch` job on
//! `fast` goes through the simulator's OpenAI Batch API at half price), waits for them, and
//! prints each result, its attempts and its cost (with what the batch tier saved), then the
//! total. Each attempt says why it ran where it did, and the demo's directives to the
//! simulator (`[sim fail=429]`) are explained as they appear.

use crate::app::App;
use crate::config::Config;
use crate::job::{ChatRequest, JobSpec, Tags, Urgency};
use crate::pricing::PicoUsd;
use std::path::Path;
use std::time::Duration;

/// The demo's jobs: (urgency, model, prompt).
const JOBS: &[(Urgency, &str, &str)] = &[
    (Urgency::Realtime, "fast", "Say hello to the Sluice demo."),
    (Urgency::Realtime, "smart", "Name three rivers in Europe."),
    (
        Urgency::Standard,
        "fast",
        "Summarise: queues decouple producers from consumers.",
    ),
    (
        Urgency::Standard,
        "smart",
        "[sim fail=429] Translate 'good morning' to French.",
    ),
    (
        Urgency::Batch,
        "fast",
        "Classify the sentiment of: 'what a lovely day'.",
    ),
    (Urgency::Batch, "smart", "Write a haiku about rate limits."),
    // The same request shape, served by Anthropic's and Gemini's wire formats.
    (
        Urgency::Standard,
        "writer",
        "Draft a one-line release note for Sluice.",
    ),
    (Urgency::Standard, "flash", "List two uses of a job queue."),
];

pub async fn run(database: &Path, out: &mut impl std::io::Write) -> anyhow::Result<PicoUsd> {
    let mut config = Config::builtin();
    config.server.database = database.into();
    let app = App::start(config.resolve()?).await?;
    let workers = app.start_workers(&Urgency::ALL);
    let submitter = app.submitter();

    let specs = JOBS
        .iter()
        .map(|(urgency, model, prompt)| JobSpec {
            tags: Tags {
                team: Some("demo".into()),
                ..Tags::default()
            },
            ..JobSpec::new(*urgency, ChatRequest::single_user_message(*model, *prompt))
        })
        .collect();
    let submitted = submitter.submit("demo", specs).await?;
    writeln!(
        out,
        "submitted {} jobs to the embedded queue\n\n\
         A prompt that starts with [sim …] carries a directive to the provider simulator:\n\
         [sim fail=429] makes the first call answer 429, to show a retry (docs/simulator.md).\n",
        submitted.len()
    )?;

    let mut total = PicoUsd(0);
    for (s, (urgency, model, prompt)) in submitted.iter().zip(JOBS) {
        let job = wait_final(&app, s.id).await?;
        writeln!(
            out,
            "job {}  [{urgency}, model {model}]  {}",
            s.id, job.status
        )?;
        writeln!(out, "  prompt: {prompt}")?;
        if let Some(result) = &job.result {
            let answer = result["choices"][0]["message"]["content"]
                .as_str()
                .unwrap_or("");
            writeln!(out, "  answer: {answer}")?;
        }
        if let Some(error) = &job.error {
            writeln!(out, "  error:  {} ({})", error.message, error.kind)?;
        }
        for a in &job.attempts {
            writeln!(
                out,
                "  attempt {}: {} ({}) via key {} -> {}{} in {} ms",
                a.number,
                a.deployment,
                a.tier,
                a.key_id,
                a.outcome,
                a.http_status
                    .map(|s| format!(" (HTTP {s})"))
                    .unwrap_or_default(),
                a.duration_ms
            )?;
            if let Some(why) = &a.chosen_because {
                writeln!(out, "    why: {why}")?;
            }
            if let Some(note) = tier_note(&app.config, *urgency, model, a) {
                writeln!(out, "    note: {note}")?;
            }
        }
        if let Some(cost) = &job.cost {
            writeln!(
                out,
                "  cost:   {} ({} in, {} cached, {} out @ ${}/${} per Mtok)",
                PicoUsd(cost.amount_pico_usd).for_people(),
                cost.input_tokens,
                cost.cached_tokens,
                cost.output_tokens,
                cost.input_price_per_mtok,
                cost.output_price_per_mtok
            )?;
            if let Some(saved) = &cost.batch_saved_usd {
                let saved =
                    PicoUsd::parse_usd(saved).map_or_else(|_| saved.clone(), PicoUsd::for_people);
                writeln!(
                    out,
                    "          on the batch tier: {saved} less than real-time"
                )?;
            }
            total = total + PicoUsd(cost.amount_pico_usd);
        }
        writeln!(out)?;
    }
    let stored_total = app.store.total_cost().await?;
    writeln!(
        out,
        "total cost: {} (sum of the cost records in {})",
        stored_total.for_people(),
        database.display()
    )?;
    anyhow::ensure!(
        total == stored_total,
        "printed costs {total} differ from the stored total {stored_total}"
    );
    workers.shutdown().await;
    if let Some(sim) = app.sim {
        sim.shutdown().await;
    }
    Ok(stored_total)
}

/// Why a job ran on a tier its urgency would not suggest, in the configuration's words: a
/// `batch` job whose deployment has no batch tier runs real-time; a `standard` job goes to
/// the batch tier when its route gives standard jobs a deadline far enough away.
fn tier_note(
    config: &Config,
    urgency: Urgency,
    model: &str,
    attempt: &crate::store::jobs::AttemptView,
) -> Option<String> {
    let has_batch_tier = config
        .deployments
        .get(&attempt.deployment)
        .is_some_and(|d| d.batch.is_some());
    match (urgency, attempt.tier.as_str()) {
        (Urgency::Batch, "realtime") if !has_batch_tier => Some(format!(
            "ran real-time: deployment {} has no batch tier (no `batch` in deployments.{})",
            attempt.deployment, attempt.deployment
        )),
        (Urgency::Standard, "batch") => {
            let deadline = config.routes.get(model)?.deadline.standard?;
            Some(format!(
                "a standard job with a deadline may use the batch tier: routes.{model}.deadline.standard = \"{}\"",
                humantime::format_duration(deadline)
            ))
        }
        _ => None,
    }
}

async fn wait_final(app: &App, id: uuid::Uuid) -> anyhow::Result<crate::store::JobView> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let job = app
            .store
            .job("demo", id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("job {id} vanished"))?;
        if job.status.is_terminal() {
            return Ok(job);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "job {id} did not finish within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
