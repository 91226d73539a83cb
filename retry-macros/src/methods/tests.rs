//! The method list agrees with the runtime's command table, and the scan treats every method
//! as the table classifies its command.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::{all, find, Evidence, NOT_IN_TABLE};
use crate::commands::{lookup_name, Access};
use crate::scan::calls;

#[test]
fn sorted_unique_and_found() {
    assert!(all().windows(2).all(|w| w[0].name < w[1].name), "METHODS must be strictly sorted");
    for method in all() {
        assert_eq!(find(method.name), Some(method));
    }
    assert_eq!(find("no_such_method"), None);
}

#[test]
fn every_command_is_in_the_runtime_table_as_spelled_or_listed_as_missing() {
    for method in all() {
        match lookup_name(method.command) {
            Some(spec) => {
                assert_eq!(spec.name, method.command, "`{}`", method.name);
                assert!(!NOT_IN_TABLE.contains(&method.command), "the table knows {} now", method.command);
            }
            None => assert!(
                NOT_IN_TABLE.contains(&method.command),
                "`{}` sends {}, which the runtime's table lacks and NOT_IN_TABLE does not list",
                method.name,
                method.command
            ),
        }
    }
    for command in NOT_IN_TABLE {
        assert!(all().iter().any(|m| m.command == *command), "no method sends {command}");
    }
}

/// The redis-rs the workspace builds with, as Cargo unpacked it.
fn redis_rs_source() -> PathBuf {
    let lock = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock"))
        .expect("the workspace's Cargo.lock");
    let version = lock
        .split("[[package]]")
        .find(|p| p.contains("\nname = \"redis\"\n"))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = \"")))
        .map(|v| v.trim_end_matches('"').to_string())
        .expect("redis in Cargo.lock");
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .expect("CARGO_HOME or HOME");
    let registries = std::fs::read_dir(home.join("registry/src")).expect("Cargo's registry sources");
    registries
        .filter_map(Result::ok)
        .map(|r| r.path().join(format!("redis-{version}")))
        .find(|p| p.is_dir())
        .unwrap_or_else(|| panic!("redis-{version} is not unpacked; build the workspace first"))
}

/// Every `fn name<` inside the `macro!{ .. }` invocations (or definition) in `text`.
fn fns_in(text: &str, opening: &str) -> Vec<String> {
    let mut names = Vec::new();
    for (start, _) in text.match_indices(opening) {
        let body = &text[start + opening.len()..];
        let mut depth = 1usize;
        let end = body
            .char_indices()
            .find(|&(_, c)| {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                depth == 0
            })
            .map_or(body.len(), |(i, _)| i);
        for line in body[..end].lines() {
            let Some(rest) = line.trim_start().strip_prefix("fn ") else { continue };
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if rest[name.len()..].starts_with('<') {
                names.push(name);
            }
        }
    }
    names
}

/// redis-rs generates `AsyncCommands` from its `implement_commands!` invocations, and adds
/// the `implement_iterators!` methods: a method it gains that the list lacks would be a call
/// the scan never sees.
#[test]
fn the_list_covers_redis_rs_s_async_commands() {
    let source = redis_rs_source().join("src/commands");
    let mut methods = BTreeSet::new();
    for entry in std::fs::read_dir(&source).expect("redis-rs's commands") {
        let path = entry.expect("a directory entry").path();
        if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).expect("a source file");
            methods.extend(fns_in(&text, "implement_commands! {"));
            methods.extend(fns_in(&text, "macro_rules! implement_iterators {"));
        }
    }
    assert!(methods.len() > 250, "found only {} methods: has redis-rs's layout changed?", methods.len());
    for expected in ["get", "set", "del", "hgetall", "incr", "scan_match", "invoke_script"] {
        assert!(methods.contains(expected), "`{expected}` not found: has redis-rs's layout changed?");
    }
    let missing: Vec<&String> = methods.iter().filter(|m| find(m).is_none()).collect();
    assert!(missing.is_empty(), "redis-rs's AsyncCommands has methods the list lacks: {missing:?}");
}

