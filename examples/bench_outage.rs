//! End-to-end benchmark of what an outage costs: how soon the backlog a Redis outage left
//! behind is applied once Redis is back (issue 6, target 5), and how much memory a service
//! gains while its Redis refuses every write and each failure is captured (target 6). Each
//! figure comes with a baseline measured in the same run.
//!
//! ```sh
//! cargo run --release --example bench_outage          # about four minutes
//! cargo run --release --example bench_outage -- --size 2000 --duration 3 --outage 1   # smoke
//! ```
//!
//! Options: `--size N` tasks in the backlog (default 100000), `--outage S` shortest outage in
//! seconds (default 10), `--rate N` failed writes per second (default 10000) for `--duration S`
//! seconds (default 60), `--only recovery` or `--only memory`, `--one-message-batches` (see
//! below).
//!
//! **Recovery.** A replayer runs with its Redis connection behind a switch of its own (TCP_NODELAY,
//! so that it passes pipelined batches on at once), set up as `redis-retry
//! consume` sets up its own (`ConnectionManager`, 2 s connect and 5 s response timeouts,
//! redis-rs' default reconnect retries). The switch cuts Redis off; a service's
//! `RetryConnection`, cut off too, fails `size` writes (`SET key value EX 600`) inside a
//! capture scope, and `RetryProducer` publishes them to a fresh topic (over as many partitions
//! as the mock broker needs to keep them all). Once they are all in Kafka, the replayer has
//! failed to reach Redis at least once and `--outage` has passed, the switch lets Redis back.
//! The clock runs from that moment until DBSIZE has grown by the whole backlog; every key of it
//! is then checked. The replayer is either `RedisRetryConsumer` or the baseline, a seed-style
//! loop: receive, decode, apply one command, commit synchronously; while Redis is unreachable
//! it retries the same command every 100 ms (the seed itself would spend the task's three
//! retries and drop it).
//!
//! tansu 0.6 answers a fetch that starts inside a record batch with nothing from that batch.
//! Neither replayer fetches from there in this run (a fresh group starts at offset 0 and
//! fetches on batch by batch), so the backlog is batched as a service's producer batches it.
//! `--one-message-batches` produces it one message a batch instead, as the tests do for tansu:
//! every offset is then a batch start, but the replayers drain far slower (fetching a batch per
//! task), so the figures measure that workaround more than the consumer.
//!
//! **Memory.** Two child processes (this example started again with a hidden flag, so the
//! phases share no heap) each fail `rate` writes a second for `duration` seconds against a
//! Redis that refuses connections, while Kafka is up. One captures every failure through
//! `RetryConnection` and `RetryProducer` (with a spool directory, as the README configures a
//! service); the baseline sends the same writes through a raw redis-rs connection. Each reads
//! its own `VmRSS` from `/proc/self/status` before the first write, every 10 ms during the
//! phase (the peak), and after the producer flushed. Linux only.
//!
//! Uses `REDIS_URL` and `KAFKA_BROKERS` when set; otherwise its own `redis-server` and
//! librdkafka's in-process mock broker.

mod support;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::AsyncCommands;
use redis_retry::scope::{capture, ScopeMeta};
use redis_retry::{
    ConsumerConfig, ProducerConfig, RedisRetryConsumer, RedisTask, RetryConnection, RetryProducer,
};
use support::{Demo, Switch};
use tokio::sync::watch;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The hidden first argument that makes this process one memory phase.
const PHASE_FLAG: &str = "--memory-phase";
/// A token-sized value: what a session or device-token cache holds.
const VALUE: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const TTL_SECS: u64 = 600;
/// Failed writes are started in groups this many times a second.
const TICKS_PER_SEC: u64 = 100;

const USAGE: &str =
    "usage: bench_outage [--size N] [--outage SECS] [--rate N] [--duration SECS] [--only recovery|memory] \
     [--one-message-batches]";

