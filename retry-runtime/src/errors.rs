//! Errors of this crate, and the classification of Redis errors that decides what is captured.
//!
//! Only *transient* failures are worth a retry: the server was unreachable or said "not now"
//! (LOADING, BUSY, TRYAGAIN, CLUSTERDOWN, MASTERDOWN, READONLY, ...). Permanent failures
//! (WRONGTYPE, syntax or arity errors, NOPERM, ...) would fail again, so they are returned to
//! the caller and never queued. For a transient failure it also matters whether the command
//! may have run: a refused connection or an error reply means it certainly did not, while a
//! reset or a timeout after sending leaves it *ambiguous*, which only idempotent commands can
//! afford to replay.

use redis::{ErrorKind, RedisError};

/// Why a task cannot be built, decoded or replayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// A builder was given an empty key.
    #[error("{builder}: the key is empty")]
    EmptyKey {
        /// The builder that was called.
        builder: &'static str,
    },
    /// A builder that needs members or fields got none.
    #[error("{builder}: at least one field or member is required")]
    MissingArguments {
        /// The builder that was called.
        builder: &'static str,
    },
    /// `max_retries` outside 1..=100.
    #[error("max_retries must be between 1 and 100, got {0}")]
    MaxRetriesOutOfRange(u32),
    /// A pipeline task without commands.
    #[error("a pipeline task needs at least one command")]
    EmptyPipeline,
    /// A Lua task without a body.
    #[error("a Lua task needs a script body")]
    EmptyScript,
    /// A field the task's type needs is missing.
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    /// The JSON could not be decoded.
    #[error("malformed task: {0}")]
    Malformed(String),
    /// A command the command table does not know.
    #[error("unknown command `{0}`")]
    UnknownCommand(String),
    /// A command that must never be replayed (FLUSHALL, CONFIG, ...).
    #[error("forbidden command `{0}`: administrative commands are never replayed")]
    Forbidden(String),
    /// A read or connection command: reads are never retried.
    #[error("`{0}` does not write: reads are never retried")]
    NotAWrite(String),
    /// A write command without the key it needs.
    #[error("`{0}` has no key")]
    MissingKey(String),
    /// EVAL/EVALSHA/FCALL inside a simple or pipeline task.
    #[error("`{0}` must travel as a Lua task, with its script body")]
    ScriptInSimpleTask(String),
    /// A Lua task reached a consumer that does not run Lua.
    #[error("Lua tasks are disabled on this consumer (enable with --allow-lua)")]
    LuaDisabled,
    /// The message is larger than the consumer accepts.
    #[error("task of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Size of the message.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
}

impl TaskError {
    /// The dead-letter reason for a task rejected with this error.
    pub fn dlq_reason(&self) -> DlqReason {
        match self {
            TaskError::Forbidden(_) | TaskError::NotAWrite(_) | TaskError::LuaDisabled => {
                DlqReason::Forbidden
            }
            TaskError::UnknownCommand(_) => DlqReason::UnknownCommand,
            TaskError::TooLarge { .. } => DlqReason::Oversize,
            _ => DlqReason::Malformed,
        }
    }
}

