//! `RetryConnection`: a Redis connection that turns failed writes into tasks.
//!
//! It implements `redis::aio::ConnectionLike` around an async connection of redis-rs (any
//! other through [`InnerConnection`] or [`Boxed`]) and adds nothing to a command that succeeds
//! or reads. When a mutating command fails with a transient error
//! inside a capture scope (or on a connection built with
//! [`capture_all`](RetryConnection::capture_all)), the task is published right there, before
//! the error is returned: a request future dropped after the failed write has still queued it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::Either;
use futures_util::FutureExt as _;
use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};

use crate::commands::{self, Access};
use crate::errors::{classify, classify_server_error, Delivery, DlqReason, Failure};
use crate::producer::{
    global_producer, report_ambiguous_capture, report_capture, report_unqueued, RetryProducer,
};
use crate::scope::{self, Current, ScopeMeta};
use crate::script;
use crate::task::{Arg, Mode, RedisCmd, RedisTask};
use crate::{counters, TaskError};

/// A connection whose failed writes are captured and queued for retry.
///
/// ```no_run
/// # async fn demo() -> redis::RedisResult<()> {
/// use redis::AsyncCommands;
/// use redis_retry_runtime::{scope, RetryConnection};
/// let client = redis::Client::open("redis://127.0.0.1/")?;
/// let mut conn = RetryConnection::new(client.get_multiplexed_async_connection().await?);
/// scope::capture(scope::ScopeMeta::new("UserRepository.DeleteUserCache"), async {
///     conn.del::<_, ()>("user:info:1").await // queued for retry if Redis is down
/// })
/// .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RetryConnection<C> {
    inner: C,
    default_scope: Option<Arc<ScopeMeta>>,
    producer: Option<RetryProducer>,
    deadline: Option<Duration>,
}

impl<C> RetryConnection<C> {
    /// Wraps `inner`. Outside a capture scope it is transparent.
    ///
    /// For production, [`RetryConnection::builder`] builds a `ConnectionManager` whose failed or
    /// stuck commands return within a deadline.
    pub fn new(inner: C) -> Self {
        RetryConnection { inner, default_scope: None, producer: None, deadline: None }
    }