struct Options {
    size: usize,
    outage: Duration,
    rate: u64,
    duration: Duration,
    recovery: bool,
    memory: bool,
    one_message_batches: bool,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options, BoxError> {
        let mut opts = Options {
            size: 100_000,
            outage: Duration::from_secs(10),
            rate: 10_000,
            duration: Duration::from_secs(60),
            recovery: true,
            memory: true,
            one_message_batches: false,
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value; {USAGE}"));
            match arg.as_str() {
                "--size" => opts.size = value()?.parse().map_err(|_| "--size: not a number")?,
                "--rate" => opts.rate = value()?.parse().map_err(|_| "--rate: not a number")?,
                "--outage" => opts.outage = seconds("--outage", value()?)?,
                "--duration" => opts.duration = seconds("--duration", value()?)?,
                "--only" => match value()?.as_str() {
                    "recovery" => opts.memory = false,
                    "memory" => opts.recovery = false,
                    other => return Err(format!("--only {other}: expected recovery or memory").into()),
                },
                "--one-message-batches" => opts.one_message_batches = true,
                other => return Err(format!("unknown argument {other}; {USAGE}").into()),
            }
        }
        if opts.size == 0 || opts.rate < TICKS_PER_SEC {
            return Err(format!("--size must be at least 1 and --rate at least {TICKS_PER_SEC}").into());
        }
        Ok(opts)
    }
}

fn seconds(flag: &str, value: &str) -> Result<Duration, BoxError> {
    value
        .parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| format!("{flag}: not a number of seconds").into())
}

struct Row {
    metric: String,
    ours: String,
    baseline: String,
    ratio: String,
    target: &'static str,
    met: bool,
}

fn main() -> Result<(), BoxError> {
    // Off unless asked for: every captured write logs an ERROR line, which would be measured
    // along with the capture (and fill the terminal at 10,000 lines a second).
    if let Ok(filter) = std::env::var("RUST_LOG") {
        tracing_subscriber::fmt().with_env_filter(filter).with_target(false).init();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    if args.first().map(String::as_str) == Some(PHASE_FLAG) {
        return runtime.block_on(memory_phase_main(&args[1..]));
    }
    let opts = Options::parse(&args)?;
    runtime.block_on(run(opts))
}

async fn run(opts: Options) -> Result<(), BoxError> {
    let demo = Demo::start().await.map_err(|e| e.to_string())?;
    let broker = demo.broker_label();
    let started = Instant::now();
    let mut rows = Vec::new();
    if opts.recovery {
        rows.extend(recovery(&demo, &opts).await?);
    }
    if opts.memory {
        rows.extend(memory(&demo, &opts).await?);
    }
    println!();
    println!(
        "broker: {broker}; redis: {}; run took {:.1} s",
        demo.redis_url,
        started.elapsed().as_secs_f64()
    );
    print_table(&rows);
    Ok(())
}

fn print_table(rows: &[Row]) {
    println!("| metric | ours | baseline | ratio | target | met? |");
    println!("|---|---|---|---|---|---|");
    for r in rows {
        let met = if r.met { "yes" } else { "NO" };
        println!("| {} | {} | {} | {} | {} | {met} |", r.metric, r.ours, r.baseline, r.ratio, r.target);
    }
}

// ---------------------------------------------------------------------------------------------
// Target 5: recovery after an outage

#[derive(Clone, Copy)]
enum Replayer {
    Consumer,
    SeedLoop,
}

impl Replayer {
    fn name(self) -> &'static str {
        match self {
            Replayer::Consumer => "RedisRetryConsumer",
            Replayer::SeedLoop => "seed-style loop",
        }
    }
}

struct Recovery {
    /// From the restore to the first task applied: how long the replayer takes to notice.
    first: Duration,
    /// From the restore to every task applied.
    all: Duration,
}

