// `mode = "log"` alone does not make a reads-only method a read path: `read_path` says so.
use redis::AsyncCommands;
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

#[redis_retry(mode = "log")]
async fn get_ttl(conn: &mut Conn) -> redis::RedisResult<i64> {
    conn.ttl("session:1").await
}

fn main() {}
