//! `RedisRetryConsumer`: applies queued tasks to Redis, at least once.
//!
//! One *lane* reads the main topic and one reads each retry tier. A lane takes a message,
//! settles it (applied, sent to the next tier, or dead-lettered) and only then stores its
//! offset for the next commit, as rdkafka's at-least-once example does: a crash at any point
//! re-delivers what was not settled. A tier lane waits until its head message is due, which
//! delays only that tier, never the main topic.
//!
//! When Redis cannot be reached at all, a lane waits for it (backing off up to a second)
//! instead of spending the task's retries: an outage then neither floods the dead-letter topic
//! nor hammers Redis. Retries and their budget are for a Redis that answers and says "not now".

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use rand::Rng;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};
use redis::aio::ConnectionLike;
use tokio::sync::watch;

use crate::apply::{self, Applied, Plan};
use crate::counters;
use crate::errors::{Delivery, DlqReason, Failure, SetupError};
use crate::exporter::Health;
use crate::producer::{check_topic_name, dlq_headers, ProducerConfig, RetryProducer, Topics};
use crate::signing::SigningKey;
use crate::task::{Mode, RedisTask};

/// The seed's consumer group.
pub const DEFAULT_GROUP: &str = "redis-retry-consumer-group";

/// How the consumer reads, retries and gives up.
///
/// ```
/// use std::time::Duration;
/// use redis_retry_runtime::ConsumerConfig;
/// let cfg = ConsumerConfig::new("127.0.0.1:9092").retry_base_delay(Duration::from_millis(200));
/// assert_eq!(cfg.group, "redis-retry-consumer-group");
/// assert!(cfg.validate().is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Where the topics are (brokers, main topic, tiers, librdkafka properties, signing key):
    /// the consumer also produces, to the tiers and the dead-letter topic.
    pub kafka: ProducerConfig,
    /// Consumer group of the main topic; tier lanes use `<group>.retry.<n>`.
    pub group: String,
    /// Delay before the first retry (default 1 s); each retry doubles it, ±20 % jitter.
    pub retry_base_delay: Duration,
    /// Longest delay between retries (default 5 min).
    pub retry_max_delay: Duration,
    /// Larger messages are dead-lettered as `oversize` (default 1 MiB).
    pub max_task_bytes: usize,
    /// Older tasks are dead-lettered as `expired`: replaying them could overwrite newer data
    /// (default 24 h).
    pub max_age: Duration,
    /// Whether Lua tasks are replayed (default false: a Lua body can do anything).
    pub allow_lua: bool,
    /// Create missing topics at start (default true).
    pub create_topics: bool,
    /// Partitions of topics it creates (default 3).
    pub partitions: i32,
    /// Replication factor of topics it creates (default 1).
    pub replication: i32,
    /// The most messages settled together in one pipeline to Redis (default 1024): larger
    /// batches cost fewer round trips; a batch whose round trip fails is settled one task at a
    /// time, so a smaller one shortens that detour.
    pub max_batch: usize,
}

