//! A RabbitMQ node of the test's own, for faults that would hurt everyone on the shared broker
//! (127.0.0.1:5672): a restart, a memory or disk alarm. One node serves the whole test
//! binary, started on first use (about 5 s) with everything in a temporary folder: its own
//! node name, AMQP and distribution ports, Erlang cookie, database, logs, an empty plugin list
//! and no management listener. Cases take it in turn ([`exclusive`]), since an alarm or a
//! restart hits every connection to it, and each leaves it running with no alarm.
//!
//! A static is never dropped, so a watchdog process stops the node when the test process
//! ends, however it ends (also on SIGKILL), and removes the folder.
//!
//! Works with Debian's package as root (which `scripts/test.sh` installs on CI): its scripts in
//! `/usr/lib/rabbitmq/bin` are run directly, as the test's own user, rather than through the
//! `/usr/sbin` wrappers that switch to the `rabbitmq` user and its cookie. A node that cannot
//! be started fails the test with what the node said, never skips it.

use super::own_server::{last_lines, watch_for_the_end_of_this_process};
use super::ports::free_port;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The longest wait for a node to start listening (it takes about 5 s on an idle machine).
const START_TIMEOUT: Duration = Duration::from_secs(120);

pub struct OwnedBroker {
    /// `sluice-test-…@localhost`.
    pub node: String,
    pub port: u16,
    dir: PathBuf,
    server: Mutex<Option<Child>>,
}

static SHARED: OnceLock<OwnedBroker> = OnceLock::new();
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The test's node, for this case alone until the lease is dropped.
pub struct Lease {
    broker: &'static OwnedBroker,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl std::ops::Deref for Lease {
    type Target = OwnedBroker;
    fn deref(&self) -> &OwnedBroker {
        self.broker
    }
}

impl Drop for Lease {
    /// Leaves the node as the next case expects it: running, no alarm (also after a panic).
    fn drop(&mut self) {
        if !self.broker.is_running() {
            self.broker.start_blocking();
        }
        let _ = self
            .broker
            .ctl_blocking(&["set_vm_memory_high_watermark", "0.4"]);
        let _ = self
            .broker
            .ctl_blocking(&["set_disk_free_limit", "1000000"]);
    }
}

/// Waits for the node (starting it on first use) and holds it until the lease is dropped.
pub async fn exclusive() -> Lease {
    let turn = TURN.lock().await;
    let broker = match SHARED.get() {
        Some(broker) => broker,
        None => {
            let started = tokio::task::spawn_blocking(OwnedBroker::start_new)
                .await
                .expect("starting the test's RabbitMQ node");
            // Only one case holds the turn, so nobody else set it meanwhile.
            let _ = SHARED.set(started);
            SHARED.get().expect("just set")
        }
    };
    Lease {
        broker,
        _turn: turn,
    }
}

/// A RabbitMQ script: Debian's real one when present (its `/usr/sbin` wrapper would switch
/// to the `rabbitmq` user), else the one on the `PATH`.
fn script(name: &str) -> PathBuf {
    let debian = Path::new("/usr/lib/rabbitmq/bin").join(name);
    if debian.exists() {
        return debian;
    }
    let on_path = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(name))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .find(|candidate| candidate.exists());
    on_path.unwrap_or_else(|| {
        panic!(
            "{name} is not installed, and the fault tests start a RabbitMQ node of their own: \
             install RabbitMQ (`apt-get install rabbitmq-server`; scripts/test.sh does)"
        )
    })
}

impl OwnedBroker {
    fn start_new() -> OwnedBroker {
        let dir = tempfile::Builder::new()
            .prefix("sluice-test-broker-")
            .tempdir()
            .expect("a temporary folder for the test's RabbitMQ node")
            .keep();
        let port = free_port(30000..40000);
        let dist_port = free_port(20000..25000);
        let node = format!(
            "sluice-test-{}@localhost",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let write = |name: &str, text: &str| {
            std::fs::write(dir.join(name), text).expect("writing the node's files");
        };
        // No plugins: no management listener, nothing listening but AMQP and distribution.
        write("enabled_plugins", "[].\n");
        // Read instead of /etc/rabbitmq/rabbitmq-env.conf, which names the system's node.
        write("rabbitmq-env.conf", "");
        write(
            "rabbitmq.conf",
            &format!(
                "listeners.tcp.1 = 127.0.0.1:{port}\n\
                 vm_memory_high_watermark.relative = 0.4\n\
                 disk_free_limit.absolute = 1000000\n"
            ),
        );
        // The cookie the node and rabbitmqctl share, written before either could make one.
        let cookie: String = (0..20)
            .map(|_| char::from(b'A' + rand::random::<u8>() % 26))
            .collect();
        write(".erlang.cookie", &cookie);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.join(".erlang.cookie"),
            std::fs::Permissions::from_mode(0o400),
        )
        .expect("the cookie's permissions");
        let broker = OwnedBroker {
            node,
            port,
            dir,
            server: Mutex::new(None),
        };
        broker.write_env(dist_port);
        broker.watch_for_the_end_of_this_process();
        broker.start_blocking();
        broker
    }

