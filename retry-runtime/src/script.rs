//! Lua script bodies, so that a failed `EVALSHA` can be replayed.
//!
//! `redis::Script` sends only the SHA1 of its body. A task built from that alone could not be
//! re-run on a server that has since lost its script cache, so the body is remembered here:
//! scripts built with [`Script::new`] register themselves, and a `SCRIPT LOAD` that passes
//! through a `RetryConnection` registers its body too.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

/// Bodies kept at most; scripts are few in practice, the bound only stops a pathological
/// generator of scripts from growing memory without end.
const REGISTRY_LIMIT: usize = 10_000;

fn registry() -> &'static RwLock<HashMap<String, Arc<str>>> {
    static REGISTRY: OnceLock<RwLock<HashMap<String, Arc<str>>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// Remembers `body` under its SHA1 and returns the hex digest.
pub(crate) fn register(body: &str) -> String {
    let sha = sha1_smol::Sha1::from(body).digest().to_string();
    if let Ok(mut map) = registry().write() {
        if map.len() < REGISTRY_LIMIT || map.contains_key(&sha) {
            map.entry(sha.clone()).or_insert_with(|| Arc::from(body));
        }
    }
    sha
}

/// The body registered for `sha` (hex, any case).
pub(crate) fn body_of(sha: &str) -> Option<Arc<str>> {
    let sha = sha.to_ascii_lowercase();
    registry().read().ok()?.get(&sha).cloned()
}

/// A `redis::Script` whose body a `RetryConnection` can capture when its `EVALSHA` fails.
///
/// It dereferences to `redis::Script`, so it is used the same way.
///
/// ```
/// use redis_retry_runtime::Script;
/// let script = Script::new("return redis.call('SET', KEYS[1], ARGV[1])");
/// let _invocation = script.key("k").arg("v"); // then .invoke_async(&mut conn)
/// assert_eq!(script.get_hash().len(), 40);
/// ```
#[derive(Debug, Clone)]
pub struct Script {
    inner: redis::Script,
}

impl Script {
    /// Registers the body and builds the script.
    pub fn new(code: &str) -> Self {
        register(code);
        Script { inner: redis::Script::new(code) }
    }
}

impl std::ops::Deref for Script {
    type Target = redis::Script;
    fn deref(&self) -> &redis::Script {
        &self.inner
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn registered_bodies_are_found_by_sha_in_any_case() {
        let sha = super::register("return 42");
        assert_eq!(sha, redis::Script::new("return 42").get_hash());
        assert_eq!(super::body_of(&sha.to_uppercase()).as_deref(), Some("return 42"));
        assert!(super::body_of("0000000000000000000000000000000000000000").is_none());
    }
}
