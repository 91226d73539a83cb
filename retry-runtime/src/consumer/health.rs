//! What a consumer reports about itself, for a health endpoint.

use std::sync::atomic::{AtomicBool, Ordering};

/// Whether a consumer runs and reached Redis at its last attempt, updated as it runs; read it
/// through [`RedisRetryConsumer::health`](super::RedisRetryConsumer::health) to serve a health
/// check (the `redis-retry` binary's `/health`).
#[derive(Debug)]
pub struct Health {
    running: AtomicBool,
    redis_reachable: AtomicBool,
}

impl Default for Health {
    fn default() -> Self {
        Health { running: AtomicBool::new(false), redis_reachable: AtomicBool::new(true) }
    }
}

impl Health {
    pub(crate) fn set_running(&self, yes: bool) {
        self.running.store(yes, Ordering::Relaxed);
    }

    pub(crate) fn set_redis_reachable(&self, yes: bool) {
        self.redis_reachable.store(yes, Ordering::Relaxed);
    }

    /// Whether the consumer is running.
    #[must_use]
    pub fn running(&self) -> bool {
        self.running.load(Ordering::Relaxed)
    }

    /// Whether Redis was reachable at the last attempt.
    #[must_use]
    pub fn redis_reachable(&self) -> bool {
        self.redis_reachable.load(Ordering::Relaxed)
    }
}