    /// The environment of the node and of rabbitmqctl, kept in a file so that every command
    /// sees the same.
    fn write_env(&self, dist_port: u16) {
        let dir = self.dir.display();
        let env = [
            ("HOME", format!("{dir}")),
            ("RABBITMQ_NODENAME", self.node.clone()),
            ("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1".to_string()),
            ("RABBITMQ_NODE_PORT", self.port.to_string()),
            ("RABBITMQ_DIST_PORT", dist_port.to_string()),
            ("RABBITMQ_MNESIA_BASE", format!("{dir}/mnesia")),
            ("RABBITMQ_LOG_BASE", format!("{dir}/log")),
            ("RABBITMQ_PID_FILE", format!("{dir}/node.pid")),
            ("RABBITMQ_CONFIG_FILE", format!("{dir}/rabbitmq.conf")),
            (
                "RABBITMQ_ADVANCED_CONFIG_FILE",
                format!("{dir}/advanced.config"),
            ),
            (
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                format!("{dir}/enabled_plugins"),
            ),
            ("RABBITMQ_CONF_ENV_FILE", format!("{dir}/rabbitmq-env.conf")),
            (
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}".to_string(),
            ),
        ];
        let text: String = env.iter().map(|(k, v)| format!("{k}\t{v}\n")).collect();
        std::fs::write(self.dir.join("env.tsv"), text).expect("writing the node's environment");
    }

    fn env(&self) -> Vec<(String, String)> {
        std::fs::read_to_string(self.dir.join("env.tsv"))
            .expect("the node's environment")
            .lines()
            .filter_map(|line| line.split_once('\t'))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Once this test process is gone, kills the node and removes its folder.
    fn watch_for_the_end_of_this_process(&self) {
        watch_for_the_end_of_this_process(
            &self.dir,
            r#"[ -f "$1/node.pid" ] && kill -9 "$(cat "$1/node.pid")" 2>/dev/null
               sleep 1"#,
            "the test's RabbitMQ node",
        );
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// What the node wrote, for a failure's message.
    fn output_tail(&self) -> String {
        last_lines(&self.dir.join("server.out"))
    }

    fn is_running(&self) -> bool {
        let mut server = self.server.lock().unwrap();
        match server.as_mut().map(|child| child.try_wait()) {
            Some(Ok(None)) => true,
            _ => {
                *server = None;
                false
            }
        }
    }

    /// Starts the node (on its database of any earlier run) and waits until it answers AMQP.
    fn start_blocking(&self) {
        let out = std::fs::File::create(self.dir.join("server.out")).unwrap();
        let started = Instant::now();
        let child = Command::new(script("rabbitmq-server"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env())
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run rabbitmq-server: {e}"));
        *self.server.lock().unwrap() = Some(child);
        loop {
            if answers_amqp(self.port) {
                break;
            }
            if !self.is_running() {
                panic!(
                    "the test's RabbitMQ node {} exited while starting; it said:\n{}",
                    self.node,
                    self.output_tail()
                );
            }
            if started.elapsed() > START_TIMEOUT {
                panic!(
                    "the test's RabbitMQ node {} did not answer on port {} within {:?}; it \
                     said:\n{}",
                    self.node,
                    self.port,
                    START_TIMEOUT,
                    self.output_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        println!(
            "test RabbitMQ node {} answering on 127.0.0.1:{} after {:.1} s",
            self.node,
            self.port,
            started.elapsed().as_secs_f64()
        );
    }

    /// Runs `rabbitmqctl -n NODE ARGS…`; its output, or why it failed.
    fn ctl_blocking(&self, args: &[&str]) -> Result<String, String> {
        let output = Command::new(script("rabbitmqctl"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env())
            .arg("-n")
            .arg(&self.node)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run rabbitmqctl: {e}"))?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            Ok(stdout)
        } else {
            Err(format!(
                "rabbitmqctl {args:?} failed ({}): {stdout}{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }

    /// `rabbitmqctl -n NODE ARGS…`, which must succeed.
    pub async fn ctl(&self, args: &[&str]) -> String {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let broker: &'static OwnedBroker = SHARED.get().expect("the shared node");
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            broker.ctl_blocking(&args)
        })
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Raises the memory alarm: a watermark of one byte, which any node is above.
    pub async fn raise_memory_alarm(&self) {
        self.ctl(&["set_vm_memory_high_watermark", "absolute", "1"])
            .await;
    }

    /// Raises the disk alarm: a free-space limit no disk has.
    pub async fn raise_disk_alarm(&self) {
        self.ctl(&["set_disk_free_limit", "1000000000000000"]).await;
    }

    /// Clears both alarms (the watermark and the free-space limit of the node's config).
    pub async fn clear_alarms(&self) {
        self.ctl(&["set_vm_memory_high_watermark", "0.4"]).await;
        self.ctl(&["set_disk_free_limit", "1000000"]).await;
    }

    /// Stops the node (`rabbitmqctl stop`, which waits for it to halt).
    pub async fn stop(&self) {
        self.ctl(&["stop"]).await;
        let child = self.server.lock().unwrap().take();
        if let Some(mut child) = child {
            tokio::task::spawn_blocking(move || child.wait())
                .await
                .unwrap()
                .expect("the node's process ends");
        }
    }

    /// Starts the stopped node again, on the same database, port and name.
    pub async fn start(&self) {
        let broker: &'static OwnedBroker = SHARED.get().expect("the shared node");
        tokio::task::spawn_blocking(move || broker.start_blocking())
            .await
            .unwrap();
    }
}

/// True when something on `port` answers the AMQP 0-9-1 protocol header (a node accepts TCP
/// a moment before it speaks AMQP).
fn answers_amqp(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut socket) = std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(1),
    ) else {
        return false;
    };
    let _ = socket.set_read_timeout(Some(Duration::from_secs(5)));
    let mut first = [0u8; 1];
    socket.write_all(b"AMQP\x00\x00\x09\x01").is_ok() && socket.read_exact(&mut first).is_ok()
}
