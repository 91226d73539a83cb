// Writes typed by `let _: () =`: seen as writes without a turbofish.
#![deny(warnings)]
#![allow(dead_code)]

use redis::AsyncCommands;
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

#[redis_retry]
async fn save(conn: &mut Conn) -> redis::RedisResult<()> {
    let _old: Option<String> = conn.get("user:1").await?;
    let _: () = conn.set("user:1", "v").await?;
    let _: bool = conn.expire("user:1", 60).await?;
    Ok(())
}

fn main() {}
