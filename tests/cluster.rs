//! The consumer against a real 3-node Redis Cluster and a real broker: `redis-retry consume
//! --redis-cluster` and an in-process `RedisRetryConsumer<ClusterConnection>` apply tasks over
//! keys on every node, a write to a stopped node is captured through `RetryConnection` and
//! applied once the node is back, and the final state is checked key by key through the cluster.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use rdkafka::message::{Headers, Message, OwnedMessage};
use redis::cluster_async::ClusterConnection;
use redis::AsyncCommands;
use redis_retry::scope::{self, ScopeMeta};
use redis_retry::{Mode, RedisCmd, RedisTask, RetryConnection, Script};
use support::binary::{assert_config_error, Consumer};
use support::cluster::RedisCluster;
use support::stack::{wait_until, Stack};
use support::unique;

/// What a key must hold once every task was applied.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    Absent,
    Text(String),
    /// A string with a TTL still running.
    TextWithTtl(String),
    Hash(Vec<(String, String)>),
    Set(Vec<String>),
}

/// Tasks to publish, the data to put in the cluster first (for the DELs to delete), and the
/// state every key must end in.
#[derive(Default)]
struct Workload {
    seed: Vec<(String, String)>,
    tasks: Vec<RedisTask>,
    expect: Vec<(String, Expect)>,
}

impl Workload {
    fn task(&mut self, task: Result<RedisTask, redis_retry::TaskError>) {
        self.tasks.push(task.expect("a valid task"));
    }

    fn expect(&mut self, key: &str, state: Expect) {
        self.expect.push((key.to_string(), state));
    }

    /// Publishes the tasks in order, then a last `SET` on `done` so that seeing it applied
    /// means everything before it on the (single-partition) topic was settled.
    async fn publish(&self, stack: &Stack, done: &str) {
        for task in &self.tasks {
            stack.producer.publish_and_wait(task).await.expect("publish");
        }
        let last = RedisTask::set(done, "1", Duration::ZERO).expect("task");
        stack.producer.publish_and_wait(&last).await.expect("publish");
    }
}

