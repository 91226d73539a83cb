//! What the scan takes for Redis, and what it leaves alone.

use super::{calls, Call};
use crate::commands::Access;

const READ: Option<Access> = Some(Access::Read);
const IDEMPOTENT: Option<Access> = Some(Access::Write { idempotent: true });
const NOT_IDEMPOTENT: Option<Access> = Some(Access::Write { idempotent: false });

fn scan(code: &str) -> Vec<Call> {
    calls(&syn::parse_str(code).unwrap_or_else(|e| panic!("{code}: {e}")))
}

/// (command, access, certain) of each call found.
fn summary(code: &str) -> Vec<(&'static str, Option<Access>, bool)> {
    scan(code).iter().map(|c| (c.spec.map_or("?", |s| s.name), c.access, c.certain)).collect()
}

#[test]
fn std_names_without_evidence_are_uncertain() {
    let found = summary(
        "{ let v = map.get(&k); let n = map.keys().len(); list.append(&mut other); \
           stats.incr(\"hits\"); cell.set(1); if path.exists() {} }",
    );
    assert_eq!(
        found,
        [
            ("GET", READ, false),
            ("KEYS", READ, false),
            ("APPEND", NOT_IDEMPOTENT, false),
            ("INCRBY", NOT_IDEMPOTENT, false),
            ("SET", IDEMPOTENT, false),
            ("EXISTS", READ, false),
        ]
    );
}

#[test]
fn a_turbofish_of_two_types_is_redis_one_is_not() {
    assert_eq!(summary("{ conn.get::<_, String>(k).await?; }"), [("GET", READ, true)]);
    assert_eq!(summary("{ conn.hget::<_, _, String>(k, f).await?; }"), [("HGET", READ, true)]);
    assert_eq!(summary("{ map.get::<str>(k); }"), [("GET", READ, false)]);
}

#[test]
fn shared_names_count_when_awaited_with_redis_rs_s_arguments_and_typed() {
    assert_eq!(
        summary(
            "{ let n: i64 = conn.incr(k, 1).await?; let _: () = conn.set(k, v).await?; \
               let ks: RedisResult<Vec<String>> = conn.keys(p).await; \
               let v: Option<String> = conn.get(k).await?; }"
        ),
        [
            ("INCRBY", NOT_IDEMPOTENT, true),
            ("SET", IDEMPOTENT, true),
            ("KEYS", READ, true),
            ("GET", READ, true)
        ]
    );
    // Another number of arguments, not awaited, not typed, or typed without `?` (an async
    // cache's `get` returns the value itself).
    assert_eq!(
        summary(
            "{ let n: u64 = stats.incr(\"hits\").await?; stats.incr(k, 1); store.keys(p).await?; \
               let v: Option<String> = cache.get(&k).await; }"
        ),
        [
            ("INCRBY", NOT_IDEMPOTENT, false),
            ("INCRBY", NOT_IDEMPOTENT, false),
            ("KEYS", READ, false),
            ("GET", READ, false)
        ]
    );
    // Only the awaited call of a chain is awaited.
    assert_eq!(
        summary("{ let n: i64 = conn.clone().incr(k, 1).await?; }"),
        [("INCRBY", NOT_IDEMPOTENT, true)]
    );
    assert_eq!(
        summary("{ let n: i64 = counter.incr(k, 1).flush().await?; }"),
        [("INCRBY", NOT_IDEMPOTENT, false)]
    );
}

fn scan_fn(code: &str) -> Vec<(&'static str, Option<Access>, bool)> {
    let func: syn::ItemFn = syn::parse_str(code).unwrap_or_else(|e| panic!("{code}: {e}"));
    super::scan(Some(&func.sig), &func.block)
        .calls
        .iter()
        .map(|c| (c.spec.map_or("?", |s| s.name), c.access, c.certain))
        .collect()
}

#[test]
fn the_tail_and_returns_of_a_function_returning_a_redis_result_are_typed() {
    assert_eq!(
        scan_fn("async fn f(c: &mut C) -> redis::RedisResult<Option<String>> { c.get(k).await }"),
        [("GET", READ, true)]
    );
    assert_eq!(
        scan_fn("async fn f(c: &mut C) -> RedisResult<i64> { if x { return c.incr(k, 1).await; } Ok(c.decr(k, 1).await?) }"),
        [("INCRBY", NOT_IDEMPOTENT, true), ("DECRBY", NOT_IDEMPOTENT, true)]
    );
    assert_eq!(scan_fn("async fn f(s: &S) -> Vec<String> { s.keys(p).await }"), [("KEYS", READ, false)]);
}

