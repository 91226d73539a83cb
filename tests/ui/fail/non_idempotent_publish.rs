// `publish` without a turbofish: PUBLISH delivers twice if replayed.
use redis::AsyncCommands;
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

#[redis_retry]
async fn announce(conn: &mut Conn, message: &str) -> redis::RedisResult<()> {
    let _receivers: usize = conn.publish("news", message).await?;
    Ok(())
}

fn main() {}
