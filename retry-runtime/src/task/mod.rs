//! `RedisTask`: one failed Redis write, as it travels through Kafka.
//!
//! The JSON form is wire-compatible with the seed's Go `RedisTask`: a message exactly as Go's
//! `encoding/json` marshals that struct is accepted (its `null` slices, RFC 3339 timestamps with
//! nanoseconds and an offset, `args` as strings and numbers), and so is the later Go services'
//! DEL-only form (see `wire`). Fields added here (`id`, `mode`, `atomic`, `not_before`,
//! `span_id`, `parent_span_id`) are optional on input.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::commands::{self, Access};
use crate::errors::TaskError;

mod arg;
mod timestamp;
mod wire;

pub use arg::Arg;
pub(crate) use wire::decode;

/// Retries a task gets when nobody says otherwise (the seed's default).
pub const DEFAULT_MAX_RETRIES: u32 = 3;
/// The largest `max_retries` a task may carry; more would only delay the dead-letter queue.
pub const MAX_RETRIES_LIMIT: u32 = 100;

/// The three shapes of task the seed defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskKind {
    /// One command: `command` + `args`.
    Simple,
    /// Several commands: `pipeline_cmds` (atomic when `atomic` is set).
    Pipeline,
    /// A Lua script: `lua_script` + `lua_keys` + `lua_args`.
    Lua,
}

impl TaskKind {
    /// The name used on the wire and in logs (`task_type`).
    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::Simple => "simple",
            TaskKind::Pipeline => "pipeline",
            TaskKind::Lua => "lua",
        }
    }
}

/// What the consumer does with a task.
///
/// ```
/// use redis_retry_runtime::Mode;
/// assert_eq!("invalidate".parse::<Mode>().unwrap(), Mode::Invalidate);
/// assert!("upsert".parse::<Mode>().unwrap_err().contains("replay, invalidate, log"));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Re-execute the captured command(s) exactly (the seed's behaviour).
    #[default]
    Replay,
    /// Re-execute as `DEL` of every key the failed write touched: a late retry can never write
    /// back a stale value, which is what cache-aside keys need.
    Invalidate,
    /// Fire and forget (seed §1.1, read-path backfill): logged and counted, never queued.
    Log,
}

impl Mode {
    /// Every mode, for messages that list the valid choices.
    pub const ALL: [Mode; 3] = [Mode::Replay, Mode::Invalidate, Mode::Log];

    /// The name used on the wire and in the attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Replay => "replay",
            Mode::Invalidate => "invalidate",
            Mode::Log => "log",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mode::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| format!("unknown mode `{s}`: expected one of replay, invalidate, log"))
    }
}

/// One command of a pipeline task (the seed's `RedisCmd`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedisCmd {
    /// Command name, any case (`"del"`, `"SET"`).
    pub command: String,
    /// Arguments after the name.
    #[serde(default, deserialize_with = "wire::null_as_empty")]
    pub args: Vec<Arg>,
}

impl RedisCmd {
    /// A command from its name and arguments.
    ///
    /// ```
    /// use redis_retry_runtime::RedisCmd;
    /// let cmd = RedisCmd::new("del", ["user:info:1"]);
    /// assert_eq!(cmd.args.len(), 1);
    /// ```
    pub fn new<A: Into<Arg>>(command: impl Into<String>, args: impl IntoIterator<Item = A>) -> Self {
        RedisCmd { command: command.into(), args: args.into_iter().map(Into::into).collect() }
    }

    /// Name and arguments as one list of byte slices, the shape the command table reads.
    pub fn parts(&self) -> Vec<&[u8]> {
        std::iter::once(self.command.as_bytes()).chain(self.args.iter().map(Arg::as_bytes)).collect()
    }

    fn to_redis(&self) -> redis::Cmd {
        let mut cmd = redis::cmd(&self.command);
        for a in &self.args {
            cmd.arg(a.as_bytes());
        }
        cmd
    }
}

