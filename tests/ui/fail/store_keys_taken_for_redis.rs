// pass/marker_not_redis without the marker: the scan cannot tell it from redis-rs's `keys`, and says how to mark it.
use redis_retry::redis_retry;

struct Store;

impl Store {
    async fn keys(&self, prefix: &str) -> Result<Vec<String>, std::io::Error> {
        Ok(vec![prefix.to_string()])
    }
}

#[redis_retry]
async fn list(store: &Store) -> Result<usize, std::io::Error> {
    let keys: Vec<String> = store.keys("user:").await?;
    Ok(keys.len())
}

fn main() {}