impl ConsumerConfig {
    /// Defaults for `brokers`.
    pub fn new(brokers: impl Into<String>) -> Self {
        ConsumerConfig {
            kafka: ProducerConfig::new(brokers),
            group: DEFAULT_GROUP.to_string(),
            retry_base_delay: Duration::from_secs(1),
            retry_max_delay: Duration::from_secs(300),
            max_task_bytes: 1024 * 1024,
            max_age: Duration::from_secs(24 * 3600),
            allow_lua: false,
            create_topics: true,
            partitions: 3,
            replication: 1,
            max_batch: 1024,
        }
    }
    /// Sets the main topic.
    pub fn topic(mut self, topic: impl Into<String>) -> Self {
        self.kafka.topic = topic.into();
        self
    }
    /// Sets the consumer group.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = group.into();
        self
    }
    /// Sets the first retry delay.
    pub fn retry_base_delay(mut self, d: Duration) -> Self {
        self.retry_base_delay = d;
        self
    }
    /// Sets the longest retry delay.
    pub fn retry_max_delay(mut self, d: Duration) -> Self {
        self.retry_max_delay = d;
        self
    }
    /// Sets the number of retry tiers.
    pub fn retry_tiers(mut self, n: usize) -> Self {
        self.kafka.retry_tiers = n;
        self
    }
    /// Sets the maximum task age.
    pub fn max_age(mut self, d: Duration) -> Self {
        self.max_age = d;
        self
    }
    /// Sets the size limit.
    pub fn max_task_bytes(mut self, n: usize) -> Self {
        self.max_task_bytes = n;
        self
    }
    /// Allows or refuses Lua tasks.
    pub fn allow_lua(mut self, yes: bool) -> Self {
        self.allow_lua = yes;
        self
    }
    /// Sets the partitions of created topics.
    pub fn partitions(mut self, n: i32) -> Self {
        self.partitions = n;
        self
    }
    /// Sets the most messages settled together.
    pub fn max_batch(mut self, n: usize) -> Self {
        self.max_batch = n;
        self
    }
    /// Adds a librdkafka property.
    pub fn property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.kafka.properties.push((key.into(), value.into()));
        self
    }

    /// Signs what it re-publishes and dead-letters unsigned or forged tasks.
    pub fn signing_key(mut self, key: SigningKey) -> Self {
        self.kafka.signing_key = Some(key);
        self
    }

    /// The topics this configuration implies.
    pub fn topics(&self) -> Topics {
        self.kafka.topics()
    }

    /// Checks every setting, naming the first wrong one.
    pub fn validate(&self) -> Result<(), SetupError> {
        let bad = |msg: String| Err(SetupError::Config(msg));
        if self.kafka.brokers.trim().is_empty() {
            return bad("brokers: empty broker list".into());
        }
        check_topic_name("topic", &self.kafka.topic)?;
        if self.group.trim().is_empty() {
            return bad("group: empty consumer group".into());
        }
        if !(1..=20).contains(&self.kafka.retry_tiers) {
            return bad(format!("retry_tiers: must be 1 to 20, got {}", self.kafka.retry_tiers));
        }
        if self.retry_base_delay.is_zero() || self.retry_base_delay > self.retry_max_delay {
            return bad(format!(
                "retry_base_delay: must be above zero and at most retry_max_delay ({:?}), got {:?}",
                self.retry_max_delay, self.retry_base_delay
            ));
        }
        if self.retry_max_delay > Duration::from_secs(3600) {
            return bad(format!("retry_max_delay: at most 1 h, got {:?}", self.retry_max_delay));
        }
        if self.max_task_bytes < 64 {
            return bad(format!("max_task_bytes: at least 64, got {}", self.max_task_bytes));
        }
        if !(1..=65_536).contains(&self.max_batch) {
            return bad(format!("max_batch: must be 1 to 65536, got {}", self.max_batch));
        }
        if self.max_age.is_zero() {
            return bad("max_age: must be above zero".into());
        }
        if self.partitions < 1 || self.replication < 1 {
            return bad(format!(
                "partitions and replication must be at least 1, got {} and {}",
                self.partitions, self.replication
            ));
        }
        Ok(())
    }

    /// The delay before retry number `attempt` (1-based): base × 2^(attempt-1), capped, ±20 %.
    ///
    /// ```
    /// use std::time::Duration;
    /// use redis_retry_runtime::ConsumerConfig;
    /// let cfg = ConsumerConfig::new("k:9092").retry_base_delay(Duration::from_secs(1));
    /// let d3 = cfg.backoff(3);
    /// assert!(d3 >= Duration::from_millis(3200) && d3 <= Duration::from_millis(4800));
    /// ```
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        let raw = self.retry_base_delay.saturating_mul(1u32 << exp).min(self.retry_max_delay);
        raw.mul_f64(rand::rng().random_range(0.8..=1.2))
    }
}

/// What happened to one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settled {
    /// Applied, re-queued or dead-lettered: its offset may be committed.
    Done,
    /// Shutdown came first: leave it for the next run.
    Interrupted,
}

/// The longest wait between two tries of an unreachable Redis. A try is one refused connect,
/// cheap for both sides; the wait is what a backlog loses once Redis is back, so it stays short.
const UNREACHABLE_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Why a message was refused before it reached Redis.
struct Refused {
    reason: DlqReason,
    error: String,
}

