//! Settling a message: applied, sent to a retry tier, or dead-lettered, and only then may its
//! offset be committed.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::types::RDKafkaErrorCode;
use redis::aio::ConnectionLike;
use sha2::Digest as _;
use tokio::sync::watch;

use super::lane::sleep_or_stop;
use super::Shared;
use crate::apply::{self, Applied, Plan, Target};
use crate::counters;
use crate::errors::{Delivery, DlqReason, Failure, PublishError};
use crate::producer::{dlq_headers, headers};
use crate::task::{Mode, RedisTask};

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

/// A wait for a retry's `not_before` longer than this is logged: a lane that sits still for
/// longer than a few seconds should say why.
const LONG_WAIT: Duration = Duration::from_secs(5);

/// How long a probe of Redis may take before Redis counts as not answering.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long tasks go to Redis one at a time after a reply timed out.
const CAREFUL_FOR: Duration = Duration::from_secs(10);

/// What a dead letter's record needs beside its payload, key and headers (record framing).
const RECORD_OVERHEAD: usize = 1024;

/// A message decoded and planned, or why it was refused before it reached Redis.
pub(super) type Prepared = Result<(RedisTask, Plan), Refused>;

/// Why a message was refused before it reached Redis.
pub(super) struct Refused {
    reason: DlqReason,
    error: String,
}

/// Why Kafka will never take a message, however often it is sent.
enum Refusal {
    /// Larger than the producer or the topic takes.
    TooLarge(String),
    /// The consumer may not write the topic: nothing sent there will get through.
    Forbidden(String),
}

/// Whether a publish error is one that sending again cannot cure.
fn refusal(e: &PublishError) -> Option<Refusal> {
    let PublishError::Kafka(kafka) = e else { return None };
    use RDKafkaErrorCode as C;
    match kafka.rdkafka_error_code()? {
        C::MessageSizeTooLarge | C::InvalidMessageSize | C::MessageBatchTooLarge => {
            Some(Refusal::TooLarge(e.to_string()))
        }
        C::TopicAuthorizationFailed | C::ClusterAuthorizationFailed => {
            Some(Refusal::Forbidden(e.to_string()))
        }
        _ => None,
    }
}

