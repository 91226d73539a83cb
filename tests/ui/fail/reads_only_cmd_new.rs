// `redis::Cmd::new()` named by its first `arg`.
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

#[redis_retry]
async fn raw_get(conn: &mut Conn) -> redis::RedisResult<Option<String>> {
    redis::Cmd::new().arg("GET").arg("user:1").query_async(conn).await
}

fn main() {}
