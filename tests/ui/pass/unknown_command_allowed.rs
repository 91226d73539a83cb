// `JSON.SET` with the opt-in `allow_unknown_commands` (twin of fail/unknown_command_literal): the
// user accepts that its failures are only returned.
#![deny(warnings)]
#![allow(dead_code)]

use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

#[redis_retry(allow_unknown_commands)]
async fn save_doc(conn: &mut Conn) -> redis::RedisResult<()> {
    redis::cmd("JSON.SET").arg("doc:1").arg("$").arg("{}").exec_async(conn).await
}

fn main() {}
