//! The RabbitMQ backend against a real broker (`SLUICE_TEST_AMQP_URL`, default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`).
//!
//! Every test uses its own prefix, so tests (and other users of the broker) never see each
//! other's messages, and deletes its queues and exchanges when it ends, pass or fail. Nothing
//! here restarts the broker: the reconnect test closes only its own connections.

use crate::common;

use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicGetOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::Connection;
use sluice::job::Urgency;
use sluice::queue::amqp::{AmqpConfig, AmqpQueue, Topology, DEAD_REASON_HEADER, NOT_BEFORE_HEADER};
use sluice::queue::{Delivery, Queue, QueueError};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Deletes a test's topology when dropped, even when the test panics.
struct Cleanup(Topology);

impl Drop for Cleanup {
    fn drop(&mut self) {
        common::delete_topology_blocking(self.0.clone());
    }
}

fn test_config() -> AmqpConfig {
    AmqpConfig::new(common::AMQP_URL).with_prefix(format!("sluice-test-{}", uuid::Uuid::new_v4()))
}

async fn start(config: AmqpConfig) -> (AmqpQueue, Cleanup) {
    let queue = AmqpQueue::start(config);
    let cleanup = Cleanup(queue.topology().clone());
    queue
        .wait_connected(Duration::from_secs(30))
        .await
        .expect("connect to the test broker");
    (queue, cleanup)
}

async fn next_within(consumer: &mut Box<dyn sluice::queue::Consumer>, secs: u64) -> Delivery {
    tokio::time::timeout(Duration::from_secs(secs), consumer.next())
        .await
        .expect("a delivery in time")
        .expect("the consumer is still open")
}

/// A plain lapin connection, to look at the broker without going through the code under test.
async fn plain_channel() -> (Connection, lapin::Channel) {
    let conn = common::amqp_connection().await;
    let channel = conn.create_channel().await.expect("plain channel");
    (conn, channel)
}

async fn message_count(channel: &lapin::Channel, queue: &str) -> u32 {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("queue exists")
        .message_count()
}

