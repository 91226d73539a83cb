//! A Kafka outage loses no task: what Kafka cannot take waits in the producer's local spool
//! and is re-published in order when Kafka is back, also by a restarted service; a full spool
//! refuses loudly; every message the producer sends is signed when it has a key.
//!
//! The broker is a tansu process that keeps everything in memory, so after a restart the
//! tests create the topics again, as an operator's Kafka would still have them.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use redis::AsyncCommands;
use redis_retry::scope::{self, ScopeMeta};
use redis_retry::signing::{SigningKey, SIGNATURE_HEADER};
use redis_retry::{DlqReason, ProducerConfig, PublishError, RedisTask, RetryConnection, RetryProducer};
use support::stack::{manager_through, wait_until, Stack};
use support::{report, unique, Proxy};

/// A spool directory removed when the test ends.
struct SpoolDir(PathBuf);

impl SpoolDir {
    fn new() -> SpoolDir {
        SpoolDir(std::env::temp_dir().join(unique("redis-retry-spool")))
    }
}

impl Drop for SpoolDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn pending(producer: &RetryProducer) -> u64 {
    producer.spool_stats().expect("the producer has a spool").pending
}

/// Drops the last handle of a producer: that flushes librdkafka for up to 5 s and joins
/// threads, so it runs where blocking is allowed.
fn shut_down(producer: RetryProducer) -> Duration {
    let start = Instant::now();
    tokio::task::block_in_place(move || drop(producer));
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_down_for_30_s_during_a_redis_outage_loses_no_write() {
    const GROUPS: usize = 20;
    const ROUNDS: usize = 16;
    const WRITES: usize = GROUPS * ROUNDS;
    const OUTAGE: Duration = Duration::from_secs(30);
    let mut stack = Stack::start().await;
    if !stack.kafka.is_managed() {
        eprintln!("skipped: the broker from KAFKA_BROKERS cannot be stopped");
        return;
    }
    let dir = SpoolDir::new();
    // The defaults a service gets (message.timeout.ms is 15 s with a spool), but for one thing:
    // tansu forgets producer ids when it restarts and then refuses the idempotent producer's
    // bumped epoch for good (UNKNOWN_PRODUCER_ID in a loop), which Kafka, keeping its state,
    // never does. One request in flight keeps the order that idempotence would keep.
    let config = ProducerConfig::new(stack.kafka.bootstrap())
        .topic(&stack.topic)
        .spool_dir(&dir.0)
        .property("enable.idempotence", "false")
        .property("max.in.flight.requests.per.connection", "1");
    let producer = RetryProducer::new(&config).expect("producer");
    let proxy = Proxy::start(stack.redis.addr());
    let manager = manager_through(&proxy, Duration::from_millis(300)).await;
    let conn = RetryConnection::new(manager).with_producer(producer.clone());

    proxy.cut();
    stack.kafka.stop();
    let outage = Instant::now();
    // Each write leaves its own trace (a hash field) and overwrites its group's `last`, so
    // the final state shows both that every write arrived and that a group's writes kept
    // their order. A round writes every group once, concurrently; rounds follow each other.
    let round = |conn: &RetryConnection<redis::aio::ConnectionManager>, r: usize| {
        let writes = (0..GROUPS).map(|g| {
            let mut conn = conn.clone();
            let i = r * GROUPS + g;
            async move {
                let result: redis::RedisResult<()> =
                    scope::capture(ScopeMeta::new("SpoolTest.write"), async {
                        redis::pipe()
                            .hset(format!("outage:h:{g}"), format!("f{i}"), i)
                            .set(format!("outage:last:{g}"), i)
                            .query_async(&mut conn)
                            .await
                    })
                    .await;
                assert!(result.is_err(), "write {i} must fail while Redis is cut off");
            }
        });
        futures_util::future::join_all(writes)
    };
    // First half: handed to librdkafka, which holds them until message.timeout.ms and then
    // reports them failed: they go to the spool's redelivery lane.
    for r in 0..ROUNDS / 2 {
        round(&conn, r).await;
    }
    let first_written = outage.elapsed();
    let first_half = (ROUNDS / 2 * GROUPS) as u64;
    wait_until("the first writes to time out into the spool", Duration::from_secs(40), || {
        let n = pending(&producer);
        async move { n == first_half }
    })
    .await;
    let spooled_after = outage.elapsed();
    // Second half: the spool holds tasks, so these go straight to its tail.
    for r in ROUNDS / 2..ROUNDS {
        round(&conn, r).await;
    }
    assert_eq!(pending(&producer), WRITES as u64, "every captured write is on disk");
    let peak_bytes = producer.spool_stats().unwrap().bytes;
    tokio::time::sleep(OUTAGE.saturating_sub(outage.elapsed())).await;

    stack.kafka.restart();
    let back = Instant::now();
    let kafka_down = outage.elapsed();
    assert!(kafka_down >= OUTAGE);
    stack.producer.ensure_topics(1, 1).await.expect("topics again");
    wait_until("the spool to drain", Duration::from_secs(90), || {
        let n = pending(&producer);
        async move { n == 0 }
    })
    .await;
    let drained_in = back.elapsed();

    proxy.restore();
    let config = stack.consumer_config();
    stack.spawn_consumer(config, &stack.redis.url()).await;
    let mut direct = stack.conn().await;
    let expected_last: BTreeMap<String, String> =
        (0..GROUPS).map(|g| (format!("outage:last:{g}"), (WRITES - GROUPS + g).to_string())).collect();
    wait_until("every write to be applied", Duration::from_secs(60), || {
        let mut c = direct.clone();
        async move {
            let fields: usize = {
                let mut n = 0;
                for g in 0..GROUPS {
                    n += c.hlen::<_, usize>(format!("outage:h:{g}")).await.unwrap_or(0);
                }
                n
            };
            fields == WRITES
        }
    })
    .await;
    let applied_in = back.elapsed();
    stack.stop_consumer().await.expect("consumer stops cleanly");

    // The exact final state: every field of every write, and each group's last write last.
    for g in 0..GROUPS {
        let fields: HashMap<String, String> = direct.hgetall(format!("outage:h:{g}")).await.unwrap();
        let expected: HashMap<String, String> =
            (g..WRITES).step_by(GROUPS).map(|i| (format!("f{i}"), i.to_string())).collect();
        assert_eq!(fields, expected, "group {g}");
    }
    for (key, value) in &expected_last {
        let got: Option<String> = direct.get(key).await.unwrap();
        assert_eq!(got.as_ref(), Some(value), "{key} holds the last write");
    }
    let stats = producer.spool_stats().unwrap();
    let all = WRITES as u64;
    assert_eq!(
        (stats.appended, stats.committed, stats.refused, stats.pending),
        (all, all, 0, 0),
        "{stats:?}"
    );
    assert_eq!(stats.bytes, 0, "the drained spool's files are gone");
    drop(conn);
    shut_down(producer);

    let rows = [
        ("Kafka down for", format!("{:.1} s", kafka_down.as_secs_f64())),
        ("writes captured during the outage", WRITES.to_string()),
        ("first half captured within", format!("{:.1} s", first_written.as_secs_f64())),
        ("tasks spooled", stats.appended.to_string()),
        (
            "first half (held by librdkafka) in the spool after",
            format!("{:.1} s (message.timeout.ms = 15 s)", spooled_after.as_secs_f64()),
        ),
        ("spool size at its peak", format!("{peak_bytes} bytes")),
        ("tasks re-published from the spool", stats.committed.to_string()),
        ("spool drained after Kafka restarted in", format!("{:.1} s", drained_in.as_secs_f64())),
        ("all writes applied after Kafka restarted in", format!("{:.1} s", applied_in.as_secs_f64())),
        ("writes lost", "0".to_string()),
    ];
    for (name, value) in &rows {
        eprintln!("spool outage figure: {name}: {value}");
    }
    report::record(
        "Kafka outage: the local spool",
        "Redis cut off and the broker stopped for 30 s while a `RetryConnection` captured pipelined \
         writes; the producer's spool kept them and re-published them once the broker was back \
         (`tests/spool.rs`).",
        &rows,
    );
}

fn restart_task(i: usize) -> RedisTask {
    RedisTask::set(format!("restart:{}", i % 10), i.to_string(), Duration::from_secs(600))
        .expect("task")
        .with_source("SpoolTest.restart")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_service_replays_its_spool_in_order_and_signed() {
    const N: usize = 200;
    let mut stack = Stack::start().await;
    if !stack.kafka.is_managed() {
        eprintln!("skipped: the broker from KAFKA_BROKERS cannot be stopped");
        return;
    }
    let dir = SpoolDir::new();
    let key = SigningKey::new("a shared secret for the spool test").unwrap();
    let config = ProducerConfig::new(stack.kafka.bootstrap())
        .topic(&stack.topic)
        .spool_dir(&dir.0)
        .signing_key(key.clone());
    stack.kafka.stop();

    // First run: tasks handed to librdkafka, and the service stops before they time out.
    // The producer goes with them still queued: they are purged into the spool.
    let first = RetryProducer::new(&config).expect("first producer");
    for i in 0..N / 2 {
        first.publish(&restart_task(i)).expect("publish");
    }
    let first_shutdown = shut_down(first);

    // Second run, Kafka still down: it finds the first run's tasks, new tasks join the tail
    // behind them, and it stops in the middle of a failing re-publish.
    let second = RetryProducer::new(&config.clone().property("message.timeout.ms", "1000")).expect("second");
    let found = second.spool_stats().unwrap().recovered;
    assert_eq!(found, (N / 2) as u64, "the first run left every task in the spool");
    for i in N / 2..N {
        second.publish(&restart_task(i)).expect("publish");
    }
    assert_eq!(pending(&second), N as u64);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    shut_down(second);

    // Third run, Kafka back with its topics.
    stack.kafka.restart();
    stack.producer.ensure_topics(1, 1).await.expect("topics again");
    let started = Instant::now();
    let third = RetryProducer::new(&config).expect("third producer");
    let recovered = third.spool_stats().unwrap().recovered;
    assert_eq!(recovered, N as u64);
    wait_until("the spool to drain", Duration::from_secs(60), || {
        let n = pending(&third);
        async move { n == 0 }
    })
    .await;
    let drained_in = started.elapsed();
    assert_eq!(third.spool_stats().unwrap().committed, N as u64);

    // Exactly the N tasks, none twice, in publishing order, each signed once and validly.
    let messages = stack.kafka.read_messages(&stack.topic, N + 1, Duration::from_secs(10)).await;
    assert_eq!(messages.len(), N, "every task once");
    let mut order = Vec::new();
    for m in &messages {
        let payload = m.payload().unwrap_or_default();
        let signatures: Vec<&[u8]> = m
            .headers()
            .map(|h| h.iter().filter(|h| h.key == SIGNATURE_HEADER).filter_map(|h| h.value).collect())
            .unwrap_or_default();
        assert_eq!(signatures.len(), 1, "one signature header");
        assert!(key.verify(payload, signatures[0]), "the signature checks out");
        let task = RedisTask::from_json(payload).expect("a task");
        assert_eq!(task.first_key(), m.key(), "keyed by its Redis key");
        order.push(task.commands()[0][2].to_vec());
    }
    let expected: Vec<Vec<u8>> = (0..N).map(|i| i.to_string().into_bytes()).collect();
    assert_eq!(order, expected, "published in order");

    // And a consumer that checks signatures applies them all.
    let consumer = stack.consumer_config().signing_key(key);
    stack.spawn_consumer(consumer, &stack.redis.url()).await;
    let direct = stack.conn().await;
    wait_until("the last task of every key to be applied", Duration::from_secs(60), || {
        let mut c = direct.clone();
        async move {
            let mut all = true;
            for k in 0..10 {
                let v: Option<String> = c.get(format!("restart:{k}")).await.unwrap_or(None);
                all &= v == Some((N - 10 + k).to_string());
            }
            all
        }
    })
    .await;
    stack.stop_consumer().await.expect("consumer stops cleanly");
    shut_down(third);

    let rows = [
        ("tasks left in the spool by two stopped runs", N.to_string()),
        (
            "first run's shutdown with Kafka down (flush, purge into the spool)",
            format!("{:.1} s", first_shutdown.as_secs_f64()),
        ),
        ("tasks re-published by the restarted service", N.to_string()),
        ("spool drained after start in", format!("{:.2} s", drained_in.as_secs_f64())),
        ("tasks lost / duplicated / out of order", "0 / 0 / 0".to_string()),
    ];
    for (name, value) in &rows {
        eprintln!("spool restart figure: {name}: {value}");
    }
    report::record(
        "Service restarted with a non-empty spool",
        "Two runs of a service stopped while the broker was down; the third, started after the \
         broker returned, re-published their spool in order, signed (`tests/spool.rs`).",
        &rows,
    );
}

#[test]
fn a_full_spool_refuses_tasks_with_a_clear_error_and_never_panics() {
    support::init_tracing();
    let dir = SpoolDir::new();
    // No broker at all: nothing listens on port 1. No async runtime either: publishing
    // does not need one.
    let config = ProducerConfig::new("127.0.0.1:1")
        .topic(unique("full"))
        .spool_dir(&dir.0)
        .property("message.timeout.ms", "300")
        .spool_max_bytes(4096);
    let producer = RetryProducer::new(&config).expect("producer");
    let task = |i: usize| RedisTask::del(format!("full:{i}")).unwrap().with_source("SpoolTest.full");
    producer.publish(&task(0)).expect("handed to librdkafka");
    let deadline = Instant::now() + Duration::from_secs(20);
    while pending(&producer) == 0 {
        assert!(Instant::now() < deadline, "the failed delivery reached the spool");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut accepted = 1;
    let refusal = loop {
        match producer.publish(&task(accepted)) {
            Ok(()) => accepted += 1,
            Err(e) => break e,
        }
        assert!(accepted < 1000, "a 4 KiB spool must fill up");
    };
    assert!(matches!(refusal, PublishError::Spool(_)), "{refusal:?}");
    let message = refusal.to_string();
    assert!(
        message.contains("spool") && message.contains("4096"),
        "a clear error naming the limit: {message}"
    );
    // More refusals are just as orderly.
    assert!(producer.publish(&task(9999)).is_err());
    let stats = producer.spool_stats().unwrap();
    assert_eq!(stats.pending, accepted as u64);
    assert_eq!(stats.refused, 2);
    assert!(stats.bytes <= 4096, "{stats:?}");
    eprintln!("spool full figure: a 4096-byte spool took {accepted} DEL tasks, then refused with: {refusal}");

    // The clear error itself comes from the spool; a second producer cannot share it.
    let second = RetryProducer::new(&config).unwrap_err();
    assert!(second.to_string().contains("in use by process"), "{second}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_the_producer_sends_carries_one_valid_signature() {
    let stack = Stack::start().await;
    let key = SigningKey::new("another shared secret, long enough").unwrap();
    let producer = RetryProducer::new(
        &ProducerConfig::new(stack.kafka.bootstrap()).topic(&stack.topic).signing_key(key.clone()),
    )
    .expect("producer");
    let topics = producer.topics().clone();

    producer.publish(&RedisTask::del("sig:1").unwrap()).expect("publish");
    producer.publish_and_wait(&RedisTask::del("sig:2").unwrap()).await.expect("publish_and_wait");
    producer
        .dead_letter(&RedisTask::del("sig:3").unwrap(), DlqReason::Malformed, "bad")
        .expect("dead_letter");
    // The consumer's path: a DLQ copy of a bad message with the original headers, a forged
    // signature among them, and a re-published tier message.
    let forged = OwnedHeaders::new()
        .insert(Header { key: SIGNATURE_HEADER, value: Some("v1=00") })
        .insert(Header { key: "original.trace", value: Some("t-9") });
    producer
        .send_bytes_and_wait(&topics.dlq, Some(b"sig:4"), b"not even json", Some(forged))
        .await
        .expect("send_bytes_and_wait with headers");
    producer
        .send_bytes_and_wait(&topics.retry[0], Some(b"sig:5"), b"{\"tier\":1}", None)
        .await
        .expect("send_bytes_and_wait without headers");

    let mut checked = 0;
    for (topic, n) in [(&topics.main, 2), (&topics.dlq, 2), (&topics.retry[0], 1)] {
        let messages = stack.kafka.read_messages(topic, n, Duration::from_secs(15)).await;
        assert_eq!(messages.len(), n, "{topic}");
        for m in &messages {
            let headers = m.headers().expect("headers");
            let signatures: Vec<&[u8]> =
                headers.iter().filter(|h| h.key == SIGNATURE_HEADER).filter_map(|h| h.value).collect();
            assert_eq!(signatures.len(), 1, "exactly one signature on {topic}");
            assert!(key.verify(m.payload().unwrap_or_default(), signatures[0]), "valid on {topic}");
            if m.key() == Some(b"sig:4") {
                let trace = headers.iter().find(|h| h.key == "original.trace").and_then(|h| h.value);
                assert_eq!(trace, Some(&b"t-9"[..]), "other headers are kept");
            }
            if m.key() == Some(b"sig:3") {
                let reason = headers.iter().find(|h| h.key == "reason").and_then(|h| h.value);
                assert_eq!(reason, Some(&b"malformed"[..]));
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 5);
    shut_down(producer);
}
