// pass/marker_writes without the marker: refused, and the help names the marker, not `read_path`.
use redis::AsyncCommands;
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

async fn save(conn: &mut Conn, name: &str) -> redis::RedisResult<()> {
    conn.set("user:1:name", name).await
}

#[redis_retry]
async fn rename(conn: &mut Conn) -> redis::RedisResult<()> {
    let name: Option<String> = conn.get("user:1:name").await?;
    save(conn, &name.unwrap_or_default().to_uppercase()).await?;
    Ok(())
}

fn main() {}