/// Where a method is named after a command (`hgetall`, `incr`), it must not send a command of
/// another access: a typo in the list would otherwise silently flip a read into a write.
#[test]
fn a_method_named_after_a_command_has_that_command_s_access() {
    for method in all() {
        if let (Some(namesake), Some(sent)) = (lookup_name(method.name), lookup_name(method.command)) {
            assert_eq!(namesake.access, sent.access, "`{}` sends {}", method.name, method.command);
        }
    }
}

fn access_of(method: &str) -> Access {
    lookup_name(find(method).unwrap_or_else(|| panic!("`{method}` is not listed")).command).unwrap().access
}

/// The seed's own lists (只重试增删改操作; 幂等性要求).
#[test]
fn the_seed_s_examples() {
    for read in ["get", "hget", "hgetall", "exists", "smembers", "zrange", "keys", "ttl", "mget", "lrange"] {
        assert_eq!(access_of(read), Access::Read, "{read}");
    }
    for write in ["del", "set", "set_ex", "hset", "hdel", "sadd", "srem", "expire", "zadd", "unlink"] {
        assert_eq!(access_of(write), Access::Write { idempotent: true }, "{write}");
    }
    for write in ["incr", "decr", "lpush", "rpush", "hincr", "zincr", "append", "xadd", "lpop", "spop"] {
        assert_eq!(access_of(write), Access::Write { idempotent: false }, "{write}");
    }
    assert_eq!(access_of("invoke_async"), Access::Script);
    assert!(access_of("flushall").is_forbidden());
}

/// Through the whole scan, each method called as redis-rs is called comes out with its
/// command's access from the runtime's table, with the evidence its kind of name allows.
#[test]
fn the_scan_treats_each_method_as_the_table_classifies_its_command() {
    for method in all() {
        let name = method.name;
        let Some(expected) = lookup_name(method.command) else {
            // A command the table lacks: named, so that the attribute can refuse it.
            let found = calls(&syn::parse_str(&format!("{{ conn.{name}(k); }}")).unwrap());
            assert_eq!(found[0].unknown_name(), Some(method.command), "`{name}`");
            continue;
        };
        let distinctive = method.evidence == Evidence::Distinctive;
        let mut shapes = vec![
            (format!("{{ conn.{name}::<_, ()>(k).await; }}"), true),
            (format!("{{ redis::pipe().atomic().{name}(k).ignore().query_async(&mut c).await; }}"), true),
            (format!("{{ conn.{name}(k); }}"), distinctive),
        ];
        if let Evidence::Shared { arity } = method.evidence {
            let args = vec!["a"; arity].join(", ");
            shapes.push((format!("{{ let v: T = conn.{name}({args}).await?; }}"), true));
            shapes.push((format!("{{ let v: RedisResult<T> = conn.{name}({args}).await; }}"), true));
            shapes.push((format!("{{ conn.{name}({args}).await?; }}"), false));
            let more = if arity == 0 { "extra".to_string() } else { format!("{args}, extra") };
            shapes.push((format!("{{ let v: T = conn.{name}({more}).await?; }}"), false));
        }
        for (code, certain) in shapes {
            let found = calls(&syn::parse_str(&code).unwrap());
            assert_eq!(found.len(), 1, "{code}");
            assert_eq!(found[0].spec, Some(expected), "{code}");
            assert_eq!(found[0].access, Some(expected.access), "{code}");
            assert_eq!(found[0].certain, certain, "{code}");
        }
    }
}

/// Names std or common crates share are listed as shared, so that they need corroboration.
#[test]
fn names_std_shares_need_corroboration() {
    for name in
        ["get", "set", "keys", "exists", "append", "incr", "decr", "copy", "rename", "scan", "publish"]
    {
        assert!(matches!(find(name).map(|m| m.evidence), Some(Evidence::Shared { .. })), "{name}");
    }
    // Not redis-rs methods at all.
    for name in ["len", "insert", "remove", "push", "pop", "contains_key", "iter"] {
        assert_eq!(find(name), None, "{name}");
    }
}
