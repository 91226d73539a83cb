// Reads through an unwrapped connection are nothing to capture; the write goes through the
// wrapper.
#![deny(warnings)]
#![allow(dead_code)]

use redis::AsyncCommands;
use redis_retry::{redis_retry, RetryConnection};

#[redis_retry]
async fn copy(
    replica: &mut redis::aio::MultiplexedConnection,
    primary: &mut RetryConnection<redis::aio::MultiplexedConnection>,
) -> redis::RedisResult<()> {
    let value: Option<String> = replica.get("user:1").await?;
    primary.set("user:1", value.unwrap_or_default()).await
}

fn main() {}
