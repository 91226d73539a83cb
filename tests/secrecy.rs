//! Values never appear in logs or in DLQ listings: every line the library and the binary print
//! while capturing, retrying, dead-lettering and listing is searched for the values written.

mod support;

use std::time::Duration;

use redis::AsyncCommands;
use redis_retry::scope::{self, ScopeMeta};
use redis_retry::{Mode, RedisTask, RetryConnection};
use support::binary::{run, stack_env, Consumer};
use support::logs::Captured;
use support::stack::{refuse_writes, wait_until, Stack};
use support::Proxy;

const SECRET: &str = "s3cr3t-value-7f1c";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_never_appear_in_logs_or_dlq_listings() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_env_filter("trace")
        .with_writer(move || writer.clone())
        .try_init()
        .expect("this test binary owns its global subscriber");

    let mut stack = Stack::start().await;
    let proxy = Proxy::start(stack.redis.addr());
    let manager = redis::Client::open(proxy.url()).unwrap().get_connection_manager().await.unwrap();
    let mut conn = RetryConnection::new(manager).with_producer(stack.producer.clone());
    let mut admin = stack.conn().await;
    let _: () = admin.set("a-string", "x").await.unwrap();

    // Captured writes of every shape, and a read-path backfill that is only logged.
    proxy.cut();
    let _: redis::RedisResult<()> = scope::capture(ScopeMeta::new("Secret.replay"), async {
        let _: redis::RedisResult<()> = conn.set("k1", SECRET).await;
        let _: redis::RedisResult<()> = conn.hset("h", "field", SECRET).await;
        redis::pipe().sadd("s", SECRET).set("k2", SECRET).exec_async(&mut conn).await
    })
    .await;
    let _: redis::RedisResult<()> = scope::capture(ScopeMeta::new("Secret.log").mode(Mode::Log), async {
        conn.set("cache", SECRET).await
    })
    .await;
    let _: redis::RedisResult<()> =
        scope::capture(ScopeMeta::new("Secret.invalidate").mode(Mode::Invalidate), async {
            conn.set("inv", SECRET).await
        })
        .await;
    proxy.restore();
    let config = stack.consumer_config();
    // The binary below continues where this consumer stops.
    let group = config.group.clone();
    stack.spawn_consumer(config, &stack.redis.url()).await;
    wait_until("the captured writes", Duration::from_secs(30), || {
        let mut c = admin.clone();
        async move { c.hget::<_, _, Option<String>>("h", "field").await.ok().flatten().as_deref() == Some(SECRET) }
    })
    .await;
    // Tasks that fail in the consumer: again and again (NOREPLICAS), then for good (WRONGTYPE).
    refuse_writes(&mut admin, true).await;
    let stuck = RedisTask::set("stuck", SECRET, Duration::ZERO).unwrap().with_max_retries(1).unwrap();
    stack.producer.publish_and_wait(&stuck).await.unwrap();
    let dlq_topic = format!("{}.dlq", stack.topic);
    assert_eq!(
        stack.kafka.read_messages(&dlq_topic, 1, Duration::from_secs(30)).await.len(),
        1,
        "dead-lettered"
    );
    refuse_writes(&mut admin, false).await;
    stack.producer.publish_and_wait(&RedisTask::sadd("a-string", [SECRET]).unwrap()).await.unwrap();
    assert_eq!(
        stack.kafka.read_messages(&dlq_topic, 2, Duration::from_secs(30)).await.len(),
        2,
        "dead-lettered"
    );
    stack.stop_consumer().await.unwrap();

    // The binary, at its most talkative, applying a task and listing the dead letters.
    stack.producer.publish_and_wait(&RedisTask::set("bin", SECRET, Duration::ZERO).unwrap()).await.unwrap();
    let consumer = Consumer::start(&stack, &group, &["--log-level", "trace", "--log-format", "json"]);
    wait_until("the binary's task", Duration::from_secs(30), || {
        let mut c = admin.clone();
        async move { c.get::<_, Option<String>>("bin").await.ok().flatten().is_some() }
    })
    .await;
    let binary_log = consumer.log();
    drop(consumer);
    let env = stack_env(&stack, &group);
    let table = run(&["dlq", "list"], &env, b"");
    let json = run(&["dlq", "list", "--json"], &env, b"");

    let everything = [
        logs.text(),
        binary_log,
        String::from_utf8_lossy(&table.stdout).into_owned(),
        String::from_utf8_lossy(&table.stderr).into_owned(),
        String::from_utf8_lossy(&json.stdout).into_owned(),
    ];
    let total: usize = everything.iter().map(String::len).sum();
    assert!(everything[0].contains("sending it to the retry queue"), "the capture was logged");
    assert!(everything[2].contains("2 dead letter(s)"), "{}", everything[2]);
    for (i, text) in everything.iter().enumerate() {
        let leaks: Vec<&str> = text.lines().filter(|l| l.contains(SECRET)).collect();
        assert!(leaks.is_empty(), "output {i} shows a value:\n{}", leaks.join("\n"));
    }
    println!("searched {total} bytes of logs and listings: no value found");
}
