//! How a task becomes requests to Redis, and what the replies say about it.
//!
//! A task is cut into requests a Redis Cluster node can serve (see [`slots`](crate::slots)).
//! Non-idempotent tasks in `replay` mode are *guarded*: each request is one script that runs the
//! commands unless the guard key says they already ran, and writes the guard only once they
//! succeeded, so a redelivered task is applied once and a failed one (a WRONGTYPE the operator
//! then fixes) can be retried or replayed. A command too large for a script's argument list
//! goes through a guard claimed around it instead (see [`Request::Staged`]). The consumer sends
//! one task's requests on their own, or the requests of many tasks in one pipeline (see
//! [`apply_batch`]).

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::cluster_routing::Slot;
use redis::{Cmd, Pipeline, RedisError, Value};

use crate::counters;
use crate::errors::{
    classify, classify_server_error, describe_error_reply, describe_redis_error, is_unreachable, Delivery,
    Failure,
};
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
    /// Guarded commands with more arguments than a script can pass on (Lua's stack holds
    /// about 8,000 values): the guard is claimed by a small script, the commands go on their
    /// own, one at a time (or as one MULTI/EXEC when `atomic`), and the guard then records how
    /// far they got.
    Staged { guard: Vec<u8>, cmds: Vec<Cmd>, ttl_secs: u64, atomic: bool },
}

/// The most arguments a command may have to run inside the guard script: `unpack` puts them
/// all on Lua's stack, which Redis caps at 8,000 slots.
const SCRIPT_ARGS_LIMIT: usize = 7_000;

/// What to send for one task.
pub(crate) struct Plan {
    /// Whether the requests are guard scripts (replies 1 applied, 0 already applied).
    pub guarded: bool,
    pub requests: Vec<Request>,
}

impl Plan {
    /// The requests of `task` in its mode; `guard_ttl` is how long a guard key lives.
    pub fn new(task: &RedisTask, guard_ttl: Duration) -> Plan {
        if task.mode == Mode::Log {
            return Plan { guarded: false, requests: Vec::new() };
        }
        if let Some(plan) = Plan::one_idempotent_command(task) {
            return plan;
        }
        // `RedisTask::is_idempotent`, on commands listed once: this runs for every task the
        // consumer reads, and the list is needed below as well.
        let listed = task.commands();
        let guarded =
            task.mode == Mode::Replay && task.kind != TaskKind::Lua && !crate::task::all_idempotent(&listed);
        let guard_ttl = guard_ttl.as_secs().max(1);
        if task.mode == Mode::Replay && (task.kind == TaskKind::Lua || task.atomic) {
            let request = if guarded {
                guarded_request(&task.commands(), &task.id, guard_ttl, task.atomic)
            } else {
                Request::Atomic(task.to_pipeline())
            };
            return Plan { guarded, requests: vec![request] };
        }
        let commands: Vec<Vec<&[u8]>> = match task.mode {
            Mode::Invalidate => task.touched_keys().into_iter().map(|k| vec![&b"DEL"[..], k]).collect(),
            _ => listed,
        };
        let units = slots::units(commands);
        let several = units.len() > 1;
        let requests = units
            .iter()
            .enumerate()
            .map(|(i, unit)| {
                // Each unit is guarded on its own; a task of one unit keeps the task's guard.
                // Built only for a guarded task: the others, most of a backlog, need no copy.
                let guard_id = || if several { format!("{}/{i}", task.id) } else { task.id.clone() };
                match unit {
                    Unit::Slot(_, cmds) if guarded => guarded_request(cmds, &guard_id(), guard_ttl, false),
                    Unit::Spanning(parts) if guarded => {
                        guarded_request(std::slice::from_ref(parts), &guard_id(), guard_ttl, false)
                    }
                    Unit::Slot(slot, cmds) => Request::Commands {
                        slot: *slot,
                        cmds: cmds.iter().map(|parts| to_cmd(parts)).collect(),
                    },
                    Unit::Spanning(parts) => Request::Spanning(to_cmd(parts)),
                }
            })
            .collect();
        Plan { guarded, requests }
    }

    /// Most of a backlog is one idempotent write: its plan is the command itself, in its
    /// slot, built without the lists and units a pipeline or a guarded task needs (the
    /// consumer plans every task it reads). `None` for any other task.
    fn one_idempotent_command(task: &RedisTask) -> Option<Plan> {
        if task.kind != TaskKind::Simple || task.mode != Mode::Replay || task.atomic {
            return None;
        }
        let parts = task.simple_parts();
        let class = crate::commands::classify(&parts)?;
        if !matches!(class.access, crate::commands::Access::Write { idempotent: true }) {
            return None;
        }
        let slots = slots::distinct_slots(crate::commands::keys(class.spec, &parts));
        let request = match slots[..] {
            [_, _, ..] => Request::Spanning(to_cmd(&parts)),
            _ => Request::Commands { slot: slots.first().copied(), cmds: vec![to_cmd(&parts)] },
        };
        Some(Plan { guarded: false, requests: vec![request] })
    }

