//! The command table: what each Redis command a repository may send does to data.
//!
//! One static table answers, for every command: does it read or write, is replaying
//! it twice harmless (idempotent), which arguments are keys, and must it never be
//! replayed at all. The capturing connection asks it what to capture and which keys a
//! failed write touched (for Kafka partitioning, and for "invalidate" mode, which
//! replays a failed write as `DEL` of those keys); the consumer uses it as an
//! allow-list; the proc macro checks commands against it at compile time, which is
//! why this crate depends on nothing but `std`: the macro, the runtime and the consumer
//! all read the same table.
//!
//! Lookups never allocate: the name is upper-cased into a stack buffer and found in a hash
//! index built once over a table whose order is checked at compile time.
//!
//! ```
//! use redis_retry_commands::{keys, lookup, Access};
//!
//! let args: [&[u8]; 3] = [b"set", b"user:1", b"alice"];
//! let spec = lookup(&args).unwrap();
//! assert_eq!(spec.access, Access::Write { idempotent: true });
//! assert_eq!(keys(spec, &args), [&b"user:1"[..]]);
//! ```
//!
//! # Idempotency
//!
//! A write is idempotent when applying it twice leaves the same data as applying it
//! once, so a replay of a write that in fact reached Redis does no harm. Relative
//! expiries (`EXPIRE k 60`, `SET k v EX 60`) count as idempotent even though a late
//! replay restarts the clock. Commands whose effect depends on what the value holds
//! when they run (positions, counters, pops, random picks) are not.
//!
//! # Decisions where Redis leaves room
//!
//! - `KEYS` is [`Access::Read`]: it is slow, not unsafe. [`Access::Forbidden`] is about
//!   what must never be replayed, and a read never is, so the label would only make
//!   a harmless (if expensive) command look like an admin one.
//! - `RENAME` and `RENAMENX` are idempotent writes: once the source is gone a second
//!   attempt changes nothing (it replies `ERR no such key`, which the consumer must
//!   count as done rather than as a failure).
//! - `SMOVE` is idempotent: a second attempt finds the member gone from the source.
//! - `SORT`, `GEORADIUS` and `GEORADIUSBYMEMBER` are idempotent writes in the table
//!   because they may `STORE`; [`classify`] / [`CommandSpec::access_for`] call an
//!   invocation without a destination a read. `SORT_RO`, `GEORADIUS_RO` and
//!   `GEORADIUSBYMEMBER_RO` are reads.
//! - `ZADD` is idempotent in the table; an invocation with the `INCR` option is
//!   classified as non-idempotent.
//! - `BITFIELD` is a non-idempotent write in the table (it may `INCRBY`); an invocation
//!   with only `GET` is a read and one with `SET` but no `INCRBY` is idempotent.
//! - `GETEX` and `HGETEX` without an expiry option are reads per invocation.
//! - `SET ... GET` and `SET ... KEEPTTL` are still idempotent writes.
//! - `EVAL`, `EVALSHA` and `FCALL` are [`Access::Script`]; their `_RO` forms are reads,
//!   because Redis rejects any write from them.
//! - `SCRIPT LOAD` is [`Access::Control`] (it only caches a body); `SCRIPT EXISTS` is a
//!   read; `SCRIPT FLUSH`, `SCRIPT KILL`, `SCRIPT DEBUG` and all of `FUNCTION` are
//!   forbidden.
//! - `MOVE`, and `COPY` with the `DB` option, are forbidden: they write into another
//!   logical database, which a task bound to one database can neither replay nor
//!   invalidate.
//! - All of `CLUSTER`, `CONFIG`, `MODULE`, `FUNCTION` and the `ACL` subcommands that
//!   manage or reveal users are forbidden, including reads such as `CLUSTER SLOTS`
//!   (never captured anyway, being reads). For these containers a subcommand missing
//!   from the table still resolves to the forbidden container entry (`"CONFIG"`,
//!   `"ACL"`, ...), so a new admin subcommand cannot slip through as unknown. Other
//!   containers (`CLIENT`, `OBJECT`, `XINFO`, ...) return `None` for unknown
//!   subcommands.
//! - `WAIT` and `WAITAOF` are [`Access::Control`]: they neither read nor change data.
//! - `PUBLISH` and `SPUBLISH` are non-idempotent writes with no keys: a channel is not a
//!   key, and a replay delivers the message again.

/// How a command relates to data.
///
/// ```
/// use redis_retry_commands::{lookup_name, Access};
///
/// assert_eq!(lookup_name("HGETALL").unwrap().access, Access::Read);
/// assert_eq!(lookup_name("INCR").unwrap().access, Access::Write { idempotent: false });
/// assert_eq!(lookup_name("EVALSHA").unwrap().access, Access::Script);
/// assert_eq!(lookup_name("MULTI").unwrap().access, Access::Control);
/// assert_eq!(lookup_name("FLUSHALL").unwrap().access, Access::Forbidden);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Reads only (`GET`, `HGETALL`, `EXISTS`, `SCAN`, `TTL`, `XRANGE`, ...). Never
    /// captured, never replayed.
    Read,
    /// Mutates data: may be captured and replayed.
    Write {
        /// Applying the command twice leaves the same data as applying it once.
        idempotent: bool,
    },
    /// Scripting (`EVAL`, `EVALSHA`, `FCALL`): the body decides; replayed only as a Lua
    /// task.
    Script,
    /// Connection and transaction control (`MULTI`, `EXEC`, `WATCH`, `PING`, `SELECT`,
    /// `AUTH`, `HELLO`, `CLIENT SETNAME`, ...): neither captured nor replayed.
    Control,
    /// Administrative or dangerous (`FLUSHALL`, `CONFIG SET`, `SHUTDOWN`,
    /// `SCRIPT FLUSH`, `CLUSTER *`, ...): never replayed; the consumer dead-letters such
    /// a task as forbidden.
    Forbidden,
}

impl Access {
    /// True for [`Access::Write`], idempotent or not. [`Access::Script`] is not counted:
    /// see [`Access::may_write`].
    ///
    /// ```
    /// use redis_retry_commands::Access;
    ///
    /// assert!(Access::Write { idempotent: false }.is_write());
    /// assert!(!Access::Script.is_write());
    /// ```
    #[must_use]
    pub const fn is_write(self) -> bool {
        matches!(self, Access::Write { .. })
    }

    /// True for [`Access::Read`].
    ///
    /// ```
    /// use redis_retry_commands::Access;
    ///
    /// assert!(Access::Read.is_read());
    /// assert!(!Access::Control.is_read());
    /// ```
    #[must_use]
    pub const fn is_read(self) -> bool {
        matches!(self, Access::Read)
    }

    /// True only for `Write { idempotent: true }`.
    ///
    /// ```
    /// use redis_retry_commands::Access;
    ///
    /// assert!(Access::Write { idempotent: true }.is_idempotent());
    /// assert!(!Access::Write { idempotent: false }.is_idempotent());
    /// assert!(!Access::Read.is_idempotent());
    /// ```
    #[must_use]
    pub const fn is_idempotent(self) -> bool {
        matches!(self, Access::Write { idempotent: true })
    }

    /// True for [`Access::Forbidden`].
    ///
    /// ```
    /// use redis_retry_commands::Access;
    ///
    /// assert!(Access::Forbidden.is_forbidden());
    /// ```
    #[must_use]
    pub const fn is_forbidden(self) -> bool {
        matches!(self, Access::Forbidden)
    }

    /// True for writes and scripts: everything a capturing connection may have to
    /// capture.
    ///
    /// ```
    /// use redis_retry_commands::Access;
    ///
    /// assert!(Access::Script.may_write());
    /// assert!(Access::Write { idempotent: true }.may_write());
    /// assert!(!Access::Forbidden.may_write());
    /// ```
    #[must_use]
    pub const fn may_write(self) -> bool {
        matches!(self, Access::Write { .. } | Access::Script)
    }
}

/// Where a command's keys are, as positions in the full argument list (`args[0]` is
/// the command name, `args[1]` the subcommand of a container command).
///
/// [`keys`] interprets it; it never panics and returns whatever keys the arguments
/// actually hold, so a malformed command yields fewer keys rather than an error.
///
/// ```
/// use redis_retry_commands::{lookup_name, KeySpec};
///
/// assert_eq!(lookup_name("GET").unwrap().keys, KeySpec::Single(1));
/// assert_eq!(
///     lookup_name("MSET").unwrap().keys,
///     KeySpec::Range { first: 1, step: 2, from_end: 0 }
/// );
/// assert_eq!(
///     lookup_name("ZUNIONSTORE").unwrap().keys,
///     KeySpec::NumKeys { numkeys_at: 2, dest: Some(1) }
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeySpec {
    /// No keys (`PING`, `SCAN`, `PUBLISH`, ...).
    None,
    /// One key at this index (`GET k`: 1; `OBJECT ENCODING k`: 2).
    Single(usize),
    /// `count` consecutive keys from `first` (`RENAME src dst`, `LMOVE src dst ...`).
    Fixed {
        /// Index of the first key.
        first: usize,
        /// Number of keys.
        count: usize,
    },
    /// Keys at `first`, `first + step`, ... up to, not including, the last `from_end`
    /// arguments (`DEL k..`: 1, 1, 0; `MSET k v ..`: 1, 2, 0; `BLPOP k.. timeout`:
    /// 1, 1, 1).
    Range {
        /// Index of the first key.
        first: usize,
        /// Distance between keys (2 for key-value pairs).
        step: usize,
        /// Trailing arguments that are not keys (the timeout of `BLPOP`).
        from_end: usize,
    },
    /// The argument at `numkeys_at` counts the keys that follow it, optionally after a
    /// destination key at `dest` (`EVAL script numkeys k..`: 2, None;
    /// `ZUNIONSTORE dest numkeys k..`: 2, Some(1); `LMPOP numkeys k..`: 1, None).
    NumKeys {
        /// Index of the key count.
        numkeys_at: usize,
        /// Index of a destination key before the count.
        dest: Option<usize>,
    },
    /// `XREAD` / `XREADGROUP`: the first half of the arguments after the `STREAMS`
    /// option (`... STREAMS k1 k2 id1 id2`). Options are walked with their arities, so
    /// a group or consumer named `STREAMS` is not mistaken for the keyword.
    Streams,
    /// `SORT key ... [STORE dest]`: the key at 1, then the destination of the last
    /// `STORE` option. Keys named by `BY` and `GET` patterns cannot be known.
    Sort,
    /// `GEORADIUS`-style: the key at 1, then the destination of the last `STORE` or
    /// `STOREDIST` option found from `options_from` on (Redis keeps only the last one).
    GeoRadius {
        /// Index of the first optional argument.
        options_from: usize,
    },
    /// `MIGRATE host port key db timeout [...] [KEYS k..]`: the key at 3, or the keys
    /// after `KEYS` when the key at 3 is empty.
    Migrate,
}

