// `invoke_script` (EVALSHA of a redis_retry::Script) after a read: a script may write.
#![deny(warnings)]
#![allow(dead_code)]

use redis::AsyncCommands;
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

#[redis_retry]
async fn reserve(conn: &mut Conn) -> redis::RedisResult<i64> {
    let _stock: Option<i64> = conn.get("stock").await?;
    let script = redis_retry::Script::new("return redis.call('DECRBY', KEYS[1], 1)");
    let mut invocation = script.prepare_invoke();
    invocation.key("stock");
    conn.invoke_script(&invocation).await
}

fn main() {}
