//! `#[redis_retry]` through the facade: every supported shape opens the capture scope with the
//! options written on it, and against a real Redis (cut off by a proxy) and broker, a failed
//! write in an annotated method becomes exactly the task the options describe.
//!
//! The shapes are compiled by clippy with `-D warnings` like any user code, so this file also
//! proves that the expansion stays lint-clean.

mod support;

use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use redis_retry::{redis_retry, scope, Mode, RetryConnection, ScopeMeta, TaskContext, TaskKind};
use support::logs::Captured;
use support::stack::{manager_through, wait_until, Stack};
use support::Proxy;

type Conn = RetryConnection<redis::aio::ConnectionManager>;

/// The scope the code runs in; panics outside one.
fn current() -> Arc<ScopeMeta> {
    scope::current().expect("inside a capture scope")
}

/// Every shape the attribute supports, each reporting the scope it runs in.
mod shapes {
    use std::fmt::Display;
    use std::sync::Arc;

    use async_trait::async_trait;
    use redis_retry::{redis_retry, Mode, ScopeMeta, TaskContext};

    use super::current;

    #[redis_retry]
    pub async fn free_default() -> Arc<ScopeMeta> {
        current()
    }

    #[redis_retry(source = "Shapes.options", max_retries = 7, mode = "invalidate", context = ctx)]
    pub async fn options(ctx: &TaskContext) -> Arc<ScopeMeta> {
        current()
    }

    #[redis_retry(mode = "log", read_path, context = TaskContext::new().device_id("dev-9"))]
    pub async fn read_path() -> (Mode, String) {
        let meta = current();
        (meta.mode, meta.context.device_id.clone())
    }

    pub struct Repo {
        pub name: String,
    }

    impl Repo {
        #[redis_retry(source = "Repo.by_ref")]
        pub async fn by_ref(&self) -> Arc<ScopeMeta> {
            assert!(!self.name.is_empty());
            current()
        }

        #[redis_retry(source = "Repo.by_mut")]
        pub async fn by_mut(&mut self, suffix: &str) -> Arc<ScopeMeta> {
            self.name.push_str(suffix);
            current()
        }

        #[redis_retry(source = "Repo.by_value")]
        pub async fn by_value(self) -> (String, Arc<ScopeMeta>) {
            (self.name, current())
        }

        #[redis_retry(source = "Repo.generic")]
        pub async fn generic<T>(&self, value: T, shown: impl Display) -> (T, String, Arc<ScopeMeta>)
        where
            T: Send,
        {
            (value, shown.to_string(), current())
        }

        #[redis_retry(source = "Repo.early_return")]
        pub async fn early_return(&self, fail: bool) -> Result<Arc<ScopeMeta>, String> {
            if fail {
                return Err(format!("{} failed", self.name));
            }
            let parsed: u32 = "7".parse().map_err(|e: std::num::ParseIntError| e.to_string())?;
            assert_eq!(parsed, 7);
            Ok(current())
        }

        /// Nested annotated calls: the inner scope replaces the outer one while it runs.
        #[redis_retry(source = "Repo.outer")]
        pub async fn outer(&self) -> (String, String, String) {
            let before = current().source.clone();
            let inner = self.by_ref().await.source.clone();
            (before, inner, current().source.clone())
        }
    }

    pub trait Native {
        async fn native(&self) -> Arc<ScopeMeta>;

        #[redis_retry(source = "Native.default_method")]
        async fn default_method(&self) -> Arc<ScopeMeta> {
            current()
        }
    }

    impl Native for Repo {
        #[redis_retry(source = "Native.native", max_retries = 2)]
        async fn native(&self) -> Arc<ScopeMeta> {
            current()
        }
    }

    #[async_trait]
    pub trait Boxed {
        async fn boxed(&self, ctx: &TaskContext) -> Arc<ScopeMeta>;

        #[redis_retry(source = "Boxed.default_method")]
        async fn boxed_default(&self) -> Arc<ScopeMeta> {
            current()
        }
    }

    #[async_trait]
    impl Boxed for Repo {
        #[redis_retry(source = "Boxed.boxed", context = ctx)]
        async fn boxed(&self, ctx: &TaskContext) -> Arc<ScopeMeta> {
            assert!(!self.name.is_empty());
            current()
        }
    }
}

