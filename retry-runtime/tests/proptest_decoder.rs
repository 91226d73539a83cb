//! Properties of the task decoder, on any input: `RedisTask::from_json` never panics, whatever
//! decodes and validates survives `to_json` byte for byte, every method the producer and the
//! consumer call on a decoded task is total, and no argument value reaches a log line.
//!
//! CI runs 256 cases per property (proptest's default, a few seconds in all). A longer run:
//! `PROPTEST_CASES=100000 cargo test -p redis-retry-runtime --release --test proptest_decoder`;
//! `PROPTEST_RNG_SEED=<n>` replays one sequence, and a failure's minimal input is kept in
//! `proptest-regressions/` and tried first on the next run.

mod strategies;

use proptest::prelude::*;
use redis_retry_runtime::{Arg, Mode, RedisCmd, RedisTask, TaskError, TaskKind};
use serde_json::Value;
use strategies::{
    any_json, damaged_task_json, task_json, tokens, value_text, write_name, Token, VALUE_MARKER,
};

/// Calls everything the producer, the consumer and the operator tools call on a task, checking
/// the relations between the answers on the way. Any panic fails the property.
fn exercise(task: &RedisTask) -> Result<(), TestCaseError> {
    let touched = task.touched_keys();
    prop_assert_eq!(task.first_key(), touched.first().copied(), "the Kafka key is the first touched key");
    let mut seen = touched.clone();
    seen.sort_unstable();
    seen.dedup();
    prop_assert_eq!(seen.len(), touched.len(), "touched keys repeat");
    let _ = task.describe();
    let _ = task.command_name();
    let _ = format!("{task:?}");
    let commands = task.commands();
    let pipe = task.to_pipeline();
    let expected_len = match (task.mode, task.kind) {
        (Mode::Log, _) => 0,
        (Mode::Invalidate, _) => touched.len(),
        (Mode::Replay, TaskKind::Lua) => 1,
        (Mode::Replay, _) => commands.len(),
    };
    prop_assert_eq!(pipe.len(), expected_len);
    if task.mode == Mode::Replay && task.kind != TaskKind::Lua {
        // What reaches Redis is exactly what was captured.
        for (cmd, parts) in pipe.cmd_iter().zip(&commands) {
            let sent: Vec<&[u8]> = cmd
                .args_iter()
                .map(|a| match a {
                    redis::Arg::Simple(bytes) => bytes,
                    // A task never holds a scan cursor; whatever else is not an argument.
                    _ => b"<not an argument>",
                })
                .collect();
            prop_assert_eq!(&sent, parts);
        }
    }
    let idempotent = task.is_idempotent();
    let valid = task.validate().is_ok();
    let _ = task.validate_for_replay(false);
    let _ = task.validate_for_replay(true);
    if valid && task.kind != TaskKind::Lua {
        prop_assert!(!touched.is_empty(), "a valid write task has a key");
    }
    match task.invalidation() {
        Ok(inv) => {
            prop_assert!(!touched.is_empty());
            prop_assert_eq!(inv.mode, Mode::Invalidate);
            prop_assert_eq!(inv.touched_keys(), touched.clone(), "invalidation deletes what the task wrote");
            prop_assert!(inv.is_idempotent());
            prop_assert_eq!(&inv.id, &task.id);
            // Metadata is copied as it is, so only a valid task is sure to give a valid one.
            if valid {
                prop_assert!(inv.validate().is_ok(), "{:?}", inv.validate());
                let back = RedisTask::from_json(&inv.to_json());
                prop_assert_eq!(back.as_ref(), Ok(&inv), "an invalidation survives the wire");
            }
        }
        Err(e) => {
            prop_assert!(touched.is_empty(), "invalidation refused a task with keys: {e}");
            prop_assert!(matches!(e, TaskError::MissingKey(_)), "{e:?}");
        }
    }
    if task.mode == Mode::Invalidate {
        prop_assert!(idempotent, "a DEL is idempotent");
    }
    Ok(())
}

/// Decodes, and for what decodes: round trip and [`exercise`]. Also exercises what serde alone
/// accepts, before validation: the methods must not rely on `validate` having run.
fn decode_and_exercise(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(unchecked) = serde_json::from_slice::<RedisTask>(bytes) {
        exercise(&unchecked)?;
    }
    match RedisTask::from_json(bytes) {
        Ok(task) => {
            prop_assert!(task.validate().is_ok());
            let wire = task.to_json();
            prop_assert!(!wire.is_empty(), "to_json gave nothing");
            let back = RedisTask::from_json(&wire);
            prop_assert!(back.is_ok(), "re-decoding failed: {:?}\n{}", back, String::from_utf8_lossy(&wire));
            let back = back.unwrap_or_else(|_| unreachable!("checked above"));
            prop_assert_eq!(&back, &task, "{}", String::from_utf8_lossy(&wire));
            prop_assert_eq!(arg_bytes(&back), arg_bytes(&task));
            exercise(&task)?;
        }
        Err(e) => {
            let _ = e.to_string();
            let _ = e.dlq_reason();
        }
    }
    Ok(())
}

