// A non-idempotent write in a `select!` arm.
use redis::AsyncCommands;
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

#[redis_retry]
async fn count(conn: &mut Conn) -> redis::RedisResult<i64> {
    tokio::select! {
        n = conn.incr::<_, _, i64>("hits", 1) => n,
        _ = tokio::time::sleep(std::time::Duration::from_millis(50)) => Ok(0),
    }
}

fn main() {}
