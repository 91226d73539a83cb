// A read, then a write in a helper the scan cannot see into, marked as a write.
#![deny(warnings)]
#![allow(dead_code)]

use redis::AsyncCommands;
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

async fn save(conn: &mut Conn, name: &str) -> redis::RedisResult<()> {
    conn.set("user:1:name", name).await
}

#[redis_retry]
async fn rename(conn: &mut Conn) -> redis::RedisResult<()> {
    let name: Option<String> = conn.get("user:1:name").await?;
    #[redis_retry::writes]
    save(conn, &name.unwrap_or_default().to_uppercase()).await?;
    Ok(())
}

fn main() {}