#[tokio::test]
async fn publishes_a_batch_and_consumes_all_of_it() {
    let (queue, _cleanup) = start(test_config()).await;
    assert_eq!(queue.name(), "rabbitmq");
    let messages: Vec<Vec<u8>> = (0..500)
        .map(|n| format!(r#"{{"n":{n}}}"#).into_bytes())
        .collect();
    queue
        .publish(Urgency::Standard, messages.clone())
        .await
        .expect("publish confirmed");

    let (_conn, plain) = plain_channel().await;
    let topology = queue.topology().clone();
    assert_eq!(
        message_count(&plain, &topology.work_queue(Urgency::Standard)).await,
        500
    );
    // Routing by urgency: nothing went anywhere else.
    assert_eq!(
        message_count(&plain, &topology.work_queue(Urgency::Batch)).await,
        0
    );

    let mut consumer = queue.consume(Urgency::Standard, 64).await.expect("consume");
    let mut seen = BTreeSet::new();
    for _ in 0..500 {
        let delivery = next_within(&mut consumer, 10).await;
        assert!(!delivery.redelivered);
        seen.insert(delivery.payload.clone());
        delivery.ack().await.expect("ack");
    }
    let expected: BTreeSet<Vec<u8>> = messages.into_iter().collect();
    assert_eq!(seen, expected);
    drop(consumer);
    // Acks reached the broker: the queue drains to empty.
    let queue_name = topology.work_queue(Urgency::Standard);
    common::eventually(
        "the acked queue to drain",
        Duration::from_secs(5),
        async || match message_count(&plain, &queue_name).await {
            0 => Ok(()),
            left => Err(format!("{left} messages still in the queue")),
        },
    )
    .await;
}

#[tokio::test]
async fn retry_after_comes_back_no_earlier_than_asked() {
    let (queue, _cleanup) = start(test_config()).await;
    queue
        .publish(Urgency::Realtime, vec![b"{\"retry\":1}".to_vec()])
        .await
        .unwrap();
    let mut consumer = queue.consume(Urgency::Realtime, 8).await.unwrap();
    let first = next_within(&mut consumer, 10).await;
    let asked = Instant::now();
    first
        .retry_after(Duration::from_millis(1000))
        .await
        .expect("retry parked");

    // While it waits, it sits in the 1 s rung of its own urgency.
    let (_conn, plain) = plain_channel().await;
    let rung = sluice::queue::amqp::topology::choose_rung(Duration::from_secs(1));
    let delay_queue = queue.topology().delay_queue(Urgency::Realtime, rung);
    assert!(delay_queue.ends_with(".delay.realtime.1s"));
    assert_eq!(message_count(&plain, &delay_queue).await, 1);

    let again = next_within(&mut consumer, 15).await;
    let waited = asked.elapsed();
    assert!(
        waited >= Duration::from_secs(1),
        "came back after {waited:?}"
    );
    assert_eq!(again.payload, b"{\"retry\":1}");
    again.ack().await.unwrap();
    assert_eq!(message_count(&plain, &delay_queue).await, 0);
}

#[tokio::test]
async fn a_message_back_before_its_not_before_time_is_parked_again() {
    // Retries longer than the top rung travel with a not-before header; simulate one coming
    // back too early by publishing it straight to the work queue.
    let (queue, _cleanup) = start(test_config()).await;
    let (_conn, plain) = plain_channel().await;
    let not_before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        + Duration::from_millis(1500);
    let mut headers = FieldTable::default();
    headers.insert(
        NOT_BEFORE_HEADER.into(),
        AMQPValue::LongLongInt(not_before.as_millis() as i64),
    );
    plain
        .basic_publish(
            queue.topology().exchange().into(),
            "batch".into(),
            Default::default(),
            b"early",
            lapin::BasicProperties::default().with_headers(headers),
        )
        .await
        .unwrap();
    let mut consumer = queue.consume(Urgency::Batch, 4).await.unwrap();
    let delivery = next_within(&mut consumer, 20).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    assert!(now >= not_before, "handed out {:?} early", not_before - now);
    assert_eq!(delivery.payload, b"early");
    delivery.ack().await.unwrap();
}

#[tokio::test]
async fn dead_letter_lands_in_the_dead_queue_with_its_reason() {
    let (queue, _cleanup) = start(test_config()).await;
    queue
        .publish(Urgency::Batch, vec![b"not json".to_vec()])
        .await
        .unwrap();
    let mut consumer = queue.consume(Urgency::Batch, 8).await.unwrap();
    let delivery = next_within(&mut consumer, 10).await;
    delivery
        .dead_letter("not a job: expected value at line 1 column 1")
        .await
        .expect("dead-lettered");

    let (_conn, plain) = plain_channel().await;
    let topology = queue.topology().clone();
    assert!(topology.dead_queue().ends_with(".jobs.dead"));
    let got = plain
        .basic_get(topology.dead_queue().into(), BasicGetOptions::default())
        .await
        .unwrap()
        .expect("a message in the dead queue");
    assert_eq!(got.delivery.data, b"not json");
    let headers = got.delivery.properties.headers().clone().expect("headers");
    match headers.inner().get(DEAD_REASON_HEADER) {
        Some(AMQPValue::LongString(reason)) => assert_eq!(
            reason.to_string(),
            "not a job: expected value at line 1 column 1"
        ),
        other => panic!("reason header: {other:?}"),
    }
    assert!(matches!(
        headers.inner().get("x-sluice-dead-at"),
        Some(AMQPValue::Timestamp(t)) if *t > 1_600_000_000
    ));
    assert_eq!(got.delivery.properties.delivery_mode(), &Some(2));
    got.delivery.ack(BasicAckOptions::default()).await.unwrap();
    // And the original is gone from its work queue.
    assert_eq!(
        message_count(&plain, &topology.work_queue(Urgency::Batch)).await,
        0
    );
}

#[tokio::test]
async fn a_crash_looping_message_ends_in_the_dead_queue() {
    // Failed deliveries beyond the limit go to the dead queue, not into the void.
    let mut config = test_config();
    config.delivery_limit = 2;
    let (queue, _cleanup) = start(config).await;
    queue
        .publish(Urgency::Standard, vec![b"poison".to_vec()])
        .await
        .unwrap();
    let (_conn, plain) = plain_channel().await;
    let dead = queue.topology().dead_queue();
    common::eventually(
        "the poison message dead-lettered",
        Duration::from_secs(20),
        async || {
            if message_count(&plain, &dead).await > 0 {
                return true;
            }
            let mut consumer = queue.consume(Urgency::Standard, 1).await.unwrap();
            if let Ok(Some(delivery)) =
                tokio::time::timeout(Duration::from_secs(2), consumer.next()).await
            {
                // Dropped unsettled: requeued, counted as a failed delivery.
                drop(delivery);
            }
            drop(consumer);
            false
        },
    )
    .await;
    let got = plain
        .basic_get(dead.into(), BasicGetOptions::default())
        .await
        .unwrap()
        .expect("dead message");
    assert_eq!(got.delivery.data, b"poison");
}

#[tokio::test]
async fn an_unsettled_delivery_is_redelivered_when_its_connection_goes() {
    let config = test_config();
    let prefix = config.prefix.clone();
    let (first, _cleanup) = start(config).await;
    first
        .publish(Urgency::Standard, vec![b"held".to_vec()])
        .await
        .unwrap();
    let mut consumer = first.consume(Urgency::Standard, 4).await.unwrap();
    let held = next_within(&mut consumer, 10).await;
    assert!(!held.redelivered);

    // A second process-like instance on the same prefix.
    let (second, _cleanup2) = start(AmqpConfig::new(common::AMQP_URL).with_prefix(prefix)).await;
    let mut other = second.consume(Urgency::Standard, 4).await.unwrap();
    // Not delivered twice while the first holds it.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), other.next())
            .await
            .is_err()
    );

    first.close();
    let again = next_within(&mut other, 15).await;
    assert_eq!(again.payload, b"held");
    assert!(again.redelivered);
    // The stale delivery cannot be settled any more, and says so instead of panicking.
    match held.ack().await {
        Err(QueueError::Unavailable(msg)) => assert!(msg.contains("deliver it again"), "{msg}"),
        other => panic!("stale ack: {other:?}"),
    }
    // The closed instance's consumer ends for good.
    assert!(
        tokio::time::timeout(Duration::from_secs(5), consumer.next())
            .await
            .expect("consumer ends")
            .is_none()
    );
    again.ack().await.expect("ack on the live connection");
}

#[tokio::test]
async fn a_delivery_dropped_with_its_consumer_is_redelivered() {
    let (queue, _cleanup) = start(test_config()).await;
    queue
        .publish(Urgency::Batch, vec![b"dropped".to_vec()])
        .await
        .unwrap();
    let mut consumer = queue.consume(Urgency::Batch, 4).await.unwrap();
    let delivery = next_within(&mut consumer, 10).await;
    drop(delivery);
    drop(consumer);
    let mut consumer = queue.consume(Urgency::Batch, 4).await.unwrap();
    let again = next_within(&mut consumer, 10).await;
    assert_eq!(again.payload, b"dropped");
    assert!(again.redelivered);
    again.ack().await.unwrap();
}

#[tokio::test]
async fn a_delivery_outlives_its_consumer() {
    // A worker may stop consuming and still finish what it holds.
    let (queue, _cleanup) = start(test_config()).await;
    queue
        .publish(Urgency::Realtime, vec![b"finish me".to_vec()])
        .await
        .unwrap();
    let mut consumer = queue.consume(Urgency::Realtime, 4).await.unwrap();
    let delivery = next_within(&mut consumer, 10).await;
    drop(consumer);
    // The point of the test: the consumer's cancel reaches the broker before the ack.
    tokio::time::sleep(Duration::from_millis(300)).await;
    delivery
        .ack()
        .await
        .expect("ack after the consumer is gone");
    let (_conn, plain) = plain_channel().await;
    // A wait for nothing to happen: a delivery whose ack was lost would be requeued (ready
    // again) within this time; polling for 0 would pass before that could show.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        message_count(&plain, &queue.topology().work_queue(Urgency::Realtime)).await,
        0
    );
}

