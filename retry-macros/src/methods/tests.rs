//! The method list agrees with the runtime's command table, and the scan treats every method
//! as the table classifies its command.

use super::{all, find, Evidence};
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
fn every_command_is_in_the_runtime_table_as_spelled() {
    for method in all() {
        let spec = lookup_name(method.command).unwrap_or_else(|| {
            panic!("`{}` sends {}, which the runtime's table lacks", method.name, method.command)
        });
        assert_eq!(spec.name, method.command, "`{}`", method.name);
    }
}

/// Where a method is named after a command (`hgetall`, `incr`), it must not send a command of
/// another access: a typo in the list would otherwise silently flip a read into a write.
#[test]
fn a_method_named_after_a_command_has_that_command_s_access() {
    for method in all() {
        if let Some(namesake) = lookup_name(method.name) {
            let sent = lookup_name(method.command).unwrap();
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
        let expected = lookup_name(method.command).unwrap();
        let name = method.name;
        let distinctive = method.evidence == Evidence::Distinctive;
        let mut shapes = vec![
            (format!("{{ conn.{name}::<_, ()>(k).await; }}"), true),
            (format!("{{ redis::pipe().atomic().{name}(k).ignore().query_async(&mut c).await; }}"), true),
            (format!("{{ conn.{name}(k); }}"), distinctive),
        ];
        if let Evidence::Shared { awaited_with: Some(n) } = method.evidence {
            let args = vec!["a"; n].join(", ");
            shapes.push((format!("{{ conn.{name}({args}).await?; }}"), true));
            shapes.push((format!("{{ conn.{name}({args}, extra).await?; }}"), false));
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
