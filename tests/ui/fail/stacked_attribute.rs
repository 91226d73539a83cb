// Two #[redis_retry] on one function: the inner scope would silently win.
use redis::AsyncCommands;
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

#[redis_retry(source = "Repo.outer")]
#[redis_retry(source = "Repo.inner", max_retries = 5)]
async fn delete(conn: &mut Conn) -> redis::RedisResult<()> {
    conn.del("user:1").await
}

fn main() {}
