//! How a task becomes requests to Redis, and what the replies say about it.
//!
//! A task is cut into requests a Redis Cluster node can serve (see [`slots`](crate::slots)).
//! Non-idempotent tasks in `replay` mode are *guarded*: each request is one script that sets a
//! guard key and runs the commands only if the guard was not there, so a redelivered task is
//! applied at most once. The consumer sends one task's requests on their own, or the requests
//! of many tasks in one pipeline (see [`apply_batch`]).

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::cluster_routing::Slot;
use redis::{Cmd, Pipeline, RedisError, Value};

use crate::counters;
use crate::errors::{classify, classify_server_error, is_unreachable, Delivery, Failure};
use crate::scope;
use crate::slots::{self, Unit};
use crate::task::{Mode, RedisTask, TaskKind};

/// One request to Redis for (part of) a task.
pub(crate) enum Request {
    /// Commands of one slot (or of no key), sent in order: a share of the task, or its guard
    /// script.
    Commands { slot: Option<Slot>, cmds: Vec<Cmd> },
    /// A transaction or a whole script: it cannot be cut, and is sent as is.
    Atomic(Pipeline),
    /// A command whose keys span slots, sent alone so that a cluster client can split it.
    Spanning(Cmd),
}

/// What to send for one task.
pub(crate) struct Plan {
    /// Whether the requests are guard scripts (replies 1 applied, 0 already applied).
    pub guarded: bool,
    pub requests: Vec<Request>,
}

impl Plan {
    /// The requests of `task` in its mode; `guard_ttl` is how long a guard key lives.
    pub fn new(task: &RedisTask, guard_ttl: Duration) -> Plan {
        let guarded = task.mode == Mode::Replay && !task.is_idempotent();
        let guard_ttl = guard_ttl.as_secs().max(1);
        if task.mode == Mode::Log {
            return Plan { guarded: false, requests: Vec::new() };
        }
        if task.mode == Mode::Replay && (task.kind == TaskKind::Lua || task.atomic) {
            let request = if guarded {
                let (slot, cmd) = guarded_command(&task.commands(), &task.id, guard_ttl);
                Request::Commands { slot, cmds: vec![cmd] }
            } else {
                Request::Atomic(task.to_pipeline())
            };
            return Plan { guarded, requests: vec![request] };
        }
        let commands: Vec<Vec<&[u8]>> = match task.mode {
            Mode::Invalidate => task.touched_keys().into_iter().map(|k| vec![&b"DEL"[..], k]).collect(),
            _ => task.commands(),
        };
        let units = slots::units(commands);
        let several = units.len() > 1;
        let requests = units
            .iter()
            .enumerate()
            .map(|(i, unit)| {
                // Each unit is guarded on its own; a task of one unit keeps the task's guard.
                let guard_id = if several { format!("{}/{i}", task.id) } else { task.id.clone() };
                match unit {
                    Unit::Slot(cmds) if guarded => {
                        let (slot, cmd) = guarded_command(cmds, &guard_id, guard_ttl);
                        Request::Commands { slot, cmds: vec![cmd] }
                    }
                    Unit::Spanning(parts) if guarded => {
                        let (slot, cmd) = guarded_command(std::slice::from_ref(parts), &guard_id, guard_ttl);
                        Request::Commands { slot, cmds: vec![cmd] }
                    }
                    Unit::Slot(cmds) => Request::Commands {
                        slot: cmds.iter().find_map(|parts| slots::key_slots(parts).first().copied()),
                        cmds: cmds.iter().map(|parts| to_cmd(parts)).collect(),
                    },
                    Unit::Spanning(parts) => Request::Spanning(to_cmd(parts)),
                }
            })
            .collect();
        Plan { guarded, requests }
    }

    /// Whether the plan can join a batch: no transaction or whole script, and on a cluster
    /// (`per_slot`) no command whose keys span slots, since a batch is cut by slot there.
    pub fn batchable(&self, per_slot: bool) -> bool {
        self.requests.iter().all(|r| match r {
            Request::Commands { .. } => true,
            Request::Spanning(_) => !per_slot,
            Request::Atomic(_) => false,
        })
    }
}

