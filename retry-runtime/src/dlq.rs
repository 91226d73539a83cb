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
/// Conditions, as `--filter` and the console spell them:
/// - `reason=`, `source=`, `key=`, `command=` a pattern; `*` at its end matches any rest;
/// - `age>DURATION`, `age<DURATION` (`90s`, `10m`, `1h 30m`): older or younger than that;
/// - `at=PARTITION:OFFSET[,PARTITION:OFFSET...]`: the entries at those positions of the list
///   an operator saw. A replay or purge appends the entries it keeps again at new positions,
///   so a position names one entry once: if it is no longer in the set (someone acted on it
///   meanwhile), nothing is done in its place and [`Outcome::missing`] names it.
///
/// ```
/// use redis_retry_runtime::dlq::Filter;
/// let f = Filter::parse(&["reason=max_retries".into(), "source=UserRepository.*".into()]).unwrap();
/// let aged = Filter::parse(&["age>1h".into(), "at=0:12,2:7".into()]).unwrap();
/// assert_eq!(aged.positions(), [(0, 12), (2, 7)]);
/// assert!(Filter::parse(&["colour=red".into()]).unwrap_err().contains("reason, source, key, command"));
/// # let _ = f;
/// ```
#[derive(Debug, Clone, Default)]
pub struct Filter {
    conditions: Vec<Condition>,
}

#[derive(Debug, Clone)]
enum Condition {
    Text(Field, String),
    OlderThan(Duration),
    YoungerThan(Duration),
    At(Vec<(i32, i64)>),
}

#[derive(Debug, Clone, Copy)]
enum Field {
    Reason,
    Source,
    Key,
    Command,
}

impl Filter {
    /// Parses conditions (see [`Filter`]); none means every entry.
    ///
    /// # Errors
    ///
    /// A message naming the condition and what was expected, for an unknown field, a
    /// malformed duration or position, or a condition without its operator.
    pub fn parse(conditions: &[String]) -> Result<Filter, String> {
        conditions
            .iter()
            .map(|c| parse_condition(c))
            .collect::<Result<_, _>>()
            .map(|conditions| Filter { conditions })
    }