/// Why a task ended in the dead-letter topic; sent as the `reason` header.
///
/// ```
/// use redis_retry_runtime::DlqReason;
/// assert_eq!(DlqReason::MaxRetries.as_str(), "max_retries");
/// assert_eq!("expired".parse::<DlqReason>(), Ok(DlqReason::Expired));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DlqReason {
    /// Not a valid task (bad JSON, wrong types, missing fields, empty pipeline, ...).
    Malformed,
    /// A command that is never replayed (admin, read, or Lua on a consumer without Lua).
    Forbidden,
    /// A command the command table does not know.
    UnknownCommand,
    /// Larger than the consumer's size limit.
    Oversize,
    /// Redis rejected the command for good (WRONGTYPE, syntax, ...).
    PermanentError,
    /// Still failing after `max_retries` retries.
    MaxRetries,
    /// Older than the consumer's `max_age`: replaying it could overwrite newer data.
    Expired,
    /// A non-idempotent write that may or may not have run: never replayed blindly.
    Ambiguous,
    /// Unsigned or wrongly signed, on a consumer that checks signatures.
    Unauthenticated,
    /// Still timing out after `max_retries` retries: Redis answered other requests, but not
    /// this task's within the response timeout.
    TimedOut,
    /// A Lua task ran past the consumer's `script_timeout`; the consumer sent `SCRIPT KILL`.
    ScriptTimeout,
    /// A `not_before` later than now + `retry_max_delay` (+20 % jitter, +1 min slack): no
    /// retry the consumer schedules is due that late.
    BadSchedule,
    /// Kafka refused for good to take the task to a retry tier (larger than the topic or the
    /// producer takes): dead-lettered instead of retried.
    KafkaRefused,
}

impl DlqReason {
    /// Every reason, for listings and metrics.
    pub const ALL: [DlqReason; 13] = [
        DlqReason::Malformed,
        DlqReason::Forbidden,
        DlqReason::UnknownCommand,
        DlqReason::Oversize,
        DlqReason::PermanentError,
        DlqReason::MaxRetries,
        DlqReason::Expired,
        DlqReason::Ambiguous,
        DlqReason::Unauthenticated,
        DlqReason::TimedOut,
        DlqReason::ScriptTimeout,
        DlqReason::BadSchedule,
        DlqReason::KafkaRefused,
    ];

    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            DlqReason::Malformed => "malformed",
            DlqReason::Forbidden => "forbidden",
            DlqReason::UnknownCommand => "unknown_command",
            DlqReason::Oversize => "oversize",
            DlqReason::PermanentError => "permanent_error",
            DlqReason::MaxRetries => "max_retries",
            DlqReason::Expired => "expired",
            DlqReason::Ambiguous => "ambiguous",
            DlqReason::Unauthenticated => "unauthenticated",
            DlqReason::TimedOut => "timed_out",
            DlqReason::ScriptTimeout => "script_timeout",
            DlqReason::BadSchedule => "bad_schedule",
            DlqReason::KafkaRefused => "kafka_refused",
        }
    }
}

impl std::fmt::Display for DlqReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for DlqReason {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DlqReason::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| {
            let valid: Vec<&str> = DlqReason::ALL.iter().map(|r| r.as_str()).collect();
            format!("unknown reason `{s}`: expected one of {}", valid.join(", "))
        })
    }
}

/// What a Redis failure means for a retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Worth retrying later.
    Transient(Delivery),
    /// Would fail again: return to the caller, never queue.
    Permanent,
}

/// Whether a transiently failed command may have run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// It certainly did not run: refused before sending, or rejected by an error reply.
    NotApplied,
    /// It may have run (connection reset or timeout after sending).
    Ambiguous,
}

impl Failure {
    /// Whether a retry is worth it.
    pub fn is_transient(self) -> bool {
        matches!(self, Failure::Transient(_))
    }
}

/// Error-reply codes that mean "not now" rather than "never".
const TRANSIENT_CODES: &[&str] = &[
    "LOADING",
    "BUSY",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "MASTERDOWN",
    "READONLY",
    "NOREPLICAS",
    "MISCONF",
    "OOM",
    "MOVED",
    "ASK",
    "UNBLOCKED",
];

/// Classifies an error reply by its code (the first word: `LOADING`, `WRONGTYPE`, ...):
/// `LOADING` is transient and never applied, `WRONGTYPE` permanent.
pub(crate) fn classify_code(code: &str) -> Failure {
    if TRANSIENT_CODES.contains(&code) {
        Failure::Transient(Delivery::NotApplied)
    } else {
        Failure::Permanent
    }
}

