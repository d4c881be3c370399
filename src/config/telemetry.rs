//! `[telemetry]`: what a process tells an operator about itself beside its answers — the
//! Prometheus metrics (`GET /metrics`, and optionally a listener of their own) and the log
//! format. A plain struct with serde defaults, so later settings (an OTLP endpoint) join it
//! without touching the others.

use super::Problem;
use serde::Deserialize;
use std::net::SocketAddr;

/// How log lines are written to standard error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One line of text per event; colour codes only on a terminal.
    #[default]
    Text,
    /// One JSON object per line, for a log collector.
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Whether the process records Prometheus metrics at all (`GET /metrics` answers 404
    /// when not): on by default; off only to measure what recording costs.
    pub metrics: bool,
    /// Also serve `GET /metrics` on this address (e.g. `0.0.0.0:9464`): for a scraper kept
    /// off the API's port, and for `sluice worker` processes, which serve no API.
    pub metrics_listen: Option<String>,
    /// Whether the API's port answers `GET /metrics` too (the default). Off, only
    /// `metrics_listen` does: the metrics name every tenant and its spend, which an operator
    /// may keep to a private address.
    pub metrics_on_api: bool,
    /// `text` (the default) or `json`; `--log-format` on the command line wins.
    pub log_format: LogFormat,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            metrics: true,
            metrics_listen: None,
            metrics_on_api: true,
            log_format: LogFormat::Text,
        }
    }
}

impl TelemetryConfig {
    /// `metrics_listen` as a socket address, when set and one.
    pub fn metrics_address(&self) -> Option<SocketAddr> {
        self.metrics_listen.as_deref().and_then(|a| a.parse().ok())
    }

    pub(super) fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if let Some(address) = &self.metrics_listen {
            if address.parse::<SocketAddr>().is_err() {
                problems.push(Problem::new(
                    "telemetry.metrics_listen",
                    format!("\"{address}\" is not an address with a port, such as 0.0.0.0:9464"),
                ));
            } else if !self.metrics {
                problems.push(Problem::new(
                    "telemetry.metrics_listen",
                    "is set while telemetry.metrics = false: there would be nothing to serve",
                ));
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listen_address_without_a_port_is_a_problem() {
        let config = TelemetryConfig {
            metrics_listen: Some("localhost".into()),
            ..TelemetryConfig::default()
        };
        let problems = config.problems();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].path, "telemetry.metrics_listen");
        let fine = TelemetryConfig {
            metrics_listen: Some("127.0.0.1:9464".into()),
            ..TelemetryConfig::default()
        };
        assert!(fine.problems().is_empty());
        assert_eq!(fine.metrics_address(), Some(([127, 0, 0, 1], 9464).into()));
    }
}
