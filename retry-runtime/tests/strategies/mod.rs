//! Generators shared by the property suites: command names from the table in any case, argument
//! bytes that steer the key walkers, JSON shaped like a task (and like anything else), and
//! argument values carrying a marker so a test can tell whether a value leaked into a log line.
// Each suite uses a different subset.
#![allow(dead_code)]

use base64::Engine as _;
use proptest::prelude::*;
use proptest::sample::select;
use redis_retry_runtime::commands;
use serde_json::{json, Map, Value};

/// Every top-level field a task may carry on the wire.
pub const TASK_FIELDS: &[&str] = &[
    "id",
    "type",
    "command",
    "args",
    "pipeline_cmds",
    "atomic",
    "lua_script",
    "lua_keys",
    "lua_args",
    "trace_id",
    "user_uuid",
    "device_id",
    "timestamp",
    "retry_count",
    "max_retries",
    "original_err",
    "source",
    "mode",
    "not_before",
];

/// Option words the key walkers look for (destinations, stream lists, counted keys, ...).
const KEYWORDS: &[&str] = &[
    "STORE",
    "STOREDIST",
    "STREAMS",
    "KEYS",
    "DB",
    "INCR",
    "GET",
    "SET",
    "INCRBY",
    "OVERFLOW",
    "BY",
    "LIMIT",
    "GROUP",
    "COUNT",
    "BLOCK",
    "AUTH",
    "AUTH2",
    "FIELDS",
    "NX",
    "XX",
    "GT",
    "LT",
    "CH",
    "EX",
    "PX",
    "KEEPTTL",
    "WITHSCORES",
    "REPLACE",
    "FNX",
    "FXX",
    "EXAT",
    "PXAT",
    "PERSIST",
    "ABSTTL",
];

/// Counts that matter to `numkeys` arguments: small, zero, negative, overflowing.
const COUNTS: &[&str] = &[
    "0",
    "1",
    "2",
    "3",
    "7",
    "-1",
    "+1",
    "01",
    "4294967296",
    "18446744073709551616",
    "999999999999999999999999",
];

/// `text` with each ASCII letter's case chosen by a bit of `mask`: the table is case-insensitive.
pub fn mixed_case(text: &str, mask: u64) -> String {
    text.chars()
        .enumerate()
        .map(|(i, c)| if mask >> (i % 64) & 1 == 1 { c.to_ascii_lowercase() } else { c.to_ascii_uppercase() })
        .collect()
}

/// A name from the command table (container subcommands as two words), in any case.
pub fn table_name() -> impl Strategy<Value = String> {
    let names: Vec<&'static str> = commands::all().iter().map(|c| c.name).collect();
    (select(names), any::<u64>()).prop_map(|(n, mask)| mixed_case(n, mask))
}

/// A single-word name of a write the consumer may replay, in any case.
pub fn write_name() -> impl Strategy<Value = String> {
    let names: Vec<&'static str> = commands::all()
        .iter()
        .filter(|c| c.access.is_write() && !c.name.contains(' '))
        .map(|c| c.name)
        .collect();
    (select(names), any::<u64>()).prop_map(|(n, mask)| mixed_case(n, mask))
}

/// A command name as a task might carry it: from the table, a near miss, or anything.
pub fn command_name() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => write_name(),
        3 => table_name().prop_map(|n| n.split(' ').next().unwrap_or_default().to_string()),
        1 => "[a-zA-Z_]{0,12}",
        1 => any::<String>(),
    ]
}

/// One argument's bytes, biased towards what the key walkers branch on.
pub fn arg_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => (select(KEYWORDS), any::<u64>()).prop_map(|(k, mask)| mixed_case(k, mask).into_bytes()),
        3 => select(COUNTS).prop_map(|c| c.as_bytes().to_vec()),
        3 => (0u16..64).prop_map(|n| format!("k:{n}").into_bytes()),
        1 => Just(Vec::new()),
        3 => proptest::collection::vec(any::<u8>(), 0..16),
    ]
}

