//! Operating the dead-letter topic: list what is there, replay it to the main topic, or purge it.
//!
//! A Kafka topic cannot drop one message from its middle, so the dead-letter *set* is the part
//! of `<topic>.dlq` after a cursor: the committed offsets of the admin group `<group>.dlq`.
//! `replay` and `purge` read every entry up to the end, send the chosen ones on (to the main
//! topic, or nowhere) and append the others again at the end, then move the cursor past what
//! they read. A crash half-way leaves the cursor where it was: entries may then appear twice,
//! never vanish.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::{Offset, TopicPartitionList};

use crate::errors::{DlqReason, SetupError};
use crate::producer::{headers, ProducerConfig, RetryProducer};
use crate::task::RedisTask;

/// One dead letter.
#[derive(Debug, Clone)]
pub struct DlqEntry {
    /// Partition of the DLQ topic.
    pub partition: i32,
    /// Offset in that partition.
    pub offset: i64,
    /// Kafka key (the task's first Redis key).
    pub key: Option<Vec<u8>>,
    /// Why it was dead-lettered (`reason` header).
    pub reason: String,
    /// The last error (`error` header).
    pub error: String,
    /// When it was dead-lettered.
    pub dead_lettered_at: Option<DateTime<Utc>>,
    /// The task, or why the payload is not one.
    pub task: Result<RedisTask, String>,
    /// The message as it is stored.
    pub payload: Vec<u8>,
    /// What an envelope (a dead letter too large for the topic, see the consumer) says about
    /// the task it stands for: source and command.
    envelope: Option<(String, String)>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

impl DlqEntry {
    /// Where the task came from (`-` for a message that is not a task).
    pub fn source(&self) -> &str {
        match (&self.task, &self.envelope) {
            (Ok(t), _) => t.source.as_str(),
            (Err(_), Some((source, _))) => source,
            (Err(_), None) => "-",
        }
    }

    /// The command(s) and keys, never values.
    pub fn command(&self) -> String {
        match (&self.task, &self.envelope) {
            (Ok(t), _) => t.describe(),
            (Err(_), Some((_, command))) => command.clone(),
            (Err(_), None) => "-".to_string(),
        }
    }

    /// Whether the entry is an envelope standing for a message too large for the topic: it
    /// cannot be replayed, only inspected and purged.
    pub fn is_envelope(&self) -> bool {
        self.envelope.is_some()
    }

    /// How many times the consumer sent the task to Redis before giving up: its retries, plus
    /// the attempt that failed when the reason says Redis was reached. A task refused before
    /// Redis (malformed, forbidden, expired, ambiguous, ...) that was never retried has none.
    pub fn attempts(&self) -> u32 {
        let Ok(task) = &self.task else { return 0 };
        let reached_redis = [
            DlqReason::PermanentError,
            DlqReason::MaxRetries,
            DlqReason::TimedOut,
            DlqReason::ScriptTimeout,
            DlqReason::KafkaRefused,
        ]
        .iter()
        .any(|r| r.as_str() == self.reason);
        task.retry_count + u32::from(reached_redis)
    }

    /// Time since the failure was captured (or, failing that, dead-lettered).
    pub fn age(&self) -> Option<Duration> {
        let since = match &self.task {
            Ok(t) if t.captured_at.timestamp() > -62_135_596_800 => Some(t.captured_at),
            _ => self.dead_lettered_at,
        }?;
        (Utc::now() - since).to_std().ok()
    }

    /// Bytes the entry takes as a message: payload, key and headers.
    fn size(&self) -> usize {
        let headers: usize = self.headers.iter().map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len)).sum();
        self.payload.len() + self.key.as_ref().map_or(0, Vec::len) + headers
    }

    fn owned_headers(&self) -> OwnedHeaders {
        self.headers
            .iter()
            .fold(OwnedHeaders::new(), |h, (k, v)| h.insert(Header { key: k, value: v.as_deref() }))
    }
}

/// Which entries an operation applies to: every condition must hold.
///
/// ```
/// use redis_retry_runtime::dlq::Filter;
/// let f = Filter::parse(&["reason=max_retries".into(), "source=UserRepository.*".into()]).unwrap();
/// assert!(Filter::parse(&["colour=red".into()]).unwrap_err().contains("reason, source, key, command"));
/// # let _ = f;
/// ```
#[derive(Debug, Clone, Default)]
pub struct Filter {
    conditions: Vec<(Field, String)>,
}

#[derive(Debug, Clone, Copy)]
enum Field {
    Reason,
    Source,
    Key,
    Command,
}

