// A local cloned from a field, used for one certain read: its other calls are Redis too.
use redis::AsyncCommands;
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

struct Repo {
    redis: Conn,
}

impl Repo {
    #[redis_retry]
    async fn profile(&self, uuid: &str) -> redis::RedisResult<(Vec<String>, bool)> {
        let mut redis = self.redis.clone();
        let fields = redis.hkeys(format!("user:{uuid}")).await?;
        let known = redis.exists(format!("user:{uuid}:known")).await?;
        Ok((fields, known))
    }
}

fn main() {}
