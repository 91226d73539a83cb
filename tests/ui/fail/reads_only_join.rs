// Reads in `tokio::try_join!` only.
use redis::AsyncCommands;
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

#[redis_retry]
async fn both(a: &mut Conn, b: &mut Conn) -> redis::RedisResult<(Vec<String>, i64)> {
    tokio::try_join!(a.smembers::<_, Vec<String>>("s"), b.llen::<_, i64>("l"))
}

fn main() {}
