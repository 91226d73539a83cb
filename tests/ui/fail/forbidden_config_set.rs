// CONFIG SET is forbidden.
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

#[redis_retry]
async fn tune(conn: &mut Conn) -> redis::RedisResult<()> {
    redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg("1gb").exec_async(conn).await
}

fn main() {}
