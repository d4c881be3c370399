//! The `sluice` command line's commands, one module per group, so `main.rs` holds only the
//! top-level command list and its dispatch.
//!
//! - [`serve`]: `serve` and `worker`, the long-running processes.
//! - [`jobs`]: `submit`, `get` and `wait` through the API; `jobs list|run`, recurring jobs.
//! - [`bulk`]: `bulk submit|status|results|cancel`.
//! - [`reports`]: `costs`, `budgets` and `prices`, read from the store or the catalogue.
//! - [`standalone`]: `sim`, `demo`, `bench`, `migrate` and `check-config`, which need no
//!   running server.
//! - [`connect`]: how a client command finds its server and token.
//! - [`probe`]: `probe`, a health check that needs no curl.

/// `println!` that returns the error instead of panicking: a closed pipe (`| head`) then ends
/// the command quietly (see `main`).
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

pub mod bulk;
pub mod connect;
pub mod jobs;
pub mod probe;
pub mod reports;
pub mod serve;
pub mod standalone;

use sluice::config::{Config, ResolvedConfig};
use sluice::job::Urgency;
use std::path::PathBuf;

/// The configuration `--config` names, or the built-in one; resolved, so every problem is
/// listed before anything starts.
pub fn load_config(path: &Option<PathBuf>) -> anyhow::Result<ResolvedConfig> {
    Ok(match path {
        Some(path) => Config::load(path)?,
        None => Config::builtin().resolve()?,
    })
}

/// An urgency's name, its possible values listed in `--help`.
pub fn urgency() -> impl clap::builder::TypedValueParser<Value = Urgency> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(Urgency::ALL.map(Urgency::as_str))
        .try_map(|text| text.parse::<Urgency>())
}

/// Ctrl-C, or SIGTERM on Unix: what `docker stop`, systemd and Kubernetes send, so a
/// deployment's restart finishes the jobs in flight instead of leaving them leased until
/// their visibility timeout (or, as PID 1 in a container, ignoring the signal altogether).
pub async fn shutdown_signal() {
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
