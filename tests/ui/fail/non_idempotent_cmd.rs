// A non-idempotent command named in `redis::cmd`.
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

#[redis_retry]
async fn push(conn: &mut Conn) -> redis::RedisResult<()> {
    redis::cmd("RPUSH").arg("events").arg("e1").exec_async(conn).await
}

fn main() {}