/// A full argument list: a name (container names split into their two words) and arguments.
pub fn arg_list() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let structured =
        (table_name(), proptest::collection::vec(arg_bytes(), 0..14)).prop_map(|(name, rest)| {
            let mut args: Vec<Vec<u8>> = name.split(' ').map(|w| w.as_bytes().to_vec()).collect();
            args.extend(rest);
            args
        });
    let raw = proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..12), 0..10);
    prop_oneof![4 => structured, 1 => raw]
}

/// Any JSON value, nested a few levels, with object keys that are often task fields.
pub fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        select(TASK_FIELDS).prop_map(|f| Value::String(f.to_string())),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        let key = prop_oneof![select(TASK_FIELDS).prop_map(str::to_string), any::<String>()];
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::vec((key, inner), 0..8)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A timestamp as a task carries it: RFC 3339 with nanoseconds and an offset (as Go writes
/// them) over chrono's whole range, or Go's zero time.
pub fn timestamp_json() -> impl Strategy<Value = Value> {
    // chrono's limits are about ±262,000 years; years outside 0..=9999 exercise the signed forms.
    let anywhen = (-8_000_000_000_000i64..8_000_000_000_000, 0u32..1_000_000_000, -1439i32..=1439)
        .prop_filter_map("outside chrono's range", |(secs, nanos, offset_min)| {
            let offset = chrono::FixedOffset::east_opt(offset_min * 60)?;
            let at = chrono::DateTime::from_timestamp(secs, nanos)?.with_timezone(&offset);
            Some(Value::String(at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)))
        });
    let recent = (1_600_000_000i64..1_900_000_000, 0u32..1_000_000_000).prop_filter_map(
        "outside chrono's range",
        |(secs, nanos)| {
            chrono::DateTime::from_timestamp(secs, nanos)
                .map(|t| Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, false)))
        },
    );
    prop_oneof![
        4 => recent,
        2 => anywhen,
        1 => Just(json!("0001-01-01T00:00:00Z")),
        1 => Just(json!("2024-05-01T10:00:00.123456789+08:00")),
    ]
}

/// A scalar of any JSON type, extremes included.
pub fn any_scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        Just(json!(1e300)),
        Just(json!(-0.0)),
        Just(json!(-1)),
        Just(json!(u64::from(u32::MAX) + 1)),
        any::<String>().prop_map(Value::String),
        "[0-9T:.Z+-]{0,32}".prop_map(Value::String),
    ]
}

/// One argument as the wire allows it: text, numbers and booleans as the seed sends them, or
/// `{"b64": ...}` for bytes that are not UTF-8.
pub fn arg_json() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => arg_bytes().prop_map(|b| Value::String(String::from_utf8_lossy(&b).into_owned())),
        2 => any::<i64>().prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => any::<f64>().prop_map(Value::from),
        1 => any::<bool>().prop_map(Value::Bool),
        3 => proptest::collection::vec(any::<u8>(), 0..24)
            .prop_map(|b| json!({ "b64": base64::engine::general_purpose::STANDARD.encode(b) })),
    ]
}

/// One argument the wire does not allow: broken `{"b64": ...}` forms and other types.
pub fn bad_arg_json() -> impl Strategy<Value = Value> {
    prop_oneof![
        2 => "[A-Za-z0-9+/=*!]{0,12}".prop_map(|s| json!({ "b64": s })),
        1 => any_scalar().prop_map(|v| json!({ "b64": v })),
        1 => Just(json!({})),
        1 => Just(json!({"b64": "AA==", "b65": "AA=="})),
        1 => Just(Value::Null),
        2 => any_json(),
    ]
}

/// An argument list that starts with a key-like argument, or Go's `null` for an empty slice.
pub fn args_json() -> impl Strategy<Value = Value> {
    let list = ((0u16..64), proptest::collection::vec(arg_json(), 0..7)).prop_map(|(key, rest)| {
        let mut all = vec![Value::String(format!("k:{key}"))];
        all.extend(rest);
        Value::Array(all)
    });
    prop_oneof![12 => list, 1 => Just(Value::Null), 1 => Just(json!([]))]
}