#[tokio::test]
async fn a_down_broker_gives_unavailable_with_a_clear_message() {
    let mut config = AmqpConfig::new("amqp://guest:s3cret@127.0.0.1:1/%2f")
        .with_prefix(format!("sluice-test-{}", uuid::Uuid::new_v4()));
    config.publish_timeout = Duration::from_secs(2);
    let queue = AmqpQueue::start(config);
    let started = Instant::now();
    let err = queue
        .wait_connected(Duration::from_millis(1500))
        .await
        .expect_err("nothing listens on port 1");
    let QueueError::Unavailable(msg) = err else {
        panic!("expected Unavailable, got {err:?}");
    };
    assert!(msg.contains("amqp://guest:***@127.0.0.1:1/%2f"), "{msg}");
    assert!(msg.contains("connection refused"), "{msg}");
    assert!(!msg.contains("s3cret"), "{msg}");
    assert!(started.elapsed() < Duration::from_secs(3));

    let started = Instant::now();
    let err = queue
        .publish(Urgency::Standard, vec![b"x".to_vec()])
        .await
        .expect_err("cannot publish");
    assert!(
        matches!(&err, QueueError::Unavailable(m) if m.contains("127.0.0.1:1") && !m.contains("s3cret")),
        "{err:?}"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(4),
        "{took:?}"
    );
    // Consuming from a down broker waits rather than failing or ending.
    let mut consumer = queue.consume(Urgency::Standard, 1).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), consumer.next())
            .await
            .is_err()
    );
    assert!(!queue.is_connected());
}