/// Writes whose keys each stay in one slot, spread over all three nodes: SET (with and without
/// TTL), DEL, HSET, HDEL, SADD, SREM, a pipeline whose keys share a hash tag, invalidations,
/// and a Lua script whose keys share a hash tag.
fn single_slot_workload(cluster: &RedisCluster, tag: &str) -> Workload {
    let mut w = Workload::default();
    for node in 0..3 {
        for (i, key) in cluster.keys_on(node, &format!("{tag}:set:n{node}"), 8).iter().enumerate() {
            let value = format!("v-{node}-{i}");
            if i % 2 == 0 {
                w.task(RedisTask::set(key, value.as_str(), Duration::from_secs(600)));
                w.expect(key, Expect::TextWithTtl(value));
            } else {
                w.task(RedisTask::set(key, value.as_str(), Duration::ZERO));
                w.expect(key, Expect::Text(value));
            }
        }
        for key in cluster.keys_on(node, &format!("{tag}:del:n{node}"), 3) {
            w.seed.push((key.clone(), "stale".into()));
            w.task(RedisTask::del(&key));
            w.expect(&key, Expect::Absent);
        }
        let hash = cluster.keys_on(node, &format!("{tag}:hash:n{node}"), 1).remove(0);
        w.task(RedisTask::hset(&hash, "name", "Alice"));
        w.task(RedisTask::hset(&hash, "age", "42"));
        w.task(RedisTask::hset(&hash, "temp", "x"));
        w.task(RedisTask::hdel(&hash, ["temp"]));
        w.expect(&hash, Expect::Hash(vec![("age".into(), "42".into()), ("name".into(), "Alice".into())]));
        let set = cluster.keys_on(node, &format!("{tag}:friends:n{node}"), 1).remove(0);
        w.task(RedisTask::sadd(&set, ["u1", "u2", "u3"]));
        w.task(RedisTask::srem(&set, ["u2"]));
        w.expect(&set, Expect::Set(vec!["u1".into(), "u3".into()]));
        // The seed's DeleteUserCacheAndRelation, with the keys in one slot as a cluster needs.
        let user = format!("{{{tag}:user:n{node}}}");
        for part in ["info", "relation", "session"] {
            w.seed.push((format!("{user}:{part}"), "cached".into()));
        }
        w.task(RedisTask::pipeline(vec![
            RedisCmd::new("del", [format!("{user}:info")]),
            RedisCmd::new("del", [format!("{user}:relation")]),
            RedisCmd::new("set", [format!("{user}:session"), "fresh".into()]),
        ]));
        w.expect(&format!("{user}:info"), Expect::Absent);
        w.expect(&format!("{user}:relation"), Expect::Absent);
        w.expect(&format!("{user}:session"), Expect::Text("fresh".into()));
        // Invalidations: a late SET becomes a DEL of what it would have written.
        let cache = cluster.keys_on(node, &format!("{tag}:cache:n{node}"), 1).remove(0);
        w.seed.push((cache.clone(), "stale".into()));
        w.task(RedisTask::set(&cache, "new", Duration::ZERO).map(|t| t.with_mode(Mode::Invalidate)));
        w.expect(&cache, Expect::Absent);
        let profile = format!("{{{tag}:profile:n{node}}}");
        w.seed.push((format!("{profile}:a"), "stale".into()));
        w.seed.push((format!("{profile}:b"), "stale".into()));
        w.task(
            RedisTask::command(
                "mset",
                [format!("{profile}:a"), "1".into(), format!("{profile}:b"), "2".into()],
            )
            .and_then(|t| t.invalidation()),
        );
        w.expect(&format!("{profile}:a"), Expect::Absent);
        w.expect(&format!("{profile}:b"), Expect::Absent);
        // Lua, keys in one slot through a hash tag.
        let lua = format!("{{{tag}:lua:n{node}}}");
        w.task(RedisTask::lua(
            "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('SADD', KEYS[2], ARGV[2])",
            [format!("{lua}:token"), format!("{lua}:seen")],
            [format!("tok-{node}"), "d1".into()],
        ));
        w.expect(&format!("{lua}:token"), Expect::Text(format!("tok-{node}")));
        w.expect(&format!("{lua}:seen"), Expect::Set(vec!["d1".into()]));
        // Non-idempotent writes go through the at-most-once guard, whose key must share the
        // slot of the task's key; each is published twice, as Kafka may redeliver it.
        let counter = cluster.keys_on(node, &format!("{tag}:counter:n{node}"), 1).remove(0);
        let incr = RedisTask::command("incrby", [counter.clone(), "5".into()]).expect("task");
        w.tasks.push(incr.clone());
        w.tasks.push(incr);
        w.expect(&counter, Expect::Text("5".into()));
        let events = format!("{{{tag}:events:n{node}}}");
        let push = RedisTask::pipeline(vec![
            RedisCmd::new("incr", [format!("{events}:count")]),
            RedisCmd::new("sadd", [format!("{events}:kinds"), "login".into()]),
        ])
        .expect("task");
        w.tasks.push(push.clone());
        w.tasks.push(push);
        w.expect(&format!("{events}:count"), Expect::Text("1".into()));
        w.expect(&format!("{events}:kinds"), Expect::Set(vec!["login".into()]));
    }
    w
}