struct Shared<C> {
    config: ConsumerConfig,
    topics: Topics,
    redis: C,
    producer: RetryProducer,
    health: Arc<Health>,
    /// Set once Redis turns out to be a cluster: batches are then cut by slot.
    per_slot: AtomicBool,
}

/// Turns librdkafka's periodic statistics into the consumer-lag gauge.
struct LagReporter;

impl ClientContext for LagReporter {
    fn stats(&self, stats: Statistics) {
        for (topic, t) in &stats.topics {
            for (partition, p) in &t.partitions {
                // librdkafka reports -1 for partitions this member does not consume.
                if *partition >= 0 && p.consumer_lag >= 0 {
                    metrics::gauge!(counters::CONSUMER_LAG, "topic" => topic.clone(), "partition" => partition.to_string())
                        .set(p.consumer_lag as f64);
                }
            }
        }
    }
}

impl ConsumerContext for LagReporter {}

type KafkaConsumer = StreamConsumer<LagReporter>;

/// Reads tasks from Kafka and applies them to Redis.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use redis_retry_runtime::{ConsumerConfig, RedisRetryConsumer};
/// let redis = redis::Client::open("redis://127.0.0.1/")?.get_connection_manager().await?;
/// let consumer = RedisRetryConsumer::new(ConsumerConfig::new("localhost:9092"), redis)?;
/// consumer.run(async { tokio::signal::ctrl_c().await.ok(); }).await?;
/// # Ok(()) }
/// ```
pub struct RedisRetryConsumer<C> {
    shared: Arc<Shared<C>>,
}

impl<C> RedisRetryConsumer<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    /// Checks the configuration and prepares the producer for tiers and dead letters.
    pub fn new(config: ConsumerConfig, redis: C) -> Result<Self, SetupError> {
        config.validate()?;
        let producer = RetryProducer::new(&config.kafka)?;
        let topics = config.topics();
        let health = Arc::new(Health::default());
        let shared = Shared { config, topics, redis, producer, health, per_slot: AtomicBool::new(false) };
        Ok(RedisRetryConsumer { shared: Arc::new(shared) })
    }

    /// What `/health` reports about this consumer.
    pub fn health(&self) -> Arc<Health> {
        self.shared.health.clone()
    }

    /// The topics it reads and writes.
    pub fn topics(&self) -> &Topics {
        &self.shared.topics
    }

    /// Runs until `shutdown` completes, then finishes the messages in hand, commits and
    /// returns.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), SetupError> {
        let cfg = &self.shared.config;
        tracing::info!(topic = %cfg.kafka.topic, group = %cfg.group, brokers = %cfg.kafka.brokers, "redis retry consumer starting");
        if cfg.create_topics {
            self.shared.producer.ensure_topics(cfg.partitions, cfg.replication).await?;
        }
        self.shared.health.set_running(true);
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut lanes = tokio::task::JoinSet::new();
        let topics = &self.shared.topics;
        let mut plan = vec![(topics.main.clone(), cfg.group.clone(), false)];
        for (i, tier) in topics.retry.iter().enumerate() {
            plan.push((tier.clone(), format!("{}.retry.{}", cfg.group, i + 1), true));
        }
        for (topic, group, is_tier) in plan {
            let consumer = self.shared.kafka_consumer(&group)?;
            consumer.subscribe(&[topic.as_str()])?;
            let shared = self.shared.clone();
            let stop = stop_rx.clone();
            lanes.spawn(async move { shared.lane(consumer, is_tier, stop).await });
        }
        tokio::pin!(shutdown);
        let mut failure = None;
        tokio::select! {
            _ = &mut shutdown => tracing::info!("shutdown requested: finishing messages in hand"),
            Some(res) = lanes.join_next() => failure = Some(res),
        }
        let _ = stop_tx.send(true);
        while let Some(res) = lanes.join_next().await {
            failure.get_or_insert(res);
        }
        self.shared.producer.flush(Duration::from_secs(10)).ok();
        self.shared.health.set_running(false);
        tracing::info!("redis retry consumer stopped");
        match failure {
            Some(Ok(Err(e))) => Err(e),
            Some(Err(join)) => Err(SetupError::Config(format!("consumer lane crashed: {join}"))),
            _ => Ok(()),
        }
    }
}

