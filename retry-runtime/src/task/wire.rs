//! The JSON forms a task arrives in, and how each becomes a [`RedisTask`].
//!
//! Three producers share a topic while a fleet moves to this library: our own, the guide's Go
//! services (`type` + `command`/`pipeline_cmds`/`lua_script`, no `id`, no `mode`) and the later
//! Go services, whose go-redis hook publishes only the keys a failed write touched (`keys`, no
//! `type`) for a whole-key `DEL`. All three decode here, once, into one shape.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

use super::{Arg, Mode, RedisCmd, RedisTask, TaskKind, DEFAULT_MAX_RETRIES, MAX_RETRIES_LIMIT};
use crate::errors::TaskError;

/// A task as decoded, with what decoding had to change for it to fit.
#[derive(Debug)]
pub(crate) struct Decoded {
    pub(crate) task: RedisTask,
    /// The `max_retries` a Go producer asked for when it was outside 0..=100 (Go's
    /// `WithMaxRetries` takes any int): the task carries it clamped.
    pub(crate) max_retries_asked: Option<i64>,
}

/// Decodes and validates a task in any of the forms above.
///
/// # Errors
///
/// [`TaskError::Malformed`] when the bytes are not one of the forms; the errors of
/// [`RedisTask::validate`] when they are, but not a task the consumer may apply.
pub(crate) fn decode(bytes: &[u8]) -> Result<Decoded, TaskError> {
    let wire: WireTask = serde_json::from_slice(bytes)
        .map_err(|e| TaskError::Malformed(crate::errors::describe_json_error(&e)))?;
    let decoded = wire.into_task()?;
    decoded.task.validate()?;
    Ok(decoded)
}

/// Every field any of the three forms may carry; what is absent takes Go's zero value.
#[derive(Deserialize)]
pub(crate) struct WireTask {
    #[serde(default)]
    id: String,
    #[serde(rename = "type", default)]
    kind: Option<TaskKind>,
    #[serde(default)]
    command: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    args: Vec<Arg>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pipeline_cmds: Vec<RedisCmd>,
    #[serde(default)]
    atomic: bool,
    #[serde(default)]
    lua_script: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    lua_keys: Vec<Arg>,
    #[serde(default, deserialize_with = "null_as_empty")]
    lua_args: Vec<Arg>,
    /// The later Go form: the keys to delete.
    #[serde(default, deserialize_with = "null_as_empty")]
    keys: Vec<Arg>,
    #[serde(default)]
    trace_id: String,
    #[serde(default)]
    span_id: String,
    #[serde(default)]
    parent_span_id: String,
    #[serde(default)]
    user_uuid: String,
    #[serde(default)]
    device_id: String,
    #[serde(default = "go_zero_time", deserialize_with = "super::timestamp::deserialize")]
    timestamp: DateTime<Utc>,
    #[serde(default)]
    retry_count: u32,
    /// Go's `int`: anything, negative included.
    #[serde(default)]
    max_retries: Option<i64>,
    #[serde(default)]
    original_err: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    mode: Mode,
    #[serde(default, deserialize_with = "super::timestamp::deserialize_option")]
    not_before: Option<DateTime<Utc>>,
}

impl WireTask {
    fn into_task(self) -> Result<Decoded, TaskError> {
        let (kind, command, args, pipeline_cmds) =
            match (self.kind, self.keys.is_empty()) {
                (Some(kind), true) => (kind, self.command, self.args, self.pipeline_cmds),
                // The later Go consumer deletes each key whole; one DEL a key keeps every command
                // in one slot, so the task also applies on Redis Cluster.
                (None, false) => {
                    let dels = self.keys.into_iter().map(|k| RedisCmd::new("del", [k]));
                    (TaskKind::Pipeline, String::new(), Vec::new(), dels.collect())
                }
                (Some(_), false) => return Err(TaskError::Malformed(
                    "wire format: a task carries either `type` (the guide's form) or `keys` (the DEL-only \
                     form), not both"
                        .into(),
                )),
                (None, true) => return Err(TaskError::Malformed(
                    "missing field `type` (and no `keys`: neither the guide's form nor the DEL-only form)"
                        .into(),
                )),
            };
        // Go applies whatever `WithMaxRetries` was given (0 or less: no retry at all). A fleet
        // wants the same write to fare the same on either consumer, within our bound on how
        // long a task may keep coming back: below 0 counts as 0, above the limit as the limit.
        let asked = self.max_retries.unwrap_or(i64::from(DEFAULT_MAX_RETRIES));
        let max_retries = asked.clamp(0, i64::from(MAX_RETRIES_LIMIT)) as u32;
        let max_retries_asked = (i64::from(max_retries) != asked).then_some(asked);
        let task = RedisTask {
            id: self.id,
            kind,
            command,
            args,
            pipeline_cmds,
            atomic: self.atomic,
            lua_script: self.lua_script,
            lua_keys: self.lua_keys,
            lua_args: self.lua_args,
            trace_id: self.trace_id,
            span_id: self.span_id,
            parent_span_id: self.parent_span_id,
            user_uuid: self.user_uuid,
            device_id: self.device_id,
            captured_at: self.timestamp,
            retry_count: self.retry_count,
            max_retries,
            original_err: self.original_err,
            source: self.source,
            mode: self.mode,
            not_before: self.not_before,
        };
        Ok(Decoded { task, max_retries_asked })
    }
}

