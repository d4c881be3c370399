//! `[telemetry]`: what a process tells an operator about itself beside its answers — the
//! Prometheus metrics (`GET /metrics`, and optionally a listener of their own) and the log
//! format, and where traces go over OTLP/HTTP (see [`crate::traces`]; nothing is exported,
//! and nothing costs, without an endpoint). A plain struct with serde defaults, so each
//! setting joins it without touching the others.

use super::Problem;
use serde::Deserialize;
use std::net::SocketAddr;

/// The OTLP/HTTP path of traces under a collector's base URL, as OpenTelemetry's SDKs add it
/// to `OTEL_EXPORTER_OTLP_ENDPOINT`.
const TRACES_PATH: &str = "/v1/traces";

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
    /// The base URL of an OpenTelemetry collector's OTLP/HTTP receiver
    /// (`http://127.0.0.1:4318`); spans are sent to `{otlp_endpoint}/v1/traces` as protobuf.
    /// Unset: `OTEL_EXPORTER_OTLP_ENDPOINT` if the environment has it, else no traces.
    pub otlp_endpoint: Option<String>,
    /// `service.name` on every exported span; unset: `OTEL_SERVICE_NAME`, else `sluice`.
    pub service_name: Option<String>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            metrics: true,
            metrics_listen: None,
            metrics_on_api: true,
            log_format: LogFormat::Text,
            otlp_endpoint: None,
            service_name: None,
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
        if let Some(endpoint) = &self.otlp_endpoint {
            if let Err(why) = traces_url(endpoint) {
                problems.push(Problem::new("telemetry.otlp_endpoint", why));
            }
        }
        if self
            .service_name
            .as_deref()
            .is_some_and(|s| s.trim().is_empty())
        {
            problems.push(Problem::new(
                "telemetry.service_name",
                "must not be empty: leave it out for `sluice`",
            ));
        }
        problems
    }

    /// Where traces go: the configured endpoint, else `env_endpoint` (the value of
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`), as the URL spans are posted to; `Ok(None)` when neither
    /// is set (no traces). An endpoint that is no URL is an error naming where it came from.
    pub fn traces_url(&self, env_endpoint: Option<String>) -> Result<Option<url::Url>, String> {
        match (&self.otlp_endpoint, env_endpoint) {
            (Some(endpoint), _) => traces_url(endpoint)
                .map(Some)
                .map_err(|why| format!("telemetry.otlp_endpoint: {why}")),
            (None, Some(endpoint)) if !endpoint.trim().is_empty() => traces_url(&endpoint)
                .map(Some)
                .map_err(|why| format!("OTEL_EXPORTER_OTLP_ENDPOINT: {why}")),
            _ => Ok(None),
        }
    }
}

/// The URL spans are posted to under the collector base URL `endpoint`, or why `endpoint` is
/// none. The text is quoted only when it does not parse at all: a URL may carry a password,
/// which is then left out.
fn traces_url(endpoint: &str) -> Result<url::Url, String> {
    let base = url::Url::parse(endpoint.trim()).map_err(|e| {
        format!("{e}: write the collector's OTLP/HTTP base URL, e.g. http://127.0.0.1:4318")
    })?;
    if !matches!(base.scheme(), "http" | "https") {
        return Err(format!(
            "unsupported scheme `{}`: traces go over OTLP/HTTP, so write an http:// or https:// URL \
             (port 4318 by default)",
            base.scheme()
        ));
    }
    if base.host_str().is_none_or(str::is_empty) {
        return Err("names no host: write e.g. http://127.0.0.1:4318".into());
    }
    if base.query().is_some() || base.fragment().is_some() {
        return Err("must have no query or fragment: write the collector's base URL".into());
    }
    let path = format!("{}{TRACES_PATH}", base.path().trim_end_matches('/'));
    let mut url = base;
    url.set_path(&path);
    Ok(url)
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

    fn configured(endpoint: &str) -> TelemetryConfig {
        TelemetryConfig {
            otlp_endpoint: Some(endpoint.into()),
            ..TelemetryConfig::default()
        }
    }

    #[test]
    fn traces_go_under_the_base_url() {
        let url = |endpoint: &str| configured(endpoint).traces_url(None).unwrap().unwrap();
        assert_eq!(
            url("http://127.0.0.1:4318").as_str(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            url("https://collector.example/otlp/").as_str(),
            "https://collector.example/otlp/v1/traces"
        );
    }

    #[test]
    fn the_file_wins_over_the_environment_which_is_used_alone() {
        let none = TelemetryConfig::default();
        assert_eq!(none.traces_url(None), Ok(None));
        assert_eq!(none.traces_url(Some(" ".into())), Ok(None));
        assert_eq!(
            none.traces_url(Some("http://otel:4318".into()))
                .unwrap()
                .unwrap()
                .as_str(),
            "http://otel:4318/v1/traces"
        );
        let file = configured("http://127.0.0.1:4318");
        assert_eq!(
            file.traces_url(Some("http://otel:4318".into()))
                .unwrap()
                .unwrap()
                .as_str(),
            "http://127.0.0.1:4318/v1/traces"
        );
        let bad_env = none.traces_url(Some("otel:4318".into())).unwrap_err();
        assert!(
            bad_env.starts_with("OTEL_EXPORTER_OTLP_ENDPOINT: "),
            "{bad_env}"
        );
    }

    #[test]
    fn a_malformed_endpoint_is_a_problem_naming_the_field() {
        for endpoint in [
            "127.0.0.1:4318",
            "grpc://127.0.0.1:4317",
            "not a url",
            "http://127.0.0.1:4318/?x=1",
        ] {
            let problems = configured(endpoint).problems();
            assert_eq!(problems.len(), 1, "{endpoint}: {problems:?}");
            assert_eq!(problems[0].path, "telemetry.otlp_endpoint");
        }
        assert!(configured("http://127.0.0.1:4318").problems().is_empty());
    }

    #[test]
    fn a_password_in_the_endpoint_is_never_repeated() {
        let problems = configured("ftp://user:hunter2@collector:4318").problems();
        assert!(!problems[0].message.contains("hunter2"), "{problems:?}");
    }
}
