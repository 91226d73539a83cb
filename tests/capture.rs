//! `RetryConnection` against a real Redis behind a proxy that cuts it off: failed writes in a
//! scope reach Kafka as tasks and are applied once Redis is back; reads and permanent errors
//! are never captured.

mod support;

use std::time::Duration;

use redis::AsyncCommands;
use redis_retry::scope::{self, ScopeMeta};
use redis_retry::{Mode, RetryConnection, Script, TaskContext, TaskKind};
use support::stack::{manager_through, refuse_writes, wait_until, Stack};
use support::Proxy;

type Conn = RetryConnection<redis::aio::ConnectionManager>;

/// A retrying connection to Redis through `proxy`, publishing on the stack's producer.
async fn connect(stack: &Stack, proxy: &Proxy) -> Conn {
    RetryConnection::new(manager_through(proxy, Duration::from_millis(500)).await)
        .with_producer(stack.producer.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_set_in_scope_is_published_at_once_and_applied_after_redis_returns() {
    let mut stack = Stack::start().await;
    let proxy = Proxy::start(stack.redis.addr());
    let mut conn = connect(&stack, &proxy).await;
    proxy.cut();

    let meta = ScopeMeta::new("DeviceRepository.SaveToken")
        .max_retries(5)
        .unwrap()
        .context(TaskContext::new().trace_id("trace-1").user_uuid("user-1").device_id("dev-1"));
    let result: redis::RedisResult<()> =
        scope::capture(meta, async { conn.set_ex("device:token:d1", "tok-1", 300).await }).await;
    assert!(result.is_err(), "the write fails while Redis is cut off");

    let tasks = stack.tasks(2, Duration::from_secs(5)).await;
    assert_eq!(tasks.len(), 1, "exactly one task: {tasks:?}");
    let task = &tasks[0];
    assert_eq!(task.kind, TaskKind::Simple);
    assert_eq!(task.command.to_ascii_uppercase(), "SETEX");
    assert_eq!(task.first_key(), Some(&b"device:token:d1"[..]));
    assert_eq!(task.source, "DeviceRepository.SaveToken");
    assert_eq!(task.max_retries, 5);
    assert_eq!(
        (task.trace_id.as_str(), task.user_uuid.as_str(), task.device_id.as_str()),
        ("trace-1", "user-1", "dev-1")
    );
    assert_eq!(task.mode, Mode::Replay);
    assert!(!task.original_err.is_empty());

    proxy.restore();
    let config = stack.consumer_config();
    stack.spawn_consumer(config, &stack.redis.url()).await;
    let mut direct = stack.conn().await;
    wait_until("the task to be applied", Duration::from_secs(30), || {
        let mut c = direct.clone();
        async move {
            c.get::<_, Option<String>>("device:token:d1").await.ok().flatten().as_deref() == Some("tok-1")
        }
    })
    .await;
    let ttl: i64 = direct.ttl("device:token:d1").await.unwrap();
    assert!(ttl > 250, "TTL kept: {ttl}");
    stack.stop_consumer().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_permanent_errors_and_writes_outside_a_scope_are_never_captured() {
    let stack = Stack::start().await;
    let proxy = Proxy::start(stack.redis.addr());
    let mut conn = connect(&stack, &proxy).await;

    // A permanent error: WRONGTYPE comes back to the caller and is not queued.
    let _: () = conn.set("plain", "v").await.unwrap();
    let wrongtype: redis::RedisResult<()> =
        scope::capture(ScopeMeta::new("Repo.wrongtype"), async { conn.hset("plain", "f", "v").await }).await;
    assert_eq!(wrongtype.unwrap_err().code(), Some("WRONGTYPE"));

    proxy.cut();
    let read: redis::RedisResult<Option<String>> =
        scope::capture(ScopeMeta::new("Repo.read"), async { conn.get("plain").await }).await;
    assert!(read.is_err(), "the read fails while Redis is cut off");
    let exists: redis::RedisResult<bool> =
        scope::capture(ScopeMeta::new("Repo.read"), async { conn.exists("plain").await }).await;
    assert!(exists.is_err());
    // Outside any scope the wrapper is transparent.
    let outside: redis::RedisResult<()> = conn.del("plain").await;
    assert!(outside.is_err());

    let tasks = stack.tasks(1, Duration::from_secs(3)).await;
    assert!(tasks.is_empty(), "nothing may be captured, got {tasks:?}");

    // ... unless the connection was built to capture every failed write.
    let mut all = conn.clone().capture_all("Repo.default");
    let failed: redis::RedisResult<()> = all.del("plain").await;
    assert!(failed.is_err());
    let tasks = stack.tasks(1, Duration::from_secs(5)).await;
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].source, "Repo.default");
    assert_eq!(tasks[0].command.to_ascii_uppercase(), "DEL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_become_one_task_holding_only_their_writes() {
    let stack = Stack::start().await;
    let proxy = Proxy::start(stack.redis.addr());
    let mut conn = connect(&stack, &proxy).await;
    proxy.cut();

    let plain: redis::RedisResult<()> = scope::capture(ScopeMeta::new("Repo.pipe"), async {
        redis::pipe().set("a", "1").get("b").hset("h", "f", "v").query_async(&mut conn).await
    })
    .await;
    assert!(plain.is_err());
    let atomic: redis::RedisResult<()> = scope::capture(ScopeMeta::new("Repo.tx"), async {
        redis::pipe().atomic().del("x").sadd("s", "m").query_async(&mut conn).await
    })
    .await;
    assert!(atomic.is_err());

    let tasks = stack.tasks(3, Duration::from_secs(5)).await;
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    let pipe = tasks.iter().find(|t| t.source == "Repo.pipe").expect("pipeline task");
    assert_eq!(pipe.kind, TaskKind::Pipeline);
    let names: Vec<String> = pipe.pipeline_cmds.iter().map(|c| c.command.to_ascii_uppercase()).collect();
    assert_eq!(names, ["SET", "HSET"], "the GET is left out");
    assert!(!pipe.atomic);
    let tx = tasks.iter().find(|t| t.source == "Repo.tx").expect("transaction task");
    assert!(tx.atomic, "MULTI/EXEC stays atomic");
    assert_eq!(tx.pipeline_cmds.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_reply_saying_not_now_is_captured_per_command() {
    let mut stack = Stack::start().await;
    let proxy = Proxy::start(stack.redis.addr());
    let mut conn = connect(&stack, &proxy).await;
    let mut admin = stack.conn().await;
    // With no replica attached Redis answers every write with NOREPLICAS: reachable, not writable.
    refuse_writes(&mut admin, true).await;

    let result: redis::RedisResult<()> = scope::capture(ScopeMeta::new("Repo.noreplicas"), async {
        redis::pipe().set("k1", "v1").get("k2").query_async(&mut conn).await
    })
    .await;
    assert!(result.is_err());
    let tasks = stack.tasks(2, Duration::from_secs(5)).await;
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(tasks[0].kind, TaskKind::Simple);
    assert_eq!(tasks[0].command.to_ascii_uppercase(), "SET");
    assert!(tasks[0].original_err.contains("NOREPLICAS"), "{}", tasks[0].original_err);

    refuse_writes(&mut admin, false).await;
    let config = stack.consumer_config();
    stack.spawn_consumer(config, &stack.redis.url()).await;
    wait_until("k1 to be written", Duration::from_secs(30), || {
        let mut c = admin.clone();
        async move { c.get::<_, Option<String>>("k1").await.ok().flatten().as_deref() == Some("v1") }
    })
    .await;
    stack.stop_consumer().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_refused_at_exec_for_a_passing_reason_is_captured_whole_and_applied_once() {
    let mut stack = Stack::start().await;
    let proxy = Proxy::start(stack.redis.addr());
    let mut conn = connect(&stack, &proxy).await;
    let mut admin = stack.conn().await;
    // Redis refuses each queued write with NOREPLICAS, then EXEC with EXECABORT: nothing ran.
    refuse_writes(&mut admin, true).await;
    let result: redis::RedisResult<()> = scope::capture(ScopeMeta::new("Repo.tx_refused"), async {
        redis::pipe().atomic().set("tx:a", "1").incr("tx:n", 5).query_async(&mut conn).await
    })
    .await;
    let err = result.expect_err("EXEC is refused");
    assert_eq!(err.code(), Some("EXECABORT"), "{err}");
    // A transaction refused for a reason that never passes is not captured.
    refuse_writes(&mut admin, false).await;
    let syntax: redis::RedisResult<()> = scope::capture(ScopeMeta::new("Repo.tx_broken"), async {
        redis::pipe().atomic().set("tx:b", "1").cmd("SET").arg("tx:c").query_async(&mut conn).await
    })
    .await;
    assert!(syntax.is_err());

    let tasks = stack.tasks(2, Duration::from_secs(5)).await;
    assert_eq!(tasks.len(), 1, "only the refused transaction is queued: {tasks:?}");
    assert!(tasks[0].atomic && tasks[0].pipeline_cmds.len() == 2, "{tasks:?}");
    assert_eq!(tasks[0].source, "Repo.tx_refused");

    let config = stack.consumer_config();
    stack.spawn_consumer(config, &stack.redis.url()).await;
    wait_until("the transaction to be applied", Duration::from_secs(30), || {
        let mut c = admin.clone();
        async move { c.get::<_, Option<i64>>("tx:n").await.ok().flatten() == Some(5) }
    })
    .await;
    assert_eq!(admin.get::<_, Option<String>>("tx:a").await.unwrap().as_deref(), Some("1"));
    assert_eq!(
        admin.get::<_, Option<String>>("tx:b").await.unwrap(),
        None,
        "the broken transaction ran nothing"
    );
    stack.stop_consumer().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_script_is_captured_with_its_body_and_replayed() {
    let mut stack = Stack::start().await;
    let proxy = Proxy::start(stack.redis.addr());
    let mut conn = connect(&stack, &proxy).await;
    let body = "return redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])";
    let script = Script::new(body);
    proxy.cut();
    let result: redis::RedisResult<i64> = scope::capture(ScopeMeta::new("Repo.lua"), async {
        script.key("lua:h").arg("field").arg("value").invoke_async(&mut conn).await
    })
    .await;
    assert!(result.is_err());
    let tasks = stack.tasks(2, Duration::from_secs(5)).await;
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(tasks[0].kind, TaskKind::Lua);
    assert_eq!(tasks[0].lua_script, body);
    assert_eq!(tasks[0].lua_keys.len(), 1);
    assert_eq!(tasks[0].lua_args.len(), 2);

    proxy.restore();
    let config = stack.consumer_config().allow_lua(true);
    stack.spawn_consumer(config, &stack.redis.url()).await;
    let direct = stack.conn().await;
    wait_until("the script to run", Duration::from_secs(30), || {
        let mut c = direct.clone();
        async move {
            c.hget::<_, _, Option<String>>("lua:h", "field").await.ok().flatten().as_deref() == Some("value")
        }
    })
    .await;
    stack.stop_consumer().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_mode_queues_a_delete_and_log_mode_queues_nothing() {
    let stack = Stack::start().await;
    let proxy = Proxy::start(stack.redis.addr());
    let mut conn = connect(&stack, &proxy).await;
    proxy.cut();
    let logged: redis::RedisResult<()> =
        scope::capture(ScopeMeta::new("Repo.backfill").mode(Mode::Log), async {
            conn.set("cache:1", "v").await
        })
        .await;
    assert!(logged.is_err());
    let invalidated: redis::RedisResult<()> =
        scope::capture(ScopeMeta::new("Repo.update").mode(Mode::Invalidate), async {
            redis::pipe().set("user:1", "v").hset("user:1:h", "f", "v").query_async(&mut conn).await
        })
        .await;
    assert!(invalidated.is_err());
    let tasks = stack.tasks(2, Duration::from_secs(5)).await;
    assert_eq!(tasks.len(), 1, "log mode queues nothing: {tasks:?}");
    let task = &tasks[0];
    assert_eq!(task.mode, Mode::Invalidate);
    assert_eq!(task.touched_keys(), vec![&b"user:1"[..], b"user:1:h"]);
    assert!(task.pipeline_cmds.iter().all(|c| c.command == "del"), "{task:?}");
    assert!(!String::from_utf8_lossy(&task.to_json()).contains("\"v\""), "an invalidation carries no value");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ambiguous_non_idempotent_write_is_dead_lettered_not_replayed() {
    let stack = Stack::start().await;
    let proxy = Proxy::start(stack.redis.addr());
    let mut conn = connect(&stack, &proxy).await;
    let _: () = conn.set("counter", 1).await.unwrap();
    // Blackholed: the INCR is sent and never answered, so it may or may not have run.
    proxy.set_mode(support::ProxyMode::Blackhole);
    let result: redis::RedisResult<i64> =
        scope::capture(ScopeMeta::new("Repo.incr"), async { conn.incr("counter", 1).await }).await;
    assert!(result.is_err());
    let dlq = stack.kafka.read_messages(&format!("{}.dlq", stack.topic), 1, Duration::from_secs(5)).await;
    assert_eq!(dlq.len(), 1);
    let reason = rdkafka::message::Headers::iter(rdkafka::Message::headers(&dlq[0]).expect("headers"))
        .find(|h| h.key == "reason")
        .and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned()));
    assert_eq!(reason.as_deref(), Some("ambiguous"));
    assert!(stack.tasks(1, Duration::from_secs(1)).await.is_empty(), "never on the main topic");
}