/// A TCP proxy in front of the broker whose live connections can be cut at once, as a network
/// fault would, while new connections still go through (so the client can reconnect).
///
/// Cutting on our side rather than with `rabbitmqctl close_connection` keeps the test from
/// touching the shared broker's management plane (running the CLI against a busy 3.10 node
/// coincided with the node wedging).
struct CutProxy {
    addr: std::net::SocketAddr,
    cut: tokio::sync::watch::Sender<u64>,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
}

impl CutProxy {
    async fn start() -> CutProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (cut_tx, counter) = (cut.clone(), accepted.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut cut_rx = cut_tx.subscribe();
                tokio::spawn(async move {
                    let Ok(mut broker) = tokio::net::TcpStream::connect("127.0.0.1:5672").await
                    else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut broker) => {}
                        _ = cut_rx.changed() => {}
                    }
                    // Dropping both sockets here is the cut.
                });
            }
        });
        CutProxy {
            addr,
            cut,
            accepted,
        }
    }

    fn url(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }

    /// Cuts every connection open now; returns how many had been accepted so far.
    fn cut(&self) -> usize {
        self.cut.send_modify(|generation| *generation += 1);
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[tokio::test]
async fn a_killed_connection_is_replaced_and_nothing_is_lost() {
    let proxy = CutProxy::start().await;
    let mut config = test_config();
    config.url = proxy.url();
    let (queue, _cleanup) = start(config).await;
    let messages: Vec<Vec<u8>> = (0..50).map(|n| format!("m{n}").into_bytes()).collect();
    queue
        .publish(Urgency::Standard, messages.clone())
        .await
        .unwrap();
    let mut consumer = queue.consume(Urgency::Standard, 8).await.unwrap();
    let mut acked = BTreeSet::new();
    for _ in 0..20 {
        let d = next_within(&mut consumer, 10).await;
        acked.insert(d.payload.clone());
        d.ack().await.unwrap();
    }
    let held = next_within(&mut consumer, 10).await;
    let held_payload = held.payload.clone();

    assert_eq!(proxy.cut(), 2, "publish and consume connections were cut");

    // A cut is noticed on the next write: a publish in flight then fails as Unavailable
    // (nothing confirmed, so the caller retries), and once the supervisor has reconnected the
    // retry goes through.
    let more: Vec<Vec<u8>> = (50..60).map(|n| format!("m{n}").into_bytes()).collect();
    common::eventually(
        "publishing to resume after the reconnect",
        Duration::from_secs(15),
        async || match queue.publish(Urgency::Standard, more.clone()).await {
            Ok(()) => Ok(()),
            Err(QueueError::Unavailable(why)) => Err(why),
            Err(other) => panic!("unexpected publish error after a cut: {other:?}"),
        },
    )
    .await;
    assert!(held.ack().await.is_err(), "a stale delivery must not ack");

    let mut redelivered_held = false;
    while acked.len() < 60 {
        let d = next_within(&mut consumer, 20).await;
        if d.payload == held_payload {
            redelivered_held = d.redelivered;
        }
        let payload = d.payload.clone();
        // A delivery handed out just as its connection died may fail to ack; it comes back.
        if d.ack().await.is_ok() {
            acked.insert(payload);
        }
    }
    assert!(
        redelivered_held,
        "the held message came back marked redelivered"
    );
    let expected: BTreeSet<Vec<u8>> = messages.into_iter().chain(more).collect();
    assert_eq!(acked, expected);
    assert!(queue.is_connected());
    // Nothing left over.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), consumer.next())
            .await
            .is_err()
    );
}

