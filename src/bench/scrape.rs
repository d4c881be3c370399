//! `GET /metrics` timed over HTTP once the bench's jobs are in the store: the scrape reads
//! its gauges from the queue and the store, so its time must not grow with the jobs held.

use crate::app::App;
use std::time::{Duration, Instant};

/// How many scrapes are timed; the first (connection set-up) is not counted.
const SCRAPES: usize = 21;

/// The times of [`SCRAPES`] - 1 scrapes of `app`'s API, sorted, each with its answer read
/// whole; `None` when metrics are off.
pub async fn time_scrapes(app: &App) -> anyhow::Result<Option<Vec<Duration>>> {
    if !app.metrics.is_on() {
        return Ok(None);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/metrics", listener.local_addr()?);
    let stop = tokio_util::sync::CancellationToken::new();
    let state = app.api_state();
    // The metrics listener's route: the API port's asks for an operator's token, which a
    // bench's configuration need not have; the scrape itself is the same.
    let server = tokio::spawn(crate::api::serve_metrics(
        listener,
        state,
        stop.clone().cancelled_owned(),
    ));
    let http = reqwest::Client::new();
    let mut times = Vec::with_capacity(SCRAPES);
    for _ in 0..SCRAPES {
        let started = Instant::now();
        let answer = http.get(&url).send().await?.error_for_status()?;
        let text = answer.text().await?;
        times.push(started.elapsed());
        anyhow::ensure!(
            text.contains("sluice_jobs_finished_total"),
            "an empty scrape"
        );
    }
    stop.cancel();
    server.await??;
    times.remove(0);
    times.sort();
    Ok(Some(times))
}
