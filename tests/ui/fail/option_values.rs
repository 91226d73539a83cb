// Values of the wrong kind: every one is reported, each at its value.
use redis::AsyncCommands;
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

#[redis_retry(source = UserRepository, max_retries = "3", mode = replay, crate = "not a path", read_path = true)]
async fn delete(conn: &mut Conn) -> redis::RedisResult<()> {
    conn.del("user:1").await
}

fn main() {}
