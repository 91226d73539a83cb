//! Every builder's task, published to Kafka and applied by the consumer, changes Redis exactly
//! as the command itself would: the consumer's database ends equal to a reference database
//! where the same commands were run by hand.

mod support;

use std::time::Duration;

use redis_retry::{RedisCmd, RedisTask};
use support::stack::{snapshot, wait_until, Stack};

async fn seed(conn: &mut redis::aio::MultiplexedConnection) {
    redis::pipe()
        .cmd("SET")
        .arg("user:info:1")
        .arg("cached")
        .cmd("HSET")
        .arg("user:3")
        .arg("cache")
        .arg("1")
        .arg("temp")
        .arg("2")
        .arg("keep")
        .arg("3")
        .cmd("SADD")
        .arg("friends:2")
        .arg("user2")
        .arg("user4")
        .cmd("SET")
        .arg("user:info:9")
        .arg("old")
        .exec_async(conn)
        .await
        .expect("seed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_builder_applies_exactly_as_the_command_would() {
    let mut stack = Stack::start().await;
    let port = stack.redis.port();
    let mut target = redis::Client::open(format!("redis://127.0.0.1:{port}/0"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut reference = redis::Client::open(format!("redis://127.0.0.1:{port}/1"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    seed(&mut target).await;
    seed(&mut reference).await;

    let binary: Vec<u8> = vec![0, 159, 146, 150, 255, b'\n'];
    let lua = "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('EXPIRE', KEYS[1], ARGV[2])";
    let tasks = vec![
        RedisTask::del("user:info:1").unwrap(),
        RedisTask::set("device:token:d1", "abc", Duration::from_secs(300)).unwrap(),
        RedisTask::set("short", "x", Duration::from_millis(90_500)).unwrap(),
        RedisTask::set("binary", binary.clone(), Duration::ZERO).unwrap(),
        RedisTask::hset("user:2", "name", "Alice").unwrap(),
        RedisTask::hdel("user:3", ["cache", "temp"]).unwrap(),
        RedisTask::sadd("friends:1", ["user2", "user3"]).unwrap(),
        RedisTask::srem("friends:2", ["user2"]).unwrap(),
        RedisTask::pipeline(vec![
            RedisCmd::new("del", ["user:info:9"]),
            RedisCmd::new("hset", ["user:9", "name", "Bob"]),
            RedisCmd::new("sadd", ["s:9", "a"]),
        ])
        .unwrap(),
        RedisTask::lua(lua, ["lua:1"], ["v", "100"]).unwrap(),
    ];
    redis::pipe()
        .cmd("DEL")
        .arg("user:info:1")
        .cmd("SET")
        .arg("device:token:d1")
        .arg("abc")
        .arg("EX")
        .arg(300)
        .cmd("SET")
        .arg("short")
        .arg("x")
        .arg("PX")
        .arg(90_500)
        .cmd("SET")
        .arg("binary")
        .arg(&binary)
        .cmd("HSET")
        .arg("user:2")
        .arg("name")
        .arg("Alice")
        .cmd("HDEL")
        .arg("user:3")
        .arg("cache")
        .arg("temp")
        .cmd("SADD")
        .arg("friends:1")
        .arg("user2")
        .arg("user3")
        .cmd("SREM")
        .arg("friends:2")
        .arg("user2")
        .cmd("DEL")
        .arg("user:info:9")
        .cmd("HSET")
        .arg("user:9")
        .arg("name")
        .arg("Bob")
        .cmd("SADD")
        .arg("s:9")
        .arg("a")
        .cmd("EVAL")
        .arg(lua)
        .arg(1)
        .arg("lua:1")
        .arg("v")
        .arg(100)
        .exec_async(&mut reference)
        .await
        .unwrap();
    let expected = snapshot(&mut reference).await;
    assert_ne!(snapshot(&mut target).await, expected, "the test must start from a different state");

    for task in &tasks {
        stack.producer.publish_and_wait(&task.clone().with_source("BuilderTest")).await.expect("published");
    }
    let config = stack.consumer_config().allow_lua(true);
    stack.spawn_consumer(config, &format!("redis://127.0.0.1:{port}/0")).await;
    wait_until("the consumer to apply every task", Duration::from_secs(60), || {
        let mut conn = target.clone();
        let expected = expected.clone();
        async move { snapshot(&mut conn).await == expected }
    })
    .await;
    let ttl: i64 = redis::cmd("TTL").arg("device:token:d1").query_async(&mut target).await.unwrap();
    assert!((290..=300).contains(&ttl), "SET with TTL keeps its TTL, got {ttl}");
    let raw: Vec<u8> = redis::cmd("GET").arg("binary").query_async(&mut target).await.unwrap();
    assert_eq!(raw, binary, "binary value survives byte for byte");
    stack.stop_consumer().await.expect("clean stop");
}

/// What goes on the wire says what the task means to any consumer, the seed's Go one included
/// (it ignores `mode`): an invalidation travels as the `DEL` it stands for, and a task in log
/// mode never travels at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_travels_as_its_del_and_a_log_mode_task_is_never_published() {
    use redis_retry::{Mode, PublishError, TaskKind};

    let stack = Stack::start().await;
    let set = RedisTask::set("user:info:7", "stale-value", Duration::from_secs(60)).unwrap();
    let invalidate = set.clone().with_mode(Mode::Invalidate);
    stack.producer.publish_and_wait(&invalidate).await.expect("published");
    let pipeline = RedisTask::pipeline(vec![
        RedisCmd::new("hset", ["user:8", "name", "stale-value"]),
        RedisCmd::new("sadd", ["friends:8", "user9"]),
    ])
    .unwrap()
    .with_mode(Mode::Invalidate);
    stack.producer.publish(&pipeline).expect("queued");

    let log_only = set.clone().with_mode(Mode::Log);
    assert!(matches!(stack.producer.publish_and_wait(&log_only).await, Err(PublishError::LogMode)));
    assert!(matches!(stack.producer.publish(&log_only), Err(PublishError::LogMode)));
    stack.producer.flush(Duration::from_secs(10)).unwrap();

    let tasks = stack.tasks(3, Duration::from_secs(10)).await;
    assert_eq!(tasks.len(), 2, "the log-mode task never reached the topic: {tasks:?}");
    // Two keys may sit on two partitions: find each task by its shape, not its place.
    let single = tasks.iter().find(|t| t.kind == TaskKind::Simple).expect("the SET's invalidation");
    let pipeline = tasks.iter().find(|t| t.kind == TaskKind::Pipeline).expect("the pipeline's");
    assert_eq!((single.kind, single.command.as_str()), (TaskKind::Simple, "del"));
    assert_eq!(single.first_key(), Some(&b"user:info:7"[..]));
    assert_eq!(single.id, invalidate.id, "the same task, as the DEL it stands for");
    let dels: Vec<(&str, Vec<u8>)> =
        pipeline.pipeline_cmds.iter().map(|c| (c.command.as_str(), c.args[0].as_bytes().to_vec())).collect();
    assert_eq!(dels, [("del", b"user:8".to_vec()), ("del", b"friends:8".to_vec())]);
    for task in &tasks {
        assert!(!String::from_utf8_lossy(&task.to_json()).contains("stale-value"), "no value travels");
    }
}
