//! Publishing tasks to Kafka.
//!
//! [`RetryProducer`] wraps an rdkafka `ThreadedProducer` (idempotent, `acks=all`): `publish`
//! hands the task to librdkafka's queue and returns at once, and librdkafka's own thread reports
//! each delivery to a callback. That keeps publishing free of any async runtime and of a
//! spawned task per message, which a `FutureProducer` would need to hear about a failed
//! delivery at all.
//!
//! **Nothing Kafka cannot take is dropped** when the producer has a spool directory
//! ([`ProducerConfig::spool_dir`]). A fire-and-forget message
//! (`publish`, `dead_letter`) that librdkafka refuses, or whose delivery fails, goes to the
//! spool, and so does every new one while the spool holds anything, so that the tasks of a key
//! keep their order. A background thread re-publishes the spool oldest first, a batch at a
//! time, and removes a batch only once Kafka acknowledged it; a new producer on the same
//! directory starts by re-publishing what an earlier process left. Waited sends
//! (`publish_and_wait`, `send_bytes_and_wait`) never go to the spool: their caller learns the
//! outcome and retries, unless it stopped waiting, and then the message is spooled too.
//!
//! What a crash can lose: a crash of the process loses the messages librdkafka holds in
//! memory, handed over while the spool was empty and not yet acknowledged (milliseconds' worth
//! while Kafka is up; at the start of an outage, those of the first `message.timeout.ms`, 15 s
//! with a spool, until librdkafka reports them failed), never one in the spool. A crash of the
//! machine can also lose the spool appends of the last 20 ms. Re-publishing is at least once:
//! after a crash Kafka may hold a spooled task twice, never zero times.

mod config;
mod delivery;
mod drainer;
mod global;
pub(crate) mod headers;
mod topics;

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{Producer, ThreadedProducer};
use tokio::sync::oneshot;

use crate::errors::{DlqReason, PublishError, SetupError};
use crate::spool::{Lane, Record, Spool, SpoolError, SpoolStats};
use crate::task::{Mode, RedisTask};
use delivery::*;
use drainer::*;

pub use config::{ProducerConfig, DEFAULT_TOPIC};
pub use global::{global_producer, init_global_producer, log_and_retry_redis_error, log_redis_error};
pub(crate) use global::{report_ambiguous_capture, report_capture, report_unqueued};
pub(crate) use headers::dlq_headers;
pub(crate) use topics::check_topic_name;
pub use topics::{ensure_topics, Topics};

/// `message.timeout.ms` with a spool. librdkafka retries within it through broker restarts
/// and leader elections, which take seconds; past it a task is better on disk than in memory,
/// where a crash would lose it, and a detour through the spool costs only time.
const SPOOLED_MESSAGE_TIMEOUT_MS: &str = "15000";
/// `message.timeout.ms` without a spool: a delivery that times out is lost, so wait long.
const MESSAGE_TIMEOUT_MS: &str = "60000";

struct Inner {
    producer: ThreadedProducer<DeliveryReporter>,
    shared: Arc<Shared>,
    drainer: Option<JoinHandle<()>>,
    config: ProducerConfig,
    topics: Topics,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.flow().stopping = true;
        self.shared.changed.notify_all();
        if let Some(drainer) = self.drainer.take() {
            let _ = drainer.join();
        }
        // Give queued tasks a chance to leave before the process goes away. What is still
        // queued after that is purged when the producer drops, and spooled by the callback.
        let _ = self.producer.flush(Duration::from_secs(5));
    }
}

/// The task as it goes on the main topic: what it means, whatever consumer reads it.
fn on_the_wire(task: &RedisTask) -> Result<std::borrow::Cow<'_, RedisTask>, PublishError> {
    match task.mode {
        Mode::Replay => Ok(std::borrow::Cow::Borrowed(task)),
        Mode::Invalidate => Ok(std::borrow::Cow::Owned(task.invalidation()?)),
        Mode::Log => Err(PublishError::LogMode),
    }
}

/// What `publish` returns when the spool refused a task (the spool's error is in the log).
// PublishError has no variant for the spool yet; a full spool is the producer's queue being
// full, so that is the closest error there is.
fn spool_refusal(e: SpoolError) -> PublishError {
    PublishError::Spool(e)
}

