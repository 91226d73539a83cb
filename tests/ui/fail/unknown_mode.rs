// A mode that does not exist: the message lists the modes.
use redis::AsyncCommands;
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

#[redis_retry(mode = "retry")]
async fn delete(conn: &mut Conn) -> redis::RedisResult<()> {
    conn.del("user:1").await
}

fn main() {}