    /// Whether the plan can join a batch: no transaction or whole script, and on a cluster
    /// (`per_slot`) no command whose keys span slots, since a batch is cut by slot there.
    pub fn batchable(&self, per_slot: bool) -> bool {
        self.requests.iter().all(|r| match r {
            Request::Commands { .. } => true,
            Request::Spanning(_) => !per_slot,
            Request::Atomic(_) | Request::Staged { .. } => false,
        })
    }
}

fn to_cmd(parts: &[&[u8]]) -> Cmd {
    // Sized up front: grown argument by argument, the buffers are reallocated several times.
    let mut cmd = Cmd::with_capacity(parts.len(), parts.iter().map(|p| p.len()).sum());
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
    /// The reply did not come within the response timeout: the request may still be running.
    TimedOut(String),
    /// A Lua task ran past the script time budget and was killed (or could not be).
    ScriptKilled(String),
    Failed(Failure, String),
}

/// Where a task is applied: the connection its requests go on, the one that can still reach
/// Redis while the first waits (for `SCRIPT KILL`), and how long a script may run.
pub(crate) struct Target<'a, C> {
    pub redis: &'a C,
    pub control: &'a C,
    pub script_timeout: Duration,
}

/// Sends the plan's requests one after the other and judges the replies.
pub(crate) async fn apply<C: ConnectionLike + Clone>(
    target: &Target<'_, C>,
    task: &RedisTask,
    plan: &Plan,
) -> Applied {
    if task.mode == Mode::Log {
        metrics::counter!(counters::LOGGED).increment(1);
        tracing::warn!(command = %task.log_commands(), keys = %task.log_keys(), source = %task.source, "task in log mode: logged, not applied");
        return Applied::Ok;
    }
    let redis = target.redis;
    let mut replies = Vec::with_capacity(plan.requests.len());
    for request in &plan.requests {
        let mut conn = redis.clone();
        let result = match request {
            Request::Commands { cmds, .. } => {
                let pipe = pipeline_of(cmds);
                let values = scope::suppressed(conn.req_packed_commands(&pipe, 0, pipe.len())).await;
                values.map(|mut values| {
                    forgive_gone_sources(cmds.iter(), &mut values);
                    values
                })
            }
            Request::Atomic(pipe) if task.kind == TaskKind::Lua => match run_script(target, pipe).await {
                Ok(result) => result,
                Err(killed) => return killed,
            },
            Request::Atomic(pipe) => {
                let (offset, count) =
                    if pipe.is_transaction() { (pipe.len() + 1, 1) } else { (0, pipe.len()) };
                let values = scope::suppressed(conn.req_packed_commands(pipe, offset, count)).await;
                values.map(|mut values| {
                    let mut values = match (pipe.is_transaction(), values.pop()) {
                        (true, Some(Value::Array(items))) => items,
                        (true, _) => Vec::new(),
                        (false, last) => {
                            values.extend(last);
                            values
                        }
                    };
                    forgive_gone_sources(pipe.cmd_iter(), &mut values);
                    values
                })
            }
            Request::Spanning(cmd) => scope::suppressed(conn.req_packed_command(cmd)).await.map(|v| {
                let mut values = vec![v];
                forgive_gone_sources(std::iter::once(cmd), &mut values);
                values
            }),
            Request::Staged { guard, cmds, ttl_secs, atomic } => {
                let staging = Staging { guard, ttl_secs: *ttl_secs, atomic: *atomic };
                match staged(redis, task, plan, &staging, cmds).await {
                    Ok(values) => Ok(values),
                    Err(applied) => return applied,
                }
            }
        };
        match result {
            Err(e) => return failed_request(task, plan, &e),
            Ok(values) => replies.push(values),
        }
    }
    judge(task, plan.guarded, replies.iter().map(Vec::as_slice))
}

