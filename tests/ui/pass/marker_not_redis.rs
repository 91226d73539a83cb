// A type of the user's whose `keys` looks like redis-rs's in every way: the marker leaves it out.
#![deny(warnings)]
#![allow(dead_code)]

use redis_retry::redis_retry;

struct Store;

impl Store {
    async fn keys(&self, prefix: &str) -> Result<Vec<String>, std::io::Error> {
        Ok(vec![prefix.to_string()])
    }
}

#[redis_retry]
async fn list(store: &Store) -> Result<usize, std::io::Error> {
    #[redis_retry::not_redis]
    let keys: Vec<String> = store.keys("user:").await?;
    Ok(keys.len())
}

fn main() {}
