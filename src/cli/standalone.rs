//! The commands that need no running server: `sluice sim`, `demo`, `bench`, `migrate` and
//! `check-config`.

use super::{load_config, shutdown_signal};
use std::path::PathBuf;
use std::time::Duration;

/// `sluice sim`: the provider simulator on `listen` until stopped.
pub async fn sim(
    config: &Option<PathBuf>,
    listen: std::net::SocketAddr,
    batch_turnaround: Option<Duration>,
) -> anyhow::Result<()> {
    let config = load_config(config)?;
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
    Ok(())
}

/// `sluice demo`: sample jobs through the simulator and the embedded queue.
pub async fn demo(database: Option<PathBuf>) -> anyhow::Result<()> {
    // The default database lives in a folder removed when the demo ends.
    let dir = tempfile::Builder::new().prefix("sluice-demo-").tempdir()?;
    let database = database.unwrap_or_else(|| sluice::store::database_in(dir.path()));
    sluice::demo::run(&database, &mut std::io::stdout()).await?;
    Ok(())
}

/// `sluice migrate`: the schema created or upgraded.
pub async fn migrate(config: &Option<PathBuf>) -> anyhow::Result<()> {
    let config = load_config(config)?;
    sluice::app::open_store(&config).await?;
    outln!("{} is up to date", config.server.database);
    Ok(())
}

/// `sluice check-config`: every problem of the configuration and of the recurring jobs'
/// definitions, or a summary of what it configures.
pub fn check_config(config: &Option<PathBuf>) -> anyhow::Result<()> {
    let config = load_config(config)?;
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
    Ok(())
}

/// `sluice bench`.
pub async fn bench(args: sluice::bench::BenchArgs) -> anyhow::Result<()> {
    sluice::bench::run(args, &mut std::io::stdout()).await
}
