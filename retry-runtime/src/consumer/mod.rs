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

pub use config::{ConsumerConfig, DEFAULT_GROUP};
pub use health::Health;
pub use shutdown::shutdown_signal;

struct Shared<C> {
    config: ConsumerConfig,
    topics: Topics,
    redis: C,
    producer: RetryProducer,
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
