// A write in `tokio::spawn`: the task-local scope does not follow it.
use redis::AsyncCommands;
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

#[redis_retry]
async fn save_later(conn: &Conn) {
    let mut conn = conn.clone();
    tokio::spawn(async move { conn.set::<_, _, ()>("user:1", "v").await });
}

fn main() {}