impl<C> Shared<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    fn kafka_consumer(&self, group: &str) -> Result<KafkaConsumer, SetupError> {
        // A tier lane may sleep until its head message is due; librdkafka must not take that
        // for a dead consumer.
        let poll_interval = (self.config.retry_max_delay * 2 + Duration::from_secs(60))
            .max(Duration::from_secs(300))
            .as_millis()
            .to_string();
        let mut cfg = self.config.kafka.client_config();
        cfg.set("group.id", group)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            // A retry is due at a precise time; a long-held empty fetch would add up to its
            // duration to every delay (and some brokers hold fetches even when data waits).
            .set("fetch.wait.max.ms", "100")
            .set("max.poll.interval.ms", poll_interval)
            .set("statistics.interval.ms", "5000");
        for (k, v) in &self.config.kafka.properties {
            cfg.set(k, v);
        }
        cfg.create_with_context(LagReporter).map_err(|e| SetupError::Config(format!("kafka consumer: {e}")))
    }

    async fn lane(
        self: Arc<Self>,
        consumer: KafkaConsumer,
        is_tier: bool,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), SetupError> {
        let max_batch = self.config.max_batch;
        let mut batch = Vec::with_capacity(max_batch);
        loop {
            let next = tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                m = consumer.recv() => m,
            };
            match next {
                Ok(m) => batch.push(m),
                Err(e) => {
                    tracing::warn!(error = %e, "kafka consumer error");
                    tokio::select! {
                        _ = stop.wait_for(|s| *s) => break,
                        _ = tokio::time::sleep(Duration::from_millis(250)) => continue,
                    }
                }
            }
            // What librdkafka has already fetched joins the batch; nothing waits for more.
            while batch.len() < max_batch {
                match consumer.recv().now_or_never() {
                    Some(Ok(m)) => batch.push(m),
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "kafka consumer error");
                        break;
                    }
                    None => break,
                }
            }
            let settled = self.settle_batch(&batch, is_tier, &mut stop).await;
            store_offsets(&consumer, &batch[..settled]);
            if settled < batch.len() {
                break;
            }
            batch.clear();
        }
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => {}
            Err(rdkafka::error::KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                tracing::warn!(error = %e, "final commit failed; uncommitted tasks will be applied again")
            }
        }
        Ok(())
    }

    /// Settles the messages of a batch in order and returns how many were settled (all of them
    /// unless shutdown interrupted one). Tasks that can be pipelined gather until something must
    /// go alone (a bad message, a transaction, a task not yet due), then go to Redis in one
    /// round trip, so per-key order is the order of the partition.
    async fn settle_batch(
        &self,
        batch: &[BorrowedMessage<'_>],
        is_tier: bool,
        stop: &mut watch::Receiver<bool>,
    ) -> usize {
        let mut pending: Vec<(usize, RedisTask, Plan)> = Vec::new();
        for (i, msg) in batch.iter().enumerate() {
            let task = match self.prepare(msg) {
                Ok(task) => {
                    let plan = Plan::new(&task, self.guard_ttl());
                    let due_later = task.not_before.is_some_and(|due| due > chrono::Utc::now());
                    if task.mode != Mode::Log
                        && !due_later
                        && !self.expired(&task)
                        && plan.batchable(self.per_slot.load(Ordering::Relaxed))
                    {
                        pending.push((i, task, plan));
                        continue;
                    }
                    Ok((task, plan))
                }
                Err(refused) => Err(refused),
            };
            if let Err(at) = self.flush(batch, &mut pending, is_tier, stop).await {
                return at;
            }
            let settled = match task {
                Ok((task, plan)) => self.settle_task(task, &plan, msg.topic(), is_tier, stop).await,
                Err(Refused { reason, error }) => {
                    self.dead_letter_raw(msg, msg.payload().unwrap_or_default(), reason, &error, stop).await
                }
            };
            if settled == Settled::Interrupted {
                return i;
            }
        }
        match self.flush(batch, &mut pending, is_tier, stop).await {
            Ok(()) => batch.len(),
            Err(at) => at,
        }
    }

    /// Applies the pending tasks in one round trip and settles each by its replies. When the
    /// round trip itself fails (Redis unreachable, a reset), each task is settled alone, in
    /// order: safe, because batched tasks are idempotent or guarded. `Err` carries the index of
    /// the first message shutdown left unsettled.
    async fn flush(
        &self,
        batch: &[BorrowedMessage<'_>],
        pending: &mut Vec<(usize, RedisTask, Plan)>,
        is_tier: bool,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), usize> {
        if pending.is_empty() {
            return Ok(());
        }
        let items: Vec<(usize, RedisTask, Plan)> = std::mem::take(pending);
        let started = Instant::now();
        let tasks: Vec<(&RedisTask, &Plan)> = items.iter().map(|(_, task, plan)| (task, plan)).collect();
        let outcome = loop {
            let per_slot = self.per_slot.load(Ordering::Relaxed);
            // Plans gathered before Redis turned out to be a cluster may not fit a cut by slot.
            if per_slot && !tasks.iter().all(|(_, plan)| plan.batchable(true)) {
                break None;
            }
            match apply::apply_batch(&self.redis, &tasks, per_slot).await {
                Err(e) if !per_slot && apply::is_cross_slot(&e) => {
                    tracing::info!("redis is a cluster: batches are cut by slot from now on");
                    self.per_slot.store(true, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::debug!(error = %e, tasks = tasks.len(), "batch failed as a whole; settling its tasks one by one");
                    break None;
                }
                Ok(applied) => break Some(applied),
            }
        };
        drop(tasks);
        let Some(applied) = outcome else {
            for (i, task, plan) in items {
                if self.settle_task(task, &plan, batch[i].topic(), is_tier, stop).await
                    == Settled::Interrupted
                {
                    return Err(i);
                }
            }
            return Ok(());
        };
        self.health.set_redis_reachable(true);
        let elapsed = started.elapsed().as_secs_f64();
        for ((i, task, _), applied) in items.into_iter().zip(applied) {
            let settled = match applied {
                Applied::Ok => applied_once(&task, elapsed, is_tier),
                failed => self.settle_failed(task, failed, batch[i].topic(), stop).await,
            };
            if settled == Settled::Interrupted {
                return Err(i);
            }
        }
        Ok(())
    }

    /// Checks a message (size, signature, decoding, what the consumer allows) and decodes its
    /// task.
    fn prepare(&self, msg: &BorrowedMessage<'_>) -> Result<RedisTask, Refused> {
        let payload = msg.payload().unwrap_or_default();
        if payload.len() > self.config.max_task_bytes {
            let err = crate::TaskError::TooLarge { size: payload.len(), limit: self.config.max_task_bytes };
            return Err(Refused { reason: DlqReason::Oversize, error: err.to_string() });
        }
        if let Some(key) = &self.config.kafka.signing_key {
            let signature = msg.headers().and_then(|h| {
                h.iter().find(|h| h.key == crate::signing::SIGNATURE_HEADER).and_then(|h| h.value)
            });
            let why = match signature {
                None => Some("the message is not signed"),
                Some(sig) if !key.verify(payload, sig) => Some("the signature does not match the message"),
                Some(_) => None,
            };
            if let Some(why) = why {
                return Err(Refused { reason: DlqReason::Unauthenticated, error: why.to_string() });
            }
        }
        let mut task = RedisTask::from_json(payload)
            .and_then(|t| t.validate_for_replay(self.config.allow_lua).map(|()| t))
            .map_err(|e| Refused { reason: e.dlq_reason(), error: e.to_string() })?;
        if task.id.is_empty() {
            // The seed's tasks carry no id; the payload names a delivery just as well, and the
            // at-most-once guard of non-idempotent tasks needs one.
            task.id = sha1_smol::Sha1::from(payload).digest().to_string();
        }
        Ok(task)
    }

    /// Settles one task on its own: waits until it is due, applies it (waiting for Redis when
    /// it cannot be reached), then re-queues or dead-letters it if that failed.
    async fn settle_task(
        &self,
        task: RedisTask,
        plan: &Plan,
        source_topic: &str,
        is_tier: bool,
        stop: &mut watch::Receiver<bool>,
    ) -> Settled {
        if let Some(due) = task.not_before {
            let wait = (due - chrono::Utc::now()).to_std().unwrap_or_default();
            if !wait.is_zero() && !sleep_or_stop(wait, stop).await {
                return Settled::Interrupted;
            }
        }
        let mut backoff = Duration::from_millis(100);
        let mut last_warning: Option<Instant> = None;
        loop {
            if self.expired(&task) {
                let age = format!("older than max_age {:?}", self.config.max_age);
                return self.dead_letter_task(&task, source_topic, DlqReason::Expired, &age, stop).await;
            }
            let started = Instant::now();
            let applied = apply::apply(&self.redis, &task, plan).await;
            self.health.set_redis_reachable(!matches!(applied, Applied::Unreachable(_)));
            match applied {
                Applied::Ok => return applied_once(&task, started.elapsed().as_secs_f64(), is_tier),
                Applied::Unreachable(err) => {
                    if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        tracing::warn!(error = %err, keys = %task.describe(), "redis unreachable; waiting for it before applying");
                        last_warning = Some(Instant::now());
                    }
                    if !sleep_or_stop(backoff, stop).await {
                        return Settled::Interrupted;
                    }
                    backoff = (backoff * 2).min(UNREACHABLE_BACKOFF_MAX);
                }
                failed => return self.settle_failed(task, failed, source_topic, stop).await,
            }
        }
    }

    /// Re-queues or dead-letters a task whose apply failed.
    async fn settle_failed(
        &self,
        mut task: RedisTask,
        failed: Applied,
        source_topic: &str,
        stop: &mut watch::Receiver<bool>,
    ) -> Settled {
        match failed {
            Applied::Failed(Failure::Transient(Delivery::Ambiguous), err) if !task.is_idempotent() => {
                self.dead_letter_task(&task, source_topic, DlqReason::Ambiguous, &err, stop).await
            }
            Applied::Failed(Failure::Permanent, err) => {
                self.dead_letter_task(&task, source_topic, DlqReason::PermanentError, &err, stop).await
            }
            Applied::Failed(Failure::Transient(_), err) | Applied::Unreachable(err) => {
                task.original_err = err;
                self.retry_later(task, source_topic, stop).await
            }
            Applied::Ok => Settled::Done,
        }
    }

    /// How long a guard key outlives the tasks it guards: past `max_age`, a redelivery is
    /// dead-lettered as expired anyway.
    fn guard_ttl(&self) -> Duration {
        self.config.max_age + Duration::from_secs(3600)
    }

    fn expired(&self, task: &RedisTask) -> bool {
        // Go's zero time means "unknown": such a task is never expired.
        if task.captured_at.timestamp() <= -62_135_596_800 {
            return false;
        }
        let age = chrono::Utc::now() - task.captured_at;
        age.to_std().is_ok_and(|age| age > self.config.max_age)
    }

    async fn retry_later(
        &self,
        mut task: RedisTask,
        source_topic: &str,
        stop: &mut watch::Receiver<bool>,
    ) -> Settled {
        if task.retry_count >= task.max_retries {
            tracing::error!(
                error = %task.original_err,
                retry_count = task.retry_count,
                max_retries = task.max_retries,
                keys = %task.describe(),
                source = %task.source,
                task_id = %task.id,
                "redis task reached max retries, giving up"
            );
            let err = task.original_err.clone();
            return self.dead_letter_task(&task, source_topic, DlqReason::MaxRetries, &err, stop).await;
        }
        task.retry_count += 1;
        let delay = self.config.backoff(task.retry_count);
        task.not_before = Some(chrono::Utc::now() + delay);
        let tier = self.topics.tier(task.retry_count).to_string();
        tracing::warn!(
            error = %task.original_err,
            retry_count = task.retry_count,
            max_retries = task.max_retries,
            delay_ms = delay.as_millis() as u64,
            tier = %tier,
            keys = %task.describe(),
            task_id = %task.id,
            "redis task failed, retrying later"
        );
        let payload = task.to_json();
        let settled = self.send_until_acked(&tier, task.first_key(), &payload, None, stop).await;
        if settled == Settled::Done {
            metrics::counter!(counters::RETRIED).increment(1);
        }
        settled
    }

    async fn dead_letter_task(
        &self,
        task: &RedisTask,
        source_topic: &str,
        reason: DlqReason,
        error: &str,
        stop: &mut watch::Receiver<bool>,
    ) -> Settled {
        if reason != DlqReason::MaxRetries {
            tracing::error!(reason = %reason, error = %error, keys = %task.describe(), source = %task.source, task_id = %task.id, "task dead-lettered");
        }
        let headers = dlq_headers(reason, error, source_topic);
        let dlq = self.topics.dlq.clone();
        let settled =
            self.send_until_acked(&dlq, task.first_key(), &task.to_json(), Some(headers), stop).await;
        if settled == Settled::Done {
            metrics::counter!(counters::DEAD_LETTERED, "reason" => reason.as_str()).increment(1);
        }
        settled
    }

    async fn dead_letter_raw(
        &self,
        msg: &BorrowedMessage<'_>,
        payload: &[u8],
        reason: DlqReason,
        error: &str,
        stop: &mut watch::Receiver<bool>,
    ) -> Settled {
        tracing::error!(reason = %reason, error = %error, topic = msg.topic(), partition = msg.partition(), offset = msg.offset(), "bad message dead-lettered");
        let mut headers = dlq_headers(reason, error, msg.topic());
        // Keep what the producer attached (signatures, trace ids) for whoever inspects it.
        if let Some(orig) = msg.headers() {
            for h in orig.iter() {
                headers = headers
                    .insert(rdkafka::message::Header { key: &format!("original.{}", h.key), value: h.value });
            }
        }
        let dlq = self.topics.dlq.clone();
        let settled = self.send_until_acked(&dlq, msg.key(), payload, Some(headers), stop).await;
        if settled == Settled::Done {
            metrics::counter!(counters::DEAD_LETTERED, "reason" => reason.as_str()).increment(1);
        }
        settled
    }

    /// Sends until Kafka acknowledges: the source message is committed only after that.
    async fn send_until_acked(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: Option<rdkafka::message::OwnedHeaders>,
        stop: &mut watch::Receiver<bool>,
    ) -> Settled {
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.producer.send_bytes_and_wait(topic, key, payload, headers.clone()).await {
                Ok(()) => return Settled::Done,
                Err(e) => {
                    tracing::warn!(kafka_error = %e, topic, "could not publish to kafka; will try again");
                    if !sleep_or_stop(backoff, stop).await {
                        return Settled::Interrupted;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// Sleeps for `d`; false when the stop signal came first.
async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = stop.wait_for(|s| *s) => false,
        _ = tokio::time::sleep(d) => true,
    }
}

/// Counts and logs a task Redis has taken, `seconds` after it was sent.
fn applied_once(task: &RedisTask, seconds: f64, is_tier: bool) -> Settled {
    metrics::counter!(counters::APPLIED).increment(1);
    metrics::histogram!(counters::APPLY_SECONDS).record(seconds);
    tracing::debug!(task_id = %task.id, keys = %task.describe(), retry_count = task.retry_count, is_tier, "task applied");
    Settled::Done
}

/// Stores, for the next commit, the offset after the last message of each partition: the
/// messages are settled, in partition order.
fn store_offsets(consumer: &KafkaConsumer, settled: &[BorrowedMessage<'_>]) {
    let mut list = TopicPartitionList::new();
    for msg in settled {
        let next = Offset::Offset(msg.offset() + 1);
        match list.find_partition(msg.topic(), msg.partition()) {
            Some(mut p) => {
                let _ = p.set_offset(next);
            }
            None => {
                let _ = list.add_partition_offset(msg.topic(), msg.partition(), next);
            }
        }
    }
    if list.count() > 0 {
        if let Err(e) = consumer.store_offsets(&list) {
            tracing::warn!(error = %e, "could not store offsets; those tasks may be applied again");
        }
    }
}