/// One pipeline command.
pub fn pipeline_cmd_json() -> impl Strategy<Value = Value> {
    (write_name(), args_json()).prop_map(|(c, a)| json!({ "command": c, "args": a }))
}

/// JSON shaped like a task with every field of the right type, as the seed or this crate
/// writes it; field contents are random, so some are still refused (unknown command, no key).
pub fn task_json() -> impl Strategy<Value = Value> {
    let kind = select(&["simple", "pipeline", "lua"][..]).prop_map(|k| json!(k));
    let mode = select(&["replay", "invalidate", "log"][..]).prop_map(|m| json!(m));
    let pipeline = prop_oneof![
        8 => proptest::collection::vec(pipeline_cmd_json(), 1..5).prop_map(Value::Array),
        1 => Just(Value::Null),
    ];
    let script = prop_oneof![
        4 => Just(json!("return redis.call('SET', KEYS[1], ARGV[1])")),
        1 => any::<String>().prop_map(Value::String),
    ];
    let retry_count =
        prop_oneof![3 => (0u32..=100).prop_map(Value::from), 1 => any::<u32>().prop_map(Value::from)];
    let max_retries = (0u32..=100).prop_map(Value::from);
    let text = || proptest::option::weighted(0.7, any::<String>().prop_map(Value::String));
    let first = (
        kind,
        proptest::option::weighted(0.9, command_name().prop_map(Value::String)),
        proptest::option::weighted(0.9, args_json()),
        proptest::option::weighted(0.9, pipeline),
        proptest::option::weighted(0.4, any::<bool>().prop_map(Value::Bool)),
        proptest::option::weighted(0.9, script),
        proptest::option::weighted(0.9, args_json()),
        proptest::option::weighted(0.9, args_json()),
    );
    let second = (
        proptest::option::weighted(0.5, any::<String>().prop_map(Value::String)),
        (text(), text(), text(), text(), text()),
        proptest::option::weighted(0.9, timestamp_json()),
        proptest::option::weighted(0.9, retry_count),
        proptest::option::weighted(0.9, max_retries),
        proptest::option::weighted(0.6, mode),
        proptest::option::weighted(0.3, timestamp_json()),
    );
    (first, second).prop_map(|(first, second)| {
        let (kind, command, args, pipeline, atomic, script, lua_keys, lua_args) = first;
        let (
            id,
            (trace_id, user_uuid, device_id, original_err, source),
            timestamp,
            retry_count,
            max_retries,
            mode,
            not_before,
        ) = second;
        let mut task = Map::new();
        let fields = [
            ("type", Some(kind)),
            ("command", command),
            ("args", args),
            ("pipeline_cmds", pipeline),
            ("atomic", atomic),
            ("lua_script", script),
            ("lua_keys", lua_keys),
            ("lua_args", lua_args),
            ("id", id),
            ("trace_id", trace_id),
            ("user_uuid", user_uuid),
            ("device_id", device_id),
            ("original_err", original_err),
            ("source", source),
            ("timestamp", timestamp),
            ("retry_count", retry_count),
            ("max_retries", max_retries),
            ("mode", mode),
            ("not_before", not_before),
        ];
        for (field, value) in fields {
            if let Some(v) = value {
                task.insert(field.to_string(), v);
            }
        }
        Value::Object(task)
    })
}