/// Trace metadata carried with a task (the seed's `WithContext(ctx)`).
///
/// ```
/// use redis_retry_runtime::TaskContext;
/// let ctx = TaskContext::new().trace_id("abc123").user_uuid("user123");
/// assert_eq!(ctx.trace_id, "abc123");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskContext {
    /// Request trace id.
    pub trace_id: String,
    /// The user the request acted for.
    pub user_uuid: String,
    /// The device the request came from.
    pub device_id: String,
}

impl From<&TaskContext> for TaskContext {
    fn from(ctx: &TaskContext) -> Self {
        ctx.clone()
    }
}

impl TaskContext {
    /// An empty context.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the trace id.
    pub fn trace_id(mut self, v: impl Into<String>) -> Self {
        self.trace_id = v.into();
        self
    }
    /// Sets the user uuid.
    pub fn user_uuid(mut self, v: impl Into<String>) -> Self {
        self.user_uuid = v.into();
        self
    }
    /// Sets the device id.
    pub fn device_id(mut self, v: impl Into<String>) -> Self {
        self.device_id = v.into();
        self
    }
}

/// A failed Redis write waiting to be re-applied.
///
/// Build one with the seed's builders and chain methods:
///
/// ```
/// use std::time::Duration;
/// use redis_retry_runtime::{RedisTask, TaskKind};
/// let task = RedisTask::set("device:token:d1", "abc", Duration::from_secs(300))?
///     .with_source("DeviceRepository.SaveToken")
///     .with_max_retries(5)?;
/// assert_eq!(task.kind, TaskKind::Simple);
/// assert_eq!(task.first_key(), Some(&b"device:token:d1"[..]));
/// # Ok::<(), redis_retry_runtime::TaskError>(())
/// ```
///
/// On the wire it is JSON (see [`RedisTask::from_json`] for the forms accepted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "wire::WireTask")]
pub struct RedisTask {
    /// Unique id (UUID v7, time-ordered). A Go task carries none: the consumer names it by
    /// where it was first read (`topic:partition:offset`), and the name travels with it.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// Which of the three shapes this is.
    #[serde(rename = "type")]
    pub kind: TaskKind,
    /// Command name of a simple task.
    pub command: String,
    /// Arguments of a simple task, after the name.
    pub args: Vec<Arg>,
    /// Commands of a pipeline task.
    pub pipeline_cmds: Vec<RedisCmd>,
    /// Whether a pipeline task runs as MULTI/EXEC.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub atomic: bool,
    /// Body of a Lua task.
    pub lua_script: String,
    /// `KEYS` of a Lua task.
    pub lua_keys: Vec<Arg>,
    /// `ARGV` of a Lua task.
    pub lua_args: Vec<Arg>,
    /// Trace id of the request that failed.
    pub trace_id: String,
    /// Span of the request that failed (the later Go services' `span_id`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub span_id: String,
    /// Parent of that span (the later Go services' `parent_span_id`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub parent_span_id: String,
    /// User of the request that failed.
    pub user_uuid: String,
    /// Device of the request that failed.
    pub device_id: String,
    /// When the failure was captured (the seed's `timestamp`); `max_age` counts from here.
    #[serde(rename = "timestamp")]
    pub captured_at: DateTime<Utc>,
    /// Applies already attempted by the consumer and failed.
    pub retry_count: u32,
    /// Retries allowed before the dead-letter queue.
    pub max_retries: u32,
    /// The error that made the write fail (latest first-hand error after retries).
    pub original_err: String,
    /// Where the write came from, e.g. `UserRepository.DeleteUserCache`.
    pub source: String,
    /// What the consumer does with the task.
    pub mode: Mode,
    /// Earliest time of the next attempt (set on retry-tier messages).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_before: Option<DateTime<Utc>>,
}

fn require_key(builder: &'static str, key: &str) -> Result<(), TaskError> {
    if key.is_empty() {
        Err(TaskError::EmptyKey { builder })
    } else {
        Ok(())
    }
}

