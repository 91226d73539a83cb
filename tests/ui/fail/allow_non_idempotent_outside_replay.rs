// `allow_non_idempotent` means nothing where writes are never re-run.
use redis::AsyncCommands;
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

#[redis_retry(mode = "invalidate", allow_non_idempotent)]
async fn push(conn: &mut Conn) -> redis::RedisResult<()> {
    conn.rpush("events", "e1").await
}

fn main() {}