/// What a request that failed as a whole means for its task.
fn failed_request(task: &RedisTask, plan: &Plan, e: &RedisError) -> Applied {
    let error = describe_redis_error(e);
    // A guard tells a later attempt whether a timed-out one ran; without one, a
    // non-idempotent write that timed out may or may not have run.
    if e.is_timeout() && (task.is_idempotent() || plan.guarded) {
        return Applied::TimedOut(error);
    }
    if is_unreachable(e) {
        let failure = classify(e);
        // A guarded apply is safe to repeat: the guard tells whether it already ran.
        return if failure == Failure::Transient(Delivery::Ambiguous) && !task.is_idempotent() && !plan.guarded
        {
            Applied::Failed(failure, error)
        } else {
            Applied::Unreachable(error)
        };
    }
    Applied::Failed(classify(e), error)
}

/// Runs a Lua task within the script time budget. Past it, the script is killed through the
/// control connection (the task's own waits behind the script) and the task is done with.
async fn run_script<C: ConnectionLike + Clone>(
    target: &Target<'_, C>,
    pipe: &Pipeline,
) -> Result<redis::RedisResult<Vec<Value>>, Applied> {
    let mut conn = target.redis.clone();
    let run = scope::suppressed(conn.req_packed_commands(pipe, 0, pipe.len()));
    match tokio::time::timeout(target.script_timeout, run).await {
        Ok(Err(e)) if e.is_timeout() => {}
        Ok(result) => return Ok(result),
        Err(_) => {}
    }
    let outcome = kill_script(target.control).await;
    Err(Applied::ScriptKilled(format!(
        "the script ran past its time budget of {:?}; {outcome}",
        target.script_timeout
    )))
}

/// Sends `SCRIPT KILL` until Redis answers it, and says how that went. Redis reads it only once
/// the script has run for its `busy-reply-threshold`, so an attempt may time out first.
async fn kill_script<C: ConnectionLike + Clone>(control: &C) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while tokio::time::Instant::now() < deadline {
        let mut conn = control.clone();
        let cmd = redis::cmd("SCRIPT").arg("KILL").clone();
        let kill = cmd.query_async::<Value>(&mut conn);
        match tokio::time::timeout(Duration::from_secs(10), kill).await {
            Ok(Ok(_)) => {
                metrics::counter!(counters::SCRIPTS_KILLED).increment(1);
                return "SCRIPT KILL stopped it".to_string();
            }
            Ok(Err(e)) if e.code() == Some("NOTBUSY") => {
                return "it had ended by the time SCRIPT KILL came".to_string()
            }
            Ok(Err(e)) if e.code() == Some("UNKILLABLE") => {
                tracing::error!(
                    "a Lua task ran past its time budget after writing: Redis cannot kill it and stays busy \
                     until it ends (or SHUTDOWN NOSAVE)"
                );
                return "SCRIPT KILL refused: it had already written (UNKILLABLE)".to_string();
            }
            Ok(Err(e)) => last = describe_redis_error(&e),
            Err(_) => last = "no reply to SCRIPT KILL".to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    format!("SCRIPT KILL did not get through within 30 s ({last})")
}

/// Applies guarded commands too large for the guard script: a small script claims the guard
/// (`pending`), the commands go one at a time from where an earlier attempt stopped, then the
/// guard records success (`1`) or how many commands ran (`done:<n>`). A guard left `pending`
/// means an attempt ended without knowing what ran: the task is ambiguous and is not sent
/// again. Returns the replies the guard script would have given.
async fn staged<C: ConnectionLike + Clone>(
    redis: &C,
    task: &RedisTask,
    plan: &Plan,
    staging: &Staging<'_>,
    cmds: &[Cmd],
) -> Result<Vec<Value>, Applied> {
    let Staging { guard, ttl_secs, atomic } = *staging;
    let mut conn = redis.clone();
    let request_failed = |e: RedisError| failed_request(task, plan, &e);
    let claim = redis::cmd("EVAL").arg(CLAIM_SCRIPT).arg(1).arg(guard).arg(ttl_secs).clone();
    let done = match scope::suppressed(conn.req_packed_command(&claim)).await.map_err(request_failed)? {
        Value::Int(n) => n,
        Value::ServerError(e) => {
            return Err(Applied::Failed(
                classify_server_error(&e),
                describe_error_reply(e.code(), e.details()),
            ))
        }
        _ => 0,
    };
    match done {
        -1 => return Ok(vec![Value::Int(0)]),
        -2 => {
            return Err(Applied::Failed(
                Failure::Transient(Delivery::Ambiguous),
                "an earlier attempt ended without recording what it applied".to_string(),
            ))
        }
        _ => {}
    }
    let ambiguous = |e: RedisError| match request_failed(e) {
        // What ran is unknown: the guard stays `pending`, and says so to the next attempt.
        Applied::Unreachable(error) | Applied::TimedOut(error) => {
            Applied::Failed(Failure::Transient(Delivery::Ambiguous), error)
        }
        other => other,
    };
    if atomic {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for cmd in cmds {
            pipe.add_command(cmd.clone());
        }
        let reply =
            scope::suppressed(conn.req_packed_commands(&pipe, pipe.len() + 1, 1)).await.map_err(ambiguous)?;
        let failed = reply.iter().find_map(|v| match v {
            // EXECABORT: nothing ran.
            Value::ServerError(e) => Some((e.clone(), true)),
            // A command failed inside EXEC, the others ran: the guard stays claimed, and a
            // later attempt is ambiguous rather than running them twice.
            Value::Array(items) => items.iter().find_map(|v| match v {
                Value::ServerError(e) => Some((e.clone(), false)),
                _ => None,
            }),
            _ => None,
        });
        if let Some((e, none_ran)) = failed {
            if none_ran {
                let release = redis::cmd("DEL").arg(guard).clone();
                scope::suppressed(conn.req_packed_command(&release)).await.map_err(ambiguous)?;
            }
            return Err(Applied::Failed(
                classify_server_error(&e),
                describe_error_reply(e.code(), e.details()),
            ));
        }
    }
    for (i, cmd) in cmds.iter().enumerate().skip(done.max(0) as usize).filter(|_| !atomic) {
        let reply = scope::suppressed(conn.req_packed_command(cmd)).await.map_err(ambiguous)?;
        let Value::ServerError(e) = reply else { continue };
        // Refused: nothing of this command ran; the guard records the ones before it.
        let record = if i == 0 {
            redis::cmd("DEL").arg(guard).clone()
        } else {
            redis::cmd("SET").arg(guard).arg(format!("done:{i}")).arg("EX").arg(ttl_secs).clone()
        };
        scope::suppressed(conn.req_packed_command(&record)).await.map_err(ambiguous)?;
        return Err(Applied::Failed(classify_server_error(&e), describe_error_reply(e.code(), e.details())));
    }
    let record = redis::cmd("SET").arg(guard).arg("1").arg("EX").arg(ttl_secs).clone();
    scope::suppressed(conn.req_packed_command(&record)).await.map_err(ambiguous)?;
    Ok(vec![Value::Int(1)])
}

/// The guard of a staged request and how its commands go.
#[derive(Clone, Copy)]
struct Staging<'a> {
    guard: &'a [u8],
    ttl_secs: u64,
    atomic: bool,
}

