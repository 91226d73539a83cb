//! Integration-test harness: real servers started per test on free loopback
//! ports, and a proxy to cut them off. Nothing is shared between tests (they
//! may be threads of one process or separate processes), and everything a
//! test starts is stopped when its handle drops, panics included.
// Each test binary uses a different subset of the harness.
#![allow(dead_code, unused_imports)]

pub mod binary;
pub mod cluster;
mod kafka_broker;
pub mod logs;
mod process;
mod proxy;
mod redis_server;
pub mod report;
pub mod slow;
pub mod stack;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub use kafka_broker::KafkaBroker;
pub use proxy::{Proxy, ProxyMode};
pub use redis_server::RedisServer;

/// A name no other test (thread or process) uses: topics, groups, keys.
/// The pid separates processes, the counter threads of one process, and the
/// time runs of the same process id against a long-lived external broker.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or_default();
    format!("{prefix}-{}-{count}-{nanos}", std::process::id())
}

/// Now, as Go's `encoding/json` writes a `time.Time` in UTC+8 (RFC 3339, nanoseconds, an
/// offset): the seed's services stamp tasks this way. A fixed date would age past the
/// consumer's `max_age` and turn the test red on a later day.
pub fn go_timestamp_now() -> String {
    let east8 = chrono::FixedOffset::east_opt(8 * 3600).expect("UTC+8");
    chrono::Utc::now().with_timezone(&east8).to_rfc3339_opts(chrono::SecondsFormat::Nanos, false)
}

/// The value of header `key` of a Kafka message, as text.
pub fn header(msg: &rdkafka::message::OwnedMessage, key: &str) -> Option<String> {
    use rdkafka::message::{Headers, Message};
    msg.headers()?
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned()))
}

/// Log output through the test writer (captured per test unless
/// `--nocapture`), filtered by RUST_LOG. Safe to call from every test.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
}

/// The `redis-retry` binary of the workspace, which the test script builds
/// before the tests (`cargo build --workspace --bins`). Test executables
/// live in target/<profile>/deps, the binary one level up.
pub fn redis_retry_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("path of the test executable");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap_or_else(|| panic!("unexpected test executable path {}", exe.display()));
    let bin = profile_dir.join(format!("redis-retry{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} does not exist; build it first with `cargo build -p redis-retry-cli`",
        bin.display()
    );
    bin
}

/// Path of the example `name`, built by the test script (`cargo build --examples`) into
/// target/<profile>/examples.
pub fn example_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("path of the test executable");
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>");
    let bin = profile_dir.join("examples").join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(bin.is_file(), "{} does not exist; build it first with `cargo build --examples`", bin.display());
    bin
}