async fn recovery(demo: &Demo, opts: &Options) -> Result<Vec<Row>, BoxError> {
    let n = opts.size;
    let batches = if opts.one_message_batches { ", one message a batch" } else { "" };
    println!("recovery: a backlog of {n} SET tasks{batches} left by an outage of at least {:?}", opts.outage);
    // Through `demo.switch` every pipelined batch would wait some 40 ms on Nagle's algorithm.
    let switch = demo.another_switch().await.map_err(|e| e.to_string())?;
    let seed = outage_run(demo, &switch, opts, Replayer::SeedLoop).await?;
    let ours = outage_run(demo, &switch, opts, Replayer::Consumer).await?;
    let secs = |d: Duration| format!("{:.2} s", d.as_secs_f64());
    let drain = |r: &Recovery| (n - 1).max(1) as f64 / (r.all - r.first).as_secs_f64().max(1e-9);
    let speedup = seed.all.as_secs_f64() / ours.all.as_secs_f64().max(1e-9);
    Ok(vec![
        Row {
            metric: format!("recovery (restore -> all {n} tasks applied)"),
            ours: secs(ours.all),
            baseline: secs(seed.all),
            ratio: format!("{speedup:.2}x faster"),
            target: "<= 2 s",
            met: ours.all <= Duration::from_secs(2),
        },
        Row {
            metric: "recovery_first (restore -> first task applied)".to_string(),
            ours: secs(ours.first),
            baseline: secs(seed.first),
            ratio: format!("{:+.2} s", ours.first.as_secs_f64() - seed.first.as_secs_f64()),
            target: "report",
            met: true,
        },
        Row {
            metric: "recovery_drain tasks/s (first -> last applied)".to_string(),
            ours: format!("{:.0}", drain(&ours)),
            baseline: format!("{:.0}", drain(&seed)),
            ratio: format!("{:.2}x", drain(&ours) / drain(&seed)),
            target: "report",
            met: true,
        },
    ])
}

/// Failed requests a replayer made to Redis, and when the last one came back.
#[derive(Default)]
struct Failures {
    count: AtomicU64,
    last: Mutex<Option<Instant>>,
}

