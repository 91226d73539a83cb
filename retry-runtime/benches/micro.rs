//! Micro-benchmarks of the runtime's hot paths, each beside a raw baseline in the same group so
//! that the output reads as a ratio (ours / baseline):
//!
//! - `task_encode`: `RedisTask::to_json` vs `serde_json::to_vec` of a plain struct with the same
//!   content (strings, a pre-formatted timestamp, no custom serializers).
//! - `task_decode`: `RedisTask::from_json` (parse and validate) vs `serde_json::from_slice` into
//!   that plain struct, on a SET-with-TTL task, a 10-command pipeline task and a payload as the
//!   Go seed marshals it (`null` slices, a numeric TTL, a nanosecond timestamp with an offset).
//! - `command_table`: `commands::lookup` / `commands::classify` of ten command names vs a `match`
//!   and a `HashMap` over just those names.
//! - `task_build`: turning a failed `redis::Cmd` (and a 10-command pipeline) into a task the way
//!   `RetryConnection` does vs packing the same command(s) for the wire.
//! - `signing`: `SigningKey::sign` / `verify` of a 200-byte payload vs a bare HMAC-SHA256.
//! - `scope`: a trivial future inside `scope::capture` (metadata built as `#[redis_retry]` does)
//!   vs the bare future, both driven by a current-thread runtime's `block_on`.
//!
//! Run all with `cargo bench -p redis-retry-runtime --bench micro`, or one group by naming it:
//! `cargo bench -p redis-retry-runtime --bench micro -- task_decode` (add `--quick` for a rough
//! figure in a few seconds).

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use hmac::{Hmac, Mac};
use redis_retry_runtime::commands::{self, Access};
use redis_retry_runtime::scope::{self, ScopeMeta};
use redis_retry_runtime::signing::SigningKey;
use redis_retry_runtime::{Arg, Mode, RedisCmd, RedisTask, TaskContext};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;

/// The seed's Go `RedisTask` for `SET device:token:d-1 tok EX 300`, as `encoding/json` writes it.
const GO_SET_TTL: &str = r#"{"type":"simple","command":"set","args":["device:token:d-1","tok","ex",300],"pipeline_cmds":null,"lua_script":"","lua_keys":null,"lua_args":null,"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","user_uuid":"u-1","device_id":"d-1","timestamp":"2024-05-01T10:00:00.123456789+08:00","retry_count":0,"max_retries":3,"original_err":"dial tcp 127.0.0.1:6379: connect: connection refused","source":"DeviceRepository.SaveToken"}"#;

const ERROR: &str = "dial tcp 127.0.0.1:6379: connect: connection refused";

/// The baseline's shape: every field of the wire format, with no validation, no timestamp
/// parsing and no argument normalisation. `Value` args accept the seed's numbers as well.
#[derive(Serialize, Deserialize)]
struct PlainTask {
    #[serde(default)]
    id: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    command: String,
    #[serde(default)]
    args: Option<Vec<Value>>,
    #[serde(default)]
    pipeline_cmds: Option<Vec<PlainCmd>>,
    #[serde(default)]
    atomic: bool,
    #[serde(default)]
    lua_script: String,
    #[serde(default)]
    lua_keys: Option<Vec<Value>>,
    #[serde(default)]
    lua_args: Option<Vec<Value>>,
    #[serde(default)]
    trace_id: String,
    #[serde(default)]
    user_uuid: String,
    #[serde(default)]
    device_id: String,
    #[serde(default)]
    timestamp: String,
    #[serde(default)]
    retry_count: u32,
    #[serde(default)]
    max_retries: u32,
    #[serde(default)]
    original_err: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    mode: String,
}

#[derive(Serialize, Deserialize)]
struct PlainCmd {
    command: String,
    #[serde(default)]
    args: Option<Vec<Value>>,
}

fn context() -> TaskContext {
    TaskContext::new().trace_id("4bf92f3577b34da6a3ce929d0e0e4736").user_uuid("u-1").device_id("d-1")
}

fn set_ttl_task() -> RedisTask {
    RedisTask::set("device:token:d-1", "tok", Duration::from_secs(300))
        .expect("valid SET")
        .with_source("DeviceRepository.SaveToken")
        .with_context(&context())
        .with_error(&ERROR)
}

