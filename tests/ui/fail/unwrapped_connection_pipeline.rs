// A pipeline sent through an unwrapped connection.
use redis_retry::redis_retry;

#[redis_retry]
async fn delete(conn: &mut redis::aio::ConnectionManager) -> redis::RedisResult<()> {
    redis::pipe().del("user:1").del("user:2").exec_async(conn).await
}

fn main() {}
