// Methods std shares with redis-rs (`get`, `keys`, `len`, `append`, `exists`, `set`, `incr`)
// are not taken for Redis commands without evidence: no false "reads only" or
// "not idempotent" errors.
#![deny(warnings)]
#![allow(dead_code)]

use std::cell::Cell;
use std::collections::HashMap;
use std::path::Path;

use redis::AsyncCommands;
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

/// A metrics client with a counter method named like INCR.
struct Stats;

impl Stats {
    fn incr(&self, _name: &str) {}
}

#[redis_retry(source = "Profiles.save")]
async fn save(
    conn: &mut Conn,
    profile: &HashMap<String, String>,
    stats: &Stats,
) -> redis::RedisResult<usize> {
    // HashMap::get, HashMap::keys, Vec::append, Path::exists, Stats::incr: none is Redis.
    let name = profile.get("name").cloned().unwrap_or_default();
    let mut fields: Vec<&String> = profile.keys().collect();
    let mut extra = vec![&name];
    fields.append(&mut extra);
    if Path::new("/tmp").exists() {
        stats.incr("profiles.saved");
    }
    conn.hset_multiple::<_, _, _, ()>("profile:1", &[("name", name.as_str())]).await?;
    Ok(fields.len())
}

/// No Redis at all: nothing to complain about (writes may happen in functions it calls).
#[redis_retry]
async fn through_helpers(cache: &HashMap<String, u32>, hits: &Cell<u32>) -> Option<u32> {
    hits.set(hits.get() + 1);
    cache.get("k").copied()
}

/// `conn.get(..)` without a turbofish may be anything: with a write beside it, fine.
#[redis_retry(mode = "invalidate")]
async fn read_modify_write(conn: &mut Conn) -> redis::RedisResult<()> {
    let old: Option<String> = conn.get("user:1:name").await?;
    let new = old.map(|n| n.to_uppercase()).unwrap_or_default();
    conn.set("user:1:name", new).await
}

fn main() {}