    /// Gives every command at most `deadline` to answer: past it the caller gets a time-out
    /// error (`is_timeout()`), and a write is captured as one that may have run, so a
    /// non-idempotent write is dead-lettered as `ambiguous` rather than replayed. A connection
    /// that waits for a reconnect (redis-rs's `ConnectionManager` backs off for seconds) would
    /// otherwise hold the request, and the caller's own request, that long.
    ///
    /// A zero `deadline` would fail every command; it is ignored, with a warning.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        if deadline.is_zero() {
            tracing::warn!("RetryConnection::with_deadline: a zero deadline is ignored");
        } else {
            self.deadline = Some(deadline);
        }
        self
    }

    /// The deadline set by [`with_deadline`](Self::with_deadline), if any.
    pub fn deadline(&self) -> Option<Duration> {
        self.deadline
    }

    /// Captures every failed write, in a scope or not, with `source` when no scope says
    /// otherwise.
    pub fn capture_all(mut self, source: impl Into<String>) -> Self {
        self.default_scope = Some(Arc::new(ScopeMeta::new(source)));
        self
    }

    /// Like [`capture_all`](Self::capture_all) with full metadata.
    pub fn capture_all_with(mut self, meta: ScopeMeta) -> Self {
        self.default_scope = Some(Arc::new(meta));
        self
    }

    /// Publishes through `producer` instead of the global one.
    pub fn with_producer(mut self, producer: RetryProducer) -> Self {
        self.producer = Some(producer);
        self
    }

    /// The wrapped connection.
    pub fn get_ref(&self) -> &C {
        &self.inner
    }

    /// The wrapped connection, mutably.
    pub fn get_mut(&mut self) -> &mut C {
        &mut self.inner
    }

    /// Unwraps the connection.
    pub fn into_inner(self) -> C {
        self.inner
    }

    fn active_scope(&self) -> Option<Arc<ScopeMeta>> {
        match scope::lookup() {
            Current::Capture(meta) => Some(meta),
            Current::Suppressed => None,
            Current::None => self.default_scope.clone(),
        }
    }

    fn capture(&self, cmds: &[&Cmd], atomic: bool, delivery: Delivery, error: &str) {
        scope::note_failure();
        let Some(meta) = self.active_scope() else { return };
        for (task, idempotent) in tasks_for(cmds, atomic) {
            let task = task.with_source(meta.source.clone()).with_context(&meta.context).with_error(&error);
            let task = RedisTask { max_retries: meta.max_retries, ..task };
            self.dispatch(task, idempotent, delivery, meta.mode);
        }
    }

    fn dispatch(&self, task: RedisTask, idempotent: bool, delivery: Delivery, mode: Mode) {
        let producer = self.producer.as_ref().or_else(|| global_producer());
        match mode {
            Mode::Log => {
                metrics::counter!(counters::LOGGED).increment(1);
                tracing::warn!(
                    error = %task.original_err,
                    command = %task.log_commands(),
                    keys = %task.log_keys(),
                    source = %task.source,
                    trace_id = task.log_trace_id(),
                    "redis write failed on a read path (mode = log); not retried"
                );
            }
            Mode::Invalidate => match task.invalidation() {
                Ok(task) => publish(producer, &task),
                Err(e) => tracing::error!(error = %e, source = %task.source, "nothing to invalidate"),
            },
            Mode::Replay if !idempotent && delivery == Delivery::Ambiguous => {
                // It may have run: replaying could apply it twice, so a person decides.
                let Some(producer) = producer else { return no_producer(&task) };
                report_ambiguous_capture(&task);
                if let Err(e) = producer.dead_letter(&task, DlqReason::Ambiguous, &task.original_err) {
                    report_unqueued(&task, &e);
                }
            }
            Mode::Replay => publish(producer, &task),
        }
    }
}

fn publish(producer: Option<&RetryProducer>, task: &RedisTask) {
    let Some(producer) = producer else { return no_producer(task) };
    report_capture(task);
    if let Err(e) = producer.publish(task) {
        report_unqueued(task, &e);
    }
}

/// One line saying nothing was queued, rather than "sending it to the retry queue" followed
/// by a failure that reads like Kafka's.
fn no_producer(task: &RedisTask) {
    metrics::counter!(counters::CAPTURED).increment(1);
    report_unqueued(task, &crate::PublishError::NoProducer);
}

fn parts(cmd: &Cmd) -> Vec<&[u8]> {
    cmd.args_iter()
        .filter_map(|a| match a {
            redis::Arg::Simple(bytes) => Some(bytes),
            _ => None,
        })
        .collect()
}

/// Tasks for failed commands: the writes together in one task (a pipeline when more than
/// one), each script on its own as a Lua task. Reads and control commands are left out.
fn tasks_for(cmds: &[&Cmd], atomic: bool) -> Vec<(RedisTask, bool)> {
    let mut writes: Vec<RedisCmd> = Vec::new();
    let mut writes_idempotent = true;
    let mut out = Vec::new();
    for cmd in cmds {
        let parts = parts(cmd);
        let Some(class) = commands::classify(&parts) else {
            if let Some(name) = parts.first() {
                tracing::warn!(
                    command = %String::from_utf8_lossy(name),
                    "failed command is not in the command table; not captured"
                );
            }
            continue;
        };
        match class.access {
            Access::Write { idempotent } => {
                writes_idempotent &= idempotent;
                let name = String::from_utf8_lossy(parts[0]).into_owned();
                writes.push(RedisCmd {
                    command: name,
                    args: parts[1..].iter().map(|a| Arg::from(*a)).collect(),
                });
            }
            Access::Script => match lua_task(&parts) {
                Ok(task) => out.push((task, true)),
                Err(e) => tracing::error!(error = %e, "failed script call cannot be captured"),
            },
            _ => {}
        }
    }
    let task = if writes.is_empty() {
        None
    } else if writes.len() == 1 && !atomic {
        let cmd = writes.remove(0);
        Some(RedisTask::command(cmd.command, cmd.args))
    } else {
        Some(RedisTask::pipeline(writes).map(|mut t| {
            t.atomic = atomic;
            t
        }))
    };
    let task = match task {
        Some(Err(e)) => {
            tracing::error!(error = %e, "failed write cannot be captured");
            None
        }
        Some(Ok(task)) => Some(task),
        None => None,
    };
    if let Some(task) = task {
        out.insert(0, (task, writes_idempotent));
    }
    out
}

