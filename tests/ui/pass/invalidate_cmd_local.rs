// `ZADD .. INCR` built step by step is fine in `mode = "invalidate"`.
#![deny(warnings)]
#![allow(dead_code)]

use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

#[redis_retry(mode = "invalidate")]
async fn bump(conn: &mut Conn, member: &str) -> redis::RedisResult<f64> {
    let mut zadd = redis::cmd("ZADD");
    zadd.arg("board").arg("INCR").arg(1).arg(member);
    zadd.query_async(conn).await
}

fn main() {}