/// `RENAME` and `RENAMENX` of a source that is gone: the rename already happened (see the
/// command table), so `ERR no such key` counts as done.
fn is_gone_source(cmd: &Cmd, reply: &redis::ServerError) -> bool {
    reply.code() == "ERR"
        && reply.details().map(str::trim) == Some("no such key")
        && cmd.args_iter().next().is_some_and(|name| match name {
            redis::Arg::Simple(name) => {
                name.eq_ignore_ascii_case(b"RENAME") || name.eq_ignore_ascii_case(b"RENAMENX")
            }
            _ => false,
        })
}

fn forgive_gone_sources<'a>(cmds: impl Iterator<Item = &'a Cmd>, values: &mut [Value]) {
    for (cmd, value) in cmds.zip(values.iter_mut()) {
        if let Value::ServerError(e) = value {
            if is_gone_source(cmd, e) {
                *value = Value::Okay;
            }
        }
    }
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
    // Where one request's replies land: in which pipeline, from where, how many. Parts are
    // listed in task order, and a task's in request order, so each task's replies are read
    // as slices of the pipelines' replies, with no list of its own.
    struct Part {
        task: usize,
        request: usize,
        group: usize,
        start: usize,
        len: usize,
    }
    let mut groups: Vec<Pipeline> = Vec::new();
    let mut parts: Vec<Part> = Vec::with_capacity(tasks.len());
    // Only a cluster has more than one group: a single server's batch is one pipeline, and
    // need not hash a slot per request to find it.
    let mut group_of: HashMap<Option<Slot>, usize> = HashMap::new();
    for (t, (_, plan)) in tasks.iter().enumerate() {
        for (r, request) in plan.requests.iter().enumerate() {
            let (slot, cmds) = batched(request);
            let group = if per_slot {
                *group_of.entry(slot).or_insert_with(|| {
                    groups.push(redis::pipe());
                    groups.len() - 1
                })
            } else {
                if groups.is_empty() {
                    groups.push(redis::pipe());
                }
                0
            };
            let pipe = &mut groups[group];
            let start = pipe.len();
            for cmd in cmds {
                pipe.add_command(cmd.clone());
            }
            parts.push(Part { task: t, request: r, group, start, len: cmds.len() });
        }
    }
    let sent = groups.iter().map(|pipe| {
        let mut conn = redis.clone();
        async move { scope::suppressed(conn.req_packed_commands(pipe, 0, pipe.len())).await }
    });
    let mut replies =
        futures_util::future::join_all(sent).await.into_iter().collect::<Result<Vec<_>, _>>()?;
    // A pipeline answers every command; should one answer short, the missing replies read
    // as none rather than as another request's.
    for part in &parts {
        if let Some(values) = replies[part.group].get_mut(part.start..part.start + part.len) {
            let (_, cmds) = batched(&tasks[part.task].1.requests[part.request]);
            forgive_gone_sources(cmds.iter(), values);
        }
    }
    let mut next = 0;
    Ok(tasks
        .iter()
        .enumerate()
        .map(|(t, (task, plan))| {
            let own = parts[next..].iter().take_while(|p| p.task == t);
            next += own.clone().count();
            let replies = own.map(|p| replies[p.group].get(p.start..p.start + p.len).unwrap_or_default());
            judge(task, plan.guarded, replies)
        })
        .collect())
}

