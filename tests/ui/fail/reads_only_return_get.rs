// A read in a `return`: typed by the signature too.
use redis::AsyncCommands;
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

#[redis_retry]
async fn token(conn: &mut Conn, id: &str, cached: bool) -> redis::RedisResult<Option<String>> {
    if cached {
        return conn.get(format!("token:{id}")).await;
    }
    Ok(None)
}

fn main() {}