fn to_cmd(parts: &[&[u8]]) -> Cmd {
    let mut cmd = Cmd::new();
    for p in parts {
        cmd.arg(*p);
    }
    cmd
}

/// What applying a task came to.
pub(crate) enum Applied {
    Ok,
    /// Redis could not be reached; the task itself is fine.
    Unreachable(String),
    Failed(Failure, String),
}

/// Sends the plan's requests one after the other and judges the replies.
pub(crate) async fn apply<C: ConnectionLike + Clone>(redis: &C, task: &RedisTask, plan: &Plan) -> Applied {
    if task.mode == Mode::Log {
        metrics::counter!(counters::LOGGED).increment(1);
        tracing::warn!(keys = %task.describe(), source = %task.source, "task in log mode: logged, not applied");
        return Applied::Ok;
    }
    let mut replies = Vec::with_capacity(plan.requests.len());
    for request in &plan.requests {
        let mut conn = redis.clone();
        let result = match request {
            Request::Commands { cmds, .. } => {
                let pipe = pipeline_of(cmds);
                scope::suppressed(conn.req_packed_commands(&pipe, 0, pipe.len())).await
            }
            Request::Atomic(pipe) => {
                let (offset, count) =
                    if pipe.is_transaction() { (pipe.len() + 1, 1) } else { (0, pipe.len()) };
                let values = scope::suppressed(conn.req_packed_commands(pipe, offset, count)).await;
                values.map(|mut values| match (pipe.is_transaction(), values.pop()) {
                    (true, Some(Value::Array(items))) => items,
                    (true, _) => Vec::new(),
                    (false, last) => {
                        values.extend(last);
                        values
                    }
                })
            }
            Request::Spanning(cmd) => scope::suppressed(conn.req_packed_command(cmd)).await.map(|v| vec![v]),
        };
        match result {
            Err(e) if is_unreachable(&e) => {
                let failure = classify(&e);
                // A guarded apply is safe to repeat: the guard tells whether it already ran.
                return if failure == Failure::Transient(Delivery::Ambiguous)
                    && !task.is_idempotent()
                    && !plan.guarded
                {
                    Applied::Failed(failure, e.to_string())
                } else {
                    Applied::Unreachable(e.to_string())
                };
            }
            Err(e) => return Applied::Failed(classify(&e), e.to_string()),
            Ok(values) => replies.push(values),
        }
    }
    judge(task, plan.guarded, replies.iter().map(Vec::as_slice))
}

/// Applies many tasks' plans in one round trip: one pipeline, or on a cluster (`per_slot`) one
/// pipeline per slot, sent concurrently. Order is kept where it matters: requests of one slot
/// go in task order within one pipeline, and different slots hold different keys.
///
/// Every plan must be [`batchable`](Plan::batchable). An error of a whole request is returned
/// as is: the caller applies the tasks one by one, which is safe because every task in a batch
/// is idempotent or guarded.
pub(crate) async fn apply_batch<C: ConnectionLike + Clone>(
    redis: &C,
    tasks: &[(&RedisTask, &Plan)],
    per_slot: bool,
) -> Result<Vec<Applied>, RedisError> {
    // Where each request's replies land: (task, request within the task, commands).
    struct Part {
        task: usize,
        request: usize,
        count: usize,
    }
    let mut groups: Vec<(Pipeline, Vec<Part>)> = Vec::new();
    let mut group_of: HashMap<Option<Slot>, usize> = HashMap::new();
    for (t, (_, plan)) in tasks.iter().enumerate() {
        for (r, request) in plan.requests.iter().enumerate() {
            let (slot, cmds): (Option<Slot>, Vec<&Cmd>) = match request {
                Request::Commands { slot, cmds } => (*slot, cmds.iter().collect()),
                Request::Spanning(cmd) => (None, vec![cmd]),
                Request::Atomic(_) => unreachable!("apply_batch takes batchable plans only"),
            };
            let key = if per_slot { slot } else { None };
            let g = *group_of.entry(key).or_insert_with(|| {
                groups.push((redis::pipe(), Vec::new()));
                groups.len() - 1
            });
            let (pipe, parts) = &mut groups[g];
            for cmd in &cmds {
                pipe.add_command((*cmd).clone());
            }
            parts.push(Part { task: t, request: r, count: cmds.len() });
        }
    }
    let sent = groups.iter().map(|(pipe, _)| {
        let mut conn = redis.clone();
        async move { scope::suppressed(conn.req_packed_commands(pipe, 0, pipe.len())).await }
    });
    let results = futures_util::future::join_all(sent).await;
    let mut replies: Vec<Vec<Vec<Value>>> =
        tasks.iter().map(|(_, plan)| vec![Vec::new(); plan.requests.len()]).collect();
    for ((_, parts), result) in groups.into_iter().zip(results) {
        let mut values = result?.into_iter();
        for part in parts {
            replies[part.task][part.request] = values.by_ref().take(part.count).collect();
        }
    }
    Ok(tasks
        .iter()
        .zip(replies)
        .map(|((task, plan), replies)| judge(task, plan.guarded, replies.iter().map(Vec::as_slice)))
        .collect())
}

