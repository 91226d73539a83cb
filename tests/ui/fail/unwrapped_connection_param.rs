// A write through a parameter of a redis-rs connection type: redis-retry never sees it fail.
use redis::AsyncCommands;
use redis_retry::redis_retry;

#[redis_retry]
async fn delete(conn: &mut redis::aio::MultiplexedConnection) -> redis::RedisResult<()> {
    conn.del("user:1").await
}

fn main() {}
