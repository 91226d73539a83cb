//! What a service's log says about a failed write, read as a new user reads it: the command
//! in its own field (upper case, as Redis spells it), the keys alone in theirs, no empty
//! `trace_id=` or `user_uuid=`, and, when no producer is installed, one line saying plainly
//! that nothing was queued rather than "sending it to the retry queue" followed by a failure.
//! Against a real redis-server cut off by a proxy; no broker, and no producer anywhere in this
//! test binary.

mod support;

use redis::AsyncCommands;
use redis_retry::scope::{self, ScopeMeta};
use redis_retry::{RetryConnection, TaskContext};
use support::logs::Captured;
use support::{Proxy, RedisServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_without_a_producer_is_one_plain_line_with_clean_fields() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init()
        .expect("this test binary owns its global subscriber");

    let server = RedisServer::start();
    let proxy = Proxy::start(server.addr());
    let inner = redis::Client::open(proxy.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let mut conn = RetryConnection::new(inner);
    proxy.cut();

    let plain: redis::RedisResult<()> =
        scope::capture(ScopeMeta::new("Logs.DeleteUserCache"), conn.del("user:info:u1")).await;
    assert!(plain.is_err(), "Redis is cut off");
    let lines = logs.lines_about("user:info:u1");
    assert_eq!(lines.len(), 1, "one line about the write: {lines:#?}");
    let line = &lines[0];
    assert!(line.contains("NOTHING WAS QUEUED") && line.contains("init_global_producer"), "{line}");
    assert!(!line.contains("sending it to the retry queue"), "no promise it cannot keep: {line}");
    assert!(!line.contains("kafka_error"), "not a Kafka failure: {line}");
    assert!(line.contains("command=DEL") && line.contains("keys=user:info:u1"), "{line}");
    assert!(!line.contains("trace_id") && !line.contains("user_uuid"), "no empty fields: {line}");

    let with_trace = ScopeMeta::new("Logs.SaveToken").context(TaskContext::new().trace_id("trace-7"));
    let traced: redis::RedisResult<()> =
        scope::capture(with_trace, conn.set_ex("device:token:d1", "tok", 60)).await;
    assert!(traced.is_err());
    let lines = logs.lines_about("device:token:d1");
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].contains("command=SETEX") && lines[0].contains("trace-7"), "{}", lines[0]);
    assert!(!lines[0].contains("user_uuid"), "{}", lines[0]);
}