/// Publishes tasks to Kafka. Cheap to clone; clones share one librdkafka producer.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use redis_retry_runtime::{ProducerConfig, RedisTask, RetryProducer};
/// let config = ProducerConfig::new("localhost:9092").spool_dir("/var/lib/my-service/redis-retry-spool");
/// let producer = RetryProducer::new(&config)?;
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
    /// Creates the producer and checks, before the first task needs it, that Kafka answers
    /// and the main topic exists. It creates nothing: partitions and replication are the
    /// operator's choice (`redis-retry topics ensure`, or [`ensure_topics`](Self::ensure_topics)).
    ///
    /// # Errors
    ///
    /// [`SetupError::Config`] when a setting is wrong or the topic does not exist (the message
    /// says how to create it); [`SetupError::Runtime`] when no broker answers within 10 s.
    pub async fn connect(config: &ProducerConfig) -> Result<Self, SetupError> {
        let producer = Self::new(config)?;
        let topic = producer.inner.topics.main.clone();
        let probe = producer.clone();
        let metadata = tokio::task::spawn_blocking(move || {
            probe
                .inner
                .producer
                .client()
                .fetch_metadata(Some(&probe.inner.topics.main), Duration::from_secs(10))
        })
        .await
        .map_err(|e| SetupError::Runtime(format!("checking the topic {topic}: {e}")))?
        .map_err(|e| {
            SetupError::Runtime(format!("no Kafka broker of {} answered within 10 s: {e}", config.brokers))
        })?;
        let exists = metadata
            .topics()
            .iter()
            .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty());
        if !exists {
            return Err(SetupError::Config(format!(
                "topic: {topic} does not exist on {}; create the topics with `redis-retry topics ensure` \
                 (with the partitions and replication you want) or RetryProducer::ensure_topics",
                config.brokers
            )));
        }
        Ok(producer)
    }

    /// Creates the producer (no network traffic yet). With a spool directory, opens the spool
    /// (failing if another live process uses it) and starts re-publishing what it holds.
    pub fn new(config: &ProducerConfig) -> Result<Self, SetupError> {
        let topics = config.topics();
        for t in topics.all() {
            check_topic_name("topic", t)?;
        }
        if config.brokers.trim().is_empty() {
            return Err(SetupError::Config("brokers: empty broker list".into()));
        }
        let spool = match &config.spool_dir {
            Some(dir) => Some(
                Spool::open(dir, config.spool_max_bytes)
                    .map_err(|e| SetupError::Config(format!("spool_dir: {e}")))?,
            ),
            None => None,
        };
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &config.brokers)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "2")
            .set(
                "message.timeout.ms",
                if spool.is_some() { SPOOLED_MESSAGE_TIMEOUT_MS } else { MESSAGE_TIMEOUT_MS },
            );
        for (k, v) in &config.properties {
            cfg.set(k, v);
        }
        let shared = Arc::new(Shared {
            spool,
            signing_key: config.signing_key.clone(),
            flow: Mutex::new(Flow::default()),
            changed: Condvar::new(),
        });
        let producer: ThreadedProducer<DeliveryReporter> = cfg
            .create_with_context(DeliveryReporter(Arc::clone(&shared)))
            .map_err(|e| SetupError::Runtime(format!("kafka producer: {e}")))?;
        let drainer = match &shared.spool {
            Some(spool) => {
                let stats = spool.stats();
                if stats.pending > 0 {
                    tracing::info!(spool = %spool.dir().display(), tasks = stats.pending, bytes = stats.bytes,
                        "re-publishing the tasks an earlier run left in the spool");
                }
                let drainer = Drainer { shared: Arc::clone(&shared), producer: producer.clone() };
                let thread = std::thread::Builder::new().name("redis-retry-spool".into()).spawn(move || {
                    if let Some(spool) = &drainer.shared.spool {
                        drainer.run(spool);
                    }
                });
                Some(
                    thread
                        .map_err(|e| SetupError::Runtime(format!("spool: cannot start its thread: {e}")))?,
                )
            }
            None => None,
        };
        Ok(RetryProducer {
            inner: Arc::new(Inner { producer, shared, drainer, config: config.clone(), topics }),
        })
    }

    /// The topics this producer writes to.
    pub fn topics(&self) -> &Topics {
        &self.inner.topics
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &ProducerConfig {
        &self.inner.config
    }

    /// Figures about the spool (tasks waiting, bytes, appended, refused, re-published), when
    /// the producer has one.
    ///
    /// ```
    /// use redis_retry_runtime::{ProducerConfig, RetryProducer};
    /// let dir = std::env::temp_dir().join(format!("spool-stats-doc-{}", std::process::id()));
    /// let producer = RetryProducer::new(&ProducerConfig::new("127.0.0.1:9092").spool_dir(&dir))?;
    /// assert_eq!(producer.spool_stats().map(|s| s.pending), Some(0));
    /// # drop(producer); std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), redis_retry_runtime::SetupError>(())
    /// ```
    pub fn spool_stats(&self) -> Option<SpoolStats> {
        self.inner.shared.spool.as_ref().map(Spool::stats)
    }

    /// Queues `task` for the main topic and returns at once; the delivery is reported in the
    /// background. With a spool, a task Kafka cannot take is kept there and re-published
    /// later; without one, a failure is logged (`kafka_error`, `original_error`, `task_type`)
    /// and counted.
    ///
    /// The wire says what the task means to any consumer, the seed's Go one included, which
    /// ignores `mode`: a task in `invalidate` mode travels as the `DEL` of every key it touches
    /// ([`RedisTask::invalidation`]), and one in `log` mode is refused
    /// ([`PublishError::LogMode`]).
    pub fn publish(&self, task: &RedisTask) -> Result<(), PublishError> {
        let task = on_the_wire(task)?;
        self.send_direct(&self.inner.topics.main, task.first_key(), &task.to_json(), None)
    }

    /// Queues `task` for the main topic and waits for Kafka's acknowledgement. A failure is
    /// returned, not spooled: the caller decides whether to retry.
    pub async fn publish_and_wait(&self, task: &RedisTask) -> Result<(), PublishError> {
        let task = on_the_wire(task)?;
        let main = &self.inner.topics.main;
        self.send_bytes_and_wait(main, task.first_key(), &task.to_json(), None).await
    }

    /// Queues `task` for the dead-letter topic with its reason, and returns at once (spooled
    /// like [`publish`](Self::publish) when Kafka cannot take it).
    pub fn dead_letter(&self, task: &RedisTask, reason: DlqReason, error: &str) -> Result<(), PublishError> {
        let headers = dlq_headers(reason, error, "");
        self.send_direct(&self.inner.topics.dlq, task.first_key(), &task.to_json(), Some(headers))
    }

    /// Sends raw bytes to `topic` and waits for the acknowledgement (the consumer's path to
    /// the retry tiers and the dead-letter topic). With a signing key, any signature among
    /// `headers` is replaced by one of `payload`.
    pub async fn send_bytes_and_wait(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
    ) -> Result<(), PublishError> {
        let (tx, rx) = oneshot::channel();
        send(&self.inner.producer, &self.inner.shared, topic, key, payload, headers, Outcome::Waiter(tx))
            .map_err(|(err, ..)| PublishError::Kafka(err))?;
        rx.await.map_err(|_| PublishError::Canceled)?.map_err(PublishError::Kafka)
    }

    /// Fire-and-forget: to librdkafka, or to the spool's tail while it holds anything (so
    /// that no task overtakes an earlier one of its key) or when librdkafka refuses it.
    fn send_direct(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
    ) -> Result<(), PublishError> {
        let shared = &self.inner.shared;
        let record = |headers: Option<&OwnedHeaders>| Record {
            topic: topic.to_string(),
            key: key.map(<[u8]>::to_vec),
            payload: payload.to_vec(),
            headers: header_list(headers),
        };
        if let Some(spool) = &shared.spool {
            // Deciding and counting under one lock: the drainer must not seal the redelivery
            // lane between this check and the send.
            let mut flow = shared.flow();
            if spool.is_active() {
                let about = About::payload(payload);
                let kept = shared.keep(spool, &record(headers.as_ref()), Lane::Tail, &about, "spool_active");
                drop(flow);
                return kept.map_err(spool_refusal);
            }
            flow.in_flight += 1;
        }
        let Err((err, _, headers)) =
            send(&self.inner.producer, shared, topic, key, payload, headers, Outcome::Direct)
        else {
            return Ok(());
        };
        // Refused: no delivery report will come for it.
        let result = match &shared.spool {
            Some(spool) if !is_permanent(&err) => {
                let about = About::payload(payload);
                let kept = shared.keep(spool, &record(headers.as_ref()), Lane::Tail, &about, "send_refused");
                kept.map_err(|_| PublishError::Kafka(err))
            }
            _ => Err(PublishError::Kafka(err)),
        };
        shared.direct_settled();
        result
    }

    /// Waits until every queued task was delivered or failed (and so spooled), at most
    /// `timeout`, then forces the spool to disk. It blocks the calling thread: from async code,
    /// call it through `tokio::task::spawn_blocking` (the producer is cheap to clone).
    ///
    /// # Errors
    ///
    /// librdkafka's, when messages were still in flight at `timeout`.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        // rdkafka's flush polls in steps of 100 ms however soon the queue empties; the
        // producer's own thread already serves delivery reports, so watching the queue drain
        // returns as soon as the last one is in.
        let deadline = std::time::Instant::now() + timeout;
        while self.inner.producer.in_flight_count() > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        let result = self.inner.producer.flush(deadline.saturating_duration_since(std::time::Instant::now()));
        if let Some(spool) = &self.inner.shared.spool {
            spool.sync();
        }
        result
    }

    /// Creates the main, retry-tier and dead-letter topics where they are missing.
    pub async fn ensure_topics(&self, partitions: i32, replication: i32) -> Result<(), SetupError> {
        ensure_topics(&self.inner.config.client_config(), &self.inner.topics.all(), partitions, replication)
            .await
    }
}
