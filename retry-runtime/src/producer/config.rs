//! How to reach Kafka and where to publish.

use rdkafka::config::ClientConfig;

use super::*;
use crate::signing::SigningKey;

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