/// Classifies an error reply carried inside a successful response (pipelines, RESP3).
pub(crate) fn classify_server_error(err: &redis::ServerError) -> Failure {
    classify_code(err.code())
}

/// Classifies an error returned by a connection.
///
/// ```
/// use redis_retry_runtime::errors::{classify, Delivery, Failure};
/// let refused = redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
/// assert_eq!(classify(&refused), Failure::Transient(Delivery::NotApplied));
/// let reset = redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
/// assert_eq!(classify(&reset), Failure::Transient(Delivery::Ambiguous));
/// ```
pub fn classify(err: &RedisError) -> Failure {
    if err.is_connection_refusal() {
        return Failure::Transient(Delivery::NotApplied);
    }
    if err.is_timeout() || err.is_connection_dropped() || err.is_io_error() {
        return Failure::Transient(Delivery::Ambiguous);
    }
    // A transaction Redis refused at EXEC ran nothing; whether it can run later is what its
    // commands were refused for (NOREPLICAS, OOM, ... while queuing: yes; a syntax error: no).
    if err.kind() == ErrorKind::Server(redis::ServerErrorKind::ExecAbort) {
        if let Some(refusals) = err.clone().into_server_errors() {
            let all_transient =
                !refusals.is_empty() && refusals.iter().all(|(_, e)| classify_server_error(e).is_transient());
            return if all_transient { Failure::Transient(Delivery::NotApplied) } else { Failure::Permanent };
        }
    }
    // An error reply carries its code, known to redis-rs (LOADING, ...) or not (NOREPLICAS, ...).
    if let Some(code) = err.code() {
        return classify_code(code);
    }
    match err.kind() {
        // The client found no connection for the slot: nothing was sent.
        ErrorKind::ClusterConnectionNotFound => Failure::Transient(Delivery::NotApplied),
        ErrorKind::Io => Failure::Transient(Delivery::Ambiguous),
        _ => Failure::Permanent,
    }
}

/// Whether the error says Redis itself is unreachable (as opposed to refusing one command).
///
/// The consumer waits for Redis to come back on such errors instead of spending the task's
/// retries, so that an outage does not empty the topic into the dead-letter queue.
pub(crate) fn is_unreachable(err: &RedisError) -> bool {
    err.is_connection_refusal()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_io_error()
        || matches!(err.kind(), ErrorKind::Io | ErrorKind::ClusterConnectionNotFound)
}

/// Why a task could not be handed to Kafka.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// No producer was given to the connection and the global one was never initialised.
    #[error(
        "no redis-retry producer: call redis_retry::init_global_producer or RetryConnection::with_producer"
    )]
    NoProducer,
    /// librdkafka refused the message (queue full, message too large, ...).
    #[error("kafka refused the task: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The delivery report never came (the producer was dropped).
    #[error("the producer went away before the delivery report")]
    Canceled,
    /// Kafka cannot take the task and the producer's spool refused it (full, I/O error).
    #[error("kafka cannot take the task and the spool refused it: {0}")]
    Spool(#[from] crate::spool::SpoolError),
    /// The task is in `log` mode: such a failure is logged, never queued (a consumer that
    /// ignores `mode`, as the seed's Go consumer does, would apply it).
    #[error("a task in log mode is only logged, never queued")]
    LogMode,
    /// The task is in `invalidate` mode but touches no key to delete.
    #[error("cannot queue the task: {0}")]
    Task(#[from] TaskError),
}

/// Why the producer or consumer could not be set up or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// A configuration value is invalid; the message names it. The `redis-retry` binary exits
    /// with code 2 for this variant only.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A failure while running that no setting explains (a crashed lane, a read that timed
    /// out, a thread that could not start).
    #[error("{0}")]
    Runtime(String),
    /// Kafka could not be reached or refused a request.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// Redis could not be set up.
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
}

