// A trait method without a body has nothing to run.
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

trait Repository {
    #[redis_retry(source = "Repository.delete")]
    async fn delete(&self, conn: &mut Conn) -> redis::RedisResult<()>;
}

fn main() {}
