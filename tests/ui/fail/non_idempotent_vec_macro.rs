// A non-idempotent write in a `vec!` argument.
use redis::AsyncCommands;
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

#[redis_retry]
async fn counts(conn: &mut Conn) -> redis::RedisResult<Vec<i64>> {
    Ok(vec![conn.hincr::<_, _, _, i64>("stats", "hits", 1).await?])
}

fn main() {}
