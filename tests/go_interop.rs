//! One topic, Go and Rust on both ends, against real Redis and a real broker.
//!
//! `tests/go/guide.go` is the guide's `RedisTask`, its builders and its consumer, written with
//! Go's standard library only. Go → Rust: what Go services marshal (both generations) is
//! applied by `redis-retry consume`. Rust → Go: what our producer publishes decodes in the
//! guide's struct field by field, and the guide's consumer applying it leaves Redis as our
//! consumer does.

mod support;

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use redis::AsyncCommands;
use redis_retry::scope::{self, ScopeMeta};
use redis_retry::{Mode, RedisCmd, RedisTask, RetryConnection, TaskContext};
use support::binary::Consumer as Service;
use support::stack::{refuse_writes, snapshot, wait_until, Stack};
use support::unique;

/// The guide's Go program, built once per test binary into the target directory.
fn guide() -> &'static PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("go-guide").join("guide");
        let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/go/guide.go");
        let built = Command::new("go")
            .args(["build", "-o"])
            .arg(&out)
            .arg(&source)
            // Standard library only: nothing may be fetched, and no toolchain either.
            .env("GOPROXY", "off")
            .env("GOTOOLCHAIN", "local")
            .env("GOFLAGS", "")
            .output()
            .unwrap_or_else(|e| {
                panic!("Go is needed for this test (Debian: apt-get install golang-go; scripts/test installs it): {e}")
            });
        assert!(built.status.success(), "go build failed:\n{}", String::from_utf8_lossy(&built.stderr));
        out
    })
}

/// `guide emit PREFIX`: (name, payload) for every task kind Go services publish.
fn go_tasks(prefix: &str) -> Vec<(String, Vec<u8>)> {
    let out = Command::new(guide()).args(["emit", prefix]).output().expect("run guide emit");
    assert!(out.status.success(), "guide emit: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .expect("UTF-8")
        .lines()
        .map(|l| {
            let (name, json) = l.split_once('\t').expect("name<TAB>json");
            (name.to_string(), json.as_bytes().to_vec())
        })
        .collect()
}

fn payload<'a>(tasks: &'a [(String, Vec<u8>)], name: &str) -> &'a [u8] {
    &tasks.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("guide emits {name}")).1
}

/// A client of `group` that never joins it: it reads and moves the group's cursor.
fn group_client(bootstrap: &str, group: &str) -> BaseConsumer {
    rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .expect("consumer")
}

/// Committed offset of `group` on partition 0 of `topic` (-1 when none).
fn committed(bootstrap: &str, group: &str, topic: &str) -> i64 {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    let got =
        group_client(bootstrap, group).committed_offsets(tpl, Duration::from_secs(10)).expect("committed");
    match got.find_partition(topic, 0).map(|p| p.offset()) {
        Some(Offset::Offset(o)) => o,
        _ => -1,
    }
}

/// Moves `group`'s cursor on `topic` back to its start: every message is delivered again.
fn rewind(bootstrap: &str, group: &str, topic: &str) {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(0)).unwrap();
    group_client(bootstrap, group).commit(&tpl, CommitMode::Sync).expect("commit offset 0");
}

