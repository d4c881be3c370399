//! Wiring: from a [`ResolvedConfig`] (a configuration that validated) to a running system (store, queue, router, simulator), shared by
//! `sluice serve`, `sluice worker`, `sluice demo`, `sluice bench` and the integration tests.
//! The simulator is started only for a process that calls providers.
//!
//! The start-up duties beside serving and working are the app's too, so `api` only serves
//! HTTP and `worker` only runs deliveries: [`App::serve`] first resumes the batch
//! submissions a stopped server left unfinished (and sweeps abandoned uploads beside it), and [`App::start_workers`] runs the batch
//! tier's tracker beside the pools.

use crate::budgets::Budgets;
use crate::cluster::Membership;
use crate::config::{Database, ResolvedConfig, ResolvedQueue};
use crate::job::Urgency;
use crate::queue::embedded::EmbeddedQueue;
use crate::queue::Queue;
use crate::router::Router;
use crate::sim::SimServer;
use crate::store::{Store, StoreError};
use crate::submit::Submitter;
use crate::telemetry::Metrics;
use crate::worker::{WorkerContext, WorkerPools};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot start the provider simulator: {0}")]
    Simulator(std::io::Error),
    #[error("cannot build the HTTP client: {0}")]
    Http(reqwest::Error),
}

/// Opens the store `[server] database` names, applying its migrations: what every command
/// that reads or writes the store starts with.
pub async fn open_store(config: &ResolvedConfig) -> Result<Store, StartError> {
    match &config.server.database {
        Database::Sqlite(path) => Ok(Store::open(path)
            .await?
            .with_files(config.server.file_bytes())),
        Database::Postgres(url) => Ok(Store::open_postgres(
            url,
            config.server.database_connections,
            config.server.file_bytes(),
        )
        .await?),
    }
}

/// A started system. Workers and the API are started from it separately, so a process can run
/// either or both.
pub struct App {
    pub config: Arc<ResolvedConfig>,
    pub store: Store,
    pub queue: Arc<dyn Queue>,
    pub router: Arc<Router>,
    /// The configured budgets (and the clock their periods are read from), shared by the
    /// workers, the submitter and the API.
    pub budgets: Arc<Budgets>,
    /// What the API accepts from each tenant per minute, shared by every API handler.
    pub tenant_limits: Arc<crate::limits::TenantLimits>,
    /// The built-in simulator, when a provider uses `base_url = "sim"`.
    pub sim: Option<SimServer>,
    amqp: Option<Arc<crate::queue::amqp::AmqpQueue>>,
    /// This process's membership of a cluster (on a PostgreSQL store); its loop stops when
    /// the app is dropped.
    pub cluster: Option<Membership>,
    /// This app's Prometheus metrics (its own registry: see [`crate::telemetry::metrics`]).
    pub metrics: Metrics,
    /// Stops the metrics' upkeep when the app is dropped.
    _upkeep: tokio_util::sync::DropGuard,
}

impl App {
    /// Starts everything a process that calls providers needs (workers, the demo, the
    /// bench): with the built-in simulator when a provider says `base_url = "sim"`.
    pub async fn start(config: ResolvedConfig) -> Result<App, StartError> {
        App::start_with(config, true).await
    }

    /// Starts a process that calls no provider (`serve --no-workers`, `jobs run`): no
    /// simulator, which only workers would call.
    pub async fn start_without_calls(config: ResolvedConfig) -> Result<App, StartError> {
        App::start_with(config, false).await
    }

