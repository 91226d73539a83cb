//! The `#[redis_retry]` attribute of redis-retry. Use it through the facade,
//! `redis_retry::redis_retry`; see [`macro@redis_retry`].

mod attr;
mod check;
// The attribute decides what reads and what writes from the same table the runtime captures
// and the consumer applies by.
use redis_retry_commands as commands;
mod errors;
mod expand;
mod item;
mod marker;
mod methods;
mod scan;

use proc_macro::TokenStream;

/// Runs an `async fn` inside a redis-retry capture scope: a Redis write in it that fails with a
/// transient error, through a `RetryConnection`, becomes a task on Kafka at once and is
/// re-applied later by the consumer.
///
/// ```ignore
/// use redis::AsyncCommands;
/// use redis_retry::{redis_retry, RetryConnection};
///
/// struct UserRepository {
///     redis: RetryConnection<redis::aio::ConnectionManager>,
/// }
///
/// impl UserRepository {
///     #[redis_retry(source = "UserRepository.DeleteUserCache")]
///     async fn delete_user_cache(&self, uuid: &str) -> redis::RedisResult<()> {
///         let mut conn = self.redis.clone();
///         conn.del::<_, ()>(format!("user:info:{uuid}")).await
///     }
/// }
/// ```
///
/// The function keeps its signature, visibility, attributes, documentation and return type;
/// only its body moves into the scope. It may be a free function or a method (`&self`,
/// `&mut self`, `self`), generic, with `impl Trait` arguments, in an inherent `impl`, a trait
/// `impl` with native `async fn`, or under `#[async_trait]`. With `#[tokio::test]` or
/// `#[tokio::main]` either order works.
///
/// # Options
///
/// | option | value | default |
/// |---|---|---|
/// | `source` | string literal naming the origin of the writes, e.g. `"UserRepository.DeleteUserCache"` | the module path and function name, `my_crate::repo::delete_user_cache` |
/// | `max_retries` | integer literal, 1 to 100 | the runtime's `DEFAULT_MAX_RETRIES` (3) |
/// | `mode` | `"replay"` (re-run the failed write), `"invalidate"` (delete the keys it touched), `"log"` (only log: read-path backfill) | `"replay"` |
/// | `context` | expression whose value converts `Into<TaskContext>` (trace id, user uuid, device id), e.g. `context = &ctx` | empty |
/// | `crate` | string literal path to the `redis_retry` crate when it is re-exported | `"::redis_retry"` |
/// | `read_path` | flag: the function is a read path whose cache backfill must not be retried; needs `mode = "log"` | |
/// | `allow_non_idempotent` | flag: accept non-idempotent writes in `mode = "replay"` | |
///
/// `context` is evaluated once per call, before the body runs; a parameter passed by value is
/// moved by it, so write `context = &ctx` to keep using `ctx` in the body.
///
/// # Checks
///
/// The attribute reads the body for Redis commands: commands named in literals
/// (`redis::cmd("GET")`), redis-rs methods on pipelines (`redis::pipe().get(k)`), and redis-rs
/// command methods (`conn.hgetall(k)`). Whether a command reads or writes comes from the
/// runtime's command table. Names std shares (`get`, `keys`, `exists`, `append`, `incr`, ...)
/// count only with a redis-rs turbofish (`conn.get::<_, String>(k)`) or on a pipeline, so a
/// `HashMap::get` is never mistaken for a Redis read.
///
/// - **Reads are never retried.** A function that reads from Redis and writes nothing is a
///   compile error: remove the attribute. A read path that backfills the cache (reads, then
///   writes the value back) only logs its failures: mark it
///   `#[redis_retry(mode = "log", read_path)]`; `read_path` is accepted only with
///   `mode = "log"`.
/// - **Non-idempotent writes** (INCR, DECR, LPUSH, RPUSH, XADD, ...) in `mode = "replay"`
///   are a compile error at the call: use `mode = "invalidate"`, or opt in with
///   `allow_non_idempotent` (the runtime then replays such a write only when it certainly
///   never reached Redis, and dead-letters it as `ambiguous` otherwise).
///
/// When an option or the function is wrong, the function is emitted unchanged with the
/// errors, so the rest of the crate still type-checks.
#[proc_macro_attribute]
pub fn redis_retry(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::redis_retry(args.into(), item.into()).into()
}
