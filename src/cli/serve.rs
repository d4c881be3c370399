//! `sluice serve` and `sluice worker`: the long-running processes, each stopped gracefully by
//! Ctrl-C or SIGTERM.

use super::shutdown_signal;
use anyhow::Context;
use sluice::app::App;
use sluice::config::ResolvedConfig;
use sluice::job::Urgency;
use std::net::SocketAddr;
use std::time::Duration;

/// How often `serve` looks for jobs a crash left recorded but unpublished, and how old such a
/// job must be (younger ones may simply be waiting for their publisher confirm).
const RELAY_EVERY: Duration = Duration::from_secs(30);
const RELAY_AFTER: Duration = Duration::from_secs(60);

/// `sluice serve`: the API, the outbox relay and the scheduler, and (unless `no_workers`)
/// the worker pools of every urgency.
pub async fn serve(config: ResolvedConfig, no_workers: bool) -> anyhow::Result<()> {
    let app = if no_workers {
        App::start_without_calls(config).await?
    } else {
        App::start(config).await?
    };
    let listener = tokio::net::TcpListener::bind(&app.config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", app.config.server.listen))?;
    let metrics_listener = bind_metrics(&app).await?;
    tracing::info!(address = %listener.local_addr()?, queue = app.queue.name(), "serving the Sluice API");
    let workers = (!no_workers).then(|| app.start_workers(&Urgency::ALL));
    let stop = tokio_util::sync::CancellationToken::new();
    let metrics = serve_metrics(&app, metrics_listener, &stop)?;
    let relay = tokio::spawn(
        app.submitter()
            .run_relay(RELAY_EVERY, RELAY_AFTER, stop.clone()),
    );
    let scheduler = start_scheduler(&app, stop.clone());
    app.serve(listener, shutdown_signal()).await?;
    stop.cancel();
    let _ = relay.await;
    if let Some(metrics) = metrics {
        metrics.await??;
    }
    if let Some(scheduler) = scheduler {
        let _ = scheduler.await;
    }
    if let Some(workers) = workers {
        workers.shutdown().await;
    }
    Ok(())
}

/// `sluice worker`: worker pools for `urgencies` (every urgency when empty), and, given
/// `health_listen`, `GET /healthz` and `GET /readyz` on that address (a worker has no API
/// for a container's health check or an orchestrator's probes to ask); `GET /metrics` on
/// `[telemetry] metrics_listen` when set.
pub async fn worker(
    config: ResolvedConfig,
    urgencies: Vec<Urgency>,
    health_listen: Option<SocketAddr>,
) -> anyhow::Result<()> {
    let app = App::start(config).await?;
    // Bound before any work starts, so an address in use stops the start instead of leaving
    // a worker nothing can watch.
    let health_listener = match health_listen {
        Some(address) => Some(
            tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen on {address} for health checks"))?,
        ),
        None => None,
    };
    let metrics_listener = bind_metrics(&app).await?;
    let urgencies = if urgencies.is_empty() {
        Urgency::ALL.to_vec()
    } else {
        urgencies
    };
    let workers = app.start_workers(&urgencies);
    tracing::info!(?urgencies, queue = app.queue.name(), "workers started");
    let stop = tokio_util::sync::CancellationToken::new();
    let health = match health_listener {
        Some(listener) => {
            tracing::info!(address = %listener.local_addr()?, "serving the worker's health");
            Some(tokio::spawn(sluice::api::serve_health(
                listener,
                app.api_state(),
                stop.clone().cancelled_owned(),
            )))
        }
        None => None,
    };
    let metrics = serve_metrics(&app, metrics_listener, &stop)?;
    shutdown_signal().await;
    workers.shutdown().await;
    // Health answers until the jobs in flight are finished: the process is still alive.
    stop.cancel();
    if let Some(health) = health {
        health.await??;
    }
    if let Some(metrics) = metrics {
        metrics.await??;
    }
    Ok(())
}

/// Binds `[telemetry] metrics_listen`, when set, before any work starts: an address in use
/// stops the start instead of leaving a process nobody can scrape.
async fn bind_metrics(app: &App) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    let Some(address) = app.config.telemetry.metrics_address() else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address} for metrics"))?;
    Ok(Some(listener))
}

/// Serves `GET /metrics` on `listener` until `stop`, in a task of its own.
fn serve_metrics(
    app: &App,
    listener: Option<tokio::net::TcpListener>,
    stop: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<Option<tokio::task::JoinHandle<std::io::Result<()>>>> {
    let Some(listener) = listener else {
        return Ok(None);
    };
    tracing::info!(address = %listener.local_addr()?, "serving metrics");
    Ok(Some(tokio::spawn(sluice::api::serve_metrics(
        listener,
        app.api_state(),
        stop.clone().cancelled_owned(),
    ))))
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