impl RedisTask {
    fn new(kind: TaskKind) -> Self {
        RedisTask {
            id: uuid::Uuid::now_v7().to_string(),
            kind,
            command: String::new(),
            args: Vec::new(),
            pipeline_cmds: Vec::new(),
            atomic: false,
            lua_script: String::new(),
            lua_keys: Vec::new(),
            lua_args: Vec::new(),
            trace_id: String::new(),
            span_id: String::new(),
            parent_span_id: String::new(),
            user_uuid: String::new(),
            device_id: String::new(),
            captured_at: Utc::now(),
            retry_count: 0,
            max_retries: DEFAULT_MAX_RETRIES,
            original_err: String::new(),
            source: String::new(),
            mode: Mode::Replay,
            not_before: None,
        }
    }

    /// A simple task from a command name and its arguments. The command must be a write
    /// known to the command table.
    ///
    /// ```
    /// use redis_retry_runtime::RedisTask;
    /// let task = RedisTask::command("expire", ["session:1", "60"])?;
    /// assert_eq!(task.command, "expire");
    /// assert!(RedisTask::command("flushall", Vec::<String>::new()).is_err());
    /// # Ok::<(), redis_retry_runtime::TaskError>(())
    /// ```
    pub fn command<A: Into<Arg>>(
        name: impl Into<String>,
        args: impl IntoIterator<Item = A>,
    ) -> Result<Self, TaskError> {
        let mut task = Self::new(TaskKind::Simple);
        task.command = name.into();
        task.args = args.into_iter().map(Into::into).collect();
        task.validate()?;
        Ok(task)
    }

    /// `DEL key` (seed: `BuildDelTask`).
    ///
    /// ```
    /// use redis_retry_runtime::{RedisTask, TaskError};
    /// assert!(RedisTask::del("user:1").is_ok());
    /// assert!(matches!(RedisTask::del(""), Err(TaskError::EmptyKey { .. })));
    /// ```
    pub fn del(key: impl Into<String>) -> Result<Self, TaskError> {
        let key = key.into();
        require_key("del", &key)?;
        Self::command("del", [key])
    }

    /// `SET key value`, with `EX seconds` (or `PX` for sub-second TTLs) when `ttl` is not zero
    /// (seed: `BuildSetTask`).
    ///
    /// ```
    /// use std::time::Duration;
    /// use redis_retry_runtime::RedisTask;
    /// let t = RedisTask::set("token:1", "abc", Duration::from_secs(300))?;
    /// let args: Vec<&[u8]> = t.args.iter().map(|a| a.as_bytes()).collect();
    /// assert_eq!(args, [&b"token:1"[..], b"abc", b"EX", b"300"]);
    /// # Ok::<(), redis_retry_runtime::TaskError>(())
    /// ```
    pub fn set(
        key: impl Into<String>,
        value: impl Into<Arg>,
        ttl: std::time::Duration,
    ) -> Result<Self, TaskError> {
        let key = key.into();
        require_key("set", &key)?;
        let mut args: Vec<Arg> = vec![key.into(), value.into()];
        if !ttl.is_zero() {
            if ttl.subsec_millis() == 0 && ttl.subsec_nanos() == 0 {
                args.push("EX".into());
                args.push(ttl.as_secs().into());
            } else {
                let ms = ttl.as_millis().max(1);
                args.push("PX".into());
                args.push(Arg::from(ms.to_string()));
            }
        }
        Self::command("set", args)
    }

    /// `HSET key field value` (seed: `BuildHSetTask`).
    pub fn hset(
        key: impl Into<String>,
        field: impl Into<Arg>,
        value: impl Into<Arg>,
    ) -> Result<Self, TaskError> {
        let key = key.into();
        require_key("hset", &key)?;
        Self::command("hset", [key.into(), field.into(), value.into()])
    }

    /// `HDEL key field...` (seed: `BuildHDelTask`); at least one field.
    pub fn hdel<A: Into<Arg>>(
        key: impl Into<String>,
        fields: impl IntoIterator<Item = A>,
    ) -> Result<Self, TaskError> {
        Self::key_and_members("hdel", key.into(), fields)
    }

    /// `SADD key member...` (seed: `BuildSAddTask`); at least one member.
    ///
    /// ```
    /// use redis_retry_runtime::RedisTask;
    /// assert!(RedisTask::sadd("friends:1", ["user2", "user3"]).is_ok());
    /// assert!(RedisTask::sadd("friends:1", Vec::<String>::new()).is_err());
    /// ```
    pub fn sadd<A: Into<Arg>>(
        key: impl Into<String>,
        members: impl IntoIterator<Item = A>,
    ) -> Result<Self, TaskError> {
        Self::key_and_members("sadd", key.into(), members)
    }