/// Every argument's bytes, in order: the byte-exact part of a round trip, spelled out.
fn arg_bytes(task: &RedisTask) -> Vec<Vec<u8>> {
    let all = task
        .args
        .iter()
        .chain(task.pipeline_cmds.iter().flat_map(|c| c.args.iter()))
        .chain(&task.lua_keys)
        .chain(&task.lua_args);
    all.map(|a| a.as_bytes().to_vec()).collect()
}

/// Whether a message shows a marked value that is not one of the task's keys.
fn leaked(text: &str, values: &[String], keys: &[&[u8]]) -> Option<String> {
    values.iter().find(|v| text.contains(v.as_str()) && !keys.contains(&v.as_bytes())).cloned()
}

/// A simple, pipeline or Lua task built through the public builders from marked tokens.
fn marked_task() -> impl Strategy<Value = (Result<RedisTask, TaskError>, Vec<String>)> {
    let simple = (write_name(), tokens()).prop_map(|(name, toks)| {
        let args: Vec<Arg> = toks.iter().map(|t| Arg::from(t.bytes())).collect();
        (RedisTask::command(name, args), toks)
    });
    let pipeline = proptest::collection::vec((write_name(), tokens()), 1..4).prop_map(|cmds| {
        let mut all = Vec::new();
        let cmds = cmds
            .into_iter()
            .map(|(name, toks)| {
                let cmd = RedisCmd::new(name, toks.iter().map(Token::bytes));
                all.extend(toks);
                cmd
            })
            .collect();
        (RedisTask::pipeline(cmds), all)
    });
    let lua = (tokens(), tokens()).prop_map(|(keys, args)| {
        let task = RedisTask::lua(
            "return redis.call('SET', KEYS[1], ARGV[1])",
            keys.iter().map(Token::bytes),
            args.iter().map(Token::bytes),
        );
        let mut all = keys;
        all.extend(args);
        (task, all)
    });
    let mode = prop_oneof![Just(Mode::Replay), Just(Mode::Invalidate), Just(Mode::Log)];
    (prop_oneof![3 => simple, 2 => pipeline, 1 => lua], mode).prop_map(|((task, toks), mode)| {
        let values = toks
            .iter()
            .filter_map(|t| match t {
                Token::Value(n) => Some(value_text(*n)),
                _ => None,
            })
            .collect();
        (task.map(|t| t.with_mode(mode)), values)
    })
}

