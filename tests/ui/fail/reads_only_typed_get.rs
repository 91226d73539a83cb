// The most common read: `conn.get(key)` without a turbofish, its result typed by a `let`.
use redis::AsyncCommands;
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

#[redis_retry]
async fn user_name(conn: &mut Conn, uuid: &str) -> redis::RedisResult<Option<String>> {
    let name: Option<String> = conn.get(format!("user:name:{uuid}")).await?;
    Ok(name)
}

fn main() {}