/// The documentation group of a command, as in the Redis command reference.
///
/// ```
/// use redis_retry_commands::{lookup_name, Group};
///
/// assert_eq!(lookup_name("XADD").unwrap().group, Group::Streams);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Group {
    /// `GET`, `SET`, `INCR`, ...
    Strings,
    /// Generic key commands: `DEL`, `EXPIRE`, `RENAME`, `SCAN`, `OBJECT *`, `SORT`, ...
    Keys,
    /// `HSET`, `HGET`, `HEXPIRE`, ...
    Hashes,
    /// `SADD`, `SMEMBERS`, ...
    Sets,
    /// `ZADD`, `ZRANGE`, ...
    SortedSets,
    /// `LPUSH`, `LRANGE`, ...
    Lists,
    /// `XADD`, `XREADGROUP`, `XGROUP *`, ...
    Streams,
    /// `SETBIT`, `BITFIELD`, ...
    Bitmaps,
    /// `PFADD`, `PFCOUNT`, `PFMERGE`.
    HyperLogLog,
    /// `GEOADD`, `GEOSEARCH`, ...
    Geo,
    /// `EVAL`, `FCALL`, `SCRIPT *`, `FUNCTION *`.
    Scripting,
    /// `MULTI`, `EXEC`, `DISCARD`, `WATCH`, `UNWATCH`.
    Transactions,
    /// `PING`, `AUTH`, `HELLO`, `SELECT`, `CLIENT *`, ...
    Connection,
    /// `INFO`, `CONFIG *`, `FLUSHALL`, `ACL *`, ...
    Server,
    /// `PUBLISH`, `SUBSCRIBE`, `PUBSUB *`, ...
    PubSub,
    /// `CLUSTER *`, `READONLY`, `READWRITE`, `ASKING`.
    Cluster,
}

/// One entry of the command table.
///
/// ```
/// use redis_retry_commands::{lookup_name, Group, KeySpec};
///
/// let spec = lookup_name("xgroup create").unwrap();
/// assert_eq!(spec.name, "XGROUP CREATE");
/// assert_eq!(spec.keys, KeySpec::Single(2));
/// assert_eq!(spec.group, Group::Streams);
/// assert!(spec.is_idempotent());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CommandSpec {
    /// Upper case; two words for a container's subcommand (`"CONFIG SET"`). A bare
    /// container name (`"CONFIG"`) stands for its subcommands not listed separately.
    pub name: &'static str,
    /// What the command does to data, whatever its options (see
    /// [`CommandSpec::access_for`] for one invocation).
    pub access: Access,
    /// Where its keys are.
    pub keys: KeySpec,
    /// Its group in the Redis reference.
    pub group: Group,
}

impl CommandSpec {
    /// `access` is a write (idempotent or not).
    ///
    /// ```
    /// use redis_retry_commands::lookup_name;
    ///
    /// assert!(lookup_name("LPUSH").unwrap().is_write());
    /// assert!(!lookup_name("EVAL").unwrap().is_write());
    /// ```
    #[must_use]
    pub const fn is_write(&self) -> bool {
        self.access.is_write()
    }

    /// `access` is a read.
    ///
    /// ```
    /// use redis_retry_commands::lookup_name;
    ///
    /// assert!(lookup_name("ZSCORE").unwrap().is_read());
    /// ```
    #[must_use]
    pub const fn is_read(&self) -> bool {
        self.access.is_read()
    }

    /// `access` is `Write { idempotent: true }`.
    ///
    /// ```
    /// use redis_retry_commands::lookup_name;
    ///
    /// assert!(lookup_name("HSET").unwrap().is_idempotent());
    /// assert!(!lookup_name("HINCRBY").unwrap().is_idempotent());
    /// ```
    #[must_use]
    pub const fn is_idempotent(&self) -> bool {
        self.access.is_idempotent()
    }

    /// `access` is forbidden.
    ///
    /// ```
    /// use redis_retry_commands::lookup_name;
    ///
    /// assert!(lookup_name("SCRIPT FLUSH").unwrap().is_forbidden());
    /// ```
    #[must_use]
    pub const fn is_forbidden(&self) -> bool {
        self.access.is_forbidden()
    }

    /// The access of one invocation, refining the table's answer from the arguments
    /// (`args[0]` is the command name):
    ///
    /// - `ZADD ... INCR ...` is not idempotent;
    /// - `BITFIELD` with only `GET` is a read, with `SET` but no `INCRBY` idempotent;
    /// - `GETEX k` and `HGETEX k FIELDS ..` (no expiry option) are reads;
    /// - `SORT` / `GEORADIUS` / `GEORADIUSBYMEMBER` without a destination are reads;
    /// - `COPY ... DB n` is forbidden (it writes into another database).
    ///
    /// Anything else, including arguments too malformed to judge, gets `self.access`.
    ///
    /// ```
    /// use redis_retry_commands::{lookup_name, Access};
    ///
    /// let zadd = lookup_name("ZADD").unwrap();
    /// let plain: [&[u8]; 4] = [b"ZADD", b"board", b"10", b"ann"];
    /// let incr: [&[u8]; 5] = [b"ZADD", b"board", b"INCR", b"10", b"ann"];
    /// assert_eq!(zadd.access_for(&plain), Access::Write { idempotent: true });
    /// assert_eq!(zadd.access_for(&incr), Access::Write { idempotent: false });
    ///
    /// let sort = lookup_name("SORT").unwrap();
    /// let read: [&[u8]; 3] = [b"SORT", b"ids", b"ALPHA"];
    /// assert_eq!(sort.access_for(&read), Access::Read);
    /// ```
    #[must_use]
    pub fn access_for(&self, args: &[&[u8]]) -> Access {
        let read_unless = |writes: bool| if writes { self.access } else { Access::Read };
        match self.keys {
            KeySpec::Sort => return read_unless(sort_store(args).is_some()),
            KeySpec::GeoRadius { options_from } => {
                return read_unless(geo_store(args, options_from).is_some())
            }
            _ => {}
        }
        match self.name {
            "ZADD" if zadd_has_incr(args) => Access::Write { idempotent: false },
            "BITFIELD" => bitfield_access(args).unwrap_or(self.access),
            "GETEX" if args.len() == 2 => Access::Read,
            "HGETEX" if args.get(2).is_some_and(|a| is(a, "FIELDS")) => Access::Read,
            "COPY" if args.iter().skip(3).any(|a| is(a, "DB")) => Access::Forbidden,
            _ => self.access,
        }
    }
}

/// A looked-up command together with the access of this particular invocation.
///
/// ```
/// use redis_retry_commands::{classify, Access};
///
/// let c = classify(&[b"bitfield", b"flags", b"GET", b"u8", b"0"]).unwrap();
/// assert_eq!(c.spec.name, "BITFIELD");
/// assert!(c.spec.is_write()); // what the command may do
/// assert_eq!(c.access, Access::Read); // what this invocation does
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classification {
    /// The table entry.
    pub spec: &'static CommandSpec,
    /// The access of the classified invocation, from [`CommandSpec::access_for`].
    pub access: Access,
}

/// Looks up a command and refines its access from the arguments, see
/// [`CommandSpec::access_for`]. Unknown → `None`.
///
/// ```
/// use redis_retry_commands::{classify, Access};
///
/// let c = classify(&[b"SET", b"k", b"v", b"KEEPTTL", b"GET"]).unwrap();
/// assert_eq!(c.access, Access::Write { idempotent: true });
/// assert!(classify(&[b"NOSUCHCOMMAND"]).is_none());
/// ```
#[must_use]
pub fn classify(args: &[&[u8]]) -> Option<Classification> {
    let spec = lookup(args)?;
    Some(Classification { spec, access: spec.access_for(args) })
}

/// Looks up a command from its full argument list (`args[0]` = name, any case; for a
/// container command `args[1]` is the subcommand). Unknown → `None`.
///
/// Allocation-free: the name is upper-cased on the stack and binary-searched.
///
/// ```
/// use redis_retry_commands::lookup;
///
/// assert_eq!(lookup(&[b"hSet", b"h", b"f", b"v"]).unwrap().name, "HSET");
/// assert_eq!(lookup(&[b"config", b"set", b"maxmemory", b"1"]).unwrap().name, "CONFIG SET");
/// // An unlisted subcommand of an admin container is still forbidden.
/// assert!(lookup(&[b"CONFIG", b"NEWTHING"]).unwrap().is_forbidden());
/// assert!(lookup(&[b"CLIENT", b"NEWTHING"]).is_none());
/// assert!(lookup(&[b"NOSUCHCOMMAND", b"k"]).is_none());
/// assert!(lookup(&[]).is_none());
/// ```
#[must_use]
pub fn lookup(args: &[&[u8]]) -> Option<&'static CommandSpec> {
    let (name, rest) = args.split_first()?;
    let mut buf = [0u8; NAME_BUF];
    let len = upper_into(&mut buf, 0, name)?;
    resolve(&mut buf, len, rest.first().copied())
}

/// Looks up by name only, e.g. `"set"`, `"SCRIPT FLUSH"` (case-insensitive, words
/// separated by ASCII whitespace). Two words are accepted only for container commands.
///
/// ```
/// use redis_retry_commands::lookup_name;
///
/// assert_eq!(lookup_name("set").unwrap().name, "SET");
/// assert_eq!(lookup_name("script  flush").unwrap().name, "SCRIPT FLUSH");
/// assert!(lookup_name("GET key").is_none());
/// assert!(lookup_name("").is_none());
/// ```
#[must_use]
pub fn lookup_name(name: &str) -> Option<&'static CommandSpec> {
    let mut words = name.split_ascii_whitespace().map(str::as_bytes);
    let first = words.next()?;
    let sub = words.next();
    if words.next().is_some() {
        return None;
    }
    let mut buf = [0u8; NAME_BUF];
    let len = upper_into(&mut buf, 0, first)?;
    if sub.is_some() && !is_container(&buf[..len]) {
        return None;
    }
    resolve(&mut buf, len, sub)
}

