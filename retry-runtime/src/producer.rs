//! Publishing tasks to Kafka.
//!
//! [`RetryProducer`] wraps an rdkafka `ThreadedProducer` (idempotent, `acks=all`): `publish`
//! hands the task to librdkafka's queue and returns at once, and librdkafka's own thread reports
//! each delivery to a callback that logs and counts failures. That keeps publishing free of
//! any async runtime and of a spawned task per message, which a `FutureProducer` would need to
//! hear about a failed delivery at all.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use tokio::sync::oneshot;

use crate::counters;
use crate::errors::{DlqReason, PublishError, SetupError};
use crate::signing::SigningKey;
use crate::task::RedisTask;

/// The topics of one retry pipeline, all derived from the main topic's name.
///
/// ```
/// use redis_retry_runtime::Topics;
/// let t = Topics::new("redis-retry-queue", 3);
/// assert_eq!(t.retry[0], "redis-retry-queue.retry.1");
/// assert_eq!(t.dlq, "redis-retry-queue.dlq");
/// assert_eq!(t.tier(7), "redis-retry-queue.retry.3");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// Where captured tasks go.
    pub main: String,
    /// Retry tiers `<main>.retry.<n>`, n = 1.. (longer delays in later tiers).
    pub retry: Vec<String>,
    /// Dead letters: `<main>.dlq`.
    pub dlq: String,
}

impl Topics {
    /// Topic names for `main` with `tiers` retry tiers (at least one).
    pub fn new(main: &str, tiers: usize) -> Self {
        Topics {
            main: main.to_string(),
            retry: (1..=tiers.max(1)).map(|n| format!("{main}.retry.{n}")).collect(),
            dlq: format!("{main}.dlq"),
        }
    }

    /// The tier topic for the `attempt`-th retry (1-based); retries beyond the last tier reuse it.
    pub fn tier(&self, attempt: u32) -> &str {
        let idx = (attempt.max(1) as usize - 1).min(self.retry.len() - 1);
        &self.retry[idx]
    }

    /// Every topic, main first.
    pub fn all(&self) -> Vec<&str> {
        std::iter::once(self.main.as_str())
            .chain(self.retry.iter().map(String::as_str))
            .chain(std::iter::once(self.dlq.as_str()))
            .collect()
    }
}

/// Checks a Kafka topic name (legal characters, length), naming the setting on error.
pub fn check_topic_name(setting: &str, name: &str) -> Result<(), SetupError> {
    let ok_chars = name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if name.is_empty() || name.len() > 200 || !ok_chars || name == "." || name == ".." {
        return Err(SetupError::Config(format!(
            "{setting}: `{name}` is not a valid Kafka topic name (1-200 characters of a-z A-Z 0-9 . _ -)"
        )));
    }
    Ok(())
}

/// How to reach Kafka and where to publish.
///
/// ```
/// use redis_retry_runtime::ProducerConfig;
/// let cfg = ProducerConfig::new("127.0.0.1:9092").topic("orders-cache-retry");
/// assert_eq!(cfg.topics().main, "orders-cache-retry");
/// ```
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Main topic (default `redis-retry-queue`).
    pub topic: String,
    /// Number of retry tiers (default 3).
    pub retry_tiers: usize,
    /// Extra librdkafka properties (TLS, SASL, ...), applied last.
    pub properties: Vec<(String, String)>,
    /// Signs every message when set ([`signing`](crate::signing)).
    pub signing_key: Option<SigningKey>,
    /// Directory of the local spool that keeps tasks Kafka cannot take (none: no spool).
    pub spool_dir: Option<std::path::PathBuf>,
    /// Largest size of the spool file; beyond it a task is refused with a clear error.
    pub spool_max_bytes: u64,
}

/// The seed's topic.
pub const DEFAULT_TOPIC: &str = "redis-retry-queue";

