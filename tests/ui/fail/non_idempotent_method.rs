// Non-idempotent writes in mode "replay", each reported at its call.
use redis::AsyncCommands;
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

#[redis_retry(source = "FeedRepository.Publish")]
async fn publish(conn: &mut Conn, item: &str) -> redis::RedisResult<()> {
    let _: i64 = conn.incr("feed:count", 1).await?;
    conn.lpush("feed:1", item).await
}

fn main() {}