impl Filter {
    /// Parses `field=pattern` conditions; `*` at the end of a pattern matches any rest.
    pub fn parse(conditions: &[String]) -> Result<Filter, String> {
        let mut out = Vec::new();
        for c in conditions {
            let (field, pattern) =
                c.split_once('=').ok_or_else(|| format!("--filter `{c}`: expected FIELD=PATTERN"))?;
            let field = match field.trim() {
                "reason" => Field::Reason,
                "source" => Field::Source,
                "key" => Field::Key,
                "command" => Field::Command,
                other => {
                    return Err(format!(
                    "--filter `{c}`: unknown field `{other}`, expected one of reason, source, key, command"
                ))
                }
            };
            out.push((field, pattern.trim().to_string()));
        }
        Ok(Filter { conditions: out })
    }

    /// Whether `entry` meets every condition.
    pub fn matches(&self, entry: &DlqEntry) -> bool {
        self.conditions.iter().all(|(field, pattern)| {
            let value = match field {
                Field::Reason => entry.reason.clone(),
                Field::Source => entry.source().to_string(),
                Field::Key => {
                    entry.key.as_deref().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default()
                }
                Field::Command => match &entry.task {
                    Ok(t) => t.command_name().to_ascii_lowercase(),
                    Err(_) => String::new(),
                },
            };
            match pattern.strip_suffix('*') {
                Some(prefix) => value.starts_with(prefix),
                None => value == *pattern,
            }
        })
    }
}

/// What `replay` or `purge` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Entries replayed or purged.
    pub chosen: usize,
    /// Entries kept in the dead-letter set.
    pub kept: usize,
}

/// The dead-letter set of one pipeline.
pub struct Dlq {
    config: ProducerConfig,
    cursor_group: String,
}

impl Dlq {
    /// The DLQ of `config`'s topic, with its cursor in the group `<group>.dlq`.
    pub fn new(config: &ProducerConfig, group: &str) -> Dlq {
        Dlq { config: config.clone(), cursor_group: format!("{group}.dlq") }
    }

    fn consumer(&self) -> Result<BaseConsumer, SetupError> {
        let mut cfg = self.config.client_config();
        cfg.set("group.id", &self.cursor_group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "100");
        cfg.create().map_err(|e| SetupError::Runtime(format!("kafka consumer: {e}")))
    }

    /// Every entry after the cursor, oldest first per partition (at most `limit`).
    pub async fn list(&self, limit: Option<usize>) -> Result<Vec<DlqEntry>, SetupError> {
        let (entries, _) = self.read(limit).await?;
        Ok(entries)
    }

    /// Reads up to the end offsets seen at the start, returning them for the cursor.
    async fn read(&self, limit: Option<usize>) -> Result<(Vec<DlqEntry>, TopicPartitionList), SetupError> {
        let consumer = self.consumer()?;
        let topic = self.config.topics().dlq;
        tokio::task::spawn_blocking(move || read_all(&consumer, &topic, limit))
            .await
            .map_err(|e| SetupError::Runtime(format!("reading the DLQ: {e}")))?
    }

    /// Sends matching entries back to the main topic as fresh tasks (retry count 0, capture
    /// time now), keeps the rest, and moves the cursor. `progress(done, total)` is called as
    /// it goes.
    pub async fn replay(
        &self,
        filter: &Filter,
        progress: impl FnMut(usize, usize),
    ) -> Result<Outcome, SetupError> {
        self.rewrite(filter, true, progress).await
    }

    /// Drops matching entries, keeps the rest, and moves the cursor.
    pub async fn purge(
        &self,
        filter: &Filter,
        progress: impl FnMut(usize, usize),
    ) -> Result<Outcome, SetupError> {
        self.rewrite(filter, false, progress).await
    }

