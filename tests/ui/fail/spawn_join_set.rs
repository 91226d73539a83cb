// A write in a `JoinSet::spawn`.
use redis::AsyncCommands;
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

#[redis_retry]
async fn save_all(conn: &Conn) {
    let mut set = tokio::task::JoinSet::new();
    for key in ["a", "b"] {
        let mut conn = conn.clone();
        set.spawn(async move { conn.del::<_, ()>(key).await });
    }
    while set.join_next().await.is_some() {}
}

fn main() {}
