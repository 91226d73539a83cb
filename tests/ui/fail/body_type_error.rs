// A type error in the body is reported in the body, as without the attribute.
use redis::AsyncCommands;
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

#[redis_retry]
async fn delete(conn: &mut Conn) -> redis::RedisResult<u32> {
    let _: () = conn.del("user:1").await?;
    Ok("deleted")
}

fn main() {}