#[tokio::test]
async fn every_shape_runs_its_body_in_a_scope_with_its_options() {
    use shapes::{Boxed, Native, Repo};

    assert!(scope::current().is_none(), "no scope outside annotated code");
    assert_eq!(shapes::free_default().await.source, "macro_capture::shapes::free_default");
    let meta = shapes::free_default().await;
    assert_eq!((meta.max_retries, meta.mode), (redis_retry::DEFAULT_MAX_RETRIES, Mode::Replay));

    let ctx = TaskContext::new().trace_id("trace-1").user_uuid("user-1");
    let meta = shapes::options(&ctx).await;
    assert_eq!(
        *meta,
        ScopeMeta::new("Shapes.options").max_retries(7).unwrap().mode(Mode::Invalidate).context(ctx.clone())
    );
    assert_eq!(shapes::read_path().await, (Mode::Log, "dev-9".to_string()));

    let mut repo = Repo { name: "users".into() };
    assert_eq!(repo.by_ref().await.source, "Repo.by_ref");
    assert_eq!(repo.by_mut(":v2").await.source, "Repo.by_mut");
    assert_eq!(repo.name, "users:v2");
    let (value, shown, meta) = repo.generic(vec![1u8], 42).await;
    assert_eq!((value, shown.as_str(), meta.source.as_str()), (vec![1u8], "42", "Repo.generic"));
    assert_eq!(repo.early_return(true).await.unwrap_err(), "users:v2 failed");
    assert_eq!(repo.early_return(false).await.unwrap().source, "Repo.early_return");
    assert_eq!(
        repo.outer().await,
        ("Repo.outer".to_string(), "Repo.by_ref".to_string(), "Repo.outer".to_string())
    );

    let meta = repo.native().await;
    assert_eq!((meta.source.as_str(), meta.max_retries), ("Native.native", 2));
    assert_eq!(repo.default_method().await.source, "Native.default_method");
    let meta = repo.boxed(&ctx).await;
    assert_eq!((meta.source.as_str(), &meta.context), ("Boxed.boxed", &ctx));
    assert_eq!(repo.boxed_default().await.source, "Boxed.default_method");

    let (name, meta) = repo.by_value().await;
    assert_eq!((name.as_str(), meta.source.as_str()), ("users:v2", "Repo.by_value"));
    assert!(scope::current().is_none(), "the scope ends with the call");
}

// `#[tokio::test]` below the attribute: the attribute wraps the `async fn`.
#[redis_retry(source = "tests.attribute_above_tokio_test")]
#[tokio::test]
async fn attribute_above_tokio_test() {
    assert_eq!(current().source, "tests.attribute_above_tokio_test");
}

// `#[tokio::test]` above the attribute expands first: the attribute wraps its `async` block.
#[tokio::test]
#[redis_retry(max_retries = 4)]
async fn attribute_below_tokio_test() {
    let meta = current();
    assert_eq!(meta.source, "macro_capture::attribute_below_tokio_test");
    assert_eq!(meta.max_retries, 4);
}

/// The seed's repositories, annotated instead of building tasks by hand.
struct Repository {
    redis: Conn,
}

impl Repository {
    #[redis_retry(source = "DeviceRepository.SaveToken", max_retries = 5, context = ctx)]
    async fn save_token(&self, ctx: &TaskContext, device: &str, token: &str) -> redis::RedisResult<()> {
        let mut conn = self.redis.clone();
        conn.set_ex(format!("device:token:{device}"), token, 300).await
    }

    #[redis_retry(source = "UserRepository.UpdateUser", mode = "invalidate")]
    async fn update_user(&self, uuid: &str) -> redis::RedisResult<()> {
        let mut conn = self.redis.clone();
        redis::pipe()
            .set(format!("user:info:{uuid}"), "v2")
            .hset(format!("user:profile:{uuid}"), "name", "v2")
            .exec_async(&mut conn)
            .await
    }

    /// Seed §1.1: a miss is read from the database and backfilled; a failed backfill is logged.
    #[redis_retry(source = "UserRepository.GetUserInfo", mode = "log", read_path)]
    async fn get_user_info(&self, uuid: &str) -> String {
        let mut conn = self.redis.clone();
        let key = format!("user:info:{uuid}");
        if let Ok(Some(cached)) = conn.get::<_, Option<String>>(&key).await {
            return cached;
        }
        let from_database = format!("user {uuid}");
        let _: redis::RedisResult<()> = conn.set_ex(&key, &from_database, 300).await;
        from_database
    }

    /// The seed's `DeleteUser`: the cache delete may fail, the request goes on.
    #[redis_retry(source = "UserRepository.DeleteUser")]
    async fn delete_user_then(&self, uuid: &str, rest_of_request: impl std::future::Future<Output = ()>) {
        let mut conn = self.redis.clone();
        let _: redis::RedisResult<()> = conn.del(format!("user:info:{uuid}")).await;
        rest_of_request.await;
    }
}

