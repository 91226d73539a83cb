// `read_path` needs `mode = "log"`.
use redis::AsyncCommands;
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

#[redis_retry(read_path)]
async fn get_user(conn: &mut Conn) -> redis::RedisResult<Option<String>> {
    let cached: Option<String> = conn.get("user:1").await?;
    if cached.is_none() {
        let _: () = conn.set_ex("user:1", "from-db", 300).await?;
    }
    Ok(cached)
}

fn main() {}
