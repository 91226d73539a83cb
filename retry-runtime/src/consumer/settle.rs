//! Settling a message: applied, sent to a retry tier, or dead-lettered, and only then may its
//! offset be committed.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::message::{BorrowedMessage, Headers, Message};
use redis::aio::ConnectionLike;
use tokio::sync::watch;

use super::lane::sleep_or_stop;
use super::Shared;
use crate::apply::{self, Applied, Plan};
use crate::counters;
use crate::errors::{Delivery, DlqReason, Failure};
use crate::producer::dlq_headers;
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

/// Why a message was refused before it reached Redis.
struct Refused {
    reason: DlqReason,
    error: String,
}

impl<C> Shared<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    /// Settles the messages of a batch in order and returns how many were settled (all of them
    /// unless shutdown interrupted one). Tasks that can be pipelined gather until something must
    /// go alone (a bad message, a transaction, a task not yet due), then go to Redis in one
    /// round trip, so per-key order is the order of the partition.
    pub(super) async fn settle_batch(
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

/// Counts and logs a task Redis has taken, `seconds` after it was sent.
fn applied_once(task: &RedisTask, seconds: f64, is_tier: bool) -> Settled {
    metrics::counter!(counters::APPLIED).increment(1);
    metrics::histogram!(counters::APPLY_SECONDS).record(seconds);
    tracing::debug!(task_id = %task.id, keys = %task.describe(), retry_count = task.retry_count, is_tier, "task applied");
    Settled::Done
}
