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

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, DeliveryResult, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use tokio::sync::oneshot;

use crate::counters;
use crate::errors::{DlqReason, PublishError, SetupError};
use crate::signing::{SigningKey, SIGNATURE_HEADER};
use crate::spool::{Batch, Lane, Record, Spool, SpoolError, SpoolStats};
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
#[non_exhaustive]
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
    /// With no tier at all (a `Topics` whose `retry` was emptied), the dead-letter topic.
    pub fn tier(&self, attempt: u32) -> &str {
        let idx = (attempt.max(1) as usize - 1).min(self.retry.len().saturating_sub(1));
        self.retry.get(idx).unwrap_or(&self.dlq)
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
#[non_exhaustive]
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
    /// Directory of the local spool that keeps tasks Kafka cannot take (none: no spool); one
    /// producer at a time may use it. With a spool, `message.timeout.ms` defaults to 15 s
    /// instead of 60 s: past that, a task is safer on disk than in memory.
    pub spool_dir: Option<std::path::PathBuf>,
    /// Largest size of the spool's files; beyond it a task is refused with a clear error.
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
    /// Keeps tasks Kafka cannot take in a spool under `dir`: an append-only file of
    /// CRC-checked records, fsync'd in batches, re-published in order once Kafka is back, and
    /// replayed by the next process that opens the directory.
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
    /// Sets the largest size of the spool's files.
    pub fn spool_max_bytes(mut self, n: u64) -> Self {
        self.spool_max_bytes = n;
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

/// `message.timeout.ms` with a spool. librdkafka retries within it through broker restarts
/// and leader elections, which take seconds; past it a task is better on disk than in memory,
/// where a crash would lose it, and a detour through the spool costs only time.
const SPOOLED_MESSAGE_TIMEOUT_MS: &str = "15000";
/// `message.timeout.ms` without a spool: a delivery that times out is lost, so wait long.
const MESSAGE_TIMEOUT_MS: &str = "60000";
/// At most this many spooled records are re-published before waiting for their acks.
const REPLAY_BATCH_RECORDS: usize = 500;
const REPLAY_BATCH_BYTES: usize = 4 * 1024 * 1024;
const REPLAY_BACKOFF_MIN: Duration = Duration::from_millis(200);
const REPLAY_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What the logs say about a message: its kind, command, keys and origin, never its values.
#[derive(Default)]
struct About {
    task_type: &'static str,
    command: String,
    keys: String,
    source: String,
    task_id: String,
    original_error: String,
}

impl About {
    fn task(task: &RedisTask) -> About {
        About {
            task_type: task.kind.as_str(),
            command: task.command_name().to_string(),
            keys: task.describe(),
            source: task.source.clone(),
            task_id: task.id.to_string(),
            original_error: task.original_err.clone(),
        }
    }

    /// For bytes that may or may not be a task (the consumer's re-publishing, replays).
    fn payload(payload: &[u8]) -> About {
        match RedisTask::from_json(payload) {
            Ok(task) => About::task(&task),
            Err(_) => About { task_type: "raw", ..About::default() },
        }
    }
}

/// Who hears how a delivery ended.
enum Outcome {
    /// Nobody waits: a failure sends the message to the spool.
    Direct,
    /// A caller waits, and retries a failure itself.
    Waiter(oneshot::Sender<Result<(), KafkaError>>),
    /// The spool's drainer, for record `index` of its batch.
    Replay { index: usize, report: mpsc::Sender<(usize, Result<(), KafkaError>)> },
}

/// State shared by the producer's handles, librdkafka's delivery callback and the drainer.
struct Shared {
    spool: Option<Spool>,
    signing_key: Option<SigningKey>,
    flow: Mutex<Flow>,
    /// Signals a change of `flow` or of the spool to the drainer.
    changed: Condvar,
}

#[derive(Default)]
struct Flow {
    /// Fire-and-forget messages with librdkafka whose fate is unknown. While there are any,
    /// the spool's redelivery lane stays open: one of them may still fail and must then be
    /// re-published before the tasks spooled after it.
    in_flight: u64,
    stopping: bool,
}

impl Shared {
    fn flow(&self) -> MutexGuard<'_, Flow> {
        self.flow.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `headers` with a signature of `payload` in place of any earlier one, when signing.
    fn signed(&self, payload: &[u8], headers: Option<OwnedHeaders>) -> Option<OwnedHeaders> {
        let Some(key) = &self.signing_key else { return headers };
        let mut out = OwnedHeaders::new();
        for h in headers.iter().flat_map(|h| h.iter()).filter(|h| h.key != SIGNATURE_HEADER) {
            out = out.insert(Header { key: h.key, value: h.value });
        }
        let signature = key.sign(payload);
        Some(out.insert(Header { key: SIGNATURE_HEADER, value: Some(signature.as_bytes()) }))
    }

    /// Keeps `record` in the spool, or says loudly (error log, counter) why it could not.
    fn keep(
        &self,
        spool: &Spool,
        record: &Record,
        lane: Lane,
        about: &About,
        cause: &'static str,
    ) -> Result<(), SpoolError> {
        let starts = !spool.is_active();
        match spool.append(record, lane) {
            Ok(()) => {
                metrics::counter!(counters::SPOOLED, "cause" => cause).increment(1);
                if starts {
                    tracing::warn!(spool = %spool.dir().display(), cause, topic = %record.topic,
                        "kafka cannot take tasks now: keeping them in the local spool until it can");
                }
                tracing::debug!(cause, keys = %about.keys, source = %about.source, task_id = %about.task_id,
                    "task kept in the spool");
                self.changed.notify_all();
                Ok(())
            }
            Err(e) => {
                tracing::error!(
                    spool_error = %e,
                    cause,
                    topic = %record.topic,
                    task_type = about.task_type,
                    command = %about.command,
                    keys = %about.keys,
                    source = %about.source,
                    task_id = %about.task_id,
                    original_error = %about.original_error,
                    "task NOT saved: kafka cannot take it and the spool refused it"
                );
                Err(e)
            }
        }
    }

    /// A message whose delivery failed and that no caller will retry: into the spool when
    /// there is one and resending can help, otherwise logged and counted as lost.
    fn delivery_failed(
        &self,
        err: &KafkaError,
        msg: &BorrowedMessage<'_>,
        about: &About,
        cause: &'static str,
    ) {
        if let Some(spool) = self.spool.as_ref().filter(|_| !is_permanent(err)) {
            let record = Record {
                topic: msg.topic().to_string(),
                key: msg.key().map(<[u8]>::to_vec),
                payload: msg.payload().unwrap_or_default().to_vec(),
                headers: header_list(msg.headers()),
            };
            if self.keep(spool, &record, Lane::Redelivery, about, cause).is_err() {
                metrics::counter!(counters::ENQUEUE_FAILURES, "reason" => "spool_refused").increment(1);
            }
            return;
        }
        report_delivery_failure(err, about);
    }

    /// A fire-and-forget message left librdkafka's hands (delivered, failed or refused).
    fn direct_settled(&self) {
        if self.spool.is_some() {
            let mut flow = self.flow();
            flow.in_flight = flow.in_flight.saturating_sub(1);
            drop(flow);
            self.changed.notify_all();
        }
    }
}

fn report_delivery_failure(err: &KafkaError, about: &About) {
    metrics::counter!(counters::ENQUEUE_FAILURES, "reason" => "delivery").increment(1);
    tracing::error!(
        kafka_error = %err,
        original_error = %about.original_error,
        task_type = about.task_type,
        command = %about.command,
        keys = %about.keys,
        source = %about.source,
        task_id = %about.task_id,
        "failed to deliver redis retry task to kafka"
    );
}

/// Errors Kafka gives again however often the message is sent: spooling would not help.
fn is_permanent(err: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        err.rdkafka_error_code(),
        Some(
            C::MessageSizeTooLarge
                | C::InvalidMessageSize
                | C::MessageBatchTooLarge
                | C::InvalidRecord
                | C::BadMessage
        )
    )
}

/// Headers as the spool keeps them: without a signature, which is made afresh at each send
/// (the key may have changed since).
fn header_list<H: Headers>(headers: Option<&H>) -> Vec<(String, Option<Vec<u8>>)> {
    headers
        .iter()
        .flat_map(|h| h.iter())
        .filter(|h| h.key != SIGNATURE_HEADER)
        .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
        .collect()
}

fn owned_headers(list: &[(String, Option<Vec<u8>>)]) -> Option<OwnedHeaders> {
    if list.is_empty() {
        return None;
    }
    let headers = OwnedHeaders::new_with_capacity(list.len());
    Some(list.iter().fold(headers, |h, (key, value)| h.insert(Header { key, value: value.as_deref() })))
}

/// What librdkafka hands back with a refused message.
type Refused = (KafkaError, Box<Outcome>, Option<OwnedHeaders>);

/// Signs and queues one message on librdkafka.
fn send(
    producer: &ThreadedProducer<DeliveryReporter>,
    shared: &Shared,
    topic: &str,
    key: Option<&[u8]>,
    payload: &[u8],
    headers: Option<OwnedHeaders>,
    outcome: Outcome,
) -> Result<(), Refused> {
    let mut record = BaseRecord::with_opaque_to(topic, Box::new(outcome)).payload(payload);
    if let Some(key) = key {
        record = record.key(key);
    }
    if let Some(headers) = shared.signed(payload, headers) {
        record = record.headers(headers);
    }
    producer.send(record).map_err(|(err, record)| (err, record.delivery_opaque, record.headers))
}

/// librdkafka calls this context on its polling thread for every delivery report (and on
/// the dropping thread for the messages purged when the producer goes).
struct DeliveryReporter(Arc<Shared>);

impl ClientContext for DeliveryReporter {}

impl ProducerContext for DeliveryReporter {
    type DeliveryOpaque = Box<Outcome>;

    fn delivery(&self, result: &DeliveryResult<'_>, outcome: Box<Outcome>) {
        let shared = &self.0;
        // What the logs say about a failed message is read back from its payload: building it
        // for every message would cost the happy path more than the send itself.
        let about = |msg: &BorrowedMessage<'_>| About::payload(msg.payload().unwrap_or_default());
        match (*outcome, result) {
            (Outcome::Replay { index, report }, _) => {
                let _ = report.send((index, result.as_ref().map(|_| ()).map_err(|(e, _)| e.clone())));
            }
            (Outcome::Waiter(waiter), Ok(_)) => {
                metrics::counter!(counters::ENQUEUED).increment(1);
                let _ = waiter.send(Ok(()));
            }
            (Outcome::Waiter(waiter), Err((err, msg))) => {
                if waiter.send(Err(err.clone())).is_err() {
                    // The caller stopped waiting, so nobody will retry it.
                    shared.delivery_failed(err, msg, &about(msg), "waiter_gone");
                } else {
                    report_delivery_failure(err, &about(msg));
                }
            }
            (Outcome::Direct, result) => {
                match result {
                    Ok(_) => metrics::counter!(counters::ENQUEUED).increment(1),
                    // Spooled before it stops counting as in flight, so that the redelivery
                    // lane cannot be sealed without it.
                    Err((err, msg)) => shared.delivery_failed(err, msg, &about(msg), "delivery_failed"),
                }
                shared.direct_settled();
            }
        }
    }
}

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

/// Re-publishes the spool in order, on its own thread, while the producer lives.
struct Drainer {
    shared: Arc<Shared>,
    producer: ThreadedProducer<DeliveryReporter>,
}

impl Drainer {
    fn run(&self, spool: &Spool) {
        let mut backoff = REPLAY_BACKOFF_MIN;
        // When the current backlog began to drain, and how many tasks were committed then.
        let mut started: Option<(Instant, u64)> = None;
        while self.wait_for_work(spool) {
            let batch = match spool.read_batch(REPLAY_BATCH_RECORDS, REPLAY_BATCH_BYTES) {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::error!(spool_error = %e, "cannot read the spool; trying again");
                    if !self.pause(REPLAY_BACKOFF_MAX) {
                        return;
                    }
                    continue;
                }
            };
            started.get_or_insert_with(|| (Instant::now(), spool.stats().committed));
            let Some(results) = self.send_batch(&batch) else { return };
            match self.settle(spool, &batch, &results) {
                Some(err) => {
                    tracing::warn!(kafka_error = %err, waiting = spool.stats().pending,
                        retry_in_ms = backoff.as_millis() as u64,
                        "kafka did not take re-published spooled tasks; trying again");
                    if !self.pause(backoff) {
                        return;
                    }
                    backoff = (backoff * 2).min(REPLAY_BACKOFF_MAX);
                }
                None => backoff = REPLAY_BACKOFF_MIN,
            }
            if !spool.is_active() {
                if let Some((since, committed)) = started.take() {
                    tracing::info!(
                        tasks = spool.stats().committed - committed,
                        seconds = since.elapsed().as_secs_f64(),
                        "spool drained: every kept task is in kafka"
                    );
                }
            }
        }
    }

    /// Waits until the spool has something to re-publish and no message sent before it
    /// started can still fail into it; false once the producer stops.
    fn wait_for_work(&self, spool: &Spool) -> bool {
        let mut flow = self.shared.flow();
        loop {
            if flow.stopping {
                return false;
            }
            if flow.in_flight == 0 && spool.is_active() {
                spool.seal_redelivery();
                if spool.is_active() {
                    return true;
                }
            }
            flow = self
                .shared
                .changed
                .wait_timeout(flow, Duration::from_millis(500))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Sleeps for `d` unless the producer stops first (false).
    fn pause(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut flow = self.shared.flow();
        while !flow.stopping {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            flow = self.shared.changed.wait_timeout(flow, left).unwrap_or_else(PoisonError::into_inner).0;
        }
        false
    }

    /// Sends the batch and waits for every delivery report; `None` when the producer stops.
    fn send_batch(&self, batch: &Batch) -> Option<Vec<Result<(), KafkaError>>> {
        let (report, reports) = mpsc::channel();
        let mut results: Vec<Option<Result<(), KafkaError>>> = batch.entries.iter().map(|_| None).collect();
        for (index, entry) in batch.entries.iter().enumerate() {
            let r = &entry.record;
            let headers = owned_headers(&r.headers);
            loop {
                let outcome = Outcome::Replay { index, report: report.clone() };
                let sent = send(
                    &self.producer,
                    &self.shared,
                    &r.topic,
                    r.key.as_deref(),
                    &r.payload,
                    headers.clone(),
                    outcome,
                );
                match sent {
                    Ok(()) => break,
                    // librdkafka's queue is full (of this batch or of waited sends): let it drain.
                    Err((err, ..)) if err.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                        if !self.pause(Duration::from_millis(50)) {
                            return None;
                        }
                    }
                    Err((err, ..)) => {
                        results[index] = Some(Err(err));
                        break;
                    }
                }
            }
        }
        drop(report);
        while results.iter().any(Option::is_none) {
            match reports.recv_timeout(Duration::from_millis(200)) {
                Ok((index, result)) => {
                    if let Some(slot) = results.get_mut(index) {
                        *slot = Some(result);
                    }
                }
                Err(RecvTimeoutError::Timeout) if self.shared.flow().stopping => return None,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        Some(results.into_iter().map(|r| r.unwrap_or(Err(KafkaError::Canceled))).collect())
    }

    /// Removes from the spool the longest run of records at the batch's start that Kafka
    /// took (or refuses for good); returns the error that stopped the run, if any.
    fn settle<'a>(
        &self,
        spool: &Spool,
        batch: &Batch,
        results: &'a [Result<(), KafkaError>],
    ) -> Option<&'a KafkaError> {
        let (mut done, mut replayed, mut failure) = (0, 0, None);
        for (entry, result) in batch.entries.iter().zip(results) {
            match result {
                Ok(()) => replayed += 1,
                Err(err) if is_permanent(err) => {
                    let about = About::payload(&entry.record.payload);
                    metrics::counter!(counters::ENQUEUE_FAILURES, "reason" => "permanent").increment(1);
                    tracing::error!(kafka_error = %err, topic = %entry.record.topic, task_type = about.task_type,
                        keys = %about.keys, source = %about.source, task_id = %about.task_id,
                        "kafka refuses a spooled task for good; it is dropped from the spool");
                }
                Err(err) => {
                    failure = Some(err);
                    break;
                }
            }
            done += 1;
        }
        if done > 0 {
            let position =
                if done == batch.entries.len() { batch.end() } else { batch.entries[done - 1].end };
            if let Err(e) = spool.commit(position) {
                tracing::error!(spool_error = %e,
                    "could not remove re-published tasks from the spool; a restart will publish them again");
            }
            metrics::counter!(counters::SPOOL_REPLAYED).increment(replayed);
            metrics::counter!(counters::ENQUEUED).increment(replayed);
        } else if batch.is_empty() {
            // Only damaged bytes were read: step over them.
            if let Err(e) = spool.commit(batch.end()) {
                tracing::error!(spool_error = %e, "could not step over damaged spool bytes");
            }
        }
        failure
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
    pub fn publish(&self, task: &RedisTask) -> Result<(), PublishError> {
        self.send_direct(&self.inner.topics.main, task.first_key(), &task.to_json(), None)
    }

    /// Queues `task` for the main topic and waits for Kafka's acknowledgement. A failure is
    /// returned, not spooled: the caller decides whether to retry.
    pub async fn publish_and_wait(&self, task: &RedisTask) -> Result<(), PublishError> {
        let main = &self.inner.topics.main;
        self.send_waited(main, task.first_key(), &task.to_json(), None).await
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
        self.send_waited(topic, key, payload, headers).await
    }

    async fn send_waited(
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
    log_capture(task, "redis write failed, sending it to the retry queue");
}

/// A captured non-idempotent write that may have run: it goes to the dead-letter topic, not
/// to the retry queue, and the log says so.
pub(crate) fn report_ambiguous_capture(task: &RedisTask) {
    log_capture(
        task,
        "non-idempotent redis write failed and may have run; dead-lettered as ambiguous, not retried",
    );
}

fn log_capture(task: &RedisTask, what: &str) {
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
        "{what}"
    );
}

pub(crate) fn report_unqueued(task: &RedisTask, err: &PublishError) {
    let reason = match err {
        PublishError::NoProducer => "no_producer",
        PublishError::Spool(_) => "spool_refused",
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
