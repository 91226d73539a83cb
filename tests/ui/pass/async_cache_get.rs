// An async cache's `get` typed by a `let` without `?`: not a Redis result, not a read.
#![deny(warnings)]
#![allow(dead_code)]

use redis_retry::redis_retry;

struct Cache;

impl Cache {
    async fn get(&self, _key: &str) -> Option<String> {
        None
    }
}

#[redis_retry]
async fn cached(cache: &Cache) -> Option<String> {
    let value: Option<String> = cache.get("k").await;
    value
}

fn main() {}
