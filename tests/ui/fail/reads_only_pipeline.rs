// A pipeline of reads: `get` on a pipeline is certainly Redis.
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

#[redis_retry]
async fn get_both(conn: &mut Conn) -> redis::RedisResult<(Option<String>, Vec<String>)> {
    redis::pipe().get("user:1").zrange("board", 0, -1).query_async(conn).await
}

fn main() {}
