// `redis::Cmd::new().arg("SET")`: a write named by its first `arg`.
#![deny(warnings)]
#![allow(dead_code)]

use redis::AsyncCommands;
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

#[redis_retry]
async fn copy_name(conn: &mut Conn) -> redis::RedisResult<()> {
    let name: Option<String> = conn.get("user:1:name").await?;
    redis::Cmd::new().arg("SET").arg("user:2:name").arg(name.unwrap_or_default()).exec_async(conn).await
}

fn main() {}