/// Error codes Redis itself replies with. A Lua script can reply with any code it likes, so a
/// code outside this list is not repeated (it may be a value).
const KNOWN_CODES: &[&str] = &[
    "ERR",
    "WRONGTYPE",
    "BUSY",
    "LOADING",
    "OOM",
    "READONLY",
    "NOREPLICAS",
    "MISCONF",
    "MASTERDOWN",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "CROSSSLOT",
    "MOVED",
    "ASK",
    "UNKILLABLE",
    "NOTBUSY",
    "EXECABORT",
    "NOPERM",
    "NOAUTH",
    "WRONGPASS",
    "BUSYKEY",
    "NOSCRIPT",
    "NOGROUP",
    "BUSYGROUP",
    "UNBLOCKED",
    "NOPROTO",
];

/// The beginnings of Redis's own error texts that quote nothing of the request but command
/// names (checked against the command table before any task is sent). Any other text may
/// quote a key, a value or whatever a script put in it: `unknown command 'x', with args
/// beginning with: 'value'`, `user_script:1: ...`.
const PLAIN_DETAILS: &[&str] = &[
    "no such key",
    "syntax error",
    "value is not an integer or out of range",
    "value is not a valid float",
    "increment or decrement would overflow",
    "increment would produce NaN or Infinity",
    "hash value is not an integer",
    "hash value is not a float",
    "index out of range",
    "wrong number of arguments for '",
    "invalid expire time in '",
    "bit offset is not an integer or out of range",
    "bit is not an integer or out of range",
    "string exceeds maximum allowed size",
    "min or max is not a float",
    "min or max not valid string range item",
    "The ID specified in XADD",
    "Invalid stream ID specified",
    "timeout is negative",
    "offset is out of range",
    "Number of keys can't be greater than number of args",
    "Script killed by user with SCRIPT KILL",
    "XX and NX options at the same time are not compatible",
    "GT, LT, and/or NX options at the same time are not compatible",
    "INCR option supports a single increment-element pair",
    "resulting score is not a number (NaN)",
    "weight value is not a float",
    "source and destination objects are the same",
    "Operation against a key holding the wrong kind of value",
    "Redis is busy running a script",
    "Redis is loading the dataset in memory",
    "command not allowed when used memory",
    "You can't write against a read only replica",
    "Not enough good replicas to write",
    "Redis is configured to save RDB snapshots",
    "Link with MASTER is down",
    "Multiple keys request during rehashing of slot",
    "The cluster is down",
    "Hash slot not served",
    "Keys in request don't hash to the same slot",
    "Sorry the script already executed write commands",
    "No scripts in execution right now",
    "Transaction discarded because of previous errors",
    "Target key name already exists",
    "No matching script",
];

/// An error reply as the logs and dead-letter headers may show it: Redis's own code and text
/// where they cannot quote the task, otherwise only the code and the size of what is withheld.
///
/// ```
/// use redis_retry_runtime::errors::describe_error_reply;
/// assert_eq!(
///     describe_error_reply("WRONGTYPE", Some("Operation against a key holding the wrong kind of value")),
///     "WRONGTYPE Operation against a key holding the wrong kind of value"
/// );
/// let quoted = describe_error_reply("ERR", Some("unknown command 'x', with args beginning with: 'hunter2'"));
/// assert!(!quoted.contains("hunter2") && quoted.starts_with("ERR"), "{quoted}");
/// ```
pub fn describe_error_reply(code: &str, detail: Option<&str>) -> String {
    let detail = detail.unwrap_or_default().trim();
    if !KNOWN_CODES.contains(&code) {
        return format!(
            "an error reply with a code Redis does not use ({} bytes withheld: a script's own error may quote a value)",
            code.len() + detail.len() + 1
        );
    }
    let redirect = matches!(code, "MOVED" | "ASK")
        && detail.split_once(' ').is_some_and(|(slot, addr)| {
            slot.bytes().all(|b| b.is_ascii_digit())
                && addr.bytes().all(|b| b.is_ascii_alphanumeric() || b".:-[]".contains(&b))
        });
    let plain = PLAIN_DETAILS.iter().any(|p| detail.starts_with(p))
        && !detail.contains('\n')
        // `wrong number of arguments for '<command>' command`: the name has passed the
        // command table, but keep anything longer out all the same.
        && detail.len() <= 160;
    if detail.is_empty() || redirect || plain {
        format!("{code} {detail}").trim_end().to_string()
    } else {
        format!("{code} ({} bytes of detail withheld: Redis may quote the task in them)", detail.len())
    }
}

