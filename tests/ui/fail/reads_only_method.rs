// A method that only reads from Redis: reads are never retried.
use redis::AsyncCommands;
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

#[redis_retry(source = "UserRepository.GetUserName")]
async fn get_user_name(conn: &mut Conn, uuid: &str) -> redis::RedisResult<Option<String>> {
    conn.get::<_, Option<String>>(format!("user:name:{uuid}")).await
}

fn main() {}