    /// The positions named by `at=` conditions, in the order given.
    pub fn positions(&self) -> Vec<(i32, i64)> {
        self.conditions
            .iter()
            .filter_map(|c| match c {
                Condition::At(at) => Some(at.iter().copied()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// Whether `entry` meets every condition.
    pub fn matches(&self, entry: &DlqEntry) -> bool {
        self.conditions.iter().all(|c| match c {
            Condition::Text(field, pattern) => {
                let value = match field {
                    Field::Reason => entry.reason.clone(),
                    Field::Source => entry.source().to_string(),
                    Field::Key => entry
                        .key
                        .as_deref()
                        .map(|k| String::from_utf8_lossy(k).into_owned())
                        .unwrap_or_default(),
                    Field::Command => match &entry.task {
                        Ok(t) => t.command_name().to_ascii_lowercase(),
                        Err(_) => String::new(),
                    },
                };
                match pattern.strip_suffix('*') {
                    Some(prefix) => value.starts_with(prefix),
                    None => value == *pattern,
                }
            }
            // An entry of unknown age is neither old nor young enough: an age filter never
            // sweeps up what it cannot date.
            Condition::OlderThan(d) => entry.age().is_some_and(|a| a > *d),
            Condition::YoungerThan(d) => entry.age().is_some_and(|a| a < *d),
            Condition::At(at) => at.contains(&(entry.partition, entry.offset)),
        })
    }
}

fn parse_condition(c: &str) -> Result<Condition, String> {
    let trimmed = c.trim();
    if let Some(rest) = trimmed.strip_prefix("age") {
        let rest = rest.trim_start();
        let (older, duration) = match (rest.strip_prefix('>'), rest.strip_prefix('<')) {
            (Some(d), _) => (true, d),
            (_, Some(d)) => (false, d),
            _ => return Err(format!("--filter `{c}`: expected age>DURATION or age<DURATION, e.g. age>1h")),
        };
        let d = humantime::parse_duration(duration.trim()).map_err(|e| {
            format!("--filter `{c}`: `{}` is not a duration ({e}), e.g. 90s, 10m, 2h", duration.trim())
        })?;
        return Ok(if older { Condition::OlderThan(d) } else { Condition::YoungerThan(d) });
    }
    let (field, pattern) = trimmed.split_once('=').ok_or_else(|| {
        format!("--filter `{c}`: expected FIELD=PATTERN, age>DURATION, age<DURATION or at=PARTITION:OFFSET")
    })?;
    let field = match field.trim() {
        "reason" => Field::Reason,
        "source" => Field::Source,
        "key" => Field::Key,
        "command" => Field::Command,
        "at" => return parse_positions(c, pattern).map(Condition::At),
        other => {
            return Err(format!(
            "--filter `{c}`: unknown field `{other}`, expected one of reason, source, key, command, age, at"
        ))
        }
    };
    Ok(Condition::Text(field, pattern.trim().to_string()))
}

fn parse_positions(c: &str, list: &str) -> Result<Vec<(i32, i64)>, String> {
    let positions: Vec<(i32, i64)> = list
        .split(',')
        .map(|p| {
            let (partition, offset) = p.trim().split_once(':').unwrap_or((p.trim(), ""));
            match (partition.trim().parse::<i32>(), offset.trim().parse::<i64>()) {
                (Ok(partition), Ok(offset)) if partition >= 0 && offset >= 0 => Ok((partition, offset)),
                _ => Err(format!(
                    "--filter `{c}`: `{}` is not a position PARTITION:OFFSET, e.g. at=0:42",
                    p.trim()
                )),
            }
        })
        .collect::<Result<_, _>>()?;
    Ok(positions)
}

/// What `replay` or `purge` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Entries replayed or purged.
    pub chosen: usize,
    /// Entries kept in the dead-letter set.
    pub kept: usize,
    /// Positions an `at=` condition named that are no longer in the dead-letter set: nothing
    /// was done to them, nor to another entry in their place.
    pub missing: Vec<(i32, i64)>,
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
        let missing: Vec<(i32, i64)> = filter
            .positions()
            .into_iter()
            .filter(|at| !entries.iter().any(|e| (e.partition, e.offset) == *at))
            .collect();
        let acts_on = |e: &DlqEntry| filter.matches(e) && (e.task.is_ok() || !replay);
        if !entries.iter().any(acts_on) {
            // Rewriting would only move every entry to a new position (and invalidate the
            // positions an operator is looking at) for nothing.
            progress(entries.len(), entries.len());
            return Ok(Outcome { chosen: 0, kept: entries.len(), missing });
        }
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
        let mut outcome = Outcome { missing, ..Outcome::default() };
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
            if acts_on(entry) {
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
    let (partitions, committed) = crate::lag::committed_positions(consumer, topic, timeout)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(
        partition: i32,
        offset: i64,
        reason: &str,
        key: &str,
        age: Option<chrono::Duration>,
    ) -> DlqEntry {
        let mut task = RedisTask::set(key, "value", Duration::ZERO).unwrap().with_source("Repo.Users");
        // A capture time at or before Go's zero time means none: the age then comes from the
        // dead-letter header, absent here.
        task.captured_at = age.map_or(DateTime::<Utc>::MIN_UTC, |a| Utc::now() - a);
        DlqEntry {
            partition,
            offset,
            key: Some(key.as_bytes().to_vec()),
            reason: reason.to_string(),
            error: String::new(),
            dead_lettered_at: None,
            payload: task.to_json(),
            task: Ok(task),
            envelope: None,
            headers: Vec::new(),
        }
    }

    fn filter(conditions: &[&str]) -> Filter {
        Filter::parse(&conditions.iter().map(|c| c.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn text_conditions_match_exactly_or_by_prefix() {
        let e = entry(0, 1, "max_retries", "user:1", None);
        assert!(filter(&["reason=max_retries", "key=user:*", "source=Repo.*", "command=set"]).matches(&e));
        assert!(!filter(&["reason=max_retries", "key=order:*"]).matches(&e));
        assert!(!filter(&["reason=max"]).matches(&e), "without `*` a pattern is the whole value");
        assert!(filter(&[]).matches(&e), "no condition: every entry");
    }

    #[test]
    fn age_conditions_compare_with_the_capture_time_and_skip_the_undated() {
        let old = entry(0, 1, "expired", "k", Some(chrono::Duration::hours(3)));
        let young = entry(0, 2, "expired", "k", Some(chrono::Duration::minutes(2)));
        let undated = entry(0, 3, "expired", "k", None);
        let older = filter(&["age>1h"]);
        let younger = filter(&["age < 10m"]);
        assert!(older.matches(&old) && !older.matches(&young) && !older.matches(&undated));
        assert!(younger.matches(&young) && !younger.matches(&old) && !younger.matches(&undated));
        assert!(filter(&["age>1h 30m"]).matches(&old), "humantime spellings");
    }

    #[test]
    fn positions_name_entries_and_nothing_else() {
        let f = filter(&["at=0:1, 2:7"]);
        assert_eq!(f.positions(), [(0, 1), (2, 7)]);
        assert!(f.matches(&entry(0, 1, "r", "k", None)));
        assert!(f.matches(&entry(2, 7, "r", "k", None)));
        assert!(!f.matches(&entry(0, 7, "r", "k", None)), "partition and offset together");
        assert!(!f.matches(&entry(2, 1, "r", "k", None)));
        let narrowed = filter(&["at=0:1", "reason=expired"]);
        assert!(!narrowed.matches(&entry(0, 1, "max_retries", "k", None)), "every condition holds");
    }

    #[test]
    fn bad_conditions_say_what_was_expected() {
        let err = |c: &str| Filter::parse(&[c.to_string()]).unwrap_err();
        assert!(err("colour=red").contains("reason, source, key, command, age, at"), "{}", err("colour=red"));
        assert!(err("age=1h").contains("age>DURATION"), "{}", err("age=1h"));
        assert!(err("age>soon").contains("not a duration"), "{}", err("age>soon"));
        assert!(err("at=0").contains("PARTITION:OFFSET"), "{}", err("at=0"));
        assert!(err("at=0:-3").contains("`0:-3`"), "{}", err("at=0:-3"));
        assert!(err("at=").contains("PARTITION:OFFSET"), "{}", err("at="));
        assert!(err("reason").contains("FIELD=PATTERN"), "{}", err("reason"));
    }
}