impl TryFrom<WireTask> for RedisTask {
    type Error = TaskError;

    fn try_from(wire: WireTask) -> Result<Self, TaskError> {
        wire.into_task().map(|d| d.task)
    }
}

/// Go's zero `time.Time`, what a Go task without a timestamp carries; such a task never expires.
fn go_zero_time() -> DateTime<Utc> {
    chrono::NaiveDate::from_ymd_opt(1, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Go marshals a nil slice as `null`.
pub(super) fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct SeqOrNull<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for SeqOrNull<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array or null")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Vec<T>, E> {
            Ok(Vec::new())
        }
        fn visit_none<E: de::Error>(self) -> Result<Vec<T>, E> {
            Ok(Vec::new())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
            while let Some(v) = seq.next_element()? {
                out.push(v);
            }
            Ok(out)
        }
    }
    d.deserialize_any(SeqOrNull(std::marker::PhantomData))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The later Go services' message, as their hook builds it for a failed pipeline.
    const DEL_ONLY: &str = r#"{"keys":["user:info:u1","user:relation:u1"],"trace_id":"t1","span_id":"s1","parent_span_id":"p1","user_uuid":"u1","device_id":"d1","timestamp":"2026-05-01T10:00:00.123456789+08:00","original_err":"dial tcp: i/o timeout","source":"user-service.pipeline"}"#;

    #[test]
    fn the_del_only_form_deletes_each_key_whole_and_keeps_its_spans() {
        let d = decode(DEL_ONLY.as_bytes()).unwrap();
        let t = &d.task;
        assert_eq!(t.kind, TaskKind::Pipeline);
        assert_eq!(t.describe(), "del,del [user:info:u1 user:relation:u1]");
        assert_eq!((t.span_id.as_str(), t.parent_span_id.as_str()), ("s1", "p1"));
        assert_eq!((t.trace_id.as_str(), t.user_uuid.as_str(), t.device_id.as_str()), ("t1", "u1", "d1"));
        assert_eq!(t.source, "user-service.pipeline");
        assert_eq!(t.max_retries, DEFAULT_MAX_RETRIES);
        assert!(t.is_idempotent());
        // Moved to a tier, it travels in our form and reads back the same.
        assert_eq!(&RedisTask::from_json(&t.to_json()).unwrap(), t);
    }

    #[test]
    fn a_task_is_one_form_or_the_other() {
        for (bad, says) in [
            (r#"{"keys":[]}"#, "missing field `type`"),
            (r#"{"keys":null,"source":"s"}"#, "missing field `type`"),
            (r#"{"type":"simple","command":"del","args":["a"],"keys":["b"]}"#, "not both"),
        ] {
            let err = decode(bad.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
        assert!(decode(br#"{"keys":[{"nested":1}]}"#).is_err());
    }

    #[test]
    fn max_retries_outside_the_bound_is_clamped_and_reported() {
        let at = |n: &str| {
            decode(
                format!(r#"{{"type":"simple","command":"del","args":["k"],"max_retries":{n}}}"#).as_bytes(),
            )
            .map(|d| (d.task.max_retries, d.max_retries_asked))
        };
        assert_eq!(at("3").unwrap(), (3, None));
        assert_eq!(at("0").unwrap(), (0, None));
        assert_eq!(at("100").unwrap(), (100, None));
        assert_eq!(at("-1").unwrap(), (0, Some(-1)));
        assert_eq!(at("101").unwrap(), (100, Some(101)));
        assert_eq!(at("9223372036854775807").unwrap(), (100, Some(i64::MAX)));
        assert!(at("1e400").is_err());
        assert!(at("\"3\"").is_err());
    }
}
