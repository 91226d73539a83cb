//! A generated hostile stream: tasks of every hostile class (a dead letter too large for the
//! topic, a schedule far ahead, a slow write, an endless script, failing guarded writes, large
//! variadics, values in error texts, control characters in names) shuffled among good tasks on
//! the same partition, against `redis-retry consume` with a real redis-server and broker.
//!
//! The oracle: every good task is applied within a bound, every hostile one is settled with its
//! class's reason (or applied, where applying is right), Redis answers a probe within 100 ms
//! throughout, the sentinel data is intact, and no value appears in the log. The stream comes
//! from a seed (`REDIS_RETRY_STREAM_SEED`, printed on failure) so that any failure replays.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use redis::AsyncCommands;
use redis_retry::{RedisCmd, RedisTask};
use support::binary::Consumer;
use support::report::record;
use support::slow::{calls, config_set, slow_sort, Probe};
use support::stack::Stack;
use support::unique;

const SECRET: &str = "stream-secret-9b3e";
const SENTINELS: usize = 50;
/// Every good task must be applied within this of being sent.
const SETTLE_BOUND: Duration = Duration::from_secs(90);
const PROBE_BOUND: Duration = Duration::from_millis(100);

/// One message of the stream and what must come of it.
struct Item {
    topic_suffix: &'static str,
    payload: Vec<u8>,
    expect: Expect,
}

