//! Hostile and unlucky tasks, one class per test, against `redis-retry consume` with a real
//! redis-server and broker: each is settled (applied, or dead-lettered with its own reason),
//! the good task behind it is applied, and nothing wedges a partition or Redis.

mod support;

use std::time::{Duration, Instant};

use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use redis::AsyncCommands;
use redis_retry::{RedisCmd, RedisTask};
use support::binary::{assert_config_error, run, stack_env, Consumer};
use support::report::record;
use support::slow::{calls, config_set, slow_sort, Probe};
use support::stack::{refuse_writes, wait_until, Stack};
use support::{header, unique};

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
async fn class1_a_dead_letter_always_fits_and_a_disagreeing_size_limit_is_refused_at_start() {
    let stack = Stack::start().await;
    let mut redis = stack.conn().await;
    let _: () = redis.set("a-string", "x").await.unwrap();
    let group = unique("group");

    // The limits must agree before anything runs.
    let mut env = stack_env(&stack, &group);
    env.push(("REDIS_RETRY_MAX_TASK_BYTES", "1048576".to_string()));
    let stderr = assert_config_error(&["consume", "-X", "message.max.bytes=1000000"], &env, "max_task_bytes");
    assert!(stderr.contains("message.max.bytes"), "{stderr}");

    // Between librdkafka's 1,000,000 bytes and max_task_bytes (1 MiB): a WRONGTYPE whose dead
    // letter is the whole task.
    let member = "m".repeat(1_000_100);
    let between = RedisTask::sadd("a-string", [member.as_str()]).unwrap().with_source("Big.Between");
    let between = between.to_json();
    assert!(between.len() > 1_000_000 && between.len() < 1_048_576, "{}", between.len());
    // Over max_task_bytes, and over what the consumer's producer sends: an envelope stands in.
    let oversize = [b"{\"type\":\"simple\",\"pad\":\"".as_slice(), &vec![b'x'; 1_500_000], b"\"}"].concat();

    let producer = large_producer(&stack);
    let started = Instant::now();
    let consumer = Consumer::start(&stack, &group, &[]);
    send(&producer, &stack.topic, &between).await;
    send(&producer, &stack.topic, &good("after-between")).await;
    send(&producer, &stack.topic, &oversize).await;
    send(&producer, &stack.topic, &good("after-oversize")).await;
    wait_for_value(&redis, "after-oversize", "applied", Duration::from_secs(60)).await;
    let settled = started.elapsed();
    assert_eq!(redis.get::<_, Option<String>>("after-between").await.unwrap().as_deref(), Some("applied"));

    let dlq = dead_letters(&stack, 2, Duration::from_secs(30)).await;
    assert_eq!(header(&dlq[0], "reason").as_deref(), Some("permanent_error"));
    let full = dlq[0].payload().unwrap_or_default();
    assert_eq!(full.len(), between.len(), "the whole task fits");
    assert!(RedisTask::from_json(full).is_ok());
    assert_eq!(header(&dlq[1], "reason").as_deref(), Some("oversize"));
    assert_eq!(header(&dlq[1], "payload").as_deref(), Some("envelope"));
    let envelope: serde_json::Value = serde_json::from_slice(dlq[1].payload().unwrap_or_default()).unwrap();
    assert_eq!(envelope["payload_bytes"], oversize.len());
    assert_eq!(envelope["reason"], "oversize");
    assert_eq!(envelope["payload_sha256"].as_str().map(str::len), Some(64));

    // A retry that grows past what a tier takes: JSON numbers come back as strings, so a task of
    // just under 1 MiB re-encodes to about 2 MB. Redis refuses it for now (NOREPLICAS), the
    // tier refuses the retry for good, and it is dead-lettered (as an envelope) instead.
    let mut grows = br#"{"type":"simple","command":"sadd","args":["grows""#.to_vec();
    while grows.len() < 1_040_000 {
        grows.extend_from_slice(b",1");
    }
    grows.extend_from_slice(b"]}");
    refuse_writes(&mut redis, true).await;
    send(&producer, &stack.topic, &grows).await;
    let dlq = dead_letters(&stack, 3, Duration::from_secs(30)).await;
    refuse_writes(&mut redis, false).await;
    assert_eq!(header(&dlq[2], "reason").as_deref(), Some("kafka_refused"), "{:?}", header(&dlq[2], "error"));
    assert_eq!(header(&dlq[2], "payload").as_deref(), Some("envelope"));
    let grown: serde_json::Value = serde_json::from_slice(dlq[2].payload().unwrap_or_default()).unwrap();
    let grown_bytes = grown["payload_bytes"].as_u64().unwrap_or_default();
    assert!(grown_bytes > 2_000_000, "{grown}");
    send(&producer, &stack.topic, &good("after-grown")).await;
    wait_for_value(&redis, "after-grown", "applied", Duration::from_secs(30)).await;
    // The listing reads what an envelope says; a replay keeps it, as it holds no task.
    let out = run(&["dlq", "list"], &stack_env(&stack, &unique("lister")), b"");
    let listing = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        listing.lines().any(|l| l.starts_with("kafka_refused") && l.contains("sadd [grows]")),
        "{listing}"
    );
    let replay = run(
        &["dlq", "replay", "--filter", "reason=kafka_refused"],
        &stack_env(&stack, &unique("lister")),
        b"",
    );
    let replay =
        format!("{}{}", String::from_utf8_lossy(&replay.stdout), String::from_utf8_lossy(&replay.stderr));
    assert!(replay.contains("replayed 0, kept 3"), "the envelope and the others are kept, whole: {replay}");

    let log = consumer.log();
    assert!(!log.contains("will try again"), "no publish was retried:\n{log}");
    record(
        "Hostile class 1: a dead letter always fits",
        "`tests/hostile.rs`: a task of just over 1,000,000 bytes that fails with WRONGTYPE, a 1.5 MB message over \
         `max_task_bytes`, and a task of 1,040,000 bytes that Redis refuses for now (NOREPLICAS) and whose retry \
         re-encodes to over 2 MB, each followed by a good task, on the default limits; and a `message.max.bytes` \
         that cannot carry `max_task_bytes`, refused at start.",
        &[
            ("task between 1,000,000 bytes and max_task_bytes", format!("{} bytes, dead-lettered whole", between.len())),
            ("oversize message", format!("{} bytes, dead-lettered as a {}-byte envelope", oversize.len(), dlq[1].payload().map_or(0, <[u8]>::len))),
            ("retry too large for its tier", format!("{} bytes re-encoded to {grown_bytes}, dead-lettered as kafka_refused in a {}-byte envelope", grows.len(), dlq[2].payload().map_or(0, <[u8]>::len))),
            ("first two settled and their good tasks applied", format!("{:.2} s after start", settled.as_secs_f64())),
            ("message.max.bytes=1000000 with max_task_bytes 1 MiB", "exit 2 at start".to_string()),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn class2_a_far_not_before_is_dead_lettered_and_the_main_topic_does_not_wait() {
    let stack = Stack::start().await;
    let redis = stack.conn().await;
    let group = unique("group");
    let tier = format!("{}.retry.1", stack.topic);
    let at = |from_now: chrono::Duration, key: &str| {
        let mut task = RedisTask::set(key, "applied", Duration::ZERO).unwrap();
        task.retry_count = 1;
        task.not_before = Some(chrono::Utc::now() + from_now);
        task.to_json()
    };
    let producer = large_producer(&stack);
    // A tier message ten days ahead, then one due in 8 s (a wait that is logged) behind it.
    send(&producer, &tier, &at(chrono::Duration::days(10), "far")).await;
    send(&producer, &tier, &at(chrono::Duration::seconds(8), "soon")).await;
    // The main topic's not_before is not the consumer's: applied at once.
    send(&producer, &stack.topic, &at(chrono::Duration::days(10), "main")).await;

    let started = Instant::now();
    let consumer = Consumer::start(&stack, &group, &[]);
    wait_for_value(&redis, "main", "applied", Duration::from_secs(30)).await;
    let main_after = started.elapsed();
    wait_for_value(&redis, "soon", "applied", Duration::from_secs(60)).await;
    let soon_after = started.elapsed();
    let dlq = dead_letters(&stack, 1, Duration::from_secs(30)).await;
    assert_eq!(header(&dlq[0], "reason").as_deref(), Some("bad_schedule"));
    assert_eq!(header(&dlq[0], "source_topic").as_deref(), Some(tier.as_str()));
    let mut r = redis.clone();
    assert_eq!(r.get::<_, Option<String>>("far").await.unwrap(), None, "never applied");
    assert!(main_after < Duration::from_secs(20), "the main topic waited {main_after:?}");
    let log = consumer.log();
    assert_eq!(log.matches("waiting for a retry to be due").count(), 1, "one line for the 8 s wait:\n{log}");
    record(
        "Hostile class 2: bounded schedules",
        "`tests/hostile.rs`: a retry-tier task due in ten days ahead of one due in 8 s, and a main-topic task \
         with a `not_before` ten days ahead.",
        &[
            ("tier task ten days ahead", "dead-lettered as bad_schedule".to_string()),
            ("tier task due in 8 s behind it", format!("applied {:.1} s after start, its wait logged once", soon_after.as_secs_f64())),
            ("main-topic task ten days ahead", format!("applied {:.2} s after start", main_after.as_secs_f64())),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn class3_a_slow_write_counts_against_its_retries_and_is_not_taken_for_an_outage() {
    let stack = Stack::start().await;
    let mut redis = stack.conn().await;
    let sort_time = slow_sort(&mut redis, 50_000, Duration::from_millis(300)).await;
    assert!(sort_time > Duration::from_millis(200), "SORT takes {sort_time:?}");
    let group = unique("group");
    let producer = large_producer(&stack);
    let probe = Probe::start(stack.conn().await, Duration::from_millis(20));
    let started = Instant::now();
    let consumer = Consumer::start(&stack, &group, &["--redis-response-timeout", "100ms"]);

    // Idempotent: each try times out, the retries are spent (tiers), then the dead-letter
    // topic as timed_out; SORT ran once per try and no more.
    let before = calls(&mut redis, "sort").await;
    let slow = RedisTask::command("SORT", ["big", "STORE", "sorted"]).unwrap().with_max_retries(2).unwrap();
    send(&producer, &stack.topic, &slow.to_json()).await;
    let dlq = dead_letters(&stack, 1, Duration::from_secs(60)).await;
    let slow_settled = started.elapsed();
    assert_eq!(header(&dlq[0], "reason").as_deref(), Some("timed_out"));
    let idempotent_sorts = calls(&mut redis, "sort").await - before;
    assert_eq!(idempotent_sorts, 1 + 2, "one SORT per try (1 + max_retries)");

    // Non-idempotent, guarded: the script that timed out did finish; the retry finds its guard
    // and does not run it again.
    let before = calls(&mut redis, "sort").await;
    let slow_pipeline = RedisTask::pipeline(vec![
        RedisCmd::new("SORT", ["big", "STORE", "sorted2"]),
        RedisCmd::new("INCR", ["slow-counter"]),
    ])
    .unwrap();
    send(&producer, &stack.topic, &slow_pipeline.to_json()).await;
    send(&producer, &stack.topic, &good("after-slow")).await;
    wait_for_value(&redis, "after-slow", "applied", Duration::from_secs(60)).await;
    wait_for_value(&redis, "slow-counter", "1", Duration::from_secs(60)).await;
    // Long enough for a tier's retry to have run if it were going to.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let guarded_sorts = calls(&mut redis, "sort").await - before;
    let settled = started.elapsed();
    let (worst_probe, _) = probe.stop().await;
    assert_eq!(guarded_sorts, 1, "the guarded pipeline ran once");
    assert_eq!(redis.get::<_, Option<i64>>("slow-counter").await.unwrap(), Some(1));
    assert_eq!(stack.kafka.read_messages(&dlq_topic(&stack), 2, Duration::from_secs(2)).await.len(), 1);
    let log = consumer.log();
    assert!(!log.contains("redis unreachable"), "a slow write is not an outage:\n{log}");
    record(
        "Hostile class 3: slow is not unreachable",
        "`tests/hostile.rs`: `SORT ... STORE` over a set large enough to outlast the consumer's response timeout \
         (100 ms), as an idempotent task with 2 retries, then inside a guarded (non-idempotent) pipeline ahead of \
         a good task.",
        &[
            ("one SORT ... STORE", format!("{:.0} ms", sort_time.as_secs_f64() * 1000.0)),
            ("SORT runs of the idempotent task", format!("{idempotent_sorts} (1 + 2 retries), then dead-lettered as timed_out after {:.1} s", slow_settled.as_secs_f64())),
            ("SORT runs of the guarded pipeline", format!("{guarded_sorts}; its retry found the guard, INCR applied once")),
            ("all settled after start", format!("{:.1} s", settled.as_secs_f64())),
            ("worst probe latency (PING every 20 ms)", format!("{:.0} ms", worst_probe.as_secs_f64() * 1000.0)),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn class4_a_script_past_its_budget_is_killed_and_dead_lettered() {
    assert_config_error(&["consume", "--script-timeout", "0s"], &[], "script_timeout");
    let stack = Stack::start().await;
    let mut redis = stack.conn().await;
    // Redis reads SCRIPT KILL only once a script has run this long (5 s by default).
    config_set(&mut redis, "busy-reply-threshold", "200").await;
    let group = unique("group");
    let endless = RedisTask::lua("while true do end", ["endless"], Vec::<String>::new()).unwrap();
    let producer = large_producer(&stack);
    send(&producer, &stack.topic, &endless.to_json()).await;
    send(&producer, &stack.topic, &good("after-script")).await;
    let started = Instant::now();
    let consumer = Consumer::start(&stack, &group, &["--allow-lua", "--script-timeout", "500ms"]);
    wait_for_value(&redis, "after-script", "applied", Duration::from_secs(60)).await;
    let settled = started.elapsed();
    let dlq = dead_letters(&stack, 1, Duration::from_secs(30)).await;
    assert_eq!(header(&dlq[0], "reason").as_deref(), Some("script_timeout"));
    let error = header(&dlq[0], "error").unwrap_or_default();
    assert!(error.contains("SCRIPT KILL stopped it"), "{error}");
    assert_eq!(calls(&mut redis, "eval").await, 1, "the script was sent once");
    let pong: String = redis::cmd("PING").query_async(&mut redis).await.expect("Redis answers, not BUSY");
    assert_eq!(pong, "PONG");
    drop(consumer);
    record(
        "Hostile class 4: a time budget for scripts",
        "`tests/hostile.rs`: a Lua task that never ends (`--allow-lua --script-timeout 500ms`, Redis's \
         busy-reply-threshold 200 ms) ahead of a good task.",
        &[
            (
                "endless script",
                "killed (SCRIPT KILL), dead-lettered as script_timeout, sent once".to_string(),
            ),
            ("good task behind it applied", format!("{:.2} s after start", settled.as_secs_f64())),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn class5_a_failed_guarded_write_is_replayed_exactly_once_and_large_variadics_apply() {
    let stack = Stack::start().await;
    let mut redis = stack.conn().await;
    let group = unique("group");
    let _: () = redis.rpush("counter", "a list, not a number").await.unwrap();
    let _: () = redis.set("pushed", "a string, not a list").await.unwrap();
    let incr = RedisTask::command("INCRBY", ["counter", "5"]).unwrap();
    let elements: Vec<String> = (0..9_000).map(|n| format!("e{n}")).collect();
    let mut push_args = vec!["pushed".to_string()];
    push_args.extend(elements.iter().cloned());
    let push = RedisTask::command("LPUSH", push_args.clone()).unwrap();
    let mut xadd_args = vec!["events".to_string(), "*".to_string()];
    for n in 0..5_000 {
        xadd_args.push(format!("f{n}"));
        xadd_args.push(format!("v{n}"));
    }
    let xadd = RedisTask::command("XADD", xadd_args).unwrap();
    let mut fresh_args = push_args.clone();
    fresh_args[0] = "fresh-list".to_string();
    let fresh_push = RedisTask::command("RPUSH", fresh_args).unwrap();
    // A transaction holding a command too large for a script: staged as one MULTI/EXEC.
    let mut atomic_args = vec!["atomic-list".to_string()];
    atomic_args.extend(elements.iter().cloned());
    let mut atomic = RedisTask::pipeline(vec![
        RedisCmd::new("RPUSH", atomic_args),
        RedisCmd::new("INCR", ["atomic-counter"]),
    ])
    .unwrap();
    atomic.atomic = true;
    // A guarded pipeline of one slot whose second command fails: the first ran and is recorded, so the
    // replay resumes after it.
    let _: () = redis.set("{half}set", "a string, not a set").await.unwrap();
    let half = RedisTask::pipeline(vec![
        RedisCmd::new("INCR", ["{half}first"]),
        RedisCmd::new("SADD", ["{half}set", "m"]),
        RedisCmd::new("INCR", ["{half}last"]),
    ])
    .unwrap();
    let producer = large_producer(&stack);
    for task in [&incr, &push, &xadd, &fresh_push, &atomic, &half] {
        send(&producer, &stack.topic, &task.to_json()).await;
    }
    // Redelivered: the guards keep them at once.
    for task in [&xadd, &fresh_push, &atomic] {
        send(&producer, &stack.topic, &task.to_json()).await;
    }
    send(&producer, &stack.topic, &good("after-guarded")).await;
    let consumer = Consumer::start(&stack, &group, &[]);
    wait_for_value(&redis, "after-guarded", "applied", Duration::from_secs(60)).await;
    let dlq = dead_letters(&stack, 3, Duration::from_secs(30)).await;
    for m in &dlq {
        assert_eq!(header(m, "reason").as_deref(), Some("permanent_error"), "{:?}", header(m, "error"));
    }
    assert_eq!(redis.get::<_, Option<i64>>("{half}first").await.unwrap(), Some(1));
    assert_eq!(redis.get::<_, Option<i64>>("{half}last").await.unwrap(), None);
    assert_eq!(redis.xlen::<_, usize>("events").await.unwrap(), 1);
    let fields: redis::Value =
        redis::cmd("XRANGE").arg("events").arg("-").arg("+").query_async(&mut redis).await.unwrap();
    assert!(format!("{fields:?}").contains("f4999"));
    assert_eq!(redis.llen::<_, usize>("fresh-list").await.unwrap(), 9_000);
    assert_eq!(redis.llen::<_, usize>("atomic-list").await.unwrap(), 9_000);
    assert_eq!(redis.get::<_, i64>("atomic-counter").await.unwrap(), 1);
    let guards: Vec<String> = redis.keys("redis-retry:applied:*").await.unwrap();
    assert_eq!(guards.len(), 4, "guards of the three applied tasks and the half-applied one: {guards:?}");

    // The operator fixes the data and replays: each applies once.
    let _: () = redis.del(&["counter", "pushed", "{half}set"]).await.unwrap();
    let env = stack_env(&stack, &group);
    let out = run(&["dlq", "replay"], &env, b"");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_for_value(&redis, "counter", "5", Duration::from_secs(30)).await;
    wait_for_value(&redis, "{half}last", "1", Duration::from_secs(30)).await;
    wait_until("the replayed LPUSH", Duration::from_secs(30), || {
        let mut r = redis.clone();
        async move { r.llen::<_, usize>("pushed").await.unwrap_or(0) == 9_000 }
    })
    .await;
    // The same dead letters once more (a second replay, a redelivery): nothing changes.
    for task in [&incr, &push, &half] {
        send(&producer, &stack.topic, &task.to_json()).await;
    }
    send(&producer, &stack.topic, &good("after-second-replay")).await;
    wait_for_value(&redis, "after-second-replay", "applied", Duration::from_secs(30)).await;
    assert_eq!(redis.get::<_, i64>("counter").await.unwrap(), 5);
    assert_eq!(redis.get::<_, i64>("{half}first").await.unwrap(), 1, "the first command ran once");
    assert_eq!(redis.get::<_, i64>("{half}last").await.unwrap(), 1);
    assert_eq!(redis.scard::<_, usize>("{half}set").await.unwrap(), 1);
    assert_eq!(redis.llen::<_, usize>("pushed").await.unwrap(), 9_000);
    assert_eq!(redis.llen::<_, usize>("fresh-list").await.unwrap(), 9_000);
    assert_eq!(redis.xlen::<_, usize>("events").await.unwrap(), 1);
    drop(consumer);
    record(
        "Hostile class 5: a guard that records only success",
        "`tests/hostile.rs`: a guarded INCRBY, a 9,000-element LPUSH and a pipeline (INCR, SADD, INCR) whose SADD \
         fail with WRONGTYPE, are fixed by the operator and replayed (`dlq replay`), then delivered once more; an XADD of 5,000 fields, a \
         9,000-element RPUSH and a MULTI/EXEC of a 9,000-element RPUSH and an INCR, each delivered twice.",
        &[
            ("failed guarded writes", "dead-lettered as permanent_error, no guard left behind".to_string()),
            ("after the fix and `dlq replay`", "INCRBY applied once (5), LPUSH once (9,000)".to_string()),
            ("pipeline failing at its second command", "first INCR once (1), the rest once after the replay".to_string()),
            ("delivered again", "not applied again".to_string()),
            (
                "XADD with 5,000 fields, RPUSH with 9,000 elements, a transaction holding one",
                "applied once each, twice delivered".to_string(),
            ),
        ],
    );
}

const SECRET: &str = "hunter2-value-6c1d";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn class6_values_never_reach_the_logs_through_error_texts() {
    let stack = Stack::start().await;
    let mut redis = stack.conn().await;
    let _: () = redis.set("a-string", "x").await.unwrap();
    let group = unique("group");
    let payloads: Vec<Vec<u8>> = vec![
        // serde quotes what it could not take, and the names it does not know.
        format!(r#"{{"type":"simple","command":"del","args":["k"],"retry_count":"{SECRET}"}}"#).into_bytes(),
        format!(r#"{{"type":"simple","command":"del","args":["k"],"mode":"{SECRET}"}}"#).into_bytes(),
        format!(r#"{{"type":"{SECRET}","command":"del","args":["k"]}}"#).into_bytes(),
        format!(r#"{{"type":"simple","command":"set","args":["k",{{"b64":"{SECRET}"}}]}}"#).into_bytes(),
        format!(r#"{{"type":"simple","command":"set","args":["k",{{"{SECRET}":"x"}}]}}"#).into_bytes(),
        format!(r#"{{"type":"simple","command":"del","args":["k"],"timestamp":"{SECRET}"}}"#).into_bytes(),
        // Lua error replies carry whatever the script put in them.
        RedisTask::lua(format!("error('{SECRET}')"), ["k"], Vec::<String>::new()).unwrap().to_json(),
        RedisTask::lua("return redis.error_reply(ARGV[1])", ["k"], [SECRET]).unwrap().to_json(),
        RedisTask::lua("return redis.call('SET', KEYS[1])", ["k"], [SECRET]).unwrap().to_json(),
        RedisTask::lua(format!("return redis.call('{SECRET}', KEYS[1])"), ["k"], Vec::<String>::new())
            .unwrap()
            .to_json(),
        // Redis's own replies.
        RedisTask::sadd("a-string", [SECRET]).unwrap().to_json(),
        RedisTask::command("SET", ["k", SECRET, "EX", SECRET]).unwrap().to_json(),
        RedisTask::command("INCRBY", ["a-string", SECRET]).unwrap().to_json(),
    ];
    let producer = large_producer(&stack);
    for p in &payloads {
        send(&producer, &stack.topic, p).await;
    }
    send(&producer, &stack.topic, &good("after-errors")).await;
    let consumer = Consumer::start(&stack, &group, &["--allow-lua", "--log-level", "trace"]);
    wait_for_value(&redis, "after-errors", "applied", Duration::from_secs(60)).await;
    let dlq = dead_letters(&stack, payloads.len(), Duration::from_secs(30)).await;
    let errors: Vec<String> = dlq.iter().map(|m| header(m, "error").unwrap_or_default()).collect();
    let log = consumer.log();
    drop(consumer);
    for (i, e) in errors.iter().enumerate() {
        assert!(!e.contains(SECRET), "dead letter {i}'s error header quotes a value: {e}");
        assert!(!e.is_empty(), "dead letter {i} says why");
    }
    let leaks: Vec<&str> = log.lines().filter(|l| l.contains(SECRET)).collect();
    assert!(leaks.is_empty(), "the log shows a value:\n{}", leaks.join("\n"));
    assert!(
        log.contains("invalid type: string, expected u32"),
        "the error still says what was wrong:\n{log}"
    );
    let out = run(&["dlq", "list"], &stack_env(&stack, &group), b"");
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(!listing.contains(SECRET), "{listing}");
    record(
        "Hostile class 6: no value in error texts",
        "`tests/hostile.rs`: serde errors (wrong types, unknown variants, bad base64, bad timestamps), Lua errors \
         (`error()`, `redis.error_reply`, wrong arguments, an unknown command) and Redis replies over a value, \
         at log level trace.",
        &[
            ("hostile messages", payloads.len().to_string()),
            ("dead-letter error headers quoting the value", "0".to_string()),
            ("log lines quoting the value", format!("0 of {}", log.lines().count())),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn class7_logs_cannot_be_forged_and_have_no_colour_off_a_terminal() {
    let stack = Stack::start().await;
    let mut redis = stack.conn().await;
    let group = unique("group");
    // A line as the consumer would write it now.
    let forged_line = format!("{}  ERROR forged: all tasks applied", chrono::Utc::now().to_rfc3339());
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
    let forged: Vec<&str> = log.lines().filter(|l| l.starts_with(forged_line.as_str())).collect();
    assert!(forged.is_empty(), "a forged line: {forged:?}");
    assert!(
        log.contains(&format!("\\n{forged_line}")) && log.contains("\\u{1b}[31m"),
        "escaped, still readable:\n{log}"
    );
    let out = run(&["dlq", "list"], &stack_env(&stack, &group), b"");
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        !listing.contains('\u{1b}') && !listing.lines().any(|l| l.starts_with(forged_line.as_str())),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_whose_source_is_gone_counts_as_done_as_the_command_table_says() {
    let stack = Stack::start().await;
    let mut redis = stack.conn().await;
    let group = unique("group");
    // The rename already happened: the source is gone, the destination holds the value.
    let _: () = redis.set("renamed-to", "moved").await.unwrap();
    let producer = large_producer(&stack);
    send(
        &producer,
        &stack.topic,
        &RedisTask::command("RENAME", ["renamed-from", "renamed-to"]).unwrap().to_json(),
    )
    .await;
    send(
        &producer,
        &stack.topic,
        &RedisTask::command("RENAMENX", ["gone-from", "gone-to"]).unwrap().to_json(),
    )
    .await;
    send(&producer, &stack.topic, &good("after-rename")).await;
    let consumer = Consumer::start(&stack, &group, &[]);
    wait_for_value(&redis, "after-rename", "applied", Duration::from_secs(60)).await;
    let dlq = stack.kafka.read_messages(&dlq_topic(&stack), 1, Duration::from_secs(3)).await;
    assert!(
        dlq.is_empty(),
        "dead-lettered: {:?}",
        dlq.iter().map(|m| header(m, "error")).collect::<Vec<_>>()
    );
    assert_eq!(redis.get::<_, Option<String>>("renamed-to").await.unwrap().as_deref(), Some("moved"));
    drop(consumer);
}