    async fn rewrite(
        &self,
        filter: &Filter,
        replay: bool,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Outcome, SetupError> {
        let (entries, ends) = self.read(None).await?;
        // Entries are sent on as they are, and the consumer may have written them up to its
        // own limit: librdkafka's default (1,000,000 bytes) must not refuse the largest.
        let mut config = self.config.clone();
        if !config.properties.iter().any(|(k, _)| k == "message.max.bytes") {
            let largest = entries.iter().map(DlqEntry::size).max().unwrap_or_default();
            let limit = (largest + crate::consumer::DEAD_LETTER_HEADROOM).max(1_000_000);
            config.properties.insert(0, ("message.max.bytes".to_string(), limit.to_string()));
        }
        let producer = RetryProducer::new(&config)?;
        let topics = self.config.topics();
        let total = entries.len();
        let mut outcome = Outcome::default();
        for (i, entry) in entries.iter().enumerate() {
            let chosen = filter.matches(entry);
            let send = match (&entry.task, chosen, replay) {
                (Ok(task), true, true) => {
                    let mut fresh = task.clone();
                    fresh.retry_count = 0;
                    fresh.not_before = None;
                    fresh.captured_at = Utc::now();
                    Some(producer.publish_and_wait(&fresh).await)
                }
                // Purged: nothing to send.
                (_, true, false) => None,
                // Kept, or chosen for replay but not a task: appended again at the end.
                _ => Some(
                    producer
                        .send_bytes_and_wait(
                            &topics.dlq,
                            entry.key.as_deref(),
                            &entry.payload,
                            Some(entry.owned_headers()),
                        )
                        .await,
                ),
            };
            if let Some(Err(e)) = send {
                return Err(SetupError::Runtime(format!(
                    "kafka refused a message after {i} of {total} (nothing was lost; run again): {e}"
                )));
            }
            if chosen && (entry.task.is_ok() || !replay) {
                outcome.chosen += 1;
            } else {
                outcome.kept += 1;
            }
            progress(i + 1, total);
        }
        let consumer = self.consumer()?;
        tokio::task::spawn_blocking(move || consumer.commit(&ends, CommitMode::Sync))
            .await
            .map_err(|e| SetupError::Runtime(format!("committing the DLQ cursor: {e}")))??;
        Ok(outcome)
    }
}

fn read_all(
    consumer: &BaseConsumer,
    topic: &str,
    limit: Option<usize>,
) -> Result<(Vec<DlqEntry>, TopicPartitionList), SetupError> {
    let timeout = Duration::from_secs(10);
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(SetupError::Config(format!(
            "topic {topic} does not exist (run `redis-retry topics ensure`)"
        )));
    }
    let mut wanted = TopicPartitionList::new();
    for p in &partitions {
        wanted.add_partition(topic, *p);
    }
    let committed = consumer.committed_offsets(wanted, timeout)?;
    let mut assignment = TopicPartitionList::new();
    // Per partition: the next offset to read and the end as the broker reports it. The reported
    // end is only a floor: some brokers report a batch's base offset, so reading goes on until
    // the partitions fall quiet as well.
    let mut next: Vec<(i32, i64, i64)> = Vec::new();
    for p in &partitions {
        let (low, high) = consumer.fetch_watermarks(topic, *p, timeout)?;
        let start = match committed.find_partition(topic, *p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) if o >= low => o,
            _ => low,
        };
        assignment.add_partition_offset(topic, *p, Offset::Offset(start))?;
        next.push((*p, start, high));
    }
    consumer.assign(&assignment)?;
    let mut entries = Vec::new();
    let idle_needed = Duration::from_millis(700);
    let mut idle_since = std::time::Instant::now();
    let deadline = idle_since + Duration::from_secs(120);
    loop {
        if limit.is_some_and(|l| entries.len() >= l) {
            break;
        }
        if std::time::Instant::now() > deadline {
            return Err(SetupError::Runtime(format!("timed out reading {topic}")));
        }
        let Some(msg) = consumer.poll(Duration::from_millis(100)) else {
            let floors_reached = next.iter().all(|(_, at, high)| at >= high);
            if floors_reached && idle_since.elapsed() >= idle_needed {
                break;
            }
            continue;
        };
        let msg = msg?;
        idle_since = std::time::Instant::now();
        let (p, offset) = (msg.partition(), msg.offset());
        if let Some(slot) = next.iter_mut().find(|(np, _, _)| *np == p) {
            slot.1 = slot.1.max(offset + 1);
        }
        let header = |k: &str| {
            msg.headers()
                .and_then(|h| h.iter().find(|h| h.key == k).and_then(|h| h.value))
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        let payload = msg.payload().unwrap_or_default().to_vec();
        let envelope = (header(headers::PAYLOAD) == headers::ENVELOPE)
            .then(|| serde_json::from_slice::<serde_json::Value>(&payload).ok())
            .flatten()
            .map(|e| {
                let field = |name: &str| e[name].as_str().unwrap_or("-").to_string();
                (field("source"), field("command"))
            });
        entries.push(DlqEntry {
            partition: p,
            offset,
            key: msg.key().map(<[u8]>::to_vec),
            reason: header(headers::REASON),
            error: header(headers::ERROR),
            dead_lettered_at: DateTime::parse_from_rfc3339(&header(headers::DEAD_LETTERED_AT))
                .ok()
                .map(|d| d.to_utc()),
            task: RedisTask::from_json(&payload).map_err(|e| e.to_string()),
            payload,
            envelope,
            headers: msg
                .headers()
                .map(|h| h.iter().map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec))).collect())
                .unwrap_or_default(),
        });
    }
    entries.sort_by_key(|e| (e.partition, e.offset));
    let mut ends = TopicPartitionList::new();
    for (p, at, _) in next {
        ends.add_partition_offset(topic, p, Offset::Offset(at))?;
    }
    Ok((entries, ends))
}
