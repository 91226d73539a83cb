//! redis-retry: failed Redis writes captured, queued on Kafka and re-applied — never silently
//! lost.
//!
//! This facade re-exports the runtime (and, as `tracing` does for `#[instrument]`, the
//! `#[redis_retry]` attribute once it lands). See the runtime's documentation for the parts:
//! [`RetryConnection`], [`RedisTask`], [`RetryProducer`], [`RedisRetryConsumer`].
//!
//! ```
//! use redis_retry::{RedisTask, TaskKind};
//! let task = RedisTask::del("user:info:1")?.with_source("UserRepository.DeleteUserCache");
//! assert_eq!(task.kind, TaskKind::Simple);
//! # Ok::<(), redis_retry::TaskError>(())
//! ```
#![forbid(unsafe_code)]

pub use redis_retry_runtime::*;
