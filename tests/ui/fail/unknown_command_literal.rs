// A module command the table does not know (`JSON.SET`): never captured.
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

#[redis_retry]
async fn save_doc(conn: &mut Conn) -> redis::RedisResult<()> {
    redis::cmd("JSON.SET").arg("doc:1").arg("$").arg("{}").exec_async(conn).await
}

fn main() {}