#[test]
fn every_call_on_a_known_connection_is_redis() {
    // A parameter of a connection type, a local bound from one, a generic bounded by a
    // redis-rs trait, a receiver used for one certain call.
    assert_eq!(
        scan_fn("async fn f(c: &mut RetryConnection<M>) { c.incr(k, 1).await; let mut d = c.clone(); d.exists(k); }"),
        [("INCRBY", NOT_IDEMPOTENT, true), ("EXISTS", READ, true)]
    );
    assert_eq!(
        scan_fn("async fn f<C: redis::AsyncCommands>(c: &mut C) { c.get(k).await; }"),
        [("GET", READ, true)]
    );
    assert_eq!(
        scan_fn("async fn f(&self) { let mut r = self.redis.clone(); r.get(k).await; self.redis.clone().hgetall(h).await; }"),
        [("GET", READ, true), ("HGETALL", READ, true)]
    );
    assert_eq!(
        scan_fn("async fn f(c: &Client) { let mut m = c.get_multiplexed_async_connection().await?; m.set(k, v).await; }"),
        [("SET", IDEMPOTENT, true)]
    );
    // Unrelated receivers stay uncertain.
    assert_eq!(scan_fn("async fn f(&self) { self.cache.get(k).await; }"), [("GET", READ, false)]);
}

#[test]
fn a_cmd_is_followed_through_its_local() {
    assert_eq!(
        summary("{ let mut c = redis::cmd(\"ZADD\"); c.arg(k).arg(\"INCR\").arg(1).arg(m); c.query_async::<f64>(&mut conn).await?; }"),
        [("ZADD", NOT_IDEMPOTENT, true)]
    );
    assert_eq!(
        summary("{ let mut c = redis::cmd(\"SORT\"); c.arg(k); c.arg(\"STORE\").arg(d); c.exec_async(&mut conn).await?; }"),
        [("SORT", IDEMPOTENT, true)]
    );
    assert_eq!(
        summary("{ redis::Cmd::new().arg(\"SET\").arg(k).arg(v).exec_async(&mut conn).await?; }"),
        [("SET", IDEMPOTENT, true)]
    );
    assert_eq!(summary("{ let mut c = Cmd::new(); c.arg(\"GET\").arg(k); }"), [("GET", READ, true)]);
}

#[test]
fn select_arms_are_scanned() {
    assert_eq!(
        summary(
            "{ tokio::select! { biased; v = conn.hgetall(k) => v, _ = sleep, if x >= 1 => { conn.hset(k, f, v).await } \
               done = conn.set::<_, _, ()>(k, v) => done } }"
        ),
        [("HGETALL", READ, true), ("HSET", IDEMPOTENT, true), ("SET", IDEMPOTENT, true)]
    );
}

#[test]
fn calls_in_spawned_tasks_are_marked_unless_they_enter_a_scope() {
    let found = scan(
        "{ tokio::spawn(async move { c.hset(k, f, v).await }); std::thread::spawn(move || c.lpush(k, v)); \
           set.spawn(async move { c.sadd(k, m).await }); c.srem(k, m).await; \
           tokio::spawn(redis_retry::scope::capture(meta, async move { c.del(k).await })); }",
    );
    let spawned: Vec<bool> = found.iter().map(|c| c.spawned).collect();
    assert_eq!(spawned, [true, true, true, false, false]);
}

#[test]
fn plain_redis_scripts_and_unknown_commands_are_found() {
    let findings = super::scan(
        None,
        &syn::parse_str("{ let s = redis::Script::new(BODY); let t = redis_retry::Script::new(BODY); cmd(\"JSON.SET\").arg(k); c.mset_ex(&items, o); }").unwrap(),
    );
    assert_eq!(findings.plain_scripts.len(), 1);
    let unknown: Vec<Option<&str>> = findings.calls.iter().map(Call::unknown_name).collect();
    assert_eq!(unknown, [Some("JSON.SET"), Some("MSETEX")]);
}

#[test]
fn markers_add_a_write_or_leave_a_statement_out() {
    let found = scan(
        "{ #[redis_retry::writes] self.save(k).await?; #[redis_retry::not_redis] let ks: Vec<String> = store.keys(p).await?; }",
    );
    assert_eq!(found.len(), 1);
    assert!(!found[0].certain && found[0].may_write() && found[0].spec.is_none());
}

#[test]
fn distinctive_names_count_on_any_receiver() {
    assert_eq!(
        summary(
            "{ let m: Vec<String> = self.redis.clone().smembers(k).await?; self.conn.lpush(k, v).await?; }"
        ),
        [("SMEMBERS", READ, true), ("LPUSH", NOT_IDEMPOTENT, true)]
    );
}

#[test]
fn pipelines_count_every_command_in_order() {
    let found = summary(
        "{ redis::pipe().atomic().get(a).set(b, 1).ignore().cmd(\"INCR\").arg(c).hgetall(h).query_async(&mut conn).await?; }",
    );
    assert_eq!(
        found,
        [
            ("GET", READ, true),
            ("SET", IDEMPOTENT, true),
            ("INCR", NOT_IDEMPOTENT, true),
            ("HGETALL", READ, true)
        ]
    );
}

