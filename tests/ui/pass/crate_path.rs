// `crate = "..."` when redis-retry is reached through a re-export.
#![deny(warnings)]
#![allow(dead_code)]

mod platform {
    pub use ::redis_retry as cache_retry;
}

use platform::cache_retry::{redis_retry, RetryConnection};
use redis::AsyncCommands;

#[redis_retry(crate = "crate::platform::cache_retry", source = "Repo.save")]
async fn save(conn: &mut RetryConnection<redis::aio::ConnectionManager>) -> redis::RedisResult<()> {
    conn.set("k", "v").await
}

#[redis_retry(crate = "::redis_retry")]
async fn absolute(conn: &mut RetryConnection<redis::aio::ConnectionManager>) -> redis::RedisResult<()> {
    conn.del("k").await
}

fn main() {}
