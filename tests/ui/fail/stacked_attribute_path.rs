// The second attribute written by its path.
use redis::AsyncCommands;
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

#[redis_retry]
#[redis_retry::redis_retry(mode = "invalidate")]
async fn delete(conn: &mut Conn) -> redis::RedisResult<()> {
    conn.del("user:1").await
}

fn main() {}