/// Writes whose keys live on different nodes within one task: a pipeline over three nodes,
/// the invalidation of such a pipeline, and multi-key commands (DEL, MSET) across slots.
fn cross_slot_workload(cluster: &RedisCluster, tag: &str) -> Workload {
    let mut w = Workload::default();
    let on = |node: usize, what: &str| cluster.keys_on(node, &format!("{tag}:{what}:n{node}"), 1).remove(0);
    let (a, b, c) = (on(0, "pipe"), on(1, "pipe"), on(2, "pipe"));
    w.seed.push((a.clone(), "stale".into()));
    w.task(RedisTask::pipeline(vec![
        RedisCmd::new("del", [a.clone()]),
        RedisCmd::new("set", [b.clone(), "from-pipeline".into()]),
        RedisCmd::new("hset", [c.clone(), "f".into(), "v".into()]),
    ]));
    w.expect(&a, Expect::Absent);
    w.expect(&b, Expect::Text("from-pipeline".into()));
    w.expect(&c, Expect::Hash(vec![("f".into(), "v".into())]));
    let (x, y, z) = (on(0, "inv"), on(1, "inv"), on(2, "inv"));
    for k in [&x, &y, &z] {
        w.seed.push((k.clone(), "stale".into()));
        w.expect(k, Expect::Absent);
    }
    w.task(
        RedisTask::pipeline(vec![
            RedisCmd::new("set", [x.clone(), "new".into()]),
            RedisCmd::new("set", [y.clone(), "new".into()]),
            RedisCmd::new("set", [z.clone(), "new".into()]),
        ])
        .map(|t| t.with_mode(Mode::Invalidate)),
    );
    let (d0, d1, d2) = (on(0, "multidel"), on(1, "multidel"), on(2, "multidel"));
    for k in [&d0, &d1, &d2] {
        w.seed.push((k.clone(), "stale".into()));
        w.expect(k, Expect::Absent);
    }
    w.task(RedisTask::command("del", [d0, d1, d2]));
    let (m0, m1) = (on(0, "mset"), on(1, "mset"));
    w.task(RedisTask::command("mset", [m0.clone(), "m0".into(), m1.clone(), "m1".into()]));
    w.expect(&m0, Expect::Text("m0".into()));
    w.expect(&m1, Expect::Text("m1".into()));
    // Non-idempotent, so guarded: at most once even across slots, and even when redelivered.
    let (i0, i2) = (on(0, "incr"), on(2, "incr"));
    let incrs =
        RedisTask::pipeline(vec![RedisCmd::new("incr", [i0.clone()]), RedisCmd::new("incr", [i2.clone()])])
            .expect("task");
    w.tasks.push(incrs.clone());
    w.tasks.push(incrs);
    w.expect(&i0, Expect::Text("1".into()));
    w.expect(&i2, Expect::Text("1".into()));
    w
}

/// Puts the workload's seed data in the cluster, checking that it covers every node.
async fn seed(cluster: &RedisCluster, conn: &mut ClusterConnection, w: &Workload) {
    for (key, value) in &w.seed {
        let () = conn.set(key, value).await.expect("seed SET");
    }
    let nodes: BTreeSet<usize> = w.expect.iter().map(|(k, _)| cluster.node_of(k.as_bytes())).collect();
    assert_eq!(nodes.len(), 3, "the workload touches every node");
}

/// What `key` holds now, read through the cluster.
async fn state_of(conn: &mut ClusterConnection, key: &str) -> Expect {
    let kind: String = redis::cmd("TYPE").arg(key).query_async(conn).await.expect("TYPE");
    match kind.as_str() {
        "none" => Expect::Absent,
        "string" => {
            let value: String = conn.get(key).await.expect("GET");
            let ttl: i64 = conn.ttl(key).await.expect("TTL");
            if ttl > 0 {
                Expect::TextWithTtl(value)
            } else {
                Expect::Text(value)
            }
        }
        "hash" => {
            let mut fields: Vec<(String, String)> = conn.hgetall(key).await.expect("HGETALL");
            fields.sort();
            Expect::Hash(fields)
        }
        "set" => {
            let mut members: Vec<String> = conn.smembers(key).await.expect("SMEMBERS");
            members.sort();
            Expect::Set(members)
        }
        other => panic!("unexpected type {other} for {key}"),
    }
}

