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
//! nor hammers Redis. Retries and their budget are for a Redis that answers and says "not now",
//! or that answers others but not this task in time: a reply that times out while Redis
//! answers a probe is the task's failure, not an outage, and is never re-sent at once.
//!
//! What Kafka refuses for good is settled, never retried forever: a dead letter too large for
//! the topic travels as an envelope (reason, keys, source, sizes, digest), a retry too large for
//! a tier is dead-lettered as `kafka_refused`, and a refusal no message can get past (the
//! consumer may not write a topic) stops the consumer with that error, its message uncommitted.

mod config;
mod health;
mod lane;
mod settle;
mod shutdown;

use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use redis::aio::ConnectionLike;
use tokio::sync::watch;

use crate::errors::SetupError;
use crate::producer::{RetryProducer, Topics};

pub use config::{ConsumerConfig, DEAD_LETTER_HEADROOM, DEFAULT_GROUP};
pub use health::Health;
pub use shutdown::shutdown_signal;

struct Shared<C> {
    config: ConsumerConfig,
    topics: Topics,
    redis: C,
    /// A connection of its own for probes and `SCRIPT KILL`: `redis` may be waiting behind
    /// the very request they are about.
    control: C,
    producer: RetryProducer,
    /// The largest message `producer` sends.
    publish_limit: usize,
    /// Set when Kafka refuses something no retry can get past: the lanes stop with it.
    fatal: std::sync::Mutex<Option<String>>,
    /// Until when tasks go to Redis one at a time: a reply timed out, and a pipeline of tasks
    /// would put all of their work onto a Redis that is already slow.
    careful_until: std::sync::Mutex<Option<std::time::Instant>>,
    health: Arc<Health>,
    /// Set once Redis turns out to be a cluster: batches are then cut by slot.
    per_slot: AtomicBool,
}

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
        let publish_limit = config.publish_limit();
        let mut kafka = config.kafka.clone();
        // Set before the operator's properties, which win (and were checked against
        // max_task_bytes): librdkafka's own default is below the 1 MiB `max_task_bytes`.
        kafka.properties.insert(0, ("message.max.bytes".to_string(), publish_limit.to_string()));
        let producer = RetryProducer::new(&kafka)?;
        let topics = config.topics();
        let health = Arc::new(Health::default());
        let shared = Shared {
            config,
            topics,
            control: redis.clone(),
            redis,
            producer,
            publish_limit,
            fatal: std::sync::Mutex::new(None),
            careful_until: std::sync::Mutex::new(None),
            health,
            per_slot: AtomicBool::new(false),
        };
        Ok(RedisRetryConsumer { shared: Arc::new(shared) })
    }

    /// A second connection to the same Redis, for what must get through while the first waits
    /// on a slow request: the probe that tells a slow write from an outage, and `SCRIPT KILL`
    /// for a Lua task past its budget. Without it those share the task connection, where they
    /// queue behind the request they are about.
    #[must_use]
    pub fn with_control_connection(mut self, control: C) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.control = control;
        }
        self
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
        // Flushing blocks its thread until librdkafka has the acks: off the async workers.
        let producer = self.shared.producer.clone();
        let _ = tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(10))).await;
        self.shared.health.set_running(false);
        tracing::info!("redis retry consumer stopped");
        match failure {
            Some(Ok(Err(e))) => Err(e),
            Some(Err(join)) => Err(SetupError::Runtime(format!("consumer lane crashed: {join}"))),
            _ => Ok(()),
        }
    }
}
