// A command the table lacks inside a pipeline.
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

#[redis_retry]
async fn save_doc(conn: &mut Conn) -> redis::RedisResult<()> {
    redis::pipe().set("doc:1:seen", 1).cmd("JSON.SET").arg("doc:1").arg("$").arg("{}").exec_async(conn).await
}

fn main() {}
