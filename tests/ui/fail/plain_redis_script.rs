// A plain `redis::Script`: EVALSHA of a body the runtime never saw cannot be replayed.
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

#[redis_retry]
async fn reserve(conn: &mut Conn) -> redis::RedisResult<i64> {
    let script = redis::Script::new("return redis.call('DECRBY', KEYS[1], 1)");
    script.key("stock").invoke_async(conn).await
}

fn main() {}
