//! The built `sluice` binary as an operator runs it, for the tests that need a real process
//! (signals, crashes, the CLI): one way to start it, so each such test does not write its
//! own spawn, log and wait-until-listening loop.
//!
//! A served process listens where its configuration says; tests give it `127.0.0.1:0` and
//! read the address it bound from its log, so no port is picked, released and bound again
//! (another test may take a released port in between).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The log line `sluice serve` writes once it listens, with `address=HOST:PORT`.
const LISTENING: &str = "serving the Sluice API";

/// The log line `sluice worker --health-listen` writes once it listens, the same way.
const HEALTH_LISTENING: &str = "serving the worker's health";

/// How long a server may take to start listening (migrations, a broker connection).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The built binary with no ambient configuration, server, token or log filter from the
/// environment of whoever runs the tests.
pub fn sluice() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"));
    for var in [
        "SLUICE_CONFIG",
        "SLUICE_SERVER",
        "SLUICE_TOKEN",
        "SLUICE_LOG",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_SERVICE_NAME",
    ] {
        command.env_remove(var);
    }
    command
}

/// A running `sluice serve` (or `sluice worker` serving its health), killed when dropped.
pub struct Served {
    pub child: tokio::process::Child,
    /// `http://HOST:PORT` of its API (of a worker's health endpoints).
    pub base_url: String,
    log: PathBuf,
    /// The subcommand, for messages.
    command: &'static str,
}

impl Served {
    /// Starts `sluice serve ARGS --config CONFIG`, its standard output and error written to
    /// `log` (a file, as a deployment's log is: never a terminal), and waits until it
    /// listens.
    pub async fn start(config: &Path, args: &[&str], log: &Path) -> Served {
        Served::spawn("serve", LISTENING, config, args, log, &[]).await
    }

    /// [`Served::start`] with these environment variables set for the process.
    pub async fn start_with_env(
        config: &Path,
        args: &[&str],
        log: &Path,
        env: &[(&str, &str)],
    ) -> Served {
        Served::spawn("serve", LISTENING, config, args, log, env).await
    }

    /// Starts `sluice worker --health-listen 127.0.0.1:0 ARGS --config CONFIG` the same way,
    /// and waits until its health endpoints listen.
    pub async fn start_worker(config: &Path, args: &[&str], log: &Path) -> Served {
        Served::start_worker_with_env(config, args, log, &[]).await
    }

    /// [`Served::start_worker`] with these environment variables set for the process.
    pub async fn start_worker_with_env(
        config: &Path,
        args: &[&str],
        log: &Path,
        env: &[(&str, &str)],
    ) -> Served {
        let mut args = args.to_vec();
        args.extend(["--health-listen", "127.0.0.1:0"]);
        Served::spawn("worker", HEALTH_LISTENING, config, &args, log, env).await
    }

    async fn spawn(
        command: &'static str,
        listening: &'static str,
        config: &Path,
        args: &[&str],
        log: &Path,
        env: &[(&str, &str)],
    ) -> Served {
        let file = std::fs::File::create(log).unwrap();
        let child = tokio::process::Command::from(sluice())
            .envs(env.iter().copied())
            .arg(command)
            .args(args)
            .arg("--config")
            .arg(config)
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut served = Served {
            child,
            base_url: String::new(),
            log: log.to_path_buf(),
            command,
        };
        served.base_url = format!("http://{}", served.address(listening).await);
        served
    }

    /// The address the log line saying `listening` names (`address=HOST:PORT` in a text log,
    /// `"address"` among a JSON line's fields), once the process has written it.
    pub async fn address(&mut self, listening: &str) -> String {
        let started = Instant::now();
        loop {
            let log = self.log();
            if let Some(line) = log.lines().find(|line| line.contains(listening)) {
                let json = serde_json::from_str::<serde_json::Value>(line).ok();
                let address = match &json {
                    Some(json) => json["fields"]["address"].as_str(),
                    None => line
                        .split_whitespace()
                        .find_map(|field| field.strip_prefix("address=")),
                };
                let address = address.unwrap_or_else(|| panic!("no address in {line:?}"));
                return address.to_string();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "sluice {} exited ({status}) before listening:\n{log}",
                    self.command
                );
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "sluice {} did not listen within {START_TIMEOUT:?}:\n{log}",
                self.command
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Everything the process has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id, for sending it signals.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the server is still running")
    }

    /// Kills the process at once (SIGKILL: no shutdown runs) and waits until it is gone.
    pub async fn kill(&mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }
}
