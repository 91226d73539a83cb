//! The production connection (`RetryConnection::builder`) against a real Redis behind a proxy
//! that refuses or blackholes: every call returns an error, and the write is captured as the
//! deadline says: an idempotent write is queued, a non-idempotent one that may have run is
//! dead-lettered as `ambiguous`. How long a call takes is the benchmark's business
//! (`examples/bench_latency.rs`), not a test's.

mod support;

use std::time::Duration;

use rdkafka::message::Message;
use redis::AsyncCommands;
use redis_retry::scope::{self, ScopeMeta};
use redis_retry::RetryConnection;
use support::stack::Stack;
use support::{Proxy, ProxyMode};

const DEADLINE: Duration = Duration::from_millis(300);

async fn production_connection(
    stack: &Stack,
    proxy: &Proxy,
) -> RetryConnection<redis::aio::ConnectionManager> {
    RetryConnection::builder(proxy.url().as_str())
        .deadline(DEADLINE)
        .producer(stack.producer.clone())
        .connect()
        .await
        .expect("Redis is up at start")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_write_times_out_at_the_deadline_and_is_queued() {
    let stack = Stack::start().await;
    let proxy = Proxy::start(stack.redis.addr());
    let mut conn = production_connection(&stack, &proxy).await;
    assert_eq!(conn.deadline(), Some(DEADLINE));
    let _: () = conn.set("warm", "1").await.expect("through the proxy");
    proxy.set_mode(ProxyMode::Blackhole);

    for i in 0..3 {
        let result: redis::RedisResult<()> =
            scope::capture(ScopeMeta::new("Deadline.blackhole"), conn.set_ex(format!("bh:{i}"), "v", 60))
                .await;
        let err = result.expect_err("nothing answers");
        assert!(err.is_timeout(), "a time-out error, got {err:?}");
    }
    let tasks = stack.tasks(3, Duration::from_secs(10)).await;
    let mut keys: Vec<_> = tasks.iter().filter_map(|t| t.first_key()).map(|k| k.to_vec()).collect();
    keys.sort();
    assert_eq!(keys, [b"bh:0".to_vec(), b"bh:1".to_vec(), b"bh:2".to_vec()], "each write queued once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_write_is_an_error_is_queued_and_the_connection_recovers() {
    let stack = Stack::start().await;
    let proxy = Proxy::start(stack.redis.addr());
    let mut conn = production_connection(&stack, &proxy).await;
    proxy.set_mode(ProxyMode::Refuse);
    proxy.reset_all();

    for i in 0..3 {
        let result: redis::RedisResult<()> =
            scope::capture(ScopeMeta::new("Deadline.refused"), conn.del(format!("refused:{i}"))).await;
        assert!(result.is_err(), "Redis is cut off");
    }
    let tasks = stack.tasks(3, Duration::from_secs(10)).await;
    assert_eq!(tasks.len(), 3, "each write queued once: {tasks:?}");

    // Redis comes back: the same connection works again without being rebuilt.
    proxy.set_mode(ProxyMode::Pass);
    let mut back = false;
    for _ in 0..50 {
        if conn.set::<_, _, ()>("back", "1").await.is_ok() {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back, "the connection reconnects once Redis is back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_idempotent_write_past_the_deadline_is_dead_lettered_as_ambiguous() {
    let stack = Stack::start().await;
    let proxy = Proxy::start(stack.redis.addr());
    let mut conn = production_connection(&stack, &proxy).await;
    let _: () = conn.set("warm", "1").await.expect("through the proxy");
    proxy.set_mode(ProxyMode::Blackhole);

    let meta = ScopeMeta::new("Deadline.incr");
    let result: redis::RedisResult<i64> = scope::capture(meta, conn.incr("visits", 1)).await;
    assert!(result.expect_err("nothing answers").is_timeout());

    let dlq = stack.kafka.read_messages(&format!("{}.dlq", stack.topic), 1, Duration::from_secs(10)).await;
    assert_eq!(dlq.len(), 1, "the INCR is dead-lettered, not queued for replay");
    assert_eq!(support::header(&dlq[0], "reason").as_deref(), Some("ambiguous"));
    assert!(stack.tasks(1, Duration::from_secs(2)).await.is_empty(), "nothing on the main topic");
    assert!(dlq[0].payload().is_some());
}