#[test]
fn a_local_bound_to_a_pipeline_is_a_pipeline() {
    let found = summary(
        "{ let mut p = redis::pipe(); p.get(a); p.keys(b).ignore(); let mut q: Pipeline = Pipeline::new(); \
           q.exists(c); (&mut p).query_async(&mut conn).await?; }",
    );
    assert_eq!(found, [("GET", READ, true), ("KEYS", READ, true), ("EXISTS", READ, true)]);
}

#[test]
fn commands_named_in_literals_are_classified_with_their_literal_arguments() {
    assert_eq!(summary("{ redis::cmd(\"GET\").arg(k).query_async(&mut c).await?; }"), [("GET", READ, true)]);
    assert_eq!(
        summary("{ cmd(\"ZADD\").arg(k).arg(\"INCR\").arg(1).arg(m).query_async(&mut c).await?; }"),
        [("ZADD", NOT_IDEMPOTENT, true)]
    );
    assert_eq!(
        summary("{ cmd(\"ZADD\").arg(k).arg(1).arg(m).exec_async(&mut c).await?; }"),
        [("ZADD", IDEMPOTENT, true)]
    );
    assert_eq!(
        summary("{ cmd(\"SORT\").arg(k).arg(\"ALPHA\").query_async(&mut c).await?; }"),
        [("SORT", READ, true)]
    );
    assert_eq!(
        summary("{ cmd(\"SORT\").arg(k).arg(\"STORE\").arg(d).exec_async(&mut c).await?; }"),
        [("SORT", IDEMPOTENT, true)]
    );
    assert_eq!(
        summary("{ cmd(\"config\").arg(\"get\").arg(\"maxmemory\"); }"),
        [("CONFIG GET", Some(Access::Forbidden), true)]
    );
    assert_eq!(summary("{ let mut c = redis::cmd(\"HSET\"); c.arg(k); }"), [("HSET", IDEMPOTENT, true)]);
}

#[test]
fn commands_that_cannot_be_known_may_write() {
    let found = scan("{ redis::cmd(name).arg(\"GET\").query_async(&mut c).await?; cmd(\"NOSUCH\").arg(k); }");
    assert_eq!(found.len(), 2);
    assert!(found.iter().all(|c| c.spec.is_none() && c.may_write()));
}

#[test]
fn associated_functions_of_redis_rs_traits_and_types() {
    assert_eq!(
        summary("{ redis::AsyncCommands::get::<_, String>(&mut c, k).await?; redis::Cmd::hset(k, f, v); Other::get(k); }"),
        [("GET", READ, true), ("HSET", IDEMPOTENT, true)]
    );
}

#[test]
fn closures_async_blocks_and_macro_arguments_are_scanned() {
    let found = summary(
        "{ let f = async move { conn.hgetall::<_, ()>(k).await }; \
           let g = |x| x.zrange(k, 0, -1); \
           tokio::try_join!(a.sadd(k, m), b.srem(k, m))?; \
           tracing::info!(n = conn.llen(k), \"done\"); }",
    );
    assert_eq!(
        found,
        [
            ("HGETALL", READ, true),
            ("ZRANGE", READ, true),
            ("SADD", IDEMPOTENT, true),
            ("SREM", IDEMPOTENT, true),
            ("LLEN", READ, true)
        ]
    );
    // Statements.
    assert_eq!(summary("{ m! { let x = 1; conn.hgetall::<_, ()>(k).await; } }"), [("HGETALL", READ, true)]);
}

#[test]
fn nested_items_are_other_functions() {
    assert!(scan(
        "{ fn helper(c: &mut C) { c.hgetall(k); } struct S; impl S { fn f(&self) { c.lpush(k, v); } } }"
    )
    .is_empty());
}

#[test]
fn writes_through_connections_redis_retry_does_not_wrap_are_found() {
    let code = "async fn f(raw: &mut MultiplexedConnection, wrapped: &mut RetryConnection<ConnectionManager>, c: &Client) {
        raw.del(k).await; wrapped.del(k).await; redis::pipe().set(k, v).exec_async(&mut raw.clone()).await;
        let mut made = c.get_connection_manager().await?; made.hset(k, f, v).await;
        let mut ok = RetryConnection::new(c.get_multiplexed_async_connection().await?); ok.hset(k, f, v).await;
        let mut r = raw.clone(); r.sadd(k, m).await; }";
    let func: syn::ItemFn = syn::parse_str(code).unwrap();
    let found = super::scan(Some(&func.sig), &func.block).calls;
    let unwrapped: Vec<Option<&str>> = found.iter().map(|c| c.unwrapped.as_deref()).collect();
    assert_eq!(unwrapped, [Some("raw"), None, Some("raw"), Some("made"), None, Some("r")]);
}
