//! The runtime's safety net behind `#[redis_retry]`: an annotated method that returns a
//! transient Redis error which no `RetryConnection` in its scope saw, a write through a
//! connection redis-retry does not wrap, is logged once at warn level and counted; through a
//! wrapped connection, or with a permanent error, nothing is said. Against a real
//! redis-server whose `maxmemory` makes every write fail with OOM, a transient error.

mod support;

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use metrics::{Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use redis::aio::MultiplexedConnection;
use redis::AsyncCommands;
use redis_retry::{counters, redis_retry, RetryConnection};
use support::RedisServer;

const SECRET_KEY: &str = "uncaptured:secret-key";
const SECRET_VALUE: &str = "secret-value-7f3a";

/// A repository whose connection redis-retry does not wrap, in a field: the attribute sees no
/// type there, so only the run-time check can tell.
struct Unwrapped {
    redis: MultiplexedConnection,
}

impl Unwrapped {
    #[redis_retry(source = "Uncaptured.save_unwrapped")]
    async fn save(&self) -> redis::RedisResult<()> {
        let mut conn = self.redis.clone();
        conn.set(SECRET_KEY, SECRET_VALUE).await
    }
}

#[redis_retry(source = "Uncaptured.save_wrapped")]
async fn save_wrapped(conn: &mut RetryConnection<MultiplexedConnection>) -> redis::RedisResult<()> {
    conn.set(SECRET_KEY, SECRET_VALUE).await
}

impl Unwrapped {
    /// A write that fails with WRONGTYPE (the key holds a hash): the caller's to fix, never
    /// captured, nothing to warn of.
    #[redis_retry(source = "Uncaptured.wrong_type")]
    async fn wrong_type(&self) -> redis::RedisResult<()> {
        let mut conn = self.redis.clone();
        conn.sadd(SECRET_KEY, SECRET_VALUE).await
    }
}

/// The same write in a trait implemented under `#[async_trait]`, where the attribute wraps
/// the boxed future.
#[async_trait::async_trait]
trait Save {
    async fn save(&self) -> redis::RedisResult<()>;
}

struct UnwrappedTrait {
    redis: MultiplexedConnection,
}

#[async_trait::async_trait]
impl Save for UnwrappedTrait {
    #[redis_retry(source = "Uncaptured.save_async_trait")]
    async fn save(&self) -> redis::RedisResult<()> {
        let mut conn = self.redis.clone();
        conn.set(SECRET_KEY, SECRET_VALUE).await
    }
}

/// What the code logged and counted.
#[derive(Clone, Default)]
struct Seen {
    log: Arc<Mutex<Vec<u8>>>,
    uncaptured: Arc<AtomicU64>,
    sources: Arc<Mutex<Vec<String>>>,
}

impl Write for Seen {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.log.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Seen {
    fn log(&self) -> String {
        String::from_utf8_lossy(&self.log.lock().unwrap()).into_owned()
    }
}

struct Increments(Arc<AtomicU64>);

impl CounterFn for Increments {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }
    fn absolute(&self, _: u64) {}
}

/// Counts `redis_retry_uncaptured_errors_total` and notes its `source` labels; every other
/// metric goes nowhere.
impl Recorder for Seen {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        if key.name() != counters::UNCAPTURED_ERRORS {
            return Counter::noop();
        }
        let mut sources = self.sources.lock().unwrap();
        sources.extend(key.labels().filter(|l| l.key() == "source").map(|l| l.value().to_string()));
        Counter::from_arc(Arc::new(Increments(self.uncaptured.clone())))
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

/// Runs `test` on a current-thread runtime against a Redis where `SECRET_KEY` holds a hash and,
/// when `oom`, every write is refused with OOM; this thread's log and metrics go to the
/// returned `Seen`.
fn run<F, Fut>(oom: bool, test: F) -> Seen
where
    F: FnOnce(MultiplexedConnection) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let redis = RedisServer::start();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let seen = Seen::default();
    let writer = seen.clone();
    let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
    let _log = tracing_subscriber::util::SubscriberInitExt::set_default(subscriber);
    metrics::with_local_recorder(&seen, || {
        runtime.block_on(async {
            let mut conn = redis.conn().await;
            let _: () =
                redis::cmd("HSET").arg(SECRET_KEY).arg("f").arg("v").query_async(&mut conn).await.unwrap();
            if oom {
                let mut config = redis::cmd("CONFIG");
                config.arg("SET").arg("maxmemory-policy").arg("noeviction").arg("maxmemory").arg("1");
                let _: () = config.query_async(&mut conn).await.unwrap();
            }
            test(conn).await;
        })
    });
    seen
}

#[test]
fn a_transient_error_through_an_unwrapped_connection_is_warned_and_counted() {
    let seen = run(true, |redis| async move {
        let error = Unwrapped { redis }.save().await.expect_err("Redis refuses writes (OOM)");
        assert_eq!(error.code(), Some("OOM"), "{error}");
    });
    let log = seen.log();
    assert_eq!(seen.uncaptured.load(Ordering::Relaxed), 1, "{log}");
    assert_eq!(*seen.sources.lock().unwrap(), ["Uncaptured.save_unwrapped"]);
    assert_eq!(log.matches("no RetryConnection in its scope saw").count(), 1, "{log}");
    assert!(
        log.contains("WARN") && log.contains("Uncaptured.save_unwrapped") && log.contains("OOM"),
        "{log}"
    );
    assert!(
        !log.contains(SECRET_VALUE) && !log.contains(SECRET_KEY),
        "the warning holds no Redis values: {log}"
    );
}

#[test]
fn the_check_runs_under_async_trait_too() {
    let seen = run(true, |redis| async move {
        let error = UnwrappedTrait { redis }.save().await.expect_err("Redis refuses writes (OOM)");
        assert_eq!(error.code(), Some("OOM"), "{error}");
    });
    let log = seen.log();
    assert_eq!(seen.uncaptured.load(Ordering::Relaxed), 1, "{log}");
    assert_eq!(*seen.sources.lock().unwrap(), ["Uncaptured.save_async_trait"]);
}

#[test]
fn a_transient_error_a_retry_connection_saw_is_not_warned() {
    let seen = run(true, |conn| async move {
        let mut conn = RetryConnection::new(conn);
        let error = save_wrapped(&mut conn).await.expect_err("Redis refuses writes (OOM)");
        assert_eq!(error.code(), Some("OOM"), "{error}");
    });
    let log = seen.log();
    assert_eq!(seen.uncaptured.load(Ordering::Relaxed), 0, "{log}");
    assert!(!log.contains("no RetryConnection in its scope saw"), "{log}");
}

#[test]
fn a_permanent_error_is_not_warned() {
    let seen = run(false, |redis| async move {
        let error = Unwrapped { redis }.wrong_type().await.expect_err("the key holds a hash");
        assert_eq!(error.code(), Some("WRONGTYPE"), "{error}");
    });
    let log = seen.log();
    assert_eq!(seen.uncaptured.load(Ordering::Relaxed), 0, "{log}");
    assert!(!log.contains("no RetryConnection in its scope saw"), "{log}");
}
