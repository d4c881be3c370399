//! The connection supervisor: one background task that owns the broker connections, so the
//! rest of the backend never has to reconnect, retry or redeclare anything itself.
//!
//! It connects with capped exponential back-off (a broker that is down at start-up or restarts
//! later is not an error, only a wait), declares the topology after every (re)connect, watches
//! both connections, and publishes the current [`LinkState`] on a watch channel that publishers
//! and consumers wait on. Each successful connect gets a new generation number, so anything tied
//! to an old connection (a delivery tag, a consumer) can tell it is stale.
//!
//! Two connections, not one: RabbitMQ blocks a connection that publishes while a memory or disk
//! alarm is on; with acks on a separate connection, consumers keep settling (and so freeing
//! memory) while publishers wait.
//!
//! lapin's own auto-recovery is not used: it is young (open issues about it hanging after a
//! broker restart), and a plain reconnect loop whose every step we log is easier to trust.

use super::topology::Topology;
use crate::queue::replies::InboxHub;
use lapin::options::ConfirmSelectOptions;
use lapin::{Channel, Connection, ConnectionProperties, Event};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tracing::{info, warn};

/// What the rest of the backend sees of the connections.
#[derive(Clone)]
pub(crate) enum LinkState {
    /// Not connected (yet, or again); the last error explains why.
    Down {
        last_error: Option<String>,
    },
    Up(Arc<Link>),
    /// Shut down for good.
    Closed,
}

/// One generation of live connections.
pub(crate) struct Link {
    pub(crate) generation: u64,
    pub(crate) publish_conn: Connection,
    pub(crate) consume_conn: Connection,
    /// In confirm mode; shared by all publishers (lapin matches confirms to publishes).
    pub(crate) publish_channel: Channel,
    /// `Some(reason)` while the broker has blocked the publishing connection.
    pub(crate) blocked: watch::Receiver<Option<String>>,
    /// Not in confirm mode: replies are transient (see `replies`).
    pub(crate) reply_channel: Channel,
    /// This process's reply queue on this connection: the address of its inboxes.
    pub(crate) reply_queue: String,
}

impl Link {
    /// False as soon as lapin knows the publishing side is gone, which can be a moment before
    /// the supervisor notices and replaces the link.
    pub(crate) fn can_publish(&self) -> bool {
        self.publish_conn.status().connected() && self.publish_channel.status().connected()
    }
}

/// What the supervisor needs to know.
pub(crate) struct SupervisorConfig {
    pub(crate) url: String,
    pub(crate) redacted_url: String,
    pub(crate) connection_name: String,
    pub(crate) topology: Topology,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_backoff: Duration,
    /// Where replies arriving on this process's reply queue go.
    pub(crate) inboxes: Arc<InboxHub>,
}

static GENERATION: AtomicU64 = AtomicU64::new(1);

/// Runs until `shutdown` turns true: keeps `state` pointing at live connections.
pub(crate) async fn supervise(
    config: SupervisorConfig,
    state: Arc<watch::Sender<LinkState>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut attempt: u32 = 0;
    loop {
        if *shutdown.borrow() {
            break;
        }
        let connected = tokio::select! {
            result = connect(&config) => result,
            _ = shutdown.changed() => break,
        };
        match connected {
            Ok((link, blocked_tx)) => {
                attempt = 0;
                let link = Arc::new(link);
                info!(
                    url = %config.redacted_url,
                    generation = link.generation,
                    "connected to RabbitMQ and declared the topology under prefix \"{}\"",
                    config.topology.prefix()
                );
                state.send_replace(LinkState::Up(link.clone()));
                let reason = tokio::select! {
                    reason = watch_link(&link, blocked_tx, &config.redacted_url) => Some(reason),
                    _ = shutdown.changed() => None,
                };
                let Some(reason) = reason else {
                    close_link(&link).await;
                    break;
                };
                warn!(
                    "lost the connection to RabbitMQ at {}: {reason}; reconnecting",
                    config.redacted_url
                );
                state.send_replace(LinkState::Down {
                    last_error: Some(reason),
                });
                // Closing the survivor (when only one connection died) makes the broker requeue
                // whatever was delivered on it, instead of leaving it stuck on a zombie.
                close_link(&link).await;
            }
            Err(error) => {
                let delay = backoff(attempt, config.max_backoff);
                attempt = attempt.saturating_add(1);
                warn!(
                    "cannot reach RabbitMQ at {}: {error}; retrying in {:.1}s",
                    config.redacted_url,
                    delay.as_secs_f64()
                );
                state.send_replace(LinkState::Down {
                    last_error: Some(error),
                });
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.changed() => break,
                }
            }
        }
    }
    if let LinkState::Up(link) = &*state.borrow() {
        let link = link.clone();
        tokio::spawn(async move { close_link(&link).await });
    }
    state.send_replace(LinkState::Closed);
}

