//! Hostile and unlucky tasks, one class per test, against `redis-retry consume` with a real
//! redis-server and broker: each is settled (applied, or dead-lettered with its own reason),
//! the good task behind it is applied, and nothing wedges a partition or Redis.

mod support;

use std::time::Duration;

use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use redis::AsyncCommands;
use redis_retry::RedisTask;
use support::binary::{run, stack_env, Consumer};
use support::report::record;
use support::stack::{wait_until, Stack};
use support::unique;

fn header(msg: &OwnedMessage, key: &str) -> Option<String> {
    msg.headers()?
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned()))
}

/// A producer for messages up to 4 MB (librdkafka's default stops at 1,000,000 bytes).
fn large_producer(stack: &Stack) -> FutureProducer {
    stack.kafka.client_config().set("message.max.bytes", "4000000").create().expect("producer")
}

async fn send(producer: &FutureProducer, topic: &str, payload: &[u8]) {
    let record = FutureRecord::<[u8], [u8]>::to(topic).payload(payload).key(b"k".as_slice());
    producer.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| e).expect("produce");
}

fn dlq_topic(stack: &Stack) -> String {
    format!("{}.dlq", stack.topic)
}

/// Waits for `n` dead letters and returns them in order.
async fn dead_letters(stack: &Stack, n: usize, wait: Duration) -> Vec<OwnedMessage> {
    let found = stack.kafka.read_messages(&dlq_topic(stack), n, wait).await;
    assert_eq!(
        found.len(),
        n,
        "dead letters: {:?}",
        found.iter().map(|m| header(m, "reason")).collect::<Vec<_>>()
    );
    found
}

async fn wait_for_value(redis: &redis::aio::MultiplexedConnection, key: &str, value: &str, wait: Duration) {
    wait_until(&format!("{key} = {value}"), wait, || {
        let mut r = redis.clone();
        let (key, value) = (key.to_string(), value.to_string());
        async move { r.get::<_, Option<String>>(key).await.ok().flatten().as_deref() == Some(value.as_str()) }
    })
    .await;
}

/// The task as JSON with a good task's key and value, for the good task behind a hostile one.
fn good(key: &str) -> Vec<u8> {
    RedisTask::set(key, "applied", Duration::ZERO).unwrap().to_json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn class7_logs_cannot_be_forged_and_have_no_colour_off_a_terminal() {
    let stack = Stack::start().await;
    let mut redis = stack.conn().await;
    let group = unique("group");
    let forged_line = "2026-01-01T00:00:00.000000Z ERROR forged: all tasks applied";
    let key = format!("user:1\n{forged_line}\u{1b}[2J");
    let _: () = redis.set(&key, "a string").await.unwrap();
    let task = RedisTask::sadd(key.as_str(), ["m"])
        .unwrap()
        .with_source(format!("Repo.Save\n{forged_line}\u{1b}[31m\r"));
    let producer = large_producer(&stack);
    send(&producer, &stack.topic, &task.to_json()).await;
    let unknown = format!(r#"{{"type":"simple","command":"x\n{forged_line}\u001b[0m","args":["k"]}}"#);
    send(&producer, &stack.topic, unknown.as_bytes()).await;
    send(&producer, &stack.topic, &good("after-forgery")).await;
    let consumer = Consumer::start(&stack, &group, &[]);
    wait_for_value(&redis, "after-forgery", "applied", Duration::from_secs(60)).await;
    dead_letters(&stack, 2, Duration::from_secs(30)).await;
    let log = consumer.log();
    drop(consumer);
    assert!(!log.contains('\u{1b}'), "no escape byte, no colour, in a log that is not a terminal:\n{log:?}");
    assert!(!log.contains('\r'), "{log:?}");
    let forged: Vec<&str> = log.lines().filter(|l| l.starts_with("2026-01-01")).collect();
    assert!(forged.is_empty(), "a forged line: {forged:?}");
    assert!(log.contains("\\n2026-01-01") && log.contains("\\u{1b}[31m"), "escaped, still readable:\n{log}");
    let out = run(&["dlq", "list"], &stack_env(&stack, &group), b"");
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        !listing.contains('\u{1b}') && !listing.lines().any(|l| l.starts_with("2026-01-01")),
        "{listing}"
    );
    record(
        "Hostile class 7: logs without forgery",
        "`tests/hostile.rs`: a task whose source and key hold a newline, a forged log line and ANSI escapes, and \
         an unknown command name holding the same, with the log written to a file.",
        &[
            ("escape bytes in the log file", "0".to_string()),
            ("forged lines", "0 (newlines shown as \\n)".to_string()),
            ("escape bytes or forged lines in `dlq list`", "0".to_string()),
        ],
    );
}
