// `SORT .. STORE` built step by step writes, so the function is not reads-only.
#![deny(warnings)]
#![allow(dead_code)]

use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

#[redis_retry]
async fn sort_into(conn: &mut Conn) -> redis::RedisResult<usize> {
    let mut sort = redis::cmd("SORT");
    sort.arg("ids");
    sort.arg("STORE").arg("ids:sorted");
    sort.query_async(conn).await
}

fn main() {}