    /// `SREM key member...` (seed: `BuildSRemTask`); at least one member.
    pub fn srem<A: Into<Arg>>(
        key: impl Into<String>,
        members: impl IntoIterator<Item = A>,
    ) -> Result<Self, TaskError> {
        Self::key_and_members("srem", key.into(), members)
    }

    fn key_and_members<A: Into<Arg>>(
        name: &'static str,
        key: String,
        rest: impl IntoIterator<Item = A>,
    ) -> Result<Self, TaskError> {
        require_key(name, &key)?;
        let mut args: Vec<Arg> = vec![key.into()];
        args.extend(rest.into_iter().map(Into::into));
        if args.len() < 2 {
            return Err(TaskError::MissingArguments { builder: name });
        }
        Self::command(name, args)
    }

    /// A pipeline of write commands (seed: `BuildPipelineTask`).
    ///
    /// ```
    /// use redis_retry_runtime::{RedisCmd, RedisTask, TaskError};
    /// let task = RedisTask::pipeline(vec![
    ///     RedisCmd::new("del", ["user:info:1"]),
    ///     RedisCmd::new("del", ["user:relation:1"]),
    /// ])?;
    /// assert_eq!(task.touched_keys().len(), 2);
    /// assert!(matches!(RedisTask::pipeline(vec![]), Err(TaskError::EmptyPipeline)));
    /// # Ok::<(), TaskError>(())
    /// ```
    pub fn pipeline(cmds: Vec<RedisCmd>) -> Result<Self, TaskError> {
        let mut task = Self::new(TaskKind::Pipeline);
        task.pipeline_cmds = cmds;
        task.validate()?;
        Ok(task)
    }

    /// A Lua script with its keys and arguments (seed: `BuildLuaTask`).
    ///
    /// ```
    /// use redis_retry_runtime::RedisTask;
    /// let task = RedisTask::lua("return redis.call('DEL', KEYS[1])", ["k"], Vec::<String>::new())?;
    /// assert_eq!(task.first_key(), Some(&b"k"[..]));
    /// # Ok::<(), redis_retry_runtime::TaskError>(())
    /// ```
    pub fn lua<K: Into<Arg>, A: Into<Arg>>(
        script: impl Into<String>,
        keys: impl IntoIterator<Item = K>,
        args: impl IntoIterator<Item = A>,
    ) -> Result<Self, TaskError> {
        let mut task = Self::new(TaskKind::Lua);
        task.lua_script = script.into();
        task.lua_keys = keys.into_iter().map(Into::into).collect();
        task.lua_args = args.into_iter().map(Into::into).collect();
        task.validate()?;
        Ok(task)
    }

    /// Adds trace metadata (seed: `WithContext`).
    pub fn with_context(mut self, ctx: &TaskContext) -> Self {
        self.trace_id.clone_from(&ctx.trace_id);
        self.user_uuid.clone_from(&ctx.user_uuid);
        self.device_id.clone_from(&ctx.device_id);
        self
    }

    /// Records the error that made the write fail (seed: `WithError`).
    pub fn with_error(mut self, err: &dyn fmt::Display) -> Self {
        self.original_err = err.to_string();
        self
    }

    /// Names where the write came from (seed: `WithSource`).
    pub fn with_source(mut self, source: impl Into<String>) -> Self {
        self.source = source.into();
        self
    }

    /// Sets how many retries the consumer makes before dead-lettering (seed: `WithMaxRetries`);
    /// 1 to 100.
    ///
    /// ```
    /// use redis_retry_runtime::{RedisTask, TaskError};
    /// let err = RedisTask::del("k")?.with_max_retries(0).unwrap_err();
    /// assert!(matches!(err, TaskError::MaxRetriesOutOfRange(0)));
    /// # Ok::<(), TaskError>(())
    /// ```
    pub fn with_max_retries(mut self, max_retries: u32) -> Result<Self, TaskError> {
        if !(1..=MAX_RETRIES_LIMIT).contains(&max_retries) {
            return Err(TaskError::MaxRetriesOutOfRange(max_retries));
        }
        self.max_retries = max_retries;
        Ok(self)
    }

