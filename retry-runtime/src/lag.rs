//! How far the pipeline's readers are behind, for an operator's overview: per partition of the
//! main topic and of each retry tier (the consumer group's committed offsets), of the
//! dead-letter topic (the `<group>.dlq` cursor, see [`dlq`](crate::dlq)), and who is in the
//! consumer group.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::errors::SetupError;
use crate::producer::ProducerConfig;

/// One partition's backlog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    /// Partition id.
    pub partition: i32,
    /// The partition's end (high watermark).
    pub end: i64,
    /// The group's committed offset, `None` when it has committed none.
    pub committed: Option<i64>,
    /// Messages after the committed offset (after the start of the partition without one).
    pub lag: i64,
}

/// One topic's backlog for one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicLag {
    /// Topic name.
    pub topic: String,
    /// The group whose committed offsets count: the consumer group, or `<group>.dlq` for
    /// the dead-letter topic.
    pub group: String,
    /// Its partitions, in id order.
    pub partitions: Vec<PartitionLag>,
}

impl TopicLag {
    /// Messages behind over every partition.
    pub fn total(&self) -> i64 {
        self.partitions.iter().map(|p| p.lag).sum()
    }
}

/// A member of the consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    /// The member id the coordinator gave it.
    pub member_id: String,
    /// Its `client.id`.
    pub client_id: String,
    /// The host it connected from.
    pub client_host: String,
}

/// The backlog of a pipeline: main topic, tiers and dead letters.
#[derive(Debug, Clone)]
pub struct Backlog {
    /// Main topic, then each tier, then the dead-letter topic.
    pub topics: Vec<TopicLag>,
    /// The consumer group's state as the coordinator reports it (`Stable`, `Empty`, ...), and
    /// its members; an error text when the broker would not describe the group.
    pub group: Result<(String, Vec<GroupMember>), String>,
}

/// Reads the backlog of one pipeline, again and again: its broker clients are made once, so
/// a dashboard that refreshes every few seconds does not open new connections each time.
#[derive(Clone)]
pub struct BacklogReader {
    inner: Arc<Clients>,
}

struct Clients {
    group: String,
    /// Topic and the group whose committed offsets count for it.
    topics: Vec<(String, String)>,
    /// In the consumer group, for the main topic and the tiers (and the group's members).
    main: BaseConsumer,
    /// In `<group>.dlq`, for the dead-letter topic.
    cursor: BaseConsumer,
}

impl BacklogReader {
    /// A reader of the pipeline of `config` for consumer group `group`. It joins no group:
    /// it only reads offsets.
    ///
    /// # Errors
    ///
    /// [`SetupError::Runtime`] when librdkafka refuses the client configuration.
    pub fn new(config: &ProducerConfig, group: &str) -> Result<BacklogReader, SetupError> {
        let topics = config.topics();
        let cursor_group = format!("{group}.dlq");
        let mut wanted: Vec<(String, String)> = std::iter::once(&topics.main)
            .chain(&topics.retry)
            .map(|t| (t.clone(), group.to_string()))
            .collect();
        wanted.push((topics.dlq.clone(), cursor_group.clone()));
        let consumer_for = |group: &str| -> Result<BaseConsumer, SetupError> {
            let mut cfg = config.client_config();
            cfg.set("group.id", group).set("enable.auto.commit", "false");
            cfg.create().map_err(|e| SetupError::Runtime(format!("kafka consumer: {e}")))
        };
        Ok(BacklogReader {
            inner: Arc::new(Clients {
                group: group.to_string(),
                topics: wanted,
                main: consumer_for(group)?,
                cursor: consumer_for(&cursor_group)?,
            }),
        })
    }

    /// The backlog now, each broker request bounded by `timeout`.
    ///
    /// # Errors
    ///
    /// [`SetupError::Kafka`] when the broker does not answer in time or refuses, and
    /// [`SetupError::Config`] when a topic of the pipeline does not exist.
    pub async fn read(&self, timeout: Duration) -> Result<Backlog, SetupError> {
        let clients = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || clients.read(timeout))
            .await
            .map_err(|e| SetupError::Runtime(format!("reading the backlog: {e}")))?
    }
}

impl Clients {
    fn read(&self, timeout: Duration) -> Result<Backlog, SetupError> {
        let group = &self.group;
        let mut out = Vec::new();
        for (topic, owner) in &self.topics {
            let consumer = if owner == group { &self.main } else { &self.cursor };
            out.push(topic_lag(consumer, topic, owner, timeout)?);
        }
        let described = self
            .main
            .fetch_group_list(Some(group.as_str()), timeout)
            .map_err(|e| format!("the broker did not describe group {group}: {e}"))
            .map(|list| {
                let info = list.groups().iter().find(|g| g.name() == group);
                // Some brokers list a group only once it has committed offsets.
                let state =
                    info.map_or_else(|| "not listed by the broker".to_string(), |g| g.state().to_string());
                let members = info
                    .map(|g| {
                        g.members()
                            .iter()
                            .map(|m| GroupMember {
                                member_id: m.id().to_string(),
                                client_id: m.client_id().to_string(),
                                client_host: m.client_host().to_string(),
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                (state, members)
            });
        Ok(Backlog { topics: out, group: described })
    }
}

fn topic_lag(
    consumer: &BaseConsumer,
    topic: &str,
    group: &str,
    timeout: Duration,
) -> Result<TopicLag, SetupError> {
    let (ids, committed) = committed_positions(consumer, topic, timeout)?;
    let mut partitions = Vec::with_capacity(ids.len());
    for p in ids {
        let (low, end) = consumer.fetch_watermarks(topic, p, timeout)?;
        let committed = match committed.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => Some(o),
            _ => None,
        };
        // Below the start, what the offset pointed at was deleted by retention: the backlog
        // is what is still there.
        let from = committed.unwrap_or(low).max(low);
        partitions.push(PartitionLag { partition: p, end, committed, lag: (end - from).max(0) });
    }
    Ok(TopicLag { topic: topic.to_string(), group: group.to_string(), partitions })
}

/// The partitions of `topic`, in order, and the offsets that `consumer`'s group has committed
/// there: where a group stands, for its lag and for the DLQ's cursor.
///
/// # Errors
///
/// [`SetupError::Config`] when the topic does not exist; Kafka's errors when the broker does
/// not answer within `timeout`.
pub(crate) fn committed_positions(
    consumer: &BaseConsumer,
    topic: &str,
    timeout: Duration,
) -> Result<(Vec<i32>, TopicPartitionList), SetupError> {
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let mut ids: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if ids.is_empty() {
        return Err(SetupError::Config(format!(
            "topic {topic} does not exist (run `redis-retry topics ensure`)"
        )));
    }
    ids.sort_unstable();
    let mut tpl = TopicPartitionList::new();
    for p in &ids {
        tpl.add_partition(topic, *p);
    }
    let committed = consumer.committed_offsets(tpl, timeout)?;
    Ok((ids, committed))
}
