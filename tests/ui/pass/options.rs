// Every option, on free functions; `context` in each form it takes.
#![deny(warnings)]
#![allow(dead_code)]

use redis::AsyncCommands;
use redis_retry::{redis_retry, RetryConnection, TaskContext};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

/// A request's metadata in the application's own type.
struct RequestCtx {
    trace: String,
}

impl From<&RequestCtx> for TaskContext {
    fn from(ctx: &RequestCtx) -> Self {
        TaskContext::new().trace_id(ctx.trace.clone())
    }
}

/// Doc comments, visibility and other attributes stay.
#[redis_retry(source = "DeviceRepository.SaveToken", max_retries = 5, mode = "replay", context = ctx)]
#[inline]
pub async fn save_token(
    conn: &mut Conn,
    ctx: &TaskContext,
    device: &str,
    token: &str,
) -> redis::RedisResult<()> {
    conn.set_ex(format!("device:token:{device}"), token, 300).await
}

#[redis_retry]
pub(crate) async fn all_defaults(mut conn: Conn) -> Result<(), Box<dyn std::error::Error>> {
    conn.del::<_, ()>("user:info:1").await?;
    Ok(())
}

#[redis_retry(mode = "invalidate", context = TaskContext::new().trace_id("t-1").user_uuid("u-1"))]
async fn owned_context(conn: &mut Conn) -> redis::RedisResult<()> {
    conn.hset("user:1", "name", "alice").await
}

#[redis_retry(context = request, source = "Repo.custom_context", max_retries = 100)]
async fn custom_context(conn: &mut Conn, request: &RequestCtx) -> redis::RedisResult<()> {
    conn.sadd("friends:1", "user2").await
}

#[redis_retry(context = &ctx, max_retries = 1, allow_non_idempotent)]
async fn by_value_context(conn: &mut Conn, ctx: TaskContext) -> redis::RedisResult<i64> {
    let n = conn.incr("visits", 1).await?;
    drop(ctx);
    Ok(n)
}

#[redis_retry(mode = "log", read_path)]
async fn trailing_comma(conn: &mut Conn) -> redis::RedisResult<()> {
    conn.set("cache:1", "v").await
}

fn main() {}