impl ProducerConfig {
    /// Defaults for `brokers`.
    pub fn new(brokers: impl Into<String>) -> Self {
        ProducerConfig {
            brokers: brokers.into(),
            topic: DEFAULT_TOPIC.to_string(),
            retry_tiers: 3,
            properties: Vec::new(),
            signing_key: None,
            spool_dir: None,
            spool_max_bytes: 256 * 1024 * 1024,
        }
    }
    /// Signs every message with `key`.
    pub fn signing_key(mut self, key: SigningKey) -> Self {
        self.signing_key = Some(key);
        self
    }
    /// Keeps tasks Kafka cannot take in a spool under `dir`.
    pub fn spool_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.spool_dir = Some(dir.into());
        self
    }
    /// Sets the main topic.
    pub fn topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = topic.into();
        self
    }
    /// Sets the number of retry tiers.
    pub fn retry_tiers(mut self, n: usize) -> Self {
        self.retry_tiers = n;
        self
    }
    /// Adds a librdkafka property.
    pub fn property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.push((key.into(), value.into()));
        self
    }
    /// The topic names this configuration implies.
    pub fn topics(&self) -> Topics {
        Topics::new(&self.topic, self.retry_tiers)
    }

    pub(crate) fn client_config(&self) -> ClientConfig {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &self.brokers);
        for (k, v) in &self.properties {
            cfg.set(k, v);
        }
        cfg
    }
}

/// What the delivery callback needs to report one message.
struct Pending {
    task_type: &'static str,
    command: String,
    source: String,
    original_error: String,
    waiter: Option<oneshot::Sender<Result<(), KafkaError>>>,
}

/// librdkafka calls this context on its polling thread for every delivery report.
struct DeliveryReporter;

impl ClientContext for DeliveryReporter {}

impl ProducerContext for DeliveryReporter {
    type DeliveryOpaque = Box<Pending>;

    fn delivery(&self, result: &DeliveryResult<'_>, pending: Box<Pending>) {
        let pending = *pending;
        let outcome = match result {
            Ok(_) => {
                metrics::counter!(counters::ENQUEUED).increment(1);
                Ok(())
            }
            Err((err, _)) => {
                metrics::counter!(counters::ENQUEUE_FAILURES, "reason" => "delivery").increment(1);
                tracing::error!(
                    kafka_error = %err,
                    original_error = %pending.original_error,
                    task_type = pending.task_type,
                    command = %pending.command,
                    source = %pending.source,
                    "failed to deliver redis retry task to kafka"
                );
                Err(err.clone())
            }
        };
        if let Some(waiter) = pending.waiter {
            let _ = waiter.send(outcome);
        }
    }
}

struct Inner {
    producer: ThreadedProducer<DeliveryReporter>,
    config: ProducerConfig,
    topics: Topics,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Give queued tasks a chance to leave before the process goes away.
        let _ = self.producer.flush(Duration::from_secs(5));
    }
}

/// Publishes tasks to Kafka. Cheap to clone; clones share one librdkafka producer.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use redis_retry_runtime::{ProducerConfig, RedisTask, RetryProducer};
/// let producer = RetryProducer::new(&ProducerConfig::new("localhost:9092"))?;
/// producer.publish(&RedisTask::del("user:info:1")?.with_source("UserRepository.DeleteUserCache"))?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RetryProducer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RetryProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryProducer").field("topics", &self.inner.topics).finish()
    }
}

impl RetryProducer {
    /// Creates the producer and the topics that are missing (main, retry tiers, dead letters;
    /// 3 partitions, replication 1), so that the first task has somewhere to go even on a
    /// broker that does not create topics on its own.
    pub async fn connect(config: &ProducerConfig) -> Result<Self, SetupError> {
        let producer = Self::new(config)?;
        producer.ensure_topics(3, 1).await?;
        Ok(producer)
    }

