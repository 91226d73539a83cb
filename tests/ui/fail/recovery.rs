// A wrong option leaves the function in place: callers still type-check, and only the option
// is reported.
use redis::AsyncCommands;
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

#[redis_retry(mode = "nope")]
async fn delete(conn: &mut Conn) -> redis::RedisResult<()> {
    conn.del("user:1").await
}

async fn caller(conn: &mut Conn) -> redis::RedisResult<()> {
    delete(conn).await
}

fn main() {
    let _ = caller;
}