    /// Sets the mode.
    pub fn with_mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// The task that invalidates what this one writes: one `DEL` per touched key, same
    /// metadata, `mode = invalidate`. A late `DEL` can never resurrect a stale value.
    ///
    /// ```
    /// use std::time::Duration;
    /// use redis_retry_runtime::{Mode, RedisTask};
    /// let t = RedisTask::set("user:1", "v", Duration::from_secs(60))?.invalidation()?;
    /// assert_eq!((t.command.as_str(), t.mode), ("del", Mode::Invalidate));
    /// # Ok::<(), redis_retry_runtime::TaskError>(())
    /// ```
    pub fn invalidation(&self) -> Result<RedisTask, TaskError> {
        let keys: Vec<Arg> = self.touched_keys().into_iter().map(Arg::from).collect();
        let mut task = match keys.len() {
            0 => return Err(TaskError::MissingKey(self.command_name().to_ascii_lowercase())),
            1 => Self::command("del", keys)?,
            _ => Self::pipeline(keys.into_iter().map(|k| RedisCmd::new("del", [k])).collect())?,
        };
        task.id.clone_from(&self.id);
        task.trace_id.clone_from(&self.trace_id);
        task.span_id.clone_from(&self.span_id);
        task.parent_span_id.clone_from(&self.parent_span_id);
        task.user_uuid.clone_from(&self.user_uuid);
        task.device_id.clone_from(&self.device_id);
        task.captured_at = self.captured_at;
        task.retry_count = self.retry_count;
        task.max_retries = self.max_retries;
        task.original_err.clone_from(&self.original_err);
        task.source.clone_from(&self.source);
        task.mode = Mode::Invalidate;
        Ok(task)
    }

    /// Whether applying the task twice leaves Redis as applying it once does. Invalidations
    /// are; Lua bodies are taken to be (the seed replays them: the script's author decides).
    pub fn is_idempotent(&self) -> bool {
        if self.mode == Mode::Invalidate || self.kind == TaskKind::Lua {
            return true;
        }
        all_idempotent(&self.commands())
    }

    /// A simple task's command as its arguments, name first.
    pub(crate) fn simple_parts(&self) -> Vec<&[u8]> {
        std::iter::once(self.command.as_bytes()).chain(self.args.iter().map(Arg::as_bytes)).collect()
    }

    /// Every command of the task as argument lists (name first); a Lua task gives none.
    pub fn commands(&self) -> Vec<Vec<&[u8]>> {
        match self.kind {
            TaskKind::Simple => vec![self.simple_parts()],
            TaskKind::Pipeline => self.pipeline_cmds.iter().map(RedisCmd::parts).collect(),
            TaskKind::Lua => Vec::new(),
        }
    }

    /// Every key the task writes, in order, without repeats (what `invalidate` deletes).
    pub fn touched_keys(&self) -> Vec<&[u8]> {
        let mut keys: Vec<&[u8]> = Vec::new();
        let mut push = |k| {
            if !keys.contains(&k) {
                keys.push(k);
            }
        };
        match self.kind {
            TaskKind::Lua => self.lua_keys.iter().for_each(|k| push(k.as_bytes())),
            TaskKind::Simple | TaskKind::Pipeline => {
                for parts in self.commands() {
                    if let Some(spec) = commands::lookup(&parts) {
                        commands::keys(spec, &parts).into_iter().for_each(&mut push);
                    }
                }
            }
        }
        keys
    }

    /// The first key the task writes: the Kafka message key, so that writes to one Redis key
    /// stay in order on one partition.
    pub fn first_key(&self) -> Option<&[u8]> {
        match self.kind {
            TaskKind::Lua => self.lua_keys.first().map(Arg::as_bytes),
            TaskKind::Simple | TaskKind::Pipeline => self.commands().into_iter().find_map(|parts| {
                commands::lookup(&parts).and_then(|spec| commands::keys(spec, &parts).first().copied())
            }),
        }
    }

