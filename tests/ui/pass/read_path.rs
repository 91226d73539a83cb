// A read path that backfills the cache (seed §1.1) is kept with `mode = "log", read_path`:
// a failed backfill is only logged, never queued.
#![deny(warnings)]
#![allow(dead_code)]

use std::collections::HashMap;

use redis::AsyncCommands;
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

async fn load_from_database(_uuid: &str) -> HashMap<String, String> {
    HashMap::new()
}

#[redis_retry(source = "UserRepository.GetUserInfo", mode = "log", read_path)]
async fn get_user_info(conn: &mut Conn, uuid: &str) -> redis::RedisResult<HashMap<String, String>> {
    let key = format!("user:info:{uuid}");
    let cached: HashMap<String, String> = conn.hgetall(&key).await?;
    if !cached.is_empty() {
        return Ok(cached);
    }
    let user = load_from_database(uuid).await;
    let fields: Vec<(&String, &String)> = user.iter().collect();
    // Backfill: fire and forget.
    let _: redis::RedisResult<()> = redis::pipe()
        .hset_multiple(&key, &fields)
        .ignore()
        .expire(&key, 300)
        .ignore()
        .query_async(conn)
        .await;
    Ok(user)
}

/// Reads only, backfilling through a helper the attribute cannot see: allowed on a read path.
#[redis_retry(read_path, mode = "log")]
async fn get_friends(conn: &mut Conn, uuid: &str) -> redis::RedisResult<Vec<String>> {
    let friends: Vec<String> = conn.smembers(format!("friends:{uuid}")).await?;
    if friends.is_empty() {
        backfill_friends(conn, uuid).await;
    }
    Ok(friends)
}

async fn backfill_friends(conn: &mut Conn, uuid: &str) {
    let _: redis::RedisResult<()> = conn.sadd(format!("friends:{uuid}"), "nobody").await;
}

fn main() {}
