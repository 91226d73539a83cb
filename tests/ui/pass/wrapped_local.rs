// A connection made in the function and wrapped there: captured, accepted.
#![deny(warnings)]
#![allow(dead_code)]

use redis::AsyncCommands;
use redis_retry::{redis_retry, RetryConnection};

#[redis_retry]
async fn delete(client: &redis::Client) -> redis::RedisResult<()> {
    let mut conn = RetryConnection::new(client.get_multiplexed_async_connection().await?);
    conn.del("user:1").await
}

fn main() {}
