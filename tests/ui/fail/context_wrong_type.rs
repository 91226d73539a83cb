// A `context` that is no TaskContext is reported at the expression.
use redis::AsyncCommands;
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

#[redis_retry(context = request_id)]
async fn delete(conn: &mut Conn, request_id: u64) -> redis::RedisResult<()> {
    conn.del("user:1").await
}

fn main() {}
