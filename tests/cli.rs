//! The `redis-retry` binary: seed-format messages applied by `redis-retry consume`, a consumer
//! killed and restarted mid-stream losing nothing, graceful shutdown, and bad configuration.

mod support;

use std::time::Duration;

use redis::AsyncCommands;
use redis_retry::RedisTask;
use support::binary::{assert_config_error, Consumer};
use support::stack::{wait_until, Stack};
use support::{go_timestamp_now, unique};

/// Messages exactly as Go's encoding/json marshals the seed's RedisTask.
fn seed_messages() -> Vec<String> {
    let ts = go_timestamp_now();
    let meta = |trace: &str| {
        format!(
            r#""trace_id":"{trace}","user_uuid":"u-1","device_id":"d-1","timestamp":"{ts}","retry_count":0,"max_retries":3,"original_err":"dial tcp 127.0.0.1:6379: connect: connection refused","source":"UserRepository.Seed""#
        )
    };
    let simple = |cmd: &str, args: &str, trace: &str| {
        format!(
            r#"{{"type":"simple","command":"{cmd}","args":{args},"pipeline_cmds":null,"lua_script":"","lua_keys":null,"lua_args":null,{}}}"#,
            meta(trace)
        )
    };
    vec![
        simple("del", r#"["user:info:u-1"]"#, "t-del"),
        simple("set", r#"["device:token:d-1","tok",  "ex", 300]"#, "t-set"),
        simple("hset", r#"["user:u-1","name","Alice","age",42]"#, "t-hset"),
        simple("hdel", r#"["user:u-2","cache","temp"]"#, "t-hdel"),
        simple("sadd", r#"["friends:u-1","u-2","u-3"]"#, "t-sadd"),
        simple("srem", r#"["friends:u-9","u-2"]"#, "t-srem"),
        format!(
            r#"{{"type":"pipeline","command":"","args":null,"pipeline_cmds":[{{"command":"del","args":["user:info:u-7"]}},{{"command":"del","args":["user:relation:u-7"]}},{{"command":"del","args":["user:session:u-7"]}}],"lua_script":"","lua_keys":null,"lua_args":null,{}}}"#,
            meta("t-pipe")
        ),
        format!(
            r#"{{"type":"lua","command":"","args":null,"pipeline_cmds":null,"lua_script":"return redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])","lua_keys":["lua:u-1"],"lua_args":["from-lua",120],{}}}"#,
            meta("t-lua")
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_format_json_is_applied_by_redis_retry_consume() {
    let stack = Stack::start().await;
    let mut redis = stack.conn().await;
    redis::pipe()
        .set("user:info:u-1", "cached")
        .hset_multiple("user:u-2", &[("cache", "1"), ("temp", "2"), ("keep", "3")])
        .sadd("friends:u-9", &["u-2", "u-4"])
        .set("user:info:u-7", "x")
        .set("user:relation:u-7", "x")
        .set("user:session:u-7", "x")
        .exec_async(&mut redis)
        .await
        .unwrap();
    for msg in seed_messages() {
        stack.kafka.produce(&stack.topic, None, msg.as_bytes()).await;
    }
    let mut consumer = Consumer::start(&stack, &unique("group"), &["--allow-lua", "--log-format", "json"]);
    wait_until("the seed's tasks to be applied", Duration::from_secs(60), || {
        let mut c = redis.clone();
        async move { c.exists::<_, bool>("lua:u-1").await.unwrap_or(false) }
    })
    .await;

    assert!(!redis.exists::<_, bool>("user:info:u-1").await.unwrap(), "DEL");
    assert_eq!(redis.get::<_, String>("device:token:d-1").await.unwrap(), "tok", "SET");
    let ttl: i64 = redis.ttl("device:token:d-1").await.unwrap();
    assert!((200..=300).contains(&ttl), "SET ... EX 300 keeps its TTL: {ttl}");
    let user: Vec<(String, String)> = redis.hgetall("user:u-1").await.unwrap();
    assert_eq!(user.len(), 2, "HSET with a numeric value: {user:?}");
    assert_eq!(redis.hget::<_, _, String>("user:u-1", "age").await.unwrap(), "42");
    let left: Vec<String> = redis.hkeys("user:u-2").await.unwrap();
    assert_eq!(left, ["keep"], "HDEL");
    let mut friends: Vec<String> = redis.smembers("friends:u-1").await.unwrap();
    friends.sort();
    assert_eq!(friends, ["u-2", "u-3"], "SADD");
    let rest: Vec<String> = redis.smembers("friends:u-9").await.unwrap();
    assert_eq!(rest, ["u-4"], "SREM");
    for key in ["user:info:u-7", "user:relation:u-7", "user:session:u-7"] {
        assert!(!redis.exists::<_, bool>(key).await.unwrap(), "pipeline DEL {key}");
    }
    assert_eq!(redis.get::<_, String>("lua:u-1").await.unwrap(), "from-lua", "Lua");
    assert!(redis.ttl::<_, i64>("lua:u-1").await.unwrap() > 0);

    consumer.signal(libc::SIGTERM);
    let status = consumer.wait(Duration::from_secs(30));
    assert!(status.success(), "graceful shutdown exits 0, got {status}; log:\n{}", consumer.log());
    let log = consumer.log();
    assert!(log.lines().any(|l| l.contains("\"redis retry consumer starting\"")), "JSON logs:\n{log}");
    assert!(!log.contains("from-lua") && !log.contains("\"tok\""), "values never appear in logs:\n{log}");
}

/// A killed member holds its partitions until its session times out; keep that short so
/// the restarted consumer gets them back quickly.
const FAST_REJOIN: &[&str] = &["-X", "session.timeout.ms=6000", "-X", "heartbeat.interval.ms=500"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_killed_and_restarted_mid_stream_loses_no_task() {
    const TASKS: usize = 3000;
    let stack = Stack::start().await;
    for i in 0..TASKS {
        let task = RedisTask::sadd(format!("members:{}", i % 10), [format!("m-{i}")]).unwrap();
        stack.producer.publish(&task).unwrap();
    }
    stack.producer.flush(Duration::from_secs(30)).unwrap();
    let redis = stack.conn().await;
    let count = |redis: redis::aio::MultiplexedConnection| async move {
        let mut c = redis;
        let mut total = 0usize;
        for k in 0..10 {
            total += c.scard::<_, usize>(format!("members:{k}")).await.unwrap_or(0);
        }
        total
    };
    let group = unique("group");
    let mut kills = 0;
    while kills < 3 {
        let mut consumer = Consumer::start(&stack, &group, FAST_REJOIN);
        let before = count(redis.clone()).await;
        wait_until("some progress before the kill", Duration::from_secs(60), || {
            let r = redis.clone();
            async move {
                let n = count(r).await;
                n > before + 50 || n == TASKS
            }
        })
        .await;
        consumer.signal(libc::SIGKILL);
        consumer.wait(Duration::from_secs(10));
        kills += 1;
        println!("kill {kills}: {} of {TASKS} applied", count(redis.clone()).await);
        if count(redis.clone()).await == TASKS {
            break;
        }
    }
    assert!(kills >= 1, "the consumer was killed at least once mid-stream");
    let _last = Consumer::start(&stack, &group, FAST_REJOIN);
    wait_until("every task after the restarts", Duration::from_secs(120), || {
        let r = redis.clone();
        async move { count(r).await == TASKS }
    })
    .await;
    let dlq = stack.kafka.read_messages(&format!("{}.dlq", stack.topic), 1, Duration::from_secs(1)).await;
    assert!(dlq.is_empty(), "nothing dead-lettered");
}

#[test]
fn bad_configuration_is_a_clear_error_with_exit_code_2() {
    let cases: &[(&[&str], &str)] = &[
        (&["consume", "--redis-url", "nosuch://x"], "redis_url"),
        (&["consume", "--topic", "bad topic"], "topic"),
        (&["consume", "--retry-base-delay", "soon"], "--retry-base-delay"),
        (&["consume", "--retry-tiers", "0"], "retry_tiers"),
        (&["consume", "--kafka-property", "novalue"], "--kafka-property"),
        (&["consume", "--log-level", "[[["], "log_level"),
        (&["consume", "--brokers", ""], "brokers"),
        (&["consume", "--max-batch", "0"], "max_batch"),
    ];
    for (args, names) in cases {
        assert_config_error(args, &[], names);
    }
}
