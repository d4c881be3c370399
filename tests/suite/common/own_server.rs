//! What a server of a test's own (a RabbitMQ node, a PostgreSQL server: `broker`, `pg_node`)
//! needs whatever it is: a watchdog that cleans up after the test process, and the end of
//! its log for a failure's message.

use std::path::Path;
use std::process::{Command, Stdio};

/// Starts a process of its own that waits for this test process to end, then runs `then`
/// (a shell command that stops the server, with `$1` the server's folder), then removes
/// `dir`. `what` names the server if the watchdog cannot start.
// Never waited for: it ends only after this process has.
#[allow(clippy::zombie_processes)]
pub fn watch_for_the_end_of_this_process(dir: &Path, then: &str, what: &str) {
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "while kill -0 \"$0\" 2>/dev/null; do sleep 1; done\n{then}\nrm -rf \"$1\""
        ))
        .arg(std::process::id().to_string())
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("a watchdog for {what}: {e}"));
}

/// The last 30 lines of the file at `path` (none if it cannot be read).
pub fn last_lines(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