/// A Redis error as the logs and dead-letter headers may show it: see [`describe_error_reply`]
/// for error replies; connection and client errors carry no task data and are shown whole.
pub fn describe_redis_error(err: &RedisError) -> String {
    match (err.code(), err.detail()) {
        (Some(code), Some(detail)) => describe_error_reply(code, Some(detail)),
        // No text from Redis: the client's own words (a CROSSSLOT it found before sending).
        _ => err.to_string(),
    }
}

/// A JSON decoding error as the logs and dead-letter headers may show it: what was wrong and
/// where, never the offending text. serde quotes the value it could not take (`invalid type:
/// string "..."`) and the names it did not know (`unknown field `...``).
///
/// ```
/// use redis_retry_runtime::errors::describe_json_error;
/// let err = serde_json::from_str::<u32>(r#""hunter2""#).unwrap_err();
/// let shown = describe_json_error(&err);
/// assert!(!shown.contains("hunter2"), "{shown}");
/// assert!(shown.contains("invalid type: string") && shown.contains("line 1 column 9"), "{shown}");
/// ```
pub fn describe_json_error(err: &serde_json::Error) -> String {
    let text = err.to_string();
    let position = format!(" at line {} column {}", err.line(), err.column());
    let message = text.strip_suffix(&position).unwrap_or(&text);
    let shown = match err.classify() {
        serde_json::error::Category::Data => describe_data_error(message),
        // Syntax, end-of-input and I/O messages name what the parser expected, never the input.
        _ => message.to_string(),
    };
    if err.line() == 0 {
        shown
    } else {
        format!("{shown}{position}")
    }
}

/// serde's data errors without what they quote: `invalid type: string "v", expected u32` keeps
/// the kind of the value (`string`) and what was expected (the task's own schema).
fn describe_data_error(message: &str) -> String {
    for lead in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(lead) {
            // The expectation comes from this crate's schema; the value is before it.
            let (unexpected, expected) = match rest.rfind(", expected ") {
                Some(at) => (&rest[..at], &rest[at + ", expected ".len()..]),
                None => (rest, "something else"),
            };
            let kind: String =
                unexpected.split([' ', '`', '"']).next().unwrap_or_default().chars().take(20).collect();
            let kind = match kind.as_str() {
                "string" | "integer" | "floating" | "boolean" | "map" | "sequence" | "null" | "unit"
                | "character" | "byte" | "option" | "enum" | "newtype" => kind,
                _ => "value".to_string(),
            };
            return format!("{lead}{kind}, expected {expected}");
        }
    }
    for (lead, what) in [("unknown variant", "unknown variant"), ("unknown field", "unknown field")] {
        if message.starts_with(lead) {
            let expected = message.rfind(", expected ").map(|at| &message[at..]).unwrap_or_default();
            return format!("{what} (name withheld){expected}");
        }
    }
    let safe = [
        "missing field `",
        "invalid length ",
        "duplicate field `",
        "invalid base64 in a b64 argument",
        // chrono's texts for a timestamp it cannot read.
        "input contains invalid characters",
        "premature end of input",
        "input is out of range",
        "trailing input",
        "input is not enough for unique date and time",
        "no possible date and time matching input",
    ];
    if safe.iter().any(|s| message.starts_with(s)) && !message.contains('"') {
        return message.to_string();
    }
    format!("invalid data ({} bytes of detail withheld: they may quote the task)", message.len())
}
