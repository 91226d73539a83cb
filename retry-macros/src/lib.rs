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
/// | `allow_unknown_commands` | flag: accept commands the runtime's table does not know (module commands such as `JSON.SET`), whose failures are never captured | |
///
/// `context` is evaluated once per call, before the body runs; a parameter passed by value is
/// moved by it, so write `context = &ctx` to keep using `ctx` in the body.
///
/// # Checks
///
/// The attribute reads the body for Redis commands: commands named in literals
/// (`redis::cmd("GET")`, `redis::Cmd::new().arg("SET")`, a `Cmd` built step by step in a
/// local), redis-rs methods on pipelines (`redis::pipe().get(k)`), and redis-rs command methods
/// (`conn.hgetall(k)`), in closures, `async` blocks and macro arguments (`select!` arms
/// included). Whether a command reads or writes comes from the runtime's command table. Names
/// std shares (`get`, `keys`, `exists`, `append`, `incr`, ...) count when the code shows they
/// are redis-rs's: a turbofish of two or more types (`conn.get::<_, String>(k)`), a pipeline, a
/// receiver known to be a connection (a parameter of a redis-rs or redis-retry connection type
/// or bounded by `AsyncCommands`, a local bound from one, a receiver of another certain Redis
/// call), or an `.await`ed call with redis-rs's arguments whose result is typed by a `let`
/// with `?` or by the function's Redis result type (`let v: Option<String> =
/// conn.get(k).await?;`). So a `HashMap::get` is never mistaken for a Redis read.
///
/// - **Reads are never retried.** A function that reads from Redis and writes nothing is a
///   compile error. Where the scan is wrong, mark the statement: `#[redis_retry::writes]` on a
///   statement that writes where the attribute cannot see (a helper function), and
///   `#[redis_retry::not_redis]` on one whose calls are not Redis at all (a type of yours with a
///   method named like redis-rs's). A read path that backfills the cache only logs its
///   failures: `#[redis_retry(mode = "log", read_path)]`; `read_path` is accepted only with
///   `mode = "log"`.
/// - **Non-idempotent writes** (INCR, DECR, LPUSH, RPUSH, XADD, ...) in `mode = "replay"`
///   are a compile error at the call: use `mode = "invalidate"`, or opt in with
///   `allow_non_idempotent` (the runtime then replays such a write only when it certainly
///   never reached Redis, and dead-letters it as `ambiguous` otherwise).
/// - **Writes it can see will never be captured** are compile errors: a command the table
///   does not know (unless `allow_unknown_commands`), a forbidden command (`FLUSHDB`,
///   `CONFIG SET`, ...), a command sent inside `tokio::spawn`, `JoinSet::spawn` or
///   `std::thread::spawn` (the scope is task-local; wrap the spawned future in
///   `redis_retry::scope::capture`), a plain `redis::Script` (use `redis_retry::Script`), and a
///   second `#[redis_retry]` on the same function.
///
/// At run time, an annotated call that returns a transient Redis error (in a `Result` whose
/// error is, wraps or boxes a `RedisError`) that no `RetryConnection` in its scope saw is
/// logged at warn level and counted in `redis_retry_uncaptured_errors_total`: its write went
/// through a connection redis-retry does not wrap.
///
/// When an option or the function is wrong, the function is emitted unchanged with the
/// errors, so the rest of the crate still type-checks.
#[proc_macro_attribute]
pub fn redis_retry(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::redis_retry(args.into(), item.into()).into()
}