/// The keys the command touches, in argument order, borrowed from `args` (`args[0]`
/// is the command name). A key given twice is returned twice.
///
/// Never panics, whatever the arguments (too short, malformed or huge `numkeys`,
/// non-UTF-8): it returns the keys that can be found.
///
/// ```
/// use redis_retry_commands::{keys, lookup};
///
/// let args: [&[u8]; 6] = [b"EVAL", b"return 1", b"2", b"a", b"b", b"argv1"];
/// assert_eq!(keys(lookup(&args).unwrap(), &args), [&b"a"[..], b"b"]);
///
/// let args: [&[u8]; 6] = [b"XREAD", b"COUNT", b"10", b"STREAMS", b"s1", b"0"];
/// assert_eq!(keys(lookup(&args).unwrap(), &args), [&b"s1"[..]]);
///
/// // numkeys larger than what follows: the keys that are there.
/// let args: [&[u8]; 4] = [b"EVAL", b"return 1", b"99", b"a"];
/// assert_eq!(keys(lookup(&args).unwrap(), &args), [&b"a"[..]]);
/// ```
#[must_use]
pub fn keys<'a>(spec: &CommandSpec, args: &[&'a [u8]]) -> Vec<&'a [u8]> {
    let at = |i: usize| args.get(i).copied();
    let mut out = Vec::new();
    match spec.keys {
        KeySpec::None => {}
        KeySpec::Single(i) => out.extend(at(i)),
        KeySpec::Fixed { first, count } => {
            out.extend(args.iter().skip(first).take(count).copied());
        }
        KeySpec::Range { first, step, from_end } => {
            let end = args.len().saturating_sub(from_end);
            if let Some(span) = args.get(first..end) {
                out.extend(span.iter().step_by(step.max(1)).copied());
            }
        }
        KeySpec::NumKeys { numkeys_at, dest } => {
            out.extend(dest.and_then(at));
            let count = at(numkeys_at).and_then(parse_count).unwrap_or(0);
            let first = numkeys_at.saturating_add(1);
            out.extend(args.iter().skip(first).take(count).copied());
        }
        KeySpec::Streams => {
            if let Some(after) = streams_at(args).and_then(|i| args.get(i + 1..)) {
                // Unbalanced key/ID lists are an error in Redis; the first half is
                // still the best guess at the keys.
                out.extend_from_slice(&after[..after.len() / 2]);
            }
        }
        KeySpec::Sort => {
            out.extend(at(1));
            out.extend(sort_store(args).and_then(at));
        }
        KeySpec::GeoRadius { options_from } => {
            out.extend(at(1));
            out.extend(geo_store(args, options_from).and_then(at));
        }
        KeySpec::Migrate => match (at(3), migrate_keys_at(args)) {
            (Some(b""), Some(i)) => out.extend(args.iter().skip(i).copied()),
            (Some(key), _) if !key.is_empty() => out.push(key),
            _ => {}
        },
    }
    out
}

/// Every entry, sorted by name (byte order), for tests, docs and the macro's
/// agreement test.
///
/// ```
/// use redis_retry_commands::{all, lookup_name};
///
/// assert!(all().windows(2).all(|w| w[0].name < w[1].name));
/// for spec in all() {
///     assert_eq!(lookup_name(spec.name), Some(spec));
/// }
/// ```
#[must_use]
pub fn all() -> &'static [CommandSpec] {
    COMMANDS
}

// ---------------------------------------------------------------------------------
// Lookup internals.

/// Longer than any name in the table, container and subcommand included; a longer
/// input cannot match and is rejected without being copied.
const NAME_BUF: usize = 40;

/// Commands whose second argument selects the real command. Sorted, checked below.
const CONTAINERS: &[&str] = &[
    "ACL", "CLIENT", "CLUSTER", "COMMAND", "CONFIG", "FUNCTION", "LATENCY", "MEMORY", "MODULE", "OBJECT",
    "PUBSUB", "SCRIPT", "SLOWLOG", "XGROUP", "XINFO",
];

/// Upper-cases `word` into `buf[at..]`; `None` when it does not fit.
fn upper_into(buf: &mut [u8; NAME_BUF], at: usize, word: &[u8]) -> Option<usize> {
    let end = at.checked_add(word.len())?;
    let dst = buf.get_mut(at..end)?;
    for (d, s) in dst.iter_mut().zip(word) {
        *d = s.to_ascii_uppercase();
    }
    Some(end)
}

fn is_container(upper: &[u8]) -> bool {
    CONTAINERS.binary_search_by(|c| c.as_bytes().cmp(upper)).is_ok()
}

fn find(upper: &[u8]) -> Option<&'static CommandSpec> {
    // Every captured write and every replayed task looks its commands up several times: a
    // hash probe is about a tenth of a binary search's nine byte-string comparisons.
    type Index = std::collections::HashMap<&'static [u8], &'static CommandSpec, NameHash>;
    static INDEX: std::sync::OnceLock<Index> = std::sync::OnceLock::new();
    INDEX.get_or_init(|| COMMANDS.iter().map(|c| (c.name.as_bytes(), c)).collect()).get(upper).copied()
}

/// FNV-1a for the index's keys, command names of a few bytes: SipHash cost two thirds of a
/// lookup, and a replayed task makes about seven. A keyed hash guards a table that grows
/// from untrusted keys; this one is built once from the fixed table, and a name that is
/// not in it costs one probe like any other.
#[derive(Clone, Copy, Default)]
struct NameHash;

