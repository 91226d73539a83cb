//! redis-retry: failed Redis writes captured, queued on Kafka and re-applied — never silently
//! lost.
//!
//! Put `#[redis_retry]` on a repository method that writes to Redis through a
//! [`RetryConnection`]: every write in it that fails transiently becomes a [`RedisTask`] on
//! Kafka, published by the [`RetryProducer`], and a [`RedisRetryConsumer`] (or the
//! `redis-retry consume` binary) applies it once Redis is back. This facade re-exports the
//! runtime and the attribute, as `tracing` re-exports `#[instrument]`.
//!
//! ```no_run
//! use redis::AsyncCommands;
//! use redis_retry::{redis_retry, RetryConnection};
//!
//! struct UserRepository {
//!     redis: RetryConnection<redis::aio::ConnectionManager>,
//! }
//!
//! impl UserRepository {
//!     #[redis_retry(source = "UserRepository.DeleteUserCache")]
//!     async fn delete_user_cache(&self, user_uuid: &str) -> redis::RedisResult<()> {
//!         let mut redis = self.redis.clone();
//!         redis.del(format!("user:info:{user_uuid}")).await
//!     }
//! }
//! ```
//!
//! The seed's explicit path works too:
//!
//! ```
//! use redis_retry::{RedisTask, TaskKind};
//! let task = RedisTask::del("user:info:1")?.with_source("UserRepository.DeleteUserCache");
//! assert_eq!(task.kind, TaskKind::Simple);
//! # Ok::<(), redis_retry::TaskError>(())
//! ```
#![forbid(unsafe_code)]

pub use redis_retry_runtime::*;

/// The redis-rs this crate is built against: name Redis through it (`redis_retry::redis`) and
/// a service needs one dependency line, with no second `redis` version to mismatch.
pub use redis;

/// Runs an `async fn` in a capture scope; see the attribute's documentation.
pub use redis_retry_macros::redis_retry;
