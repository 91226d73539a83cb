// A read in a `tokio::select!` arm: the arms are scanned.
use redis::AsyncCommands;
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

#[redis_retry]
async fn first_ready(conn: &mut Conn) -> redis::RedisResult<Option<String>> {
    tokio::select! {
        value = conn.hget::<_, _, Option<String>>("user:1", "name") => value,
        _ = tokio::time::sleep(std::time::Duration::from_millis(50)) => Ok(None),
    }
}

fn main() {}