/// A Lua task from `EVAL body numkeys ...` or `EVALSHA sha numkeys ...` (body from the registry).
fn lua_task(parts: &[&[u8]]) -> Result<RedisTask, TaskError> {
    let name = String::from_utf8_lossy(parts[0]).to_ascii_uppercase();
    let script_ref = parts.get(1).map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
    let body = match name.as_str() {
        "EVAL" => script_ref,
        "EVALSHA" => script::body_of(&script_ref).map(|b| b.to_string()).ok_or_else(|| {
            TaskError::Malformed(format!(
                "script {script_ref} is unknown to redis-retry; build it with redis_retry::Script::new so its body can be replayed"
            ))
        })?,
        other => return Err(TaskError::ScriptInSimpleTask(other.to_ascii_lowercase())),
    };
    let numkeys: usize = parts
        .get(2)
        .and_then(|n| std::str::from_utf8(n).ok())
        .and_then(|n| n.parse().ok())
        .ok_or(TaskError::MissingField("numkeys"))?;
    let rest = parts.get(3..).unwrap_or_default();
    let numkeys = numkeys.min(rest.len());
    RedisTask::lua(body, rest[..numkeys].iter().copied(), rest[numkeys..].iter().copied())
}

fn remember_loaded_script(cmd: &Cmd) {
    let mut args = cmd.args_iter();
    let is = |a: Option<redis::Arg<&[u8]>>, word: &[u8]| matches!(a, Some(redis::Arg::Simple(b)) if b.eq_ignore_ascii_case(word));
    if is(args.next(), b"SCRIPT") && is(args.next(), b"LOAD") {
        if let Some(redis::Arg::Simple(body)) = args.next() {
            if let Ok(body) = std::str::from_utf8(body) {
                script::register(body);
            }
        }
    }
}

/// The connection a [`RetryConnection`] wraps: a redis-rs `ConnectionLike` whose requests
/// the wrapper can hold inline.
///
/// `ConnectionLike` hands out every request as a boxed future, and the wrapper, which must see
/// the reply, boxes its own around it: two allocations per command where redis-rs alone makes
/// one. For `MultiplexedConnection` and `ConnectionManager` this trait calls their own
/// `send_packed_command` instead, whose future the wrapper's box holds. Every other connection
/// (a Cluster connection, a type of your own) takes the provided methods, redis-rs's boxed
/// path, so implementing it is one line:
///
/// ```
/// use redis_retry_runtime::connection::InnerConnection;
/// # use redis::{aio::ConnectionLike, Cmd, Pipeline, RedisFuture, Value};
/// # #[derive(Clone)]
/// struct Counted<C>(C);
/// # impl<C: ConnectionLike + Send> ConnectionLike for Counted<C> {
/// #     fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
/// #         self.0.req_packed_command(cmd)
/// #     }
/// #     fn req_packed_commands<'a>(&'a mut self, p: &'a Pipeline, o: usize, c: usize) -> RedisFuture<'a, Vec<Value>> {
/// #         self.0.req_packed_commands(p, o, c)
/// #     }
/// #     fn get_db(&self) -> i64 { self.0.get_db() }
/// # }
/// impl<C: ConnectionLike + Send> InnerConnection for Counted<C> {}
/// ```
///
/// A type from another crate, which this crate's trait cannot be implemented for there, goes
/// in [`Boxed`]: `RetryConnection::new(Boxed(conn))`.
pub trait InnerConnection: ConnectionLike + Send {
    /// Sends one packed command and reads its reply.
    fn request<'a>(&'a mut self, cmd: &'a Cmd) -> impl Future<Output = RedisResult<Value>> + Send + 'a {
        self.req_packed_command(cmd)
    }

