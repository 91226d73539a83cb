// A redis-rs method whose command the table lacks (`mset_ex` sends MSETEX).
use redis::AsyncCommands;
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

#[redis_retry]
async fn save_all(conn: &mut Conn) -> redis::RedisResult<bool> {
    conn.mset_ex(&[("a", "1"), ("b", "2")], redis::MSetOptions::default()).await
}

fn main() {}