/// Every key in the state the workload expects; the mismatches listed otherwise.
async fn assert_applied(conn: &mut ClusterConnection, w: &Workload) {
    let mut wrong = Vec::new();
    for (key, expected) in &w.expect {
        let actual = state_of(conn, key).await;
        if &actual != expected {
            wrong.push(format!("{key}: expected {expected:?}, found {actual:?}"));
        }
    }
    assert!(wrong.is_empty(), "{} of {} keys wrong:\n{}", wrong.len(), w.expect.len(), wrong.join("\n"));
    println!("{} keys checked over 3 nodes, {} tasks applied", w.expect.len(), w.tasks.len());
}

async fn wait_for_key(conn: &ClusterConnection, key: &str, timeout: Duration) {
    wait_until(&format!("{key} to be applied"), timeout, || {
        let mut c = conn.clone();
        let key = key.to_string();
        async move { c.exists::<_, bool>(key).await.unwrap_or(false) }
    })
    .await;
}

fn header(msg: &OwnedMessage, key: &str) -> String {
    msg.headers()
        .and_then(|h| h.iter().find(|h| h.key == key).and_then(|h| h.value))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default()
}

/// Dead letters as `reason: error (command)`, for assertion messages.
async fn dead_letters(stack: &Stack, wait: Duration) -> Vec<String> {
    let dlq = stack.kafka.read_messages(&format!("{}.dlq", stack.topic), 100, wait).await;
    dlq.iter()
        .map(|m| {
            let task = RedisTask::from_json(m.payload().unwrap_or_default()).map(|t| t.describe());
            format!("{}: {} ({})", header(m, "reason"), header(m, "error"), task.unwrap_or_default())
        })
        .collect()
}