fn pipeline_of(cmds: &[Cmd]) -> Pipeline {
    let mut pipe = redis::pipe();
    for cmd in cmds {
        pipe.add_command(cmd.clone());
    }
    pipe
}

/// What the replies of a task's requests say: the worst error reply, or applied. A guarded
/// task whose every guard says "already applied" counts as a duplicate, not an error.
fn judge<'a>(task: &RedisTask, guarded: bool, replies: impl Iterator<Item = &'a [Value]>) -> Applied {
    let mut worst: Option<(Failure, String)> = None;
    // Stays true only if the guard of every request says it already ran.
    let mut already_applied = guarded;
    for values in replies {
        for reply in values {
            if let Value::ServerError(e) = reply {
                let failure = classify_server_error(e);
                if worst.as_ref().is_none_or(|(f, _)| f.is_transient()) {
                    worst = Some((failure, e.to_string()));
                }
            }
        }
        if !matches!(values.first(), Some(Value::Int(0))) {
            already_applied = false;
        }
    }
    match worst {
        None if already_applied => {
            metrics::counter!(counters::DEDUPLICATED).increment(1);
            tracing::info!(task_id = %task.id, keys = %task.describe(), "non-idempotent task already applied; not applied again");
            Applied::Ok
        }
        None => Applied::Ok,
        Some((failure, err)) => Applied::Failed(failure, err),
    }
}

/// Whether a whole-request error says the pipeline mixed slots: the connection is a cluster
/// client, and batches must be cut by slot.
pub(crate) fn is_cross_slot(e: &RedisError) -> bool {
    matches!(e.kind(), redis::ErrorKind::Server(redis::ServerErrorKind::CrossSlot))
}

