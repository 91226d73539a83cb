//! The operator's side of the `redis-retry` binary, against a real broker and Redis:
//! configuration precedence, `enqueue`, `topics ensure`, the DLQ round trip and the metrics
//! endpoint.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use rdkafka::Message;
use redis_retry::{DlqReason, RedisTask};
use support::binary::{assert_config_error, run, stack_env, Consumer};
use support::stack::{wait_until, Stack};
use support::unique;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The value of `key = ...` in `redis-retry config` output.
fn setting(output: &str, key: &str) -> String {
    output
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} in:\n{output}"))
        .trim_matches('"')
        .to_string()
}

fn temp_file(name: &str, contents: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("{}-{name}", unique("redis-retry")));
    std::fs::write(&path, contents).unwrap();
    path
}

#[test]
fn settings_come_from_flags_then_environment_then_file_then_defaults() {
    let file = temp_file(
        "settings.toml",
        "brokers = \"file:9092\"\ngroup = \"file-group\"\ntopic = \"file-topic\"\nretry_tiers = 5\n\n[kafka]\nsasl.mechanism = \"PLAIN\"\n\"sasl.password\" = \"hunter2\"\n",
    );
    let env = vec![
        ("REDIS_RETRY_CONFIG", file.display().to_string()),
        ("REDIS_RETRY_BROKERS", "env:9092".to_string()),
        ("REDIS_RETRY_GROUP", "env-group".to_string()),
    ];
    let out = run(&["config", "--brokers", "flag:9092"], &env, b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert_eq!(setting(&shown, "brokers"), "flag:9092", "a flag beats everything");
    assert_eq!(setting(&shown, "group"), "env-group", "the environment beats the file");
    assert_eq!(setting(&shown, "topic"), "file-topic", "the file beats the default");
    assert_eq!(setting(&shown, "retry_tiers"), "5");
    assert_eq!(setting(&shown, "max_age"), "1day", "defaults fill the rest");
    assert!(shown.contains("\"sasl.mechanism\" = \"PLAIN\""), "kafka properties pass through:\n{shown}");
    assert!(!shown.contains("hunter2"), "passwords are never printed:\n{shown}");
}

#[test]
fn the_signing_key_comes_from_a_flag_or_a_file_and_is_never_printed() {
    let key = "a-signing-key-of-32-bytes-length";
    let file = temp_file("signing.key", &format!("{key}\n"));
    for args in
        [vec!["config", "--signing-key", key], vec!["config", "--signing-key-file", file.to_str().unwrap()]]
    {
        let out = run(&args, &[], b"");
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        let shown = text(&out.stdout);
        assert_eq!(setting(&shown, "signing_key"), "***", "{args:?}: the key is set, and masked");
        assert!(!shown.contains(key), "{args:?}: the key is never printed:\n{shown}");
    }
    let both = run(&["config", "--signing-key", key, "--signing-key-file", file.to_str().unwrap()], &[], b"");
    assert_eq!(both.status.code(), Some(2), "a key from two places is refused");
}

#[test]
fn topics_ensure_against_no_broker_fails_naming_the_brokers_it_tried() {
    // Nothing listens on port 1.
    let out = run(&["topics", "ensure", "--brokers", "127.0.0.1:1"], &[], b"");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "a runtime failure, not a bad setting:\n{stderr}");
    assert!(stderr.contains("no Kafka broker of 127.0.0.1:1 answered"), "names the brokers:\n{stderr}");
}

