//! A PostgreSQL server of the test's own, for faults that would hurt everyone on the shared
//! one (`SLUICE_TEST_POSTGRES`, which other tests use at the same time): a stop and a start
//! again mid-run. Made with `initdb` (trust authentication, superuser `postgres`) in a
//! temporary folder and run with `pg_ctl` on a port of its own, listening on 127.0.0.1 and a
//! Unix socket in that folder; a case owns its node, and dropping it stops the node and
//! removes the folder.
//!
//! A watchdog process also stops the node when the test process ends, however it ends (also
//! on SIGKILL, when `Drop` never runs), and removes the folder.
//!
//! PostgreSQL refuses to run as root, so as root (as on CI) the node runs as the system user
//! `postgres`, which Debian's package creates (`scripts/test.sh` installs it), and owns its
//! folder. Missing binaries, or a node that cannot start, fail the test with what was missing
//! or what the node said, never skip it.

use super::own_server::{last_lines, watch_for_the_end_of_this_process};
use super::ports::free_port;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The user a node runs as when the tests run as root.
const SYSTEM_USER: &str = "postgres";

/// A node of the test's own (see the module's doc), stopped and removed when dropped.
pub struct PgNode {
    server: Server,
}

/// Where a node lives and how its programs are run: cloned into blocking tasks.
#[derive(Clone)]
struct Server {
    port: u16,
    /// The folder: the data directory `data`, the socket, the server's log.
    dir: PathBuf,
    /// Where `initdb` and `pg_ctl` are.
    bin: PathBuf,
    /// `Some("postgres")` when the tests run as root.
    run_as: Option<&'static str>,
}

impl PgNode {
    /// A new node, initialised and started (a second or two).
    pub async fn start_new() -> PgNode {
        let server = tokio::task::spawn_blocking(Server::create)
            .await
            .expect("starting the test's PostgreSQL node");
        PgNode { server }
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`: the node's own database, superuser.
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            self.server.port
        )
    }

    /// Stops the node the quick way an operator restarts one (`pg_ctl stop -m fast`: open
    /// sessions are ended, transactions in flight rolled back) and waits until it is down.
    pub async fn stop(&self) {
        let server = self.server.clone();
        tokio::task::spawn_blocking(move || {
            server.run("pg_ctl", &server.ctl_args(&["stop", "-m", "fast", "-w"]))
        })
        .await
        .expect("stopping the test's PostgreSQL node");
    }

    /// Starts the stopped node again, on the same folder and port, and waits until it
    /// accepts connections.
    pub async fn start(&self) {
        let server = self.server.clone();
        tokio::task::spawn_blocking(move || server.start())
            .await
            .expect("starting the test's PostgreSQL node again");
    }
}

impl Drop for PgNode {
    /// Shuts the node down at once and removes its folder (also after a panic).
    fn drop(&mut self) {
        let server = &self.server;
        if server.data().join("postmaster.pid").exists() {
            let _ = server
                .command("pg_ctl")
                .args(server.ctl_args(&["stop", "-m", "immediate", "-w"]))
                .stdin(Stdio::null())
                .output();
        }
        let _ = std::fs::remove_dir_all(&server.dir);
    }
}

impl Server {
    /// Makes the folder, runs `initdb` in it and starts the server.
    fn create() -> Server {
        let dir = tempfile::Builder::new()
            .prefix("sluice-test-pg-")
            .tempdir()
            .expect("a temporary folder for the test's PostgreSQL node")
            .keep();
        let server = Server {
            // Below Linux's ephemeral range (32768 up): while the node is down, no outgoing
            // connection of another test can take its port.
            port: free_port(25000..30000),
            dir,
            bin: bin_dir(),
            run_as: running_as_root().then_some(SYSTEM_USER),
        };
        server.watch_for_the_end_of_this_process();
        if let Some(user) = server.run_as {
            let chown = Command::new("chown")
                .arg(format!("{user}:"))
                .arg(&server.dir)
                .status();
            assert!(
                matches!(chown, Ok(status) if status.success()),
                "cannot give the test's PostgreSQL folder to the user {user} ({chown:?}): the \
                 tests run as root, and PostgreSQL refuses to; install Debian's `postgresql` \
                 package, which creates that user (scripts/test.sh does)"
            );
        }
        let data = server.data().display().to_string();
        server.run(
            "initdb",
            &["-D", &data, "-U", "postgres", "--auth=trust", "--no-sync"],
        );
        server.start();
        server
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Starts the server on its folder and port and waits until it accepts connections.
    fn start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("server.log").display().to_string();
        self.run(
            "pg_ctl",
            &self.ctl_args(&["start", "-w", "-t", "120", "-l", &log, "-o", &options]),
        );
        println!("test PostgreSQL node answering on 127.0.0.1:{}", self.port);
    }

    /// `-D DATA` and `args`.
    fn ctl_args(&self, args: &[&str]) -> Vec<String> {
        let mut all = vec!["-D".to_string(), self.data().display().to_string()];
        all.extend(args.iter().map(|a| a.to_string()));
        all
    }

    /// One of the server's programs, run as [`SYSTEM_USER`] when the tests run as root.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut command = match self.run_as {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(path);
                command
            }
            None => Command::new(path),
        };
        command.current_dir(&self.dir);
        command
    }

    /// Runs `program` with `args`, which must succeed; a failure shows what it and the
    /// server's log said.
    fn run<S: AsRef<std::ffi::OsStr>>(&self, program: &str, args: &[S]) {
        let output = self
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program} from {}: {e}", self.bin.display()));
        if !output.status.success() {
            panic!(
                "{program} failed ({}) for the test's PostgreSQL node in {}:\n{}{}\nits log:\n{}",
                output.status,
                self.dir.display(),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr),
                self.log_tail()
            );
        }
    }

    /// The end of the server's log, for a failure's message.
    fn log_tail(&self) -> String {
        last_lines(&self.dir.join("server.log"))
    }

    /// Once this test process is gone, shuts the node down at once (SIGQUIT to the
    /// postmaster: immediate shutdown, its children too) and removes its folder.
    fn watch_for_the_end_of_this_process(&self) {
        watch_for_the_end_of_this_process(
            &self.dir,
            r#"[ -f "$1/data/postmaster.pid" ] && kill -QUIT "$(head -n 1 "$1/data/postmaster.pid")" 2>/dev/null
               sleep 2"#,
            "the test's PostgreSQL node",
        );
    }
}

/// The folder holding `initdb` and `pg_ctl`: the `PATH`'s, else the newest of Debian's
/// `/usr/lib/postgresql/VERSION/bin` (where `scripts/postgres.sh` finds the server too).
fn bin_dir() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|dir| dir.join("initdb").exists() && dir.join("pg_ctl").exists());
    if let Some(dir) = on_path {
        return dir;
    }
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("initdb").exists() && bin.join("pg_ctl").exists()).then_some((version, bin))
        })
        .collect();
    debian.sort();
    debian.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "initdb and pg_ctl are not installed (neither on the PATH nor in \
             /usr/lib/postgresql/*/bin), and this test starts a PostgreSQL server of its own: \
             install PostgreSQL (`apt-get install postgresql`; scripts/test.sh does)"
        )
    })
}

/// Whether this process runs as root (the owner of `/proc/self` is its effective user).
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|meta| meta.uid() == 0)
        .unwrap_or(false)
}
