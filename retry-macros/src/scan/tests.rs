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
    scan(code).iter().map(|c| (c.command_name(), c.access, c.certain)).collect()
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
fn some_shared_names_count_when_awaited_with_redis_rs_s_arguments() {
    assert_eq!(
        summary(
            "{ conn.incr(k, 1).await?; conn.set(k, v).await?; let ks: Vec<String> = conn.keys(p).await?; }"
        ),
        [("INCRBY", NOT_IDEMPOTENT, true), ("SET", IDEMPOTENT, true), ("KEYS", READ, true)]
    );
    // Another number of arguments, not awaited, or a name async caches and stores share.
    assert_eq!(
        summary(
            "{ stats.incr(\"hits\").await; stats.incr(k, 1); cache.get(&k).await; store.exists(p).await?; }"
        ),
        [
            ("INCRBY", NOT_IDEMPOTENT, false),
            ("INCRBY", NOT_IDEMPOTENT, false),
            ("GET", READ, false),
            ("EXISTS", READ, false)
        ]
    );
    // Only the awaited call of a chain is awaited.
    assert_eq!(summary("{ conn.clone().incr(k, 1).await?; }"), [("INCRBY", NOT_IDEMPOTENT, true)]);
    assert_eq!(summary("{ counter.incr(k, 1).flush().await; }"), [("INCRBY", NOT_IDEMPOTENT, false)]);
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
    // Not expressions: left alone rather than guessed at.
    assert!(scan("{ tokio::select! { v = conn.hgetall(k) => v, _ = sleep => () } }").is_empty());
}

#[test]
fn nested_items_are_other_functions() {
    assert!(scan(
        "{ fn helper(c: &mut C) { c.hgetall(k); } struct S; impl S { fn f(&self) { c.lpush(k, v); } } }"
    )
    .is_empty());
}
