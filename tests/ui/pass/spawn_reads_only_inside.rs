// Reads in a spawned task are nothing to capture; the write outside is in the scope.
#![deny(warnings)]
#![allow(dead_code)]

use redis::AsyncCommands;
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

#[redis_retry]
async fn save(conn: &Conn) -> redis::RedisResult<()> {
    let mut reader = conn.clone();
    let peek = tokio::spawn(async move { reader.get::<_, Option<String>>("user:1").await });
    let _ = peek.await;
    conn.clone().set("user:1", "v").await
}

fn main() {}
