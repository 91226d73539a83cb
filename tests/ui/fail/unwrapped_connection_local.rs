// A write through a connection made in the function and not wrapped.
use redis::AsyncCommands;
use redis_retry::redis_retry;

#[redis_retry]
async fn delete(client: &redis::Client) -> redis::RedisResult<()> {
    let mut conn = client.get_connection_manager().await?;
    conn.del("user:1").await
}

fn main() {}
