// `redis_retry::Script`, the same API, which records the body for replay.
#![deny(warnings)]
#![allow(dead_code)]

use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

#[redis_retry]
async fn reserve(conn: &mut Conn) -> redis::RedisResult<i64> {
    let script = redis_retry::Script::new("return redis.call('DECRBY', KEYS[1], 1)");
    script.key("stock").invoke_async(conn).await
}

fn main() {}