/// How often a lost broker is tried again at first: a broker restart takes seconds, and a
/// refused connection costs nothing, so for about the first 20 s (`FAST_ATTEMPTS`) a retry
/// follows every half second, and the service resumes within about that of the broker's
/// return. Only a longer outage backs off (to the configured cap).
const FAST_PACE: Duration = Duration::from_millis(500);
const FAST_ATTEMPTS: u32 = 40;

/// Back-off before reconnect attempt `attempt` (0-based): half a second for the first
/// `FAST_ATTEMPTS`, then 2 s, 4 s, 8 s… capped, with up to 20 % jitter so that many workers
/// do not reconnect in lockstep after a broker restart.
pub(crate) fn backoff(attempt: u32, cap: Duration) -> Duration {
    let base = match attempt.checked_sub(FAST_ATTEMPTS) {
        None => FAST_PACE,
        Some(slow) => Duration::from_secs(2)
            .checked_mul(1u32 << slow.min(16))
            .unwrap_or(cap),
    }
    .min(cap);
    let jitter = rand::random::<f64>() * 0.2;
    base.mul_f64(1.0 + jitter).min(cap.max(base))
}

/// Opens one connection, giving up after `timeout`. Giving up shuts the socket down: lapin
/// drives each connection on a thread of its own that owns the socket, and a broker that
/// accepts TCP but never answers the handshake would otherwise keep that thread and socket
/// alive, one pair for every attempt, for as long as the process runs.
async fn open_connection(
    url: &str,
    properties: ConnectionProperties,
    timeout: Duration,
) -> Result<Connection, String> {
    use lapin::tcp::{AMQPUriTcpExt, OwnedTLSConfig};
    let uri: lapin::uri::AMQPUri = url
        .parse()
        .map_err(|_| "the URL is not a valid AMQP URL".to_string())?;
    let runtime = lapin::runtime::default_runtime().map_err(|e| describe_error(&e))?;
    let socket = ShutUnlessConnected::default();
    let kept = socket.0.clone();
    let connect = Connection::connector(
        uri,
        runtime,
        async move |uri, runtime| {
            let tls = OwnedTLSConfig::default();
            let stream = uri
                .connect_with_config_async(tls.as_ref(), &runtime)
                .await?;
            // A second handle on the same socket, to shut it down should the handshake hang.
            let tcp = match &stream {
                lapin::AsyncTcpStream::Plain(plain) => Some(plain.get_ref()),
                lapin::AsyncTcpStream::Rustls(tls) => Some(tls.get_ref().0.get_ref()),
                _ => None,
            };
            if let Some(tcp) = tcp {
                let handle = std::os::fd::AsFd::as_fd(tcp).try_clone_to_owned()?;
                *kept.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle.into());
            }
            Ok(stream)
        },
        properties,
    );
    match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(conn)) => {
            socket.connected();
            Ok(conn)
        }
        Ok(Err(e)) => Err(describe_error(&e)),
        Err(_) => Err(format!(
            "no answer within {}",
            humantime::format_duration(timeout)
        )),
    }
}

/// A second handle on the socket of a connection being opened, which shuts that socket down
/// when dropped before [`ShutUnlessConnected::connected`] (a timeout, or the attempt given
/// up at shutdown); lapin's thread then reads the end of the stream and stops.
#[derive(Default)]
struct ShutUnlessConnected(Arc<Mutex<Option<std::net::TcpStream>>>);