/// One thing wrong with a task.
#[derive(Debug, Clone)]
pub enum Damage {
    /// The field holds a value of another type or out of range.
    Replace(&'static str, Value),
    /// The field is gone.
    Remove(&'static str),
    /// One element of an argument list (`args`, `lua_keys`, `lua_args`) is not an argument.
    BadArg(&'static str, prop::sample::Index, Value),
    /// One pipeline command is not a command.
    BadCommand(prop::sample::Index, Value),
    /// A field the task does not define.
    Unknown(String, Value),
}

impl Damage {
    /// Applies the damage to a task object.
    pub fn apply(&self, task: &mut Value) {
        let Some(map) = task.as_object_mut() else { return };
        match self {
            Damage::Replace(field, value) => {
                map.insert((*field).to_string(), value.clone());
            }
            Damage::Remove(field) => {
                map.remove(*field);
            }
            Damage::BadArg(field, at, value) => {
                if let Some(Value::Array(list)) = map.get_mut(*field) {
                    if !list.is_empty() {
                        let i = at.index(list.len());
                        list[i] = value.clone();
                    }
                }
            }
            Damage::BadCommand(at, value) => {
                if let Some(Value::Array(list)) = map.get_mut("pipeline_cmds") {
                    if !list.is_empty() {
                        let i = at.index(list.len());
                        list[i] = value.clone();
                    }
                }
            }
            Damage::Unknown(field, value) => {
                map.insert(field.clone(), value.clone());
            }
        }
    }
}

/// Some damage: wrong types, extremes, missing fields, broken arguments and commands.
pub fn damage() -> impl Strategy<Value = Damage> {
    let field = select(TASK_FIELDS);
    let arg_field = select(&["args", "lua_keys", "lua_args"][..]);
    let bad_command = prop_oneof![
        Just(json!({ "args": ["k"] })),
        Just(json!({ "command": "", "args": ["k"] })),
        Just(json!({ "command": "set", "args": null })),
        Just(json!("del k")),
        any_json(),
    ];
    prop_oneof![
        4 => (field.clone(), prop_oneof![3 => any_scalar(), 1 => any_json()]).prop_map(|(f, v)| Damage::Replace(f, v)),
        1 => field.prop_map(Damage::Remove),
        3 => (arg_field, any::<prop::sample::Index>(), bad_arg_json()).prop_map(|(f, i, v)| Damage::BadArg(f, i, v)),
        1 => (any::<prop::sample::Index>(), bad_command).prop_map(|(i, v)| Damage::BadCommand(i, v)),
        1 => (any::<String>(), any_json()).prop_map(|(f, v)| Damage::Unknown(f, v)),
    ]
}

/// A task-shaped object with up to three pieces of damage (often none).
pub fn damaged_task_json() -> impl Strategy<Value = Value> {
    (task_json(), proptest::collection::vec(damage(), 0..4)).prop_map(|(mut task, damage)| {
        for d in &damage {
            d.apply(&mut task);
        }
        task
    })
}

/// What a generated argument stands for in the leak checks.
#[derive(Debug, Clone)]
pub enum Token {
    /// A key: allowed in logs.
    Key(u16),
    /// An option word or a count: not secret, but not a key either.
    Word(Vec<u8>),
    /// A value: must never reach a log line.
    Value(u16),
}

/// Text no key, command name or option word contains: its presence in a string is a leak.
pub const VALUE_MARKER: &str = "~v4lue#";

impl Token {
    /// The argument's bytes.
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            Token::Key(n) => format!("key:{n}").into_bytes(),
            Token::Word(w) => w.clone(),
            Token::Value(n) => value_text(*n).into_bytes(),
        }
    }
}

/// The value numbered `n`; the closing `#` keeps `...#1#` from matching inside `...#12#`.
pub fn value_text(n: u16) -> String {
    format!("{VALUE_MARKER}{n}#")
}

/// Arguments mixing keys, option words and marked values; the first one is usually a key,
/// where most writes take theirs.
pub fn tokens() -> impl Strategy<Value = Vec<Token>> {
    let token = prop_oneof![
        2 => (0u16..32).prop_map(Token::Key),
        2 => prop_oneof![
            (select(KEYWORDS), any::<u64>()).prop_map(|(k, mask)| mixed_case(k, mask).into_bytes()),
            select(COUNTS).prop_map(|c| c.as_bytes().to_vec()),
        ]
        .prop_map(Token::Word),
        4 => any::<u16>().prop_map(Token::Value),
    ];
    (0u16..32, proptest::collection::vec(token, 0..8)).prop_map(|(first, rest)| {
        let mut all = vec![Token::Key(first)];
        all.extend(rest);
        all
    })
}
