//! Poison input: every kind of bad message ends in the dead-letter topic with the right reason,
//! the consumer stays up, and the good tasks queued behind the bad ones are applied on time.

mod support;

use std::time::{Duration, Instant};

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use redis::AsyncCommands;
use redis_retry::signing::{SigningKey, SIGNATURE_HEADER};
use redis_retry::RedisTask;
use support::header;
use support::report::record;
use support::stack::{wait_until, Stack};

const KEY: &str = "a shared secret for the poison test";

/// `(name, payload, signed?, expected reason)`: signed payloads get a valid signature.
fn poison() -> Vec<(&'static str, Vec<u8>, bool, &'static str)> {
    let json = |s: &str| s.as_bytes().to_vec();
    vec![
        ("invalid JSON", json("{not json"), true, "malformed"),
        ("truncated JSON", json(r#"{"type":"simple","command":"del","args":["k"#), true, "malformed"),
        ("empty payload", Vec::new(), true, "malformed"),
        ("JSON null", json("null"), true, "malformed"),
        ("JSON array", json(r#"[{"type":"simple"}]"#), true, "malformed"),
        ("not UTF-8", vec![0xff, 0xfe, 0x00, b'{'], true, "malformed"),
        ("wrong type for args", json(r#"{"type":"simple","command":"del","args":"k"}"#), true, "malformed"),
        (
            "wrong type for retry_count",
            json(r#"{"type":"simple","command":"del","args":["k"],"retry_count":"x"}"#),
            true,
            "malformed",
        ),
        (
            "negative retry_count",
            json(r#"{"type":"simple","command":"del","args":["k"],"retry_count":-1}"#),
            true,
            "malformed",
        ),
        // Any int is a Go WithMaxRetries (clamped, see tests/go_interop.rs); anything else is not.
        (
            "max_retries not a number",
            json(r#"{"type":"simple","command":"del","args":["k"],"max_retries":"many"}"#),
            true,
            "malformed",
        ),
        (
            "both forms at once",
            json(r#"{"type":"simple","command":"del","args":["k"],"keys":["k"]}"#),
            true,
            "malformed",
        ),
        ("DEL-only form without keys", json(r#"{"keys":[],"source":"s"}"#), true, "malformed"),
        ("unknown kind", json(r#"{"type":"batch","command":"del","args":["k"]}"#), true, "malformed"),
        (
            "bad timestamp",
            json(r#"{"type":"simple","command":"del","args":["k"],"timestamp":"yesterday"}"#),
            true,
            "malformed",
        ),
        ("empty pipeline", json(r#"{"type":"pipeline","pipeline_cmds":[]}"#), true, "malformed"),
        ("missing key", json(r#"{"type":"simple","command":"del","args":[]}"#), true, "malformed"),
        ("null argument", json(r#"{"type":"simple","command":"set","args":["k",null]}"#), true, "malformed"),
        (
            "bad base64 argument",
            json(r#"{"type":"simple","command":"set","args":["k",{"b64":"***"}]}"#),
            true,
            "malformed",
        ),
        (
            "command name not a string",
            json(r#"{"type":"simple","command":{"b64":"/w=="},"args":["k"]}"#),
            true,
            "malformed",
        ),
        (
            "script in a simple task",
            json(r#"{"type":"simple","command":"eval","args":["return 1","0"]}"#),
            true,
            "malformed",
        ),
        ("empty Lua body", json(r#"{"type":"lua","lua_script":"  ","lua_keys":["k"]}"#), true, "malformed"),
        ("forbidden command", json(r#"{"type":"simple","command":"flushall","args":[]}"#), true, "forbidden"),
        (
            "admin subcommand",
            json(r#"{"type":"simple","command":"config","args":["set","maxmemory","1"]}"#),
            true,
            "forbidden",
        ),
        (
            "forbidden inside a pipeline",
            json(
                r#"{"type":"pipeline","pipeline_cmds":[{"command":"del","args":["k"]},{"command":"flushdb","args":[]}]}"#,
            ),
            true,
            "forbidden",
        ),
        ("a read", json(r#"{"type":"simple","command":"get","args":["k"]}"#), true, "forbidden"),
        (
            "Lua while Lua is off",
            json(r#"{"type":"lua","lua_script":"return redis.call('FLUSHALL')","lua_keys":[]}"#),
            true,
            "forbidden",
        ),
        (
            "unknown command",
            json(r#"{"type":"simple","command":"frobnicate","args":["k"]}"#),
            true,
            "unknown_command",
        ),
        (
            "oversize",
            [b"{\"type\":\"simple\",\"pad\":\"".as_slice(), &vec![b'x'; 5000], b"\"}"].concat(),
            true,
            "oversize",
        ),
        ("unsigned", json(r#"{"type":"simple","command":"del","args":["k"]}"#), false, "unauthenticated"),
        (
            "negative TTL",
            json(r#"{"type":"simple","command":"set","args":["k","v","EX",-5]}"#),
            true,
            "permanent_error",
        ),
        (
            "wrong type in Redis",
            json(r#"{"type":"simple","command":"sadd","args":["a-string","m"]}"#),
            true,
            "permanent_error",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_poison_is_dead_lettered_with_its_reason_and_good_tasks_flow_on() {
    let mut stack = Stack::start().await;
    let key = SigningKey::new(KEY).unwrap();
    let mut redis = stack.conn().await;
    let _: () = redis.set("a-string", "x").await.unwrap();
    let producer = stack.kafka.producer();
    let topic = stack.topic.clone();
    let send = |payload: Vec<u8>, signature: Option<String>| {
        let (producer, topic) = (producer.clone(), topic.clone());
        async move {
            let mut record = FutureRecord::<[u8], [u8]>::to(&topic).payload(&payload).key(b"k".as_slice());
            if let Some(sig) = &signature {
                record = record
                    .headers(OwnedHeaders::new().insert(Header { key: SIGNATURE_HEADER, value: Some(sig) }));
            }
            producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).expect("produce");
        }
    };
    let cases = poison();
    for (_, payload, signed, _) in &cases {
        send(payload.clone(), signed.then(|| key.sign(payload))).await;
    }
    // A forged signature: signed with another key.
    let forged = br#"{"type":"simple","command":"del","args":["k"]}"#.to_vec();
    let other = SigningKey::new("another secret, not the consumer's").unwrap();
    send(forged.clone(), Some(other.sign(&forged))).await;
    // A good task behind all of them.
    let good = RedisTask::set("good", "applied", Duration::ZERO).unwrap().to_json();
    send(good.clone(), Some(key.sign(&good))).await;

    let config = stack.consumer_config().max_task_bytes(4096).signing_key(key.clone());
    let started = Instant::now();
    stack.spawn_consumer(config, &stack.redis.url()).await;
    wait_until("the good task behind the poison", Duration::from_secs(60), || {
        let mut r = redis.clone();
        async move { r.get::<_, Option<String>>("good").await.ok().flatten().as_deref() == Some("applied") }
    })
    .await;
    let behind = started.elapsed();

    let total = cases.len() + 1;
    let dlq =
        stack.kafka.read_messages(&format!("{}.dlq", stack.topic), total, Duration::from_secs(30)).await;
    let reasons: Vec<String> = dlq.iter().map(|m| header(m, "reason").unwrap_or_default()).collect();
    let mut expected: Vec<&str> = cases.iter().map(|(_, _, _, r)| *r).collect();
    expected.push("unauthenticated");
    for (i, (name, ..)) in cases.iter().enumerate() {
        assert_eq!(
            reasons.get(i).map(String::as_str),
            Some(expected[i]),
            "{name}: {:?}",
            header(&dlq[i], "error")
        );
    }
    assert_eq!(reasons.len(), total, "{reasons:?}");
    assert_eq!(reasons[total - 1], "unauthenticated", "the forged signature");
    assert!(header(&dlq[total - 1], "error").unwrap_or_default().contains("signature does not match"));
    let kinds: std::collections::BTreeSet<&str> = cases.iter().map(|(n, ..)| *n).collect();
    println!(
        "{} kinds of poison dead-lettered; the good task behind them applied {behind:?} after start",
        kinds.len() + 1
    );
    assert!(kinds.len() + 1 >= 20, "at least 20 kinds");
    let mut by_reason: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for r in &reasons {
        *by_reason.entry(r.as_str()).or_default() += 1;
    }
    let mut rows: Vec<(&str, String)> = vec![
        ("kinds of poison", (kinds.len() + 1).to_string()),
        ("dead-lettered with the expected reason", format!("{} of {total}", reasons.len())),
    ];
    rows.extend(by_reason.iter().map(|(r, n)| (*r, format!("{n} messages"))));
    rows.push((
        "good task behind them applied after the consumer started",
        format!("{:.2} s", behind.as_secs_f64()),
    ));
    record(
        "Poison input",
        "`tests/poison.rs`: malformed JSON of many shapes, wrong types, out-of-range fields, forbidden, unknown and \
         read commands, Lua on a consumer without Lua, an oversize message, unsigned and forged signatures, a \
         negative TTL and a WRONGTYPE, queued ahead of a good task, on a consumer that checks signatures.",
        &rows,
    );

    // The consumer is still up: a task sent now is applied too.
    let later = RedisTask::set("later", "also", Duration::ZERO).unwrap().to_json();
    send(later.clone(), Some(key.sign(&later))).await;
    wait_until("a task after the poison", Duration::from_secs(30), || {
        let mut r = redis.clone();
        async move { r.get::<_, Option<String>>("later").await.ok().flatten().is_some() }
    })
    .await;
    let keys: Vec<String> = redis.keys("*").await.unwrap();
    let mut keys = keys;
    keys.sort();
    assert_eq!(keys, ["a-string", "good", "later"], "no poison touched Redis");
    stack.stop_consumer().await.expect("the consumer stops cleanly after all that");
}
