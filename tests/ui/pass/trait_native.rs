// Native `async fn` in traits: the method of an `impl`, and a default method of the trait.
#![deny(warnings)]
#![allow(dead_code)]

use redis::AsyncCommands;
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

trait TokenStore {
    fn conn(&self) -> Conn;

    async fn save(&self, device: &str, token: &str) -> redis::RedisResult<()>;

    #[redis_retry(source = "TokenStore.forget")]
    async fn forget(&self, device: &str) -> redis::RedisResult<()> {
        self.conn().del(format!("device:token:{device}")).await
    }
}

struct Devices {
    conn: Conn,
}

impl TokenStore for Devices {
    fn conn(&self) -> Conn {
        self.conn.clone()
    }

    #[redis_retry(source = "Devices.save", mode = "invalidate")]
    async fn save(&self, device: &str, token: &str) -> redis::RedisResult<()> {
        self.conn().set_ex(format!("device:token:{device}"), token, 300).await
    }
}

fn main() {}