    /// A short description for tables: command names and keys, never values (`set [user:1]`).
    pub fn describe(&self) -> String {
        format!("{} [{}]", self.log_commands().to_ascii_lowercase(), self.log_keys())
    }

    /// The commands for a log's `command` field, spelled as Redis documents them: `SETEX`,
    /// `DEL,HSET` for a pipeline, `EVAL` for a script.
    pub fn log_commands(&self) -> String {
        match self.kind {
            TaskKind::Simple => self.command.to_ascii_uppercase(),
            TaskKind::Pipeline => self
                .pipeline_cmds
                .iter()
                .map(|c| c.command.to_ascii_uppercase())
                .collect::<Vec<_>>()
                .join(","),
            TaskKind::Lua => "EVAL".to_string(),
        }
    }

    /// The keys the task touches, space-separated, for a log's `keys` field (never values).
    pub fn log_keys(&self) -> String {
        let keys: Vec<String> =
            self.touched_keys().iter().map(|k| String::from_utf8_lossy(k).into_owned()).collect();
        keys.join(" ")
    }

    /// `trace_id` for a log, absent rather than empty.
    pub fn log_trace_id(&self) -> Option<&str> {
        Some(self.trace_id.as_str()).filter(|t| !t.is_empty())
    }

    /// `user_uuid` for a log, absent rather than empty.
    pub fn log_user_uuid(&self) -> Option<&str> {
        Some(self.user_uuid.as_str()).filter(|u| !u.is_empty())
    }

    /// The name of the command for logs (`command` field): the simple command, `pipeline` or `lua`.
    pub fn command_name(&self) -> &str {
        match self.kind {
            TaskKind::Simple => &self.command,
            TaskKind::Pipeline => "pipeline",
            TaskKind::Lua => "eval",
        }
    }

    /// Checks that the task is complete and that every command in it is a write the consumer
    /// may replay. `allow_lua` decides whether Lua tasks pass.
    pub fn validate_for_replay(&self, allow_lua: bool) -> Result<(), TaskError> {
        self.validate()?;
        self.check_lua_allowed(allow_lua)
    }

    /// The consumer's policy on scripts: a Lua task in `replay` mode needs `allow_lua`.
    pub(crate) fn check_lua_allowed(&self, allow_lua: bool) -> Result<(), TaskError> {
        if self.kind == TaskKind::Lua && !allow_lua && self.mode == Mode::Replay {
            return Err(TaskError::LuaDisabled);
        }
        Ok(())
    }

    /// Checks that the task is complete and that every command in it is a known write.
    ///
    /// ```
    /// use redis_retry_runtime::{RedisTask, TaskError};
    /// let mut task = RedisTask::del("k")?;
    /// task.command = "flushall".into();
    /// task.args.clear();
    /// assert!(matches!(task.validate(), Err(TaskError::Forbidden(_))));
    /// # Ok::<(), TaskError>(())
    /// ```
    pub fn validate(&self) -> Result<(), TaskError> {
        if self.max_retries > MAX_RETRIES_LIMIT {
            return Err(TaskError::MaxRetriesOutOfRange(self.max_retries));
        }
        match self.kind {
            TaskKind::Simple => {
                if self.command.is_empty() {
                    return Err(TaskError::MissingField("command"));
                }
                check_write(&self.simple_parts())
            }
            TaskKind::Pipeline => {
                if self.pipeline_cmds.is_empty() {
                    return Err(TaskError::EmptyPipeline);
                }
                for cmd in &self.pipeline_cmds {
                    if cmd.command.is_empty() {
                        return Err(TaskError::MissingField("pipeline_cmds[].command"));
                    }
                    check_write(&cmd.parts())?;
                }
                Ok(())
            }
            TaskKind::Lua => {
                if self.lua_script.trim().is_empty() {
                    return Err(TaskError::EmptyScript);
                }
                Ok(())
            }
        }
    }

