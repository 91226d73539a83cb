// `xread_options`, missing from the method map before: with a group it is XREADGROUP.
use redis::AsyncCommands;
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

use redis::streams::{StreamReadOptions, StreamReadReply};

#[redis_retry]
async fn take(conn: &mut Conn) -> redis::RedisResult<StreamReadReply> {
    let options = StreamReadOptions::default().group("workers", "w1").count(10);
    conn.xread_options(&["jobs"], &[">"], &options).await
}

fn main() {}