impl<C> Shared<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    /// Decodes and plans each message: what a batch needs before anything is sent, and
    /// touches nothing, so the lane can do it for the next batch while Redis applies this one.
    pub(super) fn prepare_all(&self, msgs: &[BorrowedMessage<'_>], is_tier: bool) -> Vec<Prepared> {
        msgs.iter()
            .map(|msg| {
                let task = self.prepare(msg, is_tier)?;
                let plan = Plan::new(&task, self.guard_ttl());
                Ok((task, plan))
            })
            .collect()
    }

    /// Settles the messages of a batch, prepared by [`prepare_all`](Self::prepare_all), in
    /// order and returns how many were settled (all of them unless shutdown interrupted one).
    /// Tasks that can be pipelined gather until something must go alone (a bad message, a
    /// transaction, a task not yet due), then go to Redis in one round trip, so per-key order
    /// is the order of the partition.
    pub(super) async fn settle_batch(
        &self,
        batch: &[BorrowedMessage<'_>],
        prepared: Vec<Prepared>,
        is_tier: bool,
        stop: &mut watch::Receiver<bool>,
    ) -> usize {
        // Only what was prepared is settled: a message without its preparation is left
        // unsettled (read again), never counted as done.
        debug_assert_eq!(batch.len(), prepared.len());
        let batch = &batch[..batch.len().min(prepared.len())];
        let mut pending: Vec<(usize, RedisTask, Plan)> = Vec::new();
        let careful = self.careful();
        for (i, (msg, prepared)) in batch.iter().zip(prepared).enumerate() {
            let task = match prepared {
                Ok((task, plan)) => {
                    let due_later = is_tier && task.not_before.is_some_and(|due| due > chrono::Utc::now());
                    if task.mode != Mode::Log
                        && !careful
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
                // The time-out of a lone task is that task's: sending it alone as well would
                // run a slow write twice per attempt.
                Err(e) if e.is_timeout() && tasks.len() == 1 => {
                    break Some(vec![Applied::TimedOut(crate::errors::describe_redis_error(&e))]);
                }
                Err(e) => {
                    let error = crate::errors::describe_redis_error(&e);
                    tracing::debug!(error = %error, tasks = tasks.len(), "batch failed as a whole; settling its tasks one by one");
                    // A batch that timed out may still be running: sending its tasks again
                    // before Redis is through with it would pile more work onto it.
                    if e.is_timeout() {
                        self.be_careful();
                        if !self.wait_until_answering(stop).await {
                            return Err(items.first().map_or(0, |(i, ..)| *i));
                        }
                    }
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

    /// Checks a message (size, signature, decoding, what the consumer allows, a tier's
    /// schedule) and decodes its task.
    fn prepare(&self, msg: &BorrowedMessage<'_>, is_tier: bool) -> Result<RedisTask, Refused> {
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
        let decoded = crate::task::decode(payload)
            // `decode` has validated the task; what is left is the consumer's own policy.
            .and_then(|d| d.task.check_lua_allowed(self.config.allow_lua).map(|()| d))
            .map_err(|e| Refused { reason: e.dlq_reason(), error: e.to_string() })?;
        let mut task = decoded.task;
        if task.id.is_empty() {
            // A Go task carries no id. Where it was first read tells two Go messages with the
            // same bytes apart and names a redelivery of the same one; it travels with the task
            // to the tiers and the DLQ, so the at-most-once guard of a non-idempotent task holds
            // across its retries.
            task.id = format!("{}:{}:{}", msg.topic(), msg.partition(), msg.offset());
        }
        if let Some(asked) = decoded.max_retries_asked {
            tracing::warn!(max_retries = asked, used = task.max_retries, source = %task.source, task_id = %task.id,
                "a task asked for max_retries outside 0..=100 (Go's WithMaxRetries takes any int); using the nearest bound");
        }
        if let Some(due) = task.not_before.filter(|_| is_tier) {
            let latest = self.config.latest_schedule();
            let ahead = (due - chrono::Utc::now()).to_std().unwrap_or_default();
            if ahead > latest {
                let error = format!(
                    "not_before is {} s ahead, later than any retry is scheduled (at most {} s: retry_max_delay, \
                     its jitter and a minute's slack)",
                    ahead.as_secs(),
                    latest.as_secs()
                );
                return Err(Refused { reason: DlqReason::BadSchedule, error });
            }
        }
        Ok(task)
    }

    /// Settles one task on its own: waits until a tier's task is due, applies it (waiting for
    /// Redis when it cannot be reached), then re-queues or dead-letters it if that failed. The
    /// main topic's tasks are applied at once: its `not_before` is not one the consumer set.
    async fn settle_task(
        &self,
        task: RedisTask,
        plan: &Plan,
        source_topic: &str,
        is_tier: bool,
        stop: &mut watch::Receiver<bool>,
    ) -> Settled {
        if let Some(due) = task.not_before.filter(|_| is_tier) {
            let wait = (due - chrono::Utc::now()).to_std().unwrap_or_default();
            if wait > LONG_WAIT {
                tracing::info!(
                    wait_s = wait.as_secs(),
                    topic = source_topic,
                    task_id = %task.id,
                    retry_count = task.retry_count,
                    "waiting for a retry to be due; this tier's later tasks wait behind it"
                );
            }
            if !wait.is_zero() && !sleep_or_stop(wait, stop).await {
                return Settled::Interrupted;
            }
        }
        let mut backoff = Duration::from_millis(100);
        let mut last_warning: Option<Instant> = None;
        let target =
            Target { redis: &self.redis, control: &self.control, script_timeout: self.config.script_timeout };
        loop {
            if self.expired(&task) {
                let age = format!("older than max_age {:?}", self.config.max_age);
                return self.dead_letter_task(&task, source_topic, DlqReason::Expired, &age, stop).await;
            }
            let started = Instant::now();
            let applied = apply::apply(&target, &task, plan).await;
            self.health.set_redis_reachable(!matches!(applied, Applied::Unreachable(_)));
            match applied {
                Applied::Ok => return applied_once(&task, started.elapsed().as_secs_f64(), is_tier),
                Applied::Unreachable(err) => {
                    if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        tracing::warn!(error = %err, command = %task.log_commands(), keys = %task.log_keys(), "redis unreachable; waiting for it before applying");
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
            Applied::TimedOut(err) => {
                // Slow is not unreachable: once Redis answers a probe, the time-out is this
                // task's, and it is never sent again before Redis is through with it. Only
                // idempotent or guarded tasks come here (the guard tells the retry whether
                // the write ran); others time out as ambiguous.
                tracing::warn!(error = %err, command = %task.log_commands(), keys = %task.log_keys(), task_id = %task.id, timeout = "response",
                    "redis did not answer the task in time");
                self.be_careful();
                if !self.wait_until_answering(stop).await {
                    return Settled::Interrupted;
                }
                task.original_err = err;
                self.retry_later(task, source_topic, DlqReason::TimedOut, stop).await
            }
            Applied::ScriptKilled(err) => {
                let settled =
                    self.dead_letter_task(&task, source_topic, DlqReason::ScriptTimeout, &err, stop).await;
                if settled == Settled::Done && !self.wait_until_answering(stop).await {
                    return Settled::Interrupted;
                }
                settled
            }
            Applied::Failed(Failure::Transient(Delivery::Ambiguous), err) if !task.is_idempotent() => {
                self.dead_letter_task(&task, source_topic, DlqReason::Ambiguous, &err, stop).await
            }
            Applied::Failed(Failure::Permanent, err) => {
                self.dead_letter_task(&task, source_topic, DlqReason::PermanentError, &err, stop).await
            }
            Applied::Failed(Failure::Transient(_), err) | Applied::Unreachable(err) => {
                task.original_err = err;
                self.retry_later(task, source_topic, DlqReason::MaxRetries, stop).await
            }
            Applied::Ok => Settled::Done,
        }
    }

    /// Whether tasks go to Redis one at a time (see [`Self::be_careful`]).
    fn careful(&self) -> bool {
        self.careful_until.lock().is_ok_and(|until| until.is_some_and(|t| t > Instant::now()))
    }

    /// A reply timed out: for a while, tasks go one at a time, so that a slow Redis meets one
    /// task's work at a time rather than a pipeline's.
    fn be_careful(&self) {
        if let Ok(mut until) = self.careful_until.lock() {
            if until.is_none_or(|t| t <= Instant::now()) {
                tracing::info!(
                    seconds = CAREFUL_FOR.as_secs(),
                    "a redis reply timed out: applying tasks one at a time for a while"
                );
            }
            *until = Some(Instant::now() + CAREFUL_FOR);
        }
    }

    /// Waits until Redis answers a probe (any reply, `BUSY` included) on the control
    /// connection: the sign that it is through with what timed out. False when stopped first.
    async fn wait_until_answering(&self, stop: &mut watch::Receiver<bool>) -> bool {
        let mut backoff = Duration::from_millis(100);
        let mut warned = false;
        loop {
            let mut conn = self.control.clone();
            let cmd = redis::cmd("PING");
            let ping = cmd.query_async::<redis::Value>(&mut conn);
            match tokio::time::timeout(PROBE_TIMEOUT, ping).await {
                Ok(Ok(_)) => {
                    self.health.set_redis_reachable(true);
                    return true;
                }
                Ok(Err(e)) if e.code().is_some() => {
                    self.health.set_redis_reachable(true);
                    return true;
                }
                _ => {
                    self.health.set_redis_reachable(false);
                    if !warned {
                        tracing::warn!("redis does not answer a probe; waiting for it before the next task");
                        warned = true;
                    }
                }
            }
            if !sleep_or_stop(backoff, stop).await {
                return false;
            }
            backoff = (backoff * 2).min(UNREACHABLE_BACKOFF_MAX);
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

    /// Sends the task to its next tier, or once its retries are spent dead-letters it with
    /// `exhausted` (`max_retries`, or `timed_out` when the last try timed out).
    async fn retry_later(
        &self,
        mut task: RedisTask,
        source_topic: &str,
        exhausted: DlqReason,
        stop: &mut watch::Receiver<bool>,
    ) -> Settled {
        if task.retry_count >= task.max_retries {
            tracing::error!(
                error = %task.original_err,
                retry_count = task.retry_count,
                max_retries = task.max_retries,
                command = %task.log_commands(), keys = %task.log_keys(),
                source = %task.source,
                task_id = %task.id,
                "redis task reached max retries, giving up"
            );
            let err = task.original_err.clone();
            return self.dead_letter_task(&task, source_topic, exhausted, &err, stop).await;
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
            command = %task.log_commands(), keys = %task.log_keys(),
            task_id = %task.id,
            "redis task failed, retrying later"
        );
        let payload = task.to_json();
        let settled = match self.send_until_acked(&tier, task.first_key(), &payload, None, stop).await {
            Ok(settled) => settled,
            Err(Refusal::TooLarge(why)) => {
                let err = format!("the retry tier refused the task ({} bytes): {why}", payload.len());
                return self.dead_letter_task(&task, source_topic, DlqReason::KafkaRefused, &err, stop).await;
            }
            Err(Refusal::Forbidden(why)) => return self.stop_for(&tier, &why),
        };
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
        if reason != DlqReason::MaxRetries && reason != DlqReason::TimedOut {
            tracing::error!(reason = %reason, error = %error, command = %task.log_commands(), keys = %task.log_keys(), source = %task.source, task_id = %task.id, "task dead-lettered");
        }
        let headers = dlq_headers(reason, error, source_topic);
        let about = About { task_id: &task.id, source: &task.source, command: task.describe() };
        self.send_dead_letter(task.first_key(), &task.to_json(), headers, reason, &about, stop).await
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
        let about = About { task_id: "", source: "", command: String::new() };
        self.send_dead_letter(msg.key(), payload, headers, reason, &about, stop).await
    }

    /// Sends a dead letter that fits: the message itself when it does, otherwise an envelope
    /// that stands for it (see [`envelope`]).
    async fn send_dead_letter(
        &self,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: OwnedHeaders,
        reason: DlqReason,
        about: &About<'_>,
        stop: &mut watch::Receiver<bool>,
    ) -> Settled {
        let dlq = self.topics.dlq.clone();
        let size = payload.len() + key.map_or(0, <[u8]>::len) + headers_size(&headers) + RECORD_OVERHEAD;
        let mut refused = None;
        if size <= self.publish_limit {
            match self.send_until_acked(&dlq, key, payload, Some(headers.clone()), stop).await {
                Ok(settled) => return self.dead_lettered(settled, reason),
                Err(Refusal::TooLarge(why)) => refused = Some(why),
                Err(Refusal::Forbidden(why)) => return self.stop_for(&dlq, &why),
            }
        }
        let (body, headers) = envelope(payload, &headers, reason, about);
        tracing::warn!(
            reason = %reason,
            payload_bytes = payload.len(),
            publish_limit = self.publish_limit,
            refused = refused.as_deref().unwrap_or("-"),
            task_id = about.task_id,
            "dead letter too large for the topic: an envelope stands for it"
        );
        // A long key is a hostile one: the envelope goes without it rather than not at all.
        let key = key.filter(|k| k.len() <= 1024);
        match self.send_until_acked(&dlq, key, &body, Some(headers), stop).await {
            Ok(settled) => self.dead_lettered(settled, reason),
            Err(Refusal::TooLarge(why) | Refusal::Forbidden(why)) => self.stop_for(&dlq, &why),
        }
    }

    fn dead_lettered(&self, settled: Settled, reason: DlqReason) -> Settled {
        if settled == Settled::Done {
            metrics::counter!(counters::DEAD_LETTERED, "reason" => reason.as_str()).increment(1);
        }
        settled
    }

    /// Stops the consumer because Kafka refuses `topic` for good: every message would meet the
    /// same refusal, so going on would only dead-letter or lose them. The message in hand stays
    /// uncommitted for the run after the fix.
    fn stop_for(&self, topic: &str, why: &str) -> Settled {
        let message =
            format!("kafka refuses every message to {topic} ({why}); stopping with the message uncommitted");
        tracing::error!(topic, kafka_error = why, "kafka refuses the consumer's messages for good; stopping");
        if let Ok(mut fatal) = self.fatal.lock() {
            fatal.get_or_insert(message);
        }
        Settled::Interrupted
    }

    /// Sends until Kafka acknowledges: the source message is committed only after that. A
    /// refusal that sending again cannot cure is returned instead of retried.
    async fn send_until_acked(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Settled, Refusal> {
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.producer.send_bytes_and_wait(topic, key, payload, headers.clone()).await {
                Ok(()) => return Ok(Settled::Done),
                Err(e) => {
                    if let Some(refusal) = refusal(&e) {
                        return Err(refusal);
                    }
                    tracing::warn!(kafka_error = %e, topic, "could not publish to kafka; will try again");
                    if !sleep_or_stop(backoff, stop).await {
                        return Ok(Settled::Interrupted);
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// What an envelope says about the task it stands for (never a value).
struct About<'a> {
    task_id: &'a str,
    source: &'a str,
    command: String,
}

fn headers_size(headers: &OwnedHeaders) -> usize {
    headers.iter().map(|h| h.key.len() + h.value.map_or(0, <[u8]>::len) + 8).sum()
}

/// The most an envelope keeps of any one text (command and keys, source, a header), and of
/// the original message's headers together: an envelope must fit any topic.
const ENVELOPE_FIELD: usize = 4096;

/// A dead letter for a message too large to dead-letter: the reason, the task's id, source,
/// command and keys, the message's size and SHA-256, as JSON, with the header
/// `payload: envelope`. Long texts are cut (marked), and the original message's headers are
/// dropped when they are what is large.
fn envelope(
    payload: &[u8],
    headers: &OwnedHeaders,
    reason: DlqReason,
    about: &About<'_>,
) -> (Vec<u8>, OwnedHeaders) {
    let cut = |text: &str| -> String {
        if text.len() <= ENVELOPE_FIELD {
            return text.to_string();
        }
        let mut at = ENVELOPE_FIELD;
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        format!("{} ...(cut)", &text[..at])
    };
    let body = serde_json::json!({
        "redis_retry_envelope": 1,
        "note": "the dead letter was too large for the topic; this envelope stands for it",
        "reason": reason.as_str(),
        "task_id": cut(about.task_id),
        "source": cut(about.source),
        "command": cut(&about.command),
        "payload_bytes": payload.len(),
        "payload_sha256": hex::encode(sha2::Sha256::digest(payload)),
    });
    let body = serde_json::to_vec(&body).unwrap_or_default();
    let original = |h: &Header<&[u8]>| h.key.starts_with("original.");
    let keep_original =
        headers.iter().filter(original).map(|h| h.key.len() + h.value.map_or(0, <[u8]>::len)).sum::<usize>()
            <= ENVELOPE_FIELD;
    let mut out = OwnedHeaders::new();
    for h in headers.iter().filter(|h| keep_original || !original(h)) {
        let value = h.value.map(|v| &v[..v.len().min(ENVELOPE_FIELD)]);
        out = out.insert(Header { key: h.key, value });
    }
    (body, out.insert(Header { key: headers::PAYLOAD, value: Some(headers::ENVELOPE) }))
}

/// Counts and logs a task Redis has taken, `seconds` after it was sent.
fn applied_once(task: &RedisTask, seconds: f64, is_tier: bool) -> Settled {
    metrics::counter!(counters::APPLIED).increment(1);
    metrics::histogram!(counters::APPLY_SECONDS).record(seconds);
    tracing::debug!(task_id = %task.id, command = %task.log_commands(), keys = %task.log_keys(), retry_count = task.retry_count, is_tier, "task applied");
    Settled::Done
}
