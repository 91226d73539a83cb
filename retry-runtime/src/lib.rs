//! Runtime of redis-retry: failed Redis writes captured, queued on Kafka and re-applied.
//!
//! Data flows one way: a capture [`scope`] (opened by `#[redis_retry]`) tells a
//! [`RetryConnection`] to turn a failed write into a [`RedisTask`], the [`RetryProducer`]
//! publishes it, and the [`RedisRetryConsumer`] applies it to Redis with bounded, backed-off
//! retries and a dead-letter topic. Which commands write, and where their keys are, comes from
//! one table: [`commands`].
//!
//! ```
//! use std::time::Duration;
//! use redis_retry_runtime::RedisTask;
//! let task = RedisTask::set("device:token:d1", "abc", Duration::from_secs(300))?
//!     .with_source("DeviceRepository.SaveToken");
//! assert_eq!(task.describe(), "set [device:token:d1]");
//! # Ok::<(), redis_retry_runtime::TaskError>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod apply;
pub use redis_retry_commands as commands;
pub mod connect;
pub mod connection;
pub mod consumer;
pub mod counters;
pub mod dlq;
pub mod errors;
pub mod lag;
pub mod producer;
pub mod scope;
pub mod script;
pub mod signing;
mod slots;
mod spool;
pub mod task;

pub use connect::{ConnectBuilder, DEFAULT_DEADLINE};
pub use connection::{InnerConnection, RetryConnection};
pub use consumer::{ConsumerConfig, RedisRetryConsumer, DEFAULT_GROUP};
pub use errors::{DlqReason, PublishError, SetupError, TaskError};
pub use producer::{
    global_producer, init_global_producer, log_and_retry_redis_error, log_redis_error, ProducerConfig,
    RetryProducer, Topics, DEFAULT_TOPIC,
};
pub use scope::ScopeMeta;
pub use script::Script;
pub use spool::{SpoolError, SpoolStats};
pub use task::{Arg, Mode, RedisCmd, RedisTask, TaskContext, TaskKind, DEFAULT_MAX_RETRIES};

/// What `#[redis_retry]` expands to calls; not a public API, may change in any release.
#[doc(hidden)]
pub mod __private {
    pub use crate::scope::{capture, capture_static, ScopeMeta};
    pub use crate::task::{Mode, TaskContext, DEFAULT_MAX_RETRIES};

    use std::sync::{Arc, OnceLock};

    /// The metadata of one annotated method without a `context`, built at its first call and
    /// shared by every later one (a `static` in the expansion).
    pub struct MetaCell(OnceLock<Arc<ScopeMeta>>);

    impl MetaCell {
        #[allow(clippy::new_without_default)]
        pub const fn new() -> Self {
            MetaCell(OnceLock::new())
        }

        pub fn get(&'static self, init: impl FnOnce() -> ScopeMeta) -> &'static Arc<ScopeMeta> {
            self.0.get_or_init(|| Arc::new(init()))
        }
    }

    /// Builds the scope metadata at the start of an annotated call.
    pub fn meta(
        source: &'static str,
        max_retries: u32,
        mode: Mode,
        context: Option<TaskContext>,
    ) -> ScopeMeta {
        ScopeMeta { source: source.to_string(), max_retries, mode, context: context.unwrap_or_default() }
    }
}