    /// Creates the producer (no network traffic yet).
    pub fn new(config: &ProducerConfig) -> Result<Self, SetupError> {
        let topics = config.topics();
        for t in topics.all() {
            check_topic_name("topic", t)?;
        }
        if config.brokers.trim().is_empty() {
            return Err(SetupError::Config("brokers: empty broker list".into()));
        }
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &config.brokers)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "2")
            .set("message.timeout.ms", "60000");
        for (k, v) in &config.properties {
            cfg.set(k, v);
        }
        let producer: ThreadedProducer<DeliveryReporter> = cfg
            .create_with_context(DeliveryReporter)
            .map_err(|e| SetupError::Config(format!("kafka producer: {e}")))?;
        Ok(RetryProducer { inner: Arc::new(Inner { producer, config: config.clone(), topics }) })
    }

    /// The topics this producer writes to.
    pub fn topics(&self) -> &Topics {
        &self.inner.topics
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &ProducerConfig {
        &self.inner.config
    }

    /// Queues `task` for the main topic and returns at once; the delivery is reported (and a
    /// failure logged with `kafka_error`, `original_error`, `task_type`) in the background.
    pub fn publish(&self, task: &RedisTask) -> Result<(), PublishError> {
        self.send(&self.inner.topics.main, task, None, None)
    }

    /// Queues `task` for the main topic and waits for Kafka's acknowledgement.
    pub async fn publish_and_wait(&self, task: &RedisTask) -> Result<(), PublishError> {
        let (tx, rx) = oneshot::channel();
        self.send(&self.inner.topics.main, task, None, Some(tx))?;
        rx.await.map_err(|_| PublishError::Canceled)?.map_err(PublishError::Kafka)
    }

    /// Queues `task` for the dead-letter topic with its reason, and returns at once.
    pub fn dead_letter(&self, task: &RedisTask, reason: DlqReason, error: &str) -> Result<(), PublishError> {
        let headers = dlq_headers(reason, error, "");
        self.send(&self.inner.topics.dlq, task, Some(headers), None)
    }

    /// Sends raw bytes to `topic` and waits for the acknowledgement (the consumer's path to
    /// the retry tiers and the dead-letter topic).
    pub async fn send_bytes_and_wait(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
    ) -> Result<(), PublishError> {
        let (tx, rx) = oneshot::channel();
        let pending = Pending {
            task_type: "raw",
            command: String::new(),
            source: String::new(),
            original_error: String::new(),
            waiter: Some(tx),
        };
        self.send_record(topic, key, payload, headers, pending)?;
        rx.await.map_err(|_| PublishError::Canceled)?.map_err(PublishError::Kafka)
    }

    fn send(
        &self,
        topic: &str,
        task: &RedisTask,
        headers: Option<OwnedHeaders>,
        waiter: Option<oneshot::Sender<Result<(), KafkaError>>>,
    ) -> Result<(), PublishError> {
        let payload = task.to_json();
        let pending = Pending {
            task_type: task.kind.as_str(),
            command: task.command_name().to_string(),
            source: task.source.clone(),
            original_error: task.original_err.clone(),
            waiter,
        };
        self.send_record(topic, task.first_key(), &payload, headers, pending)
    }

    fn send_record(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
        pending: Pending,
    ) -> Result<(), PublishError> {
        let mut record = BaseRecord::with_opaque_to(topic, Box::new(pending)).payload(payload);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(h) = headers {
            record = record.headers(h);
        }
        self.inner.producer.send(record).map_err(|(err, _)| PublishError::Kafka(err))
    }

    /// Waits until every queued task was delivered or failed, at most `timeout`.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.inner.producer.flush(timeout)
    }

    /// Creates the main, retry-tier and dead-letter topics where they are missing.
    pub async fn ensure_topics(&self, partitions: i32, replication: i32) -> Result<(), SetupError> {
        ensure_topics(&self.inner.config.client_config(), &self.inner.topics.all(), partitions, replication)
            .await
    }
}

/// Creates `names` through the admin API; topics that already exist are fine.
pub async fn ensure_topics(
    client: &ClientConfig,
    names: &[&str],
    partitions: i32,
    replication: i32,
) -> Result<(), SetupError> {
    if partitions < 1 {
        return Err(SetupError::Config(format!("partitions must be at least 1, got {partitions}")));
    }
    let admin: AdminClient<DefaultClientContext> = client.create()?;
    let new: Vec<NewTopic<'_>> =
        names.iter().map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(replication))).collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(15)));
    for result in admin.create_topics(&new, &opts).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(SetupError::Kafka(KafkaError::AdminOp(code)))
                    .inspect_err(|_| tracing::error!(topic = %name, error = %code, "could not create topic"))
            }
        }
    }
    Ok(())
}

