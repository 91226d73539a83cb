// `flushall()`: forbidden through a redis-rs method too.
use redis::AsyncCommands;
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

#[redis_retry]
async fn reset(conn: &mut Conn) -> redis::RedisResult<()> {
    conn.flushall().await
}

fn main() {}