#[test]
fn the_harness_cluster_serves_every_slot_from_three_nodes() {
    let cluster = RedisCluster::start();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut conn = cluster.conn().await;
        for node in 0..3 {
            for key in cluster.keys_on(node, "harness", 5) {
                let () = conn.set(&key, node).await.unwrap();
                assert_eq!(conn.get::<_, usize>(&key).await.unwrap(), node);
                // Straight to the node, bypassing the cluster client: the key lives there.
                let mut direct = redis::Client::open(cluster.urls()[node].as_str())
                    .unwrap()
                    .get_multiplexed_async_connection()
                    .await
                    .unwrap();
                assert_eq!(direct.get::<_, usize>(&key).await.unwrap(), node, "{key} on node {node}");
            }
        }
    });
    assert_eq!(cluster.slot_of(b"{user:1}:info"), cluster.slot_of(b"user:1"), "hash tags");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_retry_consume_with_redis_cluster_applies_tasks_on_every_node() {
    let stack = Stack::start().await;
    let cluster = RedisCluster::start();
    let mut conn = cluster.conn().await;
    let w = single_slot_workload(&cluster, &unique("bin"));
    seed(&cluster, &mut conn, &w).await;
    w.publish(&stack, "bin-done").await;
    let seeds = cluster.seed_list();
    let consumer = Consumer::start(
        &stack,
        &unique("group"),
        &["--redis-cluster", "--redis-url", &seeds, "--allow-lua", "--log-format", "json"],
    );
    wait_for_key(&conn, "bin-done", Duration::from_secs(90)).await;
    let dlq = dead_letters(&stack, Duration::from_secs(2)).await;
    assert!(dlq.is_empty(), "dead letters:\n{}\nconsumer log:\n{}", dlq.join("\n"), consumer.log());
    assert_applied(&mut conn, &w).await;
    assert!(consumer.log().contains("redis retry consumer starting"), "{}", consumer.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_process_consumer_on_a_cluster_connection_applies_tasks_on_every_node() {
    let mut stack = Stack::start().await;
    let cluster = RedisCluster::start();
    let mut conn = cluster.conn().await;
    let mut w = single_slot_workload(&cluster, &unique("lib"));
    // MULTI/EXEC cannot span nodes: such a task is dead-lettered whole, nothing applied.
    let (t0, t1) = (cluster.keys_on(0, "atomic", 1).remove(0), cluster.keys_on(1, "atomic", 1).remove(0));
    let mut atomic = RedisTask::pipeline(vec![
        RedisCmd::new("set", [t0.clone(), "x".into()]),
        RedisCmd::new("set", [t1.clone(), "x".into()]),
    ])
    .expect("task");
    atomic.atomic = true;
    w.tasks.push(atomic);
    w.expect(&t0, Expect::Absent);
    w.expect(&t1, Expect::Absent);
    seed(&cluster, &mut conn, &w).await;
    w.publish(&stack, "lib-done").await;
    let config = stack.consumer_config().allow_lua(true);
    stack.spawn_consumer_on(config, cluster.conn().await);
    wait_for_key(&conn, "lib-done", Duration::from_secs(90)).await;
    stack.stop_consumer().await.expect("consumer stops cleanly");
    let dlq = dead_letters(&stack, Duration::from_secs(2)).await;
    assert_eq!(dlq.len(), 1, "only the cross-node transaction is dead-lettered:\n{}", dlq.join("\n"));
    assert!(dlq[0].starts_with("permanent_error: ") && dlq[0].contains("CrossSlot"), "{}", dlq[0]);
    assert_applied(&mut conn, &w).await;
}

/// Today a task whose commands or keys span slots is refused by the cluster client
/// (`CrossSlot: Received crossed slots in pipeline`) or by the node (`CROSSSLOT Keys in
/// request don't hash to the same slot`) and dead-lettered as `permanent_error`; it passes once
/// the consumer sends such a task slot by slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_whose_keys_span_nodes_are_applied_on_a_cluster() {
    let stack = Stack::start().await;
    let cluster = RedisCluster::start();
    let mut conn = cluster.conn().await;
    let w = cross_slot_workload(&cluster, &unique("cross"));
    seed(&cluster, &mut conn, &w).await;
    w.publish(&stack, "cross-done").await;
    let seeds = cluster.seed_list();
    let consumer = Consumer::start(&stack, &unique("group"), &["--redis-cluster", "--redis-url", &seeds]);
    wait_for_key(&conn, "cross-done", Duration::from_secs(90)).await;
    let dlq = dead_letters(&stack, Duration::from_secs(2)).await;
    assert!(dlq.is_empty(), "dead letters:\n{}\nconsumer log:\n{}", dlq.join("\n"), consumer.log());
    assert_applied(&mut conn, &w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_to_a_stopped_node_is_captured_from_a_cluster_connection_and_applied_when_it_returns() {
    let mut stack = Stack::start().await;
    let mut cluster = RedisCluster::start();
    let mut admin = cluster.conn().await;
    let mut conn = RetryConnection::new(cluster.conn().await).with_producer(stack.producer.clone());
    let down = cluster.keys_on(1, "captured", 3);
    let up = cluster.keys_on(0, "untouched", 1).remove(0);
    cluster.stop_node(1);

    let meta = ScopeMeta::new("ClusterRepository.Save");
    let mut outcomes = Vec::new();
    for key in &down {
        let result: redis::RedisResult<()> =
            scope::capture(meta.clone(), async { conn.set_ex(key, "kept", 600).await }).await;
        outcomes.push(format!("{key}: {result:?}"));
        assert!(result.is_err(), "a write to the stopped node fails: {key}");
    }
    let script = Script::new("return redis.call('SET', KEYS[1], ARGV[1])");
    let lua: redis::RedisResult<()> = scope::capture(meta.clone(), async {
        script.key(&down[0]).arg("from-lua").invoke_async(&mut conn).await
    })
    .await;
    outcomes.push(format!("lua on {}: {lua:?}", down[0]));
    // A non-idempotent write: queued only if it certainly never ran, dead-lettered as
    // `ambiguous` otherwise; never applied twice either way.
    let counter = cluster.keys_on(1, "captured-counter", 1).remove(0);
    let incr: redis::RedisResult<i64> =
        scope::capture(meta.clone(), async { conn.incr(&counter, 1).await }).await;
    outcomes.push(format!("incr {counter}: {incr:?}"));
    assert!(incr.is_err(), "INCR on the stopped node fails");
    let ok: redis::RedisResult<()> =
        scope::capture(meta.clone(), async { conn.set(&up, "live").await }).await;
    println!("with node 1 stopped:\n{}", outcomes.join("\n"));
    assert!(ok.is_ok(), "the other nodes keep serving their slots: {ok:?}");

    let captured = stack.kafka.read_messages(&stack.topic, down.len() + 2, Duration::from_secs(10)).await;
    let tasks: Vec<RedisTask> = captured
        .iter()
        .map(|m| RedisTask::from_json(m.payload().unwrap_or_default()).expect("task"))
        .collect();
    let described: Vec<String> =
        tasks.iter().map(|t| format!("{} <- {}", t.describe(), t.original_err)).collect();
    println!("captured:\n{}", described.join("\n"));
    let keys: BTreeSet<Vec<u8>> = tasks.iter().filter_map(|t| t.first_key().map(<[u8]>::to_vec)).collect();
    for key in &down {
        assert!(keys.contains(key.as_bytes()), "{key} was captured: {described:?}");
    }
    assert!(!keys.contains(up.as_bytes()), "the successful write was not captured");
    let incr_dead =
        stack.kafka.read_messages(&format!("{}.dlq", stack.topic), 1, Duration::from_secs(3)).await;
    let incr_dead: Vec<String> = incr_dead.iter().map(|m| header(m, "reason")).collect();
    let incr_queued = keys.contains(counter.as_bytes());
    println!("the INCR was {}", if incr_queued { "queued" } else { "dead-lettered" });
    assert!(
        incr_queued != (incr_dead == ["ambiguous"]),
        "the INCR is either queued or dead-lettered as ambiguous: queued {incr_queued}, dead letters {incr_dead:?}"
    );

    cluster.restart_node(1);
    // Behind the captured tasks on the single partition: once it is applied, they were settled.
    let last = RedisTask::set("capture-done", "1", Duration::ZERO).expect("task");
    stack.producer.publish_and_wait(&last).await.expect("publish");
    let config = stack.consumer_config().allow_lua(true);
    stack.spawn_consumer_on(config, cluster.conn().await);
    wait_for_key(&admin, "capture-done", Duration::from_secs(90)).await;
    stack.stop_consumer().await.expect("consumer stops cleanly");
    let dlq = dead_letters(&stack, Duration::from_secs(2)).await;
    assert_eq!(dlq.len(), usize::from(!incr_queued), "dead letters:\n{}", dlq.join("\n"));
    let counted = state_of(&mut admin, &counter).await;
    let expected = if incr_queued { Expect::Text("1".into()) } else { Expect::Absent };
    assert_eq!(counted, expected, "the INCR applied at most once");
    for key in &down[1..] {
        assert_eq!(state_of(&mut admin, key).await, Expect::TextWithTtl("kept".into()), "{key}");
    }
    // The Lua task came after the SET on the same key, on the same partition.
    assert_eq!(state_of(&mut admin, &down[0]).await, Expect::Text("from-lua".into()));
    assert_eq!(state_of(&mut admin, &up).await, Expect::Text("live".into()));
}

#[test]
fn a_bad_cluster_seed_list_is_a_clear_error_with_exit_code_2() {
    let cases: &[(&[&str], &str)] = &[
        (&["consume", "--redis-cluster", "--redis-url", "redis://127.0.0.1:7000,nosuch://x"], "seed node 2"),
        (&["consume", "--redis-cluster", "--redis-url", "redis://127.0.0.1:7000/4"], "only database 0"),
        (&["consume", "--redis-url", "redis://127.0.0.1:7000,redis://127.0.0.1:7001"], "redis_cluster"),
        (&["consume", "--redis-cluster=maybe"], "--redis-cluster"),
    ];
    for (args, expected) in cases {
        assert_config_error(args, &[], expected);
    }
    let env = [("REDIS_RETRY_REDIS_CLUSTER", "yes please".to_string())];
    assert_config_error(&["consume"], &env, "REDIS_RETRY_REDIS_CLUSTER");
}