    async fn start_with(config: ResolvedConfig, calls_providers: bool) -> Result<App, StartError> {
        let budgets = Arc::new(Budgets::from_config(&config));
        let store = open_store(&config).await?;
        let sim = if calls_providers && config.uses_simulator() {
            let addr = ([127, 0, 0, 1], 0).into();
            let sim = crate::sim::spawn(addr, config.sim.clone())
                .await
                .map_err(StartError::Simulator)?;
            tracing::info!(address = %sim.openai_base_url(), "provider simulator started (base_url = \"sim\")");
            Some(sim)
        } else {
            None
        };
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()
            .map_err(StartError::Http)?;
        // The simulator serves each API family at the root its clients expect.
        let sim_base_url = sim
            .as_ref()
            .map(|sim| move |kind| sim.base_url(sim_family(kind)));
        let sim_base_url = sim_base_url
            .as_ref()
            .map(|f| f as &dyn Fn(crate::config::ProviderKind) -> String);
        // On a PostgreSQL store the process is one of a cluster: key capacity and health are
        // shared through the store (see `crate::cluster`); alone on SQLite, kept in memory.
        let (router, cluster) = match &config.server.database {
            Database::Sqlite(_) => (Arc::new(Router::new(&config, http, sim_base_url)), None),
            Database::Postgres(_) => {
                let (membership, stop) = Membership::new();
                let router = Arc::new(Router::shared(
                    &config,
                    http,
                    sim_base_url,
                    membership.wake.clone(),
                ));
                membership.start(store.clone(), router.clone(), stop);
                (router, Some(membership))
            }
        };
        let mut amqp = None;
        let queue: Arc<dyn Queue> = match config.queue_backend() {
            ResolvedQueue::Embedded => Arc::new(EmbeddedQueue::new(
                store.clone(),
                config.queue.visibility_timeout,
                config.queue.delivery_limit,
            )),
            ResolvedQueue::Rabbitmq { url } => {
                let mut amqp_config = crate::queue::amqp::AmqpConfig::new(url.expose())
                    .with_prefix(config.queue.prefix.clone());
                amqp_config.publish_timeout = config.queue.publish_timeout;
                amqp_config.delivery_limit = config.queue.delivery_limit;
                let queue = Arc::new(crate::queue::amqp::AmqpQueue::start(amqp_config));
                amqp = Some(queue.clone());
                queue
            }
        };
        let metrics = Metrics::new(&config);
        let upkeep = tokio_util::sync::CancellationToken::new();
        tokio::spawn(metrics.clone().run_upkeep(upkeep.clone()));
        Ok(App {
            metrics,
            _upkeep: upkeep.drop_guard(),
            tenant_limits: Arc::new(crate::limits::TenantLimits::new(&config)),
            config: Arc::new(config),
            store,
            queue,
            router,
            budgets,
            sim,
            amqp,
            cluster,
        })
    }

    pub fn submitter(&self) -> Submitter {
        Submitter {
            config: self.config.clone(),
            store: self.store.clone(),
            queue: self.queue.clone(),
            router: self.router.clone(),
            budgets: self.budgets.clone(),
            metrics: self.metrics.clone(),
        }
    }

    pub fn worker_context(&self) -> WorkerContext {
        WorkerContext {
            config: self.config.clone(),
            store: self.store.clone(),
            queue: self.queue.clone(),
            router: self.router.clone(),
            budgets: self.budgets.clone(),
            metrics: self.metrics.clone(),
        }
    }

    /// The RabbitMQ backend, when that is the one configured.
    pub fn queue_as_amqp(&self) -> Option<&crate::queue::amqp::AmqpQueue> {
        self.amqp.as_deref()
    }

    /// Serves the API on `listener` until `shutdown` resolves, first resuming (each in a task
    /// of its own) the batch submissions a stopped server left unfinished
    /// ([`crate::api::batches::resume`]), and beside it removing what unfinished uploads left
    /// (at start, then hourly: [`crate::api::files::sweep_abandoned_uploads`]). The future owns
    /// what it needs, so it can be spawned.
    pub fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> impl std::future::Future<Output = std::io::Result<()>> + Send + 'static {
        let state = self.api_state();
        if let Some(cluster) = &self.cluster {
            cluster.process.serves_api();
        }
        async move {
            match crate::api::batches::resume(&state.submitter).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(batches = n, "resumed unfinished batch submissions"),
                // Serving goes on: the batches stay unfinished until a later start resumes them.
                Err(e) => {
                    tracing::error!(error = %e, "cannot read which batch submissions to resume")
                }
            }
            let sweep = crate::api::files::sweep_abandoned_uploads(state.store.clone());
            tokio::select! {
                served = crate::api::serve(listener, state, crate::ui::router(), shutdown) => served,
                never = sweep => match never {},
            }
        }
    }

    /// Starts worker pools for `urgencies` and, when a route has a batch tier, the batch
    /// tracker beside them (its batches are leased one process at a time, so every worker
    /// process runs one and they share the work); [`WorkerPools::shutdown`] stops both.
    pub fn start_workers(&self, urgencies: &[Urgency]) -> WorkerPools {
        if let Some(cluster) = &self.cluster {
            cluster.process.runs_workers();
        }
        let pools = WorkerPools::start(self.worker_context(), urgencies);
        if self.router.has_batch_tier() {
            let submitter = self.submitter();
            pools.run_beside(|stop| crate::batch::tracker::run(submitter, stop));
        }
        pools
    }

    pub fn api_state(&self) -> crate::api::ApiState {
        crate::api::ApiState {
            config: self.config.clone(),
            store: self.store.clone(),
            submitter: self.submitter(),
            router: self.router.clone(),
            tenant_limits: self.tenant_limits.clone(),
            clustered: self.cluster.is_some(),
        }
    }
}

/// The simulator's API family that speaks `kind`'s wire format.
fn sim_family(kind: crate::config::ProviderKind) -> crate::sim::Family {
    use crate::config::ProviderKind;
    match kind {
        ProviderKind::Openai => crate::sim::Family::OpenAi,
        ProviderKind::Anthropic => crate::sim::Family::Anthropic,
        ProviderKind::Gemini => crate::sim::Family::Gemini,
    }
}
