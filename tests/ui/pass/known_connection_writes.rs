// Calls on known connections without turbofish: reads and writes both seen, accepted.
#![deny(warnings)]
#![allow(dead_code)]

use redis::AsyncCommands;
use redis_retry::redis_retry;

#[redis_retry]
async fn touch<C: AsyncCommands>(conn: &mut C) -> redis::RedisResult<()> {
    let old: Option<String> = conn.get("user:1").await?;
    conn.set("user:1", old.unwrap_or_default()).await
}

fn main() {}