enum Expect {
    /// A good task: `key` ends up holding `value`.
    Applied { key: String, value: String },
    /// Dead-lettered with this reason.
    Dead(&'static str),
    /// Applied, and `key` is a list of `len` elements.
    ListOf { key: String, len: usize },
    /// A write slower than the response timeout: dead-lettered as timed_out once its retries
    /// are spent, or applied when its reply made it in time after all (a busy machine can delay
    /// the consumer's look at its timer until the reply is there).
    Slow { id: String },
}

/// A hostile task of `class`; `forged` is a log line that class 7 hides in a source.
fn hostile(rng: &mut impl Rng, n: usize, class: usize, forged: &str) -> Item {
    let dead = |payload: Vec<u8>, reason| Item { topic_suffix: "", payload, expect: Expect::Dead(reason) };
    match class {
        // 1: larger than the dead-letter topic takes.
        1 => dead(
            [
                b"{\"type\":\"simple\",\"pad\":\"".as_slice(),
                &vec![b'x'; 1_100_000 + rng.random_range(0..50_000)],
                b"\"}",
            ]
            .concat(),
            "oversize",
        ),
        // 2: a retry due in days, on a tier.
        2 => {
            let mut task = RedisTask::set(format!("far:{n}"), SECRET, Duration::ZERO).unwrap();
            task.retry_count = 1;
            task.not_before = Some(chrono::Utc::now() + chrono::Duration::days(rng.random_range(1..30)));
            Item { topic_suffix: ".retry.1", payload: task.to_json(), expect: Expect::Dead("bad_schedule") }
        }
        // 3: a write slower than the response timeout.
        3 => {
            let task = RedisTask::command("SORT", ["big", "STORE", &format!("sorted:{n}")])
                .unwrap()
                .with_max_retries(1)
                .unwrap();
            Item { topic_suffix: "", payload: task.to_json(), expect: Expect::Slow { id: task.id } }
        }
        // 4: a script that never ends.
        4 => dead(
            RedisTask::lua("local n = 0 while true do n = n + 1 end", [format!("lua:{n}")], [SECRET])
                .unwrap()
                .to_json(),
            "script_timeout",
        ),
        // 5: a guarded write that fails, and a variadic too large for a script.
        5 if rng.random_bool(0.5) => {
            dead(RedisTask::command("INCRBY", ["a-list", "3"]).unwrap().to_json(), "permanent_error")
        }
        5 => {
            let key = format!("big-list:{n}");
            let len = rng.random_range(8_000..10_000);
            let mut args = vec![key.clone()];
            args.extend((0..len).map(|i| format!("{SECRET}-{i}")));
            Item {
                topic_suffix: "",
                payload: RedisTask::command("LPUSH", args).unwrap().to_json(),
                expect: Expect::ListOf { key, len },
            }
        }
        // 6: values inside the error texts of serde, Lua and Redis.
        6 => match rng.random_range(0..3) {
            0 => dead(
                format!(r#"{{"type":"simple","command":"del","args":["k"],"retry_count":"{SECRET}"}}"#)
                    .into_bytes(),
                "malformed",
            ),
            1 => dead(
                RedisTask::lua(format!("error('{SECRET}')"), ["k"], Vec::<String>::new()).unwrap().to_json(),
                "permanent_error",
            ),
            _ => dead(RedisTask::sadd("a-string", [SECRET]).unwrap().to_json(), "permanent_error"),
        },
        // 7: control characters in a source and a key.
        _ => dead(
            RedisTask::sadd("a-string", [SECRET])
                .unwrap()
                .with_source(format!("Forged\n{forged}\u{1b}[31m{n}"))
                .to_json(),
            "permanent_error",
        ),
    }
}

fn good(rng: &mut impl Rng, n: usize) -> Item {
    let key = format!("good:{n}");
    let value = format!("v{}", rng.random::<u32>());
    let task = match rng.random_range(0..3) {
        0 => RedisTask::set(key.as_str(), value.as_str(), Duration::ZERO).unwrap(),
        1 => RedisTask::pipeline(vec![
            RedisCmd::new("SET", [key.as_str(), value.as_str()]),
            RedisCmd::new("INCR", [format!("good-count:{n}")]),
        ])
        .unwrap(),
        _ => RedisTask::set(key.as_str(), value.as_str(), Duration::from_secs(3600)).unwrap(),
    };
    Item { topic_suffix: "", payload: task.to_json(), expect: Expect::Applied { key, value } }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_hostile_stream_never_wedges_never_loses_a_good_task_and_never_leaks_a_value() {
    let seed: u64 = std::env::var("REDIS_RETRY_STREAM_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(12);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let stack = Stack::start().await;
    let mut redis = stack.conn().await;
    // A script is killable (and Redis answers BUSY to others) after this long.
    config_set(&mut redis, "busy-reply-threshold", "20").await;
    let sort_time = slow_sort(&mut redis, 10_000, Duration::from_millis(25)).await;
    let _: () = redis.set("a-string", "x").await.unwrap();
    let _: () = redis.rpush("a-list", "x").await.unwrap();
    // What held Redis up, should a probe wait too long.
    config_set(&mut redis, "slowlog-log-slower-than", "20000").await;
    let _: () = redis::cmd("SLOWLOG").arg("RESET").query_async(&mut redis).await.unwrap();
    for i in 0..SENTINELS {
        let _: () = redis.set(format!("sentinel:{i}"), format!("kept-{i}")).await.unwrap();
    }

    // The stream: every class at least twice, shuffled among good tasks.
    let forged = format!("{}  ERROR all clear", chrono::Utc::now().to_rfc3339());
    let mut items: Vec<(Option<usize>, Item)> = Vec::new();
    for n in 0..120 {
        items.push((None, good(&mut rng, n)));
    }
    for class in 1..=7 {
        for _ in 0..rng.random_range(2..5) {
            let n = items.len();
            items.push((Some(class), hostile(&mut rng, n, class, &forged)));
        }
    }
    for i in (1..items.len()).rev() {
        items.swap(i, rng.random_range(0..=i));
    }

    let sorts_before = calls(&mut redis, "sort").await;
    let probe = Probe::start(stack.conn().await, Duration::from_millis(10));
    let group = unique("group");
    let consumer = Consumer::start(
        &stack,
        &group,
        &[
            "--allow-lua",
            "--script-timeout",
            "50ms",
            "--redis-response-timeout",
            "30ms",
            "--log-level",
            "debug",
        ],
    );
    let producer: FutureProducer =
        stack.kafka.client_config().set("message.max.bytes", "4000000").create().expect("producer");
    // Captured writes arrive over time, not all at once: a message every 5 ms.
    let mut sent_at = Vec::with_capacity(items.len());
    for (_, item) in &items {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let topic = format!("{}{}", stack.topic, item.topic_suffix);
        let record =
            FutureRecord::<[u8], [u8]>::to(&topic).payload(&item.payload).key(b"same-key".as_slice());
        producer.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| e).expect("produce");
        sent_at.push(Instant::now());
    }

    // Every good task applied within the bound, each timed from its send.
    let mut settle: Vec<Option<Duration>> = vec![None; items.len()];
    let deadline = Instant::now() + SETTLE_BOUND;
    loop {
        for (i, (_, item)) in items.iter().enumerate() {
            if settle[i].is_some() {
                continue;
            }
            let done = match &item.expect {
                // Redis may answer BUSY while a script runs: not done yet.
                Expect::Applied { key, value } => {
                    redis.get::<_, Option<String>>(key).await.ok().flatten().as_deref()
                        == Some(value.as_str())
                }
                Expect::ListOf { key, len } => redis.llen::<_, usize>(key).await.ok() == Some(*len),
                Expect::Dead(_) | Expect::Slow { .. } => true,
            };
            if done {
                settle[i] = Some(sent_at[i].elapsed());
            }
        }
        if settle.iter().all(Option::is_some) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let missing: Vec<usize> = (0..items.len()).filter(|i| settle[*i].is_none()).collect();
    assert!(missing.is_empty(), "seed {seed}: good tasks not applied within {SETTLE_BOUND:?}: {missing:?}");

    // Every hostile task dead-lettered with its class's reason; a slow write dead-lettered as
    // timed_out or applied.
    let mut expected: BTreeMap<String, usize> = BTreeMap::new();
    for (_, item) in &items {
        if let Expect::Dead(reason) = item.expect {
            *expected.entry(reason.to_string()).or_default() += 1;
        }
    }
    let slow: Vec<&str> = items
        .iter()
        .filter_map(|(_, item)| match &item.expect {
            Expect::Slow { id } => Some(id.as_str()),
            _ => None,
        })
        .collect();
    let dlq_topic = format!("{}.dlq", stack.topic);
    let most = expected.values().sum::<usize>() + slow.len();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (found, timed_out, applied_slow) = loop {
        let dlq = stack.kafka.read_messages(&dlq_topic, most, Duration::from_secs(1)).await;
        let mut found: BTreeMap<String, usize> = BTreeMap::new();
        let mut timed_out: Vec<String> = Vec::new();
        for m in &dlq {
            let reason = m
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == "reason").and_then(|h| h.value))
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default();
            if reason == "timed_out" {
                let task = RedisTask::from_json(m.payload().unwrap_or_default()).expect("a slow task");
                timed_out.push(task.id);
            } else {
                *found.entry(reason).or_default() += 1;
            }
        }
        let log = consumer.log();
        let applied_slow =
            slow.iter().filter(|id| log.contains(&format!("task applied task_id={id}"))).count();
        let slow_settled = slow.iter().all(|id| {
            timed_out.iter().any(|t| t == id) || log.contains(&format!("task applied task_id={id}"))
        });
        if (found == expected && slow_settled) || Instant::now() > deadline {
            break (found, timed_out, applied_slow);
        }
    };
    let (worst_probe, probes) = probe.stop().await;
    let log = consumer.log();
    drop(consumer);
    let about_slow: Vec<&str> = log.lines().filter(|l| l.contains("sort [big")).collect();
    assert_eq!(found, expected, "seed {seed}: dead letters by reason");
    assert_eq!(
        timed_out.len() + applied_slow,
        slow.len(),
        "seed {seed}: every slow write dead-lettered as timed_out or applied; SORT takes {sort_time:?}:\n{}",
        about_slow.join("\n")
    );
    // Bounded: per slow task at most one run per try, and one more when a pipeline it rode in
    // timed out and its tasks were settled one by one.
    let sorts = (calls(&mut redis, "sort").await - sorts_before) as usize;
    assert!(sorts <= slow.len() * 2 * 2, "seed {seed}: {sorts} SORT runs for {} slow writes", slow.len());

    // Redis intact and answering; nothing hostile applied.
    for i in 0..SENTINELS {
        let v: Option<String> = redis.get(format!("sentinel:{i}")).await.unwrap();
        assert_eq!(v, Some(format!("kept-{i}")), "seed {seed}: sentinel {i}");
    }
    assert_eq!(redis.get::<_, Option<String>>("a-string").await.unwrap().as_deref(), Some("x"));
    let far: Vec<String> = redis.keys("far:*").await.unwrap();
    assert!(far.is_empty(), "seed {seed}: a far-ahead retry was applied: {far:?}");
    let slowlog: redis::Value =
        redis::cmd("SLOWLOG").arg("GET").arg(20).query_async(&mut redis).await.unwrap_or(redis::Value::Nil);
    assert!(
        worst_probe <= PROBE_BOUND,
        "seed {seed}: Redis took {worst_probe:?} to answer a probe; slow log: {slowlog:?}"
    );

    // No value, no escape byte, no forged line in the log.
    let leaks: Vec<&str> = log.lines().filter(|l| l.contains(SECRET)).collect();
    assert!(leaks.is_empty(), "seed {seed}: the log shows a value:\n{}", leaks.join("\n"));
    assert!(!log.contains('\u{1b}'), "seed {seed}: an escape byte in the log");
    assert!(!log.lines().any(|l| l.starts_with(forged.as_str())), "seed {seed}: a forged log line");

    let classes: std::collections::BTreeSet<usize> = items.iter().filter_map(|(c, _)| *c).collect();
    let hostile_count = items.iter().filter(|(c, _)| c.is_some()).count();
    let worst_settle = items
        .iter()
        .zip(&settle)
        .filter(|((c, _), _)| c.is_none())
        .filter_map(|(_, s)| *s)
        .max()
        .unwrap_or_default();
    let worst_hostile = items
        .iter()
        .zip(&settle)
        .filter(|((c, _), _)| c.is_some())
        .filter_map(|((_, item), s)| matches!(item.expect, Expect::ListOf { .. }).then_some(*s).flatten())
        .max()
        .unwrap_or_default();
    println!(
        "seed {seed}: {} tasks ({hostile_count} hostile of {} classes), worst good settle {worst_settle:?}, worst probe {worst_probe:?} over {probes} probes",
        items.len(),
        classes.len()
    );
    record(
        "Generated hostile stream",
        "`tests/hostile_stream.rs`: a seeded stream of good tasks with hostile tasks of all seven classes shuffled \
         among them on one partition and one Kafka key, a message every 5 ms, against `redis-retry consume` (`--allow-lua \
         --script-timeout 50ms --redis-response-timeout 8ms`, Redis's busy-reply-threshold 20 ms), with Redis \
         probed (PING) every 10 ms.",
        &[
            ("seed", seed.to_string()),
            ("classes", classes.len().to_string()),
            ("tasks", format!("{} ({} good, {hostile_count} hostile)", items.len(), items.len() - hostile_count)),
            ("dead letters by reason, as expected", format!("{found:?}")),
            (
                "slow writes",
                format!(
                    "{}: {} dead-lettered as timed_out, {applied_slow} applied (reply in time after all); {sorts} SORT runs",
                    slow.len(),
                    timed_out.len()
                ),
            ),
            ("worst settle time of a good task (from its send)", format!("{:.2} s", worst_settle.as_secs_f64())),
            ("worst settle time of a large variadic", format!("{:.2} s", worst_hostile.as_secs_f64())),
            (
                "worst probe latency",
                format!("{:.1} ms over {probes} probes (one SORT ... STORE: {:.0} ms)", worst_probe.as_secs_f64() * 1000.0, sort_time.as_secs_f64() * 1000.0),
            ),
            ("sentinel keys intact", format!("{SENTINELS} of {SENTINELS}")),
            ("log lines with a value, an escape byte or a forged line", "0".to_string()),
        ],
    );
}