#[test]
fn bad_configuration_names_the_setting_and_exits_2() {
    let typo = temp_file("typo.toml", "brokerz = \"x\"\n");
    let bad_type = temp_file("type.toml", "partitions = \"many\"\n");
    // (arguments, environment, what the message must name)
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, String)>, &'a str);
    let cases: Vec<Case> = vec![
        (vec!["config"], vec![("REDIS_RETRY_CONFIG", typo.display().to_string())], "brokerz"),
        (vec!["config", "--config", bad_type.to_str().unwrap()], vec![], "partitions"),
        (vec!["config", "--config", "/nonexistent/redis-retry.toml"], vec![], "--config"),
        (vec!["config"], vec![("REDIS_RETRY_RETRY_TIERS", "lots".into())], "retry_tiers"),
        (vec!["config"], vec![("REDIS_RETRY_MAX_AGE", "0s".into())], "max_age"),
        (vec!["config", "--retry-base-delay", "10m", "--retry-max-delay", "1m"], vec![], "retry_base_delay"),
        (vec!["consume", "--metrics-addr", "not-an-address"], vec![], "--metrics-addr"),
        (vec!["config", "--signing-key", "too-short"], vec![], "signing_key"),
        (vec!["config", "--signing-key-file", "/nonexistent/redis-retry.key"], vec![], "--signing-key-file"),
    ];
    for (args, env, names) in cases {
        let stderr = assert_config_error(&args, &env, names);
        let first = stderr.lines().next().unwrap_or_default();
        assert!(first.contains(names), "{args:?} {env:?}: the first line names `{names}`:\n{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_publishes_valid_lines_and_names_the_invalid_ones() {
    let stack = Stack::start().await;
    let good = |k: &str| text(&RedisTask::set(k, "v", Duration::ZERO).unwrap().to_json());
    let input = [
        good("a"),
        "{not json".to_string(),
        good("b"),
        r#"{"type":"simple","command":"flushall","args":[]}"#.to_string(),
        String::new(),
        r#"{"type":"simple","command":"del","args":["c"],"source":"Go"}"#.to_string(),
    ]
    .join("\n");
    let out = run(&["enqueue"], &stack_env(&stack, "g"), input.as_bytes());
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "rejected lines make the exit code 1:\n{stderr}");
    assert!(stdout.contains("enqueued 3, rejected 2"), "{stdout}");
    assert!(stderr.contains("line 2:") && stderr.contains("line 4:"), "{stderr}");
    assert!(stderr.contains("forbidden command `flushall`"), "{stderr}");
    let msgs = stack.kafka.read_messages(&stack.topic, 4, Duration::from_secs(5)).await;
    assert_eq!(msgs.len(), 3, "the good lines around the bad ones are all there");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_ensure_creates_main_tiers_and_dlq() {
    let stack = Stack::start().await;
    let topic = unique("fresh");
    let mut env = stack_env(&stack, "g");
    env.retain(|(k, _)| *k != "REDIS_RETRY_TOPIC");
    let out =
        run(&["topics", "ensure", "--topic", &topic, "--retry-tiers", "2", "--partitions", "1"], &env, b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    let expected =
        [topic.clone(), format!("{topic}.retry.1"), format!("{topic}.retry.2"), format!("{topic}.dlq")];
    assert_eq!(listed, expected);
    for t in &expected {
        stack.kafka.produce(t, None, b"{}").await;
    }
    // Running it again is harmless.
    assert!(run(&["topics", "ensure", "--topic", &topic, "--retry-tiers", "2"], &env, b"").status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_list_replay_and_purge_round_trip() {
    let stack = Stack::start().await;
    let group = unique("group");
    let env = stack_env(&stack, &group);
    let secret = "value-never-shown";
    let long_error = format!("ERR boom {}", "x".repeat(200));
    for (key, source, reason, retries) in [
        ("user:1", "Repo.A", DlqReason::MaxRetries, 3),
        ("user:2", "Repo.A", DlqReason::Expired, 0),
        ("user:3", "Repo.B", DlqReason::PermanentError, 1),
    ] {
        let mut task = RedisTask::set(key, secret, Duration::ZERO).unwrap().with_source(source);
        task.retry_count = retries;
        stack.producer.dead_letter(&task, reason, &long_error).unwrap();
    }
    stack.producer.flush(Duration::from_secs(10)).unwrap();

    let list = run(&["dlq", "list"], &env, b"");
    let table = text(&list.stdout);
    assert!(list.status.success(), "{}", text(&list.stderr));
    assert!(table.contains("3 dead letter(s)"), "{table}");
    for expected in
        ["max_retries", "expired", "permanent_error", "Repo.A", "Repo.B", "set [user:1]", "user:3"]
    {
        assert!(table.contains(expected), "{expected} in:\n{table}");
    }
    assert!(!table.contains(secret), "values never appear:\n{table}");
    let json = run(&["dlq", "list", "--json"], &env, b"");
    let rows: Vec<serde_json::Value> =
        text(&json.stdout).lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    assert_eq!(rows.len(), 3);
    let attempts: Vec<_> = rows.iter().map(|r| (r["reason"].clone(), r["attempts"].clone())).collect();
    assert_eq!(
        attempts,
        [
            (serde_json::json!("max_retries"), serde_json::json!(4)),
            (serde_json::json!("expired"), serde_json::json!(0)),
            (serde_json::json!("permanent_error"), serde_json::json!(2)),
        ],
        "tries that reached Redis: none for a task expired before its first"
    );
    assert!(rows.iter().all(|r| r["error"] == long_error.as_str()), "JSON never cuts the error: {rows:?}");
    assert!(table.contains(&long_error), "nor does the table:\n{table}");

    let replay = run(&["dlq", "replay", "--filter", "source=Repo.A"], &env, b"");
    assert!(replay.status.success(), "{}", text(&replay.stderr));
    assert!(text(&replay.stdout).contains("replayed 2, kept 1"), "{}", text(&replay.stdout));
    assert!(text(&replay.stderr).contains("replaying: 3/3"), "plain progress lines off a terminal");
    let main = stack.kafka.read_messages(&stack.topic, 3, Duration::from_secs(5)).await;
    assert_eq!(main.len(), 2, "two tasks back on the main topic");
    for m in &main {
        let task = RedisTask::from_json(m.payload().unwrap()).unwrap();
        assert_eq!((task.source.as_str(), task.retry_count), ("Repo.A", 0), "a fresh start");
    }
    let after = text(&run(&["dlq", "list"], &env, b"").stdout);
    assert!(
        after.contains("1 dead letter(s)") && after.contains("Repo.B") && !after.contains("Repo.A"),
        "{after}"
    );

    let bad_filter = run(&["dlq", "purge", "--filter", "colour=red"], &env, b"");
    assert_eq!(bad_filter.status.code(), Some(2));
    assert!(text(&bad_filter.stderr).contains("reason, source, key, command"));
    let purge = run(&["dlq", "purge"], &env, b"");
    assert!(text(&purge.stdout).contains("purged 1, kept 0"), "{}", text(&purge.stdout));
    assert!(text(&run(&["dlq", "list"], &env, b"").stdout).contains("0 dead letter(s)"));
}

/// A plain HTTP/1.1 GET: status code and body.
fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the metrics endpoint");
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// `name{labels} value` lines of a Prometheus text exposition, summed over labels.
fn metric(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_endpoint_is_scraped_and_parsed() {
    let stack = Stack::start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    for k in ["m:1", "m:2"] {
        stack.producer.publish_and_wait(&RedisTask::del(k).unwrap()).await.unwrap();
    }
    stack.kafka.produce(&stack.topic, None, b"not a task").await;
    let _consumer = Consumer::start(&stack, &unique("group"), &["--metrics-addr", &addr]);
    let mut exposition = String::new();
    wait_until("applied and dead-lettered counters", Duration::from_secs(30), || {
        let scraped = TcpStream::connect(&addr).is_ok().then(|| http_get(&addr, "/metrics").1);
        if let Some(body) = &scraped {
            exposition.clone_from(body);
        }
        let done = scraped.is_some_and(|b| {
            metric(&b, "redis_retry_applied_total") >= 2.0
                && metric(&b, "redis_retry_dead_lettered_total") >= 1.0
        });
        async move { done }
    })
    .await;
    assert!(exposition.contains("redis_retry_dead_lettered_total{reason=\"malformed\"} 1"), "{exposition}");
    assert!(metric(&exposition, "redis_retry_apply_seconds_count") >= 2.0, "{exposition}");
    wait_until("the consumer-lag gauge from librdkafka's statistics", Duration::from_secs(20), || {
        let lag = http_get(&addr, "/metrics").1.contains("redis_retry_consumer_lag{");
        async move { lag }
    })
    .await;
    let (status, body) = http_get(&addr, "/health");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"status\":\"ok\""), "{body}");
}

/// A `redis-server` that speaks only TLS and wants a password, with a throwaway certificate.
struct TlsRedis {
    child: std::process::Child,
    port: u16,
}

impl TlsRedis {
    fn start() -> TlsRedis {
        let dir = std::env::temp_dir().join(unique("redis-tls"));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let made = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl");
        assert!(made.status.success(), "{}", text(&made.stderr));
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--tls-auth-clients",
                "no",
            ])
            .args(["--requirepass", "s3cret", "--save", "", "--appendonly", "no"])
            .arg("--tls-cert-file")
            .arg(&cert)
            .arg("--tls-key-file")
            .arg(&key)
            .arg("--tls-ca-cert-file")
            .arg(&cert)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server with TLS");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "TLS redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        TlsRedis { child, port }
    }

    /// TLS without certificate checks (the certificate is self-signed), with the password.
    fn url(&self) -> String {
        format!("rediss://:s3cret@127.0.0.1:{}/#insecure", self.port)
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_reaches_a_redis_behind_tls_and_a_password_through_the_url() {
    let stack = Stack::start().await;
    let tls = TlsRedis::start();
    stack
        .producer
        .publish_and_wait(&RedisTask::set("over:tls", "yes", Duration::ZERO).unwrap())
        .await
        .unwrap();
    let consumer = Consumer::start(&stack, &unique("group"), &["--redis-url", &tls.url()]);
    let client = redis::Client::open(tls.url()).unwrap();
    wait_until("the task applied over TLS", Duration::from_secs(30), || {
        let client = client.clone();
        async move {
            let Ok(mut conn) = client.get_multiplexed_async_connection().await else { return false };
            redis::cmd("GET")
                .arg("over:tls")
                .query_async::<Option<String>>(&mut conn)
                .await
                .ok()
                .flatten()
                .as_deref()
                == Some("yes")
        }
    })
    .await;
    assert!(!consumer.log().contains("s3cret"), "the password never reaches the log:\n{}", consumer.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_filters_by_age_and_position_and_names_positions_that_are_gone() {
    let stack = Stack::start().await;
    let group = unique("group");
    let env = stack_env(&stack, &group);
    for key in ["pos:1", "pos:2", "pos:3"] {
        let task = RedisTask::del(key).unwrap().with_source("Repo.Pos");
        stack.producer.dead_letter(&task, DlqReason::MaxRetries, "ERR x").unwrap();
    }
    stack.producer.flush(Duration::from_secs(10)).unwrap();
    let positions = |env: &[(&str, String)]| -> Vec<(String, String)> {
        text(&run(&["dlq", "list", "--json"], env, b"").stdout)
            .lines()
            .map(|l| {
                let row: serde_json::Value = serde_json::from_str(l).unwrap();
                (format!("{}:{}", row["partition"], row["offset"]), row["key"].as_str().unwrap().to_string())
            })
            .collect()
    };
    let before = positions(&env);
    let (second, _) = before.iter().find(|(_, k)| k == "pos:2").expect("pos:2 listed").clone();

    let replay = run(&["dlq", "replay", "--filter", &format!("at={second}")], &env, b"");
    assert!(replay.status.success(), "{}", text(&replay.stderr));
    assert!(text(&replay.stdout).contains("replayed 1, kept 2"), "{}", text(&replay.stdout));
    let main = stack.kafka.read_messages(&stack.topic, 2, Duration::from_secs(5)).await;
    let replayed: Vec<String> = main
        .iter()
        .map(|m| text(RedisTask::from_json(m.payload().unwrap()).unwrap().first_key().unwrap()))
        .collect();
    assert_eq!(replayed, ["pos:2"], "the entry at that position, and only it");

    // The kept entries moved to new positions: the old one names nothing now, and nothing
    // else is replayed in its place.
    let again = run(&["dlq", "replay", "--filter", &format!("at={second}")], &env, b"");
    assert_eq!(again.status.code(), Some(1), "what was asked was not done");
    assert!(text(&again.stdout).contains("replayed 0, kept 2"), "{}", text(&again.stdout));
    assert!(
        text(&again.stderr).contains(&second) && text(&again.stderr).contains("not in the dead-letter set")
    );
    let mut keys: Vec<String> = positions(&env).into_iter().map(|(_, k)| k).collect();
    keys.sort();
    assert_eq!(keys, ["pos:1", "pos:3"]);

    let none = run(&["dlq", "purge", "--filter", "age>1h"], &env, b"");
    assert!(text(&none.stdout).contains("purged 0, kept 2"), "fresh entries are not older than 1h");
    let young = run(&["dlq", "purge", "--filter", "age<1h"], &env, b"");
    assert!(text(&young.stdout).contains("purged 2, kept 0"), "{}", text(&young.stdout));
    let bad = run(&["dlq", "purge", "--filter", "at=zero"], &env, b"");
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad.stderr).contains("PARTITION:OFFSET"), "{}", text(&bad.stderr));
}
