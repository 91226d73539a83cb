//! Names of the counters and histograms this crate records through the `metrics` facade.
//!
//! Recording costs nothing until an application installs a recorder (the binary installs a
//! Prometheus exporter); the names are public so that dashboards and tests can refer to them.

/// Failed writes turned into tasks by a `RetryConnection` or `log_and_retry_redis_error`.
pub const CAPTURED: &str = "redis_retry_captured_total";
/// Tasks acknowledged by Kafka.
pub const ENQUEUED: &str = "redis_retry_enqueued_total";
/// Tasks neither acknowledged by Kafka nor kept in the spool (label `reason`: `delivery`,
/// `queue`, `no_producer`, `spool_refused`, `permanent`): lost unless their caller retries them.
/// A task that went to the spool instead is counted in [`SPOOLED`], not here.
pub const ENQUEUE_FAILURES: &str = "redis_retry_enqueue_failures_total";
/// Transient Redis errors an annotated method returned although no `RetryConnection` in its
/// scope saw a failure (label `source`): a write through an unwrapped connection, never
/// captured. Each is also logged once at warn level, with the error's kind, never its values.
pub const UNCAPTURED_ERRORS: &str = "redis_retry_uncaptured_errors_total";
/// Failed writes only logged (`mode = "log"`, `log_redis_error`).
pub const LOGGED: &str = "redis_retry_logged_total";
/// Tasks the consumer applied to Redis.
pub const APPLIED: &str = "redis_retry_applied_total";
/// Tasks the consumer sent to a retry tier.
pub const RETRIED: &str = "redis_retry_retried_total";
/// Tasks sent to the dead-letter topic (label `reason`).
pub const DEAD_LETTERED: &str = "redis_retry_dead_lettered_total";
/// Seconds from picking a task up to having applied it.
pub const APPLY_SECONDS: &str = "redis_retry_apply_seconds";
/// Messages behind the end of each partition, per `topic` and `partition` (from librdkafka's
/// statistics, every 5 s).
pub const CONSUMER_LAG: &str = "redis_retry_consumer_lag";
/// Redelivered non-idempotent tasks that their guard key showed were applied already.
pub const DEDUPLICATED: &str = "redis_retry_deduplicated_total";
/// Tasks kept in the local spool because Kafka could not take them (label `cause`:
/// `send_refused`, `delivery_failed`, `spool_active` for tasks queued behind spooled ones,
/// `waiter_gone` for a failed waited send whose caller stopped waiting).
pub const SPOOLED: &str = "redis_retry_spooled_total";
/// Spooled tasks Kafka acknowledged on re-publishing.
pub const SPOOL_REPLAYED: &str = "redis_retry_spool_replayed_total";
/// Tasks the spool refused (label `reason`: `full`, `too_large`, `io`): each is logged at
/// error level with its keys and source, and is lost unless its caller retries it.
pub const SPOOL_REFUSED: &str = "redis_retry_spool_refused_total";
/// Bytes the spool's files take (gauge).
pub const SPOOL_BYTES: &str = "redis_retry_spool_bytes";
/// Tasks waiting in the spool (gauge).
pub const SPOOL_RECORDS: &str = "redis_retry_spool_records";
/// Bytes of spool files found damaged or cut short by a crash, and dropped.
pub const SPOOL_CORRUPT_BYTES: &str = "redis_retry_spool_corrupt_bytes_total";
/// Counter: Lua tasks that ran past the script time budget and that `SCRIPT KILL` stopped.
pub const SCRIPTS_KILLED: &str = "redis_retry_scripts_killed_total";
