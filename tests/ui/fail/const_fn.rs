// A `const fn` runs at compile time: there is no scope to open.
use redis_retry::redis_retry;

#[redis_retry]
const fn key_prefix() -> &'static str {
    "user:info:"
}

fn main() {
    let _ = key_prefix();
}