    /// Sends `pipeline` and reads `count` replies after skipping `offset`.
    fn request_pipeline<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> impl Future<Output = RedisResult<Vec<Value>>> + Send + 'a {
        self.req_packed_commands(pipeline, offset, count)
    }
}

/// `InnerConnection` for redis-rs connections whose own `send_packed_command(s)` is public:
/// their futures go into the wrapper's box as they are.
macro_rules! inline_requests {
    ($($connection:ty),*) => {$(
        impl InnerConnection for $connection {
            fn request<'a>(&'a mut self, cmd: &'a Cmd) -> impl Future<Output = RedisResult<Value>> + Send + 'a {
                <$connection>::send_packed_command(self, cmd)
            }

            fn request_pipeline<'a>(
                &'a mut self,
                pipeline: &'a Pipeline,
                offset: usize,
                count: usize,
            ) -> impl Future<Output = RedisResult<Vec<Value>>> + Send + 'a {
                <$connection>::send_packed_commands(self, pipeline, offset, count)
            }
        }
    )*};
}

inline_requests!(MultiplexedConnection, ConnectionManager);

// Its `ConnectionLike` routes the command before boxing, and the routing is not public.
impl<C> InnerConnection for ClusterConnection<C> where ClusterConnection<C>: ConnectionLike + Send {}

/// Any redis-rs `ConnectionLike`, for a [`RetryConnection`] to wrap through redis-rs's boxed
/// futures: the way to wrap a connection type of another crate, which cannot implement
/// [`InnerConnection`] there.
///
/// ```no_run
/// # async fn demo(conn: redis::aio::MultiplexedConnection) {
/// use redis_retry_runtime::{connection::Boxed, RetryConnection};
/// let conn = RetryConnection::new(Boxed(conn));
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Boxed<C>(pub C);

impl<C: ConnectionLike> ConnectionLike for Boxed<C> {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        self.0.req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        self.0.req_packed_commands(pipeline, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.0.get_db()
    }
}

impl<C: ConnectionLike + Send> InnerConnection for Boxed<C> {}

/// `request` with at most `deadline` to answer, when there is one. Not an `async fn`: one
/// more state machine around every command's request would double the size of the
/// wrapper's future.
fn within<T, F>(deadline: Option<Duration>, request: F) -> impl Future<Output = RedisResult<T>>
where
    F: Future<Output = RedisResult<T>>,
{
    match deadline {
        None => Either::Left(request),
        Some(deadline) => Either::Right(
            tokio::time::timeout(deadline, request)
                .map(move |r| r.unwrap_or_else(|_| Err(timed_out(deadline)))),
        ),
    }
}

/// The error of a request that outlived `deadline`.
#[cold]
fn timed_out(deadline: Duration) -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("no reply from Redis within the {deadline:?} deadline"),
    ))
}

fn transient(failure: Failure) -> Option<Delivery> {
    match failure {
        Failure::Transient(d) => Some(d),
        Failure::Permanent => None,
    }
}

impl<C: InnerConnection> RetryConnection<C> {
    // Out of line and cold: the request's future, which every command polls, keeps only the
    // test for a reply that needs nothing.
    #[cold]
    #[inline(never)]
    fn command_failed(&self, cmd: &Cmd, result: &RedisResult<Value>) {
        let failure = match result {
            Ok(Value::ServerError(e)) => transient(classify_server_error(e)).map(|d| (d, e.to_string())),
            Ok(_) => None,
            Err(e) => transient(classify(e)).map(|d| (d, e.to_string())),
        };
        if let Some((delivery, error)) = failure {
            self.capture(&[cmd], false, delivery, &error);
        }
    }