/// Waits until `group` has settled the first `total` messages of `topic`.
async fn wait_settled(what: &str, bootstrap: &str, group: &str, topic: &str, total: i64) {
    let (b, g, t) = (bootstrap.to_string(), group.to_string(), topic.to_string());
    wait_until(what, Duration::from_secs(90), || {
        let (b, g, t) = (b.clone(), g.clone(), t.clone());
        async move { tokio::task::spawn_blocking(move || committed(&b, &g, &t)).await.unwrap() == total }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_services_tasks_of_both_generations_are_applied_by_redis_retry_consume() {
    let stack = Stack::start().await;
    let mut redis = stack.conn().await;
    let p = unique("go");
    let k = |name: &str| format!("{p}{name}");
    redis::pipe()
        .set(k("del"), "cached")
        .hset_multiple(k("h2"), &[("cache", "1"), ("temp", "2"), ("keep", "3")])
        .sadd(k("s2"), &["user2", "user4"])
        .set(k("p:info"), "x")
        .set(k("later:a"), "stale")
        .set(k("later:b"), "stale")
        .set(k("mr:500"), "x")
        .set(k("mr:0"), "x")
        .set(k("mr:neg"), "x")
        .exec_async(&mut redis)
        .await
        .unwrap();
    let tasks = go_tasks(&p);
    for (_, json) in &tasks {
        stack.kafka.produce(&stack.topic, None, json).await;
    }
    let expired_later = String::from_utf8(payload(&tasks, "del_only").to_vec()).unwrap();
    // The same DEL-only task captured two days ago: past max_age, it is dead-lettered, and the
    // dead letter shows what the consumer made of it.
    let two_days_ago = (chrono::Utc::now() - chrono::Duration::days(2)).to_rfc3339();
    let expired_later = {
        let mut v: serde_json::Value = serde_json::from_str(&expired_later).unwrap();
        v["timestamp"] = serde_json::Value::String(two_days_ago);
        v["keys"] = serde_json::json!([k("expired:a")]);
        v.to_string()
    };
    stack.kafka.produce(&stack.topic, None, expired_later.as_bytes()).await;
    let total = tasks.len() as i64 + 1;

    let group = unique("group");
    let service_args = ["--allow-lua", "--log-format", "json", "--max-age", "1d"];
    let mut service = Service::start(&stack, &group, &service_args);
    let bootstrap = stack.kafka.bootstrap();
    wait_settled("every Go task to be settled", &bootstrap, &group, &stack.topic, total).await;

    // The guide's builders.
    assert!(!redis.exists::<_, bool>(k("del")).await.unwrap(), "DEL");
    assert_eq!(redis.get::<_, String>(k("set")).await.unwrap(), "token-1", "SET");
    assert!((250..=300).contains(&redis.ttl::<_, i64>(k("set")).await.unwrap()), "SET EX 300 keeps its TTL");
    assert_eq!(redis.get::<_, String>(k("set:n")).await.unwrap(), "42", "SET of a Go int");
    let h: HashMap<String, String> = redis.hgetall(k("h")).await.unwrap();
    assert_eq!(h, HashMap::from([("name".into(), "Alice".into()), ("age".into(), "42".into())]), "HSET");
    assert_eq!(redis.hkeys::<_, Vec<String>>(k("h2")).await.unwrap(), ["keep"], "HDEL");
    let mut s: Vec<String> = redis.smembers(k("s")).await.unwrap();
    s.sort();
    assert_eq!(s, ["user2", "user3"], "SADD");
    assert_eq!(redis.smembers::<_, Vec<String>>(k("s2")).await.unwrap(), ["user4"], "SREM");
    assert_eq!(redis.zscore::<_, _, f64>(k("z"), "m").await.unwrap(), 1.5, "ZADD with a Go float64 score");
    assert!(!redis.exists::<_, bool>(k("p:info")).await.unwrap(), "pipeline DEL");
    assert_eq!(redis.get::<_, String>(k("p:session")).await.unwrap(), "s", "pipeline SET");
    assert!(redis.sismember::<_, _, bool>(k("p:set"), "7").await.unwrap(), "pipeline SADD of a Go int");
    assert_eq!(redis.get::<_, String>(k("lua")).await.unwrap(), "from-lua", "Lua");
    // Two Go INCRs with identical bytes are two writes: each is named by where it was read.
    assert_eq!(
        redis.get::<_, i64>(k("counter")).await.unwrap(),
        2,
        "two identical Go INCRs are both applied"
    );
    for key in ["mr:500", "mr:0", "mr:neg"] {
        assert!(!redis.exists::<_, bool>(k(key)).await.unwrap(), "{key}: applied whatever max_retries says");
    }
    // The later generation: each key deleted whole.
    for key in ["later:a", "later:b"] {
        assert!(!redis.exists::<_, bool>(k(key)).await.unwrap(), "DEL-only form deletes {key}");
    }

    // The DEL-only task past max_age is a dead letter in our form, spans and all.
    let dead = stack.kafka.read_messages(&format!("{}.dlq", stack.topic), 1, Duration::from_secs(10)).await;
    assert_eq!(dead.len(), 1, "only the expired task is dead-lettered");
    assert_eq!(support::header(&dead[0], "reason").as_deref(), Some("expired"));
    let task = RedisTask::from_json(dead[0].payload().unwrap()).unwrap();
    assert_eq!(task.describe(), format!("del [{}]", k("expired:a")), "{task:?}");
    assert_eq!((task.span_id.as_str(), task.parent_span_id.as_str()), ("span-later", "parent-later"));
    assert_eq!((task.trace_id.as_str(), task.source.as_str()), ("trace-later", "user-service.pipeline"));
    assert_eq!(task.id, format!("{}:0:{}", stack.topic, total - 1), "named by topic:partition:offset");

    let log = service.log();
    let clamped: Vec<&str> = log.lines().filter(|l| l.contains("max_retries outside 0..=100")).collect();
    assert_eq!(clamped.len(), 2, "one warning for 500 and one for -1:\n{log}");
    assert!(
        clamped.iter().any(|l| l.contains("\"max_retries\":500") && l.contains("\"used\":100")),
        "{clamped:?}"
    );
    assert!(
        clamped.iter().any(|l| l.contains("\"max_retries\":-1") && l.contains("\"used\":0")),
        "{clamped:?}"
    );
    assert!(!log.contains("malformed"), "no Go task is refused as malformed:\n{log}");
    assert!(!log.contains("token-1") && !log.contains("from-lua"), "values never reach the log");

    // A redelivery is recognised: the same messages again, and the INCRs are not re-applied.
    service.signal(libc::SIGTERM);
    assert!(service.wait(Duration::from_secs(30)).success(), "{}", service.log());
    let (b, g, t) = (bootstrap.clone(), group.clone(), stack.topic.clone());
    let rewound = tokio::task::spawn_blocking(move || {
        rewind(&b, &g, &t);
        committed(&b, &g, &t)
    });
    assert_eq!(rewound.await.unwrap(), 0, "the group's cursor is back at the start");
    let again = Service::start(&stack, &group, &service_args);
    wait_settled("the redelivered tasks to be settled", &bootstrap, &group, &stack.topic, total).await;
    assert_eq!(
        redis.get::<_, i64>(k("counter")).await.unwrap(),
        2,
        "a redelivered Go INCR is not applied twice"
    );
    let log = again.log();
    let skipped = log.lines().filter(|l| l.contains("already applied; not applied again")).count();
    assert_eq!(skipped, 2, "both INCRs were read again and recognised:\n{log}");
}

/// One line of `guide apply`'s report: what the guide's struct holds after `json.Unmarshal`,
/// the commands its consumer sends, and whether Redis took them.
#[derive(Debug)]
struct GoView {
    decoded: bool,
    error: String,
    kind: String,
    commands: Option<Vec<Vec<String>>>,
    trace_id: String,
    user_uuid: String,
    device_id: String,
    timestamp: String,
    retry_count: i64,
    max_retries: i64,
    original_err: String,
    source: String,
    applied: bool,
}

impl GoView {
    fn parse(line: &str) -> GoView {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON report");
        let text = |f: &str| v[f].as_str().unwrap_or_default().to_string();
        GoView {
            decoded: v["decoded"].as_bool().unwrap_or(false),
            error: text("error"),
            kind: text("type"),
            commands: serde_json::from_value(v["commands"].clone()).ok(),
            trace_id: text("trace_id"),
            user_uuid: text("user_uuid"),
            device_id: text("device_id"),
            timestamp: text("timestamp"),
            retry_count: v["retry_count"].as_i64().unwrap_or(-1),
            max_retries: v["max_retries"].as_i64().unwrap_or(-1),
            original_err: text("original_err"),
            source: text("source"),
            applied: v["applied"].as_bool().unwrap_or(false),
        }
    }
}

/// Runs the guide's consumer over `payloads` against Redis at `addr` (database 0).
fn go_apply(addr: &str, payloads: &[Vec<u8>]) -> Vec<GoView> {
    let mut child = Command::new(guide())
        .args(["apply", addr])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run guide apply");
    let mut input = child.stdin.take().unwrap();
    for p in payloads {
        assert!(!p.contains(&b'\n'), "a task is one line of JSON");
        input.write_all(p).unwrap();
        input.write_all(b"\n").unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "guide apply: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(GoView::parse).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_our_producer_publishes_is_read_and_applied_by_the_guide_s_go_consumer() {
    let mut stack = Stack::start().await;
    let port = stack.redis.port();
    let db = |n: u8| format!("redis://127.0.0.1:{port}/{n}");
    let open = |url: String| async move {
        redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap()
    };
    // Go applies to database 0, our consumer to database 1, from the same messages.
    let (mut go_db, mut our_db) = (open(db(0)).await, open(db(1)).await);
    for conn in [&mut go_db, &mut our_db] {
        redis::pipe()
            .set("cached:1", "stale")
            .set("user:info:9", "old")
            .hset_multiple("user:3", &[("cache", "1"), ("temp", "2"), ("keep", "3")])
            .sadd("friends:2", &["user2", "user4"])
            .exec_async(conn)
            .await
            .unwrap();
    }

    let ctx = TaskContext::new().trace_id("trace-9").user_uuid("user-9").device_id("dev-9");
    let refused = "NOREPLICAS Not enough good replicas to write.";
    let built = vec![
        RedisTask::del("user:info:9").unwrap(),
        RedisTask::set("device:token:d1", "abc", Duration::from_secs(300)).unwrap(),
        RedisTask::set("short", "x", Duration::from_millis(90_500)).unwrap(),
        RedisTask::hset("user:2", "name", "Alice").unwrap(),
        RedisTask::hdel("user:3", ["cache", "temp"]).unwrap(),
        RedisTask::sadd("friends:1", ["user2", "user3"]).unwrap(),
        RedisTask::srem("friends:2", ["user2"]).unwrap(),
        RedisTask::pipeline(vec![
            RedisCmd::new("hset", ["user:9", "name", "Bob"]),
            RedisCmd::new("sadd", ["s:9", "a"]),
        ])
        .unwrap(),
        RedisTask::lua("return redis.call('SET', KEYS[1], ARGV[1])", ["lua:1"], ["v"]).unwrap(),
        RedisTask::command("expire", ["device:token:d1", "600"]).unwrap(),
        // An invalidation travels as the DEL it stands for.
        RedisTask::set("cached:1", "fresh-but-late", Duration::ZERO).unwrap().with_mode(Mode::Invalidate),
        // Not UTF-8: travels as {"b64": ...}, which the guide's consumer cannot send.
        RedisTask::set("binary:1", vec![0xff, 0x00, 0x9f], Duration::ZERO).unwrap(),
    ];
    let mut expected = Vec::new();
    for (i, task) in built.into_iter().enumerate() {
        let task = task
            .with_context(&ctx)
            .with_error(&refused)
            .with_source(format!("Built.{i}"))
            .with_max_retries(5)
            .unwrap();
        stack.producer.publish_and_wait(&task).await.unwrap();
        expected.push(task);
    }

    // Captured writes: a repository's writes while Redis refuses them.
    let mut admin = stack.conn().await;
    let mut conn = RetryConnection::new(open(db(2)).await).with_producer(stack.producer.clone());
    refuse_writes(&mut admin, true).await;
    let meta = |s: &str| ScopeMeta::new(s).context(TaskContext::new().trace_id("trace-cap"));
    let r: redis::RedisResult<()> =
        scope::capture(meta("Captured.setex"), async { conn.set_ex("session:c1", "s", 120).await }).await;
    assert!(r.is_err());
    let r: redis::RedisResult<()> = scope::capture(meta("Captured.pipeline"), async {
        redis::pipe().hset("user:c1", "name", "Carol").sadd("friends:c1", "u2").query_async(&mut conn).await
    })
    .await;
    assert!(r.is_err());
    let r: redis::RedisResult<()> = scope::capture(meta("Captured.multi_exec"), async {
        redis::pipe().atomic().set("account:c1", "10").incr("counter:c1", 1).query_async(&mut conn).await
    })
    .await;
    assert!(r.is_err());
    refuse_writes(&mut admin, false).await;
    let total = expected.len() + 3;

    let messages = stack.kafka.read_messages(&stack.topic, total, Duration::from_secs(20)).await;
    assert_eq!(messages.len(), total, "every task reached the topic");
    let payloads: Vec<Vec<u8>> = messages.iter().map(|m| m.payload().unwrap().to_vec()).collect();
    let views = go_apply(&format!("127.0.0.1:{port}"), &payloads);
    assert_eq!(views.len(), total);

    let binary_source = "Built.11";
    for (payload, go) in payloads.iter().zip(&views) {
        let ours = RedisTask::from_json(payload).unwrap();
        let name = ours.source.clone();
        if name == binary_source {
            // go-redis refuses a map argument: the Go consumer fails the task (and gives it up
            // after its retries). The README's compatibility table says so.
            assert!(go.decoded && !go.applied && go.error.contains("can't marshal"), "{go:?}");
            continue;
        }
        assert!(go.decoded && go.error.is_empty() && go.applied, "{name}: Go decodes and applies it: {go:?}");
        assert_eq!(go.kind, ours.kind.as_str(), "{name}: type");
        let ours_commands: Vec<Vec<String>> = match ours.kind {
            // Go sends a script as EVAL script numkeys keys... args.
            redis_retry::TaskKind::Lua => {
                let mut c =
                    vec!["eval".to_string(), ours.lua_script.clone(), ours.lua_keys.len().to_string()];
                c.extend(ours.lua_keys.iter().chain(&ours.lua_args).map(|a| text(a.as_bytes())));
                vec![c]
            }
            _ => ours.commands().iter().map(|c| c.iter().map(|p| text(p)).collect()).collect(),
        };
        assert_eq!(go.commands.as_ref(), Some(&ours_commands), "{name}: the commands Go sends");
        assert_eq!(
            (go.trace_id.as_str(), go.user_uuid.as_str(), go.device_id.as_str()),
            (ours.trace_id.as_str(), ours.user_uuid.as_str(), ours.device_id.as_str()),
            "{name}: context"
        );
        let go_time = chrono::DateTime::parse_from_rfc3339(&go.timestamp).unwrap();
        assert_eq!(go_time, ours.captured_at, "{name}: timestamp to the nanosecond");
        assert_eq!((go.retry_count, go.max_retries), (0, i64::from(ours.max_retries)), "{name}: retries");
        assert_eq!(
            (go.original_err.as_str(), go.source.as_str()),
            (ours.original_err.as_str(), name.as_str())
        );
    }
    let by_source = |s: &str| {
        let i = payloads.iter().position(|p| RedisTask::from_json(p).unwrap().source == s).unwrap();
        &views[i]
    };
    // The Rust side's own promises, as Go sees them.
    assert_eq!(
        by_source("Built.10").commands.as_ref().unwrap(),
        &[vec!["del".to_string(), "cached:1".into()]],
        "an invalidation is a DEL to Go too"
    );
    assert_eq!(by_source("Built.0").max_retries, 5);
    let multi = by_source("Captured.multi_exec").commands.clone().unwrap();
    assert_eq!(multi.len(), 2, "Go runs a MULTI/EXEC task's commands as a plain pipeline: {multi:?}");
    assert_eq!(by_source("Captured.setex").trace_id, "trace-cap");

    // Our consumer applies the same messages to database 1: both databases end the same.
    let config = stack.consumer_config().allow_lua(true);
    stack.spawn_consumer(config, &db(1)).await;
    // Our consumer also leaves at-most-once guards (`redis-retry:applied:*`) beside the data.
    let data = |mut keys: Vec<(String, String, String, bool)>| {
        keys.retain(|(k, ..)| !k.starts_with("redis-retry:") && k != "binary:1");
        keys
    };
    let go_snapshot = snapshot(&mut go_db).await;
    wait_until("our consumer to reach the same state as Go's", Duration::from_secs(60), || {
        let (mut c, want) = (our_db.clone(), go_snapshot.clone());
        async move { data(snapshot(&mut c).await) == want }
    })
    .await;
    assert!(go_snapshot.iter().any(|(k, ..)| k == "account:c1"), "captured writes applied: {go_snapshot:?}");
    assert!(!go_snapshot.iter().any(|(k, ..)| k == "cached:1"), "the invalidation deleted the stale key");
    let binary: Vec<u8> = our_db.get("binary:1").await.unwrap();
    assert_eq!(binary, [0xff, 0x00, 0x9f], "our consumer writes the binary value byte for byte");
    stack.stop_consumer().await.unwrap();
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8 argument")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_go_task_keeps_the_name_it_was_first_read_under_through_the_retry_tiers() {
    let mut stack = Stack::start().await;
    let mut admin = stack.conn().await;
    let p = unique("tier");
    let tasks = go_tasks(&p);
    // Redis refuses writes for a while: the Go INCR fails and moves to the first tier.
    refuse_writes(&mut admin, true).await;
    stack.kafka.produce(&stack.topic, None, payload(&tasks, "incr_1")).await;
    let config = stack.consumer_config();
    stack.spawn_consumer(config, &stack.redis.url()).await;
    let tier = format!("{}.retry.1", stack.topic);
    let moved = stack.kafka.read_messages(&tier, 1, Duration::from_secs(30)).await;
    assert_eq!(moved.len(), 1, "the failed Go task reached {tier}");
    let task = RedisTask::from_json(moved[0].payload().unwrap()).unwrap();
    assert_eq!(task.id, format!("{}:0:0", stack.topic), "named where it was first read, on the tier too");
    assert_eq!(task.retry_count, 1);

    refuse_writes(&mut admin, false).await;
    let counter = format!("{p}counter");
    wait_until("the retried INCR to be applied", Duration::from_secs(30), || {
        let (mut c, key) = (admin.clone(), counter.clone());
        async move { c.get::<_, Option<i64>>(key).await.ok().flatten() == Some(1) }
    })
    .await;
    let guard: Vec<String> =
        redis::cmd("KEYS").arg("redis-retry:applied:*").query_async(&mut admin).await.unwrap();
    assert_eq!(guard.len(), 1, "{guard:?}");
    assert!(guard[0].ends_with(&task.id), "the guard is kept under that name: {guard:?}");
    stack.stop_consumer().await.unwrap();
    assert_eq!(admin.get::<_, i64>(&counter).await.unwrap(), 1, "applied once");
}
