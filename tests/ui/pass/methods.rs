// Methods of every receiver kind, generic, with `impl Trait` arguments and any return type.
#![deny(warnings)]
#![allow(dead_code)]

use std::fmt::Display;

use redis::AsyncCommands;
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

#[derive(Debug)]
enum RepoError {
    Redis(redis::RedisError),
    NotFound,
}

impl From<redis::RedisError> for RepoError {
    fn from(e: redis::RedisError) -> Self {
        RepoError::Redis(e)
    }
}

struct UserRepository {
    redis: Conn,
    prefix: String,
}

impl UserRepository {
    #[redis_retry(source = "UserRepository.DeleteUserCache")]
    async fn delete_user_cache(&self, uuid: &str) -> Result<(), RepoError> {
        let mut conn = self.redis.clone();
        conn.del::<_, ()>(format!("{}:{uuid}", self.prefix)).await?;
        Ok(())
    }

    #[redis_retry]
    async fn rename(&mut self, prefix: String) -> Result<(), RepoError> {
        self.prefix = prefix;
        let _: () = self.redis.set("prefix", &self.prefix).await?;
        Ok(())
    }

    #[redis_retry]
    async fn into_parts(self) -> (Conn, String) {
        let mut conn = self.redis;
        let _: redis::RedisResult<()> = conn.expire(&self.prefix, 60).await;
        (conn, self.prefix)
    }

    #[redis_retry]
    async fn save<K, V>(&self, key: K, value: V) -> Result<(), RepoError>
    where
        K: redis::ToSingleRedisArg + Send + Sync,
        V: redis::ToSingleRedisArg + Send + Sync,
    {
        let mut conn = self.redis.clone();
        if key.to_redis_args().is_empty() {
            return Err(RepoError::NotFound);
        }
        Ok(conn.set(key, value).await?)
    }

    #[redis_retry]
    async fn tag(
        &self,
        key: impl Display,
        tags: impl IntoIterator<Item = String>,
    ) -> redis::RedisResult<usize> {
        let mut conn = self.redis.clone();
        let tags: Vec<String> = tags.into_iter().collect();
        conn.sadd::<_, _, ()>(key.to_string(), &tags).await?;
        Ok(tags.len())
    }

    #[redis_retry]
    async fn prefix_of<'a>(&'a self, fallback: &'a str) -> &'a str {
        let mut conn = self.redis.clone();
        let _: redis::RedisResult<()> = conn.hdel("h", "f").await;
        if self.prefix.is_empty() {
            fallback
        } else {
            &self.prefix
        }
    }

    #[redis_retry]
    async fn describe(&self) -> impl Display {
        let mut conn = self.redis.clone();
        let _: redis::RedisResult<()> = conn.srem("s", "m").await;
        format!("{}", self.prefix)
    }

    #[redis_retry]
    async fn boxed(&self) -> Box<dyn Display + Send> {
        let mut conn = self.redis.clone();
        let _: redis::RedisResult<()> = conn.persist("k").await;
        Box::new(1)
    }

    #[redis_retry]
    async fn nothing_returned(&self) {
        let mut conn = self.redis.clone();
        let _: redis::RedisResult<()> = conn.unlink("k").await;
    }

    #[redis_retry]
    async fn cloned(&self) -> Self {
        let mut conn = self.redis.clone();
        let _: redis::RedisResult<()> = conn.del("k").await;
        UserRepository { redis: conn, prefix: self.prefix.clone() }
    }
}

// The future stays `Send` (spawnable), as the unannotated function's would be.
fn assert_send<T: Send>(_: T) {}

fn spawnable(repo: &UserRepository) {
    assert_send(repo.delete_user_cache("1"));
    assert_send(repo.tag("k", vec![]));
}

fn main() {}