/// Ten writes of mixed shapes, as a repository's failed pipeline would carry them.
fn pipeline_cmds() -> Vec<RedisCmd> {
    vec![
        RedisCmd::new("set", ["user:info:u-1", "{\"name\":\"alice\",\"age\":30}", "EX", "3600"]),
        RedisCmd::new("hset", ["user:profile:u-1", "email", "alice@example.com"]),
        RedisCmd::new("sadd", ["friends:u-1", "u-2"]),
        RedisCmd::new("srem", ["friends:u-1", "u-3"]),
        RedisCmd::new("zadd", ["leaderboard", "42", "u-1"]),
        RedisCmd::new("expire", ["session:s-1", "1800"]),
        RedisCmd::new("del", ["user:cache:u-1"]),
        RedisCmd::new("hdel", ["user:profile:u-1", "phone"]),
        RedisCmd::new("lpush", ["events:u-1", "login"]),
        RedisCmd::new("incr", ["counter:logins"]),
    ]
}

fn pipeline_task() -> RedisTask {
    RedisTask::pipeline(pipeline_cmds())
        .expect("valid pipeline")
        .with_source("UserRepository.SaveProfile")
        .with_context(&context())
        .with_error(&ERROR)
}

fn plain(json: &[u8]) -> PlainTask {
    serde_json::from_slice(json).expect("our JSON fits the plain shape")
}

fn task_encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("task_encode");
    for (name, task) in [("set_ttl", set_ttl_task()), ("pipeline10", pipeline_task())] {
        // Same strings, same timestamp text: the baseline differs only in how it is typed.
        let baseline = plain(&task.to_json());
        g.bench_with_input(BenchmarkId::new("ours", name), &task, |b, t| b.iter(|| t.to_json()));
        g.bench_with_input(BenchmarkId::new("serde_plain", name), &baseline, |b, p| {
            b.iter(|| serde_json::to_vec(p).expect("plain data serialises"))
        });
    }
    g.finish();
}

fn task_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("task_decode");
    let inputs = [
        ("set_ttl", set_ttl_task().to_json()),
        ("pipeline10", pipeline_task().to_json()),
        ("go_set_ttl", GO_SET_TTL.as_bytes().to_vec()),
    ];
    for (name, json) in &inputs {
        RedisTask::from_json(json).expect("the input is a valid task");
        g.bench_with_input(BenchmarkId::new("ours", name), json, |b, j| {
            b.iter(|| RedisTask::from_json(black_box(j)).expect("valid"))
        });
        g.bench_with_input(BenchmarkId::new("serde_plain", name), json, |b, j| {
            b.iter(|| serde_json::from_slice::<PlainTask>(black_box(j)).expect("valid"))
        });
    }
    g.finish();
}

/// Names as redis-rs sends them (upper case), each with the arguments classify looks at.
const COMMANDS: [&[&[u8]]; 10] = [
    &[b"SET", b"k", b"v", b"EX", b"60"],
    &[b"HSET", b"h", b"f", b"v"],
    &[b"ZADD", b"z", b"1", b"m"],
    &[b"DEL", b"k"],
    &[b"SADD", b"s", b"m"],
    &[b"EXPIRE", b"k", b"60"],
    &[b"LPUSH", b"l", b"v"],
    &[b"HDEL", b"h", b"f"],
    &[b"GET", b"k"],
    &[b"INCR", b"n"],
];

/// What a hand-written table for just these ten names would answer.
fn access_by_match(name: &[u8]) -> Option<Access> {
    Some(match name {
        b"SET" | b"HSET" | b"ZADD" | b"DEL" | b"SADD" | b"EXPIRE" | b"HDEL" => {
            Access::Write { idempotent: true }
        }
        b"LPUSH" | b"INCR" => Access::Write { idempotent: false },
        b"GET" => Access::Read,
        _ => return None,
    })
}

fn command_table(c: &mut Criterion) {
    let mut g = c.benchmark_group("command_table");
    let map: HashMap<&[u8], Access> =
        COMMANDS.iter().map(|args| (args[0], access_by_match(args[0]).expect("listed"))).collect();
    for args in COMMANDS {
        assert_eq!(commands::classify(args).map(|c| c.access), access_by_match(args[0]));
    }
    // One iteration walks all ten names, so the figures are per ten lookups.
    g.bench_function("ours_lookup_x10", |b| {
        b.iter(|| {
            for args in black_box(&COMMANDS) {
                black_box(commands::lookup(args));
            }
        })
    });
    g.bench_function("ours_classify_x10", |b| {
        b.iter(|| {
            for args in black_box(&COMMANDS) {
                black_box(commands::classify(args));
            }
        })
    });
    g.bench_function("baseline_match_x10", |b| {
        b.iter(|| {
            for args in black_box(&COMMANDS) {
                black_box(access_by_match(args[0]));
            }
        })
    });
    g.bench_function("baseline_hashmap_x10", |b| {
        b.iter(|| {
            for args in black_box(&COMMANDS) {
                black_box(map.get(args[0]));
            }
        })
    });
    g.finish();
}