/// `commands` as one script that first sets the guard key of `guard_id` (`SET NX`) and runs
/// the commands only if the guard was not there: a redelivered non-idempotent task is applied
/// at most once. The guard lives in the slot of the first key (hash tag), so the script is
/// valid in Redis Cluster when the commands' keys share a slot, which [`Plan::new`] sees to.
/// Returns the script's slot with it.
fn guarded_command(commands: &[Vec<&[u8]>], guard_id: &str, ttl_secs: u64) -> (Option<Slot>, Cmd) {
    let mut keys: Vec<&[u8]> = Vec::new();
    for parts in commands {
        if let Some(spec) = crate::commands::lookup(parts) {
            for key in crate::commands::keys(spec, parts) {
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
        }
    }
    let guard = guard_key(keys.first().copied().unwrap_or_default(), guard_id);
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(GUARD_SCRIPT).arg(1 + keys.len()).arg(guard.as_slice());
    for k in &keys {
        cmd.arg(*k);
    }
    cmd.arg(ttl_secs).arg(commands.len());
    for parts in commands {
        cmd.arg(parts.len());
        for p in parts {
            cmd.arg(*p);
        }
    }
    (Some(Slot::for_key(&guard)), cmd)
}

/// Runs a task's commands once per guard key: `KEYS[1]` is the guard, `KEYS[2..]` the task's
/// keys (declared for Cluster routing), `ARGV` the guard's TTL, the number of commands, then
/// each command as its argument count and arguments. Returns 1 when applied, 0 when the guard
/// says it already was.
const GUARD_SCRIPT: &str = r#"
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  return 0
end
local at = 3
for _ = 1, tonumber(ARGV[2]) do
  local argc = tonumber(ARGV[at])
  local args = {}
  for j = 1, argc do
    args[j] = ARGV[at + j]
  end
  at = at + argc + 1
  redis.call(unpack(args))
end
return 1
"#;

/// `redis-retry:applied:{<tag>}:<task id>`, with a tag that puts it in the Cluster slot of `key`.
fn guard_key(key: &[u8], task_id: &str) -> Vec<u8> {
    // Redis hashes only the part between the first `{` and the next `}` when that is not empty.
    let hash_tag = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        rest.iter().position(|&b| b == b'}').filter(|&close| close > 0).map(|close| &rest[..close])
    });
    let tag: Vec<u8> = match hash_tag {
        Some(tag) => tag.to_vec(),
        // Braced, the key hashes as itself unless it holds a `}` of its own.
        None if !key.is_empty() && !key.contains(&b'}') => key.to_vec(),
        None => {
            // Rare: find a short tag of the same slot (one in 16384 tags matches).
            let slot = Slot::for_key(key);
            (0u32..)
                .map(|n| n.to_string().into_bytes())
                .find(|t| Slot::for_key(t) == slot)
                .unwrap_or_default()
        }
    };
    let mut out = b"redis-retry:applied:{".to_vec();
    out.extend_from_slice(&tag);
    out.extend_from_slice(b"}:");
    out.extend_from_slice(task_id.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_key_hashes_to_the_slot_of_the_task_key() {
        assert_eq!(guard_key(b"counter", "t1"), b"redis-retry:applied:{counter}:t1".to_vec());
        assert_eq!(guard_key(b"user:{42}:visits", "t1"), b"redis-retry:applied:{42}:t1".to_vec());
        for key in [&b"counter"[..], b"user:{42}:visits", b"a{}b", b"a}b", b"{", b"}", b"x{y", b"", b"{}{z}"]
        {
            assert_eq!(
                Slot::for_key(guard_key(key, "task")),
                Slot::for_key(key),
                "{}",
                String::from_utf8_lossy(key)
            );
        }
    }

    #[test]
    fn a_plan_of_one_slot_is_one_batchable_request() {
        let task = RedisTask::set("user:1", "v", Duration::from_secs(60)).unwrap();
        let plan = Plan::new(&task, Duration::from_secs(60));
        assert!(!plan.guarded);
        assert!(plan.batchable(true));
        assert!(
            matches!(&plan.requests[..], [Request::Commands { slot: Some(s), cmds }] if *s == Slot::for_key("user:1") && cmds.len() == 1)
        );
    }

    #[test]
    fn non_idempotent_replays_are_guarded_and_transactions_stay_whole() {
        let incr = RedisTask::command("INCRBY", ["hits", "2"]).unwrap();
        let plan = Plan::new(&incr, Duration::from_secs(60));
        assert!(plan.guarded && plan.batchable(true));
        let mut tx = RedisTask::pipeline(vec![
            crate::RedisCmd::new("SET", ["a", "1"]),
            crate::RedisCmd::new("SET", ["a", "2"]),
        ])
        .unwrap();
        tx.atomic = true;
        assert!(!Plan::new(&tx, Duration::from_secs(60)).batchable(false));
    }

    #[test]
    fn a_command_spanning_slots_is_batched_on_one_server_only() {
        let del = RedisTask::command("DEL", ["a", "b"]).unwrap();
        let plan = Plan::new(&del, Duration::from_secs(60));
        assert!(plan.batchable(false));
        assert!(!plan.batchable(true));
    }
}