impl std::hash::BuildHasher for NameHash {
    type Hasher = Fnv1a;
    fn build_hasher(&self) -> Fnv1a {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

struct Fnv1a(u64);

impl std::hash::Hasher for Fnv1a {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// `buf[..len]` holds the upper-cased name. Tries "NAME SUB" for containers, then the
/// bare name, which for admin containers is the forbidden catch-all.
fn resolve(buf: &mut [u8; NAME_BUF], len: usize, sub: Option<&[u8]>) -> Option<&'static CommandSpec> {
    if let Some(sub) = sub.filter(|_| is_container(&buf[..len])) {
        let full = upper_into(buf, len, b" ").and_then(|at| upper_into(buf, at, sub));
        if let Some(spec) = full.and_then(|end| find(&buf[..end])) {
            return Some(spec);
        }
    }
    find(&buf[..len])
}

// ---------------------------------------------------------------------------------
// Argument walkers shared by `keys` and `CommandSpec::access_for`.

/// A non-negative decimal count; saturates rather than overflowing, since callers
/// only clamp it to the arguments present.
fn parse_count(arg: &[u8]) -> Option<usize> {
    if arg.is_empty() {
        return None;
    }
    arg.iter().try_fold(0usize, |n, &b| {
        b.is_ascii_digit().then(|| n.saturating_mul(10).saturating_add(usize::from(b - b'0')))
    })
}

fn is(arg: &[u8], word: &str) -> bool {
    arg.eq_ignore_ascii_case(word.as_bytes())
}

/// Index of the `STREAMS` keyword of `XREAD` / `XREADGROUP`. Option values are
/// skipped so that `GROUP streams STREAMS ...` finds the right one; an unknown token
/// is stepped over one at a time so that a future flag does not hide the keys.
fn streams_at(args: &[&[u8]]) -> Option<usize> {
    let mut i = 1;
    while let Some(&arg) = args.get(i) {
        if is(arg, "STREAMS") {
            return Some(i);
        }
        i += if is(arg, "GROUP") {
            3
        } else if is(arg, "COUNT") || is(arg, "BLOCK") {
            2
        } else {
            1
        };
    }
    None
}

/// Index of `SORT`'s destination: the argument after the last `STORE`, skipping the
/// values of `BY`, `GET` and `LIMIT` (a pattern may well be spelled "store").
fn sort_store(args: &[&[u8]]) -> Option<usize> {
    let mut dest = None;
    let mut i = 2;
    while let Some(&arg) = args.get(i) {
        let values = if is(arg, "BY") || is(arg, "GET") {
            1
        } else if is(arg, "LIMIT") {
            2
        } else if is(arg, "STORE") {
            dest = (i + 1 < args.len()).then_some(i + 1).or(dest);
            1
        } else {
            0
        };
        i += 1 + values;
    }
    dest
}

/// Index of a `GEORADIUS*` destination: the argument after the last `STORE` or
/// `STOREDIST`, which is the one Redis writes.
fn geo_store(args: &[&[u8]], options_from: usize) -> Option<usize> {
    let mut dest = None;
    let mut i = options_from;
    while let Some(&arg) = args.get(i) {
        if (is(arg, "STORE") || is(arg, "STOREDIST")) && i + 1 < args.len() {
            dest = Some(i + 1);
            i += 2;
        } else {
            i += 1;
        }
    }
    dest
}

/// Index of the first key after `MIGRATE`'s `KEYS` option, skipping `AUTH` values
/// (a password may be spelled "keys").
fn migrate_keys_at(args: &[&[u8]]) -> Option<usize> {
    let mut i = 6;
    while let Some(&arg) = args.get(i) {
        if is(arg, "KEYS") {
            return Some(i + 1);
        }
        i += if is(arg, "AUTH") {
            2
        } else if is(arg, "AUTH2") {
            3
        } else {
            1
        };
    }
    None
}

/// `ZADD key [NX|XX] [GT|LT] [CH] [INCR] score member ...`: flags end at the first
/// score, so a member named "incr" is not mistaken for the option.
fn zadd_has_incr(args: &[&[u8]]) -> bool {
    args.iter()
        .skip(2)
        .take_while(|a| ["NX", "XX", "GT", "LT", "CH", "INCR"].iter().any(|f| is(a, f)))
        .any(|a| is(a, "INCR"))
}

/// `None` when an unknown subcommand makes the invocation impossible to judge.
fn bitfield_access(args: &[&[u8]]) -> Option<Access> {
    let (mut sets, mut incrs) = (false, false);
    let mut i = 2;
    while let Some(&op) = args.get(i) {
        i += if is(op, "GET") {
            3
        } else if is(op, "SET") {
            sets = true;
            4
        } else if is(op, "INCRBY") {
            incrs = true;
            4
        } else if is(op, "OVERFLOW") {
            2
        } else {
            return None;
        };
    }
    Some(if incrs {
        Access::Write { idempotent: false }
    } else if sets {
        Access::Write { idempotent: true }
    } else {
        Access::Read
    })
}

// ---------------------------------------------------------------------------------
// The table.

const fn name_lt(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut i = 0;
    while i < a.len() && i < b.len() {
        if a[i] != b[i] {
            return a[i] < b[i];
        }
        i += 1;
    }
    a.len() < b.len()
}

/// Upper case, digits, `_` and `-`, with at most one inner space, and short enough
/// for the lookup buffer: anything else could never be found.
const fn name_is_canonical(name: &str) -> bool {
    let b = name.as_bytes();
    if b.is_empty() || b.len() > NAME_BUF || b[0] == b' ' || b[b.len() - 1] == b' ' {
        return false;
    }
    let (mut i, mut spaces) = (0, 0);
    while i < b.len() {
        match b[i] {
            b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' => {}
            b' ' => spaces += 1,
            _ => return false,
        }
        i += 1;
    }
    spaces <= 1
}

const fn table_is_valid(table: &[CommandSpec]) -> bool {
    let mut i = 0;
    while i < table.len() {
        if !name_is_canonical(table[i].name) || (i > 0 && !name_lt(table[i - 1].name, table[i].name)) {
            return false;
        }
        i += 1;
    }
    true
}

const fn containers_are_sorted(names: &[&str]) -> bool {
    let mut i = 1;
    while i < names.len() {
        if !name_lt(names[i - 1], names[i]) {
            return false;
        }
        i += 1;
    }
    true
}

// Binary search is only correct on a strictly sorted table; fail the build, not a
// lookup at run time.
const _: () = assert!(
    table_is_valid(table::TABLE),
    "command table must be upper case and strictly sorted by name bytes"
);
const _: () = assert!(containers_are_sorted(CONTAINERS), "CONTAINERS must be strictly sorted");

static COMMANDS: &[CommandSpec] = table::TABLE;

mod table {
    use super::Group::{
        Bitmaps, Cluster, Connection, Geo, Hashes, HyperLogLog, Keys, Lists, PubSub, Scripting, Server, Sets,
        SortedSets, Streams, Strings, Transactions,
    };
    use super::{Access, CommandSpec, Group, KeySpec};

    const READ: Access = Access::Read;
    const IDEM: Access = Access::Write { idempotent: true };
    const NOT_IDEM: Access = Access::Write { idempotent: false };
    const SCRIPT: Access = Access::Script;
    const CONTROL: Access = Access::Control;
    const FORBID: Access = Access::Forbidden;

    const NO_KEYS: KeySpec = KeySpec::None;
    const KEY1: KeySpec = KeySpec::Single(1);
    const KEY2: KeySpec = KeySpec::Single(2);
    const TWO_KEYS: KeySpec = KeySpec::Fixed { first: 1, count: 2 };
    const ALL_KEYS: KeySpec = KeySpec::Range { first: 1, step: 1, from_end: 0 };
    const KEY_VALUE_PAIRS: KeySpec = KeySpec::Range { first: 1, step: 2, from_end: 0 };
    /// `BITOP op dest src..`.
    const KEYS_AFTER_OPERATION: KeySpec = KeySpec::Range { first: 2, step: 1, from_end: 0 };
    /// `GEORADIUS key lon lat radius unit [options]`.
    const GEORADIUS_KEYS: KeySpec = KeySpec::GeoRadius { options_from: 6 };
    /// `GEORADIUSBYMEMBER key member radius unit [options]`.
    const GEORADIUSBYMEMBER_KEYS: KeySpec = KeySpec::GeoRadius { options_from: 5 };
    const KEYS_THEN_TIMEOUT: KeySpec = KeySpec::Range { first: 1, step: 1, from_end: 1 };
    const NUMKEYS_AT_1: KeySpec = KeySpec::NumKeys { numkeys_at: 1, dest: None };
    const NUMKEYS_AT_2: KeySpec = KeySpec::NumKeys { numkeys_at: 2, dest: None };
    const DEST_THEN_NUMKEYS: KeySpec = KeySpec::NumKeys { numkeys_at: 2, dest: Some(1) };

    const fn c(name: &'static str, access: Access, keys: KeySpec, group: Group) -> CommandSpec {
        CommandSpec { name, access, keys, group }
    }

    /// Sorted by name bytes (checked at compile time). A comment gives the reason when
    /// a write is not idempotent for a reason that is not plain (counters, pushes,
    /// pops).
    pub(super) const TABLE: &[CommandSpec] = &[
        c("ACL", FORBID, NO_KEYS, Server),
        c("ACL CAT", READ, NO_KEYS, Server),
        c("ACL DELUSER", FORBID, NO_KEYS, Server),
        c("ACL DRYRUN", FORBID, NO_KEYS, Server),
        c("ACL GENPASS", READ, NO_KEYS, Server),
        c("ACL GETUSER", FORBID, NO_KEYS, Server),
        c("ACL LIST", FORBID, NO_KEYS, Server),
        c("ACL LOAD", FORBID, NO_KEYS, Server),
        c("ACL LOG", FORBID, NO_KEYS, Server),
        c("ACL SAVE", FORBID, NO_KEYS, Server),
        c("ACL SETUSER", FORBID, NO_KEYS, Server),
        c("ACL USERS", FORBID, NO_KEYS, Server),
        c("ACL WHOAMI", READ, NO_KEYS, Server),
        c("APPEND", NOT_IDEM, KEY1, Strings),
        c("ASKING", CONTROL, NO_KEYS, Cluster),
        c("AUTH", CONTROL, NO_KEYS, Connection),
        c("BGREWRITEAOF", FORBID, NO_KEYS, Server),
        c("BGSAVE", FORBID, NO_KEYS, Server),
        c("BITCOUNT", READ, KEY1, Bitmaps),
        // May INCRBY; `access_for` refines GET-only and SET-only invocations.
        c("BITFIELD", NOT_IDEM, KEY1, Bitmaps),
        c("BITFIELD_RO", READ, KEY1, Bitmaps),
        c("BITOP", IDEM, KEYS_AFTER_OPERATION, Bitmaps),
        c("BITPOS", READ, KEY1, Bitmaps),
        c("BLMOVE", NOT_IDEM, TWO_KEYS, Lists),
        c("BLMPOP", NOT_IDEM, NUMKEYS_AT_2, Lists),
        c("BLPOP", NOT_IDEM, KEYS_THEN_TIMEOUT, Lists),
        c("BRPOP", NOT_IDEM, KEYS_THEN_TIMEOUT, Lists),
        c("BRPOPLPUSH", NOT_IDEM, TWO_KEYS, Lists),
        c("BZMPOP", NOT_IDEM, NUMKEYS_AT_2, SortedSets),
        c("BZPOPMAX", NOT_IDEM, KEYS_THEN_TIMEOUT, SortedSets),
        c("BZPOPMIN", NOT_IDEM, KEYS_THEN_TIMEOUT, SortedSets),
        c("CLIENT CACHING", CONTROL, NO_KEYS, Connection),
        c("CLIENT GETNAME", READ, NO_KEYS, Connection),
        c("CLIENT GETREDIR", READ, NO_KEYS, Connection),
        c("CLIENT ID", READ, NO_KEYS, Connection),
        c("CLIENT INFO", READ, NO_KEYS, Connection),
        c("CLIENT KILL", FORBID, NO_KEYS, Connection),
        c("CLIENT LIST", READ, NO_KEYS, Connection),
        // Exempts the connection from eviction: an operator's decision, not an app's.
        c("CLIENT NO-EVICT", FORBID, NO_KEYS, Connection),
        c("CLIENT NO-TOUCH", CONTROL, NO_KEYS, Connection),
        c("CLIENT PAUSE", FORBID, NO_KEYS, Connection),
        c("CLIENT REPLY", CONTROL, NO_KEYS, Connection),
        c("CLIENT SETINFO", CONTROL, NO_KEYS, Connection),
        c("CLIENT SETNAME", CONTROL, NO_KEYS, Connection),
        c("CLIENT TRACKING", CONTROL, NO_KEYS, Connection),
        c("CLIENT TRACKINGINFO", READ, NO_KEYS, Connection),
        // Acts on other clients' connections.
        c("CLIENT UNBLOCK", FORBID, NO_KEYS, Connection),
        c("CLIENT UNPAUSE", FORBID, NO_KEYS, Connection),
        c("CLUSTER", FORBID, NO_KEYS, Cluster),
        c("CLUSTER ADDSLOTS", FORBID, NO_KEYS, Cluster),
        c("CLUSTER ADDSLOTSRANGE", FORBID, NO_KEYS, Cluster),
        c("CLUSTER BUMPEPOCH", FORBID, NO_KEYS, Cluster),
        c("CLUSTER COUNT-FAILURE-REPORTS", FORBID, NO_KEYS, Cluster),
        c("CLUSTER COUNTKEYSINSLOT", FORBID, NO_KEYS, Cluster),
        c("CLUSTER DELSLOTS", FORBID, NO_KEYS, Cluster),
        c("CLUSTER DELSLOTSRANGE", FORBID, NO_KEYS, Cluster),
        c("CLUSTER FAILOVER", FORBID, NO_KEYS, Cluster),
        c("CLUSTER FLUSHSLOTS", FORBID, NO_KEYS, Cluster),
        c("CLUSTER FORGET", FORBID, NO_KEYS, Cluster),
        c("CLUSTER GETKEYSINSLOT", FORBID, NO_KEYS, Cluster),
        c("CLUSTER INFO", FORBID, NO_KEYS, Cluster),
        c("CLUSTER KEYSLOT", FORBID, NO_KEYS, Cluster),
        c("CLUSTER LINKS", FORBID, NO_KEYS, Cluster),
        c("CLUSTER MEET", FORBID, NO_KEYS, Cluster),
        c("CLUSTER MYID", FORBID, NO_KEYS, Cluster),
        c("CLUSTER MYSHARDID", FORBID, NO_KEYS, Cluster),
        c("CLUSTER NODES", FORBID, NO_KEYS, Cluster),
        c("CLUSTER REPLICAS", FORBID, NO_KEYS, Cluster),
        c("CLUSTER REPLICATE", FORBID, NO_KEYS, Cluster),
        c("CLUSTER RESET", FORBID, NO_KEYS, Cluster),
        c("CLUSTER SAVECONFIG", FORBID, NO_KEYS, Cluster),
        c("CLUSTER SET-CONFIG-EPOCH", FORBID, NO_KEYS, Cluster),
        c("CLUSTER SETSLOT", FORBID, NO_KEYS, Cluster),
        c("CLUSTER SHARDS", FORBID, NO_KEYS, Cluster),
        c("CLUSTER SLAVES", FORBID, NO_KEYS, Cluster),
        c("CLUSTER SLOTS", FORBID, NO_KEYS, Cluster),
        // Bare COMMAND is a command of its own (the whole command table).
        c("COMMAND", READ, NO_KEYS, Server),
        c("COMMAND COUNT", READ, NO_KEYS, Server),
        c("COMMAND DOCS", READ, NO_KEYS, Server),
        c("COMMAND GETKEYS", READ, NO_KEYS, Server),
        c("COMMAND GETKEYSANDFLAGS", READ, NO_KEYS, Server),
        c("COMMAND INFO", READ, NO_KEYS, Server),
        c("COMMAND LIST", READ, NO_KEYS, Server),
        c("CONFIG", FORBID, NO_KEYS, Server),
        c("CONFIG GET", FORBID, NO_KEYS, Server),
        c("CONFIG RESETSTAT", FORBID, NO_KEYS, Server),
        c("CONFIG REWRITE", FORBID, NO_KEYS, Server),
        c("CONFIG SET", FORBID, NO_KEYS, Server),
        // Without REPLACE a second copy finds the destination taken; `DB` is forbidden
        // per invocation (see `access_for`).
        c("COPY", IDEM, TWO_KEYS, Keys),
        c("DBSIZE", READ, NO_KEYS, Server),
        c("DEBUG", FORBID, NO_KEYS, Server),
        c("DECR", NOT_IDEM, KEY1, Strings),
        c("DECRBY", NOT_IDEM, KEY1, Strings),
        c("DEL", IDEM, ALL_KEYS, Keys),
        c("DISCARD", CONTROL, NO_KEYS, Transactions),
        c("DUMP", READ, KEY1, Keys),
        c("ECHO", CONTROL, NO_KEYS, Connection),
        c("EVAL", SCRIPT, NUMKEYS_AT_2, Scripting),
        c("EVALSHA", SCRIPT, NUMKEYS_AT_2, Scripting),
        c("EVALSHA_RO", READ, NUMKEYS_AT_2, Scripting),
        c("EVAL_RO", READ, NUMKEYS_AT_2, Scripting),
        c("EXEC", CONTROL, NO_KEYS, Transactions),
        c("EXISTS", READ, ALL_KEYS, Keys),
        c("EXPIRE", IDEM, KEY1, Keys),
        c("EXPIREAT", IDEM, KEY1, Keys),
        c("EXPIRETIME", READ, KEY1, Keys),
        c("FAILOVER", FORBID, NO_KEYS, Server),
        c("FCALL", SCRIPT, NUMKEYS_AT_2, Scripting),
        c("FCALL_RO", READ, NUMKEYS_AT_2, Scripting),
        c("FLUSHALL", FORBID, NO_KEYS, Server),
        c("FLUSHDB", FORBID, NO_KEYS, Server),
        c("FUNCTION", FORBID, NO_KEYS, Scripting),
        c("FUNCTION DELETE", FORBID, NO_KEYS, Scripting),
        c("FUNCTION DUMP", FORBID, NO_KEYS, Scripting),
        c("FUNCTION FLUSH", FORBID, NO_KEYS, Scripting),
        c("FUNCTION KILL", FORBID, NO_KEYS, Scripting),
        c("FUNCTION LIST", FORBID, NO_KEYS, Scripting),
        c("FUNCTION LOAD", FORBID, NO_KEYS, Scripting),
        c("FUNCTION RESTORE", FORBID, NO_KEYS, Scripting),
        c("FUNCTION STATS", FORBID, NO_KEYS, Scripting),
        c("GEOADD", IDEM, KEY1, Geo),
        c("GEODIST", READ, KEY1, Geo),
        c("GEOHASH", READ, KEY1, Geo),
        c("GEOPOS", READ, KEY1, Geo),
        // A write only with STORE/STOREDIST, which overwrites the destination.
        c("GEORADIUS", IDEM, GEORADIUS_KEYS, Geo),
        c("GEORADIUSBYMEMBER", IDEM, GEORADIUSBYMEMBER_KEYS, Geo),
        c("GEORADIUSBYMEMBER_RO", READ, KEY1, Geo),
        c("GEORADIUS_RO", READ, KEY1, Geo),
        c("GEOSEARCH", READ, KEY1, Geo),
        c("GEOSEARCHSTORE", IDEM, TWO_KEYS, Geo),
        c("GET", READ, KEY1, Strings),
        c("GETBIT", READ, KEY1, Bitmaps),
        c("GETDEL", IDEM, KEY1, Strings),
        c("GETEX", IDEM, KEY1, Strings),
        c("GETRANGE", READ, KEY1, Strings),
        c("GETSET", IDEM, KEY1, Strings),
        c("HDEL", IDEM, KEY1, Hashes),
        c("HELLO", CONTROL, NO_KEYS, Connection),
        c("HEXISTS", READ, KEY1, Hashes),
        c("HEXPIRE", IDEM, KEY1, Hashes),
        c("HEXPIREAT", IDEM, KEY1, Hashes),
        c("HEXPIRETIME", READ, KEY1, Hashes),
        c("HGET", READ, KEY1, Hashes),
        c("HGETALL", READ, KEY1, Hashes),
        c("HGETDEL", IDEM, KEY1, Hashes),
        c("HGETEX", IDEM, KEY1, Hashes),
        c("HINCRBY", NOT_IDEM, KEY1, Hashes),
        c("HINCRBYFLOAT", NOT_IDEM, KEY1, Hashes),
        c("HKEYS", READ, KEY1, Hashes),
        c("HLEN", READ, KEY1, Hashes),
        c("HMGET", READ, KEY1, Hashes),
        c("HMSET", IDEM, KEY1, Hashes),
        c("HPERSIST", IDEM, KEY1, Hashes),
        c("HPEXPIRE", IDEM, KEY1, Hashes),
        c("HPEXPIREAT", IDEM, KEY1, Hashes),
        c("HPEXPIRETIME", READ, KEY1, Hashes),
        c("HPTTL", READ, KEY1, Hashes),
        c("HRANDFIELD", READ, KEY1, Hashes),
        c("HSCAN", READ, KEY1, Hashes),
        c("HSET", IDEM, KEY1, Hashes),
        c("HSETEX", IDEM, KEY1, Hashes),
        c("HSETNX", IDEM, KEY1, Hashes),
        c("HSTRLEN", READ, KEY1, Hashes),
        c("HTTL", READ, KEY1, Hashes),
        c("HVALS", READ, KEY1, Hashes),
        c("INCR", NOT_IDEM, KEY1, Strings),
        c("INCRBY", NOT_IDEM, KEY1, Strings),
        c("INCRBYFLOAT", NOT_IDEM, KEY1, Strings),
        c("INFO", READ, NO_KEYS, Server),
        // Slow, not unsafe: see the module docs.
        c("KEYS", READ, NO_KEYS, Keys),
        c("LASTSAVE", READ, NO_KEYS, Server),
        c("LATENCY DOCTOR", READ, NO_KEYS, Server),
        c("LATENCY GRAPH", READ, NO_KEYS, Server),
        c("LATENCY HISTOGRAM", READ, NO_KEYS, Server),
        c("LATENCY HISTORY", READ, NO_KEYS, Server),
        c("LATENCY LATEST", READ, NO_KEYS, Server),
        c("LATENCY RESET", FORBID, NO_KEYS, Server),
        c("LCS", READ, TWO_KEYS, Strings),
        c("LINDEX", READ, KEY1, Lists),
        // Inserts another copy of the element.
        c("LINSERT", NOT_IDEM, KEY1, Lists),
        c("LLEN", READ, KEY1, Lists),
        c("LMOVE", NOT_IDEM, TWO_KEYS, Lists),
        c("LMPOP", NOT_IDEM, NUMKEYS_AT_1, Lists),
        c("LOLWUT", READ, NO_KEYS, Server),
        c("LPOP", NOT_IDEM, KEY1, Lists),
        c("LPOS", READ, KEY1, Lists),
        c("LPUSH", NOT_IDEM, KEY1, Lists),
        c("LPUSHX", NOT_IDEM, KEY1, Lists),
        c("LRANGE", READ, KEY1, Lists),
        // Removes up to `count` more occurrences each time.
        c("LREM", NOT_IDEM, KEY1, Lists),
        c("LSET", IDEM, KEY1, Lists),
        // Positional: `LTRIM k 1 -1` drops one more head element on every replay.
        c("LTRIM", NOT_IDEM, KEY1, Lists),
        c("MEMORY DOCTOR", READ, NO_KEYS, Server),
        c("MEMORY MALLOC-STATS", READ, NO_KEYS, Server),
        c("MEMORY PURGE", FORBID, NO_KEYS, Server),
        c("MEMORY STATS", READ, NO_KEYS, Server),
        c("MEMORY USAGE", READ, KEY2, Server),
        c("MGET", READ, ALL_KEYS, Strings),
        c("MIGRATE", FORBID, KeySpec::Migrate, Keys),
        c("MODULE", FORBID, NO_KEYS, Server),
        c("MODULE LIST", FORBID, NO_KEYS, Server),
        c("MODULE LOAD", FORBID, NO_KEYS, Server),
        c("MODULE LOADEX", FORBID, NO_KEYS, Server),
        c("MODULE UNLOAD", FORBID, NO_KEYS, Server),
        c("MONITOR", FORBID, NO_KEYS, Server),
        // Writes into another database: see the module docs.
        c("MOVE", FORBID, KEY1, Keys),
        c("MSET", IDEM, KEY_VALUE_PAIRS, Strings),
        c("MSETNX", IDEM, KEY_VALUE_PAIRS, Strings),
        c("MULTI", CONTROL, NO_KEYS, Transactions),
        c("OBJECT ENCODING", READ, KEY2, Keys),
        c("OBJECT FREQ", READ, KEY2, Keys),
        c("OBJECT IDLETIME", READ, KEY2, Keys),
        c("OBJECT REFCOUNT", READ, KEY2, Keys),
        c("PERSIST", IDEM, KEY1, Keys),
        c("PEXPIRE", IDEM, KEY1, Keys),
        c("PEXPIREAT", IDEM, KEY1, Keys),
        c("PEXPIRETIME", READ, KEY1, Keys),
        c("PFADD", IDEM, KEY1, HyperLogLog),
        // Caches the cardinality in the value, but the set it describes is unchanged.
        c("PFCOUNT", READ, ALL_KEYS, HyperLogLog),
        c("PFDEBUG", FORBID, KEY2, HyperLogLog),
        c("PFMERGE", IDEM, ALL_KEYS, HyperLogLog),
        c("PFSELFTEST", FORBID, NO_KEYS, HyperLogLog),
        c("PING", CONTROL, NO_KEYS, Connection),
        c("PSETEX", IDEM, KEY1, Strings),
        c("PSUBSCRIBE", CONTROL, NO_KEYS, PubSub),
        c("PSYNC", FORBID, NO_KEYS, Server),
        c("PTTL", READ, KEY1, Keys),
        // Subscribers receive the message again.
        c("PUBLISH", NOT_IDEM, NO_KEYS, PubSub),
        c("PUBSUB CHANNELS", READ, NO_KEYS, PubSub),
        c("PUBSUB NUMPAT", READ, NO_KEYS, PubSub),
        c("PUBSUB NUMSUB", READ, NO_KEYS, PubSub),
        c("PUBSUB SHARDCHANNELS", READ, NO_KEYS, PubSub),
        c("PUBSUB SHARDNUMSUB", READ, NO_KEYS, PubSub),
        c("PUNSUBSCRIBE", CONTROL, NO_KEYS, PubSub),
        c("QUIT", CONTROL, NO_KEYS, Connection),
        c("RANDOMKEY", READ, NO_KEYS, Keys),
        c("READONLY", CONTROL, NO_KEYS, Cluster),
        c("READWRITE", CONTROL, NO_KEYS, Cluster),
        // Once the source is gone a second attempt changes nothing: see the module docs.
        c("RENAME", IDEM, TWO_KEYS, Keys),
        c("RENAMENX", IDEM, TWO_KEYS, Keys),
        c("REPLCONF", FORBID, NO_KEYS, Server),
        c("REPLICAOF", FORBID, NO_KEYS, Server),
        c("RESET", CONTROL, NO_KEYS, Connection),
        // Without REPLACE a second attempt fails on the existing key; with it, it
        // writes the same payload.
        c("RESTORE", IDEM, KEY1, Keys),
        c("ROLE", READ, NO_KEYS, Server),
        c("RPOP", NOT_IDEM, KEY1, Lists),
        c("RPOPLPUSH", NOT_IDEM, TWO_KEYS, Lists),
        c("RPUSH", NOT_IDEM, KEY1, Lists),
        c("RPUSHX", NOT_IDEM, KEY1, Lists),
        c("SADD", IDEM, KEY1, Sets),
        c("SAVE", FORBID, NO_KEYS, Server),
        c("SCAN", READ, NO_KEYS, Keys),
        c("SCARD", READ, KEY1, Sets),
        c("SCRIPT DEBUG", FORBID, NO_KEYS, Scripting),
        c("SCRIPT EXISTS", READ, NO_KEYS, Scripting),
        c("SCRIPT FLUSH", FORBID, NO_KEYS, Scripting),
        c("SCRIPT KILL", FORBID, NO_KEYS, Scripting),
        // Only caches a body; running it is what EVALSHA is for.
        c("SCRIPT LOAD", CONTROL, NO_KEYS, Scripting),
        c("SDIFF", READ, ALL_KEYS, Sets),
        c("SDIFFSTORE", IDEM, ALL_KEYS, Sets),
        c("SELECT", CONTROL, NO_KEYS, Connection),
        c("SET", IDEM, KEY1, Strings),
        c("SETBIT", IDEM, KEY1, Bitmaps),
        c("SETEX", IDEM, KEY1, Strings),
        c("SETNX", IDEM, KEY1, Strings),
        c("SETRANGE", IDEM, KEY1, Strings),
        c("SHUTDOWN", FORBID, NO_KEYS, Server),
        c("SINTER", READ, ALL_KEYS, Sets),
        c("SINTERCARD", READ, NUMKEYS_AT_1, Sets),
        c("SINTERSTORE", IDEM, ALL_KEYS, Sets),
        c("SISMEMBER", READ, KEY1, Sets),
        c("SLAVEOF", FORBID, NO_KEYS, Server),
        c("SLOWLOG GET", READ, NO_KEYS, Server),
        c("SLOWLOG LEN", READ, NO_KEYS, Server),
        c("SLOWLOG RESET", FORBID, NO_KEYS, Server),
        c("SMEMBERS", READ, KEY1, Sets),
        c("SMISMEMBER", READ, KEY1, Sets),
        // A second attempt finds the member already gone from the source.
        c("SMOVE", IDEM, TWO_KEYS, Sets),
        // A write only with STORE, which overwrites the destination.
        c("SORT", IDEM, KeySpec::Sort, Keys),
        c("SORT_RO", READ, KEY1, Keys),
        // Removes other random members.
        c("SPOP", NOT_IDEM, KEY1, Sets),
        c("SPUBLISH", NOT_IDEM, NO_KEYS, PubSub),
        c("SRANDMEMBER", READ, KEY1, Sets),
        c("SREM", IDEM, KEY1, Sets),
        c("SSCAN", READ, KEY1, Sets),
        c("SSUBSCRIBE", CONTROL, NO_KEYS, PubSub),
        c("STRLEN", READ, KEY1, Strings),
        c("SUBSCRIBE", CONTROL, NO_KEYS, PubSub),
        c("SUBSTR", READ, KEY1, Strings),
        c("SUNION", READ, ALL_KEYS, Sets),
        c("SUNIONSTORE", IDEM, ALL_KEYS, Sets),
        c("SUNSUBSCRIBE", CONTROL, NO_KEYS, PubSub),
        c("SWAPDB", FORBID, NO_KEYS, Server),
        c("SYNC", FORBID, NO_KEYS, Server),
        c("TIME", READ, NO_KEYS, Server),
        // Only updates the access time, like a read.
        c("TOUCH", READ, ALL_KEYS, Keys),
        c("TTL", READ, KEY1, Keys),
        c("TYPE", READ, KEY1, Keys),
        c("UNLINK", IDEM, ALL_KEYS, Keys),
        c("UNSUBSCRIBE", CONTROL, NO_KEYS, PubSub),
        c("UNWATCH", CONTROL, NO_KEYS, Transactions),
        c("WAIT", CONTROL, NO_KEYS, Keys),
        c("WAITAOF", CONTROL, NO_KEYS, Keys),
        c("WATCH", CONTROL, ALL_KEYS, Transactions),
        c("XACK", IDEM, KEY1, Streams),
        c("XACKDEL", IDEM, KEY1, Streams),
        // An auto-generated ID appends a second entry.
        c("XADD", NOT_IDEM, KEY1, Streams),
        // Claims whatever is idle by then and bumps delivery counters.
        c("XAUTOCLAIM", NOT_IDEM, KEY1, Streams),
        // Bumps the delivery counter each time.
        c("XCLAIM", NOT_IDEM, KEY1, Streams),
        c("XDEL", IDEM, KEY1, Streams),
        c("XDELEX", IDEM, KEY1, Streams),
        c("XGROUP CREATE", IDEM, KEY2, Streams),
        c("XGROUP CREATECONSUMER", IDEM, KEY2, Streams),
        c("XGROUP DELCONSUMER", IDEM, KEY2, Streams),
        c("XGROUP DESTROY", IDEM, KEY2, Streams),
        c("XGROUP SETID", IDEM, KEY2, Streams),
        c("XINFO CONSUMERS", READ, KEY2, Streams),
        c("XINFO GROUPS", READ, KEY2, Streams),
        c("XINFO STREAM", READ, KEY2, Streams),
        c("XLEN", READ, KEY1, Streams),
        c("XPENDING", READ, KEY1, Streams),
        c("XRANGE", READ, KEY1, Streams),
        c("XREAD", READ, KeySpec::Streams, Streams),
        // Delivers the next entries and moves the group's cursor and pending list.
        c("XREADGROUP", NOT_IDEM, KeySpec::Streams, Streams),
        c("XREVRANGE", READ, KEY1, Streams),
        c("XSETID", IDEM, KEY1, Streams),
        // With `~` or LIMIT each call evicts a bounded batch, so a replay trims more.
        c("XTRIM", NOT_IDEM, KEY1, Streams),
        // INCR is refined per invocation by `access_for`.
        c("ZADD", IDEM, KEY1, SortedSets),
        c("ZCARD", READ, KEY1, SortedSets),
        c("ZCOUNT", READ, KEY1, SortedSets),
        c("ZDIFF", READ, NUMKEYS_AT_1, SortedSets),
        c("ZDIFFSTORE", IDEM, DEST_THEN_NUMKEYS, SortedSets),
        c("ZINCRBY", NOT_IDEM, KEY1, SortedSets),
        c("ZINTER", READ, NUMKEYS_AT_1, SortedSets),
        c("ZINTERCARD", READ, NUMKEYS_AT_1, SortedSets),
        c("ZINTERSTORE", IDEM, DEST_THEN_NUMKEYS, SortedSets),
        c("ZLEXCOUNT", READ, KEY1, SortedSets),
        c("ZMPOP", NOT_IDEM, NUMKEYS_AT_1, SortedSets),
        c("ZMSCORE", READ, KEY1, SortedSets),
        c("ZPOPMAX", NOT_IDEM, KEY1, SortedSets),
        c("ZPOPMIN", NOT_IDEM, KEY1, SortedSets),
        c("ZRANDMEMBER", READ, KEY1, SortedSets),
        c("ZRANGE", READ, KEY1, SortedSets),
        c("ZRANGEBYLEX", READ, KEY1, SortedSets),
        c("ZRANGEBYSCORE", READ, KEY1, SortedSets),
        c("ZRANGESTORE", IDEM, TWO_KEYS, SortedSets),
        c("ZRANK", READ, KEY1, SortedSets),
        c("ZREM", IDEM, KEY1, SortedSets),
        c("ZREMRANGEBYLEX", IDEM, KEY1, SortedSets),
        // Positional: a replay removes the members that moved into the rank range.
        c("ZREMRANGEBYRANK", NOT_IDEM, KEY1, SortedSets),
        c("ZREMRANGEBYSCORE", IDEM, KEY1, SortedSets),
        c("ZREVRANGE", READ, KEY1, SortedSets),
        c("ZREVRANGEBYLEX", READ, KEY1, SortedSets),
        c("ZREVRANGEBYSCORE", READ, KEY1, SortedSets),
        c("ZREVRANK", READ, KEY1, SortedSets),
        c("ZSCAN", READ, KEY1, SortedSets),
        c("ZSCORE", READ, KEY1, SortedSets),
        c("ZUNION", READ, NUMKEYS_AT_1, SortedSets),
        c("ZUNIONSTORE", IDEM, DEST_THEN_NUMKEYS, SortedSets),
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Access = Access::Write { idempotent: true };
    const WN: Access = Access::Write { idempotent: false };

    fn spec(name: &str) -> &'static CommandSpec {
        lookup_name(name).unwrap_or_else(|| panic!("{name} missing from the table"))
    }

    /// Keys of an invocation written as one space-separated string.
    fn keys_of(line: &str) -> Vec<String> {
        let args: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
        let spec = lookup(&args).unwrap_or_else(|| panic!("{line}: unknown"));
        keys(spec, &args).into_iter().map(|k| String::from_utf8(k.to_vec()).unwrap()).collect()
    }

    fn access_of(line: &str) -> Access {
        let args: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
        classify(&args).unwrap().access
    }

    #[test]
    fn table_is_sorted_unique_and_canonical() {
        for pair in all().windows(2) {
            assert!(pair[0].name < pair[1].name, "{} / {}", pair[0].name, pair[1].name);
        }
        for s in all() {
            assert!(name_is_canonical(s.name), "{}", s.name);
            assert!(s.name.len() <= NAME_BUF, "{}", s.name);
        }
        assert!(all().len() > 300, "{} entries", all().len());
    }

    #[test]
    fn containers_match_the_table() {
        for s in all() {
            if let Some((container, _)) = s.name.split_once(' ') {
                assert!(CONTAINERS.contains(&container), "{} not a container", s.name);
            }
        }
        for container in CONTAINERS {
            let prefix = format!("{container} ");
            assert!(all().iter().any(|s| s.name.starts_with(&prefix)), "{container} has no subcommand");
        }
    }

    #[test]
    fn every_entry_is_found_by_name_and_by_args_in_any_case() {
        for s in all() {
            assert!(std::ptr::eq(lookup_name(s.name).unwrap(), s), "{}", s.name);
            assert!(std::ptr::eq(lookup_name(&s.name.to_ascii_lowercase()).unwrap(), s));
            let mut args: Vec<&[u8]> = s.name.split(' ').map(str::as_bytes).collect();
            args.push(b"k");
            assert!(std::ptr::eq(lookup(&args).unwrap(), s), "{}", s.name);
            let lower = s.name.to_ascii_lowercase();
            let args: Vec<&[u8]> = lower.split(' ').map(str::as_bytes).collect();
            assert!(std::ptr::eq(lookup(&args).unwrap(), s), "{}", s.name);
        }
        assert_eq!(lookup(&[b"hGeTaLl", b"h"]).unwrap().name, "HGETALL");
        assert_eq!(lookup_name(" Object\tEncoding ").unwrap().name, "OBJECT ENCODING");
    }

    #[test]
    fn one_command_per_group() {
        let cases: &[(&str, Access, Group)] = &[
            ("GET", Access::Read, Group::Strings),
            ("SET", W, Group::Strings),
            ("INCRBYFLOAT", WN, Group::Strings),
            ("DEL", W, Group::Keys),
            ("EXPIRE", W, Group::Keys),
            ("TTL", Access::Read, Group::Keys),
            ("HSET", W, Group::Hashes),
            ("HINCRBY", WN, Group::Hashes),
            ("SADD", W, Group::Sets),
            ("SPOP", WN, Group::Sets),
            ("SINTERSTORE", W, Group::Sets),
            ("ZADD", W, Group::SortedSets),
            ("ZPOPMIN", WN, Group::SortedSets),
            ("ZRANGE", Access::Read, Group::SortedSets),
            ("LPUSH", WN, Group::Lists),
            ("LSET", W, Group::Lists),
            ("XADD", WN, Group::Streams),
            ("XREADGROUP", WN, Group::Streams),
            ("XREAD", Access::Read, Group::Streams),
            ("XGROUP CREATE", W, Group::Streams),
            ("SETBIT", W, Group::Bitmaps),
            ("BITFIELD", WN, Group::Bitmaps),
            ("PFADD", W, Group::HyperLogLog),
            ("PFCOUNT", Access::Read, Group::HyperLogLog),
            ("GEOADD", W, Group::Geo),
            ("GEOSEARCH", Access::Read, Group::Geo),
            ("EVAL", Access::Script, Group::Scripting),
            ("FCALL", Access::Script, Group::Scripting),
            ("EVAL_RO", Access::Read, Group::Scripting),
            ("SCRIPT LOAD", Access::Control, Group::Scripting),
            ("SCRIPT FLUSH", Access::Forbidden, Group::Scripting),
            ("FUNCTION LOAD", Access::Forbidden, Group::Scripting),
            ("MULTI", Access::Control, Group::Transactions),
            ("WATCH", Access::Control, Group::Transactions),
            ("PING", Access::Control, Group::Connection),
            ("CLIENT SETNAME", Access::Control, Group::Connection),
            ("CLIENT KILL", Access::Forbidden, Group::Connection),
            ("INFO", Access::Read, Group::Server),
            ("FLUSHALL", Access::Forbidden, Group::Server),
            ("CONFIG SET", Access::Forbidden, Group::Server),
            ("PUBLISH", WN, Group::PubSub),
            ("SUBSCRIBE", Access::Control, Group::PubSub),
            ("CLUSTER SLOTS", Access::Forbidden, Group::Cluster),
            ("READONLY", Access::Control, Group::Cluster),
            ("KEYS", Access::Read, Group::Keys),
            ("RENAME", W, Group::Keys),
            ("MOVE", Access::Forbidden, Group::Keys),
        ];
        for &(name, access, group) in cases {
            let s = spec(name);
            assert_eq!((s.access, s.group), (access, group), "{name}");
        }
    }

    #[test]
    fn predicates_follow_access() {
        assert!(spec("SET").is_write() && spec("SET").is_idempotent());
        assert!(spec("INCR").is_write() && !spec("INCR").is_idempotent());
        assert!(spec("GET").is_read() && !spec("GET").is_write());
        assert!(!spec("EVAL").is_write() && spec("EVAL").access.may_write());
        assert!(spec("SHUTDOWN").is_forbidden() && !spec("SHUTDOWN").is_read());
        assert!(!spec("MULTI").is_write() && !spec("MULTI").is_read());
    }

    #[test]
    fn idempotency_of_the_listed_writes() {
        for name in [
            "SET",
            "DEL",
            "HSET",
            "HDEL",
            "SADD",
            "SREM",
            "ZADD",
            "EXPIRE",
            "PEXPIRE",
            "EXPIREAT",
            "PEXPIREAT",
            "PERSIST",
            "SETBIT",
            "PFADD",
            "GEOADD",
            "HMSET",
            "MSET",
            "LSET",
            "RENAME",
            "SINTERSTORE",
            "SUNIONSTORE",
            "SDIFFSTORE",
            "ZUNIONSTORE",
            "ZINTERSTORE",
            "ZDIFFSTORE",
            "ZRANGESTORE",
            "GEOSEARCHSTORE",
            "PFMERGE",
            "BITOP",
            "XGROUP CREATE",
            "SMOVE",
            "HEXPIRE",
        ] {
            assert_eq!(spec(name).access, W, "{name}");
        }
        for name in [
            "INCR",
            "INCRBY",
            "INCRBYFLOAT",
            "DECR",
            "DECRBY",
            "HINCRBY",
            "HINCRBYFLOAT",
            "ZINCRBY",
            "APPEND",
            "LPUSH",
            "RPUSH",
            "LPUSHX",
            "RPUSHX",
            "LINSERT",
            "LREM",
            "LTRIM",
            "LPOP",
            "RPOP",
            "LMOVE",
            "RPOPLPUSH",
            "SPOP",
            "ZPOPMIN",
            "ZPOPMAX",
            "XADD",
            "XTRIM",
            "PUBLISH",
            "BITFIELD",
            "ZREMRANGEBYRANK",
            "BLPOP",
            "LMPOP",
        ] {
            assert_eq!(spec(name).access, WN, "{name}");
        }
    }

    #[test]
    fn subcommands_and_unknown_commands() {
        assert_eq!(lookup(&[b"xgroup", b"Create", b"s", b"g", b"$"]).unwrap().name, "XGROUP CREATE");
        assert_eq!(lookup(&[b"OBJECT", b"encoding", b"k"]).unwrap().name, "OBJECT ENCODING");
        assert_eq!(lookup(&[b"COMMAND"]).unwrap().name, "COMMAND");
        assert_eq!(lookup(&[b"COMMAND", b"COUNT"]).unwrap().name, "COMMAND COUNT");
        // Admin containers fall back to a forbidden catch-all; others are unknown.
        for args in [
            &[&b"CONFIG"[..], b"NEWTHING"][..],
            &[b"config"],
            &[b"FUNCTION", b"NEWTHING"],
            &[b"CLUSTER", b"NEWTHING"],
            &[b"ACL", b"NEWTHING"],
            &[b"MODULE", b"NEWTHING"],
        ] {
            assert!(lookup(args).unwrap().is_forbidden(), "{args:?}");
        }
        for args in [
            &[&b"CLIENT"[..], b"NEWTHING"][..],
            &[b"CLIENT"],
            &[b"XGROUP"],
            &[b"XINFO", b"NEWTHING", b"k"],
            &[b"OBJECT", b"HELP"],
            &[b"SCRIPT", b"NEWTHING"],
        ] {
            assert!(lookup(args).is_none(), "{args:?}");
        }
        // A non-container's first argument is a key, never a subcommand.
        assert_eq!(lookup(&[b"GET", b"LOAD"]).unwrap().name, "GET");
        assert!(lookup(&[]).is_none());
        assert!(lookup(&[b""]).is_none());
        assert!(lookup(&[b"NOSUCH", b"k"]).is_none());
        assert!(lookup(&[b"G\xffT"]).is_none());
        assert!(lookup(&[&[b'A'; 200][..]]).is_none());
        assert!(lookup(&[b"SCRIPT", &[b'A'; 200][..]]).is_none());
        assert!(lookup(&[b"GETS"]).is_none());
        assert!(lookup(&[b"GE"]).is_none());
        assert!(lookup_name("GET key").is_none());
        assert!(lookup_name("CONFIG SET x").is_none());
        assert!(lookup_name("   ").is_none());
        assert!(lookup_name("nosuch").is_none());
        assert_eq!(lookup_name("config newthing").unwrap().name, "CONFIG");
    }

    #[test]
    fn keys_of_variadic_commands() {
        assert_eq!(keys_of("DEL a b c"), ["a", "b", "c"]);
        assert_eq!(keys_of("DEL"), Vec::<String>::new());
        assert_eq!(keys_of("MSET a 1 b 2"), ["a", "b"]);
        assert_eq!(keys_of("MSET a 1 b"), ["a", "b"]);
        assert_eq!(keys_of("MSETNX a 1"), ["a"]);
        assert_eq!(keys_of("BLPOP a b 0"), ["a", "b"]);
        assert_eq!(keys_of("BLPOP a"), Vec::<String>::new());
        assert_eq!(keys_of("BZPOPMIN z 1.5"), ["z"]);
        assert_eq!(keys_of("BITOP AND dest a b"), ["dest", "a", "b"]);
        assert_eq!(keys_of("PFMERGE dest a b"), ["dest", "a", "b"]);
        assert_eq!(keys_of("SUNIONSTORE dest a b"), ["dest", "a", "b"]);
        assert_eq!(keys_of("WATCH a b"), ["a", "b"]);
        assert_eq!(keys_of("EXISTS a a"), ["a", "a"]);
    }

    #[test]
    fn keys_of_fixed_and_subcommand_positions() {
        assert_eq!(keys_of("GET a"), ["a"]);
        assert_eq!(keys_of("GET"), Vec::<String>::new());
        assert_eq!(keys_of("LMOVE src dst LEFT RIGHT"), ["src", "dst"]);
        assert_eq!(keys_of("BLMOVE src dst LEFT RIGHT 0"), ["src", "dst"]);
        assert_eq!(keys_of("LMOVE src"), ["src"]);
        assert_eq!(keys_of("RENAME a b"), ["a", "b"]);
        assert_eq!(keys_of("COPY a b REPLACE"), ["a", "b"]);
        assert_eq!(keys_of("GEOSEARCHSTORE dst src FROMMEMBER m BYRADIUS 1 km"), ["dst", "src"]);
        assert_eq!(keys_of("ZRANGESTORE dst src 0 -1"), ["dst", "src"]);
        assert_eq!(keys_of("OBJECT ENCODING k"), ["k"]);
        assert_eq!(keys_of("MEMORY USAGE k SAMPLES 5"), ["k"]);
        assert_eq!(keys_of("XGROUP CREATE s g $ MKSTREAM"), ["s"]);
        assert_eq!(keys_of("XINFO STREAM s FULL"), ["s"]);
        assert_eq!(keys_of("PUBLISH chan msg"), Vec::<String>::new());
        assert_eq!(keys_of("PING"), Vec::<String>::new());
    }

    #[test]
    fn keys_of_numkeys_commands() {
        assert_eq!(keys_of("EVAL body 2 a b x y"), ["a", "b"]);
        assert_eq!(keys_of("EVALSHA sha 0 x y"), Vec::<String>::new());
        assert_eq!(keys_of("FCALL f 1 a x"), ["a"]);
        assert_eq!(keys_of("EVAL body 5 a b"), ["a", "b"]);
        assert_eq!(keys_of("EVAL body 99999999999999999999999999 a"), ["a"]);
        assert_eq!(keys_of("EVAL body -1 a"), Vec::<String>::new());
        assert_eq!(keys_of("EVAL body x a"), Vec::<String>::new());
        assert_eq!(keys_of("EVAL body"), Vec::<String>::new());
        assert_eq!(keys_of("ZUNIONSTORE dst 2 a b WEIGHTS 1 2"), ["dst", "a", "b"]);
        assert_eq!(keys_of("ZINTERSTORE dst x a"), ["dst"]);
        assert_eq!(keys_of("ZDIFFSTORE dst"), ["dst"]);
        assert_eq!(keys_of("ZUNION 2 a b WITHSCORES"), ["a", "b"]);
        assert_eq!(keys_of("LMPOP 2 a b LEFT COUNT 3"), ["a", "b"]);
        assert_eq!(keys_of("BLMPOP 0 2 a b LEFT"), ["a", "b"]);
        assert_eq!(keys_of("ZMPOP 1 z MIN"), ["z"]);
        assert_eq!(keys_of("BZMPOP 1.5 1 z MAX"), ["z"]);
        assert_eq!(keys_of("SINTERCARD 2 a b LIMIT 5"), ["a", "b"]);
        assert_eq!(keys_of("ZINTERCARD 1 a"), ["a"]);
    }

    #[test]
    fn keys_of_xread() {
        assert_eq!(keys_of("XREAD STREAMS a b 0 0"), ["a", "b"]);
        assert_eq!(keys_of("XREAD COUNT 2 BLOCK 0 STREAMS a $"), ["a"]);
        assert_eq!(keys_of("xread streams a b c"), ["a"]);
        assert_eq!(keys_of("XREAD STREAMS"), Vec::<String>::new());
        assert_eq!(keys_of("XREAD COUNT 2"), Vec::<String>::new());
        assert_eq!(keys_of("XREADGROUP GROUP g c COUNT 1 NOACK STREAMS a >"), ["a"]);
        // Group and consumer spelled like the keyword.
        assert_eq!(keys_of("XREADGROUP GROUP STREAMS STREAMS STREAMS a b > >"), ["a", "b"]);
        // A key spelled like the keyword.
        assert_eq!(keys_of("XREAD STREAMS STREAMS 0"), ["STREAMS"]);
        // An option this table does not know yet does not hide the keys.
        assert_eq!(keys_of("XREADGROUP GROUP g c NEWFLAG STREAMS a >"), ["a"]);
    }

    #[test]
    fn keys_of_sort_georadius_and_migrate() {
        assert_eq!(keys_of("SORT list"), ["list"]);
        assert_eq!(keys_of("SORT list BY w_* LIMIT 0 10 GET # ALPHA STORE dst"), ["list", "dst"]);
        assert_eq!(keys_of("SORT list STORE a STORE b"), ["list", "b"]);
        assert_eq!(keys_of("SORT list BY store GET store"), ["list"]);
        assert_eq!(keys_of("SORT list STORE"), ["list"]);
        assert_eq!(keys_of("SORT_RO list BY w_*"), ["list"]);
        assert_eq!(keys_of("GEORADIUS g 1 2 3 km"), ["g"]);
        assert_eq!(keys_of("GEORADIUS g 1 2 3 km WITHDIST STORE dst"), ["g", "dst"]);
        assert_eq!(keys_of("GEORADIUS g 1 2 3 km STORE a STOREDIST b"), ["g", "b"]);
        assert_eq!(keys_of("GEORADIUS g 1 2 3 km STORE STORE"), ["g", "STORE"]);
        assert_eq!(keys_of("GEORADIUSBYMEMBER g m 3 km STOREDIST d"), ["g", "d"]);
        assert_eq!(keys_of("GEORADIUS_RO g 1 2 3 km"), ["g"]);
        assert_eq!(keys_of("MIGRATE h 6379 k 0 5000 COPY"), ["k"]);
        assert_eq!(keys_of("MIGRATE h 6379  0 5000 AUTH keys KEYS a b"), ["a", "b"]);
        assert_eq!(keys_of("MIGRATE h 6379  0 5000"), Vec::<String>::new());
        assert_eq!(keys_of("MIGRATE h 6379 k 0 5000 KEYS a"), ["k"]);
    }

    #[test]
    fn access_of_one_invocation() {
        assert_eq!(access_of("SET k v GET"), W);
        assert_eq!(access_of("SET k v KEEPTTL"), W);
        assert_eq!(access_of("ZADD z 1 a"), W);
        assert_eq!(access_of("ZADD z XX CH INCR 1 a"), WN);
        assert_eq!(access_of("zadd z incr 1 a"), WN);
        assert_eq!(access_of("ZADD z 1 INCR"), W, "a member named INCR");
        assert_eq!(access_of("BITFIELD k GET u8 0 GET i4 8"), Access::Read);
        assert_eq!(access_of("BITFIELD k"), Access::Read);
        assert_eq!(access_of("BITFIELD k SET u8 0 1 GET u8 0"), W);
        assert_eq!(access_of("BITFIELD k OVERFLOW SAT INCRBY u8 0 1"), WN);
        assert_eq!(access_of("BITFIELD k NEWOP u8 0"), WN);
        assert_eq!(access_of("BITFIELD_RO k GET u8 0"), Access::Read);
        assert_eq!(access_of("GETEX k"), Access::Read);
        assert_eq!(access_of("GETEX k PERSIST"), W);
        assert_eq!(access_of("HGETEX h FIELDS 1 f"), Access::Read);
        assert_eq!(access_of("HGETEX h EX 10 FIELDS 1 f"), W);
        assert_eq!(access_of("SORT l ALPHA"), Access::Read);
        assert_eq!(access_of("SORT l STORE d"), W);
        assert_eq!(access_of("GEORADIUS g 1 2 3 km"), Access::Read);
        assert_eq!(access_of("GEORADIUSBYMEMBER g m 3 km STORE d"), W);
        assert_eq!(access_of("COPY a b"), W);
        assert_eq!(access_of("COPY a b db 2"), Access::Forbidden);
        assert_eq!(access_of("INCR k"), WN);
        assert_eq!(access_of("FLUSHALL ASYNC"), Access::Forbidden);
    }

    /// Deterministic junk: enough variety to hit every walker's edge cases.
    const JUNK: &[&[u8]] = &[
        b"",
        b"k",
        b"0",
        b"1",
        b"2",
        b"-1",
        b"x",
        b"999999999999",
        b"18446744073709551616",
        b"STREAMS",
        b"store",
        b"STOREDIST",
        b"KEYS",
        b"GROUP",
        b"COUNT",
        b"BY",
        b"LIMIT",
        b"GET",
        b"SET",
        b"INCRBY",
        b"OVERFLOW",
        b"INCR",
        b"DB",
        b"FIELDS",
        b"AUTH",
        b"AUTH2",
        b"\xff\xfe",
        b"\0",
    ];

    fn check_all_entry_points(s: &CommandSpec, args: &[&[u8]]) {
        let found = keys(s, args);
        assert!(found.len() <= args.len());
        for k in &found {
            // Borrowed from `args`, not copied.
            assert!(args.iter().any(|a| std::ptr::eq(*a, *k)), "{} {args:?}", s.name);
        }
        let _ = s.access_for(args);
        let _ = lookup(args);
        let _ = classify(args);
    }

    #[test]
    fn never_panics_on_junk() {
        for s in all() {
            let words: Vec<&[u8]> = s.name.split(' ').map(str::as_bytes).collect();
            // Exhaustive up to two junk arguments after the name, and every prefix.
            let mut args = words.clone();
            check_all_entry_points(s, &[]);
            for a in JUNK {
                for b in JUNK {
                    args.truncate(words.len());
                    args.extend([*a, *b]);
                    for len in 0..=args.len() {
                        check_all_entry_points(s, &args[..len]);
                    }
                }
            }
            // Longer lists from a fixed xorshift sequence.
            let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ s.name.len() as u64;
            for _ in 0..2000 {
                args.truncate(words.len());
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let len = usize::try_from(state % 9).unwrap();
                for i in 0..len {
                    let pick = usize::try_from(state >> (i * 5)).unwrap_or(0) % JUNK.len();
                    args.push(JUNK[pick]);
                }
                check_all_entry_points(s, &args);
            }
        }
    }

    #[test]
    fn hand_made_specs_never_panic() {
        let weird = [
            KeySpec::Single(usize::MAX),
            KeySpec::Fixed { first: usize::MAX, count: usize::MAX },
            KeySpec::Range { first: usize::MAX, step: 0, from_end: usize::MAX },
            KeySpec::Range { first: 0, step: 0, from_end: 0 },
            KeySpec::NumKeys { numkeys_at: usize::MAX, dest: Some(usize::MAX) },
            KeySpec::NumKeys { numkeys_at: 0, dest: None },
            KeySpec::GeoRadius { options_from: usize::MAX },
            KeySpec::GeoRadius { options_from: 0 },
        ];
        let args: [&[u8]; 4] = [b"3", b"STORE", b"a", b"b"];
        for keys_spec in weird {
            let s = CommandSpec { name: "WEIRD", access: Access::Read, keys: keys_spec, group: Group::Keys };
            for len in 0..=args.len() {
                check_all_entry_points(&s, &args[..len]);
            }
        }
    }

    #[test]
    fn parse_count_is_strict_and_saturating() {
        assert_eq!(parse_count(b"0"), Some(0));
        assert_eq!(parse_count(b"42"), Some(42));
        assert_eq!(parse_count(b"99999999999999999999999999"), Some(usize::MAX));
        for bad in [&b""[..], b"-1", b"+1", b"1x", b" 1", b"\xff"] {
            assert_eq!(parse_count(bad), None, "{bad:?}");
        }
    }
}
