//! The process-wide producer (the seed's `manager.go`) and what a capture logs and counts.

use std::sync::OnceLock;

use super::*;
use crate::counters;
use crate::errors::PublishError;
use crate::task::RedisTask;

pub(super) static GLOBAL: OnceLock<RetryProducer> = OnceLock::new();

/// Installs the process-wide producer (the seed's `manager.go`); connections without their
/// own producer use it. Returns the producer back if one was installed already.
pub fn init_global_producer(producer: RetryProducer) -> Result<(), RetryProducer> {
    GLOBAL.set(producer)
}

/// The process-wide producer, if installed.
pub fn global_producer() -> Option<&'static RetryProducer> {
    GLOBAL.get()
}

/// Logs a failed write and queues its task on the global producer (the seed's
/// `LogAndRetryRedisError`). Never panics: without a global producer it logs an error and
/// counts the loss.
///
/// ```
/// use redis_retry_runtime::{log_and_retry_redis_error, RedisTask};
/// let task = RedisTask::del("user:info:1")?.with_source("UserRepository.DeleteUserCache");
/// // No global producer in this example: an error is logged and counted, nothing panics.
/// log_and_retry_redis_error(&task, &"connection refused");
/// # Ok::<(), redis_retry_runtime::TaskError>(())
/// ```
pub fn log_and_retry_redis_error(task: &RedisTask, err: &dyn std::fmt::Display) {
    match global_producer() {
        Some(p) => p.log_and_retry(task, err),
        None => {
            let task = task.clone().with_error(err);
            report_capture(&task);
            report_unqueued(&task, &PublishError::NoProducer);
        }
    }
}

/// Logs a failed write that is not retried (seed: `LogRedisError`, read-path backfill).
///
/// ```
/// redis_retry_runtime::log_redis_error(&"connection refused");
/// ```
pub fn log_redis_error(err: &dyn std::fmt::Display) {
    metrics::counter!(counters::LOGGED).increment(1);
    tracing::warn!(error = %err, "redis write failed on a read path; not retried");
}

impl RetryProducer {
    /// [`log_and_retry_redis_error`] on this producer instead of the global one.
    pub fn log_and_retry(&self, task: &RedisTask, err: &dyn std::fmt::Display) {
        let task = task.clone().with_error(err);
        report_capture(&task);
        if let Err(e) = self.publish(&task) {
            report_unqueued(&task, &e);
        }
    }
}

pub(crate) fn report_capture(task: &RedisTask) {
    log_capture(task, "redis write failed, sending it to the retry queue");
}

/// A captured non-idempotent write that may have run: it goes to the dead-letter topic, not
/// to the retry queue, and the log says so.
pub(crate) fn report_ambiguous_capture(task: &RedisTask) {
    log_capture(
        task,
        "non-idempotent redis write failed and may have run; dead-lettered as ambiguous, not retried",
    );
}

pub(super) fn log_capture(task: &RedisTask, what: &str) {
    metrics::counter!(counters::CAPTURED).increment(1);
    log_task(task, None, what);
}

pub(crate) fn report_unqueued(task: &RedisTask, err: &PublishError) {
    let reason = match err {
        PublishError::NoProducer => "no_producer",
        PublishError::Spool(_) => "spool_refused",
        PublishError::LogMode | PublishError::Task(_) => "not_queueable",
        _ => "queue",
    };
    metrics::counter!(counters::ENQUEUE_FAILURES, "reason" => reason).increment(1);
    match err {
        // Not a Kafka failure: nothing was sent anywhere, and the line must say so plainly.
        PublishError::NoProducer => log_task(
            task,
            None,
            "redis write failed and NOTHING WAS QUEUED: no redis-retry producer is installed \
             (call redis_retry::init_global_producer at start-up, or RetryConnection::with_producer)",
        ),
        err => log_task(task, Some(err), "could not queue redis retry task"),
    }
}

/// One error line about a task: what happened, the Redis error, and where the write came from;
/// the fields every line about a captured write shares, never a value.
fn log_task(task: &RedisTask, kafka_error: Option<&PublishError>, what: &str) {
    tracing::error!(
        error = %task.original_err,
        kafka_error = kafka_error.map(tracing::field::display),
        task_type = task.kind.as_str(),
        command = %task.log_commands(),
        keys = %task.log_keys(),
        trace_id = task.log_trace_id(),
        user_uuid = task.log_user_uuid(),
        source = %task.source,
        task_id = %task.id,
        "{what}"
    );
}
