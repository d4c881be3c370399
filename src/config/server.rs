//! `[server]` (the API's address, the database) and `[scheduler]` (recurring jobs), with
//! their problems.

use super::Problem;
use serde::Deserialize;
use std::path::PathBuf;

/// Recurring jobs (see [`crate::schedule`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// Whether `sluice serve` fires recurring jobs. Run it in one process per deployment; a
    /// second one is harmless (each due time still makes one job) but useless.
    pub enabled: bool,
    /// The folder of `*.toml` definitions.
    pub dir: PathBuf,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            enabled: true,
            dir: "jobs".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of the HTTP API.
    pub listen: String,
    /// The SQLite file holding jobs, results and costs (and the embedded queue).
    pub database: PathBuf,
}

impl ServerConfig {
    /// The base URL a client on this machine reaches the API at: `listen`, with an address
    /// that listens on every interface (`0.0.0.0`, `[::]`) replaced by the loopback one.
    pub fn client_url(&self) -> String {
        let (host, port) = self
            .listen
            .rsplit_once(':')
            .unwrap_or((self.listen.as_str(), "8080"));
        let host = match host {
            "0.0.0.0" | "" => "127.0.0.1",
            "[::]" => "[::1]",
            host => host,
        };
        format!("http://{host}:{port}")
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            database: "sluice.db".into(),
        }
    }
}

impl ServerConfig {
    /// `listen` is checked as `serve` will bind it: a host name is resolved.
    pub(super) fn problems(&self) -> Vec<Problem> {
        let resolved = std::net::ToSocketAddrs::to_socket_addrs(self.listen.as_str())
            .map(|mut addresses| addresses.next());
        if matches!(resolved, Ok(Some(_))) {
            return Vec::new();
        }
        vec![Problem::new(
            "server.listen",
            format!(
                "\"{}\" is not an address like 127.0.0.1:8080 or localhost:8080{}",
                self.listen,
                match resolved {
                    Err(e) => format!(" ({e})"),
                    Ok(_) => " (the name resolves to no address)".into(),
                }
            ),
        )]
    }
}