impl ShutUnlessConnected {
    /// The connection is open: its socket is the connection's business from now on.
    fn connected(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

impl Drop for ShutUnlessConnected {
    fn drop(&mut self) {
        if let Some(socket) = self.0.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }
}

async fn connect(
    config: &SupervisorConfig,
) -> Result<(Link, watch::Sender<Option<String>>), String> {
    let generation = GENERATION.fetch_add(1, Ordering::Relaxed);
    let open = |role: &'static str| {
        let props = ConnectionProperties::default()
            .with_connection_name(format!("{} {role}", config.connection_name).into());
        open_connection(&config.url, props, config.connect_timeout)
    };
    let publish_conn = open("publish").await?;
    let consume_conn = match open("consume").await {
        Ok(conn) => conn,
        Err(e) => {
            close_both(&publish_conn, None, "sluice: giving up this attempt").await;
            return Err(e);
        }
    };
    let setup = async {
        let channel = publish_conn.create_channel().await?;
        config.topology.declare(&channel).await?;
        let _ = channel.close(200, "topology declared".into()).await;
        let publish_channel = publish_conn.create_channel().await?;
        publish_channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let reply_channel = publish_conn.create_channel().await?;
        let reply_queue = super::replies::listen(&consume_conn, config.inboxes.clone()).await?;
        Ok::<_, lapin::Error>((publish_channel, reply_channel, reply_queue))
    };
    let (publish_channel, reply_channel, reply_queue) =
        match tokio::time::timeout(config.connect_timeout, setup).await {
            Ok(Ok(channel)) => channel,
            Ok(Err(e)) => {
                close_both(&publish_conn, Some(&consume_conn), "sluice: setup failed").await;
                return Err(format!(
                    "connected, but declaring the topology failed: {}",
                    describe_error(&e)
                ));
            }
            Err(_) => {
                // Closed, or the two connections would outlive the attempt.
                close_both(
                    &publish_conn,
                    Some(&consume_conn),
                    "sluice: setup timed out",
                )
                .await;
                return Err("connected, but declaring the topology timed out".to_string());
            }
        };
    let (blocked_tx, blocked) = watch::channel(None);
    Ok((
        Link {
            generation,
            publish_conn,
            consume_conn,
            publish_channel,
            blocked,
            reply_channel,
            reply_queue,
        },
        blocked_tx,
    ))
}

/// Waits until the link is no longer usable, keeping the blocked flag current meanwhile.
/// Returns why the link went down.
async fn watch_link(
    link: &Link,
    blocked_tx: watch::Sender<Option<String>>,
    redacted_url: &str,
) -> String {
    use futures::StreamExt;
    // Events make blocking visible at once; the status poll catches every way a connection can
    // die, whichever events lapin does or does not emit for it.
    let mut publish_events = Box::pin(link.publish_conn.events_listener());
    let mut consume_events = Box::pin(link.consume_conn.events_listener());
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut last_event_error: Option<String> = None;
    loop {
        tokio::select! {
            event = publish_events.next() => match event {
                Some(Event::ConnectionBlocked(reason)) => {
                    warn!("RabbitMQ at {redacted_url} blocked publishing: {reason}; publishers wait until it is lifted");
                    blocked_tx.send_replace(Some(reason));
                }
                Some(Event::ConnectionUnblocked) => {
                    info!("RabbitMQ at {redacted_url} unblocked publishing");
                    blocked_tx.send_replace(None);
                }
                Some(Event::Error(e)) => last_event_error = Some(describe_error(&e)),
                Some(_) => {}
                None => return last_event_error.unwrap_or_else(|| "the publishing connection ended".to_string()),
            },
            event = consume_events.next() => match event {
                Some(Event::Error(e)) => last_event_error = Some(describe_error(&e)),
                Some(_) => {}
                None => return last_event_error.unwrap_or_else(|| "the consuming connection ended".to_string()),
            },
            _ = tick.tick() => {}
        }
        let why = if !link.publish_conn.status().connected() {
            Some("the publishing connection closed")
        } else if !link.consume_conn.status().connected() {
            Some("the consuming connection closed")
        } else if !link.publish_channel.status().connected() {
            Some("the publishing channel closed")
        } else {
            None
        };
        if let Some(why) = why {
            return match last_event_error {
                Some(e) => format!("{why} ({e})"),
                None => why.to_string(),
            };
        }
    }
}

async fn close_link(link: &Link) {
    close_both(
        &link.publish_conn,
        Some(&link.consume_conn),
        "sluice: closing",
    )
    .await;
}

/// Closes connections, waiting at most five seconds for a broker that may not answer.
async fn close_both(first: &Connection, second: Option<&Connection>, why: &str) {
    let close = async {
        let _ = first.close(200, why.into()).await;
        if let Some(second) = second {
            let _ = second.close(200, why.into()).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), close).await;
}

/// A lapin error in words an operator can act on.
pub(crate) fn describe_error(error: &lapin::Error) -> String {
    use std::io::ErrorKind as Io;
    match error.kind() {
        lapin::ErrorKind::IOError(e) => match e.kind() {
            Io::ConnectionRefused => "connection refused".to_string(),
            Io::ConnectionReset => "connection reset by the broker".to_string(),
            Io::ConnectionAborted => "connection aborted".to_string(),
            Io::TimedOut => "connection timed out".to_string(),
            Io::UnexpectedEof => "the broker closed the connection".to_string(),
            _ => e.to_string(),
        },
        lapin::ErrorKind::ProtocolError(e) => format!("the broker said: {e}"),
        _ => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_quick_at_first_then_grows_and_is_capped() {
        let cap = Duration::from_secs(30);
        let fast: Vec<Duration> = (0..FAST_ATTEMPTS).map(|a| backoff(a, cap)).collect();
        assert!(fast
            .iter()
            .all(|d| *d >= FAST_PACE && *d <= FAST_PACE.mul_f64(1.2)));
        // A broker back after a ten-second restart is found again within a second.
        let fast_phase: Duration = fast.iter().sum();
        assert!(fast_phase >= Duration::from_secs(20), "{fast_phase:?}");
        assert!(backoff(FAST_ATTEMPTS, cap) >= Duration::from_secs(2));
        assert!(backoff(FAST_ATTEMPTS + 2, cap) >= Duration::from_secs(8));
        for attempt in [FAST_ATTEMPTS + 5, 100, 1000, u32::MAX] {
            let d = backoff(attempt, cap);
            assert!(d <= cap, "{attempt}: {d:?}");
            assert!(d >= Duration::from_secs(30), "{attempt}: {d:?}");
        }
        // A cap below the fast pace wins.
        assert!(backoff(0, Duration::from_millis(100)) <= Duration::from_millis(100));
    }
}
