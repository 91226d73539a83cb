//! The consumer's settings: where the topics are, how it retries and when it gives up.

use std::time::Duration;

use rand::Rng;

use crate::errors::SetupError;
use crate::producer::{check_topic_name, ProducerConfig, Topics};
use crate::signing::SigningKey;

/// What a retry or a dead letter may add to a task of `max_task_bytes`: the retry's fields in
/// the JSON (error, schedule, id), the dead letter's headers and a signature.
pub const DEAD_LETTER_HEADROOM: usize = 64 * 1024;

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
// Fields stay readable; new ones may come in a minor release, so build it with `new` and the
// setters, which `validate` (called by `RedisRetryConsumer::new`) checks together.
#[derive(Debug, Clone)]
#[non_exhaustive]
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
    /// Larger messages are dead-lettered as `oversize` (default 1 MiB). The consumer's producer
    /// sends messages of up to `max_task_bytes` + 64 KiB ([`DEAD_LETTER_HEADROOM`]) unless the
    /// librdkafka property `message.max.bytes` says otherwise, which must then leave that room.
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
    /// How long a Lua task may run (default 5 s). Past it the consumer sends `SCRIPT KILL` and
    /// dead-letters the task as `script_timeout`; Redis reads the kill only once the script has
    /// run for its `busy-reply-threshold` (5 s by default), so a shorter budget takes effect
    /// there.
    pub script_timeout: Duration,
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
            script_timeout: Duration::from_secs(5),
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
    /// Sets the replication factor of topics it creates.
    pub fn replication(mut self, n: i32) -> Self {
        self.replication = n;
        self
    }
    /// Whether to create missing topics at start.
    pub fn create_topics(mut self, yes: bool) -> Self {
        self.create_topics = yes;
        self
    }
    /// Replaces the Kafka side (brokers, topic, tiers, properties, signing key) as a whole.
    pub fn kafka(mut self, kafka: ProducerConfig) -> Self {
        self.kafka = kafka;
        self
    }
    /// Sets the script time budget.
    pub fn script_timeout(mut self, d: Duration) -> Self {
        self.script_timeout = d;
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
        if let Some(declared) = self.declared_message_max_bytes() {
            let Ok(declared) = declared.trim().parse::<usize>() else {
                return bad(format!("kafka property message.max.bytes: not a number: `{declared}`"));
            };
            let needed = self.max_task_bytes.saturating_add(DEAD_LETTER_HEADROOM);
            if declared < needed {
                return bad(format!(
                    "max_task_bytes ({}) does not fit the producer's message.max.bytes ({declared}): a task \
                     re-published to a retry tier or the dead-letter topic needs up to {DEAD_LETTER_HEADROOM} \
                     bytes more; lower max_task_bytes to at most {} or raise message.max.bytes to at least {needed}",
                    self.max_task_bytes,
                    declared.saturating_sub(DEAD_LETTER_HEADROOM),
                ));
            }
        }
        if self.script_timeout.is_zero() || self.script_timeout > Duration::from_secs(600) {
            return bad(format!(
                "script_timeout: must be above zero and at most 10 min, got {:?}",
                self.script_timeout
            ));
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

    /// `message.max.bytes` as the librdkafka properties set it, if they do.
    fn declared_message_max_bytes(&self) -> Option<&str> {
        self.kafka.properties.iter().rev().find(|(k, _)| k == "message.max.bytes").map(|(_, v)| v.as_str())
    }

    /// The largest message the consumer's producer sends (librdkafka's `message.max.bytes`):
    /// as set, or else large enough for a task of `max_task_bytes` and what a retry or a dead
    /// letter adds to it, and never below librdkafka's default.
    pub fn publish_limit(&self) -> usize {
        self.declared_message_max_bytes()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| self.max_task_bytes.saturating_add(DEAD_LETTER_HEADROOM).max(1_000_000))
    }

    /// The latest `not_before` a retry tier's message may carry: what the consumer schedules
    /// (`retry_max_delay` and its +20 % jitter) plus a minute for clocks that disagree.
    pub fn latest_schedule(&self) -> Duration {
        self.retry_max_delay.mul_f64(1.2) + Duration::from_secs(60)
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
