// A read as the tail of a function returning a Redis result: the signature types it.
use redis::AsyncCommands;
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

#[redis_retry]
async fn user_name(conn: &mut Conn, uuid: &str) -> redis::RedisResult<Option<String>> {
    conn.get(format!("user:name:{uuid}")).await
}

fn main() {}
