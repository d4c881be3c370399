//! What the processes of a cluster share through the store, so that many API and worker
//! processes on many machines behave as one Sluice.
//!
//! A process on a PostgreSQL store runs one loop ([`run`]) beside its work:
//!
//! - **key capacity** ([`capacity`]): every key's buckets live in the store, and the process
//!   leases cells from them in blocks, about what its calls asked for in the last tick
//!   (`crate::limits::shared`); a 429's cooldown or a spent key told here is published, and
//!   rests told elsewhere are applied here, within a tick;
//! - **health** ([`health`]): a heartbeat, and each deployment's health as this process sees
//!   it, reported every second; a circuit another process opened is adopted, so its workers
//!   skip that deployment too; `GET /v1/providers` merges the reports ([`view`]).
//!
//! A process alone on a SQLite store keeps everything in memory instead, as before.

pub mod capacity;
pub mod health;
pub mod view;

use crate::router::Router;
use crate::store::{ProcessBeat, Store};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How often the loop leases cells and reads rests, unless a call that found no cells wakes
/// it sooner.
pub const TICK: Duration = Duration::from_millis(200);

/// How often the process beats and reports its health (every this many ticks: a second).
const BEAT_EVERY: u32 = 5;

/// How long after its last beat a process still counts as alive (and its reports as fresh).
pub const FRESH: Duration = Duration::from_secs(10);

/// How long a silent process, and a rest that ended, are kept before being forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// The soonest the loop runs again after a wake: a burst of calls finding no cells makes
/// one lease, not one each.
const WAKE_GAP: Duration = Duration::from_millis(10);

/// How often a loop that started before its process served or ran workers looks again.
const ROLE_POLL: Duration = Duration::from_millis(50);

/// This process, as the cluster knows it: its id, and what it does (an API, workers, both).
#[derive(Debug)]
pub struct ThisProcess {
    pub id: String,
    host: String,
    serves_api: AtomicBool,
    runs_workers: AtomicBool,
}

impl ThisProcess {
    fn new() -> ThisProcess {
        ThisProcess {
            id: uuid::Uuid::now_v7().to_string(),
            host: whoami::fallible::hostname().unwrap_or_else(|_| "unknown".into()),
            serves_api: AtomicBool::new(false),
            runs_workers: AtomicBool::new(false),
        }
    }

    pub fn serves_api(&self) {
        self.serves_api.store(true, Ordering::Relaxed);
    }

    pub fn runs_workers(&self) {
        self.runs_workers.store(true, Ordering::Relaxed);
    }

    /// Whether this process serves the API or runs workers yet: until it does, it has
    /// nothing to tell the cluster (a command that only reads the store never does).
    fn has_role(&self) -> bool {
        self.serves_api.load(Ordering::Relaxed) || self.runs_workers.load(Ordering::Relaxed)
    }

    /// Whether this process runs workers, which call providers.
    pub fn calls_providers(&self) -> bool {
        self.runs_workers.load(Ordering::Relaxed)
    }

    fn beat(&self) -> ProcessBeat {
        let role = match (
            self.serves_api.load(Ordering::Relaxed),
            self.runs_workers.load(Ordering::Relaxed),
        ) {
            (true, true) => "api+worker",
            (true, false) => "api",
            (false, true) => "worker",
            // Not beaten: the loop waits for a role.
            (false, false) => "idle",
        };
        ProcessBeat {
            id: self.id.clone(),
            role: role.into(),
            host: self.host.clone(),
            pid: std::process::id(),
        }
    }
}

/// A process's membership of the cluster: what the app keeps. Dropping it stops the loop.
#[derive(Debug)]
pub struct Membership {
    pub process: Arc<ThisProcess>,
    /// Wakes the loop: a call found no cells, or a rest was told.
    pub wake: Arc<Notify>,
    _stop: tokio_util::sync::DropGuard,
}

impl Membership {
    /// A new member; [`Membership::start`] runs its loop once the router is built.
    pub fn new() -> (Membership, CancellationToken) {
        let stop = CancellationToken::new();
        let membership = Membership {
            process: Arc::new(ThisProcess::new()),
            wake: Arc::new(Notify::new()),
            _stop: stop.clone().drop_guard(),
        };
        (membership, stop)
    }

    /// Runs the loop for `router`'s keys and deployments on `store` until dropped.
    pub fn start(&self, store: Store, router: Arc<Router>, stop: CancellationToken) {
        tokio::spawn(run(
            store,
            router,
            self.process.clone(),
            self.wake.clone(),
            stop,
        ));
    }
}

/// The loop: leases and rests every [`TICK`] (in a process that runs workers) (or on a wake), a beat and health reports every
/// second, old rows forgotten every hour. A store that fails is logged and tried again on
/// the next tick; meanwhile calls find no new cells and wait, which keeps the limits.
pub async fn run(
    store: Store,
    router: Arc<Router>,
    process: Arc<ThisProcess>,
    wake: Arc<Notify>,
    stop: CancellationToken,
) {
    let mut ticks: u32 = 0;
    let mut last_error: Option<String> = None;
    loop {
        // The loop starts with the app, a moment before the app serves or runs workers: a
        // beat then would list the process without its role, and without its health.
        if !process.has_role() {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(ROLE_POLL) => continue,
            }
        }
        let mut problems = Vec::new();
        // Only workers call providers: an API-only process neither leases nor reads rests.
        if process.calls_providers() {
            if let Err(e) = capacity::lease(&store, &router).await {
                problems.push(format!("leasing key capacity: {e}"));
            }
        }
        if ticks % BEAT_EVERY == 0 {
            if let Err(e) = health::beat(&store, &router, &process).await {
                problems.push(format!("reporting health: {e}"));
            }
        }
        if ticks % (BEAT_EVERY * 3600) == 0 {
            let pruned = async {
                store.prune_processes(FORGET_AFTER).await?;
                store.prune_rests(FORGET_AFTER).await
            };
            if let Err(e) = pruned.await {
                problems.push(format!("forgetting old rows: {e}"));
            }
        }
        // One line when the store starts failing and one when it recovers, not one a tick.
        let now_failing = (!problems.is_empty()).then(|| problems.join("; "));
        match (&last_error, &now_failing) {
            (None, Some(problem)) => {
                tracing::warn!(%problem, "the cluster's shared state cannot be reached; calls wait for capacity meanwhile")
            }
            (Some(_), None) => tracing::info!("the cluster's shared state is reachable again"),
            _ => {}
        }
        last_error = now_failing;
        ticks = ticks.wrapping_add(1);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(TICK) => {}
            _ = wake.notified() => tokio::time::sleep(WAKE_GAP).await,
        }
    }
}