/// What `RetryConnection` does with a failed command (its `tasks_for` and `capture` are
/// private, so this follows them step for step): split the arguments, classify, build the
/// task, stamp it with the scope's metadata.
fn task_from_cmds(cmds: &[&redis::Cmd], meta: &ScopeMeta) -> Option<RedisTask> {
    let mut writes = Vec::with_capacity(cmds.len());
    for cmd in cmds {
        let parts: Vec<&[u8]> = cmd
            .args_iter()
            .filter_map(|a| match a {
                redis::Arg::Simple(bytes) => Some(bytes),
                _ => None,
            })
            .collect();
        let Some(class) = commands::classify(&parts) else { continue };
        if !class.access.is_write() {
            continue;
        }
        writes.push(RedisCmd {
            command: String::from_utf8_lossy(parts[0]).into_owned(),
            args: parts[1..].iter().map(|a| Arg::from(*a)).collect(),
        });
    }
    let task = if writes.len() == 1 {
        let cmd = writes.pop()?;
        RedisTask::command(cmd.command, cmd.args)
    } else {
        RedisTask::pipeline(writes)
    }
    .ok()?;
    let task = task.with_source(meta.source.clone()).with_context(&meta.context).with_error(&ERROR);
    Some(RedisTask { max_retries: meta.max_retries, ..task })
}

fn task_build(c: &mut Criterion) {
    let mut g = c.benchmark_group("task_build");
    let meta = ScopeMeta::new("DeviceRepository.SaveToken").context(context());

    let mut set = redis::cmd("SET");
    set.arg("device:token:d-1").arg("tok").arg("EX").arg(300);
    assert!(task_from_cmds(&[&set], &meta).is_some());
    g.bench_function("ours/set_ttl", |b| b.iter(|| task_from_cmds(&[black_box(&set)], &meta)));
    g.bench_function("packed_only/set_ttl", |b| b.iter(|| black_box(&set).get_packed_command()));

    let mut pipe = redis::pipe();
    for cmd in pipeline_cmds() {
        let c = pipe.cmd(&cmd.command.to_ascii_uppercase());
        for a in &cmd.args {
            c.arg(a.as_bytes());
        }
    }
    let cmds: Vec<&redis::Cmd> = pipe.cmd_iter().collect();
    assert_eq!(task_from_cmds(&cmds, &meta).map(|t| t.pipeline_cmds.len()), Some(10));
    g.bench_function("ours/pipeline10", |b| b.iter(|| task_from_cmds(black_box(&cmds), &meta)));
    g.bench_function("packed_only/pipeline10", |b| b.iter(|| black_box(&pipe).get_packed_pipeline()));
    g.finish();
}

fn signing(c: &mut Criterion) {
    let mut g = c.benchmark_group("signing");
    let secret = b"a shared secret of some length, 32B";
    let key = SigningKey::new(secret).expect("long enough");
    let payload: Vec<u8> = (0..200u8).map(|i| b'a' + i % 26).collect();
    let sig = key.sign(&payload);
    assert!(key.verify(&payload, sig.as_bytes()));

    g.bench_function("ours_sign/200B", |b| b.iter(|| key.sign(black_box(&payload))));
    g.bench_function("ours_verify/200B", |b| {
        b.iter(|| key.verify(black_box(&payload), black_box(sig.as_bytes())))
    });
    g.bench_function("raw_hmac_sha256/200B", |b| {
        b.iter(|| {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("any key length");
            mac.update(black_box(&payload));
            mac.finalize().into_bytes()
        })
    });
    g.finish();
}

fn scope_capture(c: &mut Criterion) {
    let mut g = c.benchmark_group("scope");
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    g.bench_function("ours_capture", |b| {
        b.iter(|| {
            rt.block_on(scope::capture(
                redis_retry_runtime::__private::meta("Repo.save", 3, Mode::Replay, None),
                async { black_box(1u32) },
            ))
        })
    });
    // What a failed write inside the scope pays to find its metadata.
    g.bench_function("ours_capture_and_current", |b| {
        b.iter(|| {
            rt.block_on(scope::capture(
                redis_retry_runtime::__private::meta("Repo.save", 3, Mode::Replay, None),
                async { scope::current().map(|m| m.max_retries) },
            ))
        })
    });
    g.bench_function("bare_future", |b| b.iter(|| rt.block_on(async { black_box(1u32) })));
    g.finish();
}

fn config() -> Criterion {
    // Keeps a full run near a minute and a half on two shared cores.
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = task_encode, task_decode, command_table, task_build, signing, scope_capture
}
criterion_main!(benches);