    /// Decodes a task from JSON and validates it.
    ///
    /// ```
    /// use redis_retry_runtime::RedisTask;
    /// let go = r#"{"type":"simple","command":"del","args":["user:info:1"],"pipeline_cmds":null,
    ///   "lua_script":"","lua_keys":null,"lua_args":null,"trace_id":"","user_uuid":"","device_id":"",
    ///   "timestamp":"2024-05-01T10:00:00.123456789+08:00","retry_count":0,"max_retries":3,
    ///   "original_err":"dial tcp: connection refused","source":"UserRepository.DeleteUserCache"}"#;
    /// let task = RedisTask::from_json(go.as_bytes())?;
    /// assert_eq!(task.source, "UserRepository.DeleteUserCache");
    /// assert!(RedisTask::from_json(b"{not json").is_err());
    /// # Ok::<(), redis_retry_runtime::TaskError>(())
    /// ```
    pub fn from_json(bytes: &[u8]) -> Result<Self, TaskError> {
        decode(bytes).map(|d| d.task)
    }

    /// Encodes the task as JSON.
    pub fn to_json(&self) -> Vec<u8> {
        // The fixed fields come to about 300 bytes: sized up front, the buffer is not grown
        // (and copied) twice on the capture path.
        let args: usize = self.args.iter().map(|a| a.as_bytes().len() + 4).sum();
        let mut out = Vec::with_capacity(384 + args + self.source.len() + self.original_err.len());
        // Serialising plain data into a Vec cannot fail: every field is a string, number,
        // list or map with string keys.
        match serde_json::to_writer(&mut out, self) {
            Ok(()) => out,
            Err(_) => Vec::new(),
        }
    }

    /// The Redis commands that carry out the task in `mode`, as one pipeline.
    ///
    /// `replay` gives the captured command(s) (a Lua task becomes `EVAL`); `invalidate` gives
    /// one `DEL` per touched key; `log` gives an empty pipeline. (On Redis Cluster the consumer
    /// sends such a pipeline slot by slot.)
    pub fn to_pipeline(&self) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        match self.mode {
            Mode::Log => {}
            Mode::Invalidate => {
                for key in self.touched_keys() {
                    pipe.cmd("DEL").arg(key);
                }
            }
            Mode::Replay => match self.kind {
                TaskKind::Simple => {
                    pipe.add_command(
                        RedisCmd { command: self.command.clone(), args: self.args.clone() }.to_redis(),
                    );
                }
                TaskKind::Pipeline => {
                    if self.atomic {
                        pipe.atomic();
                    }
                    for cmd in &self.pipeline_cmds {
                        pipe.add_command(cmd.to_redis());
                    }
                }
                TaskKind::Lua => {
                    let cmd = pipe.cmd("EVAL").arg(self.lua_script.as_bytes()).arg(self.lua_keys.len());
                    for k in &self.lua_keys {
                        cmd.arg(k.as_bytes());
                    }
                    for a in &self.lua_args {
                        cmd.arg(a.as_bytes());
                    }
                }
            },
        }
        pipe
    }
}

/// Whether every one of `commands` (as [`RedisTask::commands`] lists them) is a write that
/// applying twice leaves as applying once.
pub(crate) fn all_idempotent(commands: &[Vec<&[u8]>]) -> bool {
    commands.iter().all(|parts| {
        commands::classify(parts).is_some_and(|c| matches!(c.access, Access::Write { idempotent: true }))
    })
}