    fn after_pipeline(&self, pipeline: &Pipeline, result: &RedisResult<Vec<Value>>) {
        let atomic = pipeline.is_transaction();
        match result {
            Err(e) => {
                if let Some(delivery) = transient(classify(e)) {
                    let cmds: Vec<&Cmd> = pipeline.cmd_iter().collect();
                    self.capture(&cmds, atomic, delivery, &e.to_string());
                }
            }
            Ok(values) => {
                // A transaction answers with one EXEC reply holding every result; a plain
                // pipeline answers command by command.
                let replies: &[Value] = match (atomic, values.last()) {
                    (true, Some(Value::Array(items))) => items,
                    (true, _) => &[],
                    (false, _) => values,
                };
                let mut failed: Vec<&Cmd> = Vec::new();
                let mut error = String::new();
                for (cmd, reply) in pipeline.cmd_iter().zip(replies) {
                    if let Value::ServerError(e) = reply {
                        if transient(classify_server_error(e)).is_some() {
                            failed.push(cmd);
                            error = e.to_string();
                        }
                    }
                }
                if !failed.is_empty() {
                    self.capture(&failed, false, Delivery::NotApplied, &error);
                }
            }
        }
    }
}

impl<C: InnerConnection> ConnectionLike for RetryConnection<C> {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let result = within(self.deadline, self.inner.request(cmd)).await;
            match &result {
                Ok(Value::ServerError(_)) | Err(_) => self.command_failed(cmd, &result),
                Ok(_) => remember_loaded_script(cmd),
            }
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let result = within(self.deadline, self.inner.request_pipeline(pipeline, offset, count)).await;
            self.after_pipeline(pipeline, &result);
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.inner.get_db()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usable_as_a_connection<T: ConnectionLike + Clone + Send + Sync + 'static>() {}

    #[test]
    fn wraps_every_async_connection_of_redis_rs() {
        usable_as_a_connection::<RetryConnection<redis::aio::MultiplexedConnection>>();
        usable_as_a_connection::<RetryConnection<redis::aio::ConnectionManager>>();
        usable_as_a_connection::<RetryConnection<redis::cluster_async::ClusterConnection>>();
        usable_as_a_connection::<RetryConnection<Boxed<redis::aio::MultiplexedConnection>>>();
    }

    fn cmd(args: &[&str]) -> Cmd {
        let mut c = redis::cmd(args[0]);
        for a in &args[1..] {
            c.arg(*a);
        }
        c
    }

    #[test]
    fn reads_and_control_commands_make_no_task() {
        let (get, ping, multi) = (cmd(&["GET", "k"]), cmd(&["PING"]), cmd(&["MULTI"]));
        assert!(tasks_for(&[&get, &ping, &multi], false).is_empty());
    }

    #[test]
    fn writes_and_scripts_are_split_into_one_write_task_and_one_task_per_script() {
        let set = cmd(&["SET", "a", "1"]);
        let incr = cmd(&["INCR", "n"]);
        let eval = cmd(&["EVAL", "return 1", "1", "k", "arg"]);
        let get = cmd(&["GET", "b"]);
        let tasks = tasks_for(&[&set, &get, &eval, &incr], false);
        assert_eq!(tasks.len(), 2);
        let (pipe, idempotent) = &tasks[0];
        assert_eq!(pipe.pipeline_cmds.len(), 2);
        assert!(!idempotent, "INCR makes the pipeline non-idempotent");
        assert_eq!(tasks[1].0.lua_keys.len(), 1);
        assert_eq!(tasks[1].0.lua_args.len(), 1);
    }

    #[test]
    fn evalsha_of_an_unknown_script_cannot_be_captured_but_a_registered_one_can() {
        let unknown = cmd(&["EVALSHA", "0123456789012345678901234567890123456789", "0"]);
        assert!(tasks_for(&[&unknown], false).is_empty());
        let script = crate::Script::new("return 'registered'");
        let known = cmd(&["EVALSHA", script.get_hash(), "0"]);
        let tasks = tasks_for(&[&known], false);
        assert_eq!(tasks[0].0.lua_script, "return 'registered'");
    }
}
