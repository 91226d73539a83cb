// An empty source says nothing about where a task came from.
use redis::AsyncCommands;
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

#[redis_retry(source = "")]
async fn delete(conn: &mut Conn) -> redis::RedisResult<()> {
    conn.del("user:1").await
}

fn main() {}
