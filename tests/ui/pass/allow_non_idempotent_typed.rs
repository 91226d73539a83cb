// A typed `incr` accepted with `allow_non_idempotent`.
#![deny(warnings)]
#![allow(dead_code)]

use redis::AsyncCommands;
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

#[redis_retry(allow_non_idempotent)]
async fn visit(conn: &mut Conn) -> redis::RedisResult<i64> {
    let visits: i64 = conn.incr("visits", 1).await?;
    Ok(visits)
}

fn main() {}
