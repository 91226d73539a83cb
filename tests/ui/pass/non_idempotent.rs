// Non-idempotent writes are fine with an explicit opt-in, or in a mode that never re-runs them.
#![deny(warnings)]
#![allow(dead_code)]

use redis::AsyncCommands;
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

#[redis_retry(allow_non_idempotent)]
async fn count_visit(conn: &mut Conn, page: &str) -> redis::RedisResult<i64> {
    conn.incr(format!("visits:{page}"), 1).await
}

#[redis_retry(mode = "replay", allow_non_idempotent)]
async fn push_event(conn: &mut Conn, event: &str) -> redis::RedisResult<()> {
    redis::cmd("RPUSH").arg("events").arg(event).exec_async(conn).await
}

#[redis_retry(mode = "invalidate")]
async fn append_feed(conn: &mut Conn, item: &str) -> redis::RedisResult<()> {
    redis::pipe().lpush("feed:1", item).ignore().ltrim("feed:1", 0, 99).ignore().exec_async(conn).await
}

#[redis_retry(mode = "log")]
async fn bump_score(conn: &mut Conn) -> redis::RedisResult<f64> {
    conn.zincr("board", "ann", 1).await
}

fn main() {}
