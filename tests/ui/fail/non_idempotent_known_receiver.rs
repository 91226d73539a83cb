// `decr` on a known connection, its result passed on: the receiver tells.
use redis::AsyncCommands;
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

fn remaining(n: i64) -> i64 {
    n
}

#[redis_retry]
async fn take_one(conn: &mut RetryConnection<redis::aio::MultiplexedConnection>) -> redis::RedisResult<i64> {
    Ok(remaining(conn.decr("stock", 1).await?))
}

fn main() {}