fn check_write(parts: &[&[u8]]) -> Result<(), TaskError> {
    // A name the table does not know may be anything, of any length: errors show its start.
    let name = || {
        let name = String::from_utf8_lossy(parts[0]).to_ascii_lowercase();
        match name.char_indices().nth(64) {
            Some((at, _)) => format!("{}...", &name[..at]),
            None => name,
        }
    };
    match commands::classify(parts) {
        None => Err(TaskError::UnknownCommand(name())),
        Some(commands::Classification { spec, access }) => match access {
            Access::Write { .. } => {
                if commands::keys(spec, parts).is_empty() {
                    Err(TaskError::MissingKey(name()))
                } else {
                    Ok(())
                }
            }
            Access::Forbidden => Err(TaskError::Forbidden(name())),
            Access::Read => Err(TaskError::NotAWrite(name())),
            Access::Control => Err(TaskError::NotAWrite(name())),
            // Scripts travel as Lua tasks, where the body is known and replay is a decision.
            Access::Script => Err(TaskError::ScriptInSimpleTask(name())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GO_PIPELINE: &str = r#"{"type":"pipeline","command":"","args":null,"pipeline_cmds":[{"command":"del","args":["user:info:u1"]},{"command":"hset","args":["user:2","age",42]}],"lua_script":"","lua_keys":null,"lua_args":null,"trace_id":"t","user_uuid":"u1","device_id":"d","timestamp":"2024-05-01T10:00:00.123456789+08:00","retry_count":1,"max_retries":3,"original_err":"x","source":"s"}"#;

    #[test]
    fn go_pipeline_decodes_numbers_as_text_and_offsets_as_utc() {
        let task = RedisTask::from_json(GO_PIPELINE.as_bytes()).unwrap();
        assert_eq!(task.kind, TaskKind::Pipeline);
        assert_eq!(task.pipeline_cmds[1].args[2].as_bytes(), b"42");
        assert_eq!(task.captured_at.to_rfc3339(), "2024-05-01T02:00:00.123456789+00:00");
        assert_eq!(task.retry_count, 1);
        assert!(task.id.is_empty());
        assert_eq!(task.mode, Mode::Replay);
    }

    #[test]
    fn missing_fields_take_go_defaults() {
        let task = RedisTask::from_json(br#"{"type":"simple","command":"DEL","args":["k"]}"#).unwrap();
        assert_eq!(task.max_retries, 3);
        assert_eq!(task.captured_at.to_rfc3339(), "0001-01-01T00:00:00+00:00");
    }

    #[test]
    fn binary_values_round_trip_byte_for_byte() {
        let value: Vec<u8> = (0..=255u8).collect();
        let task = RedisTask::set("bin", value.clone(), std::time::Duration::ZERO).unwrap();
        let back = RedisTask::from_json(&task.to_json()).unwrap();
        assert_eq!(back.args[1].as_bytes(), &value[..]);
        assert_eq!(back, task);
    }

    #[test]
    fn bad_input_is_a_typed_error() {
        assert!(matches!(RedisTask::hset("", "f", "v"), Err(TaskError::EmptyKey { builder: "hset" })));
        assert!(matches!(
            RedisTask::hdel("k", Vec::<String>::new()),
            Err(TaskError::MissingArguments { builder: "hdel" })
        ));
        assert!(matches!(
            RedisTask::lua(" ", Vec::<String>::new(), Vec::<String>::new()),
            Err(TaskError::EmptyScript)
        ));
        assert!(matches!(
            RedisTask::del("k").unwrap().with_max_retries(101),
            Err(TaskError::MaxRetriesOutOfRange(101))
        ));
        for bad in [
            &br#"{"type":"simple","command":"get","args":["k"]}"#[..],
            br#"{"type":"simple","command":"nosuch","args":["k"]}"#,
            br#"{"type":"simple","command":"del","args":[]}"#,
            br#"{"type":"weird"}"#,
            br#"{"type":"simple","command":"del","args":[null]}"#,
            br#"{"type":"simple","command":"del","args":["k"],"retry_count":-1}"#,
            br#"{"type":"simple","command":"del","args":["k"],"timestamp":"yesterday"}"#,
            br#"{"type":"pipeline","pipeline_cmds":[]}"#,
            br#"{"type":"simple","command":"del","args":[{"b64":"***"}]}"#,
        ] {
            assert!(RedisTask::from_json(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn invalidate_deletes_every_touched_key_once() {
        let task = RedisTask::pipeline(vec![
            RedisCmd::new("set", ["a", "1"]),
            RedisCmd::new("mset", ["b", "2", "a", "3"]),
        ])
        .unwrap()
        .with_mode(Mode::Invalidate);
        assert_eq!(task.touched_keys(), vec![&b"a"[..], b"b"]);
        assert_eq!(task.to_pipeline().len(), 2);
    }

    #[test]
    fn debug_never_shows_values() {
        let task = RedisTask::set("k", "secret-value", std::time::Duration::ZERO).unwrap();
        assert!(!format!("{task:?}").contains("secret-value"));
        assert!(!task.describe().contains("secret-value"));
    }
}