/// A retrying connection to Redis through `proxy`, publishing on the stack's producer.
async fn repository(stack: &Stack, proxy: &Proxy) -> Repository {
    let manager = manager_through(proxy, Duration::from_millis(500)).await;
    Repository { redis: RetryConnection::new(manager).with_producer(stack.producer.clone()) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_set_becomes_one_task_with_the_attribute_s_options_and_is_applied_later() {
    let mut stack = Stack::start().await;
    let proxy = Proxy::start(stack.redis.addr());
    let repo = repository(&stack, &proxy).await;
    proxy.cut();

    let ctx = TaskContext::new().trace_id("trace-7").user_uuid("user-7").device_id("dev-7");
    let result = repo.save_token(&ctx, "d7", "tok-7").await;
    assert!(result.is_err(), "the write fails while Redis is cut off");

    let tasks = stack.tasks(2, Duration::from_secs(5)).await;
    assert_eq!(tasks.len(), 1, "exactly one task: {tasks:?}");
    let task = &tasks[0];
    assert_eq!(task.kind, TaskKind::Simple);
    assert_eq!(task.command.to_ascii_uppercase(), "SETEX");
    assert_eq!(task.first_key(), Some(&b"device:token:d7"[..]));
    assert_eq!(task.source, "DeviceRepository.SaveToken");
    assert_eq!(task.max_retries, 5);
    assert_eq!(task.mode, Mode::Replay);
    assert_eq!(
        (task.trace_id.as_str(), task.user_uuid.as_str(), task.device_id.as_str()),
        ("trace-7", "user-7", "dev-7")
    );

    proxy.restore();
    let config = stack.consumer_config();
    stack.spawn_consumer(config, &stack.redis.url()).await;
    let direct = stack.conn().await;
    wait_until("the task to be applied", Duration::from_secs(30), || {
        let mut c = direct.clone();
        async move {
            c.get::<_, Option<String>>("device:token:d7").await.ok().flatten().as_deref() == Some("tok-7")
        }
    })
    .await;
    stack.stop_consumer().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_mode_queues_a_delete_of_the_touched_keys() {
    let stack = Stack::start().await;
    let proxy = Proxy::start(stack.redis.addr());
    let repo = repository(&stack, &proxy).await;
    proxy.cut();

    assert!(repo.update_user("u1").await.is_err());

    let tasks = stack.tasks(2, Duration::from_secs(5)).await;
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    let task = &tasks[0];
    assert_eq!(task.source, "UserRepository.UpdateUser");
    assert_eq!(task.mode, Mode::Invalidate);
    assert_eq!(task.touched_keys(), vec![&b"user:info:u1"[..], b"user:profile:u1"]);
    assert!(task.pipeline_cmds.iter().all(|c| c.command.eq_ignore_ascii_case("del")), "{task:?}");
    assert!(!String::from_utf8_lossy(&task.to_json()).contains("\"v2\""), "no value travels");
}

// Current-thread runtime: the log line is written on this thread, where the test's subscriber is.
#[tokio::test(flavor = "current_thread")]
async fn log_mode_queues_nothing_and_logs_the_failed_backfill() {
    use tracing_subscriber::util::SubscriberInitExt;

    let stack = Stack::start().await;
    let proxy = Proxy::start(stack.redis.addr());
    let repo = repository(&stack, &proxy).await;
    let captured = Captured::default();
    let writer = captured.clone();
    let _guard =
        tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish().set_default();
    proxy.cut();

    assert_eq!(repo.get_user_info("u2").await, "user u2", "the read path answers from the database");

    assert!(stack.tasks(1, Duration::from_secs(3)).await.is_empty(), "log mode queues nothing");
    let logs = captured.text();
    let line = logs
        .lines()
        .find(|l| l.contains("mode = log") && l.contains("not retried"))
        .unwrap_or_else(|| panic!("no log line for the failed backfill in:\n{logs}"));
    assert!(line.contains("UserRepository.GetUserInfo"), "{line}");
    assert!(line.contains("user:info:u2"), "{line}");
    assert!(!line.contains("user u2"), "values are never logged: {line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_dropped_after_its_failed_write_still_produced_its_task() {
    let stack = Stack::start().await;
    let proxy = Proxy::start(stack.redis.addr());
    let repo = repository(&stack, &proxy).await;
    proxy.cut();

    let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<()>();
    let request = repo.delete_user_then("u3", async move {
        // The DEL has failed by now; the request then hangs and its caller gives up.
        let _ = failed_tx.send(());
        std::future::pending::<()>().await;
    });
    let dropped = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::select! {
            () = request => unreachable!("the request never finishes"),
            _ = failed_rx => {}
        }
    })
    .await;
    assert!(dropped.is_ok(), "the DEL failed within 10 s");

    let tasks = stack.tasks(2, Duration::from_secs(5)).await;
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(tasks[0].source, "UserRepository.DeleteUser");
    assert_eq!(tasks[0].command.to_ascii_uppercase(), "DEL");
    assert_eq!(tasks[0].first_key(), Some(&b"user:info:u3"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_that_succeeds_produces_nothing() {
    let stack = Stack::start().await;
    let proxy = Proxy::start(stack.redis.addr());
    let repo = repository(&stack, &proxy).await;
    let ctx = TaskContext::new().trace_id("trace-8");

    repo.save_token(&ctx, "d8", "tok-8").await.expect("Redis is up");
    repo.update_user("u8").await.expect("Redis is up");

    assert!(stack.tasks(1, Duration::from_secs(3)).await.is_empty(), "nothing to retry");
    let mut direct = stack.conn().await;
    let token: Option<String> = direct.get("device:token:d8").await.unwrap();
    assert_eq!(token.as_deref(), Some("tok-8"));
}