/// Headers of a dead-lettered message: why, the last error, and where it came from.
pub(crate) fn dlq_headers(reason: DlqReason, error: &str, source_topic: &str) -> OwnedHeaders {
    let now = chrono::Utc::now().to_rfc3339();
    OwnedHeaders::new()
        .insert(Header { key: "reason", value: Some(reason.as_str()) })
        .insert(Header { key: "error", value: Some(error) })
        .insert(Header { key: "source_topic", value: Some(source_topic) })
        .insert(Header { key: "dead_lettered_at", value: Some(now.as_str()) })
}

static GLOBAL: OnceLock<RetryProducer> = OnceLock::new();

/// Installs the process-wide producer (the seed's `manager.go`); connections without their
/// own producer use it. Returns the producer back if one was installed already.
pub fn init_global_producer(producer: RetryProducer) -> Result<(), RetryProducer> {
    GLOBAL.set(producer)
}

/// The process-wide producer, if installed.
pub fn global_producer() -> Option<&'static RetryProducer> {
    GLOBAL.get()
}

/// Logs a failed write and queues its task on the global producer (the seed's
/// `LogAndRetryRedisError`). Never panics: without a global producer it logs an error and
/// counts the loss.
///
/// ```
/// use redis_retry_runtime::{log_and_retry_redis_error, RedisTask};
/// let task = RedisTask::del("user:info:1")?.with_source("UserRepository.DeleteUserCache");
/// // No global producer in this example: an error is logged and counted, nothing panics.
/// log_and_retry_redis_error(&task, &"connection refused");
/// # Ok::<(), redis_retry_runtime::TaskError>(())
/// ```
pub fn log_and_retry_redis_error(task: &RedisTask, err: &dyn std::fmt::Display) {
    match global_producer() {
        Some(p) => p.log_and_retry(task, err),
        None => {
            let task = task.clone().with_error(err);
            report_capture(&task);
            report_unqueued(&task, &PublishError::NoProducer);
        }
    }
}

/// Logs a failed write that is not retried (seed: `LogRedisError`, read-path backfill).
///
/// ```
/// redis_retry_runtime::log_redis_error(&"connection refused");
/// ```
pub fn log_redis_error(err: &dyn std::fmt::Display) {
    metrics::counter!(counters::LOGGED).increment(1);
    tracing::warn!(error = %err, "redis write failed on a read path; not retried");
}

impl RetryProducer {
    /// [`log_and_retry_redis_error`] on this producer instead of the global one.
    pub fn log_and_retry(&self, task: &RedisTask, err: &dyn std::fmt::Display) {
        let task = task.clone().with_error(err);
        report_capture(&task);
        if let Err(e) = self.publish(&task) {
            report_unqueued(&task, &e);
        }
    }
}

pub(crate) fn report_capture(task: &RedisTask) {
    metrics::counter!(counters::CAPTURED).increment(1);
    tracing::error!(
        error = %task.original_err,
        task_type = task.kind.as_str(),
        command = %task.command_name(),
        keys = %task.describe(),
        trace_id = %task.trace_id,
        user_uuid = %task.user_uuid,
        source = %task.source,
        task_id = %task.id,
        "redis write failed, sending it to the retry queue"
    );
}

pub(crate) fn report_unqueued(task: &RedisTask, err: &PublishError) {
    let reason = match err {
        PublishError::NoProducer => "no_producer",
        _ => "queue",
    };
    metrics::counter!(counters::ENQUEUE_FAILURES, "reason" => reason).increment(1);
    tracing::error!(
        kafka_error = %err,
        original_error = %task.original_err,
        task_type = task.kind.as_str(),
        command = %task.command_name(),
        keys = %task.describe(),
        source = %task.source,
        task_id = %task.id,
        "could not queue redis retry task"
    );
}
