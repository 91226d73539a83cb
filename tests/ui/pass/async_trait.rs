// Under `#[async_trait]`, which expands first and hands over a `fn` returning
// `Box::pin(async move { .. })`.
#![deny(warnings)]
#![allow(dead_code)]

use async_trait::async_trait;
use redis::AsyncCommands;
use redis_retry::{redis_retry, RetryConnection, TaskContext};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

#[async_trait]
trait SessionStore {
    fn conn(&self) -> Conn;

    async fn open(&self, user: &str, session: String, ctx: &TaskContext) -> redis::RedisResult<()>;

    #[redis_retry(source = "SessionStore.close")]
    async fn close(&self, user: &str) -> redis::RedisResult<()> {
        self.conn().del(format!("session:{user}")).await
    }
}

struct Sessions {
    conn: Conn,
}

#[async_trait]
impl SessionStore for Sessions {
    fn conn(&self) -> Conn {
        self.conn.clone()
    }

    #[redis_retry(source = "Sessions.open", context = ctx, max_retries = 7)]
    async fn open(&self, user: &str, session: String, ctx: &TaskContext) -> redis::RedisResult<()> {
        let mut conn = self.conn();
        conn.hset(format!("session:{user}"), "id", session).await
    }
}

#[async_trait(?Send)]
trait Local {
    async fn touch(&mut self, key: &str) -> Result<(), redis::RedisError>;
}

#[async_trait(?Send)]
impl Local for Sessions {
    #[redis_retry]
    async fn touch(&mut self, key: &str) -> Result<(), redis::RedisError> {
        self.conn.expire::<_, ()>(key, 60).await?;
        Ok(())
    }
}

fn main() {}
