//! TEMPORARY STUB — replaced by the real command table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    Read,
    Write { idempotent: bool },
    Script,
    Control,
    Forbidden,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySpec {
    None,
    Range { first: usize, step: usize, from_end: usize },
}
pub struct CommandSpec {
    pub name: &'static str,
    pub access: Access,
    pub keys: KeySpec,
}
static TABLE: &[CommandSpec] = &[
    CommandSpec {
        name: "DEL",
        access: Access::Write { idempotent: true },
        keys: KeySpec::Range { first: 1, step: 1, from_end: 0 },
    },
    CommandSpec { name: "EVAL", access: Access::Script, keys: KeySpec::None },
    CommandSpec { name: "EVALSHA", access: Access::Script, keys: KeySpec::None },
    CommandSpec { name: "FLUSHALL", access: Access::Forbidden, keys: KeySpec::None },
    CommandSpec {
        name: "GET",
        access: Access::Read,
        keys: KeySpec::Range { first: 1, step: 1, from_end: 0 },
    },
    CommandSpec {
        name: "HDEL",
        access: Access::Write { idempotent: true },
        keys: KeySpec::Range { first: 1, step: 100000, from_end: 0 },
    },
    CommandSpec {
        name: "HSET",
        access: Access::Write { idempotent: true },
        keys: KeySpec::Range { first: 1, step: 100000, from_end: 0 },
    },
    CommandSpec {
        name: "INCR",
        access: Access::Write { idempotent: false },
        keys: KeySpec::Range { first: 1, step: 100000, from_end: 0 },
    },
    CommandSpec {
        name: "MSET",
        access: Access::Write { idempotent: true },
        keys: KeySpec::Range { first: 1, step: 2, from_end: 0 },
    },
    CommandSpec {
        name: "SADD",
        access: Access::Write { idempotent: true },
        keys: KeySpec::Range { first: 1, step: 100000, from_end: 0 },
    },
    CommandSpec {
        name: "SET",
        access: Access::Write { idempotent: true },
        keys: KeySpec::Range { first: 1, step: 100000, from_end: 0 },
    },
    CommandSpec {
        name: "SREM",
        access: Access::Write { idempotent: true },
        keys: KeySpec::Range { first: 1, step: 100000, from_end: 0 },
    },
];
pub fn lookup(args: &[&[u8]]) -> Option<&'static CommandSpec> {
    let n = std::str::from_utf8(args.first()?).ok()?.to_ascii_uppercase();
    TABLE.iter().find(|s| s.name == n)
}
pub fn keys<'a>(spec: &CommandSpec, args: &[&'a [u8]]) -> Vec<&'a [u8]> {
    match spec.keys {
        KeySpec::None => vec![],
        KeySpec::Range { first, step, from_end } => {
            let end = args.len().saturating_sub(from_end);
            (first..end).step_by(step).map(|i| args[i]).collect()
        }
    }
}
impl CommandSpec {
    pub fn is_idempotent(&self) -> bool {
        matches!(self.access, Access::Write { idempotent: true })
    }
}
