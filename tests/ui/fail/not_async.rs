// A plain `fn` has no `.await` to run in a capture scope.
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

#[redis_retry]
fn delete(conn: &mut Conn) -> redis::RedisResult<()> {
    let _ = conn;
    Ok(())
}

fn main() {}
