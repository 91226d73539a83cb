// `exists` on a parameter of a connection type: the receiver tells, whatever types the result.
use redis::AsyncCommands;
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

fn report(found: bool) -> bool {
    found
}

#[redis_retry]
async fn has_session(conn: &mut RetryConnection<redis::aio::ConnectionManager>, id: &str) -> redis::RedisResult<bool> {
    Ok(report(conn.exists(format!("session:{id}")).await?))
}

fn main() {}