/// The slot and the commands of a batchable request (a spanning command has no one slot).
fn batched(request: &Request) -> (Option<Slot>, &[Cmd]) {
    match request {
        Request::Commands { slot, cmds } => (*slot, cmds),
        Request::Spanning(cmd) => (None, std::slice::from_ref(cmd)),
        Request::Atomic(_) | Request::Staged { .. } => unreachable!("apply_batch takes batchable plans only"),
    }
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
                    worst = Some((failure, describe_error_reply(e.code(), e.details())));
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
            tracing::info!(task_id = %task.id, command = %task.log_commands(), keys = %task.log_keys(), "non-idempotent task already applied; not applied again");
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

/// `commands` guarded by the guard key of `guard_id`: one script that runs them unless the
/// guard says they ran, and records their success in the same script, so a redelivered
/// non-idempotent task is applied once and a failed one can be retried. The guard lives in the
/// slot of the first key (hash tag), so the script is valid in Redis Cluster when the commands'
/// keys share a slot, which [`Plan::new`] sees to. Commands too long for a script are staged.
fn guarded_request(commands: &[Vec<&[u8]>], guard_id: &str, ttl_secs: u64, atomic: bool) -> Request {
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
    let slot = Some(Slot::for_key(&guard));
    if commands.iter().any(|parts| parts.len() > SCRIPT_ARGS_LIMIT) {
        let cmds = commands.iter().map(|parts| to_cmd(parts)).collect();
        return Request::Staged { guard, cmds, ttl_secs, atomic };
    }
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
    Request::Commands { slot, cmds: vec![cmd] }
}

/// Runs a task's commands once per guard key: `KEYS[1]` is the guard, `KEYS[2..]` the task's
/// keys (declared for Cluster routing), `ARGV` the guard's TTL, the number of commands, then
/// each command as its argument count and arguments. Returns 1 when applied, 0 when the guard
/// says it already was, or the first command's error. The guard is `1` once every command
/// succeeded and `done:<n>` when the first n did and the next failed: a retry resumes after
/// them, so none runs twice and a failure never passes for success.
const GUARD_SCRIPT: &str = r#"
local seen = redis.call('GET', KEYS[1])
if seen == '1' then
  return 0
end
local done = 0
if seen then
  done = tonumber(string.match(seen, '^done:(%d+)$')) or 0
end
local at = 3
for i = 1, tonumber(ARGV[2]) do
  local argc = tonumber(ARGV[at])
  if i > done then
    local args = {}
    for j = 1, argc do
      args[j] = ARGV[at + j]
    end
    local reply = redis.pcall(unpack(args))
    if type(reply) == 'table' and reply.err then
      if i > 1 then
        redis.call('SET', KEYS[1], 'done:' .. (i - 1), 'EX', ARGV[1])
      end
      return reply
    end
  end
  at = at + argc + 1
end
redis.call('SET', KEYS[1], '1', 'EX', ARGV[1])
return 1
"#;

/// Claims the guard `KEYS[1]` of a staged request for `ARGV[1]` seconds: -1 when it records
/// success, -2 when an earlier attempt left it claimed, otherwise how many commands already ran.
const CLAIM_SCRIPT: &str = r#"
local seen = redis.call('GET', KEYS[1])
if seen == '1' then
  return -1
end
if seen == 'pending' then
  return -2
end
local done = 0
if seen then
  done = tonumber(string.match(seen, '^done:(%d+)$')) or 0
end
redis.call('SET', KEYS[1], 'pending', 'EX', ARGV[1])
return done
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
