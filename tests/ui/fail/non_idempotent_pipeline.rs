// A non-idempotent command in a pipeline, shared name (`incr`) included: on a pipeline it is Redis.
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

#[redis_retry(mode = "replay")]
async fn count(conn: &mut Conn) -> redis::RedisResult<()> {
    redis::pipe().set("last_seen", 1).ignore().incr("visits", 1).ignore().exec_async(conn).await
}

fn main() {}
