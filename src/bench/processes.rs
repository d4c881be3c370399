//! `--worker-processes N`: the bench's workers as `sluice worker` processes of their own, on
//! the bench's PostgreSQL store and RabbitMQ prefix, as a cluster runs them, so their
//! throughput and CPU per job can be measured with 1, 2, 3… processes.

use super::setup;
use super::BenchArgs;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::Path;

/// The running worker processes.
pub struct WorkerProcesses {
    children: Vec<tokio::process::Child>,
}

impl WorkerProcesses {
    /// Starts `n` workers of the standard pool, each reading `config` (written in `dir`) and
    /// logging warnings to a file there.
    pub fn start(args: &BenchArgs, n: usize, config: &str, dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("worker.toml");
        std::fs::write(&path, config)?;
        let exe = std::env::current_exe()?;
        let mut children = Vec::with_capacity(n);
        for i in 0..n {
            let log = std::fs::File::create(dir.join(format!("worker-{i}.log")))?;
            let mut command = tokio::process::Command::new(&exe);
            command
                .args(["worker", "--urgency", "standard", "--config"])
                .arg(&path)
                .env("SLUICE_LOG", "warn")
                .envs(setup::variables(args))
                .stdout(log.try_clone()?)
                .stderr(log)
                .kill_on_drop(true);
            children.push(command.spawn()?);
        }
        Ok(WorkerProcesses { children })
    }

    /// Asks each to stop (SIGTERM: in-flight jobs finish first) and waits for them, so their
    /// CPU time is added to this process's children's.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        for child in &self.children {
            if let Some(pid) = child.id() {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            }
        }
        for child in &mut self.children {
            child.wait().await?;
        }
        Ok(())
    }
}
