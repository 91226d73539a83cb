// A method with no Redis at all whose own types have async `keys()` and `incr()`:
// nothing to complain about.
#![deny(warnings)]
#![allow(dead_code)]

use redis_retry::redis_retry;

struct Store;

impl Store {
    async fn keys(&self, prefix: &str) -> Vec<String> {
        vec![prefix.to_string()]
    }
    async fn incr(&self, _name: &str, by: u64) -> u64 {
        by
    }
}

#[redis_retry]
async fn audit(store: &Store) -> usize {
    let keys = store.keys("user:").await;
    let n: u64 = store.incr("audits", 1).await;
    keys.len() + n as usize
}

fn main() {}
