//! The topics of one retry pipeline: their names and their creation.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::errors::SetupError;

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

/// How long topic creation waits for a broker to answer at all.
const UNANSWERED_AFTER: Duration = Duration::from_secs(10);

/// Creates `names` through the admin API; topics that already exist are fine.
///
/// # Errors
///
/// [`SetupError::Runtime`] naming the brokers when none answers within 10 s; Kafka's own
/// error when it refuses a topic.
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
    // librdkafka's own request time-out is a minute: an unreachable broker should be named
    // sooner than that.
    let opts = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(15)))
        .request_timeout(Some(UNANSWERED_AFTER));
    let results = admin.create_topics(&new, &opts).await.map_err(|e| match e {
        KafkaError::AdminOp(RDKafkaErrorCode::OperationTimedOut) => SetupError::Runtime(format!(
            "no Kafka broker of {} answered within {} s ({e})",
            client.get("bootstrap.servers").unwrap_or("(no bootstrap.servers)"),
            UNANSWERED_AFTER.as_secs()
        )),
        e => SetupError::Kafka(e),
    })?;
    for result in results {
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
