//! Reliability under faults, checked against an oracle: nothing lost, nothing applied twice,
//! nothing stale. The figures go into the reliability report (see `support::report`).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rdkafka::message::{Headers, Message};
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use redis_retry::errors::{classify, Delivery, Failure};
use redis_retry::{redis_retry, RedisTask, RetryConnection, Script};
use support::binary::Consumer;
use support::report::record;
use support::stack::{wait_until, Stack};
use support::{unique, Proxy, ProxyMode};

/// Chaos sizes; `REDIS_RETRY_CHAOS_OPS` raises the number of writes for a longer opt-in run.
fn chaos_ops() -> usize {
    std::env::var("REDIS_RETRY_CHAOS_OPS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000)
}
const KEYS: usize = 1_000;
const WORKERS: usize = 32;
const FAULTS: usize = 12;
const SEEDED: usize = 4;

/// The repository the workload drives: every write goes through an annotated method.
#[derive(Clone)]
struct Repo {
    redis: RetryConnection<ConnectionManager>,
    add_by_script: Script,
}

impl Repo {
    #[redis_retry(source = "Chaos.add_member")]
    async fn add_member(&self, k: usize, member: &str) -> redis::RedisResult<()> {
        self.redis.clone().sadd(format!("set:{k}"), member).await
    }

    #[redis_retry(source = "Chaos.remove_member")]
    async fn remove_member(&self, k: usize, member: &str) -> redis::RedisResult<()> {
        self.redis.clone().srem(format!("set:{k}"), member).await
    }

    #[redis_retry(source = "Chaos.set_field")]
    async fn set_field(&self, k: usize, field: &str) -> redis::RedisResult<()> {
        self.redis.clone().hset(format!("hash:{k}"), field, 1).await
    }

    #[redis_retry(source = "Chaos.drop_field")]
    async fn drop_field(&self, k: usize, field: &str) -> redis::RedisResult<()> {
        self.redis.clone().hdel(format!("hash:{k}"), field).await
    }

    #[redis_retry(source = "Chaos.count", allow_non_idempotent)]
    async fn count(&self, k: usize) -> redis::RedisResult<i64> {
        self.redis.clone().incr(format!("counter:{k}"), 1).await
    }

    #[redis_retry(source = "Chaos.cache_put", mode = "invalidate")]
    async fn cache_put(&self, k: usize, version: u64) -> redis::RedisResult<()> {
        self.redis.clone().set_ex(format!("cache:{k}"), version, 600).await
    }

    #[redis_retry(source = "Chaos.pipeline")]
    async fn pipeline(&self, k: usize, member: &str) -> redis::RedisResult<()> {
        let mut redis = self.redis.clone();
        redis::pipe()
            .sadd(format!("pset:{k}"), member)
            .hset(format!("phash:{k}"), member, 1)
            .exec_async(&mut redis)
            .await
    }

    #[redis_retry(source = "Chaos.lua")]
    async fn lua(&self, k: usize, member: &str) -> redis::RedisResult<i64> {
        let mut redis = self.redis.clone();
        self.add_by_script.key(format!("lset:{k}")).arg(member).invoke_async(&mut redis).await
    }

    #[redis_retry(source = "Chaos.delete")]
    async fn delete(&self, k: usize) -> redis::RedisResult<()> {
        self.redis.clone().del(format!("tmp:{k}")).await
    }
}

/// What the workload did, per key, for the oracle.
#[derive(Default)]
struct Expect {
    members: BTreeMap<usize, BTreeSet<String>>,
    removed_members: BTreeMap<usize, BTreeSet<String>>,
    fields: BTreeMap<usize, BTreeSet<String>>,
    removed_fields: BTreeMap<usize, BTreeSet<String>>,
    /// (certainly applied or queued, ambiguous) increments.
    counters: BTreeMap<usize, (i64, i64)>,
    /// Latest version written.
    cache: BTreeMap<usize, u64>,
    pipeline: BTreeMap<usize, BTreeSet<String>>,
    lua: BTreeMap<usize, BTreeSet<String>>,
    deleted: BTreeSet<usize>,
    ok: usize,
    failed: usize,
    ambiguous: usize,
}

impl Expect {
    fn merge(&mut self, o: Expect) {
        fn join(a: &mut BTreeMap<usize, BTreeSet<String>>, b: BTreeMap<usize, BTreeSet<String>>) {
            for (k, v) in b {
                a.entry(k).or_default().extend(v);
            }
        }
        join(&mut self.members, o.members);
        join(&mut self.removed_members, o.removed_members);
        join(&mut self.fields, o.fields);
        join(&mut self.removed_fields, o.removed_fields);
        join(&mut self.pipeline, o.pipeline);
        join(&mut self.lua, o.lua);
        for (k, (c, a)) in o.counters {
            let e = self.counters.entry(k).or_default();
            e.0 += c;
            e.1 += a;
        }
        self.cache.extend(o.cache);
        self.deleted.extend(o.deleted);
        self.ok += o.ok;
        self.failed += o.failed;
        self.ambiguous += o.ambiguous;
    }
}

/// What differs between Redis and the oracle.
#[derive(Debug, Default, PartialEq, Eq)]
struct Verdict {
    lost: usize,
    resurrected: usize,
    stale_cache: usize,
    double_applied: usize,
    ambiguous_applied: i64,
}

async fn verdict(conn: &mut redis::aio::MultiplexedConnection, e: &Expect) -> Verdict {
    let mut v = Verdict::default();
    for k in 0..KEYS {
        let set: BTreeSet<String> = conn.smembers(format!("set:{k}")).await.unwrap();
        v.lost += e.members.get(&k).map_or(0, |m| m.difference(&set).count());
        v.resurrected += e.removed_members.get(&k).map_or(0, |m| m.intersection(&set).count());
        let fields: BTreeSet<String> = conn.hkeys(format!("hash:{k}")).await.unwrap();
        v.lost += e.fields.get(&k).map_or(0, |f| f.difference(&fields).count());
        v.resurrected += e.removed_fields.get(&k).map_or(0, |f| f.intersection(&fields).count());
        let pset: BTreeSet<String> = conn.smembers(format!("pset:{k}")).await.unwrap();
        let phash: BTreeSet<String> = conn.hkeys(format!("phash:{k}")).await.unwrap();
        if let Some(m) = e.pipeline.get(&k) {
            v.lost += m.difference(&pset).count() + m.difference(&phash).count();
        }
        let lset: BTreeSet<String> = conn.smembers(format!("lset:{k}")).await.unwrap();
        v.lost += e.lua.get(&k).map_or(0, |m| m.difference(&lset).count());
        if let Some((certain, ambiguous)) = e.counters.get(&k) {
            let n: i64 = conn.get::<_, Option<i64>>(format!("counter:{k}")).await.unwrap().unwrap_or(0);
            v.lost += (certain - n).max(0) as usize;
            v.double_applied += (n - certain - ambiguous).max(0) as usize;
            v.ambiguous_applied += (n - certain).clamp(0, *ambiguous);
        }
        if let Some(latest) = e.cache.get(&k) {
            let cached: Option<u64> = conn.get(format!("cache:{k}")).await.unwrap();
            // Invalidation may leave the key empty; it must never leave an older version.
            v.stale_cache += usize::from(cached.is_some_and(|c| c != *latest));
        }
        if e.deleted.contains(&k) {
            v.resurrected += usize::from(conn.exists::<_, bool>(format!("tmp:{k}")).await.unwrap());
        }
    }
    v
}

fn delivery_of(err: &redis::RedisError) -> Delivery {
    match classify(err) {
        Failure::Transient(d) => d,
        Failure::Permanent => panic!("a permanent error in the chaos workload: {err}"),
    }
}

async fn worker(repo: Repo, w: usize, ops: usize, done: Arc<AtomicUsize>) -> Expect {
    let mut rng = rand::rngs::StdRng::seed_from_u64(w as u64);
    let keys: Vec<usize> = (0..KEYS).filter(|k| k % WORKERS == w).collect();
    let mut e = Expect::default();
    let mut seeded_members: Vec<(usize, String)> =
        keys.iter().flat_map(|&k| (0..SEEDED).map(move |i| (k, format!("s{i}")))).collect();
    let mut seeded_fields = seeded_members.clone();
    let mut to_delete = keys.clone();
    let mut versions: BTreeMap<usize, u64> = BTreeMap::new();
    for op in 0..ops {
        let k = keys[rng.random_range(0..keys.len())];
        let tag = format!("w{w}o{op}");
        let roll = rng.random_range(0..100);
        let result: Result<(), redis::RedisError> = match roll {
            0..20 => {
                e.members.entry(k).or_default().insert(tag.clone());
                repo.add_member(k, &tag).await
            }
            20..25 if !seeded_members.is_empty() => {
                let (k, m) = seeded_members.swap_remove(rng.random_range(0..seeded_members.len()));
                e.removed_members.entry(k).or_default().insert(m.clone());
                repo.remove_member(k, &m).await
            }
            25..40 => {
                e.fields.entry(k).or_default().insert(tag.clone());
                repo.set_field(k, &tag).await
            }
            40..45 if !seeded_fields.is_empty() => {
                let (k, f) = seeded_fields.swap_remove(rng.random_range(0..seeded_fields.len()));
                e.removed_fields.entry(k).or_default().insert(f.clone());
                repo.drop_field(k, &f).await
            }
            45..60 => {
                let r = repo.count(k).await.map(|_| ());
                let entry = e.counters.entry(k).or_default();
                match &r {
                    Err(err) if delivery_of(err) == Delivery::Ambiguous => entry.1 += 1,
                    _ => entry.0 += 1,
                }
                r
            }
            60..80 => {
                let v = versions.entry(k).or_default();
                *v += 1;
                e.cache.insert(k, *v);
                repo.cache_put(k, *v).await
            }
            80..90 => {
                e.pipeline.entry(k).or_default().insert(tag.clone());
                repo.pipeline(k, &tag).await
            }
            90..95 => {
                e.lua.entry(k).or_default().insert(tag.clone());
                repo.lua(k, &tag).await.map(|_| ())
            }
            _ if !to_delete.is_empty() => {
                let k = to_delete.swap_remove(rng.random_range(0..to_delete.len()));
                e.deleted.insert(k);
                repo.delete(k).await
            }
            _ => {
                e.members.entry(k).or_default().insert(tag.clone());
                repo.add_member(k, &tag).await
            }
        };
        match &result {
            Ok(()) => e.ok += 1,
            Err(err) => {
                e.failed += 1;
                e.ambiguous += usize::from(delivery_of(err) == Delivery::Ambiguous);
            }
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
    e
}

/// Cuts Redis off `FAULTS` times, spread over the workload's progress, cycling through
/// refusing connections, resetting them mid-reply and blackholing them.
fn chaos(proxy: &Proxy, done: &AtomicUsize, total: usize) -> Vec<&'static str> {
    let mut injected = Vec::new();
    for i in 0..FAULTS {
        let at = total * (i + 1) / (FAULTS + 2);
        while done.load(Ordering::Relaxed) < at {
            std::thread::sleep(Duration::from_millis(2));
        }
        let kind = match i % 3 {
            0 => {
                proxy.cut();
                "refuse"
            }
            1 => {
                proxy.reset_all();
                proxy.set_mode(ProxyMode::Blackhole);
                proxy.reset_all();
                "reset mid-reply"
            }
            _ => {
                proxy.set_mode(ProxyMode::Blackhole);
                "blackhole"
            }
        };
        std::thread::sleep(Duration::from_millis(400));
        proxy.reset_all();
        proxy.restore();
        injected.push(kind);
    }
    injected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_oracle_nothing_lost_nothing_stale_nothing_applied_twice() {
    let total = chaos_ops();
    let mut stack = Stack::start().await;
    let proxy = Proxy::start(stack.redis.addr());
    let mut direct = stack.conn().await;
    for k in 0..KEYS {
        let mut pipe = redis::pipe();
        for i in 0..SEEDED {
            pipe.sadd(format!("set:{k}"), format!("s{i}")).hset(format!("hash:{k}"), format!("s{i}"), 1);
        }
        pipe.set(format!("tmp:{k}"), "x").exec_async(&mut direct).await.unwrap();
    }
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(200)))
        .set_response_timeout(Some(Duration::from_millis(200)))
        .set_number_of_retries(1);
    let manager =
        redis::Client::open(proxy.url()).unwrap().get_connection_manager_with_config(config).await.unwrap();
    let repo = Repo {
        redis: RetryConnection::new(manager).with_producer(stack.producer.clone()),
        add_by_script: Script::new("return redis.call('SADD', KEYS[1], ARGV[1])"),
    };

    let started = Instant::now();
    let done = Arc::new(AtomicUsize::new(0));
    let chaos_done = done.clone();
    let chaos_proxy = Arc::new(proxy);
    let chaos_handle = {
        let proxy = chaos_proxy.clone();
        std::thread::spawn(move || chaos(&proxy, &chaos_done, total))
    };
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        workers.push(tokio::spawn(worker(repo.clone(), w, total / WORKERS, done.clone())));
    }
    let mut expect = Expect::default();
    for w in workers {
        expect.merge(w.await.unwrap());
    }
    let faults = chaos_handle.join().unwrap();
    let workload_time = started.elapsed();
    chaos_proxy.restore();
    println!(
        "workload: {} writes in {workload_time:?}, {} failed ({} ambiguous), faults {faults:?}",
        expect.ok + expect.failed,
        expect.failed,
        expect.ambiguous
    );
    assert!(faults.len() >= 10, "at least 10 faults: {faults:?}");
    assert!(expect.failed > 0, "the faults made writes fail");
    stack.producer.flush(Duration::from_secs(30)).unwrap();

    let drain_started = Instant::now();
    let config = stack.consumer_config().allow_lua(true);
    stack.spawn_consumer(config, &stack.redis.url()).await;
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        let v = verdict(&mut direct, &expect).await;
        if v.lost == 0 && v.resurrected == 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Give late tasks (retries, invalidations) a moment to show anything stale or doubled.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let final_verdict = verdict(&mut direct, &expect).await;
    let drain_time = drain_started.elapsed();
    stack.stop_consumer().await.unwrap();
    let dlq = stack
        .kafka
        .read_messages(&format!("{}.dlq", stack.topic), expect.failed + 1, Duration::from_secs(3))
        .await;
    let reasons: BTreeMap<String, usize> = dlq.iter().fold(BTreeMap::new(), |mut acc, m| {
        let reason = m
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == "reason").and_then(|h| h.value))
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        *acc.entry(reason).or_default() += 1;
        acc
    });
    println!("verdict: {final_verdict:?}; dead letters by reason: {reasons:?}; drained in {drain_time:?}");

    record(
        "Chaos oracle",
        &format!(
            "`tests/reliability.rs::chaos_oracle_nothing_lost_nothing_stale_nothing_applied_twice`: {total} mixed writes \
             (SADD, SREM, HSET, HDEL, INCR, SET with TTL in `invalidate` mode, pipelines, Lua, DEL) over {KEYS} keys \
             through `#[redis_retry]` methods by {WORKERS} concurrent workers, while a proxy cut Redis off {} times \
             (refused connections, resets mid-reply, blackholes); then the consumer drained the queue and Redis was \
             compared with an oracle of every write.",
            faults.len()
        ),
        &[
            ("writes", (expect.ok + expect.failed).to_string()),
            ("faults injected", format!("{} ({})", faults.len(), faults.join(", "))),
            ("writes failed during faults (captured)", expect.failed.to_string()),
            ("of which ambiguous (may have run)", expect.ambiguous.to_string()),
            ("lost writes", final_verdict.lost.to_string()),
            ("removed data brought back", final_verdict.resurrected.to_string()),
            ("stale cache values (`invalidate` mode)", final_verdict.stale_cache.to_string()),
            ("non-idempotent writes applied twice", final_verdict.double_applied.to_string()),
            ("ambiguous INCRs dead-lettered (`ambiguous`)", reasons.get("ambiguous").copied().unwrap_or(0).to_string()),
            ("other dead letters", (dlq.len() - reasons.get("ambiguous").copied().unwrap_or(0)).to_string()),
            ("workload time", format!("{:.1} s", workload_time.as_secs_f64())),
            ("drain time after Redis returned", format!("{:.1} s", drain_time.as_secs_f64())),
        ],
    );
    assert_eq!(final_verdict.lost, 0, "lost writes");
    assert_eq!(final_verdict.resurrected, 0, "removed data brought back");
    assert_eq!(final_verdict.stale_cache, 0, "stale cache values in invalidate mode");
    assert_eq!(final_verdict.double_applied, 0, "non-idempotent writes applied twice");
    assert_eq!(
        dlq.len(),
        reasons.get("ambiguous").copied().unwrap_or(0),
        "only ambiguous writes are dead letters: {reasons:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_killed_ten_times_while_draining_loses_nothing_and_applies_nothing_twice() {
    // Large enough that ten incarnations, each applying some hundreds before its kill lands,
    // do not run out of backlog.
    const TASKS: usize = 12_000;
    let stack = Stack::start().await;
    for i in 0..TASKS {
        let task = if i % 2 == 0 {
            RedisTask::sadd(format!("members:{}", i % 10), [format!("m-{i}")]).unwrap()
        } else {
            RedisTask::command("incrby", [format!("count:{}", i % 10), "1".to_string()]).unwrap()
        };
        stack.producer.publish(&task).unwrap();
    }
    stack.producer.flush(Duration::from_secs(30)).unwrap();
    let redis = stack.conn().await;
    let progress = |redis: redis::aio::MultiplexedConnection| async move {
        let mut c = redis;
        let (mut members, mut counted) = (0usize, 0i64);
        for k in 0..10 {
            members += c.scard::<_, usize>(format!("members:{k}")).await.unwrap_or(0);
            counted += c.get::<_, Option<i64>>(format!("count:{k}")).await.unwrap_or(None).unwrap_or(0);
        }
        (members, counted)
    };
    // Small batches, so that the kills land inside the backlog (and inside batches) ten times;
    // at the default of 1,024 the whole backlog is four batches.
    let fast_rejoin =
        ["--max-batch", "20", "-X", "session.timeout.ms=6000", "-X", "heartbeat.interval.ms=500"];
    let group = unique("group");
    let started = Instant::now();
    let mut kills = Vec::new();
    while kills.len() < 10 {
        let mut consumer = Consumer::start(&stack, &group, &fast_rejoin);
        let before = progress(redis.clone()).await;
        wait_until("progress before the kill", Duration::from_secs(60), || {
            let r = redis.clone();
            async move {
                let now = progress(r).await;
                now.0 + now.1 as usize > before.0 + before.1 as usize + 20 || now.0 + now.1 as usize == TASKS
            }
        })
        .await;
        consumer.signal(libc::SIGKILL);
        consumer.wait(Duration::from_secs(10));
        let at = progress(redis.clone()).await;
        kills.push(at.0 + at.1 as usize);
        if at.0 + at.1 as usize == TASKS {
            break;
        }
    }
    let _last = Consumer::start(&stack, &group, &fast_rejoin);
    wait_until("every task after the kills", Duration::from_secs(120), || {
        let r = redis.clone();
        async move {
            let (m, c) = progress(r).await;
            m + c as usize >= TASKS
        }
    })
    .await;
    // Anything applied twice would show a moment later.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (members, counted) = progress(redis.clone()).await;
    let elapsed = started.elapsed();
    println!("kills at {kills:?}; members {members}, increments {counted}, in {elapsed:?}");
    record(
        "Consumer killed while draining",
        "`tests/reliability.rs::the_consumer_killed_ten_times_while_draining_loses_nothing_and_applies_nothing_twice`: \
         a backlog of SADD (idempotent) and INCRBY (non-idempotent, guarded) tasks, drained by `redis-retry consume`, \
         SIGKILLed again and again mid-stream, then restarted.",
        &[
            ("tasks", TASKS.to_string()),
            ("SIGKILLs while draining", kills.len().to_string()),
            ("tasks applied when each kill landed", format!("{kills:?}")),
            ("lost", (TASKS / 2 - members.min(TASKS / 2) + (TASKS / 2).saturating_sub(counted as usize)).to_string()),
            ("increments applied twice", (counted as usize).saturating_sub(TASKS / 2).to_string()),
            ("total time", format!("{:.1} s", elapsed.as_secs_f64())),
        ],
    );
    assert_eq!(kills.len(), 10, "killed ten times mid-stream: {kills:?}");
    assert_eq!(members, TASKS / 2, "every SADD applied");
    assert_eq!(counted as usize, TASKS / 2, "every INCRBY applied exactly once");
}
