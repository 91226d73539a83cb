// Writes through `redis::cmd`, pipelines (inline or in a local), transactions and scripts.
#![deny(warnings)]
#![allow(dead_code)]

use redis::AsyncCommands;
use redis_retry::{redis_retry, RetryConnection, Script};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

#[redis_retry(source = "UserRepository.DeleteUserCacheAndRelation")]
async fn delete_all(conn: &mut Conn, uuid: &str) -> redis::RedisResult<()> {
    let mut pipe = redis::pipe();
    for kind in ["info", "relation", "session"] {
        pipe.del(format!("user:{kind}:{uuid}")).ignore();
    }
    pipe.query_async(conn).await
}

#[redis_retry]
async fn raw(conn: &mut Conn) -> redis::RedisResult<()> {
    redis::cmd("SET").arg("k").arg("v").arg("EX").arg(60).exec_async(conn).await
}

#[redis_retry]
async fn transaction(conn: &mut Conn) -> redis::RedisResult<(i64,)> {
    redis::pipe().atomic().get("a").hset("h", "f", "v").ignore().query_async(conn).await
}

#[redis_retry]
async fn scripted(conn: &mut Conn) -> redis::RedisResult<i64> {
    let script = Script::new("return redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])");
    script.key("h").arg("f").arg("v").invoke_async(conn).await
}

/// A read before a write (read-modify-write) is a write path.
#[redis_retry]
async fn move_member(conn: &mut Conn) -> redis::RedisResult<()> {
    let members: Vec<String> = conn.smembers("from").await?;
    conn.sadd("to", members).await
}

fn main() {}