impl Failures {
    fn record(&self) {
        self.count.fetch_add(1, Ordering::Relaxed);
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }
    fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
    fn last(&self) -> Option<Instant> {
        *self.last.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A replayer's Redis connection that counts its failed requests: proof that the replayer met
/// the outage, and a clue to how long it kept failing after the restore.
#[derive(Clone)]
struct Observed<C> {
    inner: C,
    failures: Arc<Failures>,
}

impl<C: ConnectionLike + Send> ConnectionLike for Observed<C> {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        Box::pin(async move {
            let result = self.inner.req_packed_command(cmd).await;
            if result.is_err() {
                self.failures.record();
            }
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        Box::pin(async move {
            let result = self.inner.req_packed_commands(pipeline, offset, count).await;
            if result.is_err() {
                self.failures.record();
            }
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.inner.get_db()
    }
}

/// The replayer's connection to `url`, configured as `redis-retry consume` configures its own,
/// so that reconnecting after the outage costs here what it costs there.
async fn replayer_connection(url: &str) -> redis::RedisResult<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(5)));
    redis::Client::open(url)?.get_connection_manager_with_config(config).await
}

/// One outage with `replayer` running: returns how long the backlog took once Redis was back.
async fn outage_run(
    demo: &Demo,
    switch: &Switch,
    opts: &Options,
    replayer: Replayer,
) -> Result<Recovery, BoxError> {
    let topic_name = match replayer {
        Replayer::Consumer => "bench-outage-ours",
        Replayer::SeedLoop => "bench-outage-seed",
    };
    let mut config = ProducerConfig::new(&demo.brokers)
        .topic(demo.topic(topic_name))
        // The backlog is captured faster than Kafka takes it, and librdkafka's default queue
        // (100,000 messages) would refuse its tail.
        .property("queue.buffering.max.messages", (opts.size + 100_000).to_string());
    if opts.one_message_batches {
        config = config.property("batch.num.messages", "1");
    }
    let partitions = backlog_partitions(opts.size)?;
    demo.create_topics_with_partitions(&config.topics(), partitions).await.map_err(|e| e.to_string())?;
    let topic = config.topics().main.clone();
    let producer = RetryProducer::new(&config)?;

    let failures = Arc::new(Failures::default());
    let app_url = format!("redis://{}/", switch.addr);
    let conn = Observed { inner: replayer_connection(&app_url).await?, failures: failures.clone() };
    let (stop_tx, stop_rx) = watch::channel(false);
    let running = match replayer {
        Replayer::Consumer => {
            let mut config = ConsumerConfig::new(&demo.brokers).topic(&topic).group(format!("{topic}-group"));
            config.create_topics = false;
            let consumer = RedisRetryConsumer::new(config, conn)?;
            let mut stop = stop_rx;
            tokio::spawn(async move {
                let stopped = async move {
                    let _ = stop.wait_for(|s| *s).await;
                };
                consumer.run(stopped).await.map_err(BoxError::from)
            })
        }
        Replayer::SeedLoop => tokio::spawn(seed_loop(demo.plain_consumer(&topic)?, conn, stop_rx)),
    };
    let backlog = Backlog { topic: &topic, partitions, producer: &producer, failures: &failures };
    let measured = outage(demo, switch, opts, replayer, backlog).await;
    // Whatever went wrong, Redis must come back for the next measurement.
    switch.on();
    let _ = stop_tx.send(true);
    let stopped = running.await;
    let recovery = measured?;
    stopped??;
    Ok(recovery)
}

/// librdkafka's mock broker keeps the last 5 MiB of each partition and drops older messages,
/// as retention would: a backlog larger than that loses its head before anyone reads it.
const MOCK_PARTITION_BYTES: usize = 5 * 1024 * 1024;

/// Partitions enough for `n` tasks to stay under the mock broker's limit, with room for the
/// uneven spread of keys over partitions; the same number on every broker, so that their
/// figures compare.
fn backlog_partitions(n: usize) -> Result<i32, BoxError> {
    let sample = RedisTask::set("bench-outage-ours-4294967295-1800000000000000000:99999", VALUE, ttl())?
        .with_source("bench_outage.save")
        .with_error(&"broken pipe: the connection to redis was dropped (os error 32)");
    // At worst (--one-message-batches) a record is alone in its batch: the 61-byte batch
    // header, the record's framing, the key.
    let record = sample.to_json().len() + 61 + 20 + 60;
    Ok((n * record * 5 / 4).div_ceil(MOCK_PARTITION_BYTES).clamp(1, 64) as i32)
}

fn ttl() -> Duration {
    Duration::from_secs(TTL_SECS)
}

/// What one outage run works on.
struct Backlog<'a> {
    topic: &'a str,
    partitions: i32,
    producer: &'a RetryProducer,
    failures: &'a Failures,
}

async fn outage(
    demo: &Demo,
    switch: &Switch,
    opts: &Options,
    replayer: Replayer,
    backlog: Backlog<'_>,
) -> Result<Recovery, BoxError> {
    let Backlog { topic, partitions, producer, failures } = backlog;
    let name = replayer.name();
    let mut check = demo.redis().await?;
    // The first task also waits out the consumer group's join, so that it is not timed.
    let warm = format!("{topic}:warm");
    producer.publish(&RedisTask::set(&warm, "warm", ttl())?)?;
    if !wait_for_key(&mut check, &warm, Duration::from_secs(120)).await? {
        return Err(format!("{name}: the warm-up task was not applied within 120 s").into());
    }

    let app_url = format!("redis://{}/", switch.addr);
    let app = redis::Client::open(app_url)?.get_multiplexed_async_connection().await?;
    let mut service = RetryConnection::new(app).with_producer(producer.clone());
    switch.off();
    let cut = Instant::now();
    // Outside a scope nothing is captured: this only waits until the cut reached the
    // service's connection, so that none of the backlog's writes races it.
    while service.set_ex::<_, _, ()>(format!("{topic}:probe"), "v", TTL_SECS).await.is_ok() {
        if cut.elapsed() > Duration::from_secs(10) {
            return Err("the switch did not cut Redis off within 10 s".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let keys: Vec<String> = (0..opts.size).map(|i| format!("{topic}:{i}")).collect();
    for key in &keys {
        let mut set = redis::cmd("SET");
        set.arg(key).arg(VALUE).arg("EX").arg(TTL_SECS);
        if capture(ScopeMeta::new("bench_outage.save"), set.query_async::<()>(&mut service)).await.is_ok() {
            return Err("a write succeeded while Redis was cut off".into());
        }
    }
    producer.flush(Duration::from_secs(600))?;
    let queued_in = cut.elapsed();
    check_watermark(&demo.brokers, topic, partitions, keys.len() as i64 + 1)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while failures.count() == 0 || cut.elapsed() < opts.outage {
        if Instant::now() > deadline {
            return Err(format!("{name} never tried to reach Redis during the outage").into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let failed_before = failures.count();
    // Nothing is applied while Redis is cut off: from here on, the database grows by the
    // backlog alone (on a Redis of its own; with REDIS_URL, nothing else may write to it).
    let base = dbsize(&mut check).await?;
    switch.on();
    let restored = Instant::now();
    let outage_took = cut.elapsed();

    let stall = Duration::from_secs(60);
    if grown_by(&mut check, base, 1, Duration::from_secs(120)).await?.is_err() {
        return Err(format!("{name}: nothing applied within 120 s of the restore").into());
    }
    let first = restored.elapsed();
    if let Err(applied) = grown_by(&mut check, base, keys.len(), stall).await? {
        let present = count_present(&mut check, &keys).await?;
        return Err(format!(
            "{name}: stuck at {applied} of {} tasks for {stall:?} ({present} of the backlog's keys exist)",
            keys.len()
        )
        .into());
    }
    let all = restored.elapsed();
    let present = count_present(&mut check, &keys).await?;
    if present != keys.len() {
        return Err(format!("{name}: only {present} of the backlog's {} keys exist", keys.len()).into());
    }
    let late = failures.last().filter(|t| *t > restored).map(|t| t - restored);
    println!(
        "  {name}: backlog queued in {:.1} s on {partitions} partition(s), outage {:.1} s, {failed_before} failed requests to Redis; \
         first task {:.2} s and all {:.2} s after the restore{}",
        queued_in.as_secs_f64(),
        outage_took.as_secs_f64(),
        first.as_secs_f64(),
        all.as_secs_f64(),
        match late {
            Some(d) => format!(" (still failing {:.2} s after it)", d.as_secs_f64()),
            None => String::new(),
        }
    );
    Ok(Recovery { first, all })
}

/// Warns when the topic does not hold what was flushed: a hint only, since tansu reports high
/// watermarks that do not match the count (see docs/BENCHMARKS.md); the keys are the real check.
fn check_watermark(brokers: &str, topic: &str, partitions: i32, expected: i64) -> Result<(), BoxError> {
    let probe: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers).create()?;
    let mut high = 0;
    for partition in 0..partitions {
        high += probe.fetch_watermarks(topic, partition, Duration::from_secs(10))?.1;
    }
    if high != expected {
        println!("  note: {topic} reports high watermark {high} after {expected} tasks were flushed");
    }
    Ok(())
}

/// Polls until `key` exists (true) or `timeout` passed (false).
async fn wait_for_key(
    redis: &mut MultiplexedConnection,
    key: &str,
    timeout: Duration,
) -> Result<bool, BoxError> {
    let deadline = Instant::now() + timeout;
    while !redis.exists::<_, bool>(key).await? {
        if Instant::now() > deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(true)
}

async fn dbsize(redis: &mut MultiplexedConnection) -> Result<usize, BoxError> {
    Ok(redis::cmd("DBSIZE").query_async(redis).await?)
}

/// Polls until the database holds `n` keys more than `base`; `Ok(Err(grown))` when it stopped
/// growing for `stall` first. DBSIZE costs Redis next to nothing, so polling it does not slow
/// the replayer down, whatever the order in which it applies the partitions.
async fn grown_by(
    redis: &mut MultiplexedConnection,
    base: usize,
    n: usize,
    stall: Duration,
) -> Result<Result<(), usize>, BoxError> {
    let (mut seen, mut since) = (0usize, Instant::now());
    loop {
        let grown = dbsize(redis).await?.saturating_sub(base);
        if grown >= n {
            return Ok(Ok(()));
        }
        if grown != seen {
            (seen, since) = (grown, Instant::now());
        } else if since.elapsed() > stall {
            return Ok(Err(grown));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn count_present(redis: &mut MultiplexedConnection, keys: &[String]) -> Result<usize, BoxError> {
    let mut present = 0usize;
    for chunk in keys.chunks(1000) {
        present += redis.exists::<_, usize>(chunk).await?;
    }
    Ok(present)
}

/// The baseline: the seed's consumer design, one message at a time, decoded, applied with one
/// command and committed synchronously before the next. It must not lose a task to the
/// outage, so it retries the command every 100 ms (the consumer's first backoff step) while
/// Redis is unreachable.
async fn seed_loop<C>(
    consumer: StreamConsumer,
    mut redis: C,
    mut stop: watch::Receiver<bool>,
) -> Result<(), BoxError>
where
    C: ConnectionLike + Send,
{
    loop {
        let msg = tokio::select! {
            _ = stop.wait_for(|s| *s) => return Ok(()),
            msg = consumer.recv() => msg?,
        };
        let task = RedisTask::from_json(msg.payload().unwrap_or_default())?;
        let mut cmd = redis::cmd(&task.command);
        for arg in &task.args {
            cmd.arg(arg.as_bytes());
        }
        loop {
            match cmd.query_async::<()>(&mut redis).await {
                Ok(()) => break,
                Err(e)
                    if e.is_connection_refusal()
                        || e.is_io_error()
                        || e.is_timeout()
                        || e.is_connection_dropped() =>
                {
                    tokio::select! {
                        _ = stop.wait_for(|s| *s) => return Ok(()),
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        consumer.commit_message(&msg, CommitMode::Sync)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Target 6: memory while Redis refuses writes

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Failed writes through a raw redis-rs connection: the baseline.
    Raw,
    /// Failed writes captured through `RetryConnection` and published.
    Capture,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Raw => "raw",
            Phase::Capture => "capture",
        }
    }
}

/// What a phase's process reports on its last line, `memory-phase key=value ...`.
struct PhaseReport {
    writes: u64,
    failed: u64,
    secs: f64,
    before_kib: u64,
    peak_kib: u64,
    after_kib: u64,
    spooled: u64,
}

impl PhaseReport {
    fn line(&self) -> String {
        format!(
            "memory-phase writes={} failed={} secs={:.3} before_kib={} peak_kib={} after_kib={} spooled={}",
            self.writes, self.failed, self.secs, self.before_kib, self.peak_kib, self.after_kib, self.spooled
        )
    }

    fn parse(stdout: &str) -> Option<PhaseReport> {
        let line = stdout.lines().rev().find_map(|l| l.strip_prefix("memory-phase "))?;
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                .map(str::to_string)
        };
        let int = |name: &str| field(name)?.parse::<u64>().ok();
        Some(PhaseReport {
            writes: int("writes")?,
            failed: int("failed")?,
            secs: field("secs")?.parse().ok()?,
            before_kib: int("before_kib")?,
            peak_kib: int("peak_kib")?,
            after_kib: int("after_kib")?,
            spooled: int("spooled")?,
        })
    }

    fn growth_mib(&self, kib: u64) -> f64 {
        (kib as f64 - self.before_kib as f64) / 1024.0
    }
}

async fn memory(demo: &Demo, opts: &Options) -> Result<Vec<Row>, BoxError> {
    println!(
        "memory: {} failed writes/s for {:?} while Redis refuses connections, each phase in its own process",
        opts.rate, opts.duration
    );
    let config = ProducerConfig::new(&demo.brokers).topic(demo.topic("bench-outage-memory"));
    demo.create_topics(&config.topics()).await.map_err(|e| e.to_string())?;
    let topic = config.topics().main.clone();
    // Off, the switch listens nowhere: the children's connections are refused, as by a Redis
    // that is down.
    demo.switch.off();
    let raw = run_phase(Phase::Raw, demo, &topic, opts).await;
    let ours = run_phase(Phase::Capture, demo, &topic, opts).await;
    demo.switch.on();
    let (raw, ours) = (raw?, ours?);
    check_watermark(&demo.brokers, &topic, 1, ours.writes as i64)?;
    let peak = (ours.growth_mib(ours.peak_kib), raw.growth_mib(raw.peak_kib));
    let after = (ours.growth_mib(ours.after_kib), raw.growth_mib(raw.after_kib));
    let mib = |v: f64| format!("{v:+.1} MiB");
    Ok(vec![
        Row {
            metric: format!(
                "memory_peak RSS growth ({} failed writes/s, {:.0} s)",
                opts.rate,
                opts.duration.as_secs_f64()
            ),
            ours: mib(peak.0),
            baseline: mib(peak.1),
            ratio: format!("{} more", mib(peak.0 - peak.1)),
            target: "<= 64 MiB",
            met: peak.0 <= 64.0,
        },
        Row {
            metric: "memory_after RSS growth (after the flush)".to_string(),
            ours: mib(after.0),
            baseline: mib(after.1),
            ratio: format!("{} more", mib(after.0 - after.1)),
            target: "report",
            met: true,
        },
    ])
}

async fn run_phase(phase: Phase, demo: &Demo, topic: &str, opts: &Options) -> Result<PhaseReport, BoxError> {
    let exe = std::env::current_exe()?;
    let args = [
        PHASE_FLAG.to_string(),
        phase.as_str().to_string(),
        demo.brokers.clone(),
        topic.to_string(),
        demo.app_redis_url.clone(),
        opts.rate.to_string(),
        opts.duration.as_secs_f64().to_string(),
    ];
    let out = tokio::task::spawn_blocking(move || {
        Command::new(exe).args(args).stdin(Stdio::null()).stderr(Stdio::inherit()).output()
    })
    .await??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("memory phase {} exited with {}:\n{stdout}", phase.as_str(), out.status).into());
    }
    let report = PhaseReport::parse(&stdout)
        .ok_or_else(|| format!("memory phase {} printed no report:\n{stdout}", phase.as_str()))?;
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "  {}: {} writes ({} failed) in {:.1} s = {:.0}/s; RSS before {:.1} MiB, peak {:.1} MiB, after {:.1} MiB{}",
        phase.as_str(),
        report.writes,
        report.failed,
        report.secs,
        report.writes as f64 / report.secs.max(1e-9),
        mib(report.before_kib),
        mib(report.peak_kib),
        mib(report.after_kib),
        if phase == Phase::Capture { format!("; {} tasks went to the spool", report.spooled) } else { String::new() },
    );
    Ok(report)
}

/// The child process of one phase: `--memory-phase <raw|capture> brokers topic redis_url rate secs`.
async fn memory_phase_main(args: &[String]) -> Result<(), BoxError> {
    let [phase, brokers, topic, redis_url, rate, secs] = args else {
        return Err(format!("{PHASE_FLAG} takes six arguments, got {}", args.len()).into());
    };
    let phase = match phase.as_str() {
        "raw" => Phase::Raw,
        "capture" => Phase::Capture,
        other => return Err(format!("{PHASE_FLAG} {other}: expected raw or capture").into()),
    };
    let rate: u64 = rate.parse().map_err(|_| "rate: not a number")?;
    let duration = seconds("duration", secs)?;
    // Lazy, because Redis refuses from the start; no connect retries, so that each failed
    // write costs a refused connect rather than a backoff sleep and the rate can be held.
    let client = redis::Client::open(redis_url.as_str())?;
    let manager = ConnectionManager::new_lazy_with_config(
        client,
        ConnectionManagerConfig::new().set_number_of_retries(0),
    )?;
    let spool = std::env::temp_dir().join(format!("bench-outage-spool-{}", std::process::id()));
    let producer = match phase {
        Phase::Capture => {
            let config = ProducerConfig::new(brokers.as_str()).topic(topic.as_str()).spool_dir(&spool);
            Some(RetryProducer::new(&config)?)
        }
        Phase::Raw => None,
    };
    // The sampler's own thread is part of the process before the phase, not of its growth.
    let sampler = Sampler::start();
    let before_kib = rss_kib().ok_or("no VmRSS in /proc/self/status: the memory phase needs Linux")?;
    let started = Instant::now();
    let (writes, failed) = match &producer {
        Some(p) => {
            let conn = RetryConnection::new(manager).with_producer(p.clone());
            drive(rate, duration, |key| {
                let mut conn = conn.clone();
                async move {
                    let mut set = redis::cmd("SET");
                    set.arg(key).arg(VALUE).arg("EX").arg(TTL_SECS);
                    capture(ScopeMeta::new("bench_outage.save"), set.query_async::<()>(&mut conn))
                        .await
                        .is_err()
                }
            })
            .await
        }
        None => {
            drive(rate, duration, |key| {
                let mut conn = manager.clone();
                async move {
                    let mut set = redis::cmd("SET");
                    set.arg(key).arg(VALUE).arg("EX").arg(TTL_SECS);
                    set.query_async::<()>(&mut conn).await.is_err()
                }
            })
            .await
        }
    };
    let secs = started.elapsed().as_secs_f64();
    if let Some(p) = &producer {
        p.flush(Duration::from_secs(120))?;
    }
    // librdkafka frees delivered batches on its own threads; give it a moment to settle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after_kib = rss_kib().unwrap_or_default();
    let peak_kib = sampler.stop().max(after_kib);
    let spooled = producer.as_ref().and_then(RetryProducer::spool_stats).map(|s| s.appended).unwrap_or(0);
    drop(producer);
    let _ = std::fs::remove_dir_all(&spool);
    if failed != writes {
        return Err(format!("{} of {writes} writes succeeded although Redis refuses", writes - failed).into());
    }
    let report = PhaseReport { writes, failed, secs, before_kib, peak_kib, after_kib, spooled };
    println!("{}", report.line());
    Ok(())
}

/// Starts `rate / TICKS_PER_SEC` writes together at every tick for `duration`, catching up
/// after a slow tick; returns the writes made and how many failed.
async fn drive<F, Fut>(rate: u64, duration: Duration, mut write: F) -> (u64, u64)
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let per_tick = rate / TICKS_PER_SEC;
    let ticks = (duration.as_secs_f64() * TICKS_PER_SEC as f64).round() as u64;
    let mut interval = tokio::time::interval(Duration::from_secs(1) / TICKS_PER_SEC as u32);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let (mut writes, mut failed) = (0u64, 0u64);
    for _ in 0..ticks {
        interval.tick().await;
        let batch = (writes..writes + per_tick).map(|i| write(format!("bench:outage:memory:{i}")));
        failed += futures_util::future::join_all(batch).await.into_iter().filter(|f| *f).count() as u64;
        writes += per_tick;
    }
    (writes, failed)
}

/// This process's resident set size in KiB.
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Samples the RSS on its own thread, so that a busy runtime cannot skip the peak.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl Sampler {
    fn start() -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            while !stopped.load(Ordering::Relaxed) {
                peak = peak.max(rss_kib().unwrap_or_default());
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        });
        Sampler { stop, thread }
    }

    /// The highest RSS seen, in KiB.
    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}
