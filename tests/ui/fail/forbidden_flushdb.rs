// FLUSHDB is forbidden: never captured nor replayed.
use redis::AsyncCommands;
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

#[redis_retry]
async fn reset(conn: &mut Conn) -> redis::RedisResult<()> {
    conn.set::<_, _, ()>("resets", 1).await?;
    redis::cmd("FLUSHDB").exec_async(conn).await
}

fn main() {}