proptest! {
    #[test]
    fn from_json_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_and_exercise(&bytes)?;
    }

    #[test]
    fn from_json_never_panics_on_json(value in any_json()) {
        decode_and_exercise(&serde_json::to_vec(&value).unwrap_or_default())?;
    }

    #[test]
    fn well_typed_tasks_decode_and_round_trip(value in task_json()) {
        decode_and_exercise(&serde_json::to_vec(&value).unwrap_or_default())?;
    }

    #[test]
    fn damaged_tasks_decode_or_are_refused_and_what_decodes_round_trips(value in damaged_task_json()) {
        decode_and_exercise(&serde_json::to_vec(&value).unwrap_or_default())?;
    }

    #[test]
    fn edited_task_bytes_never_panic(
        value in task_json(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..6),
    ) {
        let mut bytes = serde_json::to_vec(&value).unwrap_or_default();
        for (at, byte, how) in edits {
            let i = at.index(bytes.len().max(1)).min(bytes.len());
            match how {
                0 => bytes.truncate(i),
                1 => bytes.insert(i, byte),
                2 if i < bytes.len() => bytes[i] = byte,
                // A second copy of the opening: duplicate fields, objects in objects.
                _ => {
                    let head = bytes[..i].to_vec();
                    bytes.splice(0..0, head);
                }
            }
        }
        decode_and_exercise(&bytes)?;
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow(depth in 1usize..4000, field in 0usize..4, object in any::<bool>()) {
        let (open, close) = if object { (r#"{"b64":"#, "}") } else { ("[", "]") };
        let nested = format!("{}\"x\"{}", open.repeat(depth), close.repeat(depth));
        let field = ["args", "lua_keys", "pipeline_cmds", "retry_count"][field];
        let json = format!(r#"{{"type":"simple","command":"del","{field}":[{nested}]}}"#);
        decode_and_exercise(json.as_bytes())?;
    }

    #[test]
    fn binary_arguments_round_trip_byte_for_byte(
        key in proptest::collection::vec(any::<u8>(), 1..32),
        values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..6),
    ) {
        let mut args = vec![Arg::from(key.clone())];
        args.extend(values.iter().map(|v| Arg::from(v.clone())));
        let hset: Vec<Arg> = values.iter().flat_map(|v| [Arg::from(v.clone()), Arg::from(v.clone())]).collect();
        let task = RedisTask::pipeline(vec![
            RedisCmd { command: "sadd".into(), args },
            RedisCmd { command: "hset".into(), args: std::iter::once(Arg::from(key)).chain(hset).collect() },
        ]);
        prop_assert!(task.is_ok(), "{:?}", task);
        let task = task.unwrap_or_else(|_| unreachable!("checked above"));
        let wire = task.to_json();
        let back = RedisTask::from_json(&wire);
        prop_assert_eq!(back.as_ref(), Ok(&task));
        prop_assert_eq!(arg_bytes(back.as_ref().unwrap_or(&task)), arg_bytes(&task));
    }

    #[test]
    fn values_never_reach_describe_debug_or_errors((task, values) in marked_task()) {
        match task {
            Ok(task) => {
                exercise(&task)?;
                let keys = task.touched_keys();
                let debug = format!("{task:?}");
                prop_assert!(!debug.contains(VALUE_MARKER), "Debug shows an argument: {}", debug);
                let described = task.describe();
                prop_assert_eq!(leaked(&described, &values, &keys), None, "describe(): {}", described);
                if let Ok(inv) = task.invalidation() {
                    let inv_debug = format!("{inv:?}");
                    prop_assert!(!inv_debug.contains(VALUE_MARKER), "{}", inv_debug);
                    prop_assert_eq!(leaked(&inv.describe(), &values, &keys), None);
                }
                let wire = task.to_json();
                // The same holds after a trip through Kafka, and for what the decoder says
                // about a damaged copy.
                let back = RedisTask::from_json(&wire);
                prop_assert!(back.is_ok());
                let mut damaged: Value = serde_json::from_slice(&wire).unwrap_or_default();
                damaged["retry_count"] = Value::from(-1);
                if let Err(e) = RedisTask::from_json(&serde_json::to_vec(&damaged).unwrap_or_default()) {
                    prop_assert!(!e.to_string().contains(VALUE_MARKER), "{}", e);
                }
            }
            Err(e) => {
                prop_assert!(!e.to_string().contains(VALUE_MARKER), "a builder's error shows a value: {}", e);
                let debug = format!("{e:?}");
                prop_assert!(!debug.contains(VALUE_MARKER), "{}", debug);
            }
        }
    }
}

proptest! {
    #[test]
    fn builders_refuse_bad_input_with_errors_and_what_they_build_round_trips(
        key in prop_oneof![Just(String::new()), "[a-z:{}]{1,12}", any::<String>()],
        value in proptest::collection::vec(any::<u8>(), 0..32),
        members in proptest::collection::vec(any::<String>(), 0..4),
        ttl_ms in prop_oneof![Just(0u64), 1u64..5000, any::<u64>()],
        max_retries in any::<u32>(),
        name in write_name(),
    ) {
        let ttl = std::time::Duration::from_millis(ttl_ms);
        let built = [
            RedisTask::del(key.clone()),
            RedisTask::set(key.clone(), value.clone(), ttl),
            RedisTask::hset(key.clone(), value.clone(), value.clone()),
            RedisTask::hdel(key.clone(), members.clone()),
            RedisTask::sadd(key.clone(), members.clone()),
            RedisTask::srem(key.clone(), members.clone()),
            RedisTask::command(name, [key.clone()]),
            RedisTask::lua(key.clone(), [key.clone()], members.clone()),
            RedisTask::pipeline(vec![RedisCmd::new("set", [key.as_bytes(), value.as_slice()])]),
        ];
        for task in built {
            let Ok(task) = task.and_then(|t| t.with_max_retries(max_retries)) else { continue };
            prop_assert!((1..=100).contains(&task.max_retries));
            let back = RedisTask::from_json(&task.to_json());
            prop_assert_eq!(back.as_ref(), Ok(&task));
            exercise(&task)?;
        }
    }
}

#[test]
fn numbers_from_the_seed_become_the_text_go_redis_sends() {
    let json = br#"{"type":"simple","command":"set","args":["k",18446744073709551615,-9223372036854775808,1.5,true,false,1e300]}"#;
    let task = RedisTask::from_json(json).expect("decodes");
    let args: Vec<String> =
        task.args.iter().map(|a| String::from_utf8_lossy(a.as_bytes()).into_owned()).collect();
    assert_eq!(&args[..6], ["k", "18446744073709551615", "-9223372036854775808", "1.5", "1", "0"]);
    assert_eq!(args[6].len(), 301, "1e300 in full, no exponent: {}", args[6]);
}
