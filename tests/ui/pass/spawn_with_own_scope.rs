// A spawned future that enters a capture scope of its own is fine.
#![deny(warnings)]
#![allow(dead_code)]

use redis::AsyncCommands;
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

#[redis_retry]
async fn save_later(conn: &Conn) {
    let mut conn = conn.clone();
    let meta = redis_retry::ScopeMeta::new("Repo.save_later");
    tokio::spawn(redis_retry::scope::capture(meta, async move {
        conn.set::<_, _, ()>("user:1", "v").await
    }));
}

fn main() {}
