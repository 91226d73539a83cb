// Reads through `redis::cmd` count as reads too.
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

#[redis_retry]
async fn get_info(conn: &mut Conn) -> redis::RedisResult<Vec<String>> {
    redis::cmd("HGETALL").arg("user:info:1").query_async(conn).await
}

fn main() {}
