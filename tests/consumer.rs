//! The consumer against real Redis and a real broker: retries through the tiers with growing
//! delays, dead letters with their reasons, and bad messages that never touch Redis.

mod support;

use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::message::{Message, OwnedMessage};
use redis::AsyncCommands;
use redis_retry::{RedisTask, RetryConnection};
use support::stack::{refuse_writes, wait_until, Stack};
use support::{header, Proxy};

fn task_of(msg: &OwnedMessage) -> RedisTask {
    RedisTask::from_json(msg.payload().unwrap_or_default()).expect("valid task")
}

/// How long after it was produced a tier message was due.
fn delay_of(msg: &OwnedMessage) -> Duration {
    let produced =
        DateTime::<Utc>::from_timestamp_millis(msg.timestamp().to_millis().expect("timestamp")).unwrap();
    let due = task_of(msg).not_before.expect("not_before on a tier message");
    (due - produced).to_std().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_keeps_failing_climbs_the_tiers_with_growing_delays_then_is_dead_lettered() {
    let mut stack = Stack::start().await;
    let mut admin = stack.conn().await;
    // Reachable but refusing writes (NOREPLICAS): a transient failure that spends retries.
    refuse_writes(&mut admin, true).await;
    let task = RedisTask::set("stuck", "v", Duration::ZERO)
        .unwrap()
        .with_source("RetryTest")
        .with_max_retries(3)
        .unwrap();
    stack.producer.publish_and_wait(&task).await.unwrap();
    let config = stack.consumer_config();
    stack.spawn_consumer(config, &stack.redis.url()).await;

    let dlq = stack.kafka.read_messages(&format!("{}.dlq", stack.topic), 1, Duration::from_secs(60)).await;
    assert_eq!(dlq.len(), 1, "dead-lettered after its retries");
    assert_eq!(header(&dlq[0], "reason").as_deref(), Some("max_retries"));
    assert!(header(&dlq[0], "error").unwrap_or_default().contains("NOREPLICAS"));
    let dead = task_of(&dlq[0]);
    assert_eq!((dead.retry_count, dead.max_retries), (3, 3));
    assert_eq!(dead.id, task.id, "the same task all the way");

    let mut delays = Vec::new();
    for tier in 1..=3 {
        let msgs = stack
            .kafka
            .read_messages(&format!("{}.retry.{tier}", stack.topic), 2, Duration::from_secs(3))
            .await;
        assert_eq!(msgs.len(), 1, "one message in tier {tier}");
        assert_eq!(task_of(&msgs[0]).retry_count, tier);
        delays.push(delay_of(&msgs[0]));
    }
    println!("retry delays: {delays:?}");
    assert!(delays[0] < delays[1] && delays[1] < delays[2], "delays grow: {delays:?}");
    assert!(delays[0] >= Duration::from_millis(200), "backoff, not an immediate retry: {delays:?}");
    assert_eq!(admin.get::<_, Option<String>>("stuck").await.unwrap(), None);
    stack.stop_consumer().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_forbidden_messages_are_dead_lettered_and_leave_redis_untouched() {
    let mut stack = Stack::start().await;
    let mut admin = stack.conn().await;
    let _: () = admin.set("keep", "1").await.unwrap();
    let topic = stack.topic.clone();
    let bad: Vec<(&[u8], &str)> = vec![
        (b"{not json", "malformed"),
        (br#"{"type":"simple","command":"flushall","args":[]}"#, "forbidden"),
        (br#"{"type":"simple","command":"get","args":["keep"]}"#, "forbidden"),
        (br#"{"type":"simple","command":"frobnicate","args":["keep"]}"#, "unknown_command"),
        (br#"{"type":"pipeline","pipeline_cmds":[]}"#, "malformed"),
        (br#"{"type":"lua","lua_script":"redis.call('FLUSHALL')","lua_keys":[],"lua_args":[]}"#, "forbidden"),
    ];
    for (payload, _) in &bad {
        stack.kafka.produce(&topic, Some(b"k"), payload).await;
    }
    let good = RedisTask::set("good", "yes", Duration::ZERO).unwrap();
    stack.producer.publish_and_wait(&good).await.unwrap();
    let config = stack.consumer_config().max_task_bytes(4096);
    stack.spawn_consumer(config, &stack.redis.url()).await;
    stack.kafka.produce(&topic, None, &vec![b' '; 5000]).await;

    wait_until("the good task behind the bad ones", Duration::from_secs(30), || {
        let mut c = admin.clone();
        async move { c.get::<_, Option<String>>("good").await.ok().flatten().as_deref() == Some("yes") }
    })
    .await;
    let dlq =
        stack.kafka.read_messages(&format!("{topic}.dlq"), bad.len() + 1, Duration::from_secs(20)).await;
    let reasons: Vec<String> = dlq.iter().map(|m| header(m, "reason").unwrap_or_default()).collect();
    let mut expected: Vec<String> = bad.iter().map(|(_, r)| r.to_string()).collect();
    expected.push("oversize".into());
    assert_eq!(reasons, expected);
    assert_eq!(dlq[0].payload(), Some(&b"{not json"[..]), "the bad payload is kept as it was");
    let keys: Vec<String> = admin.keys("*").await.unwrap();
    let mut keys = keys;
    keys.sort();
    assert_eq!(keys, ["good", "keep"], "nothing else touched Redis");
    stack.stop_consumer().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_failure_and_an_expired_task_go_to_the_dlq_at_once() {
    let mut stack = Stack::start().await;
    let mut admin = stack.conn().await;
    let _: () = admin.set("str", "x").await.unwrap();
    let wrongtype = RedisTask::sadd("str", ["m"]).unwrap();
    let mut old = RedisTask::set("old", "stale", Duration::ZERO).unwrap();
    old.captured_at = Utc::now() - chrono::Duration::hours(2);
    stack.producer.publish_and_wait(&wrongtype).await.unwrap();
    stack.producer.publish_and_wait(&old).await.unwrap();
    let config = stack.consumer_config().max_age(Duration::from_secs(3600));
    stack.spawn_consumer(config, &stack.redis.url()).await;
    let dlq = stack.kafka.read_messages(&format!("{}.dlq", stack.topic), 2, Duration::from_secs(20)).await;
    let reasons: Vec<String> = dlq.iter().map(|m| header(m, "reason").unwrap_or_default()).collect();
    assert_eq!(reasons, ["permanent_error", "expired"]);
    assert!(header(&dlq[0], "error").unwrap_or_default().contains("WRONGTYPE"));
    for tier in 1..=3 {
        let retried = stack
            .kafka
            .read_messages(&format!("{}.retry.{tier}", stack.topic), 1, Duration::from_millis(500))
            .await;
        assert!(retried.is_empty(), "a permanent failure is never retried");
    }
    assert_eq!(admin.get::<_, Option<String>>("old").await.unwrap(), None, "a stale task is not replayed");
    stack.stop_consumer().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_down_the_consumer_waits_instead_of_spending_retries() {
    let mut stack = Stack::start().await;
    let proxy = Proxy::start(stack.redis.addr());
    let config = stack.consumer_config();
    stack.spawn_consumer(config, &proxy.url()).await;
    proxy.cut();
    let task = RedisTask::set("patient", "v", Duration::ZERO).unwrap().with_max_retries(1).unwrap();
    stack.producer.publish_and_wait(&task).await.unwrap();
    // Longer than every retry delay put together: a consumer spending retries would have
    // dead-lettered the task by now.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let admin = stack.conn().await;
    assert_eq!(admin.clone().get::<_, Option<String>>("patient").await.unwrap(), None, "Redis was cut off");
    proxy.restore();
    wait_until("the task once Redis is back", Duration::from_secs(30), || {
        let mut c = admin.clone();
        async move { c.get::<_, Option<String>>("patient").await.ok().flatten().as_deref() == Some("v") }
    })
    .await;
    for topic in [format!("{}.dlq", stack.topic), format!("{}.retry.1", stack.topic)] {
        let msgs = stack.kafka.read_messages(&topic, 1, Duration::from_secs(1)).await;
        assert!(msgs.is_empty(), "nothing sent to {topic} during the outage");
    }
    stack.stop_consumer().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumers_own_failed_writes_are_never_captured_again() {
    let mut stack = Stack::start().await;
    let mut admin = stack.conn().await;
    refuse_writes(&mut admin, true).await;
    // Even handed a connection that captures every failed write, the consumer must not feed
    // its own failures back into the queue: that would be a retry loop.
    let manager = stack.redis.client().get_connection_manager().await.unwrap();
    let capturing = RetryConnection::new(manager).capture_all("loop").with_producer(stack.producer.clone());
    let task = RedisTask::set("loop", "v", Duration::ZERO).unwrap().with_max_retries(1).unwrap();
    stack.producer.publish_and_wait(&task).await.unwrap();
    let config = stack.consumer_config();
    stack.spawn_consumer_on(config, capturing);
    let dlq = stack.kafka.read_messages(&format!("{}.dlq", stack.topic), 1, Duration::from_secs(30)).await;
    assert_eq!(dlq.len(), 1, "the task ran its course");
    let main = stack.kafka.read_messages(&stack.topic, 2, Duration::from_secs(2)).await;
    assert_eq!(main.len(), 1, "only the original task is on the main topic");
    stack.stop_consumer().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_non_idempotent_task_is_applied_at_most_once() {
    let mut stack = Stack::start().await;
    let incr = RedisTask::command("incrby", ["visits", "5"]).unwrap();
    let push = RedisTask::command("rpush", ["events", "e1"]).unwrap();
    // Kafka redelivers a message after a crash between apply and commit: the same payload again.
    for task in [&incr, &incr, &push, &incr, &push] {
        stack.producer.publish_and_wait(task).await.unwrap();
    }
    // A different task with the same command is a different write and counts.
    let second = RedisTask::command("incrby", ["visits", "5"]).unwrap();
    assert_ne!(second.id, incr.id);
    stack.producer.publish_and_wait(&second).await.unwrap();
    // Seed tasks carry no id: two messages with the same bytes are two writes (a Go service
    // that failed the same LPUSH twice sent it twice). A redelivery of one message is
    // recognised by where it was read: tests/go_interop.rs rewinds a group to prove it.
    let seed = format!(
        r#"{{"type":"simple","command":"lpush","args":["seed-list","x"],"timestamp":"{}"}}"#,
        support::go_timestamp_now()
    );
    stack.kafka.produce(&stack.topic, Some(b"seed-list"), seed.as_bytes()).await;
    stack.kafka.produce(&stack.topic, Some(b"seed-list"), seed.as_bytes()).await;
    let marker = RedisTask::set("marker", "done", Duration::ZERO).unwrap();
    stack.producer.publish_and_wait(&marker).await.unwrap();

    let config = stack.consumer_config();
    stack.spawn_consumer(config, &stack.redis.url()).await;
    let admin = stack.conn().await;
    wait_until("every task", Duration::from_secs(30), || {
        let mut c = admin.clone();
        async move { c.get::<_, Option<String>>("marker").await.ok().flatten().is_some() }
    })
    .await;
    let mut admin = admin;
    assert_eq!(admin.get::<_, i64>("visits").await.unwrap(), 10, "two distinct INCRBY 5, each once");
    assert_eq!(admin.lrange::<_, Vec<String>>("events", 0, -1).await.unwrap(), ["e1"], "RPUSH once");
    assert_eq!(admin.llen::<_, i64>("seed-list").await.unwrap(), 2, "two seed LPUSH messages, each once");
    stack.stop_consumer().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_applied_in_batches_keeps_partition_order_and_settles_each_task_on_its_own() {
    let mut stack = Stack::start().await;
    let mut admin = stack.conn().await;
    let _: () = admin.set("str", "x").await.unwrap();
    let topic = stack.topic.clone();
    // Queued before the consumer starts, so that it reads them as a few large batches: ten
    // keys each overwritten many times (order matters), a counter (non-idempotent, guarded),
    // and two bad tasks in the middle that must leave the good ones around them untouched.
    const ROUNDS: usize = 60;
    for i in 0..ROUNDS {
        for k in 0..10 {
            stack
                .producer
                .publish(&RedisTask::set(format!("k{k}"), format!("v{i}"), Duration::ZERO).unwrap())
                .unwrap();
        }
        stack.producer.publish(&RedisTask::command("INCRBY", ["counter", "1"]).unwrap()).unwrap();
        if i == ROUNDS / 2 {
            stack.producer.publish(&RedisTask::sadd("str", ["m"]).unwrap()).unwrap();
            stack.kafka.produce(&topic, Some(b"k0"), b"{not json").await;
        }
    }
    stack.producer.flush(Duration::from_secs(30)).unwrap();
    stack.spawn_consumer(stack.consumer_config(), &stack.redis.url()).await;

    let dlq_topic = format!("{topic}.dlq");
    let dlq = stack.kafka.read_messages(&dlq_topic, 2, Duration::from_secs(30)).await;
    let mut reasons: Vec<String> = dlq.iter().map(|m| header(m, "reason").unwrap_or_default()).collect();
    reasons.sort();
    assert_eq!(reasons, ["malformed", "permanent_error"]);
    wait_until("the counter to reach its count", Duration::from_secs(30), || {
        let mut c = admin.clone();
        async move { c.get::<_, Option<usize>>("counter").await.ok().flatten() == Some(ROUNDS) }
    })
    .await;
    for k in 0..10 {
        let value: Option<String> = admin.get(format!("k{k}")).await.unwrap();
        assert_eq!(value, Some(format!("v{}", ROUNDS - 1)), "k{k} holds the last write of its partition");
    }
    assert_eq!(admin.get::<_, String>("str").await.unwrap(), "x", "the refused write changed nothing");
    let dlq = stack.kafka.read_messages(&dlq_topic, 3, Duration::from_secs(1)).await;
    assert_eq!(dlq.len(), 2, "only the two bad tasks are dead-lettered");
    stack.stop_consumer().await.unwrap();
    // Redelivered in full to a second consumer of the same group: nothing is applied twice.
    // The sentinel comes last on the one partition: once it is there, all was replayed.
    stack.producer.publish_and_wait(&RedisTask::set("sentinel", "1", Duration::ZERO).unwrap()).await.unwrap();
    let mut again = stack.consumer_config();
    again.group = format!("{}-again", again.group);
    stack.spawn_consumer(again, &stack.redis.url()).await;
    wait_until("the second consumer to reach the sentinel", Duration::from_secs(30), || {
        let mut c = admin.clone();
        async move { c.exists::<_, bool>("sentinel").await.unwrap_or(false) }
    })
    .await;
    let dlq = stack.kafka.read_messages(&dlq_topic, 4, Duration::from_secs(30)).await;
    assert_eq!(dlq.len(), 4, "the second consumer dead-letters the same two");
    for k in 0..10 {
        let value: Option<String> = admin.get(format!("k{k}")).await.unwrap();
        assert_eq!(value, Some(format!("v{}", ROUNDS - 1)), "k{k} after the replay");
    }
    assert_eq!(admin.get::<_, Option<usize>>("counter").await.unwrap(), Some(ROUNDS), "INCRBY applied once");
    stack.stop_consumer().await.unwrap();
}