// A plain lapin consumer, to prove the published envelope is readable by any AMQP client.
#[tokio::test]
async fn messages_are_plain_amqp_for_other_clients() {
    let (queue, _cleanup) = start(test_config()).await;
    queue
        .publish(Urgency::Realtime, vec![b"{}".to_vec()])
        .await
        .unwrap();
    let (_conn, plain) = plain_channel().await;
    let mut stream = plain
        .basic_consume(
            queue.topology().work_queue(Urgency::Realtime).into(),
            "plain".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let d = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(d.data, b"{}");
    assert_eq!(d.properties.delivery_mode(), &Some(2));
    assert_eq!(
        d.properties.content_type().as_ref().map(|s| s.as_str()),
        Some("application/json")
    );
    d.ack(BasicAckOptions::default()).await.unwrap();
}

/// Replies cross processes: a worker's queue (another `AmqpQueue`, as in another process)
/// sends to the inbox an API process opened, in order, and only the job's own inbox gets
/// them; once the API's connection is gone, its inboxes end instead of waiting forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_reach_the_waiting_process_in_order() {
    let config = test_config();
    let (api, _cleanup) = start(config.clone()).await;
    let (worker, _cleanup_worker) = start(config).await;
    let (job, other_job) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let mut inbox = api.open_inbox(job).await.unwrap();
    let mut other_inbox = api.open_inbox(other_job).await.unwrap();
    assert!(inbox.address.starts_with("amq.gen-"), "{}", inbox.address);

    for i in 0..200u32 {
        worker
            .reply(&inbox.address, job, i.to_string().into_bytes())
            .await
            .unwrap();
    }
    worker
        .reply(&inbox.address, other_job, b"other".to_vec())
        .await
        .unwrap();
    for i in 0..200u32 {
        let reply = tokio::time::timeout(Duration::from_secs(10), inbox.recv())
            .await
            .expect("a reply in time")
            .expect("the inbox is open");
        assert_eq!(reply, i.to_string().into_bytes(), "replies arrive in order");
    }
    let other = tokio::time::timeout(Duration::from_secs(10), other_inbox.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(other, b"other");

    // A reply to an inbox nobody holds any more is dropped, not an error for the worker.
    drop(other_inbox);
    worker
        .reply(&inbox.address, other_job, b"late".to_vec())
        .await
        .unwrap();

    api.close();
    let ended = tokio::time::timeout(Duration::from_secs(10), inbox.recv())
        .await
        .expect("the inbox ends when its connection closes");
    assert_eq!(ended, None);
}

/// This process's open TCP sockets whose remote end is 127.0.0.1:`port` (its inodes in
/// `/proc/self/fd`, looked up in `/proc/self/net/tcp`).
fn sockets_to(port: u16) -> usize {
    let ours: BTreeSet<String> = std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .flatten()
        .filter_map(|entry| std::fs::read_link(entry.path()).ok())
        .filter_map(|target| {
            let target = target.to_str()?;
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_string(),
            )
        })
        .collect();
    let table = std::fs::read_to_string("/proc/self/net/tcp").expect("/proc/self/net/tcp");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let remote_port = fields
                .get(2)
                .and_then(|remote| remote.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            remote_port == Some(port) && fields.get(9).is_some_and(|inode| ours.contains(*inode))
        })
        .count()
}

/// A broker that accepts TCP and never says a word: every attempt times out in the AMQP
/// handshake, and must leave nothing behind. (lapin drives a connection on a thread of its own
/// that owns the socket; a timed-out attempt used to keep both, one pair per attempt.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_on_a_broker_that_never_answers_leave_no_socket_open() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let silent = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                // Read until the client goes, and never answer.
                let mut buffer = [0u8; 1024];
                while let Ok(1..) = socket.read(&mut buffer).await {}
            });
        }
    });
    let mut config = test_config();
    config.url = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    config.connect_timeout = Duration::from_millis(200);
    let queue = AmqpQueue::start(config);

    let attempts = 6;
    common::eventually(
        "six connection attempts on the silent broker",
        Duration::from_secs(30),
        async || match accepted.load(Ordering::SeqCst) {
            made if made >= attempts => Ok(()),
            made => Err(format!("{made} attempts")),
        },
    )
    .await;
    // At most the attempt in flight holds a socket.
    let open = common::eventually(
        "at most the attempt in flight to hold a socket",
        Duration::from_secs(5),
        async || match sockets_to(port) {
            open if open <= 1 => Ok(open),
            open => Err(format!(
                "{open} sockets open after {} attempts",
                accepted.load(Ordering::SeqCst)
            )),
        },
    )
    .await;
    let made = accepted.load(Ordering::SeqCst);
    queue.close();
    silent.abort();
    println!("{made} attempts on a silent broker; {open} sockets to it still open");
}
