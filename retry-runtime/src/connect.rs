//! The production recipe for a wrapped connection: a redis-rs `ConnectionManager` whose failed
//! or stuck command returns to the caller within a deadline, whether Redis refuses
//! connections or stops answering.
//!
//! redis-rs's defaults suit a client that must not give up: a broken `ConnectionManager`
//! reconnects with six retries and exponential back-off, and every request waits for that
//! reconnect, so during an outage each call stalls for seconds. A service that queues its
//! failed writes wants the opposite: fail within the deadline and let the retry queue carry
//! the write.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ConnectionInfo, ErrorKind, IntoConnectionInfo, RedisError, RedisResult};

use crate::connection::RetryConnection;
use crate::producer::RetryProducer;

/// The deadline [`ConnectBuilder`] gives every command unless told otherwise: redis-rs's own
/// reply time-out, so a blackholed Redis costs a caller no more than it would without us.
pub const DEFAULT_DEADLINE: Duration = Duration::from_millis(500);

/// Builds a [`RetryConnection`] over a `ConnectionManager` tuned to fail fast; start with
/// [`RetryConnection::builder`].
///
/// ```no_run
/// # async fn demo() -> redis::RedisResult<()> {
/// use std::time::Duration;
/// use redis_retry_runtime::RetryConnection;
/// let redis = RetryConnection::builder("redis://cache:6379/0")
///     .deadline(Duration::from_millis(500))
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[must_use]
pub struct ConnectBuilder {
    info: RedisResult<ConnectionInfo>,
    deadline: Duration,
    producer: Option<RetryProducer>,
}

impl RetryConnection<ConnectionManager> {
    /// A builder for the production connection to `redis` (a URL such as
    /// `redis://:password@host:6379/0`, `rediss://` for TLS, or a `ConnectionInfo`).
    pub fn builder(redis: impl IntoConnectionInfo) -> ConnectBuilder {
        ConnectBuilder { info: redis.into_connection_info(), deadline: DEFAULT_DEADLINE, producer: None }
    }
}

impl ConnectBuilder {
    /// How long a command may take before the caller gets a time-out error (default 500 ms). It
    /// bounds connecting, waiting for a reconnect, and the reply alike.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Publishes captured writes through `producer` instead of the global one.
    pub fn producer(mut self, producer: RetryProducer) -> Self {
        self.producer = Some(producer);
        self
    }

    /// Connects, and returns the wrapped connection.
    ///
    /// # Errors
    ///
    /// A malformed URL, a zero deadline, or a Redis that cannot be reached at start-up (one
    /// quick retry, each attempt bounded by the deadline).
    pub async fn connect(self) -> RedisResult<RetryConnection<ConnectionManager>> {
        if self.deadline.is_zero() {
            return Err(RedisError::from((ErrorKind::InvalidClientConfig, "deadline must be above zero")));
        }
        let client = redis::Client::open(self.info?)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.deadline))
            .set_response_timeout(Some(self.deadline))
            // One quick retry: a reconnect is awaited by every request that comes meanwhile.
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(100));
        let manager = client.get_connection_manager_with_config(config).await?;
        let connection = RetryConnection::new(manager).with_deadline(self.deadline);
        Ok(match self.producer {
            Some(producer) => connection.with_producer(producer),
            None => connection,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_zero_deadline_or_a_bad_url_is_an_error_not_a_panic() {
        let zero = RetryConnection::builder("redis://127.0.0.1:1/").deadline(Duration::ZERO).connect().await;
        assert_eq!(zero.err().map(|e| e.kind()), Some(ErrorKind::InvalidClientConfig));
        let bad = RetryConnection::builder("not a url").connect().await;
        assert!(bad.is_err());
    }

    #[tokio::test]
    async fn an_unreachable_redis_is_an_error_at_start() {
        // Nothing listens on port 1.
        let result = RetryConnection::builder("redis://127.0.0.1:1/")
            .deadline(Duration::from_millis(200))
            .connect()
            .await;
        assert!(result.is_err_and(|e| e.is_connection_refusal() || e.is_io_error()));
    }
}
