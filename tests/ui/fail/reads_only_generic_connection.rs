// A generic connection bounded by `AsyncCommands`: every call on it is Redis.
use redis::AsyncCommands;
use redis_retry::redis_retry;

fn report(found: bool) -> bool {
    found
}

#[redis_retry]
async fn has_session<C: AsyncCommands>(conn: &mut C, id: &str) -> redis::RedisResult<bool> {
    Ok(report(conn.exists(format!("session:{id}")).await?))
}

fn main() {}
