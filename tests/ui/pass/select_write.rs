// A write in a `tokio::select!` arm after a read: a write path, accepted.
#![deny(warnings)]
#![allow(dead_code)]

use redis::AsyncCommands;
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

#[redis_retry]
async fn refresh(conn: &mut Conn) -> redis::RedisResult<()> {
    let _old: Option<String> = conn.get("user:1").await?;
    tokio::select! {
        done = conn.set::<_, _, ()>("user:1", "fresh") => done,
        _ = tokio::time::sleep(std::time::Duration::from_millis(50)) => Ok(()),
    }
}

fn main() {}
